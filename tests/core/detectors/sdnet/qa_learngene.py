"""Learngene [LG]: gradient significance, segment selection, expansion strategies, the eq. (21) penalty, learngene bundles."""

from __future__ import annotations

import pytest
import torch
from neuralmimo.detectors.sdnet.learngene import (
    STRATEGIES,
    GradientRecorder,
    LearngenePenalty,
    expand,
    layer_significance,
    learngene_tensors,
    load_learngene,
    save_learngene,
    segment_layers,
    select_segment,
    strategy_mapping,
)
from neuralmimo.detectors.sdnet.model import (
    SDNet,
)


def test_layer_significance_hand_computed():
    mags = {"a.weight": torch.tensor([0.0, 2e-4, 5e-5, 1e-3]), "a.bias": torch.tensor([2e-4]),
            "b.weight": torch.tensor([[1e-5, 1e-5], [1e-5, 3e-4]]), "b.bias": torch.tensor([0.0, 0.0])}
    rho = layer_significance(mags, {1: ["a.weight", "a.bias"], 2: ["b.weight", "b.bias"]}, tau=1e-4)
    assert rho == {1: pytest.approx(3 / 5), 2: pytest.approx(1 / 6)}


def test_gradient_recorder_is_mean_minibatch_gradient():
    torch.manual_seed(0)
    model = SDNet(1, 1, 1)
    batches = [(torch.randn(6, 1, 3, 2), torch.rand(6, 2) - 0.5) for _ in range(3)]
    named = dict(model.named_parameters())
    rec = GradientRecorder({n: named[n] for n in model.significant_names()[1]})
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # parameters stay put: the mean has a closed form
    for x, y in batches:
        opt.zero_grad()
        ((model(x) - y) ** 2).mean().backward()
        rec.add()
        opt.step()
    total = sum(((model(x) - y) ** 2).mean() for x, y in batches) / len(batches)
    hand = torch.autograd.grad(total, [named["convs.1.weight"], named["convs.1.bias"]])
    mags = rec.magnitudes()
    assert torch.allclose(mags["convs.1.weight"], hand[0].abs().double(), atol=1e-7)
    assert torch.allclose(mags["convs.1.bias"], hand[1].abs().double(), atol=1e-7)
    vals = torch.cat([hand[0].abs().flatten(), hand[1].abs()]).double().sort().values
    gaps = vals[1:] - vals[:-1]
    k = int(gaps[len(vals) // 4: 3 * len(vals) // 4].argmax()) + len(vals) // 4
    tau = float((vals[k] + vals[k + 1]) / 2)  # mid-gap: no value within float32 rounding of tau
    expected = (int((hand[0].abs() > tau).sum()) + int((hand[1].abs() > tau).sum())) / (hand[0].numel() + hand[1].numel())
    assert layer_significance(mags, model.significant_names(), tau)[1] == pytest.approx(expected)


def test_select_segment_prefers_consistently_decreasing_low_layers():
    # 12 layers, 6 tasks: layers 9-12 decrease to ~0, 1-4 stay high, 5-8 rise
    rho = []
    for k in range(6):
        r = {l: 0.9 for l in range(1, 5)}
        r.update({l: 0.3 + 0.1 * k for l in range(5, 9)})
        r.update({l: 0.8 - 0.15 * k for l in range(9, 13)})
        rho.append(r)
    seg, scores = select_segment(rho, 12)
    assert seg == "bottom"
    assert [s.decreasing for s in scores] == [False, False, True]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_expansion_puts_learngene_exactly_where_intended(strategy):
    torch.manual_seed(3)
    col = SDNet(8, 32, 12)
    for p in col.parameters():  # make every collective tensor recognisable
        torch.nn.init.normal_(p, 5.0)
    tensors = {}
    for seg in ("top", "middle", "bottom"):
        tensors.update(learngene_tensors(col, segment_layers(12, seg)))
    torch.manual_seed(7)
    fresh = SDNet(8, 32, 8)
    torch.manual_seed(7)
    ind = SDNet(8, 32, 8)
    mapping = strategy_mapping(strategy, "bottom", 12, 8)
    expected = {"embed-top": {1: 9, 2: 10, 3: 11, 4: 12}, "embed-middle": {3: 9, 4: 10, 5: 11, 6: 12},
                "embed-bottom": {5: 9, 6: 10, 7: 11, 8: 12}, "inherit-top": {5: 1, 6: 2, 7: 3, 8: 4},
                "inherit-middle": {5: 5, 6: 6, 7: 7, 8: 8}, "inherit-bottom": {5: 9, 6: 10, 7: 11, 8: 12}}[strategy]
    assert mapping == expected
    anchors = expand(ind, tensors, mapping)
    assert set(anchors) == {f"convs.{l}.{p}" for l in expected for p in ("weight", "bias")}
    fresh_sd, ind_sd = fresh.state_dict(), ind.state_dict()
    for name, value in ind_sd.items():
        layer = int(name.split(".")[1]) if name.startswith("convs.") else None
        if layer in expected:
            src = col.significant_conv(expected[layer])
            assert torch.equal(value, getattr(src, name.split(".")[2])), name
        else:  # everything else, batch-norm included, is the fresh initialisation
            assert torch.equal(value, fresh_sd[name]), name
    for norm in ind.norms:
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and torch.equal(norm.bias, torch.zeros_like(norm.bias))


def test_learngene_penalty_gradient():
    torch.manual_seed(0)
    model = SDNet(2, 4, 4)
    anchors = {"convs.2.weight": torch.randn(8, 8, 3, 3), "convs.2.bias": torch.randn(8)}
    lam = 0.37
    pen = LearngenePenalty(anchors, lam)
    value = pen(model)
    value.backward()
    params = dict(model.named_parameters())
    for n, a in anchors.items():
        assert torch.allclose(params[n].grad, lam * (params[n].detach() - a), atol=1e-6)
    assert params["convs.1.weight"].grad is None or bool((params["convs.1.weight"].grad == 0).all())
    manual = 0.5 * lam * sum(((params[n].detach() - a) ** 2).sum() for n, a in anchors.items())
    assert float(value) == pytest.approx(float(manual), rel=1e-5)
    assert float(LearngenePenalty(anchors, 0.0)(model)) == 0.0


def test_learngene_bundle_round_trip(tmp_path):
    col = SDNet(8, 32, 12)
    layers = segment_layers(12, "bottom")
    t = learngene_tensors(col, layers)
    save_learngene(tmp_path / "lg", t, layers=layers, segment="bottom", selected=True, system={"nt": 8, "nr": 32, "modulation": "qpsk"},
                   provenance={"x": 1})
    back, lay, bundle = load_learngene(tmp_path / "lg")
    assert lay == layers and all(torch.equal(back[k], t[k]) for k in t)
    assert bundle.manifest["learngene"]["segment"] == "bottom"
    assert set(bundle.tensors) == {f"layer{l}.{p}" for l in layers for p in ("weight", "bias")}  # no batch-norm

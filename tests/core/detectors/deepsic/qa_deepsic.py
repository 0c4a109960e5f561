"""DeepSIC modules, the modular hypernetwork and their bundles [MH]."""

import json

import pytest
import torch
from neuralmimo.bundle import BundleError, load_model, save_model
from neuralmimo.constellation import Constellation
from neuralmimo.detectors.deepsic.model import (
    HYPERNET_CODEC,
    ModularHypernetwork,
    ModuleSpec,
    deepsic_logits,
    init_modules,
    interference_index,
    module_logits,
    paper_hyper_params,
    resize_modules,
    unrolled_loss,
)

BPSK = Constellation("bpsk")


@pytest.mark.parametrize("n", [12, 20])
def test_module_parameter_count_matches_paper(n):
    spec = ModuleSpec(n)
    for k in range(1, n + 1):
        assert spec.n_params(k) == 16 * (n + k + 1) + 18
        theta = init_modules(k, spec)
        assert theta.shape == (k, 16 * (n + k + 1) + 18)


@pytest.mark.parametrize("n,k_max", [(12, 12), (20, 20), (12, 8)])
def test_hypernetwork_parameter_count_matches_paper(n, k_max):
    hyper = ModularHypernetwork(ModuleSpec(n), k_max)
    assert hyper.n_hyper_params() == paper_hyper_params(n, k_max)
    assert hyper.e_self.shape == hyper.e_pad.shape == (n,)
    # the embeddings are the only other trainable tensors
    assert sum(p.numel() for p in hyper.parameters()) == paper_hyper_params(n, k_max) + 2 * n


def test_complex_model_counts():
    spec = ModuleSpec(6, "qpsk", real_channel=False)
    # 2N received features, 3 soft inputs per interferer, 4 classes
    assert spec.n_inputs(4) == 12 + 3 * 3
    assert spec.n_params(4) == 16 * 21 + 16 + 4 * 16 + 4
    with pytest.raises(ValueError):
        ModuleSpec(6, "qpsk", real_channel=True)


def test_layout_is_two_linear_layers():
    """The flat layout is [b1 | W2 | b2 | W1 column by column]: compare with nn.Linear."""
    spec, k = ModuleSpec(5), 3
    theta = torch.randn(spec.n_params(k))
    w1t, b1, w2, b2 = spec.unpack(theta)
    assert w1t.shape == (5 + k - 1, 16) and w2.shape == (2, 16)
    fc1, fc2 = torch.nn.Linear(5 + k - 1, 16), torch.nn.Linear(16, 2)
    with torch.no_grad():
        fc1.weight.copy_(w1t.T), fc1.bias.copy_(b1), fc2.weight.copy_(w2), fc2.bias.copy_(b2)
    x = torch.randn(7, 5 + k - 1)
    torch.testing.assert_close(module_logits(x, theta, spec), fc2(torch.relu(fc1(x))))


def test_generated_module_has_k_user_shape_and_uses_first_outputs():
    torch.manual_seed(0)
    spec, k_max, k = ModuleSpec(8), 6, 4
    hyper = ModularHypernetwork(spec, k_max)
    h_cols = torch.randn(k, 8)
    theta = hyper.generate(h_cols)
    assert theta.shape == (k, spec.n_params(k))
    w1t, *_ = spec.unpack(theta)
    assert w1t.shape == (k, 8 + k - 1, 16)
    # the first |theta^(K)| outputs of each user's full hypernetwork run
    pad = torch.cat([h_cols, torch.zeros(k_max - k, 8)])
    active = torch.arange(k_max) < k
    full = hyper.net(hyper.contexts(pad, active))
    assert full.shape == (k_max, spec.n_params(k_max))
    torch.testing.assert_close(theta, full[:k, :spec.n_params(k)])


def test_context_vectors_follow_eq_9_10():
    torch.manual_seed(1)
    spec, k_max, k = ModuleSpec(4), 5, 3
    hyper = ModularHypernetwork(spec, k_max)
    h = torch.randn(k_max, 4)
    active = torch.arange(k_max) < k
    ctx = hyper.contexts(h, active).view(k_max, k_max, 4)
    for user in range(k):
        for slot in range(k_max):
            if slot == user:
                want = hyper.e_self
            elif slot < k:
                want = h[slot]
            else:
                want = hyper.e_pad
            torch.testing.assert_close(ctx[user, slot], want.detach())


def test_padded_batch_equals_exact_k_user_receiver():
    """Training pads blocks to K_max with zero soft inputs; the result must equal the K-user modules."""
    torch.manual_seed(2)
    spec, k_max, k = ModuleSpec(8), 6, 4
    hyper = ModularHypernetwork(spec, k_max)
    h_cols, feats = torch.randn(k, 8), torch.randn(50, 8)
    exact = deepsic_logits(hyper.generate(h_cols), feats, spec, 3)
    active = torch.arange(k_max) < k
    padded = deepsic_logits(hyper(torch.cat([h_cols, torch.randn(k_max - k, 8)]), active), feats, spec, 3, active)
    for a, b in zip(exact, padded):
        torch.testing.assert_close(a, b[:k], rtol=1e-5, atol=1e-5)


def test_interference_slots():
    assert interference_index(4).tolist() == [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]
    assert interference_index(1).shape == (1, 0)


def test_single_user_module_sees_no_interferers():
    spec = ModuleSpec(5)
    theta = init_modules(1, spec)
    out = deepsic_logits(theta, torch.randn(9, 5), spec, 3)
    assert out[-1].shape == (1, 9, 2)


def test_gradients_reach_embeddings_and_hypernetwork():
    torch.manual_seed(3)
    spec, k_max, k = ModuleSpec(6), 5, 3  # K < K_max so that e_pad is used
    hyper = ModularHypernetwork(spec, k_max)
    theta = hyper.generate(torch.randn(k, 6))
    loss = unrolled_loss(deepsic_logits(theta, torch.randn(40, 6), spec, 3), torch.randint(0, 2, (k, 40)))
    loss.backward()
    for name, p in hyper.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name








def test_resize_keeps_nested_prefix():
    spec = ModuleSpec(5)
    theta = init_modules(3, spec)
    grown = resize_modules(theta, 4, spec)
    assert grown.shape == (4, spec.n_params(4))
    torch.testing.assert_close(grown[:3, :spec.n_params(3)], theta)
    shrunk = resize_modules(theta, 2, spec)
    torch.testing.assert_close(shrunk, theta[:2, :spec.n_params(2)])


def test_hypernetwork_bundle_round_trip(tmp_path):
    torch.manual_seed(7)
    hyper = ModularHypernetwork(ModuleSpec(8), 6)
    save_model(hyper, HYPERNET_CODEC, tmp_path / "b", system={"nr": 8, "nt": 6, "modulation": "bpsk"})
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    hp = manifest["architecture"]["hyperparameters"]
    assert manifest["architecture"]["name"] == "hypernet-deepsic"
    assert (hp["n_rx"], hp["k_max"], hp["modulation"], hp["iterations"]) == (8, 6, "bpsk", 3)
    loaded, _ = load_model(tmp_path / "b", HYPERNET_CODEC)
    q = loaded.iterations
    h = torch.randn(4, 8)
    assert q == 3
    torch.testing.assert_close(loaded.generate(h), hyper.generate(h))


def test_hypernetwork_bundle_refuses_other_architecture(tmp_path):
    from neuralmimo.detectors.sdnet.model import SDNET_CODEC, SDNet

    save_model(SDNet(2, 4, 1), SDNET_CODEC, tmp_path / "s", system={"nt": 2, "nr": 4, "modulation": "bpsk"})
    with pytest.raises(BundleError, match="architecture 'sdnet'"):
        load_model(tmp_path / "s", HYPERNET_CODEC)



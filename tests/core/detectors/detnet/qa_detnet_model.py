"""DetNet / WeSNet [WS]: the profiles of eqs. (16)-(17) and the kept-fraction masks, the learnable
profile's monotonicity, the log-L1 regulariser's value and gradient (eqs. (22)-(23)), slicing =
masking, FLOP counts (formula = a count on the tensors; Table II as printed), the loss of
eq. (20), bundles under both architecture names and the run-time dial's refusals."""

import math

import pytest
import torch
from neuralmimo.bundle import BundleError, save_model
from neuralmimo.channels import make_channel
from neuralmimo.constellation import Constellation
from neuralmimo.datasets import draw_channel_batch
from neuralmimo.detectors import SystemSpec, load_detector
from neuralmimo.detectors.detnet import DetNet, DetNetDetector, codec_for
from neuralmimo.detectors.detnet.model import (WESNET_CODEC, count_matmul_flops, detnet_loss, detnet_matmul_flops,
                                               keep_mask, kept_units, profile_coefficients, table2_flops)
from neuralmimo.detectors.detnet.train import real_symbols, to_points, zf_solution


def test_linear_profile_is_eq16():
    b = profile_coefficients("linear", 10)
    assert torch.allclose(b, torch.tensor([1 - i / 10 for i in range(1, 11)]))
    assert b[-1] == 0


def test_half_exponential_profile_is_eq17():
    n = 12
    b = profile_coefficients("half-exp", n)
    assert torch.all(b[:6] == 1)
    for i in range(7, n + 1):  # i > N/2: exp(N/2 - i - 1)
        assert math.isclose(float(b[i - 1]), math.exp(n / 2 - i - 1), rel_tol=1e-6)
    assert torch.all(b[1:] <= b[:-1])


def test_kept_fraction_masks():
    assert [kept_units(f, 240) for f in (0.1, 0.2, 0.5, 1.0)] == [24, 48, 120, 240]
    assert kept_units(0.001, 10) == 1
    m = keep_mask(0.5, 8)
    assert m.tolist() == [True] * 4 + [False] * 4
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        kept_units(0.0, 8)


def test_learnable_profile_starts_at_the_fixed_one_and_stays_monotone():
    torch.manual_seed(0)
    for profile in ("half-exp", "linear"):
        m = DetNet(4, 3, 32, "bpsk", profile, learnable=True)
        fixed = profile_coefficients(profile, 32).clamp(min=1e-8)
        assert torch.allclose(m.beta()[0], fixed, rtol=1e-4, atol=2e-6)
        opt = torch.optim.SGD([m.rho], lr=10.0)
        for _ in range(5):  # large random steps: monotonicity must hold by construction
            opt.zero_grad()
            (m.beta() * torch.randn(3, 32)).sum().backward()
            opt.step()
        b = m.beta()
        assert torch.all(b[:, 1:] <= b[:, :-1]) and torch.all(b > 0) and torch.all(b <= 1)


def test_log_l1_regulariser_value_and_gradient():
    torch.manual_seed(1)
    m = DetNet(3, 4, 8, "bpsk", "half-exp")
    beta = profile_coefficients("half-exp", 8)
    w1, w2, w3 = m.w1.detach(), m.w2.detach(), m.w3.detach()
    want = 0.0
    for r in range(2, 5):  # start layer l = 2 (1-based)
        norm = ((w1[r - 1].abs() * beta[:, None]).sum() + (w2[r - 1].abs() * beta).sum()
                + (w3[r - 1].abs() * beta).sum())
        want += math.log1p((r - 1) * float(norm))
    reg = m.log_l1(2)
    assert math.isclose(float(reg.detach()), want, rel_tol=1e-5)
    reg.backward()
    # d/dW log(1 + (r-1) X_r) = (r-1) / (1 + (r-1) X_r) * beta * sign(W)
    r = 3
    x_r = float((w1[r - 1].abs() * beta[:, None]).sum() + (w2[r - 1].abs() * beta).sum()
                + (w3[r - 1].abs() * beta).sum())
    g = (r - 1) / (1 + (r - 1) * x_r) * beta[None, :] * torch.sign(w2[r - 1])
    assert torch.allclose(m.w2.grad[r - 1], g, rtol=1e-4, atol=1e-7)
    assert torch.all(m.w2.grad[0] == 0)  # layers before l are not penalised


def test_slicing_equals_masking_the_dropped_units():
    torch.manual_seed(2)
    m = DetNet(6, 5, 48, "bpsk", "half-exp").eval()
    g = torch.Generator().manual_seed(0)
    h = make_channel("iid-real", 12, 6).sample(3, g)
    y = h @ (2 * torch.randint(0, 2, (3, 6, 7), generator=g) - 1).to(torch.complex64)
    hty, hth = m.real_inputs(y, h)
    for keep in (0.25, 0.5, 1.0):
        masked = DetNet(6, 5, 48, "bpsk", "half-exp")
        masked.load_state_dict(m.state_dict())
        masked.beta_fixed = m.beta_fixed * keep_mask(keep, 48)  # dropped units contribute nothing
        with torch.no_grad():
            assert torch.allclose(m.sliced(keep)(hty, hth), masked(hty, hth), atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(m.sliced(1.0, 3)(hty, hth), m(hty, hth, depth=3), atol=1e-5)


@pytest.mark.parametrize("keep,depth,vectors", [(1.0, 6, 1), (0.5, 6, 16), (0.2, 3, 64), (0.1, 1, 5)])
def test_flop_formula_equals_the_count_on_the_tensors(keep, depth, vectors):
    m = DetNet(5, 6, 40, "bpsk").sliced(keep, depth)
    assert detnet_matmul_flops(m.k, 10, m.layers, m.units, m.aux, vectors) == count_matmul_flops(m, 10, vectors)
    q = DetNet(3, 4, 48, "qpsk").sliced(keep, min(depth, 4))  # K = 2 Nt real dimensions
    assert detnet_matmul_flops(q.k, 7, q.layers, q.units, q.aux, vectors) == count_matmul_flops(q, 7, vectors)


def test_table2_as_printed_and_the_papers_5143_percent():
    nt, L = 30, 90
    assert table2_flops("detnet", nt, L) == nt * (128 * nt - 2) * L
    ratio = table2_flops("wesnet", nt, L, 0.5) / table2_flops("detnet", nt, L)
    assert 0.50 < ratio < 0.51  # the formula gives a ~49.7 % reduction, not the stated 51.43 %
    assert abs((1 - ratio) * 100 - 51.43) > 1


def test_loss_is_eq20_and_zf_is_exact_without_noise():
    torch.manual_seed(3)
    m = DetNet(4, 3, 16, "qpsk")
    c = Constellation("qpsk")
    g = torch.Generator().manual_seed(0)
    h = make_channel("iid", 8, 4).sample(5, g)
    x = c.symbols(c.random_indices((5, 4, 2), g))
    hty, hth = m.real_inputs(h @ x, h)
    s = real_symbols(x, m)
    assert torch.allclose(zf_solution(hty, hth), s, atol=1e-4)  # noiseless: ZF recovers s exactly
    assert torch.allclose(to_points(s, m), x, atol=1e-6)
    outs = [torch.zeros_like(s), s * 0.5, s]
    s_zf = s + 0.1
    want = math.log(2) * float(((s - outs[1]).square().sum(-1) / (s - s_zf).square().sum(-1)).mean())
    assert math.isclose(float(detnet_loss(outs, s, s_zf)), want, rel_tol=1e-5)  # log(1) = 0, layer 3 exact


def test_detnet_snr_convention_matches_detnets_generator():
    """DetNet: y = Hx + w sqrt(tr(H^T H)/K)/sqrt(SNR), w ~ N(0, 1) per real dimension. Ours
    normalises by the mean column energy E||H||^2/K instead of each sample's: equal on average."""
    ch = make_channel("iid-real", 60, 30)
    b = draw_channel_batch(ch, Constellation("bpsk"), 4000, 1, 10.0, torch.Generator().manual_seed(0),
                           convention="detnet")
    per_dim = b.noise_var / 2  # complex noise variance -> per real dimension
    detnet = (b.h.real.square().sum((1, 2)) / 30) / 10.0
    assert torch.allclose(per_dim, torch.full_like(per_dim, 60 / 10.0))
    assert abs(float(detnet.mean()) / float(per_dim.mean()) - 1) < 0.005
    noise = (b.y - b.h @ b.x).real  # the real part of the noise has the per-dimension variance
    assert abs(float(noise.var()) / 6.0 - 1) < 0.01


def _bundle(tmp_path, model, name):
    return save_model(model, codec_for(model), tmp_path / name, system={
        "nr": 12, "nt": model.nt, "modulation": model.modulation, "snr_convention": "detnet"})


def test_bundles_round_trip_under_both_names_and_the_dial_refuses_what_it_cannot_do(tmp_path):
    torch.manual_seed(4)
    det_b = _bundle(tmp_path, DetNet(6, 4, 48, "bpsk"), "detnet")
    wes_b = _bundle(tmp_path, DetNet(6, 4, 48, "bpsk", "half-exp", keep=0.5, learnable=True), "wesnet")
    d = load_detector(det_b, SystemSpec(12, 6, "bpsk"))
    w = load_detector(wes_b, SystemSpec(12, 6, "bpsk"))
    assert (d.architecture, w.architecture) == ("detnet", "wesnet") and isinstance(w, DetNetDetector)
    assert w.describe()["options"] == {"keep": 0.5, "layers": 4}
    with pytest.raises(ValueError, match="above the fraction"):
        w.configure(keep=0.75)
    with pytest.raises(ValueError, match="more than the model's 4"):
        w.configure(layers=5)
    w.configure(keep=0.25, layers=2)
    assert (w.units, w.depth) == (12, 2)
    smaller = w.flops_per_vector(64)
    w.configure(keep=0.5, layers=0)
    assert w.flops_per_vector(64) > 1.9 * smaller
    other = w.configured(keep=0.1)
    assert other.units == 5 and w.units == 24  # a new detector; this one unchanged
    with pytest.raises(BundleError, match="needs a weight-scaling profile"):
        save_model(DetNet(6, 4, 48, "bpsk"), WESNET_CODEC, tmp_path / "bad", system={
            "nr": 12, "nt": 6, "modulation": "bpsk"})
    with pytest.raises(BundleError, match="Nt = 6"):
        load_detector(det_b, SystemSpec(12, 5, "bpsk"))

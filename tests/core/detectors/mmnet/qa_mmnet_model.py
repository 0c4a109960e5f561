"""MMNet / HyperMIMO / OAMPNet against direct formulas ([HM] eqs. (7)-(12)), the QR convention
and the parameter counts of the paper."""

import math

import pytest
import torch

from neuralmimo.bundle import load_model, save_model
from neuralmimo.constellation import Constellation
from neuralmimo.detectors.mmnet.model import (HyperMIMO, MMNetPerChannel, OAMPNet, denoise, denoise_qpsk, mmnet,
                                              HYPERMIMO_CODEC, mmnet_original_parameters, qr_positive,
                                              ser_crossing, spatial_features, tau, upper_entries)

QPSK = Constellation("qpsk")


def _channels(b=3, nr=12, nu=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, nr, nu, dtype=torch.complex64, generator=g), g



def _reloaded(model, path, without: str | None = None):
    """``model`` saved as a 12x6 QPSK bundle and loaded back; ``without``: that optional
    hyper-parameter left out of the manifest (a bundle from before it existed)."""
    hp = {k: v for k, v in HYPERMIMO_CODEC.hyperparameters(model).items() if k != without}
    save_model(model, HYPERMIMO_CODEC, path, system={"nr": 12, "nt": 6, "modulation": "qpsk"}, hyperparameters=hp)
    return load_model(path, HYPERMIMO_CODEC)[0]

def test_parameter_counts_match_the_paper():
    m = HyperMIMO(6, 5, 75)
    n = sum(p.numel() for p in m.parameters())
    # inputs 6*7 + 1 = 43 (R_A's 21 entries, re and im, and sigma); outputs 2*36 + 2*5*6 = 132
    assert (HyperMIMO.n_inputs(6), HyperMIMO.n_outputs(6, 5)) == (43, 132)
    assert n == HyperMIMO.paper_parameters(6, 5, 75) == 44 * 43 + 44 * 75 + 76 * 132 == 15_224
    mmnet_8 = mmnet_original_parameters(6, 12, 10)  # [HM] ref. [8]: A_t complex 6x12 and psi_t, T = 10
    assert mmnet_8 == 1_500 and 9.5 < n / mmnet_8 < 10.5  # "only 10x more parameters than MMNet"
    assert MMNetPerChannel.parameters_per_channel(6, 10) == 780  # the QR variant: Nu x Nu instead of Nu x Nr


def test_qr_has_a_real_positive_diagonal_and_is_the_cholesky_factor():
    h, _ = _channels()
    q, r = qr_positive(h)
    assert torch.allclose(q @ r, h, atol=1e-5)
    assert torch.allclose(q.mH @ q, torch.eye(6, dtype=q.dtype).expand(3, 6, 6), atol=1e-5)
    assert torch.all(torch.tril(r, -1) == 0)
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    assert torch.all(d.imag == 0) and torch.all(d.real > 0)
    # unique: R_A is the upper Cholesky factor of H^H H
    chol = torch.linalg.cholesky((h.mH @ h).to(torch.complex128)).mH
    assert torch.allclose(r.to(torch.complex128), chol, atol=1e-4)
    assert upper_entries(r).shape == (3, 21)


def test_denoiser_is_the_posterior_mean_of_eq_10():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, 6, 5, dtype=torch.complex64, generator=g)
    t = 0.1 + torch.rand(4, 6, 5, generator=g)
    x, log_p = denoise(z, t, QPSK.points)
    w = torch.exp(-(z[..., None] - QPSK.points).abs() ** 2 / t[..., None])
    assert torch.allclose(x, (w * QPSK.points).sum(-1) / w.sum(-1), atol=1e-5)
    assert torch.allclose(log_p.exp().sum(-1), torch.ones(4, 6, 5), atol=1e-5)
    near, _ = denoise(z, torch.full_like(t, 1e-6), QPSK.points)  # tau -> 0: the nearest point
    assert torch.allclose(near, QPSK.points[(z[..., None] - QPSK.points).abs().argmin(-1)], atol=1e-5)


def test_qpsk_closed_form_is_the_posterior_mean():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(2000, dtype=torch.complex64, generator=g) * 2
    t = torch.rand(2000, generator=g) * 2 + 1e-3
    torch.testing.assert_close(denoise_qpsk(z, t), denoise(z, t, QPSK.points)[0], atol=2e-6, rtol=0)


def test_tau_follows_eq_9_with_nu_noise_dimensions():
    h, g = _channels(b=2)
    _, r = qr_positive(h)
    th = torch.randn(2, 6, 6, dtype=torch.complex64, generator=g)
    psi = 0.5 + torch.rand(2, 6, generator=g)
    res = 3.0 * torch.rand(2, 4, generator=g)
    nv = torch.tensor([0.2, 0.05])
    got = tau(r, th, psi, res, nv, 6)
    for b in range(2):
        for v in range(4):
            frac = torch.linalg.norm(torch.eye(6) - th[b] @ r[b]) ** 2 / torch.linalg.norm(r[b]) ** 2
            want = psi[b] / 6 * (frac * max(float(res[b, v]) - 6 * float(nv[b]), 0.0)
                                 + torch.linalg.norm(th[b]) ** 2 * nv[b])
            assert torch.allclose(got[b, :, v], want.real.float(), rtol=1e-4)


def test_hypernetwork_outputs_follow_eq_11_and_psi_is_positive():
    torch.manual_seed(0)
    m = HyperMIMO(6, 5)
    h, _ = _channels(b=4)
    _, r = qr_positive(h)
    nv = torch.tensor([0.1, 0.2, 0.3, 0.4])
    thetas, psi = m.generate(r, nv)
    u = upper_entries(r)
    raw = m.net(torch.cat([u.real, u.imag, nv.sqrt()[:, None]], -1))
    base = torch.complex(raw[:, :36], raw[:, 36:72]).reshape(4, 6, 6)
    for t in range(5):
        scale = raw[:, 72 + 6 * t:72 + 6 * (t + 1)]
        want = base @ torch.diag_embed(1 + scale).to(torch.complex64)  # Theta (I + diag(theta_t))
        assert torch.allclose(thetas[:, t], want, atol=1e-5)
    assert psi.shape == (4, 5, 6) and bool((psi >= 1e-3).all())


def test_spatial_inputs_read_each_users_angle_and_are_optional_in_bundles(tmp_path):
    """``r+spatial`` (beyond the paper): per user ``exp(j 2 pi d sin phi)`` of a ULA steering
    column, invariant to the column's gain and phase, which R_A alone cannot see; bundles from
    before the field load as ``r``."""
    phi = torch.tensor([-40.0, 0.0, 25.0]) * math.pi / 180
    n = torch.arange(12.0)[:, None]
    h = torch.exp(1j * 2 * math.pi * 0.5 * n * torch.sin(phi)).to(torch.complex64) * torch.tensor([2.0, 1j, -0.5])
    f = spatial_features(h[None])[0]
    want = torch.exp(1j * 2 * math.pi * 0.5 * torch.sin(phi))
    torch.testing.assert_close(torch.complex(f[:3], f[3:]), want.to(torch.complex64), atol=1e-5, rtol=0)
    rot = torch.linalg.qr(torch.randn(12, 12, dtype=torch.complex64))[0]  # a unitary rotation of the receive space
    torch.testing.assert_close(qr_positive(rot @ h)[1].abs(), qr_positive(h)[1].abs(), atol=1e-4, rtol=0)
    m = HyperMIMO(6, 5, 75, inputs="r+spatial")
    assert HyperMIMO.n_inputs(6, "r+spatial") == 55 and m.net[0].in_features == 55
    hh, _ = _channels(b=2)
    with pytest.raises(ValueError, match="needs the channels"):
        m.generate(qr_positive(hh)[1], torch.ones(2))
    assert _reloaded(m, tmp_path / "s").inputs == "r+spatial"
    assert _reloaded(HyperMIMO(6, 5, 75), tmp_path / "old", without="inputs").inputs == "r"


def test_one_mmnet_layer_by_hand():
    h, g = _channels(b=1)
    q, r = qr_positive(h)
    x = QPSK.symbols(QPSK.random_indices((1, 6, 3), g))
    nv = torch.tensor([0.1])
    y_star = r @ x + 0.1 * torch.randn(1, 6, 3, dtype=torch.complex64, generator=g)
    th = torch.randn(1, 1, 6, 6, dtype=torch.complex64, generator=g) * 0.1 + torch.linalg.inv(r)[:, None]
    psi = torch.ones(1, 1, 6)
    got, _ = mmnet(y_star, r, nv, th, psi, QPSK.points)
    z = th[0, 0] @ y_star[0]  # x^0 = 0
    res = (y_star[0].abs() ** 2).sum(0)
    t = tau(r, th[:, 0], psi[:, 0], res[None], nv, 6)[0]
    want, _ = denoise(z, t, QPSK.points)
    assert torch.allclose(got[0], want, atol=1e-5)


def test_oampnet_first_iteration_by_hand():
    h, g = _channels(b=1)
    x = QPSK.symbols(QPSK.random_indices((1, 6, 2), g))
    nv = torch.tensor([0.1])
    y = h @ x + (0.05 ** 0.5) * torch.randn(1, 12, 2, dtype=torch.complex64, generator=g)
    m = OAMPNet(1)
    with torch.no_grad():
        m.gamma.fill_(0.8)
        m.theta.fill_(1.3)
    got, _ = m(y, h, nv)
    hh = h[0].to(torch.complex128)
    for v in range(2):
        yv = y[0, :, v].to(torch.complex128)
        v2 = max((float((yv.abs() ** 2).sum()) - 12 * 0.1) / float(torch.trace(hh.mH @ hh).real), 1e-9)
        w_hat = v2 * hh.mH @ torch.linalg.inv(v2 * hh @ hh.mH + 0.1 * torch.eye(12))  # the Nr x Nr form
        w = 6 / torch.trace(w_hat @ hh) * w_hat
        rr = 0.8 * w @ yv
        bmat = torch.eye(6) - 1.3 * w @ hh
        t2 = float((torch.trace(bmat @ bmat.mH).real * v2 + 1.3 ** 2 * 0.1 * torch.trace(w @ w.mH).real) / 6)
        want, _ = denoise(rr.to(torch.complex64), torch.full((6,), t2), QPSK.points)
        assert torch.allclose(got[0, :, v], want, atol=1e-4)


def test_per_channel_parameters_only_see_their_own_channel():
    h, g = _channels(b=3)
    _, r = qr_positive(h)
    nv = torch.full((3,), 1.0)
    m = MMNetPerChannel(r, nv, layers=2)
    x = QPSK.symbols(QPSK.random_indices((3, 6, 4), g))
    thetas, psi = m.weights()
    y_star = r @ x + torch.randn(3, 6, 4, dtype=torch.complex64, generator=g)
    out, _ = mmnet(y_star, r, nv, thetas, psi, QPSK.points)
    (out[0] - x[0]).abs().square().sum().backward()  # channel 0's loss only
    assert m.theta_re.grad[1:].abs().max() == 0 and m.theta_re.grad[0].abs().max() > 0


def test_ser_crossing_interpolates_in_log_domain():
    assert ser_crossing([0, 2, 4], [1e-2, 1e-3 * math.sqrt(10) ** 0, 1e-4], 1e-3) == pytest.approx(2.0)
    assert ser_crossing([0, 2], [1e-2, 1e-4], 1e-3) == pytest.approx(1.0)
    assert ser_crossing([0, 2], [1e-2, 5e-3], 1e-3) is None


def test_the_lmmse_start_begins_at_mmse_and_is_optional_in_bundles(tmp_path):
    """``start="lmmse"`` (beyond the paper, the shipped bundles): with the hypernetwork's output
    layer zeroed (``Theta_t = 0``) every layer only denoises the LMMSE estimate, so the MAP
    decisions are MMSE's; the zero start gives nothing then. Bundles from before the field load
    as ``zero``."""
    from neuralmimo.detectors import linear_detect

    h, g = _channels(b=4)
    x = QPSK.symbols(QPSK.random_indices((4, 6, 50), g))
    nv = torch.full((4,), 0.05)
    y = h @ x + (nv[:, None, None] / 2).sqrt() * torch.randn(4, 12, 50, dtype=torch.complex64, generator=g)
    m = HyperMIMO(6, 5, 75, start="lmmse").eval()
    with torch.no_grad():
        m.net[-1].weight.zero_()
        m.net[-1].bias.zero_()
        _, log_p = m(y, h, nv)
    mmse = QPSK.hard_decision(linear_detect(y, h, nv, "mmse", QPSK)[0])
    assert torch.equal(log_p.argmax(-1), mmse)
    with pytest.raises(ValueError, match="start"):
        HyperMIMO(6, start="ml")
    assert _reloaded(m, tmp_path / "l").start == "lmmse"
    assert _reloaded(HyperMIMO(6, 5, 75), tmp_path / "old", without="start").start == "zero"

"""Detectors against theory and independent references."""

import itertools
import math

import numpy as np
import pytest
import torch
from neuralmimo.channels import IIDRayleigh, Kronecker, LocalScattering
from neuralmimo.constellation import Constellation
from neuralmimo.detectors import kbest_detect, linear_detect, ml_detect
from neuralmimo.receiver.estimation import ls_estimate
from neuralmimo.receiver.frames import FrameLayout
from neuralmimo.metrics import wilson_interval
from neuralmimo.realvalued import mat_to_real, vec_to_complex, vec_to_real
from neuralmimo.snr import complex_noise, noise_variance


def _q(x):
    return 0.5 * math.erfc(x / math.sqrt(2))


def zf_qpsk_ser_closed_form(nr: int, nt: int, es_over_nv: float) -> float:
    """QPSK SER of ZF with perfect CSI on i.i.d. CN(0,1) channels.

    The post-processing SNR of each stream is gamma = (Es/sigma^2) X with X ~ chi^2_{2(Nr-Nt+1)}/2 =
    Gamma(Nr-Nt+1, 1); given gamma the QPSK SER is 2Q(sqrt(gamma)) - Q(sqrt(gamma))^2. The average
    over X is computed by Gauss-Laguerre quadrature.
    """
    m = nr - nt + 1
    x, w = np.polynomial.laguerre.laggauss(80)
    f = np.array([2 * _q(math.sqrt(es_over_nv * xi)) - _q(math.sqrt(es_over_nv * xi)) ** 2 for xi in x])
    return float(np.sum(w * f * x ** (m - 1)) / math.gamma(m))


@pytest.mark.parametrize("snr_db", [0.0, 4.0, 8.0])
def test_zf_ser_matches_closed_form(snr_db):
    nt, nr, n = 4, 8, 40_000
    const = Constellation("qpsk")
    g = torch.Generator().manual_seed(int(100 + snr_db))
    chan = IIDRayleigh(nr, nt)
    nv = noise_variance(snr_db, channel_energy=chan.mean_energy, nr=nr, nt=nt)
    h = chan.sample(n, g)
    idx = const.random_indices((n, nt, 1), g)
    y = h @ const.symbols(idx) + complex_noise((n, nr, 1), nv, g)
    x_hat, _ = linear_detect(y, h, nv, "zf", const)
    errors = (const.hard_decision(x_hat) != idx).float()
    ser = float(errors.mean())
    theory = zf_qpsk_ser_closed_form(nr, nt, 1.0 / nv)
    # The Nt streams of one vector share H, so they are not independent; the average of Nt
    # exchangeable per-stream estimates has no larger variance than one stream's, so the Wilson
    # interval for n (not n*Nt) trials is conservative. 99.9 % per SNR point.
    lo, hi = wilson_interval(round(ser * n), n, 0.999)
    assert lo <= theory <= hi, f"SER {ser:.4e} outside [{lo:.4e}, {hi:.4e}] around theory {theory:.4e}"


def test_zf_mmse_complex_equals_real_valued_equations():
    """Eq. (9)/(11) in the real-valued model give the same estimates as the complex evaluation."""
    g = torch.Generator().manual_seed(3)
    const = Constellation("qpsk")
    h = IIDRayleigh(6, 3).sample(50, g).to(torch.complex128)
    y = torch.complex(torch.randn(50, 6, 2, generator=g, dtype=torch.float64), torch.randn(50, 6, 2, generator=g, dtype=torch.float64))
    nv = 0.3
    hr = mat_to_real(h)
    yr = vec_to_real(y.mT).mT  # (50, 12, 2)
    zf_r = torch.linalg.solve(hr.mT @ hr, hr.mT @ yr)
    zf, _ = linear_detect(y, h, nv, "zf", const)
    assert torch.allclose(vec_to_complex(zf_r.mT).mT, zf, atol=1e-9)
    a_mmse = torch.linalg.solve(hr.mT @ hr + (nv / 2) / 0.5 * torch.eye(6, dtype=torch.float64), hr.mT)  # per-dim noise / per-dim energy
    mmse_biased = vec_to_complex((a_mmse @ yr).mT).mT
    mmse, _ = linear_detect(y, h, nv, "mmse", const)
    # ours is the unbiased version: the same direction, rescaled per stream by 1/mu_k
    ratio = mmse_biased / mmse
    assert torch.allclose(ratio.imag, torch.zeros_like(ratio.real), atol=1e-9)
    assert torch.allclose(ratio.real, ratio.real[..., :1].expand_as(ratio.real), atol=1e-9)


@pytest.mark.parametrize("name,channel", [
    ("iid", IIDRayleigh(8, 4)),
    ("kronecker", Kronecker(8, 4, rho_rx=0.8, rho_tx=0.5)),
    ("local-scattering", LocalScattering(8, 4, seed=2)),
])
@pytest.mark.parametrize("modulation", ["qpsk", "16qam"])
def test_mmse_never_worse_than_zf(name, channel, modulation):
    """Paired comparison on identical frames with LS CSI: MMSE's extra errors over ZF, per frame,
    must not exceed 3.3 standard errors of the paired difference (one-sided, ~5e-4)."""
    const = Constellation(modulation)
    lay = FrameLayout(4, 8, 16)
    g = torch.Generator().manual_seed(7)
    n = 3000
    for snr_db in (0.0, 10.0, 20.0):
        nv = noise_variance(snr_db, channel_energy=channel.mean_energy, nr=8, nt=4)
        h = channel.sample(n, g)
        idx = const.random_indices((n, 4, 16), g)
        y = h @ lay.assemble(const.symbols(idx)) + complex_noise((n, 8, lay.length), nv, g)
        y_p, y_d = lay.split(y)
        h_ls, nv_ls = ls_estimate(y_p, lay.pilots())
        err = {}
        for kind in ("zf", "mmse"):
            x, _ = linear_detect(y_d, h_ls, nv_ls, kind, const)
            err[kind] = (const.hard_decision(x) != idx).double().sum((-2, -1))
        d = err["mmse"] - err["zf"]
        assert float(d.mean()) <= 3.3 * float(d.std()) / n**0.5 + 1e-12, f"{snr_db} dB: MMSE worse than ZF"


def _brute_force_ml(y: np.ndarray, h: np.ndarray, points: np.ndarray) -> tuple:
    """Independent exhaustive search in numpy float64, one vector at a time."""
    best, best_m = None, np.inf
    for cand in itertools.product(range(len(points)), repeat=h.shape[1]):
        m = float(np.sum(np.abs(y - h @ points[list(cand)]) ** 2))
        if m < best_m:
            best, best_m = cand, m
    return best


@pytest.mark.parametrize("modulation,nt,nr", [("bpsk", 6, 4), ("qpsk", 3, 4), ("qpsk", 4, 6), ("16qam", 2, 3)])
def test_ml_equals_brute_force(modulation, nt, nr):
    const = Constellation(modulation)
    rng = np.random.default_rng(nt * 10 + nr)
    pts = const.points.numpy().astype(np.complex128)
    for trial in range(40):
        h = (rng.standard_normal((nr, nt)) + 1j * rng.standard_normal((nr, nt))) / math.sqrt(2)
        s = pts[rng.integers(0, len(pts), nt)]
        y = h @ s + 0.6 * (rng.standard_normal(nr) + 1j * rng.standard_normal(nr))
        ours = ml_detect(torch.from_numpy(y)[:, None], torch.from_numpy(h), const)[:, 0]
        assert tuple(ours.tolist()) == _brute_force_ml(y, h, pts), f"trial {trial}"


def test_ml_limit_is_enforced():
    with pytest.raises(ValueError, match="exceeds the limit"):
        ml_detect(torch.zeros(1, 32, 1, dtype=torch.complex64), torch.zeros(1, 32, 9, dtype=torch.complex64), Constellation("qpsk"))


@pytest.mark.parametrize("modulation,nt,nr", [("qpsk", 3, 4), ("bpsk", 5, 6), ("16qam", 2, 4)])
def test_kbest_with_full_k_equals_ml(modulation, nt, nr):
    const = Constellation(modulation)
    g = torch.Generator().manual_seed(9)
    h = IIDRayleigh(nr, nt).sample(300, g).to(torch.complex128)
    idx = const.random_indices((300, nt, 4), g)
    y = h @ const.symbols(idx).to(torch.complex128) + complex_noise((300, nr, 4), 0.5, g, torch.complex128)
    k = const.num_points ** (nt - 1)
    assert torch.equal(kbest_detect(y, h, const, k), ml_detect(y, h, const))
    # a small K is allowed to differ, but not to be wildly worse than ML
    kb1 = kbest_detect(y, h, const, 1)
    assert (kb1 != idx).float().mean() >= (ml_detect(y, h, const) != idx).float().mean() - 0.02


def test_linear_llrs_agree_with_decisions():
    const = Constellation("16qam")
    g = torch.Generator().manual_seed(4)
    h = IIDRayleigh(8, 4).sample(200, g)
    idx = const.random_indices((200, 4, 8), g)
    y = h @ const.symbols(idx) + complex_noise((200, 8, 8), 0.05, g)
    x, eff = linear_detect(y, h, 0.05, "mmse", const)
    llr = const.llr_maxlog(x, eff.unsqueeze(-1))
    nz = llr.abs() > 1e-3
    hard = const.indices_to_bits(const.hard_decision(x))
    assert torch.equal(const.llr_to_bits(llr)[nz], hard[nz])

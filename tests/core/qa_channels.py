"""Channel models: empirical statistics against the analytic ones."""

import math

import pytest
import torch

from neuralmimo.channels import (DeepSICSynthetic, IIDRayleigh, Kronecker, LocalScattering, TimeVaryingCorrelated,
                                 jakes_rho, sed_matrix, vec_columns)
from neuralmimo.snr import convert_snr_db, noise_variance

N_SAMPLES = 40_000


def _assert_cov_matches(emp: torch.Tensor, ana: torch.Tensor, n: int, k: float = 5.5):
    """Each entry of a sample covariance of n complex Gaussian vectors has standard error
    sqrt(C_ii C_jj / n); allow k standard errors (k=5.5 keeps the family-wise false-alarm
    probability below 1e-4 for the few hundred entries checked)."""
    d = torch.diagonal(ana).real
    se = torch.sqrt(d[:, None] * d[None, :] / n)
    err = (emp - ana).abs()
    assert bool((err <= k * se + 1e-12).all()), f"max error {float((err / se).max()):.2f} standard errors"


def _emp_cov(h):
    v = vec_columns(h).to(torch.complex128)
    return v.T @ v.conj() / v.shape[0]


@pytest.mark.parametrize("model", [
    IIDRayleigh(4, 3),
    Kronecker(4, 3, rho_rx=0.8, rho_tx=0.5),
    LocalScattering(6, 2, angle_std_deg=10, angles_deg=[-30.0, 20.0]),
    TimeVaryingCorrelated(4, 2, rho_rx=0.7, rho_tx=0.3, shadowing_std_db=0.0),
], ids=["iid", "kronecker", "local-scattering", "time-varying"])
def test_empirical_covariance_matches_analytic(model):
    h = model.sample(N_SAMPLES, torch.Generator().manual_seed(11))
    assert h.shape == (N_SAMPLES, model.nr, model.nt) and h.dtype == torch.complex64
    _assert_cov_matches(_emp_cov(h), model.covariance(), N_SAMPLES)
    assert abs(float(h.abs().square().sum((-2, -1)).mean()) - model.mean_energy) < 0.05 * model.mean_energy


def test_kronecker_covariance_is_kron_of_exponentials():
    m = Kronecker(3, 2, rho_rx=0.6, rho_tx=0.4)
    c = m.covariance()
    # entry H[n,k] vs H[n',k']: rho_rx^|n-n'| rho_tx^|k-k'|
    assert math.isclose(float(c[0 * 3 + 0, 1 * 3 + 2].real), 0.6**2 * 0.4, rel_tol=1e-9)


def test_local_scattering_matches_eq13():
    m = LocalScattering(4, 1, angle_std_deg=10, angles_deg=[30.0])
    c = m.covariance()
    phi, s = math.radians(30), math.radians(10)
    dm = 0 - 2  # m - n for entry (0, 2)
    expected = complex(math.cos(2 * math.pi * 0.5 * dm * math.sin(phi)), math.sin(2 * math.pi * 0.5 * dm * math.sin(phi)))
    expected *= math.exp(-s**2 / 2 * (2 * math.pi * 0.5 * dm * math.cos(phi)) ** 2)
    assert abs(complex(c[0, 2]) - expected) < 1e-12
    # users are dropped inside the 120 degree sector
    drops = LocalScattering(8, 1000, seed=4).angles
    assert float(drops.abs().max()) <= math.radians(60)


def test_local_scattering_redrop_changes_angles():
    m = LocalScattering(8, 2, redrop=True)
    h = m.sample(2000, torch.Generator().manual_seed(1))
    fixed = LocalScattering(8, 2, seed=1).sample(2000, torch.Generator().manual_seed(1))
    # with new angles per sample the receive covariance is smoother (less dominant eigenvalue)
    def top_eig_share(x):
        r = (x[..., 0:1] @ x[..., 0:1].mH).mean(0).to(torch.complex128)
        w = torch.linalg.eigvalsh(r)
        return float(w[-1] / w.sum())
    assert top_eig_share(h) < top_eig_share(fixed)


def test_time_varying_lag_one_correlation():
    m = TimeVaryingCorrelated(3, 2, rho_rx=0.5, rho_tx=0.2, rho_time=0.9, shadowing_std_db=0.0)
    g = torch.Generator().manual_seed(5)
    runs = torch.stack([m.sequence(2, g) for _ in range(6000)])  # (runs, 2, Nr, Nt)
    v0, v1 = vec_columns(runs[:, 0]).to(torch.complex128), vec_columns(runs[:, 1]).to(torch.complex128)
    cross = v1.T @ v0.conj() / v0.shape[0]  # E[vec H_{t+1} vec H_t^H] = rho_time * C
    _assert_cov_matches(cross, 0.9 * m.covariance(), v0.shape[0])


def test_time_varying_shadowing_keeps_unit_mean_gain():
    m = TimeVaryingCorrelated(4, 2, shadowing_std_db=4.0)
    h = m.sample(N_SAMPLES, torch.Generator().manual_seed(6))
    p = h.abs().square().mean((0, 1))  # per user
    assert torch.allclose(p, torch.ones(2), atol=0.06)


def test_jakes_rho():
    assert math.isclose(jakes_rho(0.0, 1e-3), 1.0)
    assert math.isclose(jakes_rho(100.0, 1e-3), 0.9037126420924663, rel_tol=1e-9)  # J0(0.2 pi) from scipy.special.j0


def test_deepsic_sed_channel_profiles_and_snr():
    m = DeepSICSynthetic(12, 8, k_min=4, profile_amplitude_db=4.0, change_prob=0.5, seed=3)
    ks = m.user_counts(100)
    assert ks == m.user_counts(100)  # reproducible
    assert min(ks) >= 4 and max(ks) <= 8 and len(set(ks)) > 1
    assert all(abs(a - b) <= 1 for a, b in zip(ks, ks[1:]))  # one user joins or leaves at a time
    for blk in list(m.blocks(30)):
        assert blk.h.shape == (12, blk.n_users)
        g = 10 ** (blk.user_snr_offset_db / 10)
        assert torch.allclose(blk.h.real.double(), sed_matrix(12, blk.n_users) * g.sqrt(), atol=1e-6)
        assert float(blk.h.imag.abs().max()) == 0.0
    # DeepSIC convention: per-user SNR on its strongest antenna = SNR + offset
    snr_db = 10.0
    nv = noise_variance(snr_db, "deepsic", channel_energy=m.mean_energy, nr=12, nt=8)
    h = m.channel(7, 8)
    strongest = h.abs().square().amax(0)  # per user
    per_user_db = 10 * torch.log10(strongest / (nv / 2))  # per real dimension, BPSK
    assert torch.allclose(per_user_db.double(), snr_db + m.snr_offset_db(7), atol=1e-4)
    offsets = torch.stack([m.snr_offset_db(t) for t in range(100)])
    assert float(offsets.abs().max()) <= 4.0 + 1e-9 and float(offsets.std(0).min()) > 1.0  # varies by block


def test_snr_conventions_convert_consistently():
    kw = dict(channel_energy=32 * 8, nr=32, nt=8)
    nv = noise_variance(10.0, "project", **kw)
    assert math.isclose(nv, 8 / 10.0)  # E||Hx||^2 / Nr = Nt for unit-power entries
    for conv in ("deepsic", "detnet"):
        s = convert_snr_db(10.0, "project", conv, **kw)
        assert math.isclose(noise_variance(s, conv, **kw), nv, rel_tol=1e-12)
    # DetNet: mean column energy (Nr) over per-dimension noise (nv / 2)
    assert math.isclose(convert_snr_db(10.0, "project", "detnet", **kw), 10 * math.log10(32 / (nv / 2)), rel_tol=1e-12)

"""Channel models: empirical statistics against the analytic ones."""

import math

import pytest
import torch
from neuralmimo.channels import (
    IIDRayleigh,
    Kronecker,
    LocalScattering,
    TimeVaryingCorrelated,
    jakes_rho,
    vec_columns,
)

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


def test_local_scattering_redrop_grid_holds_the_exact_square_roots():
    from neuralmimo.channels.fading import REDROP_GRID_DEG, local_scattering_covariance

    m = LocalScattering(12, 6, redrop=True)
    grid = m._redrop_sqrt()
    assert grid.shape[0] == round(120 / REDROP_GRID_DEG) + 1
    for i in (0, 1234, grid.shape[0] - 1):
        angle = math.radians(-60 + i * REDROP_GRID_DEG)
        want = local_scattering_covariance(12, angle, math.radians(10), 0.5)
        got = (grid[i] @ grid[i].mH).to(torch.complex128)
        assert float((got - want).abs().max()) < 1e-5


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





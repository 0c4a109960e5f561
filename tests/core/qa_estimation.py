"""LS channel estimation: error covariance, noise-variance estimate, bad pilots."""

import pytest
import torch

from neuralmimo.estimation import PilotError, ls_error_covariance, ls_estimate
from neuralmimo.frames import pilot_matrix
from neuralmimo.snr import complex_noise

TRIALS = 20_000


@pytest.mark.parametrize("kind", ["orthogonal", "random"])
def test_ls_error_covariance_per_row(kind):
    g = torch.Generator().manual_seed(21)
    nt, n_p, nr, nv = 3, 6, 4, 0.2
    if kind == "orthogonal":
        x_p = pilot_matrix(nt, n_p, torch.complex128)
    else:
        x_p = torch.complex(torch.randn(nt, n_p, generator=g, dtype=torch.float64),
                            torch.randn(nt, n_p, generator=g, dtype=torch.float64))
    h = torch.complex(torch.randn(TRIALS, nr, nt, generator=g, dtype=torch.float64),
                      torch.randn(TRIALS, nr, nt, generator=g, dtype=torch.float64))
    y = h @ x_p + complex_noise((TRIALS, nr, n_p), nv, g, torch.complex128)
    h_ls, nv_hat = ls_estimate(y, x_p)
    err = h_ls - h  # (T, Nr, Nt)
    ana = ls_error_covariance(x_p, nv)  # E[e^H e] for each row e
    d = torch.diagonal(ana).real
    se = torch.sqrt(d[:, None] * d[None, :] / TRIALS)
    for row in range(nr):
        e = err[:, row, :]
        emp = e.conj().T @ e / TRIALS
        assert bool(((emp - ana).abs() <= 5.5 * se).all()), f"row {row}"
    # unbiased residual noise estimate: mean within 5 standard errors of the truth
    assert abs(float(nv_hat.mean()) - nv) < 5 * float(nv_hat.std()) / TRIALS**0.5


def test_noise_estimate_needs_residual_dof():
    x_p = pilot_matrix(2, 2)
    _, nv = ls_estimate(torch.randn(5, 3, 2, dtype=torch.complex64), x_p)
    assert torch.isnan(nv).all()


def test_rank_deficient_pilots_raise():
    x_p = pilot_matrix(2, 4)
    x_p[1] = x_p[0]
    with pytest.raises(PilotError, match="rank-deficient"):
        ls_estimate(torch.randn(3, 4, dtype=torch.complex64), x_p)
    bad = pilot_matrix(2, 4)
    bad[0, 0] = float("nan")
    with pytest.raises(PilotError, match="NaN"):
        ls_estimate(torch.randn(3, 4, dtype=torch.complex64), bad)

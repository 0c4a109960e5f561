"""LS channel estimation: error covariance, noise-variance estimate, bad pilots."""


import pytest
import torch
from neuralmimo.constellation import Constellation
from neuralmimo.datasets import draw_frames
from neuralmimo.receiver.estimation import (
    LSChannelEstimator,
    PilotError,
    estimate_problems,
    ls_error_covariance,
    ls_estimate,
    ls_padded,
)
from neuralmimo.receiver.frames import pilot_matrix
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


def test_fixed_pilot_estimator_equals_ls_and_checks_pilots():
    x_p = pilot_matrix(3, 5)
    y = torch.randn(4, 6, 5, dtype=torch.complex64)
    h1, n1 = LSChannelEstimator(x_p)(y)
    h2, n2 = ls_estimate(y, x_p)
    assert torch.allclose(h1, h2, atol=1e-6) and torch.allclose(n1, n2, atol=1e-6)
    with pytest.raises(PilotError):
        LSChannelEstimator(torch.ones(2, 4, dtype=torch.complex64))  # identical rows: rank 1


def test_estimate_problems_names_each_failure():
    h = torch.randn(3, 4, 2, dtype=torch.complex64)
    h[1, 0, 0] = float("nan")
    h[2] = 0
    p = estimate_problems(h)
    assert p[0] is None and "non-finite" in p[1] and "rank-deficient" in p[2]


BPSK = Constellation("bpsk")


def test_ls_padded_matches_per_block_ls():
    g = torch.Generator().manual_seed(4)
    h = torch.randn(3, 6, 5, dtype=torch.complex64, generator=g)
    b = draw_frames(h, BPSK, 100, 120 - 100, 0.1, g, pilots="random", n_users=torch.tensor([5, 3, 2]))
    x_p = BPSK.symbols(b.labels[..., :100]) * b.active[..., None]
    h_ls, nv = ls_padded(b.y[..., :100], x_p, b.active)
    for t, k in enumerate([5, 3, 2]):
        ref_h, ref_nv = ls_estimate(b.y[t, :, :100], x_p[t, :k])
        torch.testing.assert_close(h_ls[t, :, :k], ref_h, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(nv[t], ref_nv, rtol=1e-4, atol=1e-6)
        assert bool((h_ls[t, :, k:] == 0).all())

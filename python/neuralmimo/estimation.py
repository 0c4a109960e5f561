"""Pilot-based least-squares channel estimation (learngene paper eq. (5)).

With received pilots ``Y_p = H X_p + N_p`` (``Y_p: Nr x Np``, ``X_p: Nt x Np``, ``Np >= Nt``)

    H_LS = Y_p X_p^H (X_p X_p^H)^{-1},

whose error ``E = N_p X_p^H (X_p X_p^H)^{-1}`` has per-row covariance ``sigma^2 (X_p X_p^H)^{-1}``
(``sigma^2 / Np * I`` for the project's orthogonal pilots). The noise variance is estimated from
the pilot residual ``R = Y_p - H_LS X_p``, which lives in the ``Np - Nt`` dimensional orthogonal
complement of the pilot rows: ``sigma^2_hat = ||R||_F^2 / (Nr (Np - Nt))`` is unbiased.
"""

from __future__ import annotations

import torch


class PilotError(ValueError):
    """Pilots cannot give a channel estimate (rank-deficient or non-finite)."""


def _check_pilots(x_p: torch.Tensor, rcond: float) -> torch.Tensor:
    if not bool(torch.isfinite(x_p).all()):
        raise PilotError("pilot matrix contains NaN or Inf")
    gram = x_p @ x_p.mH
    s = torch.linalg.svdvals(gram)
    if (s[..., -1] <= rcond * s[..., 0]).any():
        raise PilotError(f"pilot matrix is rank-deficient: X_p X_p^H has condition number "
                         f"{float((s[..., 0] / s[..., -1].clamp(min=1e-300)).max()):.3g}")
    return gram


def ls_estimate(y_p: torch.Tensor, x_p: torch.Tensor, rcond: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """LS channel estimate and residual noise-variance estimate.

    Parameters
    ----------
    y_p : ``(..., Nr, Np)`` complex received pilots
    x_p : ``(Nt, Np)`` or ``(..., Nt, Np)`` complex pilot symbols, full row rank

    Returns
    -------
    h_ls : ``(..., Nr, Nt)`` complex
    noise_var : ``(...)`` real, complex noise variance per receive antenna estimated from the
        residual; NaN when ``Np == Nt`` (no residual degrees of freedom).

    Raises :class:`PilotError` if ``X_p X_p^H`` is rank-deficient.
    """
    nt, n_p = x_p.shape[-2:]
    if y_p.shape[-1] != n_p:
        raise ValueError(f"received pilots have {y_p.shape[-1]} columns, pilot matrix has {n_p}")
    x_p = x_p.to(device=y_p.device, dtype=y_p.dtype)
    gram = _check_pilots(x_p, rcond)
    # H = Y X^H G^{-1}  <=>  G^H H^H = X Y^H (G Hermitian)
    h_ls = torch.linalg.solve(gram, x_p @ y_p.mH).mH
    resid = y_p - h_ls @ x_p
    dof = y_p.shape[-2] * (n_p - nt)
    energy = resid.abs().square().sum((-2, -1))
    noise_var = energy / dof if dof > 0 else torch.full_like(energy, float("nan"))
    return h_ls, noise_var


def ls_error_covariance(x_p: torch.Tensor, noise_var: float) -> torch.Tensor:
    """Analytic covariance ``sigma^2 (X_p X_p^H)^{-1}`` of each row of ``H_LS - H``."""
    return noise_var * torch.linalg.inv(x_p @ x_p.mH)

"""Pilot-based least-squares channel estimation, [LG] eq. (5).

With received pilots ``Y_p = H X_p + N_p`` (``Y_p: Nr x Np``, ``X_p: Nt x Np``, ``Np >= Nt``)

    H_LS = Y_p X_p^H (X_p X_p^H)^{-1},

whose error ``E = N_p X_p^H (X_p X_p^H)^{-1}`` has per-row covariance ``sigma^2 (X_p X_p^H)^{-1}``
(``sigma^2 / Np * I`` for the project's orthogonal pilots). The noise variance is estimated from
the pilot residual ``R = Y_p - H_LS X_p``, which lives in the ``Np - Nt`` dimensional orthogonal
complement of the pilot rows: ``sigma^2_hat = ||R||_F^2 / (Nr (Np - Nt))`` is unbiased.
"""

from __future__ import annotations

import torch


def frame_scale(x: torch.Tensor) -> torch.Tensor:
    """A power of two near the largest magnitude of each matrix ``x (..., m, n)``: ``(..., 1, 1)``
    float64 (1 for an all-zero or non-finite matrix).

    Dividing a frame by it keeps every product and sum of squares of the LS estimate and the
    detectors inside float32's range for any finite input scale (e.g. 1e-30 or 1e19), and is exact
    (a power of two only moves the exponent), so results at ordinary scales are unchanged bit for bit.
    """
    peak = x.detach().abs().amax((-2, -1), keepdim=True).to(torch.float64)
    ok = torch.isfinite(peak) & (peak > 0)
    exp = torch.round(torch.log2(torch.where(ok, peak, torch.ones_like(peak))))
    return torch.where(ok, torch.exp2(exp), torch.ones_like(peak))


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


class LSChannelEstimator:
    """LS estimation with a fixed pilot matrix: validates the pilots once and precomputes
    ``P = X_p^H (X_p X_p^H)^{-1}`` (``Np x Nt``), so each estimate is one product ``H_LS = Y_p P``.
    Each frame is scaled by :func:`frame_scale` first; the noise variance is float64 (the square
    of a float32-sized signal need not fit float32).

    Raises :class:`PilotError` at construction if ``X_p X_p^H`` is rank-deficient.
    """

    def __init__(self, x_p: torch.Tensor, rcond: float = 1e-6):
        gram = _check_pilots(x_p, rcond)
        self.x_p = x_p
        self.nt, self.n_pilots = x_p.shape[-2:]
        # P^H = G^{-1} X_p  (G Hermitian)
        self._proj = torch.linalg.solve(gram, x_p).mH

    def __call__(self, y_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``y_p (..., Nr, Np)`` -> ``(h_ls (..., Nr, Nt), noise_var (...))``, see :func:`ls_estimate`."""
        if y_p.shape[-1] != self.n_pilots:
            raise ValueError(f"received pilots have {y_p.shape[-1]} columns, pilot matrix has {self.n_pilots}")
        proj = self._proj.to(device=y_p.device, dtype=y_p.dtype)
        x_p = self.x_p.to(device=y_p.device, dtype=y_p.dtype)
        scale = frame_scale(y_p)  # scale-free: any finite input scale gives the same estimate
        y_n = y_p / scale.to(y_p.real.dtype)
        h_n = y_n @ proj
        resid = y_n - h_n @ x_p
        dof = y_p.shape[-2] * (self.n_pilots - self.nt)
        energy = resid.abs().square().sum((-2, -1)).to(torch.float64) * scale[..., 0, 0] ** 2
        noise_var = energy / dof if dof > 0 else torch.full_like(energy, float("nan"))
        return h_n * scale.to(y_p.real.dtype), noise_var


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

    Raises :class:`PilotError` if ``X_p X_p^H`` is rank-deficient. For many estimates with the
    same pilots use :class:`LSChannelEstimator`.
    """
    x_p = x_p.to(device=y_p.device, dtype=y_p.dtype)
    return LSChannelEstimator(x_p, rcond)(y_p)


def ls_error_covariance(x_p: torch.Tensor, noise_var: float) -> torch.Tensor:
    """Analytic covariance ``sigma^2 (X_p X_p^H)^{-1}`` of each row of ``H_LS - H``."""
    return noise_var * torch.linalg.inv(x_p @ x_p.mH)


def estimate_problems(h_ls: torch.Tensor, rcond: float = 1e-6) -> list[str | None]:
    """Why each channel estimate in a batch is unusable for detection, or ``None`` if it is fine.

    ``h_ls (F, Nr, Nt)``. An estimate is unusable when it has NaN/Inf entries (non-finite
    received pilots) or is rank-deficient, ``s_min <= rcond * s_max`` (e.g. a burst of zero
    samples from a receiver underflow): ZF would be undefined and MMSE meaningless.
    """
    finite = torch.isfinite(h_ls).flatten(1).all(1)
    s = torch.linalg.svdvals(torch.where(finite[:, None, None], h_ls, torch.zeros_like(h_ls)))
    rank_ok = (s[:, 0] > 0) & (s[:, -1] > rcond * s[:, 0])
    out: list[str | None] = []
    for i in range(h_ls.shape[0]):
        if not bool(finite[i]):
            out.append("non-finite (NaN/Inf) received pilots")
        elif not bool(rank_ok[i]):
            cond = float(s[i, 0] / s[i, -1]) if float(s[i, -1]) > 0 else float("inf")
            out.append(f"rank-deficient channel estimate (condition number {cond:.3g})")
        else:
            out.append(None)
    return out


def ls_padded(y_p: torch.Tensor, x_p: torch.Tensor, active: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """LS estimate and residual noise variance for frames with different pilot matrices and
    different numbers of active users.

    Parameters
    ----------
    y_p : ``(T, Nr, Np)`` complex received pilots
    x_p : ``(T, Nt, Np)`` complex pilot symbols (absent users' rows zero)
    active : ``(T, Nt)`` bool, the users present in each frame

    Returns
    -------
    h_ls : ``(T, Nr, Nt)`` complex, absent users' columns exactly zero
    noise_var : ``(T,)`` float64, ``||Y_p - H_LS X_p||_F^2 / (Nr (Np - K))``

    The Gram matrix gets ones on the absent users' diagonal so that it stays invertible; as their
    pilot rows are zero the absent columns of the estimate come out exactly zero.
    """
    scale = frame_scale(y_p)  # scale-free, as LSChannelEstimator
    y_n = y_p / scale.to(y_p.real.dtype)
    gram = x_p @ x_p.mH + torch.diag_embed((~active).to(x_p.dtype))
    h_n = torch.linalg.solve(gram, x_p @ y_n.mH).mH  # (X X^H)^{-1} X Y^H, transposed
    resid = y_n - h_n @ x_p
    dof = y_p.shape[-2] * (y_p.shape[-1] - active.sum(-1))
    noise_var = (resid.abs().square().sum((-2, -1)) / dof.clamp(min=1)).to(torch.float64) * scale[..., 0, 0] ** 2
    return h_n * scale.to(y_p.real.dtype), noise_var

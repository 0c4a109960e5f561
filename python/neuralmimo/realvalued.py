"""The real-valued equivalent MIMO model, eq. (2)-(3) of the learngene/SDNet paper.

``x = [Re(x_bar); Im(x_bar)]``, ``y = [Re(y_bar); Im(y_bar)]`` and

    H = [[Re(H_bar), -Im(H_bar)],
         [Im(H_bar),  Re(H_bar)]]      in R^{2Nr x 2Nt},

so that ``y = H x + n`` holds exactly whenever ``y_bar = H_bar x_bar + n_bar``.
All functions are batched over leading dimensions.
"""

from __future__ import annotations

import torch


def vec_to_real(x: torch.Tensor) -> torch.Tensor:
    """Complex vectors ``(..., n)`` -> real ``(..., 2n)`` stacked ``[Re; Im]``."""
    return torch.cat([x.real, x.imag], dim=-1)


def vec_to_complex(x: torch.Tensor) -> torch.Tensor:
    """Real ``(..., 2n)`` stacked ``[Re; Im]`` -> complex ``(..., n)``."""
    n = x.shape[-1]
    if n % 2:
        raise ValueError(f"real-valued vector length must be even, got {n}")
    return torch.complex(x[..., : n // 2], x[..., n // 2 :])


def mat_to_real(h: torch.Tensor) -> torch.Tensor:
    """Complex matrices ``(..., Nr, Nt)`` -> real ``(..., 2Nr, 2Nt)`` per eq. (2)."""
    top = torch.cat([h.real, -h.imag], dim=-1)
    bottom = torch.cat([h.imag, h.real], dim=-1)
    return torch.cat([top, bottom], dim=-2)


def mat_to_complex(h: torch.Tensor) -> torch.Tensor:
    """Real ``(..., 2Nr, 2Nt)`` with the eq. (2) block structure -> complex ``(..., Nr, Nt)``.

    Reads the left block column; it does not check that the right column is consistent.
    """
    r, c = h.shape[-2:]
    if r % 2 or c % 2:
        raise ValueError(f"real-valued matrix dimensions must be even, got {tuple(h.shape[-2:])}")
    return torch.complex(h[..., : r // 2, : c // 2], h[..., r // 2 :, : c // 2])

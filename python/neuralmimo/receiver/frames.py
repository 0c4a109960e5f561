"""Frames: ``Np`` orthogonal pilot vectors followed by ``Nd`` data vectors.

A frame transmitted by ``Nt`` antennas/users is the ``Nt x (Np + Nd)`` matrix ``[X_p, X_d]``.
Pilots are the first ``Nt`` rows of the ``Np``-point DFT matrix (unit-modulus entries), so
``X_p X_p^H = Np I`` for every ``Np >= Nt`` and every pilot symbol has unit energy like the
data constellations.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


@functools.lru_cache(maxsize=64)
def pilot_matrix(nt: int, n_pilots: int, dtype=torch.complex64) -> torch.Tensor:
    """Orthogonal ``Nt x Np`` pilot matrix with ``X_p X_p^H = Np I``.

    Cached (every frame needs it): the returned tensor is shared, never modify it in place.
    Raises ``ValueError`` if ``Np < Nt`` (the LS estimate would be rank-deficient).
    """
    if nt < 1 or n_pilots < nt:
        raise ValueError(f"need n_pilots >= nt >= 1 for orthogonal pilots, got nt={nt}, n_pilots={n_pilots}")
    k = torch.arange(nt, dtype=torch.float64).unsqueeze(1)
    n = torch.arange(n_pilots, dtype=torch.float64).unsqueeze(0)
    phase = -2.0 * torch.pi * k * n / n_pilots
    return torch.polar(torch.ones_like(phase), phase).to(dtype)


@dataclass(frozen=True)
class FrameLayout:
    """Shape of a frame: ``nt`` transmit streams, ``n_pilots`` pilot and ``n_data`` data vectors."""

    nt: int
    n_pilots: int
    n_data: int

    def __post_init__(self):
        if self.nt < 1 or self.n_pilots < self.nt or self.n_data < 1:
            raise ValueError(f"invalid frame layout {self}: need n_pilots >= nt >= 1 and n_data >= 1")

    @property
    def length(self) -> int:
        return self.n_pilots + self.n_data

    def pilots(self, dtype=torch.complex64) -> torch.Tensor:
        return pilot_matrix(self.nt, self.n_pilots, dtype)

    def assemble(self, data: torch.Tensor) -> torch.Tensor:
        """Data ``(..., Nt, Nd)`` -> frame ``(..., Nt, Np + Nd)`` with the pilots in front."""
        if data.shape[-2:] != (self.nt, self.n_data):
            raise ValueError(f"data shape {tuple(data.shape[-2:])} does not match ({self.nt}, {self.n_data})")
        p = self.pilots(data.dtype).to(data.device).expand(*data.shape[:-2], self.nt, self.n_pilots)
        return torch.cat([p, data], dim=-1)

    def split(self, frame: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Received frame ``(..., Nr, Np + Nd)`` -> ``(Y_p (..., Nr, Np), Y_d (..., Nr, Nd))``."""
        if frame.shape[-1] != self.length:
            raise ValueError(f"frame length {frame.shape[-1]} != n_pilots + n_data = {self.length}")
        return frame[..., : self.n_pilots], frame[..., self.n_pilots :]


def frame_seed(seed: int, frame_number: int) -> int:
    """Seed of frame ``frame_number``'s data: transmitter and receiver-side error probes
    regenerate the same symbols from ``(seed, frame_number)`` alone, so an error-rate
    measurement survives dropped or delayed frames and works over the air."""
    return (int(seed) * 1_000_003 + int(frame_number)) % (1 << 63)


def frame_data_indices(constellation, layout: FrameLayout, seed: int, frame_numbers) -> torch.Tensor:
    """Constellation indices of the data part of the given frames, ``(F, Nt, Nd)`` int64.

    Frame ``n``'s symbols depend only on ``(seed, n)`` (see :func:`frame_seed`).
    """
    out = torch.empty((len(frame_numbers), layout.nt, layout.n_data), dtype=torch.int64)
    for i, n in enumerate(frame_numbers):
        g = torch.Generator().manual_seed(frame_seed(seed, n))
        out[i] = constellation.random_indices((layout.nt, layout.n_data), g)
    return out

"""Frames over given channels: the one way every family, the simulation and the lab draw
training and test data (transmit -> LS estimate).

A frame is ``Np`` pilot vectors followed by ``Nd`` data vectors sent over one channel matrix
(block fading). Pilots are either the project's orthogonal DFT pilots
(:func:`~neuralmimo.receiver.frames.pilot_matrix`, what the GNU Radio frame source sends) or random
constellation symbols known to the receiver (the DeepSIC paper's blocks, [MH] eq. (13)).
Families build their own features from the returned :class:`Frames`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..channels.base import transmit
from ..constellation import Constellation
from ..receiver.estimation import LSChannelEstimator, ls_padded
from ..receiver.frames import pilot_matrix
from ..snr import noise_variance

PILOTS = ("dft", "random")


@dataclass
class Frames:
    """``B`` frames, each over its own channel.

    y : ``(B, Nr, Np + Nd)`` complex received vectors, pilots first
    n_pilots : ``Np``
    x_p : pilot symbols, ``(Nt, Np)`` (DFT pilots) or ``(B, Nt, Np)`` (random; absent users zero)
    idx : ``(B, Nt, Nd)`` int64 point indices of the data (absent users 0)
    pilot_idx : ``(B, Nt, Np)`` point indices of random pilots, ``None`` for DFT pilots
    active : ``(B, Nt)`` bool, users present in each frame (always the first ``K``)
    h : ``(B, Nr, Nt)`` true channels (absent users' columns zero)
    noise_var : ``(B,)`` true complex noise variance per receive antenna
    h_ls, noise_var_hat : LS estimate ``(B, Nr, Nt)`` (absent columns zero) and the
        pilot-residual noise-variance estimate ``(B,)`` (NaN when ``Np == K``), set by
        :meth:`estimate`
    """

    y: torch.Tensor
    n_pilots: int
    x_p: torch.Tensor
    idx: torch.Tensor
    pilot_idx: torch.Tensor | None
    active: torch.Tensor
    h: torch.Tensor
    noise_var: torch.Tensor
    h_ls: torch.Tensor | None = None
    noise_var_hat: torch.Tensor | None = None

    @property
    def y_p(self) -> torch.Tensor:
        return self.y[..., : self.n_pilots]

    @property
    def y_d(self) -> torch.Tensor:
        return self.y[..., self.n_pilots:]

    @property
    def labels(self) -> torch.Tensor:
        """Point indices of every vector of the frame, ``(B, Nt, Np + Nd)`` (random pilots) or
        of the data only (DFT pilots are not constellation points)."""
        return self.idx if self.pilot_idx is None else torch.cat([self.pilot_idx, self.idx], -1)

    @property
    def n_users(self) -> torch.Tensor:
        return self.active.sum(-1)

    def __len__(self) -> int:
        return self.y.shape[0]

    def estimate(self, rcond: float = 1e-6) -> "Frames":
        """LS channel estimate and residual noise variance from the pilots ([LG] eq. (5),
        [MH] eq. (8)), in place; returns ``self``."""
        if self.pilot_idx is None and bool(self.active.all()):
            self.h_ls, self.noise_var_hat = LSChannelEstimator(self.x_p.to(self.y.dtype), rcond)(self.y_p)
        else:
            x_p = self.x_p if self.x_p.dim() == 3 else self.x_p.expand(len(self), -1, -1) * self.active[..., None]
            self.h_ls, self.noise_var_hat = ls_padded(self.y_p, x_p.to(self.y.dtype), self.active)
        return self


def draw_frames(h: torch.Tensor, constellation: Constellation, n_pilots: int, n_data: int, noise_var,
                generator: torch.Generator, *, pilots: str = "dft", n_users=None, estimate: bool = True) -> Frames:
    """Transmit one frame over each channel and (by default) estimate the channel from its pilots.

    Parameters
    ----------
    h : ``(B, Nr, Nt)`` complex channels
    constellation : the data (and random pilots') constellation, unit average energy
    n_pilots, n_data : ``Np`` pilot and ``Nd`` data vectors per frame (``Np >= K``)
    noise_var : float or ``(B,)``, complex noise variance per receive antenna (see
        :func:`~neuralmimo.snr.noise_variance` for the named SNR conventions)
    generator : source of the symbols and the noise
    pilots : ``"dft"`` (orthogonal, ``X_p X_p^H = Np I``) or ``"random"`` (constellation points)
    n_users : ``K`` active users per frame, int or ``(B,)`` (default all ``Nt``); absent users
        send nothing and their channel columns are zeroed
    estimate : compute ``h_ls`` and ``noise_var_hat`` (:meth:`Frames.estimate`)

    Returns
    -------
    :class:`Frames`. Draw order (fixed, so results are reproducible): symbols (random pilots and
    data in one draw, or the data only), then the noise of the whole frame.
    """
    if pilots not in PILOTS:
        raise ValueError(f"pilots must be one of {PILOTS}, got {pilots!r}")
    b, _, nt = h.shape
    k = torch.full((b,), nt) if n_users is None else torch.as_tensor(n_users).reshape(-1).expand(b)
    active = torch.arange(nt)[None, :] < k[:, None]
    if pilots == "random":
        labels = constellation.random_indices((b, nt, n_pilots + n_data), generator) * active[..., None]
        x = constellation.symbols(labels) * active[..., None]
        pilot_idx, idx = labels[..., :n_pilots], labels[..., n_pilots:]
        x_p = x[..., :n_pilots]
    else:
        idx = constellation.random_indices((b, nt, n_data), generator) * active[..., None]
        x_p = pilot_matrix(nt, n_pilots)
        data = constellation.symbols(idx) * active[..., None]
        x = torch.cat([(x_p * active[..., None]).to(data.dtype), data], -1)
        pilot_idx = None
    h = (h * active[:, None, :]).to(torch.complex64)
    nv = torch.as_tensor(noise_var, dtype=torch.float32).reshape(-1).expand(b).clone()
    y = transmit(h, x, nv[:, None, None], generator)
    frames = Frames(y, n_pilots, x_p, idx, pilot_idx, active, h, nv)
    return frames.estimate() if estimate else frames


CSI_KINDS = ("perfect", "ls")


@dataclass
class ChannelBatch:
    """``B`` channels with ``n`` data vectors each.

    y : ``(B, Nr, n)`` received data vectors; x : ``(B, Nu, n)`` sent symbols, idx their indices
    h, noise_var : what the receiver uses (true, or LS estimate and pilot-residual estimate)
    h_true, noise_var_true : the truth; snr_db : ``(B,)``
    """

    y: torch.Tensor
    x: torch.Tensor
    idx: torch.Tensor
    h: torch.Tensor
    noise_var: torch.Tensor
    h_true: torch.Tensor
    noise_var_true: torch.Tensor
    snr_db: torch.Tensor


def draw_channel_batch(channel, constellation: Constellation, batch: int, n_vectors: int, snr_db,
                       generator: torch.Generator, *, convention: str = "hypermimo", csi: str = "perfect", n_pilots: int = 16) -> ChannelBatch:
    """``batch`` channels from ``channel`` (a :class:`~neuralmimo.channels.ChannelModel`), each
    with ``n_vectors`` vectors at an SNR (dB, ``convention``) uniform in ``snr_db = (lo, hi)``
    or fixed (a number). Draw order: channels, SNRs, then the symbols and noise."""
    if csi not in CSI_KINDS:
        raise ValueError(f"csi must be one of {CSI_KINDS}, got {csi!r}")
    h = channel.sample(batch, generator)
    if isinstance(snr_db, (int, float)):
        snr = torch.full((batch,), float(snr_db), dtype=torch.float64)
    else:
        lo, hi = snr_db
        snr = lo + (hi - lo) * torch.rand(batch, generator=generator, dtype=torch.float64)
    p_ref = noise_variance(0.0, convention, channel_energy=channel.mean_energy, nr=channel.nr, nt=channel.nt)
    nv = (p_ref / 10.0 ** (snr / 10.0)).float()
    if csi == "perfect":
        idx = constellation.random_indices((batch, channel.nt, n_vectors), generator)
        x = constellation.symbols(idx)
        y = transmit(h, x, nv[:, None, None], generator)
        return ChannelBatch(y, x, idx, h, nv, h, nv, snr)
    f = draw_frames(h, constellation, n_pilots, n_vectors, nv, generator)
    return ChannelBatch(f.y_d, constellation.symbols(f.idx), f.idx, f.h_ls, f.noise_var_hat.float(), f.h, nv, snr)

"""The synthetic channel of the modular-hypernetwork DeepSIC paper [MH] Sec. IV-A, users joining
and leaving, and the paper's construction of real channels from complex ones."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .base import ChannelModel


def user_counts(n_blocks: int, k_min: int, k_max: int, change_prob: float, seed: int,
                k_initial: int | None = None) -> list[int]:
    """Users joining and leaving: ``K[t]`` for ``t = 0 .. n_blocks - 1``.

    ``K[0] = k_initial`` (default ``k_max``); at each block, with probability ``change_prob``,
    ``K`` moves one step up or down inside ``[k_min, k_max]``. Reproducible from ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    ks, k = [], k_max if k_initial is None else k_initial
    for _ in range(n_blocks):
        ks.append(k)
        if k_min < k_max and float(torch.rand(1, generator=g)) < change_prob:
            step = 1 if float(torch.rand(1, generator=g)) < 0.5 else -1
            if not k_min <= k + step <= k_max:
                step = -step
            k += step
    return ks


def sed_matrix(n_rx: int, n_users: int) -> torch.Tensor:
    """Spatial exponential decay matrix ``exp(-|n - k|)``, [MH] Sec. IV-A: ``(N, K)`` float64."""
    n = torch.arange(n_rx, dtype=torch.float64)[:, None]
    k = torch.arange(n_users, dtype=torch.float64)[None, :]
    return torch.exp(-(n - k).abs())


@dataclass
class SEDBlock:
    """One block of the DeepSIC synthetic channel."""

    index: int
    n_users: int
    h: torch.Tensor  # (N, K[t]) complex64, real-valued entries
    user_snr_offset_db: torch.Tensor  # (K[t],) per-user SNR relative to the nominal SNR


class DeepSICSynthetic(ChannelModel):
    """DeepSIC synthetic (SED) channel with block-varying per-user SNR profiles, [MH] Sec. IV-A.

    ``H[t][n, k] = sqrt(g_k[t]) exp(-|n - k|)`` for ``n < N`` and ``k < K[t]``, with
    ``g_k[t] = 10^(delta_k[t] / 10)`` and the per-user profile

        delta_k[t] = profile_amplitude_db cos(2 pi t / P_k + phi_k)   [dB].

    Combined with noise in the ``deepsic`` SNR convention (unit-gain diagonal), user ``k``'s SNR
    on its strongest antenna in block ``t`` is ``SNR + delta_k[t]``. The paper shows the profiles
    only as a figure (Fig. 2); periods ``P_k`` (uniform in ``period_range`` blocks) and phases
    ``phi_k`` are drawn from ``seed``.

    Users join and leave (:meth:`blocks`): ``K[t]`` follows :func:`user_counts` inside
    ``[k_min, k_max]``; active users are always indices ``0 .. K[t]-1``. As a
    :class:`ChannelModel` (``nr = n_rx``, ``nt = k_max``) every block has all ``k_max`` users:
    :meth:`sample` draws blocks uniformly from ``0 .. sample_blocks - 1`` (an average over a
    transmission), a :meth:`block_process` follows the profiles block by block from ``t = 0``.

    Parameters
    ----------
    n_rx, k_max : receive antennas ``N``, users ``K_max``
    k_min : fewest users (default ``k_max``: a fixed number of users)
    profile_amplitude_db : amplitude of the per-user SNR profiles
    period_range : range of the profile periods in blocks
    change_prob : probability per block that a user joins or leaves
    k_initial : users in block 0 (default ``k_max``)
    seed : seed of the profiles (and, ``seed + 1``, of the user counts)
    sample_blocks : :meth:`sample` draws block indices from ``0 .. sample_blocks - 1``
    """

    real_valued = True

    def __init__(self, n_rx: int, k_max: int, k_min: int | None = None, profile_amplitude_db: float = 4.0,
                 period_range=(20.0, 80.0), change_prob: float = 0.2, k_initial: int | None = None, seed: int = 0,
                 sample_blocks: int = 100):
        k_min = k_max if k_min is None else k_min
        if not 1 <= k_min <= k_max <= n_rx:
            raise ValueError(f"need 1 <= k_min <= k_max <= n_rx, got k_min={k_min}, k_max={k_max}, n_rx={n_rx}")
        if sample_blocks < 1:
            raise ValueError(f"sample_blocks must be >= 1, got {sample_blocks}")
        self.n_rx, self.k_min, self.k_max = n_rx, k_min, k_max
        self.nr, self.nt = n_rx, k_max
        self.profile_amplitude_db = profile_amplitude_db
        self.change_prob = change_prob
        self.sample_blocks = int(sample_blocks)
        g = torch.Generator().manual_seed(seed)
        lo, hi = period_range
        self.periods = lo + (hi - lo) * torch.rand(k_max, generator=g, dtype=torch.float64)
        self.phases = 2 * math.pi * torch.rand(k_max, generator=g, dtype=torch.float64)
        self._seed = seed
        self.k_initial = k_max if k_initial is None else k_initial
        self.base = sed_matrix(n_rx, k_max)

    def snr_offset_db(self, t: int) -> torch.Tensor:
        """Per-user SNR offsets ``delta_k[t]`` in dB, ``(k_max,)`` float64."""
        return self.profile_amplitude_db * torch.cos(2 * math.pi * t / self.periods + self.phases)

    def user_counts(self, n_blocks: int) -> list[int]:
        """``K[t]`` for ``t = 0 .. n_blocks - 1`` (reproducible from the seed)."""
        return user_counts(n_blocks, self.k_min, self.k_max, self.change_prob, self._seed + 1, self.k_initial)

    def channel(self, t: int, n_users: int) -> torch.Tensor:
        """``H[t]`` of the first ``n_users`` users, ``(N, n_users)`` complex64 (zero imaginary part)."""
        gains = 10.0 ** (self.snr_offset_db(t)[:n_users] / 10.0)
        return (self.base[:, :n_users] * gains.sqrt()).to(torch.complex64)

    def blocks(self, n_blocks: int):
        """The ``n_blocks`` blocks of a transmission with users joining and leaving (:class:`SEDBlock`)."""
        for t, k in enumerate(self.user_counts(n_blocks)):
            yield SEDBlock(t, k, self.channel(t, k), self.snr_offset_db(t)[:k])

    def sample(self, batch: int, generator=None) -> torch.Tensor:
        """``(batch, N, k_max)``: blocks drawn uniformly from ``0 .. sample_blocks - 1``."""
        ts = torch.randint(0, self.sample_blocks, (batch,), generator=generator)
        return torch.stack([self.channel(int(t), self.k_max) for t in ts])

    def next_block(self, index, state, generator):
        return self.channel(index, self.k_max), None

    @property
    def mean_energy(self) -> float:
        """``||exp(-|n-k|)||_F^2``: all ``k_max`` users at nominal gain (profile offsets 0 dB)."""
        return float(self.base.square().sum())

    def covariance(self):
        raise NotImplementedError("the SED channel is deterministic given the block index")


def beamformed_gains(h: torch.Tensor, off_diagonal: float = 0.25) -> torch.Tensor:
    """A real channel from a complex one, as the [MH] authors built theirs from COST2100 (their
    released code): entry ``(n, k)`` is ``off_diagonal |h[n, k]|`` and each user's own entry
    ``(k, k)`` is 1 (per-user beamforming).

    Parameters
    ----------
    h : ``(..., N, K)`` complex

    Returns
    -------
    same shape and dtype, zero imaginary part
    """
    g = off_diagonal * h.abs()
    k = min(h.shape[-2], h.shape[-1])
    g[..., torch.arange(k), torch.arange(k)] = 1.0
    return g.to(h.dtype)

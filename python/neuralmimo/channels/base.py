"""The channel model interface, block-fading processes and the transmission ``Y = H X + N``.

Every model draws flat-fading channel matrices ``H`` of shape ``(batch, Nr, Nt)`` (complex64)
and knows its statistics: ``mean_energy`` is ``E||H||_F^2`` and ``covariance()`` the covariance
of ``vec(H)`` (columns stacked: index ``k * Nr + n`` for entry ``H[n, k]``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..snr import complex_noise


def crandn(shape, generator: torch.Generator | None = None, dtype=torch.complex64) -> torch.Tensor:
    """i.i.d. ``CN(0, 1)`` samples of ``shape`` (``dtype`` complex64 or complex128)."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.complex(torch.randn(shape, generator=generator, dtype=real),
                         torch.randn(shape, generator=generator, dtype=real)) / math.sqrt(2.0)


def hermitian_sqrt(c: torch.Tensor) -> torch.Tensor:
    """``U D^{1/2} U^H`` of Hermitian PSD matrices ``c (..., n, n)`` (negative round-off
    eigenvalues clamped to 0); same shape and dtype."""
    w, u = torch.linalg.eigh(c)
    return (u * w.clamp(min=0).sqrt().to(u.dtype).unsqueeze(-2)) @ u.mH


def vec_columns(h: torch.Tensor) -> torch.Tensor:
    """``vec(H)``: ``(..., Nr, Nt)`` -> ``(..., Nr*Nt)`` with the columns stacked (index ``k*Nr + n``)."""
    return h.transpose(-1, -2).reshape(*h.shape[:-2], -1)


class ChannelModel:
    """Base class of the channel models.

    Attributes
    ----------
    nr, nt : receive antennas and transmit streams (users)
    real_valued : the model's matrices have zero imaginary part (e.g. the DeepSIC synthetic
        channel); receivers built for the papers' real-valued models need no conversion
    """

    nr: int
    nt: int
    real_valued: bool = False

    def sample(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``batch`` independent channel matrices, ``(batch, Nr, Nt)`` complex64."""
        raise NotImplementedError

    @property
    def mean_energy(self) -> float:
        """``E||H||_F^2``."""
        return float(torch.diagonal(self.covariance()).real.sum())

    def covariance(self) -> torch.Tensor:
        """``E[vec(H) vec(H)^H]``, ``(Nr*Nt, Nr*Nt)`` complex128."""
        raise NotImplementedError

    def next_block(self, index: int, state, generator: torch.Generator):
        """Channel of block ``index`` of a transmission and the state the next block needs:
        ``(H (Nr, Nt) complex64, state)``. Stationary models draw independent blocks; models that
        evolve over blocks override this. ``state`` is ``None`` for the first block."""
        return self.sample(1, generator)[0], None

    def block_process(self, seed: int = 0) -> "BlockFadingProcess":
        """Successive block-fading channels of this model, reproducible from ``seed``."""
        return BlockFadingProcess(self, seed)


TASK_SPLIT = (0.81, 0.09)  # train, val fractions of a task's channels; the rest is test


def task_split_codes(n: int) -> np.ndarray:
    """0/1/2 (train/val/test) codes of a task's ``n`` channels in order: the first 81 % train,
    the next 9 % val, the rest test (UMi and plane-wave tasks, [LG] Sec. V-A); int8."""
    n_train, n_val = int(round(TASK_SPLIT[0] * n)), int(round(TASK_SPLIT[1] * n))
    codes = np.full(n, 2, dtype=np.int8)
    codes[:n_train] = 0
    codes[n_train:n_train + n_val] = 1
    return codes


class StoredChannels(ChannelModel):
    """A model that draws (with replacement) from a stored set of channels ``self.h (n, Nr, Nt)``
    complex64: a cached UMi task, a channel file, a receiver's CSI log."""

    h: torch.Tensor
    SPLITS = {"train": 0, "val": 1, "test": 2}

    @classmethod
    def split_of(cls, h: torch.Tensor, codes, split: str, where) -> torch.Tensor:
        """The channels of ``h`` whose split code (0 train, 1 val, 2 test, array ``codes``) is
        ``split``; ``"all"``: every one. ``ValueError`` for another name or an empty split."""
        if split == "all":
            return h.contiguous()
        if split not in cls.SPLITS:
            raise ValueError(f"split must be train, val, test or all, got {split!r}")
        out = h[torch.as_tensor(codes == cls.SPLITS[split])]
        if out.shape[0] == 0:
            raise ValueError(f"{where}: the {split} split holds no channels")
        return out.contiguous()

    def sample(self, batch, generator=None):
        idx = torch.randint(0, self.h.shape[0], (batch,), generator=generator)
        return self.h[idx]

    def covariance(self):
        return empirical_covariance(self.h)


def empirical_covariance(h: torch.Tensor) -> torch.Tensor:
    """``mean vec(H) vec(H)^H`` over channels ``h (n, Nr, Nt)``: ``(Nr*Nt, Nr*Nt)`` complex128."""
    v = vec_columns(h).to(torch.complex128)
    return v.T @ v.conj() / v.shape[0]


class BlockFadingProcess:
    """Successive block-fading channels ``H[0], H[1], ...`` of a model (one per block, see
    :meth:`ChannelModel.next_block`), reproducible from ``seed``."""

    def __init__(self, model: ChannelModel, seed: int = 0):
        self.model = model
        self.generator = torch.Generator().manual_seed(int(seed))
        self.block_index = 0
        self._state = None

    def next(self) -> torch.Tensor:
        """Channel of the next block, ``(Nr, Nt)`` complex64."""
        h, self._state = self.model.next_block(self.block_index, self._state, self.generator)
        self.block_index += 1
        return h


def transmit(h: torch.Tensor, x: torch.Tensor, noise_var, generator: torch.Generator | None = None,
             unit_noise: torch.Tensor | None = None) -> torch.Tensor:
    """Flat-fading MIMO channel ``Y = H X + N``.

    Parameters
    ----------
    h : ``(..., Nr, Nt)`` complex
    x : ``(..., Nt, N)`` complex, ``N`` vectors sharing the channel
    noise_var : float or tensor broadcastable to the output, complex noise variance per receive
        antenna: ``N`` is i.i.d. ``CN(0, noise_var)``
    unit_noise : optional ``CN(0, 1)`` samples of the output's shape, used instead of drawing
        from ``generator`` (a streaming channel makes its noise independent of how the stream is
        cut into buffers this way)

    Returns
    -------
    ``(..., Nr, N)`` complex
    """
    y = h @ x
    if unit_noise is not None:
        return y + unit_noise * math.sqrt(float(noise_var))
    return y + complex_noise(y.shape, noise_var, generator, y.dtype)

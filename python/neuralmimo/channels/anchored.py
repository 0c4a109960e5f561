"""Within-task diversity control: a task's channels pulled towards one fixed channel of the task.

::

    H_u = rho * H_0 + sqrt(1 - rho^2) * H_u',     then ||H_u||_F^2 = Nr Nt,

with ``H_0`` one fixed channel of the task (its anchor) and ``H_u'`` the task's own channels,
both first scaled to ``||.||_F^2 = Nr Nt``. ``rho = 1`` is one channel with fresh noise (a
static site); ``rho = 0`` the task unchanged. ``1 - rho^2`` is the share of each channel's
energy that is independent of the anchor. The learngene paper's SDNet [LG] gains over MMSE
only when a task's channels share a fixed structure; sweeping ``rho`` measures how much
(``neuralmimo learngene diversity``, ``docs/sdnet/where-sdnet-wins.md``).
"""

from __future__ import annotations

import math

import torch

from .base import ChannelModel, StoredChannels, empirical_covariance


def _unit_energy(h: torch.Tensor) -> torch.Tensor:
    return h / h.abs().square().mean((-2, -1), keepdim=True).sqrt()


def anchor_mix(h: torch.Tensor, anchor: torch.Tensor, rho: float) -> torch.Tensor:
    """``rho H_0 + sqrt(1 - rho^2) H_u'`` for every ``h (n, Nr, Nt)`` and the anchor
    ``H_0 (Nr, Nt)``, each input and output scaled to ``||.||_F^2 = Nr Nt``; complex64."""
    rho = float(rho)
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must lie in [0, 1], got {rho}")
    if anchor.shape != h.shape[-2:]:
        raise ValueError(f"the anchor is {tuple(anchor.shape)}, the channels {tuple(h.shape[-2:])}")
    mixed = rho * _unit_energy(anchor.unsqueeze(0)) + math.sqrt(1.0 - rho * rho) * _unit_energy(h)
    return _unit_energy(mixed).to(torch.complex64)


class AnchoredChannel(ChannelModel):
    """A base channel model with its channels mixed into one of its own (:func:`anchor_mix`).

    The anchor is channel ``anchor`` of the base's stored set for a stored model (a UMi or
    plane-wave task, a file: its training split when the spec selects one), or the base's draw
    from generator seed ``anchor`` otherwise. A stored base stays stored (mixed once); another
    base is mixed at every draw.
    """

    def __init__(self, base: ChannelModel, rho: float, anchor_channel: torch.Tensor):
        self.base, self.rho = base, float(rho)
        self.anchor = anchor_channel.to(torch.complex64)
        self.nr, self.nt = base.nr, base.nt
        self._stored = anchor_mix(base.h, self.anchor, self.rho) if isinstance(base, StoredChannels) else None

    def sample(self, batch, generator=None):
        if self._stored is not None:
            idx = torch.randint(0, self._stored.shape[0], (batch,), generator=generator)
            return self._stored[idx]
        return anchor_mix(self.base.sample(batch, generator), self.anchor, self.rho)

    def covariance(self):
        # a non-stored base: Monte Carlo over a fixed draw (the mix is not Gaussian)
        h = self._stored if self._stored is not None else self.sample(20_000, torch.Generator().manual_seed(0))
        return empirical_covariance(h)

"""Fixed-geometry plane-wave tasks: a site whose scatterers stay put while the users' gains fade.

A task is ``paths`` plane waves between two half-wavelength ULAs (``Nr`` receive, ``Nt``
transmit elements) whose angles and powers are fixed for the task; every channel of the task
has its own i.i.d. complex path gains::

    H_u = sum_l  g_{u,l} sqrt(p_l / 2) a_r(theta_l) a_t(phi_l)^H,   g_{u,l} ~ CN(0, 2),
    a_r(theta)[n] = exp(j pi n sin(theta)),

with arrival angles uniform in +-30 degrees, departure angles uniform in +-90 degrees and powers
``p_l ~ U(0.1, 1.1)``, all drawn from the task's seed; each channel is then scaled to
``||H_u||_F^2 = Nr Nt``. The channels span a fixed ``paths``-dimensional subspace of
``C^(Nr x Nt)``: the structure the learngene paper's SDNet [LG] can learn and ZF/MMSE cannot use
(``docs/sdnet/where-sdnet-wins.md``). With few paths the channel is ill-conditioned; with many it
tends to an i.i.d. Rayleigh channel.

A task holds ``ues_per_task`` channels split 81/9/10 % into train/val/test (the UMi tasks' split,
:mod:`.umi`), generated in milliseconds from ``(seed, task_id)``: nothing is cached.
"""

from __future__ import annotations

import math

import torch

from .base import StoredChannels, task_split_codes

def plane_wave_task(task_id: int, ues_per_task: int, paths: int, nr: int = 32, nt: int = 8,
                    seed: int = 2024) -> dict:
    """One task's channels ``{"h": (ues_per_task, nr, nt) complex64 tensor, "split": int8 array}``.

    The geometry (angles, powers) depends on ``(seed, task_id)`` only; the gains also on
    ``ues_per_task``.
    """
    if paths < 1 or ues_per_task < 1:
        raise ValueError(f"a plane-wave task needs paths >= 1 and ues_per_task >= 1, got {paths}, {ues_per_task}")
    g = torch.Generator().manual_seed(int(seed) * 100_003 + int(task_id))
    aoa = (torch.rand(paths, generator=g, dtype=torch.float64) - 0.5) * math.radians(60)
    aod = (torch.rand(paths, generator=g, dtype=torch.float64) - 0.5) * math.pi
    power = torch.rand(paths, generator=g, dtype=torch.float64) + 0.1

    def steer(n_ant, ang):
        k = torch.arange(n_ant, dtype=torch.float64)[:, None]
        return torch.polar(torch.ones(n_ant, paths, dtype=torch.float64), math.pi * k * torch.sin(ang)[None, :])

    gains = torch.complex(torch.randn(ues_per_task, paths, generator=g, dtype=torch.float64),
                          torch.randn(ues_per_task, paths, generator=g, dtype=torch.float64)) * (power / 2).sqrt()
    h = torch.einsum("rl,nl,tl->nrt", steer(nr, aoa), gains, steer(nt, aod).conj())
    h = h / h.abs().square().mean((-2, -1), keepdim=True).sqrt()
    return {"h": h.to(torch.complex64), "split": task_split_codes(ues_per_task)}


class PlaneWaveTaskChannel(StoredChannels):
    """Channel model drawing (with replacement) from one plane-wave task's ``split``
    (``train``, ``val``, ``test`` or ``all``); see :func:`plane_wave_task`."""

    def __init__(self, nr: int, nt: int, task_id: int = 0, paths: int = 9, ues_per_task: int = 10_000,
                 seed: int = 2024, split: str = "test"):
        data = plane_wave_task(int(task_id), int(ues_per_task), int(paths), nr, nt, int(seed))
        self.h = self.split_of(data["h"], data["split"], split, f"plane-wave task {task_id}")
        self.nr, self.nt = nr, nt
        self.task_id, self.paths = int(task_id), int(paths)

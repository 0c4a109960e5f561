"""Training of HyperMIMO, of MMNet per channel realisation and of OAMPNet, [HM] Sec. IV-B.

Data are drawn afresh for every batch ("randomly sampling channel matrices, SNRs and symbols"):
:func:`~neuralmimo.datasets.draw_channel_batch` samples channels from a model (a fixed user
drop of the local scattering model in the paper), an SNR per channel uniform in a range, QPSK symbols and noise. With
``csi="ls"`` each channel also carries ``n_pilots`` orthogonal pilots
(:func:`~neuralmimo.datasets.draw_frames`) and the receiver is given the LS estimate and the
pilot-residual noise variance instead of the true ``H`` and ``sigma^2``.
"""

from __future__ import annotations

import math

import torch

from ...channels.base import transmit
from ...constellation import Constellation
from ...datasets import ChannelBatch
from ...training import train_loop
from .model import HyperMIMO, MMNetPerChannel, OAMPNet, mmnet, mse, qr_positive

def decaying_lr(step: int, steps: int, lr_start: float, lr_end: float) -> float:
    """Exponential decay from ``lr_start`` (first step) to ``lr_end`` (last step)."""
    if steps <= 1:
        return lr_start
    return lr_start * (lr_end / lr_start) ** (step / (steps - 1))


def _train(model: torch.nn.Module, sample, loss_of, *, steps: int, steps_per_epoch: int, lr: tuple[float, float],
           progress=None, desc: str = "", generators: tuple = ()) -> list[dict]:
    """Adam on fresh batches ``sample(step)``, learning rate decaying over ``steps``; one history
    record per ``steps_per_epoch`` steps (:func:`neuralmimo.training.train_loop`). ``generators``:
    those ``sample`` draws from (checkpointed). Under torchrun ``sample`` draws this process's
    share (:func:`~neuralmimo.training.local_batch`, :func:`~neuralmimo.training.rank_seed`)."""
    opt = torch.optim.Adam(model.parameters(), lr=lr[0])
    epochs = max(1, math.ceil(steps / steps_per_epoch))

    def batches(epoch):
        for s in range(epoch * steps_per_epoch, min(steps, (epoch + 1) * steps_per_epoch)):
            for group in opt.param_groups:
                group["lr"] = decaying_lr(s, steps, *lr)
            yield sample(s)

    def step(b: ChannelBatch):
        loss = loss_of(b)
        return loss, float(loss.detach()), float(b.y.shape[0])

    return train_loop(opt, step, batches, epochs=epochs, loss_key="mse", progress=progress, desc=desc,
                      postfix=lambda r: {"mse": f"{r['mse']:.4f}"}, model=model, generators=generators)


def train_hypermimo(model: HyperMIMO, sample, *, steps: int, steps_per_epoch: int = 100,
                    lr: tuple[float, float] = (1e-3, 1e-4), progress=None, generators: tuple = ()) -> list[dict]:
    """[HM] Sec. IV-B: Adam on the MSE of the last layer (eq. (12)), learning rate decaying
    from ``lr[0]`` to ``lr[1]``; ``sample(step)`` gives each step's :class:`~neuralmimo.datasets.ChannelBatch`."""
    return _train(model, sample, lambda b: mse(model(b.y, b.h, b.noise_var)[0], b.x), steps=steps,
                  steps_per_epoch=steps_per_epoch, lr=lr, progress=progress, desc="HyperMIMO", generators=generators)


def train_oampnet(model: OAMPNet, sample, *, steps: int, steps_per_epoch: int = 50,
                  lr: tuple[float, float] = (1e-2, 1e-3), progress=None, generators: tuple = ()) -> list[dict]:
    """OAMPNet's ``2 T`` scalars, trained like HyperMIMO (MSE of the last iteration)."""
    return _train(model, sample, lambda b: mse(model(b.y, b.h, b.noise_var)[0], b.x), steps=steps,
                  steps_per_epoch=steps_per_epoch, lr=lr, progress=progress, desc="OAMPNet", generators=generators)


def train_mmnet_per_channel(h: torch.Tensor, noise_var: torch.Tensor, constellation: Constellation,
                            generator: torch.Generator, *, layers: int = 10, steps: int = 300,
                            vectors: int = 32, lr: float = 1e-2) -> MMNetPerChannel:
    """MMNet trained for each of ``B`` channels ``h (B, Nr, Nu)`` at its noise variance
    ``(B,)`` (the paper's upper baseline), all at once: every step draws ``vectors`` fresh
    symbol vectors per channel and noise in the ``y*`` domain (``n* ~ CN(0, sigma^2 I_Nu)``,
    exact since ``Q_A`` has orthonormal columns). Loss: MMNet's own, the MSE averaged over the
    layers ([HM] ref. [8]); Adam at ``lr``, decaying tenfold over the steps."""
    _, r_a = qr_positive(h)
    nv = noise_var.to(torch.float32)
    model = MMNetPerChannel(r_a, nv, layers)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    points = constellation.points
    b, nu = h.shape[0], h.shape[-1]
    for s in range(steps):
        for group in opt.param_groups:
            group["lr"] = decaying_lr(s, steps, lr, lr / 10)
        idx = constellation.random_indices((b, nu, vectors), generator)
        x = constellation.symbols(idx)
        y_star = transmit(r_a, x, nv[:, None, None], generator)
        thetas, psi = model.weights()
        xs, _ = mmnet(y_star, r_a, nv, thetas, psi, points, keep_all=True)
        loss = sum(mse(xt, x) for xt in xs) / len(xs) * b  # each channel's own mean: Adam is per element
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


@torch.no_grad()
def detect_mmnet_per_channel(model: MMNetPerChannel, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor,
                             constellation: Constellation) -> torch.Tensor:
    """Point indices ``(B, Nu, n)`` of the trained per-channel MMNet on ``y (B, Nr, n)``."""
    q_a, r_a = qr_positive(h)
    thetas, psi = model.weights()
    _, log_p = mmnet(q_a.mH @ y, r_a, noise_var.to(torch.float32), thetas, psi, constellation.points)
    return log_p.argmax(-1)

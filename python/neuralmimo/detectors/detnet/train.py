"""Training of DetNet / WeSNet / R-WeSNet / L-WeSNet [WS] Sec. III-IV, Table III.

Data as DetNet's generator: a fresh channel per sample from a channel model (real i.i.d.
``N(0, 1)`` for the 30 x 60 BPSK case), an SNR per sample uniform in a range in the ``detnet``
convention (mean column energy over the per-real-dimension noise variance:
``y = H x + w sqrt(tr(H^T H) / K) / sqrt(SNR)`` with ``w ~ N(0, 1)`` per real dimension, i.e.
``E||H||^2 / Nt`` per dimension on average -- :mod:`neuralmimo.snr`), symbols and noise
(:func:`~neuralmimo.datasets.draw_channel_batch`). Loss: eq. (20) (:func:`~.model.detnet_loss`)
plus, for R-WeSNet, ``lambda`` times the log-L1 term of eq. (22)-(23). Adam at a constant rate.
"""

from __future__ import annotations

import math

import torch

from ...constellation import Constellation
from ...datasets import ChannelBatch
from ...training import Carry, train_loop
from .model import DetNet, detnet_loss


def real_symbols(x: torch.Tensor, model: DetNet) -> torch.Tensor:
    """Complex symbols ``(B, Nt, n)`` -> the network's targets ``(B, n, K)`` in ``{-1, +1}``."""
    if model.modulation == "bpsk":
        s = x.real
    else:
        s = torch.cat([x.real, x.imag], -2)
    return (s / model.amplitude).transpose(-1, -2).float()


def zf_solution(hty: torch.Tensor, hth: torch.Tensor) -> torch.Tensor:
    """ZF in the real-valued model: ``(H^T H)^-1 H^T y``, ``(B, n, K)`` (pseudo-inverse if singular)."""
    try:
        return torch.linalg.solve(hth, hty.transpose(-1, -2)).transpose(-1, -2)
    except RuntimeError:
        return (torch.linalg.pinv(hth) @ hty.transpose(-1, -2)).transpose(-1, -2)


def to_points(s_hat: torch.Tensor, model: DetNet) -> torch.Tensor:
    """The network's ``(B, n, K)`` estimate -> complex symbol estimates ``(B, Nt, n)`` in the
    constellation's scale (soft: ``A s_hat``)."""
    s = s_hat.transpose(-1, -2) * model.amplitude
    if model.modulation == "bpsk":
        return s.to(torch.complex64)
    return torch.complex(s[:, : model.nt], s[:, model.nt:])


def train_detnet(model: DetNet, sample, *, steps: int, steps_per_epoch: int = 100, lr: float = 1e-3,
                 lr_end: float | None = None, reg_lambda: float = 0.0, reg_start: int = 1,
                 validation: ChannelBatch | None = None, keep_best: bool = False, progress=None,
                 desc: str = "DetNet", generators: tuple = ()) -> list[dict]:
    """Adam on ``steps`` fresh batches ``sample(step) -> ChannelBatch``, the learning rate decaying
    exponentially from ``lr`` to ``lr_end`` (default: constant); loss eq. (20) (+ ``reg_lambda``
    x eq. (22) from layer ``reg_start``). One history record per ``steps_per_epoch`` steps:
    ``loss`` (eq. (20) alone, weighted by batch size), the regulariser's last value and, with a
    ``validation`` batch, the network's ``val_ber`` on it; ``keep_best`` then restores the
    weights of the epoch with the lowest ``val_ber`` at the end (its record gets ``best: True``).

    The loss is a mean of per-vector ratios to ZF's error (DetNet's code): heavy-tailed, since a
    vector that ZF detects almost exactly has a tiny denominator, so it can rise while the BER
    falls (seen on 30x60 BPSK at lr 1e-3) -- ``val_ber`` is the learning curve to read."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    epochs = max(1, math.ceil(steps / steps_per_epoch))
    last = Carry(reg=0.0)

    lr_end = lr if lr_end is None else lr_end
    best = Carry(ber=float("inf"), state=None, epoch=None)

    def batches(epoch):
        for s in range(epoch * steps_per_epoch, min(steps, (epoch + 1) * steps_per_epoch)):
            for group in opt.param_groups:
                group["lr"] = lr * (lr_end / lr) ** (s / max(steps - 1, 1))
            yield sample(s)

    def step(b: ChannelBatch):
        hty, hth = model.real_inputs(b.y, b.h)
        s = real_symbols(b.x, model)
        with torch.no_grad():
            s_zf = zf_solution(hty, hth)
        fit = detnet_loss(model(hty, hth, keep_all=True), s, s_zf)
        loss = fit
        if reg_lambda > 0:
            reg = model.log_l1(reg_start)
            last["reg"] = float(reg.detach())
            loss = fit + reg_lambda * reg
        return loss, float(fit.detach()), float(b.y.shape[0])

    def end_of_epoch(e):
        out = {"log_l1": last["reg"]} if reg_lambda > 0 else {}
        if validation is not None:
            const = Constellation(model.modulation)
            was = model.training
            model.eval()
            idx = detect_indices(model, validation.y, validation.h, const)
            model.train(was)
            out["val_ber"] = float((const.bits[idx] != const.bits[validation.idx]).float().mean())
            if keep_best and out["val_ber"] < best["ber"]:
                best.update(ber=out["val_ber"], epoch=e, state={k: v.detach().clone()
                                                                 for k, v in model.state_dict().items()})
        return out

    history = train_loop(opt, step, batches, epochs=epochs, loss_key="loss", progress=progress, desc=desc,
                         end_of_epoch=end_of_epoch, model=model, generators=generators,
                         state={"best": best, "last": last},
                         postfix=lambda r: {"loss": f"{r['loss']:.3f}", **({"ber": f"{r['val_ber']:.2e}"}
                                                                             if "val_ber" in r else {})})
    if keep_best and best["state"] is not None:
        model.load_state_dict(best["state"])
        history[best["epoch"]]["best"] = True
    return history


@torch.no_grad()
def detect_indices(model: DetNet, y: torch.Tensor, h: torch.Tensor, constellation: Constellation,
                   depth: int | None = None) -> torch.Tensor:
    """Point indices ``(B, Nt, n)`` (on ``y``'s device) of the network's hard decision after
    ``depth`` layers, computed on the model's device."""
    dev = model.w1.device
    hty, hth = model.real_inputs(y.to(dev), h.to(dev))
    return constellation.hard_decision(to_points(model(hty, hth, depth), model).to(y.device))

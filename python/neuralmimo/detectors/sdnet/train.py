"""Training and evaluation of SDNet on channel datasets, [LG] Sec. V.

A *sample* is one UE's channel ``H`` with a frame of its own (:func:`~neuralmimo.datasets.draw_frames`):
``Np`` orthogonal pilots giving the LS estimate ``H_LS`` ([LG] eq. (5)) and data vectors
``y = H x + n`` detected by ZF with ``H_LS`` (eq. (9)). Training draws fresh symbols and noise for
every channel at every epoch (from a generator seeded by ``(seed, epoch)``), so an epoch is one
pass over the task's training channels and runs are reproducible. Evaluation uses a fixed draw
with ``vectors_per_ue`` data vectors per channel sharing one LS estimate, and reports SDNet, ZF and
MMSE on the very same vectors.

SNR is the project convention (``E||Hx||^2 / E||n||^2`` per receive antenna) with channels of
average energy ``Nr Nt``, i.e. complex noise variance ``Nt / 10^(SNR/10)``.
"""

from __future__ import annotations

import concurrent.futures
import math
from dataclasses import dataclass

import torch
from torch import nn

from ...constellation import Constellation
from ...datasets import draw_frames
from ...metrics import symbol_errors
from ...realvalued import vec_to_complex, vec_to_real
from ...snr import noise_variance
from ...training import shard, train_loop
from ..classical import kbest_detect, linear_detect
from .model import SDNet, predict, sdnet_input


@dataclass
class DetectionBatch:
    """One draw of frames over a set of channels, flattened to ``n = channels x vectors``."""

    inputs: torch.Tensor    # (n, 1, 2Nr+1, 2Nt) float32
    target: torch.Tensor    # (n, 2Nt) float32 real-valued transmitted symbols
    indices: torch.Tensor   # (n, Nt) constellation indices
    y: torch.Tensor         # (channels, Nr, vectors) complex received data vectors
    h_ls: torch.Tensor      # (channels, Nr, Nt) LS estimates
    noise_var: torch.Tensor  # (channels,) residual noise-variance estimates


def draw_batch(h: torch.Tensor, snr_db: float, constellation: Constellation, n_pilots: int,
               generator: torch.Generator, vectors_per_ue: int = 1) -> DetectionBatch:
    """Transmit a frame (``Np`` pilots + ``vectors_per_ue`` data vectors) over each channel
    ``h (C, Nr, Nt)`` and build SDNet's inputs from the LS estimate and ZF."""
    c, nr, nt = h.shape
    nv = noise_variance(snr_db, "project", channel_energy=nr * nt, nr=nr, nt=nt)
    f = draw_frames(h, constellation, n_pilots, vectors_per_ue, nv, generator)
    x_zf, _ = linear_detect(f.y_d, f.h_ls, f.noise_var_hat, "zf", constellation)
    zf = x_zf.transpose(-1, -2).reshape(-1, nt)
    hh = f.h_ls.unsqueeze(1).expand(c, vectors_per_ue, nr, nt).reshape(-1, nr, nt)
    inputs = sdnet_input(zf, hh).contiguous()
    idx = f.idx.transpose(-1, -2).reshape(-1, nt)
    target = vec_to_real(constellation.symbols(idx)).to(torch.float32)
    return DetectionBatch(inputs, target, idx, f.y_d, f.h_ls, f.noise_var_hat)


def evaluate(model: SDNet, data: DetectionBatch, constellation: Constellation, baselines: bool = True) -> dict:
    """SER (per complex symbol) of SDNet and, on the same vectors, ZF and MMSE; MSE loss."""
    out = predict(model, data.inputs)
    ser = symbol_errors(constellation.hard_decision(vec_to_complex(out)), data.indices)
    res = {"symbols": ser.trials, "loss": float((out - data.target).square().mean()), "sdnet": ser.rate}
    if baselines:
        res.update(linear_baselines(data, constellation))
    return res


def linear_baselines(data: DetectionBatch, constellation: Constellation) -> dict:
    """ZF and MMSE SER with the batch's LS estimates (MMSE uses the estimated noise variance)."""
    return {kind: symbol_errors(baseline_decisions(data, constellation, kind), data.indices).rate
            for kind in ("zf", "mmse")}


def baseline_decisions(data: DetectionBatch, constellation: Constellation, kind: str, kbest_k: int = 32) -> torch.Tensor:
    """Point indices ``(n, Nt)`` (the order of ``data.indices``) of ZF, MMSE (estimated noise
    variance) or K-best (``kind="kbest"``, ``kbest_k`` survivors: near-ML) on the LS estimates."""
    nt = data.h_ls.shape[-1]
    if kind == "kbest":
        idx = kbest_detect(data.y, data.h_ls, constellation, kbest_k)
    else:
        x_hat, _ = linear_detect(data.y, data.h_ls, data.noise_var, kind, constellation)
        idx = constellation.hard_decision(x_hat)
    return idx.transpose(-1, -2).reshape(-1, nt)


def sdnet_decisions(model: SDNet, data: DetectionBatch, constellation: Constellation) -> torch.Tensor:
    """SDNet's point indices ``(n, Nt)`` (nearest point to its real-valued output)."""
    return constellation.hard_decision(vec_to_complex(predict(model, data.inputs)))


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train(model: SDNet, optimiser: torch.optim.Optimizer, train_h: torch.Tensor, *, epochs: int,
          snr_db: float, constellation: Constellation, n_pilots: int, batch_size: int, seed: int,
          val: DetectionBatch | None = None, penalty: nn.Module | None = None,
          recorder=None, record_last_epoch: bool = False, progress=None, desc: str = "",
          epoch_offset: int = 0) -> list[dict]:
    """Train ``model`` for ``epochs`` passes over ``train_h (n, Nr, Nt)`` with the MSE of [LG] eq. (13).

    ``penalty(model)`` (e.g. :class:`~neuralmimo.detectors.sdnet.learngene.LearngenePenalty`) is
    added to the MSE loss. If ``record_last_epoch``, ``recorder.add()`` runs after every backward
    pass of the last epoch (gradient significance). ``progress``: a tqdm-like factory or ``None``.
    Returns one record per epoch: ``train_loss`` (MSE part), ``seconds``, validation SER/loss.
    """
    model.train()

    def draw(e):
        g = epoch_generator(seed, epoch_offset + e)
        data = draw_batch(train_h, snr_db, constellation, n_pilots, g)
        return data, torch.randperm(data.inputs.shape[0], generator=g)

    # each epoch's data come from their own generator, so the next epoch is drawn in a thread
    # while this one trains: the same numbers; the draw (CPU) overlaps a GPU's training, and on
    # 2 busy CPU cores it measured within noise (+2 %) of drawing in line
    pool = concurrent.futures.ThreadPoolExecutor(1)
    ahead: dict[int, concurrent.futures.Future] = {}

    def batches(e):
        data, perm = (ahead.pop(e).result() if e in ahead else draw(e))
        if e + 1 < epochs:
            ahead[e + 1] = pool.submit(draw, e + 1)
        # under torchrun every process draws the epoch alike and trains on its share of each batch
        return ((data.inputs[b], data.target[b]) for b in map(shard, perm.split(batch_size)) if b is not None)

    def step(batch):
        inputs, target = batch
        mse = (model(inputs) - target).square().mean()
        loss = mse + penalty(model) if penalty is not None else mse
        return loss, float(mse.detach()), target.shape[0]

    def validate(e):
        if val is None:
            return None
        ev = evaluate(model, val, constellation, baselines=False)
        return {"val_loss": ev["loss"], "val_ser": ev["sdnet"]}

    try:
        return train_loop(optimiser, step, batches, epochs=epochs, epoch_offset=epoch_offset, loss_key="train_loss",
                          after_backward=(lambda e: recorder.add() if e == epochs - 1 else None) if record_last_epoch
                          else None, end_of_epoch=validate, progress=progress, desc=desc,
                          postfix=lambda r: {"loss": f"{r['train_loss']:.4f}", "ser": f"{r.get('val_ser', math.nan):.2e}"},
                          model=model, state={"recorder": recorder} if recorder is not None else None)
    finally:
        pool.shutdown(cancel_futures=True)


def make_optimiser(model: nn.Module, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=lr)

"""Training and evaluation of SDNet on channel datasets (the learngene paper's Sec. V setting).

A *sample* is one UE's channel ``H`` with a frame of its own: ``Np`` orthogonal pilots giving
the LS estimate ``H_LS`` (eq. 5) and data vectors ``y = H x + n`` detected by ZF with ``H_LS``
(eq. 9). Training draws fresh symbols, pilots noise and data noise for every channel at every
epoch (from a generator seeded by ``(seed, epoch)``), so an epoch is one pass over the task's
training channels (8,100 in the paper) and runs are reproducible. Evaluation uses a fixed draw
with ``vectors_per_ue`` data vectors per channel sharing one LS estimate, and reports SDNet, ZF
and MMSE on the very same vectors.

SNR is the project convention (``E||Hx||^2 / E||n||^2`` per receive antenna) with channels of
average energy ``Nr Nt``, i.e. complex noise variance ``Nt / 10^(SNR/10)``.

Speed: each epoch's inputs are built in one batched pass (~5 % of an epoch); the training step
itself is a plain PyTorch loop. Measured alternatives that did *not* pay on the 2-core machine
(``neuralmimo bench training`` and the issue-4 note): channels-last layout (same speed
uncontended), bfloat16 autocast (0.7x), ``torch.compile`` (1.05x). Independent trainings run in
parallel single-thread processes instead (``individual.workers``), ~1.2x aggregate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from .channels import transmit
from .constellation import Constellation
from .detectors import linear_detect
from .estimation import LSChannelEstimator
from .frames import pilot_matrix
from .metrics import symbol_errors
from .realvalued import vec_to_complex, vec_to_real
from .sdnet import SDNet, predict, sdnet_input
from .snr import noise_variance


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
    x_p = pilot_matrix(nt, n_pilots, h.dtype)
    h_ls, nv_hat = LSChannelEstimator(x_p)(transmit(h, x_p, nv, generator))
    idx = constellation.random_indices((c, nt, vectors_per_ue), generator)
    x = constellation.symbols(idx).to(h.dtype)
    y = transmit(h, x, nv, generator)
    x_zf, _ = linear_detect(y, h_ls, nv_hat, "zf", constellation)
    zf = x_zf.transpose(-1, -2).reshape(-1, nt)
    hh = h_ls.unsqueeze(1).expand(c, vectors_per_ue, nr, nt).reshape(-1, nr, nt)
    inputs = sdnet_input(zf, hh).contiguous()
    target = vec_to_real(x.transpose(-1, -2).reshape(-1, nt)).to(torch.float32)
    return DetectionBatch(inputs, target, idx.transpose(-1, -2).reshape(-1, nt), y, h_ls, nv_hat)


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
    res = {}
    nt = data.h_ls.shape[-1]
    for kind in ("zf", "mmse"):
        x_hat, _ = linear_detect(data.y, data.h_ls, data.noise_var, kind, constellation)
        idx_hat = constellation.hard_decision(x_hat).transpose(-1, -2).reshape(-1, nt)
        res[kind] = symbol_errors(idx_hat, data.indices).rate
    return res


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def train(model: SDNet, optimiser: torch.optim.Optimizer, train_h: torch.Tensor, *, epochs: int,
          snr_db: float, constellation: Constellation, n_pilots: int, batch_size: int, seed: int,
          val: DetectionBatch | None = None, penalty: nn.Module | None = None,
          recorder=None, record_last_epoch: bool = False, progress=None, desc: str = "",
          epoch_offset: int = 0) -> list[dict]:
    """Train ``model`` for ``epochs`` passes over ``train_h (n, Nr, Nt)``.

    ``penalty(model)`` (e.g. :class:`~neuralmimo.learngene.LearngenePenalty`) is added to the
    MSE loss. If ``record_last_epoch``, ``recorder.add()`` runs after every backward pass of the
    last epoch (gradient significance). ``progress``: a tqdm-like factory or ``None``.
    Returns one record per epoch: training loss (MSE part), seconds, and validation SER/loss.
    """
    model.train()
    history = []
    epochs_iter = range(epochs)
    if progress is not None:
        epochs_iter = progress(epochs_iter, desc=desc, unit="epoch", leave=False)
    for e in epochs_iter:
        t0 = time.perf_counter()
        g = epoch_generator(seed, epoch_offset + e)
        data = draw_batch(train_h, snr_db, constellation, n_pilots, g)
        perm = torch.randperm(data.inputs.shape[0], generator=g)
        record = record_last_epoch and e == epochs - 1
        total, count = 0.0, 0
        for s in range(0, perm.numel(), batch_size):
            b = perm[s:s + batch_size]
            optimiser.zero_grad(set_to_none=True)
            mse = (model(data.inputs[b]) - data.target[b]).square().mean()
            loss = mse + penalty(model) if penalty is not None else mse
            loss.backward()
            if record:
                recorder.add()
            optimiser.step()
            total += float(mse.detach()) * b.numel()
            count += b.numel()
        rec = {"epoch": epoch_offset + e + 1, "train_loss": total / count, "seconds": time.perf_counter() - t0}
        if val is not None:
            ev = evaluate(model, val, constellation, baselines=False)
            rec.update(val_loss=ev["loss"], val_ser=ev["sdnet"])
        history.append(rec)
        if progress is not None and hasattr(epochs_iter, "set_postfix"):
            epochs_iter.set_postfix(loss=f"{rec['train_loss']:.4f}", ser=f"{rec.get('val_ser', math.nan):.2e}")
    return history


def make_optimiser(model: nn.Module, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(model.parameters(), lr=lr)

"""The receiver front end and the three ways of obtaining DeepSIC weights, [MH] Sec. II-III.

Blocks are :class:`~neuralmimo.datasets.Frames` with random pilots ([MH] eq. (13): ``B_pilot``
random pilot symbols first, then the information symbols; drawn by
:func:`~neuralmimo.datasets.draw_frames` with ``pilots="random"``), padded to ``K_max`` users.

* :func:`front_end`: the receiver's per-block processing before any DNN, on top of the LS
  estimate and pilot-residual noise variance: the noise-normalised features.
* Joint learning (eq. 5): :func:`train_joint`, one weight set per ``K`` trained offline.
* Online learning (eq. 7): :func:`train_online`, Adam on the current block's pilots, warm-started.
* Modular hypernetwork (Sec. III-A3): :func:`train_hypernetwork`, offline over blocks of every
  ``K`` mixed in each mini-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...datasets import Frames
from ...training import current_device, shard, train_loop
from .complex import PhaseInvariantHypernetwork
from .model import (ModularHypernetwork, ModuleSpec, channel_features, deepsic_logits, init_modules, noise_std_per_dim,
                    rx_features, unrolled_loss)


@dataclass
class FrontEnd:
    """Per-block receiver processing shared by every detector.

    h_ls : ``(T, N, K_max)`` LS estimate ([MH] eq. (8)), absent columns zero
    noise_var : ``(T,)`` complex noise variance estimated from the pilot residual
    noise_std : ``(T,)`` its standard deviation per real dimension (the features' unit)
    feats : ``(T, L, F)`` received vectors divided by ``noise_std``
    h_cols : ``(T, K_max, F)`` the estimate's columns divided by ``noise_std``
    y_vec : ``(T, L, N)`` the received vectors as they are (complex; the complex receiver's input)
    h_vec : ``(T, K_max, N)`` the estimate's columns as they are (complex)
    """

    h_ls: torch.Tensor
    noise_var: torch.Tensor
    noise_std: torch.Tensor
    feats: torch.Tensor
    h_cols: torch.Tensor
    y_vec: torch.Tensor
    h_vec: torch.Tensor


def front_end(blocks: Frames, spec: ModuleSpec) -> FrontEnd:
    """Noise-normalised features of every block (estimating the channel first if needed)."""
    if blocks.h_ls is None:
        blocks.estimate()
    std = noise_std_per_dim(blocks.noise_var_hat.float())  # the features are float32
    return FrontEnd(blocks.h_ls, blocks.noise_var_hat, std, rx_features(blocks.y, spec, std),
                    channel_features(blocks.h_ls, spec, std), blocks.y.mT, blocks.h_ls.mT)


def train_hypernetwork(model: ModularHypernetwork | PhaseInvariantHypernetwork, fe: FrontEnd, blocks: Frames, *, epochs: int,
                       lr: float = 5e-4, batch_blocks: int = 32, symbols_per_block: int = 250,
                       epoch_k_sets: list | None = None, seed: int = 0, progress=None,
                       before_batch=None) -> list[dict]:
    """Offline training of ``phi_hyper``, ``e_self``, ``e_pad`` ([MH] Sec. III-A3) with Adam, for
    the model's ``iterations``; either hypernetwork (the paper's, or the complex-baseband
    :class:`~.complex.PhaseInvariantHypernetwork`, which reads the complex columns and vectors).

    Every epoch visits each training block's symbols once, in chunks of ``symbols_per_block``;
    each mini-batch holds ``batch_blocks`` blocks drawn across all ``K`` (padded to ``K_max``), so
    every ``K`` is mixed into every step. ``epoch_k_sets[e]`` (optional) restricts epoch ``e`` to
    blocks whose ``K`` is in that set. ``before_batch`` (optional) is called before every
    mini-batch (a time budget raises from it). Returns the per-epoch history (mean loss, ``K`` seen).
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    labels_all = blocks.labels
    n_blocks, length = labels_all.shape[0], labels_all.shape[-1]
    chunks = max(1, length // symbols_per_block)
    ks = blocks.n_users
    k_seen = {}
    h_all, feats_all = model.inputs(fe)

    def batches(epoch):
        allowed = torch.ones(n_blocks, dtype=torch.bool)
        if epoch_k_sets is not None and epoch < len(epoch_k_sets) and epoch_k_sets[epoch] is not None:
            allowed = torch.isin(ks, torch.as_tensor(sorted(epoch_k_sets[epoch])))
        ids = torch.nonzero(allowed).flatten()
        k_seen[epoch] = sorted(int(k) for k in torch.unique(ks[ids]))
        # one (block, chunk) pair per item; symbol order inside a block reshuffled every epoch
        items = torch.stack(torch.meshgrid(ids, torch.arange(chunks), indexing="ij"), -1).reshape(-1, 2)
        items = items[torch.randperm(items.shape[0], generator=g)]
        perm = torch.rand(n_blocks, length, generator=g).argsort(-1)
        perm = perm[:, :chunks * symbols_per_block].unflatten(-1, (chunks, symbols_per_block))
        for i in range(0, items.shape[0], batch_blocks):
            if before_batch is not None:
                before_batch()
            part = shard(torch.arange(i, min(i + batch_blocks, items.shape[0])))  # this process's share
            if part is None:
                continue
            b, c = items[part].T
            sel = perm[b, c]  # (nb, symbols_per_block)
            feats = torch.gather(feats_all[b], 1, sel[..., None].expand(-1, -1, feats_all.shape[-1]))
            labels = torch.gather(labels_all[b], 2, sel[:, None, :].expand(-1, labels_all.shape[1], -1))
            yield h_all[b], fe.noise_var[b], blocks.active[b], feats, labels  # the loop moves them to the device

    def step(batch):
        h, noise_var, active, feats, labels = batch
        loss = unrolled_loss(model.unrolled_logits(h, noise_var, feats, active), labels, active)
        return loss, float(loss.detach()), float(h.shape[0])

    model.train()
    history = train_loop(opt, step, batches, epochs=epochs, progress=progress, desc="hypernetwork epochs",
                         end_of_epoch=lambda e: {"k_seen": k_seen[e]}, model=model, generators=(g,))
    model.eval()
    return [{k: r[k] for k in ("epoch", "loss", "loss_se", "k_seen", "resumed") if k in r} for r in history]


def train_joint(spec: ModuleSpec, k_values: list[int], fe: FrontEnd, blocks: Frames, *, iterations: int,
                epochs: int, lr: float = 1e-3, batch_size: int = 1000, seed: int = 0,
                progress=None) -> tuple[dict[int, torch.Tensor], list[dict]]:
    """Joint learning ([MH] eq. (5)): for each ``K`` one set of ``K`` modules trained on all
    training vectors of that ``K`` (no channel information). The ``K`` values train side by side
    in one batched pass (padded to the largest ``K``; padding is exact, see :mod:`.model`).

    Returns ``{K: theta (K, |theta^(K)|)}`` and the per-epoch mean loss.
    """
    g = torch.Generator().manual_seed(seed)
    k_pad = max(k_values)
    ks = blocks.n_users
    labels_all = blocks.labels
    feats, labels, act = [], [], []
    for k in k_values:
        sel = ks == k
        if not bool(sel.any()):
            raise ValueError(f"no training blocks with K = {k}")
        feats.append(fe.feats[sel].flatten(0, 1))  # (Bk, F)
        labels.append(labels_all[sel][:, :k_pad].movedim(1, 0).flatten(1))  # (k_pad, Bk)
        act.append(torch.arange(k_pad) < k)
    n = min(f.shape[0] for f in feats)  # equal data per K keeps the batch rectangular
    feats = torch.stack([f[:n] for f in feats])  # (nK, n, F)
    labels = torch.stack([lab[:, :n] for lab in labels])  # (nK, k_pad, n)
    device = current_device()  # theta is a bare tensor (no module for the loop to move)
    active = torch.stack(act).to(device)  # (nK, k_pad)
    theta = torch.stack([init_modules(k_pad, spec, g) for _ in k_values]).to(device).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)

    def batches(epoch):
        for idx in map(shard, torch.randperm(n, generator=g).split(batch_size)):
            if idx is not None:
                yield feats[:, idx], labels[:, :, idx]

    def step(batch):
        f, lab = batch
        loss = unrolled_loss(deepsic_logits(theta, f, spec, iterations, active), lab, active)
        return loss, float(loss.detach()), float(lab.shape[-1])

    history = train_loop(opt, step, batches, epochs=epochs, progress=progress, desc="joint epochs", generators=(g,))
    theta = theta.detach().cpu()
    return ({k: theta[i, :k, :spec.n_params(k)].clone() for i, k in enumerate(k_values)},
            [{"epoch": r["epoch"], "loss": r["loss"]} for r in history])


def train_online(theta: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, spec: ModuleSpec, *,
                 iterations: int, steps: int = 100, lr: float = 1e-3) -> torch.Tensor:
    """Online learning ([MH] eq. (7)): ``steps`` full-batch Adam iterations on one block's
    pilots, starting from ``theta (K, P)``. ``feats (Bp, F)``, ``labels (K, Bp)``."""
    theta = theta.detach().clone().requires_grad_(True)

    def step(_):
        loss = unrolled_loss(deepsic_logits(theta, feats, spec, iterations), labels)
        return loss, 0.0, 1.0

    train_loop(torch.optim.Adam([theta], lr=lr), step, lambda e: (None,), epochs=steps)
    return theta.detach()

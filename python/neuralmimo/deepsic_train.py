"""Blocks, receiver front end and the three ways of obtaining DeepSIC weights.

* :func:`draw_blocks` transmits blocks ``y_i = H s_i + w_i`` (eq. 13): ``B_pilot`` random pilot
  symbols first, then the information symbols, over channels given as ``(T, N, K_max)`` with the
  absent users' columns unused.
* :func:`front_end` is the receiver's per-block processing before any DNN: LS estimate from the
  pilots (eq. 8), noise variance from the pilot residual, and the noise-normalised features.
* Joint learning (eq. 5): :func:`train_joint`, one weight set per ``K`` trained offline.
* Online learning (eq. 7): :func:`train_online`, Adam on the current block's pilots, warm-started.
* Modular hypernetwork (Sec. III-A3): :func:`train_hypernetwork`, offline over blocks of every
  ``K`` mixed in each mini-batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .channels import transmit
from .constellation import Constellation
from .deepsic import (ModularHypernetwork, ModuleSpec, channel_features, deepsic_logits, init_modules,
                      noise_std_per_dim, rx_features, unrolled_loss)


@dataclass
class Blocks:
    """``T`` transmitted blocks padded to ``K_max`` users.

    y : ``(T, N, L)`` complex received vectors (pilots first)
    labels : ``(T, K_max, L)`` int64 transmitted point indices (absent users: 0, unused)
    active : ``(T, K_max)`` bool, users present in each block (always the first ``K[t]``)
    n_pilots : ``B_pilot``
    h : ``(T, N, K_max)`` true channels (absent columns zero)
    noise_var : ``(T,)`` true complex noise variance per antenna
    """

    y: torch.Tensor
    labels: torch.Tensor
    active: torch.Tensor
    n_pilots: int
    h: torch.Tensor
    noise_var: torch.Tensor

    @property
    def n_users(self) -> torch.Tensor:
        return self.active.sum(-1)

    def __len__(self) -> int:
        return self.y.shape[0]


def draw_blocks(h: torch.Tensor, n_users, length: int, n_pilots: int, noise_var, constellation: Constellation,
                generator: torch.Generator) -> Blocks:
    """Transmit ``T`` blocks of ``length`` symbols over ``h (T, N, K_max)`` with ``n_users (T,)``
    active users and complex noise variance ``noise_var`` (float or ``(T,)``)."""
    t, _, k_max = h.shape
    n_users = torch.as_tensor(n_users).reshape(-1).expand(t)
    active = torch.arange(k_max)[None, :] < n_users[:, None]
    labels = constellation.random_indices((t, k_max, length), generator) * active[..., None]
    x = constellation.symbols(labels) * active[..., None]
    h = h * active[:, None, :]
    nv = torch.as_tensor(noise_var, dtype=torch.float32).reshape(-1).expand(t).clone()
    y = transmit(h.to(torch.complex64), x, nv[:, None, None], generator)
    return Blocks(y, labels, active, n_pilots, h, nv)


@dataclass
class FrontEnd:
    """Per-block receiver processing shared by every detector.

    h_ls : ``(T, N, K_max)`` LS estimate (eq. 8), absent columns zero
    noise_var : ``(T,)`` complex noise variance estimated from the pilot residual
    noise_std : ``(T,)`` its standard deviation per real dimension (the features' unit)
    feats : ``(T, L, F)`` received vectors divided by ``noise_std``
    h_cols : ``(T, K_max, F)`` the estimate's columns divided by ``noise_std``
    """

    h_ls: torch.Tensor
    noise_var: torch.Tensor
    noise_std: torch.Tensor
    feats: torch.Tensor
    h_cols: torch.Tensor


def ls_padded(y_p: torch.Tensor, x_p: torch.Tensor, active: torch.Tensor):
    """LS estimate (eq. 8) and residual noise variance for blocks with different ``K``:
    ``y_p (T, N, Bp)``, ``x_p (T, K_max, Bp)`` (absent rows zero), ``active (T, K_max)``.

    The Gram matrix gets ones on the absent users' diagonal so that it stays invertible; as their
    pilot rows are zero the absent columns of the estimate come out exactly zero."""
    gram = x_p @ x_p.mH + torch.diag_embed((~active).to(x_p.dtype))
    h_ls = torch.linalg.solve(gram, x_p @ y_p.mH).mH  # (X X^H)^{-1} X Y^H, transposed
    resid = y_p - h_ls @ x_p
    dof = y_p.shape[-2] * (y_p.shape[-1] - active.sum(-1))
    noise_var = resid.abs().square().sum((-2, -1)) / dof.clamp(min=1)
    return h_ls, noise_var


def front_end(blocks: Blocks, spec: ModuleSpec, constellation: Constellation) -> FrontEnd:
    """LS estimate, noise estimate and normalised features of every block."""
    bp = blocks.n_pilots
    x_p = constellation.symbols(blocks.labels[..., :bp]) * blocks.active[..., None]
    h_ls, nv = ls_padded(blocks.y[..., :bp], x_p, blocks.active)
    std = noise_std_per_dim(nv)
    return FrontEnd(h_ls, nv, std, rx_features(blocks.y, spec, std), channel_features(h_ls, spec, std))


# --------------------------------------------------------------------------- training
def _progress(iterable, desc: str, show: bool, total: int | None = None):
    if not show:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)


def train_hypernetwork(model: ModularHypernetwork, fe: FrontEnd, blocks: Blocks, *, iterations: int, epochs: int,
                       lr: float = 5e-4, batch_blocks: int = 32, symbols_per_block: int = 250,
                       epoch_k_sets: list | None = None, seed: int = 0, progress: bool = False) -> list[dict]:
    """Offline training of ``phi_hyper``, ``e_self``, ``e_pad`` (Sec. III-A3) with Adam.

    Every epoch visits each training block's symbols once, in chunks of ``symbols_per_block``;
    each mini-batch holds ``batch_blocks`` blocks drawn across all ``K`` (padded to ``K_max``), so
    every ``K`` is mixed into every step. ``epoch_k_sets[e]`` (optional) restricts epoch ``e`` to
    blocks whose ``K`` is in that set. Returns the per-epoch history (mean loss, ``K`` seen).
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n_blocks, length = blocks.labels.shape[0], blocks.labels.shape[-1]
    chunks = max(1, length // symbols_per_block)
    ks = blocks.n_users
    history = []
    model.train()
    for epoch in _progress(range(epochs), "hypernetwork epochs", progress):
        allowed = torch.ones(n_blocks, dtype=torch.bool)
        if epoch_k_sets is not None and epoch < len(epoch_k_sets) and epoch_k_sets[epoch] is not None:
            allowed = torch.isin(ks, torch.as_tensor(sorted(epoch_k_sets[epoch])))
        ids = torch.nonzero(allowed).flatten()
        # one (block, chunk) pair per item; symbol order inside a block reshuffled every epoch
        items = torch.stack(torch.meshgrid(ids, torch.arange(chunks), indexing="ij"), -1).reshape(-1, 2)
        items = items[torch.randperm(items.shape[0], generator=g)]
        perm = torch.rand(n_blocks, length, generator=g).argsort(-1)
        perm = perm[:, :chunks * symbols_per_block].unflatten(-1, (chunks, symbols_per_block))
        total, steps = 0.0, 0
        for i in range(0, items.shape[0], batch_blocks):
            b, c = items[i:i + batch_blocks].T
            sel = perm[b, c]  # (nb, symbols_per_block)
            feats = torch.gather(fe.feats[b], 1, sel[..., None].expand(-1, -1, fe.feats.shape[-1]))
            labels = torch.gather(blocks.labels[b], 2, sel[:, None, :].expand(-1, blocks.labels.shape[1], -1))
            active = blocks.active[b]
            theta = model(fe.h_cols[b], active)
            loss = unrolled_loss(deepsic_logits(theta, feats, model.spec, iterations, active), labels, active)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        history.append({"epoch": epoch + 1, "loss": total / max(steps, 1),
                        "k_seen": sorted(int(k) for k in torch.unique(ks[ids]))})
    model.eval()
    return history


def train_joint(spec: ModuleSpec, k_values: list[int], fe: FrontEnd, blocks: Blocks, *, iterations: int,
                epochs: int, lr: float = 1e-3, batch_size: int = 1000, seed: int = 0,
                progress: bool = False) -> tuple[dict[int, torch.Tensor], list[dict]]:
    """Joint learning (eq. 5): for each ``K`` one set of ``K`` modules trained on all training
    vectors of that ``K`` (no channel information). The ``K`` values train side by side in one
    batched pass (padded to the largest ``K``; padding is exact, see :mod:`neuralmimo.deepsic`).

    Returns ``{K: theta (K, |theta^(K)|)}`` and the per-epoch mean loss.
    """
    g = torch.Generator().manual_seed(seed)
    k_pad = max(k_values)
    ks = blocks.n_users
    feats, labels, act = [], [], []
    for k in k_values:
        sel = ks == k
        if not bool(sel.any()):
            raise ValueError(f"no training blocks with K = {k}")
        feats.append(fe.feats[sel].flatten(0, 1))  # (Bk, F)
        labels.append(blocks.labels[sel][:, :k_pad].movedim(1, 0).flatten(1))  # (k_pad, Bk)
        act.append(torch.arange(k_pad) < k)
    n = min(f.shape[0] for f in feats)  # equal data per K keeps the batch rectangular
    feats = torch.stack([f[:n] for f in feats])  # (nK, n, F)
    labels = torch.stack([lab[:, :n] for lab in labels])  # (nK, k_pad, n)
    active = torch.stack(act)  # (nK, k_pad)
    theta = torch.stack([init_modules(k_pad, spec, g) for _ in k_values]).requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    history = []
    for epoch in _progress(range(epochs), "joint epochs", progress):
        perm = torch.randperm(n, generator=g)
        total, steps = 0.0, 0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = unrolled_loss(deepsic_logits(theta, feats[:, idx], spec, iterations, active),
                                 labels[:, :, idx], active)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            steps += 1
        history.append({"epoch": epoch + 1, "loss": total / steps})
    theta = theta.detach()
    return {k: theta[i, :k, :spec.n_params(k)].clone() for i, k in enumerate(k_values)}, history


def train_online(theta: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor, spec: ModuleSpec, *,
                 iterations: int, steps: int = 100, lr: float = 1e-3) -> torch.Tensor:
    """Online learning (eq. 7): ``steps`` full-batch Adam iterations on one block's pilots,
    starting from ``theta (K, P)``. ``feats (Bp, F)``, ``labels (K, Bp)``."""
    theta = theta.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([theta], lr=lr)
    for _ in range(steps):
        loss = unrolled_loss(deepsic_logits(theta, feats, spec, iterations), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return theta.detach()

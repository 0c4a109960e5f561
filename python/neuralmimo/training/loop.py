"""The training loop itself (the package docstring tells the whole story)."""

from __future__ import annotations

import math
import time
from typing import Callable, Iterable

import torch

from .checkpoint import Checkpoint, checkpoint_policy, optimiser_params, stage_dir
from .device import current_device, device_selected, to_device
from .distributed import average_buffers, average_gradients, broadcast_model, world

def train_loop(optimiser: torch.optim.Optimizer, step: Callable, batches: Callable[[int], Iterable], *, epochs: int,
               epoch_offset: int = 0, loss_key: str = "loss", after_backward: Callable[[int], None] | None = None,
               end_of_epoch: Callable[[int], dict | None] | None = None, progress=None, desc: str = "",
               postfix: Callable[[dict], dict] | None = None, model: torch.nn.Module | None = None,
               generators: tuple[torch.Generator, ...] = (), state: dict | None = None) -> list[dict]:
    """Run ``epochs`` epochs; returns one record per epoch.

    Parameters
    ----------
    optimiser : steps once per batch (gradients zeroed before each batch)
    step : ``batch -> (loss tensor, value float, weight float)``
    batches : ``epoch index (0-based) -> iterable of batches`` (this process's shares under torchrun)
    epoch_offset : numbers the records ``epoch_offset + 1 ...`` (training continued over calls)
    loss_key : name of the weighted mean of ``value`` in the records
    after_backward : called with the epoch index after every backward pass (and gradient averaging)
    end_of_epoch : called with the epoch index; its dict (e.g. validation metrics) joins the record
    progress : a tqdm-like factory ``progress(iterable, desc=..., unit=..., leave=...)`` or ``None``
    postfix : record -> dict shown next to the progress bar
    model : the module trained, if any: its buffers are averaged over processes and checkpointed
    generators : the family's generators whose state carries from epoch to epoch (checkpointed)
    state : ``{name: object}`` of the family's own state carried over epochs, each object with
        ``state_dict()``/``load_state_dict()`` over tensors and JSON values (checkpointed; see :class:`Carry`)

    Records: ``{"epoch", loss_key, loss_key + "_se", "seconds", **end_of_epoch(...)}``: the weighted
    mean of ``value`` over all processes' batches and its standard error.
    """
    rank, size = world()
    device = current_device()
    on_device = device_selected()
    if model is not None and on_device:
        model.to(device)
    params = optimiser_params(optimiser)
    if size > 1:
        broadcast_model(params, model)
    history: list[dict] = []
    start = 0
    directory = stage_dir()
    ckpt = Checkpoint(directory) if directory is not None else None
    writer = ckpt is not None and rank == 0  # rank 0 of the group: a single or solo process writes its own
    policy = checkpoint_policy()
    if ckpt is not None and policy.resume:
        loaded = ckpt.load(epochs=epochs, optimiser=optimiser, model=model, generators=generators, state=state)
        if loaded is not None:
            start, history = loaded
    epochs_iter = range(start, epochs)
    if progress is not None and rank == 0:
        epochs_iter = progress(epochs_iter, desc=desc, unit="epoch", leave=False)
    for e in epochs_iter:
        t0 = time.perf_counter()
        total, count, squares, weights2 = 0.0, 0.0, 0.0, 0.0
        for batch in batches(e):
            if on_device:
                batch = to_device(batch, device)
            optimiser.zero_grad(set_to_none=True)
            loss, value, weight = step(batch)
            loss.backward()
            if size > 1:
                average_gradients(params, float(weight))
            if after_backward is not None:
                after_backward(e)
            optimiser.step()
            total += value * weight
            count += weight
            squares += value * value * weight
            weights2 += weight * weight
        if size > 1:
            sums = torch.tensor([total, count, squares, weights2], dtype=torch.float64, device=params[0].device)
            torch.distributed.all_reduce(sums)
            total, count, squares, weights2 = (float(v) for v in sums)
            average_buffers(model)
        mean = total / max(count, 1e-300)
        # standard error of the weighted mean over the (per-process) batches: the epoch's noise
        se = math.sqrt(max(squares / max(count, 1e-300) - mean * mean, 0.0) * weights2) / max(count, 1e-300)
        record = {"epoch": epoch_offset + e + 1, loss_key: mean, f"{loss_key}_se": se,
                  "seconds": time.perf_counter() - t0}
        if e == start and start > 0:
            record["resumed"] = True  # the first epoch after a restart from a checkpoint
        if end_of_epoch is not None:
            record.update(end_of_epoch(e) or {})
        history.append(record)
        if postfix is not None and hasattr(epochs_iter, "set_postfix"):
            epochs_iter.set_postfix(**postfix(record))
        if writer and ((e + 1) % policy.every == 0 or e + 1 == epochs):
            ckpt.save(epoch=e + 1, epochs=epochs, history=history, optimiser=optimiser, model=model,
                      generators=generators, state=state)
    if model is not None and on_device:
        model.to("cpu")  # evaluation and bundles work on the CPU
    return history


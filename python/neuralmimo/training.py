"""The one training loop of every family: seeded epochs of mini-batches, an optimiser step per
batch, one history record per epoch, and a progress hook.

A family supplies ``batches(epoch)`` (its own seeded shuffling and data) and ``step(batch)``
returning ``(loss, value, weight)``: ``loss`` is back-propagated, ``value`` (a float, e.g. the
loss without a regulariser) enters the epoch's weighted mean with ``weight`` (e.g. the batch
size). The loop itself draws no random numbers, so a family's results depend only on its seeds.
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import torch


def train_loop(optimiser: torch.optim.Optimizer, step: Callable, batches: Callable[[int], Iterable], *, epochs: int,
               epoch_offset: int = 0, loss_key: str = "loss", after_backward: Callable[[int], None] | None = None,
               end_of_epoch: Callable[[int], dict | None] | None = None, progress=None, desc: str = "",
               postfix: Callable[[dict], dict] | None = None) -> list[dict]:
    """Run ``epochs`` epochs; returns one record per epoch.

    Parameters
    ----------
    optimiser : steps once per batch (gradients zeroed before each batch)
    step : ``batch -> (loss tensor, value float, weight float)``
    batches : ``epoch index (0-based) -> iterable of batches``
    epoch_offset : numbers the records ``epoch_offset + 1 ...`` (training continued over calls)
    loss_key : name of the weighted mean of ``value`` in the records
    after_backward : called with the epoch index after every backward pass (e.g. to record gradients)
    end_of_epoch : called with the epoch index; its dict (e.g. validation metrics) joins the record
    progress : a tqdm-like factory ``progress(iterable, desc=..., unit=..., leave=...)`` or ``None``
    postfix : record -> dict shown next to the progress bar

    Records: ``{"epoch", loss_key, "seconds", **end_of_epoch(...)}``.
    """
    history = []
    epochs_iter = range(epochs)
    if progress is not None:
        epochs_iter = progress(epochs_iter, desc=desc, unit="epoch", leave=False)
    for e in epochs_iter:
        t0 = time.perf_counter()
        total, count = 0.0, 0.0
        for batch in batches(e):
            optimiser.zero_grad(set_to_none=True)
            loss, value, weight = step(batch)
            loss.backward()
            if after_backward is not None:
                after_backward(e)
            optimiser.step()
            total += value * weight
            count += weight
        record = {"epoch": epoch_offset + e + 1, loss_key: total / max(count, 1e-300), "seconds": time.perf_counter() - t0}
        if end_of_epoch is not None:
            record.update(end_of_epoch(e) or {})
        history.append(record)
        if postfix is not None and hasattr(epochs_iter, "set_postfix"):
            epochs_iter.set_postfix(**postfix(record))
    return history


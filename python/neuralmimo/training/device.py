"""The device a training runs on (``docs/training.md``): names checked once, one selected device,
tensors moved in nested containers."""

from __future__ import annotations

import contextlib
import dataclasses

import torch

_device: torch.device | None = None  # None: the CPU, nothing moved


def device_name(text) -> str:
    """``text`` if it names a training device -- ``cpu``, ``cuda`` or ``cuda:N`` -- else
    ``ValueError`` in one line (a config's ``device`` key; availability is checked at run time)."""
    try:
        dev = torch.device(text)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {text!r}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or cuda:N, got {text!r}")
    return str(text)


def check_device(text: str) -> torch.device:
    """:func:`device_name` as a device; ``ValueError`` in one line if CUDA (that GPU) is not
    available here."""
    dev = torch.device(device_name(text))
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text}: CUDA is not available on this machine (torch {torch.__version__})")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {text}: this machine has {torch.cuda.device_count()} GPU(s)")
    return dev


@contextlib.contextmanager
def use_device(device):
    """Train on ``device`` inside: :func:`train_loop` moves the model and every batch there (the
    data are drawn on the CPU by the families' CPU generators, so a run draws the same numbers
    on every device) and the model back to the CPU at the end. ``use_device("cpu")`` runs those
    moves too (no-ops), so the CPU tests go through the same code as a GPU run."""
    global _device
    old, _device = _device, torch.device(device)
    try:
        yield _device
    finally:
        _device = old


def current_device() -> torch.device:
    """The device trainings run on (:func:`use_device`; the CPU by default)."""
    return _device if _device is not None else torch.device("cpu")


def to_device(obj, device):
    """``obj`` with every tensor in it (tuples, lists, dicts, dataclasses) on ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(to_device(v, device) for v in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: to_device(getattr(obj, f.name), device)
                                           for f in dataclasses.fields(obj) if f.init})
    return obj



def device_selected() -> bool:
    """True inside :func:`use_device` (the loop then moves the model and every batch)."""
    return _device is not None

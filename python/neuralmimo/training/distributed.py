"""Data parallelism under ``torchrun`` (``docs/training.md``): the process group, this process's
share of a batch or of independent runs, and the gradient and buffer averaging the training loop
does before every optimiser step (the computation of ``DistributedDataParallel``)."""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os

import torch

_solo_depth = 0


def _dist() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def process_rank() -> int:
    """This process's rank in the ``torchrun`` job (0 without one)."""
    return torch.distributed.get_rank() if _dist() else 0


def process_count() -> int:
    """Processes in the ``torchrun`` job (1 without one)."""
    return torch.distributed.get_world_size() if _dist() else 1


def is_main() -> bool:
    """True in the process that writes a data-parallel run's files (rank 0)."""
    return process_rank() == 0


def world() -> tuple[int, int]:
    """``(rank, size)`` of the data-parallel group the training loop averages over: the
    ``torchrun`` job, or ``(0, 1)`` without one or inside :func:`solo`."""
    if _solo_depth or not _dist():
        return 0, 1
    return process_rank(), process_count()


@contextlib.contextmanager
def solo():
    """Train in this process alone (an independent run of :func:`my_share`): no all-reduce,
    :func:`shard`/:func:`local_batch`/:func:`rank_seed` act as in a single process."""
    global _solo_depth
    _solo_depth += 1
    try:
        yield
    finally:
        _solo_depth -= 1


def init_distributed(device: str = "cpu") -> str:
    """Join the ``torchrun`` job described by the environment (``WORLD_SIZE`` > 1): gloo on CPU,
    NCCL on CUDA (each process on GPU ``LOCAL_RANK``). Returns the device this process trains on.
    Without a job, returns ``device`` unchanged. Collective operations wait up to 24 h, since
    rank 0 alone evaluates and writes reports between training steps."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _dist():
        return device
    cuda = device.startswith("cuda")
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    torch.distributed.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=24))
    atexit.register(_leave)
    return device


def _leave() -> None:
    if _dist():
        torch.distributed.destroy_process_group()


def barrier() -> None:
    """Wait for every process of the job (no-op without one)."""
    if process_count() > 1:
        torch.distributed.barrier()


def my_share(items: list) -> list:
    """This process's independent runs: ``items[rank::size]`` over the job's processes."""
    return list(items)[process_rank()::process_count()]


def writer() -> bool:
    """True where a training's results are written: the process training alone (single, or an
    independent run inside :func:`solo`), or rank 0 of a data-parallel group."""
    return world()[0] == 0


def each_job(items: list):
    """Iterate over independent runs (models that do not depend on each other): with at least as
    many runs as processes, each process gets its :func:`my_share` and trains each run inside
    :func:`solo`; otherwise every process goes through all runs and trains each data-parallel."""
    items = list(items)
    if process_count() > 1 and len(items) >= process_count():
        for item in my_share(items):
            with solo():
                yield item
    else:
        yield from items


def shard(indices: torch.Tensor) -> torch.Tensor | None:
    """This process's contiguous part of a global batch ``indices``; ``None`` (skip the batch,
    in every process alike) when the batch has fewer items than processes."""
    rank, size = world()
    if size == 1:
        return indices
    if indices.shape[0] < size:
        return None
    return indices.tensor_split(size)[rank]


def local_batch(global_batch: int) -> int:
    """Samples this process draws per step so that the processes together draw ``global_batch``."""
    _, size = world()
    if global_batch % size:
        raise ValueError(f"a batch of {global_batch} does not split over {size} processes: choose a multiple")
    return global_batch // size


def rank_seed(seed: int) -> int:
    """The seed of this process's own data: ``seed`` itself in rank 0 (and in a single process),
    far from it in the others. The offset lives in the low 32 bits: torch's CPU generator (MT19937)
    keeps only those, so ``seed + (rank << 40)`` gave every process the same data (measured: a
    2-process DetNet run then learned like one with half the batch)."""
    rank, _ = world()
    return (seed + rank * 0x9E3779B9) % 2**32 if rank else seed


def average_gradients(params: list[torch.Tensor], weight: float) -> None:
    """Replace every gradient by the ``weight``-weighted mean over the processes (one all-reduce);
    a parameter without a gradient in every process keeps none (as Adam expects)."""
    ref = params[0]
    parts = []
    for p in params:
        g = p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
        parts.append(g.to(ref.dtype) * weight)
    flags = torch.tensor([float(p.grad is not None) for p in params] + [weight], dtype=ref.dtype, device=ref.device)
    buf = torch.cat(parts + [flags])
    torch.distributed.all_reduce(buf)
    total = buf[-1]
    offset = 0
    for i, p in enumerate(params):
        n = p.numel()
        if float(buf[-1 - len(params) + i]) > 0:
            p.grad = (buf[offset:offset + n] / total).view_as(p).to(p.dtype)
        offset += n


def average_buffers(model: torch.nn.Module | None) -> None:
    if model is None:
        return
    floats = [b for b in model.buffers() if b.is_floating_point()]
    if not floats:
        return
    buf = torch.cat([b.reshape(-1) for b in floats])
    torch.distributed.all_reduce(buf)
    buf /= process_count()
    offset = 0
    for b in floats:
        b.copy_(buf[offset:offset + b.numel()].view_as(b))
        offset += b.numel()


def broadcast_model(params: list[torch.Tensor], model: torch.nn.Module | None) -> None:
    """Start every process from rank 0's parameters and buffers (as ``DistributedDataParallel``)."""
    tensors = params + (list(model.buffers()) if model is not None else [])
    with torch.no_grad():
        for t in tensors:
            torch.distributed.broadcast(t.data, 0)


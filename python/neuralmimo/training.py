"""The one training loop of every family: seeded epochs of mini-batches, an optimiser step per
batch, one history record per epoch, a progress hook -- data-parallel under ``torchrun`` and
resumable from checkpoints.

A family supplies ``batches(epoch)`` (its own seeded shuffling and data) and ``step(batch)``
returning ``(loss, value, weight)``: ``loss`` is back-propagated, ``value`` (a float, e.g. the
loss without a regulariser) enters the epoch's weighted mean with ``weight`` (e.g. the batch
size). The loop itself draws no random numbers, so a family's results depend only on its seeds.

**Data parallelism** (``docs/training.md``). Under ``torchrun`` (:func:`init_distributed`) every
process runs the same loop on its own share of each global batch and the gradients are averaged
over the processes before every optimiser step, weighted by each share's ``weight`` -- the
computation of PyTorch's ``DistributedDataParallel`` (one all-reduce of the flattened gradients
per step), done in the loop because the families' steps call their models in their own ways
(hypernetworks writing other networks' weights, bare parameter tensors). The global batch is
kept fixed and the learning rate unchanged: a family draws its share with :func:`shard` (slices
of the single-process batch: the same samples, the same result up to the order of a float sum)
or with :func:`local_batch` + :func:`rank_seed` (its own seeded draw of ``batch / world``
fresh samples). Float buffers (batch-norm running statistics) are averaged over the processes
at the end of every epoch, so every process holds the same model. :func:`solo` turns the
all-reduce off for independent runs spread over the processes (:func:`my_share`).

**Checkpoints.** Inside :func:`checkpointing` (set by the lab's run folder) and a named
:func:`checkpoint_stage`, the loop writes every ``every`` epochs the parameters, the model's
buffers, the optimiser state, the generators it was given, the global torch RNG state, the
family's ``state`` dict and the history (safetensors + JSON, atomically: never pickle); with
``resume`` it starts from the stage's last checkpoint, so a killed run continued with the same
seeds ends bit for bit where the uninterrupted run would (tested).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import datetime
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from safetensors.torch import load_file, save_file

# ------------------------------------------------------------------------------ device
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


# ------------------------------------------------------------------------------ processes
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


def _params(optimiser: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimiser.param_groups for p in group["params"]]


def _average_gradients(params: list[torch.Tensor], weight: float) -> None:
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


def _average_buffers(model: torch.nn.Module | None) -> None:
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


def _broadcast_model(params: list[torch.Tensor], model: torch.nn.Module | None) -> None:
    """Start every process from rank 0's parameters and buffers (as ``DistributedDataParallel``)."""
    tensors = params + (list(model.buffers()) if model is not None else [])
    with torch.no_grad():
        for t in tensors:
            torch.distributed.broadcast(t.data, 0)


# ------------------------------------------------------------------------------ checkpoints
class Carry(dict):
    """A family's plain state for :func:`train_loop`'s ``state`` (e.g. the best model so far)."""

    def state_dict(self) -> dict:
        return dict(self)

    def load_state_dict(self, d: dict) -> None:
        self.update(d)


@dataclass
class CheckpointPolicy:
    """Where and how often the loops of a run checkpoint (:func:`checkpointing`)."""

    root: Path
    every: int = 1
    resume: bool = False


_policy: CheckpointPolicy | None = None
_stage: list[str] = []


@contextlib.contextmanager
def checkpointing(root, every: int = 1, resume: bool = False):
    """Checkpoint every named :func:`checkpoint_stage` under ``root`` every ``every`` epochs;
    with ``resume``, continue each stage from its last checkpoint."""
    global _policy
    if every < 1:
        raise ValueError(f"checkpoint interval must be >= 1 epoch, got {every}")
    old, _policy = _policy, CheckpointPolicy(Path(root), every, resume)
    try:
        yield _policy
    finally:
        _policy = old


def checkpoint_policy() -> CheckpointPolicy | None:
    """The :func:`checkpointing` policy in force (``None`` outside one)."""
    return _policy


@contextlib.contextmanager
def checkpoint_stage(name: str):
    """Name the training loops inside (``name`` joined to enclosing stages by ``/``); a name must
    identify the same training in every run of the same configuration."""
    _stage.append(name)
    try:
        yield
    finally:
        _stage.pop()


def _stage_dir() -> Path | None:
    if _policy is None or not _stage:
        return None
    return _policy.root.joinpath(*_stage)


def _flatten(prefix: str, obj, tensors: dict, where: str):
    """Split a family state into safetensors entries and JSON; tensors are replaced by markers."""
    if isinstance(obj, torch.Tensor):
        key = f"{prefix}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _flatten(f"{prefix}/{k}", v, tensors, where)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return [_flatten(f"{prefix}/{i}", v, tensors, where) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{where}: cannot checkpoint a {type(obj).__name__}")


def _unflatten(obj, tensors: dict):
    if isinstance(obj, dict) and "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if isinstance(obj, dict) and "__dict__" in obj:
        return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


class Checkpoint:
    """One stage's checkpoint: ``checkpoint.json`` naming ``epoch-NNNNN.safetensors``."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.json = directory / "checkpoint.json"

    def save(self, *, epoch: int, epochs: int, history: list[dict], optimiser, model, generators, state) -> None:
        tensors: dict[str, torch.Tensor] = {}
        params = _params(optimiser)
        for i, p in enumerate(params):
            tensors[f"param/{i}"] = p.detach().to("cpu").contiguous().clone()
        if model is not None:
            for name, b in model.named_buffers():
                tensors[f"buffer/{name}"] = b.detach().to("cpu").contiguous().clone()
        opt = optimiser.state_dict()
        opt_state = _flatten("opt", opt["state"], tensors, str(self.directory))
        for j, g in enumerate(generators):
            tensors[f"generator/{j}"] = g.get_state()
        tensors["rng/torch"] = torch.random.get_rng_state()
        family = _flatten("state", {k: v.state_dict() for k, v in (state or {}).items()}, tensors, str(self.directory))
        meta = {"epoch": epoch, "epochs": epochs, "history": history, "optimiser_state": opt_state,
                "param_groups": opt["param_groups"], "state": family,
                "shapes": [list(p.shape) for p in params], "generators": len(generators),
                "weights": f"epoch-{epoch:05d}.safetensors"}
        self.directory.mkdir(parents=True, exist_ok=True)
        weights = self.directory / meta["weights"]
        save_file(tensors, str(weights) + ".tmp")
        os.replace(str(weights) + ".tmp", weights)
        tmp = self.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.json)  # the checkpoint exists from here on
        for old in self.directory.glob("epoch-*.safetensors"):
            if old.name != meta["weights"]:
                old.unlink(missing_ok=True)

    def load(self, *, epochs: int, optimiser, model, generators, state) -> tuple[int, list[dict]] | None:
        """Restore everything :meth:`save` wrote; ``None`` if there is no checkpoint. A checkpoint
        of a different training (parameter shapes, epochs, generators) raises ``ValueError``."""
        if not self.json.exists():
            return None
        meta = json.loads(self.json.read_text())
        params = _params(optimiser)
        if meta["shapes"] != [list(p.shape) for p in params] or meta["epochs"] != epochs \
                or meta["generators"] != len(generators):
            raise ValueError(f"{self.directory}: the checkpoint belongs to another training (parameters, epochs or "
                             "generators differ); start the run without --resume or in a new folder")
        tensors = load_file(str(self.directory / meta["weights"]))
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(tensors[f"param/{i}"])
            if model is not None:
                for name, b in model.named_buffers():
                    b.copy_(tensors[f"buffer/{name}"])
        opt_state = _unflatten(meta["optimiser_state"], tensors)
        optimiser.load_state_dict({"state": {int(k): v for k, v in opt_state.items()},
                                   "param_groups": meta["param_groups"]})
        for j, g in enumerate(generators):
            g.set_state(tensors[f"generator/{j}"])
        torch.random.set_rng_state(tensors["rng/torch"])
        saved = _unflatten(meta["state"], tensors)
        for k, v in (state or {}).items():
            v.load_state_dict(saved[k])
        return meta["epoch"], meta["history"]


# ------------------------------------------------------------------------------ the loop
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
    on_device = _device is not None
    if model is not None and on_device:
        model.to(device)
    params = _params(optimiser)
    if size > 1:
        _broadcast_model(params, model)
    history: list[dict] = []
    start = 0
    directory = _stage_dir()
    ckpt = Checkpoint(directory) if directory is not None else None
    writer = ckpt is not None and rank == 0  # rank 0 of the group: a single or solo process writes its own
    if ckpt is not None and _policy.resume:
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
                _average_gradients(params, float(weight))
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
            _average_buffers(model)
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
        if writer and ((e + 1) % _policy.every == 0 or e + 1 == epochs):
            ckpt.save(epoch=e + 1, epochs=epochs, history=history, optimiser=optimiser, model=model,
                      generators=generators, state=state)
    if model is not None and on_device:
        model.to("cpu")  # evaluation and bundles work on the CPU
    return history

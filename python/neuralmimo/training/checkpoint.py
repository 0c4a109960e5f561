"""Checkpoints of the training loop (``docs/training.md``): inside :func:`checkpointing` and a named
:func:`checkpoint_stage`, a loop saves parameters, buffers, optimiser and generator states and the
family's own state (safetensors + JSON, atomically: never pickle) and resumes from them."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def optimiser_params(optimiser: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every parameter ``optimiser`` steps, in its order (what a checkpoint saves and restores)."""
    return [p for group in optimiser.param_groups for p in group["params"]]


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


def stage_dir() -> Path | None:
    """The folder of the innermost :func:`checkpoint_stage` under the policy's root (``None``
    outside :func:`checkpointing` or a stage)."""
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
        params = optimiser_params(optimiser)
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
        params = optimiser_params(optimiser)
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



"""Run folders, configuration files and the step protocol shared by every lab pipeline.

A pipeline is a config dataclass (sections of nested dataclasses, unknown keys refused) and an
ordered table ``STEPS = {name: step(cfg, run, progress)}``. Each step reads what the steps before
it wrote into the run folder and writes its own results there; ``config.yaml`` records the
configuration the run used. JSON files are written with :func:`write_json`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import types
import typing
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Callable

import yaml

from .. import training
from ..params import Param


def read_config(typ, data: dict | None, where: str):
    """A config dataclass ``typ`` read from the mapping ``data`` (``None``: every default), the one
    reader of every pipeline's YAML. Recursive: a field typed with a dataclass (``Sub``,
    ``Sub | None``, ``list[Sub]``) is read the same way from its sub-mapping, named
    ``where.field`` (``where.field[i]``) in messages; an absent key takes the field's default.
    A key that is not a field, or a value of the wrong type, raises ``ValueError`` naming the
    place and the key (a typo in a config must not be silently ignored, nor fail deep inside a
    run). A dataclass with a ``check()`` method is checked after it is built (cross-field rules)."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    bad = set(data) - {f.name for f in fields(typ) if f.init}
    if bad:
        raise ValueError(f"unknown keys in {where}: {sorted(bad)}")
    hints = typing.get_type_hints(typ)
    values = {}
    for key, value in data.items():
        hint, place = hints.get(key), f"{where}.{key}"
        sub, many, optional = _nested(hint)
        if sub is not None and value is None and optional:
            values[key] = None
        elif sub is not None and many:
            if not isinstance(value, list):
                raise ValueError(f"{place} must be a list, got {type(value).__name__}")
            values[key] = [read_config(sub, v, f"{place}[{i}]") for i, v in enumerate(value)]
        elif sub is not None:
            values[key] = read_config(sub, value, place)
        elif hint is not None and not _matches(value, hint):
            extra = " (YAML reads a number like 5e-4 as text: write 5.0e-4)" if _numeric_text(value) else ""
            raise ValueError(f"{where}: {key} must be {_describe(hint)}, got {value!r}{extra}")
        else:
            values[key] = _declared_check(typ, key, value, place)
    cfg = typ(**values)
    if hasattr(cfg, "check"):
        cfg.check()
    return cfg


# Scalar config values checked by name, for every pipeline (neuralmimo.params): a count of steps,
# epochs, frames, ... is a whole number >= 1 (``training.steps: -5`` used to write an untrained
# bundle), a learning rate lies in (0, 10], every float is finite. A field may declare its own
# range instead: ``field(metadata={"param": Param(...)})``.
_COUNT = re.compile(r"(^|_)(steps|epochs|batch|batch_size|batch_blocks|frames|threads|layers|hidden|blocks|symbols|"
                    r"samples|ues|chunk|iterations|workers)(_|$)")
_LR = re.compile(r"(^|_)lr(_|$)")


def _declared_check(typ, key: str, value, place: str):
    declared = {f.name: f.metadata.get("param") for f in fields(typ)}.get(key)
    if declared is None and isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, int) and _COUNT.search(key):
            declared = Param(int, 1)
        elif _LR.search(key):
            declared = Param(float, 0, 10, lo_open=True)
        elif isinstance(value, float):
            declared = Param(float)
    return value if declared is None else declared.check(value, place)


def _nested(hint) -> tuple[type | None, bool, bool]:
    """``(dataclass, is a list of it, may be None)`` of a field's type hint; ``(None, ...)`` for
    a plain type."""
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) != 1:
            return None, False, optional
        hint = args[0]
    if typing.get_origin(hint) is list and typing.get_args(hint) and is_dataclass(typing.get_args(hint)[0]):
        return typing.get_args(hint)[0], True, optional
    if is_dataclass(hint):
        return hint, False, optional
    return None, False, optional


def _numeric_text(value) -> bool:
    try:
        return isinstance(value, str) and math.isfinite(float(value))
    except ValueError:
        return False


def _matches(value, hint) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint in (str, list, dict):
        return isinstance(value, hint)
    if origin in (list, dict):
        return isinstance(value, origin)
    return True


def _describe(hint) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def load_yaml(path) -> dict:
    """A YAML mapping from ``path``; ``ValueError`` with the file name if it is not one."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a configuration is a mapping, got {type(data).__name__}")
    return data


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON (indent 1), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def save_config(cfg, run: Path) -> None:
    """``run/config.yaml``: the configuration (a dataclass) the run uses."""
    run.mkdir(parents=True, exist_ok=True)
    data = asdict(cfg) if is_dataclass(cfg) else cfg
    (run / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def run_steps(name: str, steps: dict[str, Callable], cfg, run: Path, selected=None, progress: bool = True, *,
              parallel=(), resume: bool = False, checkpoint_every: int = 1) -> None:
    """Run the ``selected`` steps (default: all, in table order) of a pipeline into ``run``,
    saving the configuration first and printing each step's duration.

    Training loops checkpoint into ``run/checkpoints`` every ``checkpoint_every`` epochs
    (:func:`neuralmimo.training.checkpointing`; stages named by the pipelines). ``resume``
    continues a killed run of the same configuration: steps that finished are skipped, the
    interrupted one restarts and its training loops continue from their checkpoints; without it
    the run's checkpoints are cleared first. Under ``torchrun`` the ``parallel`` steps run in every
    process (data-parallel training, independent runs spread over the processes); the others
    (evaluation, reports) in rank 0 alone while the rest wait."""
    selected = list(steps) if selected is None else list(selected)
    unknown = [s for s in selected if s not in steps]
    if unknown:
        raise ValueError(f"unknown {name} steps {unknown}; choose from {list(steps)}")
    ckpt = run / "checkpoints"
    if resume:
        if not (run / "config.yaml").exists():
            raise ValueError(f"{run}: nothing to resume (no config.yaml)")
        data = asdict(cfg) if is_dataclass(cfg) else cfg
        if yaml.safe_load((run / "config.yaml").read_text()) != yaml.safe_load(yaml.safe_dump(data, sort_keys=False)):
            raise ValueError(f"{run} was run with another configuration: resume it with the same one")
    if training.is_main():
        if not resume and ckpt.exists():
            shutil.rmtree(ckpt)
        save_config(cfg, run)
    training.barrier()
    with training.checkpointing(ckpt, checkpoint_every, resume):
        for s in selected:
            marker = ckpt / "steps" / f"{s}.done"
            if resume and marker.exists():
                print(f"[{name}] {s} finished before: skipped", flush=True)
                continue
            t0 = time.perf_counter()
            if s in parallel:
                steps[s](cfg, run, progress and training.is_main())
            elif training.is_main():
                with training.solo():
                    steps[s](cfg, run, progress)
            training.barrier()
            if training.is_main():
                marker.parent.mkdir(parents=True, exist_ok=True)
                marker.touch()
                print(f"[{name}] {s} done in {time.perf_counter() - t0:.0f} s -> {run}", flush=True)


@dataclass(frozen=True)
class Step:
    """One step of a pipeline: ``run(cfg, run, progress)``, its help line; ``parallel``: it runs
    in every process under torchrun (data-parallel training, independent runs spread over the
    processes; the others run in rank 0 alone); ``in_run``: part of the ``run`` command (a step
    that is a study of its own is run by name only)."""

    run: Callable
    help: str
    parallel: bool = False
    in_run: bool = True


class Pipeline:
    """A lab pipeline: named :class:`Step` s run in order into a run folder (:func:`run_steps`).
    Its module exposes ``STEPS``, ``STEP_HELP`` and ``run_pipeline`` from here (the command line
    and the families table read them)."""

    def __init__(self, name: str, steps: dict[str, Step]):
        self.name, self.steps = name, dict(steps)

    @property
    def step_functions(self) -> dict[str, Callable]:
        return {k: s.run for k, s in self.steps.items()}

    @property
    def help(self) -> dict[str, str]:
        return {k: s.help for k, s in self.steps.items()}

    def run(self, cfg, run: Path, steps=None, progress: bool = True, **options) -> None:
        """Run ``steps`` (default: the steps of ``run``) into ``run``; ``options``: ``resume``,
        ``checkpoint_every`` (:func:`run_steps`)."""
        selected = [k for k, s in self.steps.items() if s.in_run] if steps is None else steps
        run_steps(self.name, self.step_functions, cfg, run, selected, progress,
                  parallel={k for k, s in self.steps.items() if s.parallel}, **options)

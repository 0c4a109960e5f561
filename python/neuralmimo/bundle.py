"""Model bundles: the only thing that crosses from the lab to the receiver (docs/architecture.md).

A bundle is a folder with ``weights.safetensors`` (tensors only: safetensors has no code path,
so loading never unpickles anything) and ``manifest.json``::

    {"schema_version": 2,
     "architecture": {"name": "sdnet", "hyperparameters": {...}},
     "system": {"nr": 32, "nt": 8, "modulation": "qpsk", "n_pilots": 16, "snr_convention": "project",
                "snr_db": [25.0], "channel": {"name": "umi-task", "args": {...}}},
     "training": {...provenance: config, data, seed, epochs, metrics...},
     "learngene": {...source collective model, layer ids, strategy... (when it applies)},
     "tensors": {"name": {"shape": [...], "dtype": "float32"}, ...},
     "weights_sha256": "<sha256 of weights.safetensors>",
     "fingerprint": {"version": 1, "output": [...]},
     "envelope": {...where the model is measured not worse than MMSE (neuralmimo.envelope)...}}

``fingerprint`` is behavioural: the detector's output on a fixed, seeded probe input
(:meth:`~neuralmimo.detectors.base.FrameDetector.probe_output`), written by :func:`save_model` for
every detector architecture and recomputed at load (:func:`neuralmimo.detectors.registry.load_detector`).
The sha256 covers the weights only; hyper-parameters that shapes do not reveal (WeSNet's
``profile`` or ``alpha``) would otherwise load and detect at many times the SER without a word.
A manifest whose hyper-parameters change the behaviour is refused.

``system`` always holds the seven keys of :data:`SYSTEM_KEYS` (a hypernetwork's ``nt`` is the
most users it serves, ``K_max``). Version-1 manifests (before the system schema) are read and
upgraded in memory (:func:`upgrade_manifest`).

One codec serves every family: a family declares a :class:`ModelCodec` (architecture name,
bounded hyper-parameter schema, ``hyperparameters(model)``, ``build(hp)``) and
:func:`save_model` / :func:`load_model` do the rest. Loading validates every manifest field
before it is used, derives the expected tensor shapes from the hyper-parameters on the ``meta``
device (nothing is allocated) and compares them with the manifest before the weights are read,
then checks the weights' sha256, the safetensors parse, names, shapes, dtypes and NaN/Inf, builds
the module and loads it strictly. Every refusal is a :class:`BundleError` naming the bundle and
the reason.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .constellation import MODULATIONS
from .envelope import EnvelopeError, check_envelope
from .snr import CONVENTIONS

SCHEMA_VERSION = 2
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"
SYSTEM_KEYS = ("nr", "nt", "modulation", "n_pilots", "snr_convention", "snr_db", "channel")
MAX_STREAMS = 4096
DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int64": torch.int64, "int32": torch.int32}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
FINGERPRINT_VERSION = 1
MAX_FINGERPRINT = 65536  # numbers in a fingerprint
# architecture -> fingerprint(model, hyperparameters, system) -> list of floats; filled by each
# detector family when its FrameDetector class is defined (the leaf cannot import the families)
FINGERPRINTERS: dict[str, Callable] = {}


class BundleError(ValueError):
    """A bundle cannot be used; the message says why."""


@dataclass
class Bundle:
    """A validated bundle: its folder, manifest and tensors."""

    path: Path
    manifest: dict
    tensors: dict[str, torch.Tensor]

    @property
    def architecture(self) -> str:
        return self.manifest["architecture"]["name"]

    @property
    def hyperparameters(self) -> dict:
        return self.manifest["architecture"]["hyperparameters"]

    @property
    def system(self) -> dict:
        return self.manifest["system"]

    @property
    def sha256(self) -> str:
        return self.manifest["weights_sha256"]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_sha256(text) -> bool:
    """``text`` is a sha256 digest: 64 hexadecimal digits (either case)."""
    return isinstance(text, str) and bool(_SHA256.match(text.lower()))


# --------------------------------------------------------------------------- system section
def system_section(system: dict, where: str = "system") -> dict:
    """The validated system section with every key of :data:`SYSTEM_KEYS`.

    ``nr``, ``nt`` (ints in ``1..4096``) and ``modulation`` are required; ``n_pilots`` (int or
    ``None``), ``snr_convention`` (default ``project``), ``snr_db`` (number or list of numbers,
    default ``[]``) and ``channel`` (``{name, args}`` or ``None``) default. Unknown keys are
    refused. Raises :class:`BundleError`.
    """
    if not isinstance(system, dict):
        raise BundleError(f"{where} must be a JSON object, got {type(system).__name__}")
    unknown = sorted(set(system) - set(SYSTEM_KEYS))
    if unknown:
        raise BundleError(f"{where} has unknown keys {unknown}; it holds {list(SYSTEM_KEYS)}")
    for key in ("nr", "nt", "modulation"):
        if key not in system:
            raise BundleError(f"{where} has no {key!r}")
    out = {}
    for key in ("nr", "nt"):
        v = system[key]
        if not _is_int(v) or not 1 <= v <= MAX_STREAMS:
            raise BundleError(f"{where}: {key} must be an integer in 1..{MAX_STREAMS}, got {v!r}")
        out[key] = int(v)
    mod = system["modulation"]
    if not isinstance(mod, str) or mod.lower().replace("-", "") not in MODULATIONS:
        raise BundleError(f"{where}: modulation must be one of {MODULATIONS}, got {mod!r}")
    out["modulation"] = mod.lower().replace("-", "")
    n_p = system.get("n_pilots")
    if n_p is not None and (not _is_int(n_p) or not 1 <= n_p <= 1 << 20):
        raise BundleError(f"{where}: n_pilots must be a positive integer or null, got {n_p!r}")
    out["n_pilots"] = n_p
    conv = system.get("snr_convention", "project")
    if conv not in CONVENTIONS:
        raise BundleError(f"{where}: snr_convention must be one of {CONVENTIONS}, got {conv!r}")
    out["snr_convention"] = conv
    snr = system.get("snr_db", [])
    snr = [snr] if isinstance(snr, (int, float)) and not isinstance(snr, bool) else snr
    if not isinstance(snr, list) or not all(_is_number(v) and math.isfinite(v) for v in snr):
        raise BundleError(f"{where}: snr_db must be a number or a list of finite numbers, got {snr!r}")
    out["snr_db"] = [float(v) for v in snr]
    chan = system.get("channel")
    if chan is not None:
        if not (isinstance(chan, dict) and set(chan) <= {"name", "args"} and isinstance(chan.get("name"), str)
                and isinstance(chan.get("args", {}), dict)):
            raise BundleError(f"{where}: channel must be {{name, args}} or null, got {chan!r}")
        chan = {"name": chan["name"], "args": dict(chan.get("args", {}))}
    out["channel"] = chan
    return out


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# --------------------------------------------------------------------------- hyper-parameters
@dataclass(frozen=True)
class Param:
    """One hyper-parameter: ``kind`` (``int``, ``float``, ``bool``, ``str``, ``int_list``),
    inclusive bounds ``low``/``high`` (numbers; for ``int_list`` every entry), allowed
    ``choices``, the longest list ``max_len``, and whether ``None`` is allowed."""

    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    max_len: int = 16
    optional: bool = False

    def check(self, name: str, value):
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{name} is required")
        if self.kind == "int_list":
            if not isinstance(value, list) or not 1 <= len(value) <= self.max_len:
                raise ValueError(f"{name} must be a list of 1..{self.max_len} integers, got {value!r}")
            return [Param("int", self.low, self.high).check(f"{name}[{i}]", v) for i, v in enumerate(value)]
        ok = {"int": _is_int, "float": lambda v: _is_number(v) and math.isfinite(v), "bool": lambda v: isinstance(v, bool),
              "str": lambda v: isinstance(v, str)}[self.kind](value)
        if not ok:
            raise ValueError(f"{name} must be {self.kind}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{name} must be one of {list(self.choices)}, got {value!r}")
        if self.low is not None and not value >= self.low or self.high is not None and not value <= self.high:
            raise ValueError(f"{name} must lie in [{self.low}, {self.high}], got {value!r}")
        return float(value) if self.kind == "float" else value


@dataclass(frozen=True)
class ModelCodec:
    """How one architecture is stored.

    architecture : the manifest's ``architecture.name``
    label : how messages name such a model ("an SDNet")
    schema : every hyper-parameter with its type and bounds (unknown or missing ones are refused)
    hyperparameters : ``model -> dict`` (what :func:`save_model` writes)
    build : ``hp -> nn.Module`` with freshly initialised tensors of the right shapes
    check_system : optional ``(hp, system) -> None``, raising ``ValueError`` where the
        hyper-parameters contradict the system section (e.g. a model for another ``Nr``)
    max_parameters : more tensor elements than this is refused before anything is allocated
    """

    architecture: str
    label: str
    schema: dict
    hyperparameters: Callable
    build: Callable
    check_system: Callable | None = None
    max_parameters: int = 50_000_000

    def check(self, hp, where: str) -> dict:
        """Validated hyper-parameters; :class:`BundleError` otherwise."""
        if not isinstance(hp, dict):
            raise BundleError(f"{where}: hyper-parameters must be a JSON object, got {hp!r}")
        unknown = sorted(set(hp) - set(self.schema))
        if unknown:
            raise BundleError(f"{where}: unknown {self.architecture} hyper-parameters {unknown}")
        try:
            return {k: p.check(k, hp.get(k)) for k, p in self.schema.items()}
        except ValueError as e:
            raise BundleError(f"{where}: bad {self.architecture} hyper-parameters: {e}") from None

    def expected_tensors(self, hp: dict, where: str) -> dict[str, tuple[list[int], torch.dtype]]:
        """``{name: (shape, dtype)}`` of the module ``build(hp)`` would make, derived on the
        ``meta`` device (nothing allocated); refuses more than ``max_parameters`` elements."""
        try:
            with torch.device("meta"):
                module = self.build(hp)
        except (ValueError, TypeError, RuntimeError) as e:
            raise BundleError(f"{where}: hyper-parameters {hp} do not make {self.label} ({e})") from None
        shapes = {k: (list(v.shape), v.dtype) for k, v in module.state_dict().items()}
        total = sum(math.prod(s) for s, _ in shapes.values())
        if total > self.max_parameters:
            raise BundleError(f"{where}: the hyper-parameters ask for {total:,} tensor elements, more than the "
                              f"{self.max_parameters:,} a bundle may hold")
        return shapes


# --------------------------------------------------------------------------- save
def save_bundle(directory, tensors: dict[str, torch.Tensor], *, architecture: str, hyperparameters: dict,
                system: dict, training: dict | None = None, learngene: dict | None = None,
                fingerprint: list | None = None) -> Path:
    """Write a bundle folder (schema :data:`SCHEMA_VERSION`, ``system`` validated by
    :func:`system_section`) and return its path; overwrites a bundle there."""
    from safetensors.torch import save_file

    system = system_section(system)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clean = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    weights = directory / WEIGHTS
    save_file(clean, str(weights))
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "architecture": {"name": architecture, "hyperparameters": hyperparameters},
        "system": system,
        "training": training or {},
        "tensors": {k: {"shape": list(v.shape), "dtype": str(v.dtype).removeprefix("torch.")} for k, v in clean.items()},
        "weights_sha256": file_sha256(weights),
    }
    if learngene is not None:
        manifest["learngene"] = learngene
    if fingerprint is not None:
        manifest["fingerprint"] = {"version": FINGERPRINT_VERSION, "output": [float(v) for v in fingerprint]}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
    return directory


def save_model(model: torch.nn.Module, codec: ModelCodec, directory, *, system: dict, training: dict | None = None,
               learngene: dict | None = None, hyperparameters: dict | None = None,
               allow_nonfinite: bool = False) -> Path:
    """Write ``model`` (its state dict, CPU float32 as trained) as a bundle of ``codec``'s
    architecture; ``hyperparameters`` defaults to ``codec.hyperparameters(model)`` and is
    validated against the codec's schema before anything is written. A model with NaN/Inf
    weights (a diverged training) is refused (:class:`BundleError`), so no pipeline publishes
    one; ``allow_nonfinite`` writes it anyway (tests of the loader's refusal)."""
    if not allow_nonfinite:
        bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
        if bad:
            raise BundleError(f"{directory}: weights {bad[:3]} hold NaN/Inf (the training diverged?): not saved")
    hp = codec.check(hyperparameters if hyperparameters is not None else codec.hyperparameters(model),
                     f"{directory}")
    if codec.check_system is not None:
        try:
            codec.check_system(hp, system_section(system))
        except ValueError as e:
            raise BundleError(f"{directory}: {e}") from None
    fingerprint = None
    if codec.architecture in FINGERPRINTERS:
        try:
            fingerprint = FINGERPRINTERS[codec.architecture](model, hp, system_section(system))
            if not all(math.isfinite(v) for v in fingerprint):
                fingerprint = None  # non-finite weights: no fingerprint; load_bundle refuses the tensors anyway
        except Exception as e:  # noqa: BLE001 - a model that cannot run the probe is not a detector to ship
            raise BundleError(f"{directory}: the model fails on the fingerprint probe ({type(e).__name__}: {e})") from None
    return save_bundle(directory, model.state_dict(), architecture=codec.architecture, hyperparameters=hp,
                       system=system, training=training, learngene=learngene, fingerprint=fingerprint)


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------- load
_V1_CHANNELS = {"sed": "deepsic-sed", "3GPP 38.901 UMi NLoS tasks": "umi-task"}


def upgrade_manifest(manifest: dict) -> dict:
    """A version-1 manifest in the version-2 form: ``system`` keys ``n_rx``/``k_max`` become
    ``nr``/``nt``, a missing modulation is taken from the hyper-parameters, the channel name
    becomes ``{name, args}`` (other system keys, such as ``normalise``, the training channel's
    arguments and the UMi task a model was trained on become its args)."""
    m = dict(manifest)
    old = dict(m.get("system") or {})
    hp = (m.get("architecture") or {}).get("hyperparameters") or {}
    new = {"nr": old.pop("nr", old.pop("n_rx", None)), "nt": old.pop("nt", old.pop("k_max", None)),
           "modulation": old.pop("modulation", hp.get("modulation")), "n_pilots": old.pop("n_pilots", None),
           "snr_convention": old.pop("snr_convention", "project"), "snr_db": old.pop("snr_db", [])}
    chan = old.pop("channel", None)
    training = m.get("training") if isinstance(m.get("training"), dict) else {}
    args = dict(old)  # e.g. the learngene pipeline's "normalise"
    config = training.get("config") if isinstance(training.get("config"), dict) else {}
    if isinstance(config.get("channel_args"), dict):  # the DeepSIC pipeline's training channel arguments
        args.update(config["channel_args"])
    if "task" in training:  # a learngene-pipeline model trained on one UMi task
        args["task_id"] = training["task"]
    new["channel"] = None if chan is None else {"name": _V1_CHANNELS.get(chan, chan), "args": args}
    m["system"] = {k: v for k, v in new.items() if v is not None or k in ("n_pilots", "channel")}
    m["schema_version"] = SCHEMA_VERSION
    return m


def read_manifest(path) -> tuple[Path, dict]:
    """The bundle folder (``path`` or its ``manifest.json``) and its validated manifest
    (version 1 upgraded); :class:`BundleError` names the first malformed field."""
    path = Path(path)
    directory = path.parent if path.name == MANIFEST else path
    manifest_path = directory / MANIFEST
    if not directory.exists():
        raise BundleError(f"{directory}: no such bundle")
    if not manifest_path.is_file():
        raise BundleError(f"{directory}: no {MANIFEST} (a bundle is a folder with {MANIFEST} and {WEIGHTS})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except OSError as e:
        raise BundleError(f"{manifest_path}: cannot read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{manifest_path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: the manifest must be a JSON object")
    version = manifest.get("schema_version")
    if version == 1:
        manifest = upgrade_manifest(manifest)
    elif version != SCHEMA_VERSION:
        raise BundleError(f"{manifest_path}: schema_version {version!r}, this version reads 1 and {SCHEMA_VERSION}")
    for key in ("architecture", "system", "tensors", "weights_sha256"):
        if key not in manifest:
            raise BundleError(f"{manifest_path}: missing field {key!r}")
    arch = manifest["architecture"]
    if not (isinstance(arch, dict) and isinstance(arch.get("name"), str) and arch["name"]
            and isinstance(arch.get("hyperparameters", {}), dict)):
        raise BundleError(f"{manifest_path}: architecture must be {{name: string, hyperparameters: object}}")
    manifest["architecture"] = {"name": arch["name"], "hyperparameters": arch.get("hyperparameters", {})}
    manifest["system"] = system_section(manifest["system"], f"{manifest_path}: system")
    for key in ("training", "learngene"):
        if not isinstance(manifest.get(key, {}), dict):
            raise BundleError(f"{manifest_path}: {key} must be a JSON object")
    if not is_sha256(manifest["weights_sha256"]):
        raise BundleError(f"{manifest_path}: weights_sha256 must be 64 hex digits")
    if "fingerprint" in manifest:
        fp = manifest["fingerprint"]
        if not (isinstance(fp, dict) and fp.get("version") == FINGERPRINT_VERSION and isinstance(fp.get("output"), list)
                and 0 < len(fp["output"]) <= MAX_FINGERPRINT
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                        for v in fp["output"])):
            raise BundleError(f"{manifest_path}: fingerprint must be {{version: {FINGERPRINT_VERSION}, output: "
                              f"[1..{MAX_FINGERPRINT} finite numbers]}}")
    if "envelope" in manifest:
        try:
            manifest["envelope"] = check_envelope(manifest["envelope"], nt=manifest["system"]["nt"],
                                                  snr_convention=manifest["system"]["snr_convention"],
                                                  where=f"{manifest_path}: envelope")
        except EnvelopeError as e:
            raise BundleError(str(e)) from None
    tensors = manifest["tensors"]
    if not isinstance(tensors, dict):
        raise BundleError(f"{manifest_path}: tensors must be a JSON object")
    for name, decl in tensors.items():
        if not (isinstance(decl, dict) and isinstance(decl.get("shape"), list)
                and all(_is_int(d) and d >= 0 for d in decl["shape"]) and decl.get("dtype") in DTYPES):
            raise BundleError(f"{manifest_path}: tensor {name!r} must be {{shape: [non-negative ints], dtype: one of "
                              f"{sorted(DTYPES)}}}, got {decl!r}")
    return directory, manifest


def load_bundle(path, codec: ModelCodec | None = None) -> Bundle:
    """Read and validate a bundle (folder, or its ``manifest.json``); raises :class:`BundleError`.

    With a ``codec``, the architecture and hyper-parameters are checked and the tensors the
    hyper-parameters imply are compared with the manifest before the weights are read.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory, manifest = read_manifest(path)
    declared = manifest["tensors"]
    if codec is not None:
        where = str(directory)
        if manifest["architecture"]["name"] != codec.architecture:
            raise BundleError(f"{where}: architecture {manifest['architecture']['name']!r}, expected "
                              f"{codec.architecture!r}")
        hp = codec.check(manifest["architecture"]["hyperparameters"], where)
        manifest["architecture"]["hyperparameters"] = hp
        if codec.check_system is not None:
            try:
                codec.check_system(hp, manifest["system"])
            except ValueError as e:
                raise BundleError(f"{where}: {e}") from None
        expected = codec.expected_tensors(hp, where)
        if set(expected) != set(declared):
            missing, extra = sorted(set(expected) - set(declared)), sorted(set(declared) - set(expected))
            raise BundleError(f"{where}: tensors do not fit {codec.label} with {hp} (missing {missing}, "
                              f"unexpected {extra})")
        for name, (shape, dtype) in expected.items():
            if declared[name]["shape"] != shape:
                raise BundleError(f"{where}: tensor {name!r} has shape {declared[name]['shape']}, {codec.label} "
                                  f"with {hp} needs {shape}")
            if DTYPES[declared[name]["dtype"]] != dtype:
                raise BundleError(f"{where}: tensor {name!r} is declared {declared[name]['dtype']}, the model "
                                  f"needs {str(dtype).removeprefix('torch.')}")
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise BundleError(f"{directory}: no {WEIGHTS}")
    try:
        sha = file_sha256(weights)
    except OSError as e:
        raise BundleError(f"{weights}: cannot read ({e.strerror})") from None
    if sha != manifest["weights_sha256"]:
        raise BundleError(f"{weights}: sha256 {sha[:12]}... does not match the manifest's "
                          f"{str(manifest['weights_sha256'])[:12]}... (modified or truncated file)")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{weights}: not a readable safetensors file ({e})") from None
    if set(declared) != set(tensors):
        missing, extra = sorted(set(declared) - set(tensors)), sorted(set(tensors) - set(declared))
        raise BundleError(f"{weights}: tensors differ from the manifest (missing {missing}, unexpected {extra})")
    for name, t in tensors.items():
        if list(t.shape) != list(declared[name]["shape"]):
            raise BundleError(f"{weights}: tensor {name!r} has shape {list(t.shape)}, manifest says {declared[name]['shape']}")
        if t.dtype != DTYPES[declared[name]["dtype"]]:
            raise BundleError(f"{weights}: tensor {name!r} is {str(t.dtype).removeprefix('torch.')}, manifest says "
                              f"{declared[name]['dtype']}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise BundleError(f"{weights}: tensor {name!r} contains NaN or Inf")
    return Bundle(directory, manifest, tensors)


def load_model(path, codec: ModelCodec) -> tuple[torch.nn.Module, Bundle]:
    """The eval-mode module of a bundle of ``codec``'s architecture and the bundle itself
    (:func:`load_bundle` with the codec, then ``build`` and a strict state-dict load)."""
    bundle = load_bundle(path, codec)
    model = codec.build(bundle.hyperparameters)
    try:
        model.load_state_dict(bundle.tensors, strict=True)
    except RuntimeError as e:
        raise BundleError(f"{bundle.path}: tensors do not match {codec.label}: {e}") from None
    return model.eval(), bundle

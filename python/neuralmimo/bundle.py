"""Model bundles: the only thing that crosses from the lab to the receiver (DESIGN.md).

A bundle is a folder with ``weights.safetensors`` (tensors only: safetensors has no code path,
so loading never unpickles anything) and ``manifest.json``::

    {"schema_version": 1,
     "architecture": {"name": "sdnet", "hyperparameters": {...}},
     "system": {"nt": 8, "nr": 32, "modulation": "qpsk", "n_pilots": 16, "snr_db": [...]},
     "training": {...provenance: config, data, seed, epochs, metrics...},
     "learngene": {...source collective model, layer ids, strategy... (when it applies)},
     "tensors": {"name": {"shape": [...], "dtype": "float32"}, ...},
     "weights_sha256": "<sha256 of weights.safetensors>"}

:func:`load_bundle` checks the schema version, that the weights file is a readable safetensors
file whose sha256 matches the manifest, that its tensors are exactly the declared ones with the
declared shapes, and that no floating tensor holds NaN/Inf; anything else raises
:class:`BundleError` with a precise message.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

SCHEMA_VERSION = 1
WEIGHTS = "weights.safetensors"
MANIFEST = "manifest.json"


class BundleError(ValueError):
    """A bundle cannot be used; the message says why."""


@dataclass
class Bundle:
    path: Path
    manifest: dict
    tensors: dict[str, torch.Tensor]

    @property
    def architecture(self) -> str:
        return self.manifest["architecture"]["name"]

    @property
    def hyperparameters(self) -> dict:
        return self.manifest["architecture"].get("hyperparameters", {})

    @property
    def sha256(self) -> str:
        return self.manifest["weights_sha256"]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_bundle(directory, tensors: dict[str, torch.Tensor], *, architecture: str, hyperparameters: dict,
                system: dict, training: dict | None = None, learngene: dict | None = None) -> Path:
    """Write a bundle folder and return its path (overwrites an existing bundle there)."""
    from safetensors.torch import save_file

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
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, default=_json_default))
    return directory


def _json_default(o):
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def load_bundle(path) -> Bundle:
    """Read and validate a bundle (folder, or its ``manifest.json``); raises :class:`BundleError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    directory = path.parent if path.name == MANIFEST else path
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{directory}: no {MANIFEST} (a bundle is a folder with {MANIFEST} and {WEIGHTS})")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{manifest_path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: the manifest must be a JSON object")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(f"{manifest_path}: schema_version {version!r}, this version reads {SCHEMA_VERSION}")
    for key in ("architecture", "system", "tensors", "weights_sha256"):
        if key not in manifest:
            raise BundleError(f"{manifest_path}: missing field {key!r}")
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise BundleError(f"{directory}: no {WEIGHTS}")
    sha = file_sha256(weights)
    if sha != manifest["weights_sha256"]:
        raise BundleError(f"{weights}: sha256 {sha[:12]}... does not match the manifest's "
                          f"{str(manifest['weights_sha256'])[:12]}... (modified or truncated file)")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise BundleError(f"{weights}: not a readable safetensors file ({e})") from None
    declared = manifest["tensors"]
    if set(declared) != set(tensors):
        missing, extra = sorted(set(declared) - set(tensors)), sorted(set(tensors) - set(declared))
        raise BundleError(f"{weights}: tensors differ from the manifest (missing {missing}, unexpected {extra})")
    for name, t in tensors.items():
        if list(t.shape) != list(declared[name]["shape"]):
            raise BundleError(f"{weights}: tensor {name!r} has shape {list(t.shape)}, manifest says {declared[name]['shape']}")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise BundleError(f"{weights}: tensor {name!r} contains NaN or Inf")
    return Bundle(directory, manifest, tensors)


def load_module_state(bundle: Bundle, module: torch.nn.Module, what: str) -> None:
    """Load a bundle's tensors into ``module`` (strict), refusing with :class:`BundleError` if a
    tensor's shape or the set of names does not fit; ``what`` names the model in the message
    (e.g. ``"an SDNet with {...}"``)."""
    expected = module.state_dict()
    for name, t in bundle.tensors.items():
        if name in expected and expected[name].shape != t.shape:
            raise BundleError(f"{bundle.path}: tensor {name!r} has shape {list(t.shape)}, {what} needs "
                              f"{list(expected[name].shape)}")
    try:
        module.load_state_dict(bundle.tensors, strict=True)
    except RuntimeError as e:
        raise BundleError(f"{bundle.path}: tensors do not match {what}: {e}") from None

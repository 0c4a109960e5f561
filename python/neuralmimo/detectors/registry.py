"""The one table from bundle architecture names to what reads them.

:data:`REGISTRY` maps each detector architecture to its :class:`~.base.FrameDetector` class;
:data:`DATA_BUNDLES` maps the architectures of bundles that are valid data but not detectors
(a learngene, joint-DeepSIC module sets) to their codecs. Adding a detector family is one line
in :data:`REGISTRY`.

:func:`load_detector` is the one way a receiver gets a neural detector: it validates the bundle
(:func:`neuralmimo.bundle.load_model`: every manifest field, shapes derived from the
hyper-parameters before anything is allocated, sha256, safetensors parse, dtypes, NaN/Inf;
never unpickles), checks an expected sha256, builds the detector, checks the receiver's
:class:`~.base.SystemSpec` and runs one dummy frame. Every refusal is a
:class:`~neuralmimo.bundle.BundleError` whose message names the bundle and the reason.
"""

from __future__ import annotations

from pathlib import Path

from ..bundle import FINGERPRINT_VERSION, BundleError, ModelCodec, is_sha256, load_bundle, load_model, read_manifest
from ..envelope import OperatingEnvelope
from .base import FrameDetector, SystemSpec
from .deepsic import JOINT_CODEC, ComplexHyperDeepSICDetector, HyperDeepSICDetector
from .detnet import DetNetDetector, WeSNetDetector
from .mmnet import HyperMIMODetector
from .sdnet import SDNetDetector
from .sdnet.learngene import LEARNGENE_CODEC

REGISTRY: dict[str, type[FrameDetector]] = {
    "sdnet": SDNetDetector,
    "hypernet-deepsic": HyperDeepSICDetector,
    "hypernet-deepsic-complex": ComplexHyperDeepSICDetector,
    "hypermimo": HyperMIMODetector,
    "detnet": DetNetDetector,
    "wesnet": WeSNetDetector,
}

DATA_BUNDLES: dict[str, ModelCodec] = {
    "sdnet-learngene": LEARNGENE_CODEC,
    "deepsic-joint": JOINT_CODEC,
}


def codec_of(architecture: str) -> ModelCodec | None:
    """The codec of any known bundle architecture (detector or data), else ``None``."""
    if architecture in REGISTRY:
        return REGISTRY[architecture].codec
    return DATA_BUNDLES.get(architecture)


def load_detector(path, system: SystemSpec | None = None, sha256: str | None = None) -> FrameDetector:
    """Load, validate and build the detector of a bundle (see the module docstring).

    ``sha256``: the weights must have this digest (64 hex digits; anything else is refused).
    ``system``: the receiver the detector must fit (Nr, Nt or at most K_max, modulation).
    """
    if sha256 is not None and not is_sha256(sha256):
        raise BundleError(f"{path}: requested sha256 {sha256!r} is not 64 hex digits")
    directory, manifest = read_manifest(path)
    arch = manifest["architecture"]["name"]
    cls = REGISTRY.get(arch)
    if cls is None:
        what = f"architecture {arch!r} is data, not a detector" if arch in DATA_BUNDLES else \
            f"unknown architecture {arch!r}"
        raise BundleError(f"{directory}: {what}; this receiver knows {sorted(REGISTRY)}")
    if sha256 is not None and sha256.lower() != manifest["weights_sha256"]:
        raise BundleError(f"{directory}: weights sha256 {manifest['weights_sha256'][:12]}... is not the requested "
                          f"{sha256[:12]}...")
    model, bundle = load_model(directory, cls.codec)
    det = cls(model, bundle.hyperparameters, SystemSpec.of_bundle(bundle.system), bundle)
    if system is not None:
        det.check_system(system)
    det.smoke_test()
    det.fingerprint = det.check_fingerprint()
    return det


def write_fingerprint(path) -> Path:
    """Add the behavioural fingerprint to a detector bundle saved before fingerprints (its weights
    and sha256 unchanged); the bundle must load as it is. Returns the bundle's folder."""
    import json

    directory, manifest = read_manifest(path)
    cls = REGISTRY.get(manifest["architecture"]["name"])
    if cls is None:
        raise BundleError(f"{directory}: not a detector bundle")
    model, bundle = load_model(directory, cls.codec)
    raw = json.loads((directory / "manifest.json").read_text())
    raw["fingerprint"] = {"version": FINGERPRINT_VERSION,
                          "output": cls._fingerprint_of(model, bundle.hyperparameters, bundle.system)}
    (directory / "manifest.json").write_text(json.dumps(raw, indent=2))
    return directory


def inspect_bundle(path) -> dict:
    """A validated bundle's summary: architecture, its kind (``detector``, ``data`` or
    ``unknown``), hyper-parameters, system, sha256, parameter count, tensors, provenance."""
    _, manifest = read_manifest(path)
    arch = manifest["architecture"]["name"]
    b = load_bundle(path, codec_of(arch))
    n_params = sum(t.numel() for t in b.tensors.values())
    training = b.manifest.get("training", {})
    kind = "detector" if arch in REGISTRY else "data" if arch in DATA_BUNDLES else "unknown"
    return {"path": str(b.path), "architecture": b.architecture, "kind": kind, "hyperparameters": b.hyperparameters,
            "system": b.system, "sha256": b.sha256, "parameters": n_params,
            "tensors": {k: v["shape"] for k, v in b.manifest["tensors"].items()},
            "training": {k: v for k, v in training.items() if k not in ("history",)},
            "learngene": b.manifest.get("learngene"), "registered": arch in REGISTRY,
            "envelope": None if "envelope" not in b.manifest else OperatingEnvelope(b.manifest["envelope"], b.system["n_pilots"]).describe(),
            "schema_version": b.manifest["schema_version"]}


def verify_bundle(path, system: SystemSpec | None = None, sha256: str | None = None) -> str:
    """Check a bundle as a receiver would; returns a one-line verdict, raises
    :class:`~neuralmimo.bundle.BundleError` if it is refused. A data bundle (learngene,
    joint DeepSIC) is fully validated and reported as data, not a detector."""
    if sha256 is not None and not is_sha256(sha256):
        raise BundleError(f"{path}: requested sha256 {sha256!r} is not 64 hex digits")
    directory, manifest = read_manifest(path)
    arch = manifest["architecture"]["name"]
    if arch in DATA_BUNDLES:
        if sha256 is not None and sha256.lower() != manifest["weights_sha256"]:
            raise BundleError(f"{directory}: weights sha256 {manifest['weights_sha256'][:12]}... is not the requested "
                              f"{sha256[:12]}...")
        _, b = load_model(directory, DATA_BUNDLES[arch])
        return (f"ok: {arch} bundle, sha256 {b.sha256[:16]}...: valid data, not a detector "
                f"(used by the lab, not by the neural detector block)")
    det = load_detector(directory, system, sha256)
    d = det.describe()
    return f"ok: {d['architecture']} sha256 {d['sha256'][:16]}... Nr={d['nr']} Nt={d['nt']} {d['modulation']}"


def parse_bundle_entry(text: str) -> tuple[Path, dict]:
    """``PATH[@key=value...]`` (a bundle with run-time options, as on the command line) ->
    ``(path, {key: value})``; values become int, float or bool where they read as one."""
    path, *items = text.split("@")
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{text!r}: a run-time option is key=value, got {item!r}")
        options[key] = _scalar(value)
    return Path(path), options


def _scalar(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text

"""Neural detectors at run time: a registry from bundle architecture names to frame detectors.

:func:`load_detector` is the one way a receiver gets a neural detector: it reads and validates a
bundle (:func:`neuralmimo.bundle.load_bundle`: schema, sha256 of the weights, safetensors parse,
tensor names/shapes, NaN/Inf; never unpickles), checks an expected sha256 if one is given, looks
the architecture up in :data:`REGISTRY`, builds the module from the hyper-parameters (shape
mismatches refused) and checks the bundle's system configuration against the receiver's
(:class:`SystemSpec`). Every refusal is a :class:`~neuralmimo.bundle.BundleError` whose message
names the bundle and the exact reason.

A :class:`FrameDetector` detects whole frames: ``y (S, Nr, n)`` received data vectors, the
frames' channel estimates ``h (S, Nr, Nt)`` and noise variances ``(S,)`` (complex, per
antenna) -> ``(S, Nt, n)`` complex symbol estimates. Per-frame work (SDNet's constant rows,
hypernetwork-generated DeepSIC modules) is done once per frame; all of a frame's vectors go
through in one batched pass.

Other detector families plug in with :func:`register`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .bundle import Bundle, BundleError, load_bundle
from .constellation import Constellation


@dataclass(frozen=True)
class SystemSpec:
    """What the flowgraph provides: ``nr`` receive streams, ``nt`` transmit streams (users), modulation."""

    nr: int
    nt: int
    modulation: str


class FrameDetector:
    """Base class of run-time neural detectors (see the module docstring)."""

    architecture = ""

    def __init__(self, bundle: Bundle, nr: int, nt: int, modulation: str):
        self.bundle, self.nr, self.nt = bundle, nr, nt
        self.constellation = Constellation(modulation)

    @property
    def sha256(self) -> str:
        return self.bundle.sha256

    def check_system(self, system: SystemSpec) -> None:
        if system.modulation.lower().replace("-", "") != self.constellation.name:
            raise BundleError(f"{self.bundle.path}: model is for {self.constellation.name}, the flowgraph uses "
                              f"{system.modulation}")
        if system.nr != self.nr:
            raise BundleError(f"{self.bundle.path}: model is for Nr = {self.nr} receive streams, the flowgraph has "
                              f"{system.nr}")

    def detect(self, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor,
               n_users: list[int] | None = None) -> torch.Tensor:
        return self.detect_with_llr(y, h, noise_var, n_users, llr=False)[0]

    def detect_with_llr(self, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor,
                        n_users: list[int] | None = None, llr: bool = True):
        """``(x (S, Nt, n) complex, llr (S, n, Nt, bits_per_symbol) or None)``; positive LLRs
        favour bit 1, absent users' LLRs are 0."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"architecture": self.architecture, "sha256": self.sha256, "path": str(self.bundle.path),
                "nr": self.nr, "nt": self.nt, "modulation": self.constellation.name}


REGISTRY: dict[str, Callable[[Bundle], FrameDetector]] = {}


def register(name: str):
    """Class decorator: ``cls(bundle)`` builds a detector for bundles of architecture ``name``."""

    def deco(cls):
        cls.architecture = name
        REGISTRY[name] = cls
        return cls

    return deco


@register("sdnet")
class SDNetDetector(FrameDetector):
    """SDNet (learngene paper) through the frame-amortised kernel (:mod:`neuralmimo.sdnet_fast`):
    ZF per frame, constant rows per frame, variable rows per vector. ``Nt`` must equal the model's."""

    def __init__(self, bundle: Bundle):
        from .sdnet import sdnet_from_bundle
        from .sdnet_fast import SDNetKernel

        self.model = sdnet_from_bundle(bundle)
        modulation = bundle.manifest.get("system", {}).get("modulation")
        if modulation is None:
            raise BundleError(f"{bundle.path}: manifest system config has no 'modulation'")
        super().__init__(bundle, self.model.nr, self.model.nt, modulation)
        self.kernel = SDNetKernel(self.model)

    def check_system(self, system: SystemSpec) -> None:
        super().check_system(system)
        if system.nt != self.nt:
            raise BundleError(f"{self.bundle.path}: SDNet is for Nt = {self.nt} streams, the flowgraph has {system.nt}")

    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        """LLRs: max-log around SDNet's estimate with ZF's effective noise variance per stream (an
        approximation: SDNet's own error statistics are not Gaussian nor known per frame)."""
        from .sdnet_fast import sdnet_fast_detect

        if not llr:
            return sdnet_fast_detect(self.kernel, y, h, self.constellation), None
        x, zf_var = sdnet_fast_detect(self.kernel, y, h, self.constellation, noise_var, with_zf_var=True)
        return x, self.constellation.llr_maxlog(x.transpose(1, 2), zf_var.clamp(min=1e-12)[:, None, :])


@register("hypernet-deepsic")
class HyperDeepSICDetector(FrameDetector):
    """Modular-hypernetwork DeepSIC: per frame the hypernetwork writes the modules of the frame's
    ``K`` users from the (noise-normalised) channel estimate; all data vectors of the frame then
    run the ``Q`` iterations in one batched pass. ``K`` may change from frame to frame
    (``n_users``, default: every stream of the estimate); absent users' outputs are 0. Outputs
    are the MAP constellation points of the last iteration."""

    def __init__(self, bundle: Bundle):
        from .deepsic import hypernetwork_from_bundle

        self._setup(bundle, *hypernetwork_from_bundle(bundle))

    def _setup(self, bundle, hyper, iterations: int) -> None:
        self.hyper, self.iterations, self.spec = hyper, iterations, hyper.spec
        super().__init__(bundle, self.spec.n_rx, self.hyper.k_max, self.spec.modulation)

    @classmethod
    def from_model(cls, hyper, iterations: int) -> "HyperDeepSICDetector":
        """A detector around an in-memory hypernetwork (benchmarks, lab code); no bundle."""
        det = cls.__new__(cls)
        det._setup(None, hyper, iterations)
        return det

    def check_system(self, system: SystemSpec) -> None:
        super().check_system(system)
        if system.nt > self.hyper.k_max:
            raise BundleError(f"{self.bundle.path}: hypernetwork serves up to K_max = {self.hyper.k_max} users, the "
                              f"flowgraph has Nt = {system.nt}")

    @torch.no_grad()
    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        """LLRs: exact per-bit LLRs of the last iteration's posterior over the points."""
        from .deepsic import channel_features, deepsic_logits, noise_std_per_dim, rx_features

        s, _, n = y.shape
        nt = h.shape[-1]
        ks = [nt] * s if n_users is None else [int(k) for k in n_users]
        out = torch.zeros(s, nt, n, dtype=torch.complex64)
        llrs = torch.zeros(s, n, nt, self.constellation.bits_per_symbol) if llr else None
        std = noise_std_per_dim(torch.as_tensor(noise_var, dtype=torch.float32).reshape(s))
        pts = self.constellation.points
        for k in sorted(set(ks)):
            if not 1 <= k <= min(nt, self.hyper.k_max):
                raise ValueError(f"{k} active users: this receiver serves 1..{min(nt, self.hyper.k_max)}")
            sel = torch.tensor([i for i, kk in enumerate(ks) if kk == k])
            theta = self.hyper.generate(channel_features(h[sel][..., :k], self.spec, std[sel]))
            feats = rx_features(y[sel], self.spec, std[sel])
            logits = deepsic_logits(theta, feats, self.spec, self.iterations)[-1]  # (S_k, K, n, |S|)
            out[sel, :k] = pts[logits.argmax(-1)]
            if llrs is not None:
                bit_llr = self.constellation.llr_from_log_probs(torch.log_softmax(logits, -1))  # (S_k, K, n, B)
                llrs[sel, :, :k] = bit_llr.transpose(1, 2)
        return out, llrs


def load_detector(path, system: SystemSpec | None = None, sha256: str | None = None) -> FrameDetector:
    """Load, validate and build the detector of a bundle (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise BundleError(f"{path}: no such bundle")
    bundle = load_bundle(path)
    if sha256 is not None and sha256.lower() != bundle.sha256:
        raise BundleError(f"{bundle.path}: weights sha256 {bundle.sha256[:12]}... is not the requested "
                          f"{sha256[:12]}...")
    builder = REGISTRY.get(bundle.architecture)
    if builder is None:
        raise BundleError(f"{bundle.path}: unknown architecture {bundle.architecture!r}; this receiver knows "
                          f"{sorted(REGISTRY)}")
    det = builder(bundle)
    if system is not None:
        det.check_system(system)
    return det


def inspect_bundle(path) -> dict:
    """A bundle's manifest summary (validated): architecture, hyper-parameters, system, sha, tensors."""
    b = load_bundle(path)
    n_params = sum(t.numel() for t in b.tensors.values())
    training = b.manifest.get("training", {})
    return {"path": str(b.path), "architecture": b.architecture, "hyperparameters": b.hyperparameters,
            "system": b.manifest.get("system", {}), "sha256": b.sha256, "parameters": n_params,
            "tensors": {k: v["shape"] for k, v in b.manifest["tensors"].items()},
            "training": {k: v for k, v in training.items() if k not in ("history",)},
            "learngene": b.manifest.get("learngene"), "registered": b.architecture in REGISTRY}


__all__ = ["SystemSpec", "FrameDetector", "REGISTRY", "register", "load_detector", "inspect_bundle",
           "SDNetDetector", "HyperDeepSICDetector"]

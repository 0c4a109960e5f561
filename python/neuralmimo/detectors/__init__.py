"""Detectors: classical ones (:mod:`.classical`), the run-time interface of the learned ones
(:mod:`.base`), one folder per learned family (:mod:`.sdnet`, :mod:`.deepsic`) and the table from
bundle architectures to detectors (:mod:`.registry`).

The registry's names (``load_detector``, ``REGISTRY``, ...) are re-exported lazily, so that
importing one family (``neuralmimo.detectors.sdnet``) does not import the others.
"""

from .base import FrameDetector, SystemSpec
from .classical import ML_MAX_CANDIDATES, kbest_detect, linear_detect, ml_detect

_REGISTRY_NAMES = ("DATA_BUNDLES", "REGISTRY", "codec_of", "inspect_bundle", "load_detector", "parse_bundle_entry",
                   "verify_bundle")

__all__ = ["FrameDetector", "SystemSpec", "ML_MAX_CANDIDATES", "kbest_detect", "linear_detect", "ml_detect",
           *_REGISTRY_NAMES]


def __getattr__(name):
    if name in _REGISTRY_NAMES:
        from . import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

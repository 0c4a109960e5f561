"""MMNet, HyperMIMO and OAMPNet [HM]: ``model`` (the networks, the QR convention, eqs. (7)-(12)),
``train`` (HyperMIMO, per-channel MMNet and OAMPNet training), ``detector`` (the run-time
:class:`HyperMIMODetector`)."""

from .detector import HyperMIMODetector
from .model import HYPERMIMO_CODEC, HyperMIMO, MMNetPerChannel, OAMPNet, qr_positive

__all__ = ["HyperMIMODetector", "HYPERMIMO_CODEC", "HyperMIMO", "MMNetPerChannel", "OAMPNet", "qr_positive"]

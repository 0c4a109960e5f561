"""DetNet [DN] and WeSNet / R-WeSNet / L-WeSNet [WS]: ``model`` (the network, the weight-scaling
profiles, the regulariser, FLOP counts), ``train`` (eq. (20)-(22) training), ``detector`` (the
run-time :class:`DetNetDetector` with the ``keep``/``layers`` complexity dial)."""

from .detector import DetNetDetector, WeSNetDetector
from .model import DETNET_CODEC, WESNET_CODEC, DetNet, codec_for, kept_units, profile_coefficients

__all__ = ["DetNetDetector", "WeSNetDetector", "DETNET_CODEC", "WESNET_CODEC", "DetNet", "codec_for", "kept_units",
           "profile_coefficients"]

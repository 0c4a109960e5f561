"""SDNet [LG]: the CNN detector (:mod:`.model`), its frame-amortised inference (:mod:`.fast`),
learngene extraction and expansion (:mod:`.learngene`), training (:mod:`.train`) and the
run-time detector (:mod:`.detector`)."""

from .detector import SDNetDetector
from .model import SDNET_CODEC, SDNet, count_trainable, predict, sdnet_detect, sdnet_flops, sdnet_input

__all__ = ["SDNetDetector", "SDNET_CODEC", "SDNet", "count_trainable", "predict", "sdnet_detect", "sdnet_flops",
           "sdnet_input"]

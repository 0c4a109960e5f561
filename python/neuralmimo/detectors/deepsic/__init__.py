"""DeepSIC and the modular hypernetwork [MH]: modules, unrolled iterations and the hypernetwork
(:mod:`.model`), the front end and joint / online / hypernetwork training (:mod:`.train`), and
the run-time detector (:mod:`.detector`)."""

from .detector import HyperDeepSICDetector
from .model import HYPERNET_CODEC, JOINT_CODEC, JointModules, ModularHypernetwork, ModuleSpec

__all__ = ["HyperDeepSICDetector", "HYPERNET_CODEC", "JOINT_CODEC", "JointModules", "ModularHypernetwork", "ModuleSpec"]

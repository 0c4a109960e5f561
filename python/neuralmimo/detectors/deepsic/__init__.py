"""DeepSIC and the modular hypernetwork [MH]: modules, unrolled iterations and the hypernetwork
(:mod:`.model`), the front end and joint / online / hypernetwork training (:mod:`.train`), and
the run-time detectors (:mod:`.detector`); the complex-baseband variant
(:mod:`.complex`)."""

from .complex import COMPLEX_HYPERNET_CODEC, PhaseInvariantHypernetwork, SoftICModuleSpec
from .detector import ComplexHyperDeepSICDetector, HyperDeepSICDetector
from .model import HYPERNET_CODEC, JOINT_CODEC, JointModules, ModularHypernetwork, ModuleSpec

__all__ = ["ComplexHyperDeepSICDetector", "HyperDeepSICDetector", "COMPLEX_HYPERNET_CODEC", "HYPERNET_CODEC",
           "JOINT_CODEC", "JointModules", "ModularHypernetwork", "ModuleSpec", "PhaseInvariantHypernetwork",
           "SoftICModuleSpec"]

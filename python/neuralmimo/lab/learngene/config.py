"""The SDNet + learngene [LG] pipeline's configuration: the dataclasses its YAML files are read into
(:func:`neuralmimo.lab.runs.read_config`) and their cross-field rules (``configs/learngene/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ... import training
from ...channels.umi import UMiConfig
from ...detectors.sdnet.learngene import STRATEGIES
from ..runs import load_yaml, read_config

EMBED_BOTTOM_ALIAS = {"embed-bottom": "inherit-bottom"}


@dataclass
class DataConfig:
    ues_per_task: int = 10_000
    umi_seed: int = 2024           # seed of the tasks: UMi drops, or plane-wave geometries
    normalise: str = "ue"          # "ue": each channel to ||H||_F^2 = Nr Nt; "task": as cached
    family: str = "umi"            # "umi": 38.901 UMi tasks (Sionna); "plane-waves": fixed-geometry tasks
    spatial_consistency: bool = True  # UMi: each task one spatially consistent scene (False: a drop per UE)
    paths: int = 9                 # plane-wave family: fixed paths per task
    rho: float | None = None       # within-task diversity: rho*H0 + sqrt(1-rho^2)*H (channels.anchored)
    anchor: int = 0                # H0 = this training channel of each task
    collective_tasks: list = field(default_factory=lambda: list(range(50)))
    target_tasks: list = field(default_factory=lambda: list(range(50, 55)))
    snr_db: float = 25.0
    n_pilots: int = 16
    modulation: str = "qpsk"
    val_vectors_per_ue: int = 4
    test_vectors_per_ue: int = 50
    task_files: dict = field(default_factory=dict)  # {task id: channel mapping file} read instead of a UMi task


@dataclass
class CollectiveConfig:
    n_conv: int = 12
    epochs_per_task: int = 50
    lr: float = 1e-3
    batch_size: int = 500
    tau: float = 1e-4
    seed: int = 0


@dataclass
class IndividualConfig:
    n_conv: int = 8
    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 500
    lam: float = 1e-3
    schemes: list = field(default_factory=lambda: ["scratch", "transfer", *STRATEGIES])
    transfer_pretrain_epochs: int = 50
    seed: int = 1
    workers: int = 1                # parallel trainings (processes with 1 torch thread each)


@dataclass
class CompareConfig:
    snr_sweep: list = field(default_factory=lambda: [20.0, 22.5, 25.0, 27.5, 30.0])
    scalability_nt: int = 4         # Fig. 13: (Nt, Nr) = (4, 32) with the same learngene
    scalability_epochs: int = 100


@dataclass
class DiversityConfig:
    """``learngene diversity``: scratch SDNet (the individual model's size and optimiser) on one
    task per variant: the task mixed into its anchor at each ``rho``, and plane-wave tasks with
    each number of ``plane_wave_paths``."""
    task: int = 50
    rho: list = field(default_factory=lambda: [1.0, 0.99, 0.97, 0.9, 0.7, 0.0])
    plane_wave_paths: list = field(default_factory=lambda: [4, 9, 32])
    epochs: int = 200
    kbest_k: int = 32               # near-ML reference (K-best on the LS estimate)
    seed: int = 3


@dataclass
class LearngeneConfig:
    name: str = "run"  # the run folder out/learngene/<name> when a config names none
    data: DataConfig = field(default_factory=DataConfig)
    collective: CollectiveConfig = field(default_factory=CollectiveConfig)
    individual: IndividualConfig = field(default_factory=IndividualConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    cache_dir: str | None = None
    device: str = "cpu"   # cpu, cuda or cuda:N (docs/training.md); --device overrides

    @classmethod
    def from_dict(cls, d: dict) -> "LearngeneConfig":
        return read_config(cls, d, "learngene config")

    def check(self) -> None:
        training.device_name(self.device)

    @classmethod
    def load(cls, path) -> "LearngeneConfig":
        return cls.from_dict(load_yaml(path))

    def umi(self) -> UMiConfig:
        return UMiConfig(ues_per_task=self.data.ues_per_task, seed=self.data.umi_seed,
                         spatial_consistency=self.data.spatial_consistency)


TASK_FAMILIES = ("umi", "plane-waves")

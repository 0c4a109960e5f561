"""The HyperMIMO [HM] pipeline's configuration: the dataclasses its YAML files are read into
(:func:`neuralmimo.lab.runs.read_config`) and their cross-field rules (``configs/hypermimo/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ... import training
from ...channels import ChannelSpec, make_channel
from ...constellation import Constellation
from ...datasets import CSI_KINDS
from ...detectors.mmnet.model import HYPERMIMO_STARTS
from ..runs import load_yaml, read_config


@dataclass
class SystemConfig:
    nr: int = 12
    nu: int = 6
    modulation: str = "qpsk"
    angle_std_deg: float = 10.0
    spacing: float = 0.5
    n_pilots: int = 16
    drop_files: dict = field(default_factory=dict)   # {drop: channel mapping file}: that drop's channels from a file


@dataclass
class TrainingConfig:
    layers: int = 5
    hidden: int = 75
    steps: int = 10000
    steps_per_epoch: int = 250
    batch: int = 500
    vectors: int = 1
    snr_db: list = field(default_factory=lambda: [0.0, 10.0])
    lr: list = field(default_factory=lambda: [1e-3, 1e-4])
    csi: list = field(default_factory=lambda: ["perfect", "ls"])
    oampnet_iterations: int = 10
    oampnet_steps: int = 500
    seed: int = 1
    # beyond the paper: one HyperMIMO for every drop, trained on a fresh random drop per channel
    # (``across`` step), once per hypernetwork width listed here (empty: skip) and per input set
    # in ``across_inputs`` ("r": the paper's R_A and sigma; "r+spatial": also each user's spatial
    # correlation, see detectors/mmnet/model.py)
    across_hidden: list = field(default_factory=list)
    across_inputs: list = field(default_factory=lambda: ["r"])
    # MMNet's first estimate: "zero" (the paper's) or "lmmse" (beyond the paper: the shipped
    # bundles, whose zero start left an error floor above 19 dB; detectors/mmnet/model.py)
    start: str = "zero"


@dataclass
class EvaluationConfig:
    snr_db: list = field(default_factory=lambda: [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0])
    channels: int = 2000
    vectors: int = 50
    ml: bool = True
    mmnet_channels: int = 200
    mmnet_layers: int = 10
    mmnet_steps: int = 300
    mmnet_lr: float = 1e-2
    seed: int = 7


@dataclass
class MobilityConfig:
    snr_db: float = 8.0
    rotations_deg: list = field(default_factory=lambda: [0.0, 1.0, 2.0, 5.0, 10.0, 20.0])
    displacements_m: list = field(default_factory=lambda: [0.0, 5.0, 10.0, 25.0, 50.0, 100.0])
    distance_m: float = 250.0
    displacement_draws: int = 20
    channels: int = 500
    vectors: int = 20
    seed: int = 11


@dataclass
class HyperMIMOConfig:
    name: str = "hypermimo"
    drops: list = field(default_factory=lambda: list(range(10)))
    system: SystemConfig = field(default_factory=SystemConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    mobility: MobilityConfig | None = field(default_factory=MobilityConfig)
    threads: int = 2
    device: str = "cpu"   # cpu, cuda or cuda:N (docs/training.md); --device overrides

    @classmethod
    def from_dict(cls, d: dict) -> "HyperMIMOConfig":
        return read_config(cls, d, "HyperMIMO config")

    def check(self) -> None:
        training.device_name(self.device)
        if self.training.start not in HYPERMIMO_STARTS:
            raise ValueError(f"training.start must be one of {list(HYPERMIMO_STARTS)}, got {self.training.start!r}")
        bad = [c for c in self.training.csi if c not in CSI_KINDS]
        if bad:
            raise ValueError(f"training.csi: {bad} not in {list(CSI_KINDS)}")
        if not all(isinstance(k, int) and k >= 0 for k in self.drops) or not self.drops:
            raise ValueError(f"drops must be a non-empty list of drop numbers >= 0, got {self.drops}")
        if self.system.n_pilots < self.system.nu:
            raise ValueError(f"system.n_pilots must be >= nu = {self.system.nu}")

    @classmethod
    def load(cls, path) -> "HyperMIMOConfig":
        return cls.from_dict(load_yaml(path))

    @property
    def constellation(self) -> Constellation:
        return Constellation(self.system.modulation)

    def channel_spec(self, drop: int, **mobility) -> ChannelSpec:
        s = self.system
        if drop in s.drop_files:  # a recorded/ray-traced drop (docs/external-channels.md)
            if mobility:
                raise ValueError(f"drop {drop} is read from {s.drop_files[drop]}: mobility needs a local-scattering drop")
            return ChannelSpec("file", {"mapping": str(s.drop_files[drop])})
        return ChannelSpec("local-scattering", {"angle_std_deg": s.angle_std_deg, "spacing": s.spacing, "seed": drop,
                                                **mobility})

    def channel(self, drop: int, **mobility):
        return make_channel(self.channel_spec(drop, **mobility), self.system.nr, self.system.nu)

"""The DetNet and WeSNet [WS] pipeline's configuration: the dataclasses its YAML files are read into
(:func:`neuralmimo.lab.runs.read_config`) and their cross-field rules (``configs/wesnet/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ... import training
from ...channels import ChannelSpec, make_channel
from ...constellation import Constellation
from ...detectors.detnet.model import INITS, PROFILES, kept_units
from ..runs import load_yaml, read_config


@dataclass
class SystemConfig:
    nr: int = 60
    nt: int = 30
    modulation: str = "bpsk"
    channel: dict = field(default_factory=lambda: {"name": "iid-real", "args": {}})


@dataclass
class TrainingConfig:
    layers: int = 90
    hidden: int = 240
    batch: int = 5000
    steps: int = 25000
    steps_per_epoch: int = 250
    lr: float = 1e-3
    lr_end: float | None = None      # exponential decay to this rate over the steps (None: constant)
    keep_best: bool = False          # restore the epoch with the lowest validation BER at the end
    snr_db: list = field(default_factory=lambda: [8.0, 14.0])
    validation_snr_db: float = 11.0   # the learning curve: BER on fixed vectors at this SNR
    validation_vectors: int = 5000
    reg_start: int = 30
    init: str = "detnet"   # or "xavier" ([WS] Table III; saturates the soft sign, see DetNet.reset_parameters)
    seed: int = 1


@dataclass
class EvaluationConfig:
    snr_db: list = field(default_factory=lambda: [0.0, 2.0, 4.0, 6.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0])
    vectors: int = 50000
    chunk: int = 5000
    kbest: int = 16            # K-best near-ML (0: none)
    dial_model: str = "wesnet-hf"
    keeps: list = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    keep_snr_db: list = field(default_factory=lambda: [12.0, 14.0])
    depth_models: list = field(default_factory=lambda: ["r-wesnet-hf", "l-wesnet-hf-50"])
    depths: list = field(default_factory=lambda: [10, 20, 30, 40, 50, 60, 70, 80, 90])
    depth_snr_db: list = field(default_factory=lambda: [12.0, 14.0, 15.0])
    timing_frames: int = 8
    timing_vectors: int = 1024
    seed: int = 7


@dataclass
class ModelConfig:
    name: str
    profile: str = "none"
    keep: float = 1.0
    learnable: bool = False
    reg_lambda: float = 0.0
    steps: int | None = None  # default: training.steps


@dataclass
class WeSNetConfig:
    name: str = "wesnet"
    system: SystemConfig = field(default_factory=SystemConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    models: list[ModelConfig] = field(default_factory=list)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    threads: int = 2
    device: str = "cpu"   # cpu, cuda or cuda:N (docs/training.md); --device overrides

    @classmethod
    def from_dict(cls, d: dict) -> "WeSNetConfig":
        return read_config(cls, d, "WeSNet config")

    def check(self) -> None:
        training.device_name(self.device)
        names = [m.name for m in self.models]
        if not self.models or len(set(names)) != len(names):
            raise ValueError(f"models must be a non-empty list of distinct names, got {names}")
        for m in self.models:
            if m.profile not in PROFILES:
                raise ValueError(f"models {m.name}: profile must be one of {PROFILES}, got {m.profile!r}")
            kept_units(m.keep, self.training.hidden)
            if m.steps is not None and m.steps < 1:
                raise ValueError(f"models {m.name}: steps must be >= 1")
            if m.learnable and m.profile == "none":
                raise ValueError(f"models {m.name}: a learnable profile starts from linear or half-exp")
        ev = self.evaluation
        for ref in [ev.dial_model, *ev.depth_models]:
            if ref and ref not in names:
                raise ValueError(f"evaluation refers to model {ref!r}, which is not in models {names}")
        if self.training.init not in INITS:
            raise ValueError(f"training.init must be one of {INITS}, got {self.training.init!r}")
        if not 1 <= self.training.reg_start <= self.training.layers:
            raise ValueError(f"training.reg_start must lie in 1..{self.training.layers}")
        if self.system.modulation not in ("bpsk", "qpsk"):
            raise ValueError("system.modulation must be bpsk or qpsk")

    @classmethod
    def load(cls, path) -> "WeSNetConfig":
        return cls.from_dict(load_yaml(path))

    @property
    def constellation(self) -> Constellation:
        return Constellation(self.system.modulation)

    def channel(self):
        s = self.system
        return make_channel(ChannelSpec.parse(s.channel), s.nr, s.nt)

    def model(self, name: str) -> ModelConfig:
        return next(m for m in self.models if m.name == name)

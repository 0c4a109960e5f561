"""The DeepSIC [MH] pipeline's configuration: the dataclasses its YAML files are read into
(:func:`neuralmimo.lab.runs.read_config`) and their cross-field rules (``configs/deepsic/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ... import training
from ...channels import ChannelSpec, make_channel
from ...constellation import Constellation
from ...detectors.deepsic.complex import PhaseInvariantHypernetwork, SoftICModuleSpec
from ...detectors.deepsic.model import ModularHypernetwork, ModuleSpec
from ...snr import noise_variance
from ..runs import load_yaml, read_config

SNR_CONVENTIONS = ("deepsic", "hypermimo")


ARCHITECTURES = ("hypernet-deepsic", "hypernet-deepsic-complex")


@dataclass
class ReceiverConfig:
    architecture: str = "hypernet-deepsic"  # or hypernet-deepsic-complex (complex baseband, docs/deepsic/complex.md)
    n_rx: int = 12
    k_max: int = 12
    modulation: str = "bpsk"
    iterations: int = 3
    module_hidden: int = 16
    hyper_hidden: list = field(default_factory=lambda: [64, 32])
    real_channel: bool | None = None  # default: BPSK (the paper's receiver on real channels)

    def spec(self) -> ModuleSpec:
        """The modules of joint and online DeepSIC (and of the paper's hypernetwork)."""
        real = self.real_channel if self.real_channel is not None else self.modulation == "bpsk"
        return ModuleSpec(self.n_rx, self.modulation, real, self.module_hidden)

    def hypernetwork(self) -> ModularHypernetwork | PhaseInvariantHypernetwork:
        """A fresh hypernetwork of the configured architecture."""
        if self.architecture == "hypernet-deepsic-complex":
            return PhaseInvariantHypernetwork(SoftICModuleSpec(self.n_rx, self.modulation, hidden=self.module_hidden),
                                              self.k_max, tuple(self.hyper_hidden), self.iterations)
        return ModularHypernetwork(self.spec(), self.k_max, tuple(self.hyper_hidden), self.iterations)


@dataclass
class TrainingConfig:
    channel: dict = field(default_factory=lambda: {"name": "deepsic-sed", "args": {}})
    k_values: list | None = None       # default 2..k_max
    symbols_per_k: int = 100_000
    block_length: int = 1000
    n_pilots: int = 800
    snr_db: list = field(default_factory=lambda: [6.0, 14.0])
    hyper_epochs: int = 25
    hyper_lr: float = 5e-4
    hyper_batch_blocks: int = 32
    hyper_symbols_per_block: int = 250
    joint_epochs: int = 25
    joint_lr: float = 1e-3
    joint_batch: int = 1000
    seed: int = 100


ONLINE_STARTS = ("joint", "fresh")


@dataclass
class OnlineConfig:
    """Online DeepSIC ([MH] eq. (7)): ``steps`` Adam iterations on each block's pilots, from the
    previous block's modules. Where there are none -- the first block and every change of the
    user count -- ``start: joint`` begins from the joint model for that ``K`` (trained offline on
    the same data as the hypernetwork; without it the first block's SER was 7x MMSE's, issue 30),
    ``start: fresh`` from freshly initialised modules as in the paper; either way such a block
    gets ``cold_steps`` iterations."""

    steps: int = 100
    lr: float = 1e-3
    start: str = "joint"
    cold_steps: int = 300


@dataclass
class ScenarioConfig:
    name: str = "fixed_k"
    title: str = ""
    channel: dict = field(default_factory=lambda: {"name": "deepsic-sed", "args": {}})
    k_min: int = 8
    k_max: int = 8
    change_prob: float = 0.2
    snr_db: float | list = 10.0
    n_pilots: int | list = 800
    n_info: int = 15_200
    blocks: int = 100
    ml: bool = True
    ml_symbols: int | None = None       # ML on the first this many information symbols of a block
    seed: int = 0

    @property
    def sweep(self) -> tuple[str, list] | None:
        if isinstance(self.snr_db, list):
            return "snr_db", self.snr_db
        if isinstance(self.n_pilots, list):
            return "n_pilots", self.n_pilots
        return None


@dataclass
class DeepSICConfig:
    name: str = "deepsic"
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    scenarios: list[ScenarioConfig] = field(default_factory=list)
    threads: int = 2
    device: str = "cpu"   # cpu, cuda or cuda:N (docs/training.md); --device overrides
    # deepsic: the paper's (noise 10^(-SNR/10) per real dimension); hypermimo: per-user SNR,
    # noise 10^(-SNR/10) per complex dimension, the same for every K (users join and leave)
    snr_convention: str = "deepsic"

    @classmethod
    def from_dict(cls, d: dict) -> "DeepSICConfig":
        return read_config(cls, d, "DeepSIC config")

    def check(self) -> None:
        """Cross-field rules; channel names and arguments are refused here, before any run."""
        training.device_name(self.device)
        if self.receiver.architecture not in ARCHITECTURES:
            raise ValueError(f"receiver.architecture must be one of {ARCHITECTURES}, got {self.receiver.architecture!r}")
        if self.snr_convention not in SNR_CONVENTIONS:
            raise ValueError(f"snr_convention must be one of {SNR_CONVENTIONS}, got {self.snr_convention!r}")
        if self.online.start not in ONLINE_STARTS:
            raise ValueError(f"online.start must be one of {ONLINE_STARTS}, got {self.online.start!r}")
        if self.receiver.architecture == "hypernet-deepsic-complex" and self.spec.real_channel:
            raise ValueError("the complex-baseband hypernetwork needs a complex receiver (real_channel false)")
        train_channel = ChannelSpec.parse(self.training.channel)
        make_channel(train_channel, self.receiver.n_rx, self.receiver.k_max)
        for s in self.scenarios:
            sc_channel = ChannelSpec.parse(s.channel)
            if sc_channel.name != train_channel.name:
                raise ValueError(f"scenario {s.name} uses {sc_channel.name!r} but the receiver is trained on "
                                 f"{train_channel.name!r}")
            if not 1 <= s.k_min <= s.k_max <= self.receiver.k_max:
                raise ValueError(f"scenario {s.name}: need 1 <= k_min <= k_max <= receiver k_max")
            make_channel(sc_channel, self.receiver.n_rx, s.k_max)

    @classmethod
    def load(cls, path) -> "DeepSICConfig":
        return cls.from_dict(load_yaml(path))

    @property
    def k_values(self) -> list[int]:
        return list(self.training.k_values or range(2, self.receiver.k_max + 1))

    @property
    def spec(self) -> ModuleSpec:
        return self.receiver.spec()

    @property
    def constellation(self) -> Constellation:
        return Constellation(self.receiver.modulation)

    def noise_var(self, snr_db) -> torch.Tensor:
        """Complex noise variance per antenna for SNRs in the config's convention (float32 tensor)."""
        snr = torch.as_tensor(snr_db, dtype=torch.float64)
        p_ref = noise_variance(0.0, self.snr_convention, channel_energy=1.0, nr=1, nt=1)  # neither depends on H
        return (p_ref / 10.0 ** (snr / 10.0)).float()

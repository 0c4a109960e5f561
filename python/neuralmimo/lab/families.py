"""The one table of learned detector families: what the lab knows of each, in one row.

Adding a family = one ``detectors/<family>/`` folder, one line in
:data:`neuralmimo.detectors.registry.REGISTRY` (or ``DATA_BUNDLES``), one row here and its
pipeline module ``lab/<pipeline>.py`` with its config folder ``configs/<pipeline>/``
(``docs/architecture.md``). The command line (pipelines, ``bench training``), ``scale`` (training
under torchrun), ``bench neural`` and ``adapt`` iterate over :data:`FAMILIES`; none of them names a
family.

A pipeline module provides, by these names:

* the config class named in the row, with ``load(path)``, ``name``, ``device`` and ``threads``;
* ``STEPS``, ``STEP_HELP``, ``run_pipeline(cfg, run, steps, progress, resume, checkpoint_every)``;
* ``scale_training(length, seed, config) -> (model, run)``: the family's training at a config's
  size for ``length`` epochs or steps, ``run() -> (history, samples)``
  (:func:`neuralmimo.lab.scale.family_training`);
* ``training_samples(config) -> int``: the training samples (symbol vectors) a config trains on.

Entries (``"module:function"``, modules relative to ``neuralmimo.lab``) are imported only when
used, so reading the table imports no family.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[3] / "configs"


@dataclass(frozen=True)
class Family:
    """One learned detector family of the lab (module docstring)."""

    name: str                  # the family's name on the command line (bench training --family, scale)
    citation: str              # the paper's key ([LG], [MH], [HM], [WS])
    detectors: str             # its folder under neuralmimo/detectors/
    architectures: tuple[str, ...]  # the bundle architectures it writes (REGISTRY or DATA_BUNDLES)
    pipeline: str              # its lab pipeline module and command (configs/<pipeline>/)
    config_class: str          # the pipeline's config class
    summary: str               # the pipeline command's help line
    paper_config: str          # the paper-scale config, under configs/<pipeline>/
    bench_length: int          # epochs/steps of bench training's short run at the paper config's size
    scale_length: int          # epochs/steps of bench_scaling's default run
    neural_bench: str | None = None  # "bench:function(frames, frame_data, repeats, g) -> rows" for bench neural
    adapt: str | None = None   # "adapt:function(csi, base, out, **options)": re-train a bundle on a site's CSI
    adaptable: tuple[str, ...] = ()  # the architectures adapt takes

    def module(self):
        """The pipeline module ``neuralmimo.lab.<pipeline>``."""
        return importlib.import_module(f"{__package__}.{self.pipeline}")

    def config_type(self):
        return getattr(self.module(), self.config_class)

    def load_config(self, path):
        """The pipeline config read from ``path`` (``ValueError`` says what is wrong)."""
        return self.config_type().load(path)

    @property
    def quick_config(self) -> Path:
        return CONFIGS / self.pipeline / "quick.yaml"

    @property
    def paper_config_path(self) -> Path:
        return CONFIGS / self.pipeline / self.paper_config

    def entry(self, field: str):
        """The function an entry field (``neural_bench``, ``adapt``) names."""
        spec = getattr(self, field)
        if spec is None:
            raise ValueError(f"family {self.name} has no {field}")
        module, function = spec.split(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), function)


FAMILIES: tuple[Family, ...] = (
    Family("sdnet", "[LG]", "sdnet", ("sdnet", "sdnet-learngene"), "learngene", "LearngeneConfig",
           "SDNet + learngene pipeline [LG]: collective model, extraction, individual models, comparison (UMi "
           "tasks; generating them needs the lab environment)",
           "paper.yaml", bench_length=1, scale_length=1, neural_bench="bench:bench_sdnet"),
    Family("deepsic", "[MH]", "deepsic", ("hypernet-deepsic", "hypernet-deepsic-complex", "deepsic-joint"), "deepsic",
           "DeepSICConfig",
           "DeepSIC [MH]: joint, online and modular-hypernetwork receivers over T-block transmissions with "
           "per-user SNR profiles and users joining/leaving",
           "sed_n12.yaml", bench_length=1, scale_length=1, neural_bench="bench:bench_deepsic",
           adapt="adapt:adapt_deepsic", adaptable=("hypernet-deepsic", "hypernet-deepsic-complex")),
    Family("hypermimo", "[HM]", "mmnet", ("hypermimo",), "hypermimo", "HyperMIMOConfig",
           "HyperMIMO [HM]: a hypernetwork writing MMNet's weights per channel, against MMNet per channel, "
           "OAMPNet, LMMSE and exact ML on local-scattering drops; mobility",
           "paper.yaml", bench_length=100, scale_length=100, neural_bench="bench:bench_hypermimo",
           adapt="adapt:adapt_hypermimo", adaptable=("hypermimo",)),
    Family("wesnet", "[WS]", "detnet", ("detnet", "wesnet"), "wesnet", "WeSNetConfig",
           "DetNet and WeSNet [WS]: weight-scaling profiles, R-/L-WeSNet, the kept-fraction and depth dial, "
           "FLOPs; 30x60 BPSK against ZF, MMSE and K-best",
           "paper.yaml", bench_length=2, scale_length=60),
)

NAMES = tuple(f.name for f in FAMILIES)


def family(name: str) -> Family:
    """The family called ``name``; ``ValueError`` lists the names."""
    for f in FAMILIES:
        if f.name == name:
            return f
    raise ValueError(f"unknown family {name!r}; choose from {list(NAMES)}")


def by_pipeline(pipeline: str) -> Family:
    """The family whose pipeline command is ``pipeline``."""
    for f in FAMILIES:
        if f.pipeline == pipeline:
            return f
    raise ValueError(f"unknown pipeline {pipeline!r}; choose from {[f.pipeline for f in FAMILIES]}")


def by_architecture(architecture: str) -> Family | None:
    """The family whose bundles carry ``architecture`` (``None`` if no family writes it)."""
    return next((f for f in FAMILIES if architecture in f.architectures), None)


def adaptable_architectures() -> tuple[str, ...]:
    """Every architecture ``neuralmimo adapt`` re-trains."""
    return tuple(a for f in FAMILIES for a in f.adaptable)

"""DetNet and WeSNet / R-WeSNet / L-WeSNet on the 30 x 60 BPSK real channel, [WS] Sec. VI.

Run folder (``neuralmimo wesnet run --config C --out RUN``)::

    RUN/config.yaml
    RUN/train/<model>/          one bundle per trained variant (what the neural block loads)
    RUN/train/history.json      losses, training seconds, samples/s
    RUN/evaluate/ber.json       BER per SNR of every variant (at its trained kept fraction), ZF,
                                MMSE and K-best near-ML on the same vectors (Fig. 4/8)
    RUN/evaluate/dial.json      BER of the dial model at each kept fraction (Fig. 5) and of the
                                depth models at each depth (Fig. 6-7); time per vector
    RUN/report.md, results.json, ber_snr.png, ber_keep.png, ber_depth.png, flops_keep.png,
    training.png                tables next to the paper's numbers, FLOPs and parameters

Variants (``models`` in the config): ``profile`` none (DetNet), ``linear`` or ``half-exp``;
``keep`` the fraction kept in training (WeSNet-x %); ``learnable`` (L-WeSNet); ``reg_lambda`` > 0
(R-WeSNet, with ``reg_start``); ``steps`` overrides ``training.steps`` for one variant. SNRs in
the ``detnet`` convention. Every detector of one SNR point sees the same channels, symbols and
noise (one vector per channel, as DetNet's tests).


The package: :mod:`.config` (the YAML's dataclasses), :mod:`.steps` (the pipeline: training,
evaluation, :data:`PIPELINE`), :mod:`.report` (figures, tables, report.md). Every public name is
re-exported here."""
# ruff: noqa: F401
# (the imports below are re-exports: the package's public names)

from .config import EvaluationConfig, ModelConfig, SystemConfig, TrainingConfig, WeSNetConfig
from .report import DETNET_LOG, PAPER, complexity_table, plot_training, step_report
from .steps import (PIPELINE, STEP_HELP, STEPS, load_variant, run_pipeline, scale_training, step_evaluate, step_train,
                    training_samples)

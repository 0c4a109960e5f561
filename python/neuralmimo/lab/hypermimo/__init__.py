"""HyperMIMO against MMNet per channel, OAMPNet, LMMSE, ZF and exact ML, [HM] Sec. IV.

Run folder (``neuralmimo hypermimo run --config C --out RUN``)::

    RUN/config.yaml
    RUN/train/drop{d}-{csi}/        HyperMIMO bundle per user drop and CSI kind (what the block loads)
    RUN/train/drop{d}-oampnet.json  OAMPNet's 2T scalars per drop (plain numbers, no bundle needed)
    RUN/train/history.json          losses and training times
    RUN/evaluate/drop{d}.json       SER per SNR and method, per CSI kind; timing of weight
                                    generation vs per-channel MMNet training
    RUN/mobility/drop{d}.json       SER under rotation (Fig. 6a) and 2-D displacement (Fig. 6b)
    RUN/report.md, results.json     SNR at SER 1e-3 per drop and averaged, gains, paper side by side;
                                    ser_perfect.png, ser_ls.png, mobility_*.png

Channel: the local scattering model ([HM] eqs. (13)-(14)), ``Nr = 12`` antennas, ``Nu = 6`` QPSK
users, ``sigma_phi = 10 deg``, ``d = 0.5``; drop ``k`` is the channel argument ``seed = k`` and the
bundles record its angles. SNRs are in the ``hypermimo`` convention (``sigma^2 = 10^(-SNR/10)``,
unit-gain users; :mod:`neuralmimo.snr` says why). With ``csi: ls`` the receivers get the LS
estimate from ``n_pilots`` orthogonal pilots and the pilot-residual noise variance; with
``perfect``, the true ``H`` and ``sigma^2`` (the paper's assumption).

Every method of one (drop, CSI, SNR) point sees the same channels, symbols and noise. MMNet per
channel is the paper's upper baseline: trained for each channel at its SNR (``T = 10``), on a
subset of the channels (``mmnet_channels``) because it is expensive; its SER is reported next to
the other methods' SER *on the same subset*.


The package: :mod:`.config` (the YAML's dataclasses), :mod:`.steps` (the pipeline: training,
evaluation, :data:`PIPELINE`), :mod:`.report` (figures, tables, report.md). Every public name is
re-exported here."""
# ruff: noqa: F401
# (the imports below are re-exports: the package's public names)

from .config import EvaluationConfig, HyperMIMOConfig, MobilityConfig, SystemConfig, TrainingConfig
from .report import (DEVIATIONS, LABEL, METHODS, PAPER, STYLE, TARGET_SER, plot_curves, plot_mobility, plot_training,
                     step_report)
from .steps import (PIPELINE, STEP_HELP, STEPS, evaluate_point, load_oampnet, run_pipeline, scale_training,
                    step_across, step_evaluate, step_mobility, step_train, training_samples)

"""Joint, online and modular-hypernetwork DeepSIC over a ``T``-block transmission, [MH] Sec. IV.

Run folder (``neuralmimo deepsic run --config C --out RUN``)::

    RUN/config.yaml                 the configuration used
    RUN/train/hypernetwork/         hypernetwork + embeddings bundle (what the neural block loads)
    RUN/train/joint/                joint DeepSIC bundle: one module set per K
    RUN/train/history.json          training losses, training time
    RUN/scenarios/NAME/             metrics.json (SER per block and method) and a PNG per scenario
    RUN/report.md, RUN/results.json the SER table, runtime table (Table I) and complexity ratios

Channels are channel specs (``{name, args}``, :mod:`neuralmimo.channels.registry`). The paper's
receiver (BPSK, ``Re y``) works on real channels: a real-valued model (``deepsic-sed``, [MH]
Sec. IV-A) is used as it is, a complex one is made real the way the [MH] authors made COST2100
real (:func:`~neuralmimo.channels.beamformed_gains`); the ``time-varying`` model stands in for
COST2100, which is not available here. SNRs are in the ``deepsic`` convention (noise variance
``10^(-SNR/10)`` per real dimension, unit-gain diagonal / unit mean user gain).

Training data: blocks of ``block_length`` symbols (``n_pilots`` of them pilots for the LS
estimate) for every ``K`` in ``2..K_max``, from the training channel's independent draws
(:meth:`~neuralmimo.channels.ChannelModel.sample`); the nominal SNR of each block is uniform in
``snr_db``.

Every scenario transmits ``T`` blocks of ``n_pilots + n_info`` symbols over the channel's block
process, with ``K[t]`` users (:func:`~neuralmimo.channels.user_counts`); all receivers see the
same blocks. MMSE and exact ML use the LS estimate and the pilot-residual noise estimate, like
DeepSIC.


The package: :mod:`.config` (the YAML's dataclasses), :mod:`.steps` (the pipeline: training,
evaluation, :data:`PIPELINE`), :mod:`.report` (figures, tables, report.md). Every public name is
re-exported here."""
# ruff: noqa: F401
# (the imports below are re-exports: the package's public names)

from .config import (ARCHITECTURES, SNR_CONVENTIONS, DeepSICConfig, OnlineConfig, ReceiverConfig, ScenarioConfig,
                     TrainingConfig)
from .report import (LABEL, METHODS, SER_TARGET, STYLE, complexity, method_labels, plot_ser_vs_block, plot_sweep,
                     plot_training, snr_crossings, step_report)
from .steps import (HYPERNET_CODECS, PIPELINE, STEP_HELP, STEPS, Receivers, Transmission, load_receivers,
                    receiver_channel, run_pipeline, run_transmission, scale_training, step_evaluate, step_train,
                    training_blocks, training_samples)

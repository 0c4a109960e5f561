"""The learngene pipeline of the learngene/SDNet paper (Sec. IV-V), as four lab steps.

Each step writes into one run folder (``--out``), next to the steps before it::

    RUN/config.yaml                     the configuration used (all steps)
    RUN/baselines/                      ZF/MMSE on the target tasks before any training (Table I)
    RUN/collective/                     Nconv=12 model trained over the tasks in sequence,
                                        rho per task and layer (eq. 20), its bundle
    RUN/extract/                        the selected learngene bundle + one bundle per segment
    RUN/individual/task_NNN/SCHEME/     one individual model per scheme: bundle + history
    RUN/compare/                        report.md, figures (PNG) and results.json

Schemes: ``scratch``, ``transfer`` (pre-trained on one random collective task, fine-tuned) and
the six expansion strategies ``embed-top`` ... ``inherit-bottom`` (``embed-bottom`` and
``inherit-bottom`` are the same model; it is trained once, stored as ``inherit-bottom``).


The package: :mod:`.config` (the YAML's dataclasses), :mod:`.steps` (the pipeline: training,
evaluation, :data:`PIPELINE`), :mod:`.report` (figures, tables, report.md). Every public name is
re-exported here."""
# ruff: noqa: F401
# (the imports below are re-exports: the package's public names)

from .config import (EMBED_BOTTOM_ALIAS, TASK_FAMILIES, CollectiveConfig, CompareConfig, DataConfig, DiversityConfig,
                     IndividualConfig, LearngeneConfig)
from .report import (PAPER_TABLE_I, format_baselines, format_diversity, format_report, format_site, plot_convergence,
                     plot_diversity, plot_diversity_learning, plot_rho_heatmap, plot_site, plot_snr_sweep,
                     plot_strategy_bars)
from .steps import (PIPELINE, SITE_TASK, STEP_HELP, STEPS, TaskSplits, complexity_table, detector_errors,
                    diversity_variants, first_epoch_reaching, individual_dir, learning_trend, run_pipeline,
                    scale_training, step_baselines, step_collective, step_compare, step_diversity, step_extract,
                    step_individual, task_channel, train_diversity_variant, train_individual, train_site,
                    training_samples)

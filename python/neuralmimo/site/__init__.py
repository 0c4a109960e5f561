"""What a deployed receiver learns from its site: CSI logs of the estimates it saw (``csilog``),
the training-set channel statistics and the drift monitor with the detector's drift and
channel-family glue (``drift``: :class:`~neuralmimo.site.drift.DriftWatch`), and the background
re-trainer's state machine (``retrain``). No GNU Radio; the blocks ``csi_logger``,
``background_retrainer`` and ``neural_detector`` are thin adapters over these.
"""

"""Root-raised-cosine pulse shaping (transmit) and matched filtering (receive) for ``S`` streams."""

from __future__ import annotations

import numpy as np
from gnuradio import filter as gr_filter
from gnuradio import gr
from gnuradio.filter import firdes

from ._common import big_buffers


def rrc_taps(sps: int, rolloff: float, span: int) -> list[float]:
    """GNU Radio's ``firdes.root_raised_cosine`` with ``span * sps + 1`` taps, scaled to unit energy
    (then a symbol comes out of shaping + matched filtering with gain 1 and the noise keeps its
    variance: the per-symbol SNR is the channel's SNR setting). Equal to the core's
    ``neuralmimo.pulse.rrc_taps`` (tested)."""
    if sps < 2:
        raise ValueError(f"pulse shaping needs sps >= 2 samples per symbol, got {sps}")
    if not 0 < rolloff <= 1:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff}")
    if span < 2 or span % 2:
        raise ValueError(f"span must be an even number of symbols >= 2, got {span}")
    taps = np.asarray(firdes.root_raised_cosine(1.0, float(sps), 1.0, float(rolloff), int(span * sps + 1)))
    return (taps / np.sqrt(np.sum(taps ** 2))).tolist()


class rrc_pulse_shaper(gr.hier_block2):
    """``streams`` symbol streams in, the same streams at ``sps`` samples per symbol out: each
    interpolated by GNU Radio's ``interp_fir_filter_ccf`` with root-raised-cosine taps
    (:func:`rrc_taps`; roll-off ``rolloff``, ``span`` symbols). Tags move with the rate (a
    ``frame_start`` on symbol ``i`` lands on sample ``i * sps``); the pulse of symbol ``i`` peaks at
    sample ``i * sps + span * sps / 2``."""

    def __init__(self, streams: int = 2, sps: int = 4, rolloff: float = 0.35, span: int = 8):
        if streams < 1:
            raise ValueError(f"need streams >= 1, got {streams}")
        gr.hier_block2.__init__(self, "rrc_pulse_shaper", gr.io_signature(streams, streams, gr.sizeof_gr_complex),
                                gr.io_signature(streams, streams, gr.sizeof_gr_complex))
        self.taps = rrc_taps(sps, rolloff, span)
        self.sps, self.rolloff, self.span = int(sps), float(rolloff), int(span)
        self.filters = [gr_filter.interp_fir_filter_ccf(self.sps, self.taps) for _ in range(streams)]
        for k, f in enumerate(self.filters):
            self.connect((self, k), f, (self, k))


class rrc_matched_filter(gr.hier_block2):
    """``streams`` sample streams in and out, each filtered by GNU Radio's ``fir_filter_ccf`` with the
    root-raised-cosine taps of :func:`rrc_taps` (its own matched filter: the RRC is symmetric).
    After shaping and matched filtering, symbol ``i`` peaks at sample ``i * sps + span * sps``
    (the ``frame_sync`` block's default origin)."""

    def __init__(self, streams: int = 4, sps: int = 4, rolloff: float = 0.35, span: int = 8):
        if streams < 1:
            raise ValueError(f"need streams >= 1, got {streams}")
        gr.hier_block2.__init__(self, "rrc_matched_filter", gr.io_signature(streams, streams, gr.sizeof_gr_complex),
                                gr.io_signature(streams, streams, gr.sizeof_gr_complex))
        self.taps = rrc_taps(sps, rolloff, span)
        self.filters = [gr_filter.fir_filter_ccf(1, self.taps) for _ in range(streams)]
        for k, f in enumerate(self.filters):
            big_buffers(f)  # Frame Sync downstream costs ~0.1 ms per call: give it long pieces
            self.connect((self, k), f, (self, k))

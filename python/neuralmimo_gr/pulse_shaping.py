"""Root-raised-cosine pulse shaping (transmit) and matched filtering (receive) for ``S`` streams."""

from __future__ import annotations

import numpy as np
from gnuradio import filter as gr_filter
from gnuradio import gr
from gnuradio.filter import firdes

from neuralmimo.receiver.pulse import check_rrc

from ._common import big_buffers


def rrc_taps(sps: int, rolloff: float, span: int) -> list[float]:
    """GNU Radio's ``firdes.root_raised_cosine`` with ``span * sps + 1`` taps, scaled to unit energy
    (then a symbol comes out of shaping + matched filtering with gain 1 and the noise keeps its
    variance: the per-symbol SNR is the channel's SNR setting). Equal to the core's
    ``neuralmimo.receiver.pulse.rrc_taps`` (tested)."""
    check_rrc(sps, rolloff, span)
    taps = np.asarray(firdes.root_raised_cosine(1.0, float(sps), 1.0, float(rolloff), int(span * sps + 1)))
    return (taps / np.sqrt(np.sum(taps ** 2))).tolist()


class _rrc_bank(gr.hier_block2):
    """``streams`` streams in and out, each through its own FIR filter with the RRC taps."""

    def __init__(self, name: str, streams: int, sps: int, rolloff: float, span: int, make_filter):
        if streams < 1:
            raise ValueError(f"need streams >= 1, got {streams}")
        gr.hier_block2.__init__(self, name, gr.io_signature(streams, streams, gr.sizeof_gr_complex),
                                gr.io_signature(streams, streams, gr.sizeof_gr_complex))
        self.taps = rrc_taps(sps, rolloff, span)
        self.sps, self.rolloff, self.span = int(sps), float(rolloff), int(span)
        self.filters = [make_filter(self.taps) for _ in range(streams)]
        for k, f in enumerate(self.filters):
            self.connect((self, k), f, (self, k))


class rrc_pulse_shaper(_rrc_bank):
    """``streams`` symbol streams in, the same streams at ``sps`` samples per symbol out: each
    interpolated by GNU Radio's ``interp_fir_filter_ccf`` with root-raised-cosine taps
    (:func:`rrc_taps`; roll-off ``rolloff``, ``span`` symbols). Tags move with the rate (a
    ``frame_start`` on symbol ``i`` lands on sample ``i * sps``); the pulse of symbol ``i`` peaks at
    sample ``i * sps + span * sps / 2``."""

    def __init__(self, streams: int = 2, sps: int = 4, rolloff: float = 0.35, span: int = 8):
        _rrc_bank.__init__(self, "rrc_pulse_shaper", streams, sps, rolloff, span,
                           lambda taps: gr_filter.interp_fir_filter_ccf(int(sps), taps))


class rrc_matched_filter(_rrc_bank):
    """``streams`` sample streams in and out, each filtered by GNU Radio's ``fir_filter_ccf`` with the
    root-raised-cosine taps of :func:`rrc_taps` (its own matched filter: the RRC is symmetric).
    After shaping and matched filtering, symbol ``i`` peaks at sample ``i * sps + span * sps``
    (the ``frame_sync`` block's default origin). Long output buffers: Frame Sync downstream costs
    ~0.1 ms per call, so it is given long pieces."""

    def __init__(self, streams: int = 4, sps: int = 4, rolloff: float = 0.35, span: int = 8):
        def make(taps):
            f = gr_filter.fir_filter_ccf(1, taps)
            big_buffers(f)
            return f
        _rrc_bank.__init__(self, "rrc_matched_filter", streams, sps, rolloff, span, make)

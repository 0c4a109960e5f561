"""SigMF capture source: plays a multi-channel capture back into a receiver."""

from __future__ import annotations

import numpy as np
import pmt
from gnuradio import gr

from neuralmimo.receiver.capture import read_capture

from ._common import big_buffers
from .tags import RX_TIME, rx_time_pmt


class sigmf_source(gr.sync_block):
    """Plays a capture written by ``frame_recorder`` (a SigMF Collection, ``neuralmimo.receiver.capture``)
    as ``nr`` streams, with an ``rx_time`` tag at the start of every capture segment (time =
    ``core:global_index`` / sample rate), as ``uhd_usrp_source`` gave them live: Frame Sync sees the
    same samples and the same overflows. Ends after the last sample. ``nr`` must equal the
    capture's channel count (``ValueError`` otherwise); :attr:`info` holds its ``neuralmimo`` fields.
    """

    def __init__(self, path: str = "", nr: int = 4):
        # an empty path (a block just placed in GRC) plays nothing; a bad capture is refused
        self.capture = read_capture(path) if path else None  # CaptureError (ValueError) with the reason
        if self.capture is not None and self.capture.n_rx != int(nr):
            raise ValueError(f"{path} has {self.capture.n_rx} channels, the block is set to {nr}")
        gr.sync_block.__init__(self, name="sigmf_source", in_sig=None, out_sig=[np.complex64] * int(nr))
        self.info = self.capture.info if self.capture is not None else {}
        self.samp_rate = self.capture.samp_rate if self.capture is not None else 1.0
        self._tags = {start: gidx for start, gidx, _ in self.capture.segments} if self.capture is not None else {}
        self.set_tag_propagation_policy(gr.TPP_DONT)
        big_buffers(self)

    def work(self, input_items, output_items):
        pos = self.nitems_written(0)
        total = self.capture.samples.shape[1] if self.capture is not None else 0
        if pos >= total:
            return -1
        n = min(len(output_items[0]), total - pos)
        for k, out in enumerate(output_items):
            out[:n] = self.capture.samples[k, pos:pos + n]
        for start, gidx in self._tags.items():
            if pos <= start < pos + n:
                secs = gidx / self.samp_rate
                value = rx_time_pmt(secs)
                for k in range(len(output_items)):
                    self.add_item_tag(k, start, pmt.intern(RX_TIME), value)
        return n

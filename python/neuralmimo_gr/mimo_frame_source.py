"""MIMO frame source: ``Nt`` streams of frames = ``Np`` orthogonal pilots + ``Nd`` data vectors."""

from __future__ import annotations

import numpy as np
import pmt
import torch
from gnuradio import gr

from neuralmimo.constellation import Constellation
from neuralmimo.frames import FrameLayout, frame_data_indices

from ._common import FRAME_START, FailureLog, big_buffers, guarded_work


class mimo_frame_source(gr.basic_block):
    """Transmit side of the receiver contract.

    Outputs ``nt`` complex streams (one per transmit antenna/user). Each frame is ``n_pilots``
    pilot vectors (rows of a DFT matrix, ``X_p X_p^H = Np I``) followed by ``n_data`` data
    vectors; every output carries a ``frame_start`` tag (value: frame number) at each frame's
    first sample.

    Data symbols are either random, regenerated per frame from ``(seed, frame number)`` (so an
    :class:`error_rate_probe` with the same seed knows what was sent), or taken from a ``uint8``
    input stream of constellation indices in time order (vector 0's ``nt`` symbols, then vector
    1's, ...; ``nt * n_data`` indices per frame; indices ``>= M`` are reduced modulo ``M`` and
    logged).

    ``n_frames = 0`` streams forever; otherwise the source stops after that many frames.
    """

    def __init__(self, nt: int = 2, n_pilots: int = 16, n_data: int = 256, modulation: str = "qpsk",
                 data_from_input: bool = False, seed: int = 0, n_frames: int = 0, first_frame: int = 0):
        self.layout = FrameLayout(int(nt), int(n_pilots), int(n_data))  # ValueError on a bad layout
        self.constellation = Constellation(modulation)
        if n_frames < 0:
            raise ValueError(f"n_frames must be >= 0 (0 = endless), got {n_frames}")
        self.data_from_input = bool(data_from_input)
        gr.basic_block.__init__(self, name="mimo_frame_source",
                                in_sig=[np.uint8] if self.data_from_input else None,
                                out_sig=[np.complex64] * self.layout.nt)
        self.seed, self.n_frames, self.next_frame = int(seed), int(n_frames), int(first_frame)
        self.frames_sent = 0
        self.set_output_multiple(self.layout.length)
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)
        big_buffers(self, 4 * self.layout.length)

    def forecast(self, noutput_items, ninputs):
        per_frame = self.layout.nt * self.layout.n_data
        return [(noutput_items // self.layout.length) * per_frame] * ninputs

    @guarded_work("consume")
    def general_work(self, input_items, output_items):
        lay = self.layout
        n = len(output_items[0]) // lay.length
        if self.data_from_input:
            n = min(n, len(input_items[0]) // (lay.nt * lay.n_data))
        if self.n_frames:
            remaining = self.n_frames - self.frames_sent
            if remaining <= 0:
                return -1  # WORK_DONE: a finite flowgraph ends here
            n = min(n, remaining)
        if n <= 0:
            return 0
        numbers = list(range(self.next_frame, self.next_frame + n))
        if self.data_from_input:
            raw = torch.from_numpy(np.array(input_items[0][: n * lay.nt * lay.n_data], dtype=np.int64))
            m = self.constellation.num_points
            if bool((raw >= m).any()):
                self.failures.report("index-range", f"{self.name()}: input symbol indices >= {m} for "
                                     f"{self.constellation.name}; reduced modulo {m}")
                raw = raw % m
            idx = raw.reshape(n, lay.n_data, lay.nt).transpose(1, 2)
            self.consume(0, n * lay.nt * lay.n_data)
        else:
            idx = frame_data_indices(self.constellation, lay, self.seed, numbers)
        frames = lay.assemble(self.constellation.symbols(idx))  # (n, Nt, L)
        block = frames.transpose(0, 1).reshape(lay.nt, n * lay.length).numpy()
        key = pmt.intern(FRAME_START)
        for k, out in enumerate(output_items):
            out[: n * lay.length] = block[k]
            base = self.nitems_written(k)
            for i, number in enumerate(numbers):
                self.add_item_tag(k, base + i * lay.length, key, pmt.from_long(number))
        self.next_frame += n
        self.frames_sent += n
        return n * lay.length

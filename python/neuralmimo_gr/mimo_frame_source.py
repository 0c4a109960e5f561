"""MIMO frame source: ``Nt`` streams of frames = ``Np`` orthogonal pilots + ``Nd`` data vectors."""

from __future__ import annotations

import numpy as np
import pmt
import torch
from gnuradio import gr

from neuralmimo.constellation import Constellation
from neuralmimo.receiver.frames import FrameLayout, frame_data_indices
from neuralmimo.receiver.preamble import Preamble
from neuralmimo.receiver.tracking import air_length, insert_tracking, tracking_count

from ._common import FailureLog, big_buffers, guarded_work
from .tags import FRAME_START


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

    ``preamble_period > 0`` puts a synchronisation preamble (``neuralmimo.receiver.preamble``: two periods
    of a Zadoff-Chu sequence of that length, one cyclic shift per stream) in front of every frame,
    for a receiver that finds frames itself (``frame_sync``, over the air); the ``frame_start``
    tag then sits on the preamble's first symbol, and a finite run ends with one more preamble,
    which confirms the last frame's end to the receiver, and as many zero symbols (the filters'
    tails). ``coarse_period > 0`` makes it a version-2 preamble (a short repeated part in front,
    for CFOs up to ``1 / (2 coarse_period)`` of the symbol rate; 4 gives 12.5 %).

    ``pilot_spacing > 0`` puts a tracking pilot (a known vector) after every ``pilot_spacing`` data
    vectors (``neuralmimo.receiver.tracking``): ``frame_sync(pilot_spacing=...)`` anchors its
    phase tracker there and removes them. Needs a preamble.
    """

    def __init__(self, nt: int = 2, n_pilots: int = 16, n_data: int = 256, modulation: str = "qpsk",
                 data_from_input: bool = False, seed: int = 0, n_frames: int = 0, first_frame: int = 0,
                 preamble_period: int = 0, coarse_period: int = 0, pilot_spacing: int = 0):
        self.layout = FrameLayout(int(nt), int(n_pilots), int(n_data))  # ValueError on a bad layout
        if preamble_period < 0:
            raise ValueError(f"preamble_period must be >= 0 (0: no preamble), got {preamble_period}")
        if (pilot_spacing or coarse_period) and not preamble_period:
            raise ValueError("tracking pilots and a coarse preamble part need a preamble (preamble_period > 0): "
                             "frame_sync removes them")
        tracking_count(self.layout.n_data, int(pilot_spacing))  # validates it
        self.pilot_spacing = int(pilot_spacing)
        self.preamble = Preamble(int(nt), int(preamble_period), coarse_period=int(coarse_period)) if preamble_period else None
        self._preamble = (self.preamble.symbols().astype(np.complex64) if self.preamble is not None
                          else np.zeros((int(nt), 0), np.complex64))
        self.frame_length = self._preamble.shape[1] + air_length(self.layout, self.pilot_spacing)
        self._closing = np.concatenate([self._preamble, np.zeros_like(self._preamble)], axis=1)
        self._closed = self.preamble is None
        self.constellation = Constellation(modulation)
        if n_frames < 0:
            raise ValueError(f"n_frames must be >= 0 (0 = endless), got {n_frames}")
        self.data_from_input = bool(data_from_input)
        gr.basic_block.__init__(self, name="mimo_frame_source",
                                in_sig=[np.uint8] if self.data_from_input else None,
                                out_sig=[np.complex64] * self.layout.nt)
        self.seed, self.n_frames, self.next_frame = int(seed), int(n_frames), int(first_frame)
        self.frames_sent = 0
        self.set_output_multiple(self.frame_length)
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)
        big_buffers(self, 4 * self.frame_length)

    def forecast(self, noutput_items, ninputs):
        per_frame = self.layout.nt * self.layout.n_data
        return [(noutput_items // self.frame_length) * per_frame] * ninputs

    @guarded_work("consume")
    def general_work(self, input_items, output_items):
        lay = self.layout
        L = self.frame_length
        n = len(output_items[0]) // L
        if self.data_from_input:
            n = min(n, len(input_items[0]) // (lay.nt * lay.n_data))
        if self.n_frames:
            remaining = self.n_frames - self.frames_sent
            if remaining <= 0:
                if not self._closed and len(output_items[0]) >= self._closing.shape[1]:
                    for k, out in enumerate(output_items):  # the closing preamble and the tails
                        out[: self._closing.shape[1]] = self._closing[k]
                    self._closed = True
                    return self._closing.shape[1]
                return -1 if self._closed else 0  # WORK_DONE: a finite flowgraph ends here
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
        frames = lay.assemble(self.constellation.symbols(idx)).numpy()  # (n, Nt, Np + Nd)
        if self.pilot_spacing:
            frames = np.concatenate([frames[..., :lay.n_pilots],
                                     insert_tracking(frames[..., lay.n_pilots:], lay, self.pilot_spacing)], axis=2)
        if self.preamble is not None:
            frames = np.concatenate([np.broadcast_to(self._preamble, (n, *self._preamble.shape)), frames], axis=2)
        block = frames.transpose(1, 0, 2).reshape(lay.nt, n * L)
        key = pmt.intern(FRAME_START)
        for k, out in enumerate(output_items):
            out[: n * L] = block[k]
            base = self.nitems_written(k)
            for i, number in enumerate(numbers):
                self.add_item_tag(k, base + i * L, key, pmt.from_long(number))
        self.next_frame += n
        self.frames_sent += n
        return n * L

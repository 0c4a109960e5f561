"""Fault injection for tests and the soak: what a radio front end or a transport does to sample
streams (lost and inserted samples, dropped and repeated stretches, NaN bursts;
:class:`fault_injector`) and absurd side information (:class:`tag_corruptor`), applied at exact
offsets or frames so that a test knows the ground truth."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import pmt
import torch
from gnuradio import gr

from .._common import FailureLog, guarded_work
from ..tags import CSI, FRAME_START, NOISE_VAR, RX_TIME, csi_to_pmt, rx_time_pmt, tag_int

FAULT_KINDS = ("delete", "insert", "nan", "repeat", "bad-time")


@dataclass(frozen=True)
class Fault:
    """``kind`` applied at input sample ``offset`` (absolute) over ``count`` samples:

    * ``delete``: the ``count`` samples from ``offset`` are lost (their tags too), as in a USRP
      overflow (``stamped``: followed by an ``rx_time`` tag, as UHD does; unstamped: a silent
      slip);
    * ``insert``: ``count`` zero samples are inserted before ``offset``;
    * ``nan``: the ``count`` samples from ``offset`` become NaN (tags kept);
    * ``repeat``: the ``count`` samples from ``offset`` are sent twice, tags included (a
      transport that retransmits a stretch, e.g. a repeated frame);
    * ``bad-time``: a malformed ``rx_time`` tag (NaN fraction) on the sample at ``offset``; the
      samples are untouched (a receiver must ignore it and lose nothing).
    """

    offset: int
    kind: str
    count: int
    stamped: bool = True  # a delete is followed by an rx_time tag (when the injector has a samp_rate)

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if self.offset < 0 or self.count < 1:
            raise ValueError(f"fault needs offset >= 0 and count >= 1, got {self.offset}, {self.count}")


class fault_injector(gr.basic_block):
    """``n_streams`` complex streams in and out, with ``faults`` (:class:`Fault`, or ``(offset,
    kind, count)`` tuples) applied to all streams at once. Tags of input 0 go to every output
    at their moved offsets.

    With ``samp_rate`` > 0 it also stamps ``rx_time`` tags like ``uhd_usrp_source``: at the first
    output sample and at the first sample after each ``delete``, with the time the sample was
    received at (input offset / samp_rate), so a receiver can count the lost samples.

    :attr:`applied` lists each fault when done, with ``out_offset``: where it shows in the output.
    """

    def __init__(self, n_streams: int, faults=(), samp_rate: float = 0.0):
        if n_streams < 1:
            raise ValueError(f"need n_streams >= 1, got {n_streams}")
        gr.basic_block.__init__(self, name="fault_injector", in_sig=[np.complex64] * n_streams,
                                out_sig=[np.complex64] * n_streams)
        self.n = int(n_streams)
        self._faults = deque(sorted((f if isinstance(f, Fault) else Fault(*f) for f in faults),
                                    key=lambda f: f.offset))
        for a, b in zip(list(self._faults), list(self._faults)[1:]):
            if b.offset < a.offset + (a.count if a.kind != "insert" else 0):
                raise ValueError(f"faults overlap: {a} and {b}")
        self.samp_rate = float(samp_rate)
        self.applied: list[dict] = []
        self._stamp_next = self.samp_rate > 0  # an rx_time tag on the next output sample
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)

    def forecast(self, noutput_items, ninputs):
        return [noutput_items] * ninputs

    def _copy(self, ins, outs, tags, r0: int, w0: int, i: int, o: int, count: int) -> None:
        for a, b in zip(ins, outs):
            b[o:o + count] = a[i:i + count]
        for t in tags:
            if i <= t.offset - r0 < i + count:
                for k in range(self.n):
                    self.add_item_tag(k, w0 + o + (t.offset - r0 - i), t.key, t.value)
        if self._stamp_next and count:
            value = rx_time_pmt((r0 + i) / self.samp_rate)
            for k in range(self.n):
                self.add_item_tag(k, w0 + o, pmt.intern(RX_TIME), value)
            self._stamp_next = False

    @guarded_work("consume")
    def general_work(self, input_items, output_items):
        n_in, n_out = min(len(x) for x in input_items), len(output_items[0])
        r0, w0 = self.nitems_read(0), self.nitems_written(0)
        tags = self.get_tags_in_window(0, 0, n_in)
        i = o = 0
        while True:
            fault = self._faults[0] if self._faults else None
            limit = n_in if fault is None else min(n_in, fault.offset - r0)
            take = max(0, min(limit - i, n_out - o))
            self._copy(input_items, output_items, tags, r0, w0, i, o, take)
            i, o = i + take, o + take
            if fault is None or i < fault.offset - r0:
                break  # input used up or output full before the next fault
            c = fault.count
            at = w0 + o
            if fault.kind == "delete":
                if i + c > n_in:
                    break
                i += c
                self._stamp_next = self.samp_rate > 0 and fault.stamped
            elif fault.kind == "insert":
                if o + c > n_out:
                    break
                for b in output_items:
                    b[o:o + c] = 0
                o += c
            elif fault.kind == "nan":
                if i + c > n_in or o + c > n_out:
                    break
                self._copy(input_items, output_items, tags, r0, w0, i, o, c)
                for b in output_items:
                    b[o:o + c] = np.nan
                i, o = i + c, o + c
            elif fault.kind == "bad-time":
                if o >= n_out or i >= n_in:
                    break
                value = pmt.make_tuple(pmt.from_uint64(int(r0 + i) // max(1, int(self.samp_rate or 1))),
                                       pmt.from_double(float("nan")))
                for k in range(self.n):
                    self.add_item_tag(k, at, pmt.intern(RX_TIME), value)
            else:  # repeat
                if i + c > n_in or o + 2 * c > n_out:
                    break
                self._copy(input_items, output_items, tags, r0, w0, i, o, c)
                self._copy(input_items, output_items, tags, r0, w0, i, o + c, c)
                i, o = i + c, o + 2 * c
            self._faults.popleft()
            self.applied.append({"offset": fault.offset, "kind": fault.kind, "count": c, "out_offset": at})
        for k in range(self.n):
            self.consume(k, i)
        return o


class tag_corruptor(gr.sync_block):
    """``n_streams`` complex streams passed through unchanged, with the side information of
    chosen frames made absurd: for each frame number in ``frames`` (read from the ``frame_start``
    tags) its ``csi`` tag becomes all zeros (even positions of the sorted list) or its
    ``noise_var`` tag 1e30 (odd positions). Every other tag is passed on as it is.
    :attr:`corrupted` lists the frame numbers done."""

    def __init__(self, n_streams: int, nr: int, nt: int, frames=()):
        gr.sync_block.__init__(self, name="tag_corruptor", in_sig=[np.complex64] * n_streams,
                               out_sig=[np.complex64] * n_streams)
        self.n = int(n_streams)
        order = sorted(set(int(f) for f in frames))
        self._how = {f: ("csi" if i % 2 == 0 else "noise_var") for i, f in enumerate(order)}
        self._zero_csi = csi_to_pmt(torch.zeros(nr, nt, dtype=torch.complex64))
        self.corrupted: list[int] = []
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)

    @guarded_work("zeros")
    def work(self, input_items, output_items):
        n = len(output_items[0])
        for a, b in zip(input_items, output_items):
            b[:] = a[:n]
        tags = self.get_tags_in_window(0, 0, n)
        numbers = {t.offset: tag_int(t.value) for t in tags if pmt.symbol_to_string(t.key) == FRAME_START}
        for t in tags:
            key, value = pmt.symbol_to_string(t.key), t.value
            how = self._how.get(numbers.get(t.offset))
            if how == key == CSI:
                value = self._zero_csi
            elif how == key == NOISE_VAR:
                value = pmt.from_double(1e30)
            if value is not t.value:
                self.corrupted.append(numbers[t.offset])
            for k in range(self.n):
                self.add_item_tag(k, t.offset, t.key, value)
        return n

"""Radio impairments for loopback simulation: ``S`` streams in, ``S`` streams out, like a receiver."""

from __future__ import annotations

import threading

import numpy as np
import pmt
from gnuradio import gr

from neuralmimo.channels.impairments import PARAMS, RadioImpairments, check_stream_cfo
from neuralmimo.params import Param

from ._common import FailureLog, big_buffers, guarded_work
from .tags import RX_TIME, rx_time_pmt

SAMP_RATE = Param(float, 0, 1e12, lo_open=True, unit="Hz")
PENDING_LIMIT = 1 << 18  # output samples held before input is no longer taken (backpressure)


class radio_impairments(gr.basic_block):
    """Everything a radio adds, per ``neuralmimo.channels.impairments.RadioImpairments``: integer
    and fractional ``delay`` (samples), sample-rate offset ``sro_ppm``, common ``cfo`` and per-stream
    ``stream_cfo`` (cycles per sample; one value, or one per stream), Wiener ``phase_noise`` (rad^2
    per sample), a random constant ``lo_phase`` per stream, ``gain_imbalance_db``, white receiver
    noise ``noise_var`` and overflows (``drop_rate`` per sample, ``drop_length`` samples
    ``(min, max)``). Seeded by ``seed``; every setting can be changed while running (``set_*``).

    Like ``uhd_usrp_source``, the outputs carry an ``rx_time`` tag (whole s, fractional s, from the
    device's sample counter at ``samp_rate``) on the first sample and on the first sample after
    every overflow; tags from upstream (the transmitter's ``frame_start``) are not passed on: a
    receiver has to find the frames itself.

    On the transmit side (before the MIMO channel, at the symbol rate) with only ``stream_cfo``
    set, it models the separate oscillators of the users of a multi-user uplink.
    """

    def __init__(self, streams: int = 4, samp_rate: float = 1e6, delay: float = 0.0, sro_ppm: float = 0.0,
                 cfo: float = 0.0, stream_cfo=0.0, phase_noise: float = 0.0, lo_phase: bool = False,
                 gain_imbalance_db: float = 0.0, noise_var: float = 0.0, drop_rate: float = 0.0,
                 drop_length=(1, 4096), seed: int = 0):
        self.streams = Param(int, 1, 1024).check(streams, "streams")
        self.samp_rate = SAMP_RATE.check(samp_rate, "samp_rate")
        self.process = RadioImpairments(self.streams, seed=seed, delay=delay, sro_ppm=sro_ppm, cfo=cfo,
                                        stream_cfo=check_stream_cfo(stream_cfo, self.streams), phase_noise=phase_noise,
                                        lo_phase=lo_phase, gain_imbalance_db=gain_imbalance_db,
                                        drop_rate=drop_rate, drop_length=drop_length, noise_var=noise_var)
        gr.basic_block.__init__(self, name="radio_impairments", in_sig=[np.complex64] * self.streams,
                                out_sig=[np.complex64] * self.streams)
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)
        self._lock = threading.Lock()
        self._pending = np.zeros((self.streams, 0), np.complex64)
        self._pending_tags: list[tuple[int, int]] = [(0, 0)]  # (output offset, device sample) of rx_time tags
        self._lost = 0
        self._produced = 0  # output samples produced so far (written or pending)
        big_buffers(self)

    # ----------------------------------------------------------------- runtime control (GRC callbacks)
    def _set(self, name: str, value) -> None:
        """A callback: the value checked against the same declaration as the constructor's
        (``neuralmimo.channels.impairments.PARAMS``); a bad one is logged and ignored."""
        try:
            v = PARAMS[name].check(value, name)
        except ValueError as exc:
            self.logger.error(f"set_{name} refused: {exc}; keeping {getattr(self.process, name)}")
            return
        with self._lock:
            setattr(self.process, name, v)

    def set_delay(self, v): self._set("delay", v)
    def set_sro_ppm(self, v): self._set("sro_ppm", v)
    def set_cfo(self, v): self._set("cfo", v)
    def set_phase_noise(self, v): self._set("phase_noise", v)
    def set_gain_imbalance_db(self, v): self._set("gain_imbalance_db", v)
    def set_noise_var(self, v): self._set("noise_var", v)
    def set_drop_rate(self, v): self._set("drop_rate", v)

    def set_lo_phase(self, v) -> None:
        with self._lock:
            self.process.lo_phase = bool(v)

    def set_stream_cfo(self, value) -> None:
        try:
            v = check_stream_cfo(value, self.streams)
        except ValueError as exc:
            self.logger.error(f"set_stream_cfo refused: {exc}")
            return
        with self._lock:
            self.process.stream_cfo = v

    def lost(self) -> int:
        """Samples lost in overflows so far."""
        return self.process.lost

    # ----------------------------------------------------------------- streaming
    def forecast(self, noutput_items, ninputs):
        return [0 if self._pending.shape[1] else noutput_items] * ninputs

    @guarded_work("consume")
    def general_work(self, input_items, output_items):
        n_in = min(len(x) for x in input_items)
        if n_in and self._pending.shape[1] < PENDING_LIMIT:
            x = np.stack([np.asarray(a[:n_in]) for a in input_items])
            with self._lock:
                y, gaps = self.process.process(x)
            for o, lost in gaps:
                self._lost += lost
                self._pending_tags.append((self._produced + o, self._produced + o + self._lost))
            self._produced += y.shape[1]
            self._pending = np.concatenate([self._pending, y], axis=1) if self._pending.shape[1] else y
            for i in range(self.streams):
                self.consume(i, n_in)
        n = min(len(output_items[0]), self._pending.shape[1])
        if n == 0:
            return 0
        for k, out in enumerate(output_items):
            out[:n] = self._pending[k, :n]
        w0 = self.nitems_written(0)
        keep = []
        for offset, device in self._pending_tags:
            if offset < w0 + n:
                secs = device / self.samp_rate
                value = rx_time_pmt(secs)
                for k in range(self.streams):
                    self.add_item_tag(k, offset, pmt.intern(RX_TIME), value)
            else:
                keep.append((offset, device))
        self._pending_tags = keep
        self._pending = self._pending[:, n:]
        return n

"""Frame recorder: ``Nr`` receive streams to a SigMF Collection (``neuralmimo.receiver.capture``)."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pmt
from gnuradio import gr

from neuralmimo.receiver.capture import CaptureWriter
from neuralmimo.receiver.alignment import timeline_position
from neuralmimo.receiver.frames import FrameLayout
from neuralmimo.receiver.preamble import Preamble
from neuralmimo.receiver.tracking import air_length

from ._common import DiskWriter, FailureLog, guarded_stop, guarded_work, tags_by_key
from .tags import RX_TIME, rx_time_value


class frame_recorder(gr.sync_block):
    """Records ``nr`` streams (what ``uhd_usrp_source`` gives, or a loopback's Radio Impairments) as
    a SigMF Collection ``folder/name.sigmf-collection``: one ``cf32_le`` Recording per channel, the
    frame layout, modulation, seed, pulse and SNR convention in the ``neuralmimo`` extension
    namespace, ``core:global_index``/``core:datetime`` per contiguous stretch from ``rx_time`` tags
    (a new capture segment after every overflow), and one annotation per frame from Frame Sync's
    ``sync`` messages (message input ``annotations``). ``folder`` empty: records nothing.

    ``recording`` (callback ``set_recording``) pauses and resumes; ``max_samples`` per channel
    bounds the disk use (0: unbounded). The metadata are written when the flowgraph stops.
    A folder that cannot be written (removed, read-only, full) stops the recording (logged once,
    counted as ``write-failed``; what was written stays readable); the stream is never stopped.
    A malformed ``rx_time`` tag (NaN, a fraction outside [0, 1)) is ignored (``bad-rx-time``).
    """

    def __init__(self, nr: int = 4, folder: str = "", name: str = "capture", samp_rate: float = 1e6,
                 center_freq: float = 0.0, nt: int = 2, n_pilots: int = 16, n_data: int = 256, modulation: str = "qpsk",
                 preamble_period: int = 16, seed: int = 0, sps: int = 4, rolloff: float = 0.35, span: int = 8,
                 snr_convention: str = "project", snr_db: float = float("nan"), max_samples: int = 0,
                 recording: bool = True, coarse_period: int = 0, pilot_spacing: int = 0):
        gr.sync_block.__init__(self, name="frame_recorder", in_sig=[np.complex64] * int(nr), out_sig=None)
        self.nr, self.samp_rate = int(nr), float(samp_rate)
        self.failures = FailureLog(self.logger)
        self._lock = threading.Lock()
        self._recording = bool(recording)
        preamble = Preamble(int(nt), int(preamble_period), coarse_period=int(coarse_period))
        layout = FrameLayout(int(nt), int(n_pilots), int(n_data))
        self.frame_samples = (preamble.length + air_length(layout, int(pilot_spacing))) * int(sps)
        self._half_filter = int(span) * int(sps) // 2  # Frame Sync's timing is after the matched filter
        info = dict(nt=int(nt), n_pilots=int(n_pilots), n_data=int(n_data), modulation=str(modulation),
                    preamble_period=int(preamble_period), seed=int(seed), sps=int(sps), rolloff=float(rolloff),
                    span=int(span), snr_convention=str(snr_convention))
        if math.isfinite(float(snr_db)):
            info["snr_db"] = float(snr_db)
        if coarse_period or pilot_spacing:  # version 1.1 of the extension; absent: a version-1 frame
            info.update(coarse_period=int(coarse_period), pilot_spacing=int(pilot_spacing))
        self.writer = (CaptureWriter(Path(folder), name, self.nr, self.samp_rate, info, center_freq, int(max_samples))
                       if folder else None)  # ValueError (CaptureError) on a bad field
        self._stretches: list[tuple[int, int]] = []  # (stream offset, file index) where written stretches begin
        self._time_ref = None
        self._lost = 0
        self._need_segment = True
        self._annotated: set = set()
        self._disk = DiskWriter(self, retry=False)
        self.message_port_register_in(pmt.intern("annotations"))
        self.set_msg_handler(pmt.intern("annotations"), self._on_sync)

    def set_recording(self, on) -> None:
        with self._lock:
            if bool(on) and not self._recording:
                self._need_segment = True
            self._recording = bool(on)

    def problems(self) -> dict:
        return dict(self.failures.counts)

    def path(self) -> str:
        return "" if self.writer is None else str(self.writer.folder / f"{self.writer.name}.sigmf-collection")

    def _on_sync(self, msg) -> None:
        try:
            d = pmt.to_python(msg)
        except (TypeError, ValueError):
            d = None
        self.annotate_frames([d])

    def annotate_frames(self, frames: list) -> None:
        """Annotations from Frame Sync's sync dicts (``frame``, ``timing``, ``cfo_hz``, ``metric``,
        ``correlation``). GNU Radio stops handling a sink's messages when its stream ends, so the
        frames found in the last moments of a finite run may come too late for the message port:
        a program can pass ``frame_sync.history()`` here after the run (``neuralmimo loopback
        --record`` does) and the metadata are rewritten."""
        for d in frames:
            try:
                self._annotate(d)
            except (KeyError, TypeError, ValueError):
                self.failures.report("bad-annotation", f"{self.name()}: annotation {d!r} is not a frame_sync dict")
        with self._lock:
            if self.writer is not None and self.writer.closed:
                self._disk.call(self.writer.close, always=True)

    def _annotate(self, d: dict) -> None:
        timing, number = float(d["timing"]), int(d["frame"])
        with self._lock:
            if self.writer is None:
                return
            offset = int(math.floor(timing)) - self._half_filter
            for start, file_start in reversed(self._stretches):
                if offset >= start:
                    fields = {"neuralmimo:frame": number, "neuralmimo:cfo_hz": float(d.get("cfo_hz", 0.0)),
                              "neuralmimo:sync_metric": float(d.get("metric", 0.0)),
                              "neuralmimo:correlation": float(d.get("correlation", 0.0))}
                    if (number, file_start + offset - start) not in self._annotated:
                        self._annotated.add((number, file_start + offset - start))
                        self.writer.annotate(file_start + offset - start, self.frame_samples, f"frame {number}", fields)
                    return

    @guarded_work("sink")
    def work(self, input_items, output_items):
        n = len(input_items[0])
        if self.writer is None or n == 0 or self._disk.stopped:
            return n
        r0 = self.nitems_read(0)
        cuts = [(0, None)]
        for t in tags_by_key(self, 0, n, RX_TIME):
            stamp = rx_time_value(t.value)
            if stamp is not None:
                cuts.append((t.offset - r0, stamp))
            else:
                self.failures.report("bad-rx-time", f"{self.name()}: rx_time tag {t.value} at sample {t.offset} is "
                                     "not (uint64 seconds, fraction in [0, 1)): ignored")
        cuts.append((n, None))
        x = np.stack([np.asarray(a[:n]) for a in input_items])
        with self._lock:
            for (a, stamp), (b, _) in zip(cuts[:-1], cuts[1:]):
                if stamp is not None:
                    if self._time_ref is None:
                        self._time_ref = (r0 + a, stamp)
                    else:
                        self._lost = timeline_position(*self._time_ref, stamp, self.samp_rate) - (r0 + a)
                    self._need_segment = True
                if b <= a or not self._recording:
                    continue
                if self._need_segment:
                    device = r0 + a + self._lost
                    secs = None if self._time_ref is None else device / self.samp_rate + \
                        (self._time_ref[1][0] + self._time_ref[1][1]) - self._time_ref[0] / self.samp_rate
                    self.writer.segment(device, secs)
                    self._stretches.append((r0 + a, self.writer.written))
                    self._need_segment = False
                written = self._disk.call(self.writer.write, x[:, a:b])
                if written is None:
                    return n
                if written < b - a:
                    self.failures.report("max-samples", f"{self.name()}: max_samples reached: recording stopped")
        return n

    @guarded_stop
    def stop(self) -> bool:
        with self._lock:
            if self.writer is not None and not self.writer.closed:
                path = self._disk.call(self.writer.close, lost="the capture's metadata are missing;", always=True)
                if path is not None:
                    self.logger.info(f"capture written: {path} ({self.writer.written} samples per channel)")
        return True

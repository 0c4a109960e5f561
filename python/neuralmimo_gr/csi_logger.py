"""CSI logger: every frame's channel and noise-variance estimate to a CSI log (``neuralmimo.site.csilog``)."""

from __future__ import annotations

import threading

import numpy as np
import pmt
from gnuradio import gr

from neuralmimo.site.csilog import CSILogWriter

from ._common import DiskWriter, FailureLog, guarded_stop, guarded_work
from .tags import CSI, CSI_STALE, FRAME_START, NOISE_VAR, pmt_to_csi, tag_float, tag_int


class csi_logger(gr.sync_block):
    """Sink of a receiver's ``Nr`` streams after the *LS Channel Estimator* (or Frame Sync + the
    estimator): the ``csi``/``noise_var`` tags of every frame go to a CSI log folder, numbered by
    the last ``frame_start`` tag before them. This is what a site's receiver saw, for re-training
    on the site's own channels (``{name: file, args: {mapping: FOLDER}}``) and for watching its
    statistics drift.

    Frames whose estimate is refused -- a malformed, non-finite or all-zero ``csi``, a negative or
    non-finite ``noise_var``, or a frame tagged ``csi_stale`` -- are not logged (one message per
    kind, counted in ``problems()``). A folder that cannot be written (removed, read-only, full) is
reported once and counted (``write-failed``); the frames are held (a few chunks) and written
when it can be written again; the stream is never stopped. ``max_bytes`` bounds the disk use (the oldest chunks go
    first; 0: unbounded); ``recording`` (callback ``set_recording``) pauses and resumes. The last
    partial chunk is written when the flowgraph stops.
    """

    def __init__(self, nr: int = 4, nt: int = 2, folder: str = "", chunk_frames: int = 1024, max_bytes: int = 0,
                 recording: bool = True, description: str = ""):
        gr.sync_block.__init__(self, name="csi_logger", in_sig=[np.complex64] * int(nr), out_sig=None)
        self.nr, self.nt = int(nr), int(nt)
        self.failures = FailureLog(self.logger)
        self._lock = threading.Lock()
        self._recording = bool(recording)
        self.writer = (CSILogWriter(folder, self.nr, self.nt, int(chunk_frames), int(max_bytes),
                                    {"description": str(description)}) if folder else None)  # CSILogError: bad field
        self._disk = DiskWriter(self, retry=True)
        self._frame = None
        self._pending: dict[int, dict] = {}  # offset -> {"csi": ..., "noise_var": ..., "stale": ...}
        self.logged = 0

    def set_recording(self, on) -> None:
        with self._lock:
            self._recording = bool(on)

    def problems(self) -> dict:
        return dict(self.failures.counts)

    def status(self) -> dict:
        w = self.writer
        return {"frames_logged": self.logged, "recording": self._recording,
                "bytes": 0 if w is None else w.bytes(), "frames_dropped": 0 if w is None else w.manifest["frames_dropped"],
                "write_failures": self._disk.failures, "writing": not self._disk.failing,
                "frames_lost": 0 if w is None else w.frames_lost}

    @guarded_work("sink")
    def work(self, input_items, output_items):
        n = len(input_items[0])
        start = self.nitems_read(0)
        tags = sorted(self.get_tags_in_window(0, 0, n), key=lambda t: t.offset)
        for t in tags:
            key = pmt.symbol_to_string(t.key)
            if key == FRAME_START:
                self._flush_pending(before=t.offset + 1)
                value = tag_int(t.value)
                self._frame = value if value is not None else self._frame
            elif key in (CSI, NOISE_VAR, CSI_STALE):
                self._pending.setdefault(t.offset, {})[key] = t.value
        self._flush_pending(before=start + n)
        return n

    def _flush_pending(self, before: int) -> None:
        """Log the complete estimates at offsets below ``before`` (both tags of a frame share one offset)."""
        for offset in sorted(o for o in self._pending if o < before):
            entry = self._pending.pop(offset)
            self._log(offset, entry)

    def _log(self, offset: int, entry: dict) -> None:
        if self.writer is None or not self._recording:
            return
        if CSI_STALE in entry:
            self.failures.report("stale", f"{self.name()}: frame at item {offset} carries the last good estimate "
                                 "(csi_stale): not logged again")
            return
        if CSI not in entry or NOISE_VAR not in entry:
            self.failures.report("incomplete", f"{self.name()}: item {offset} has {sorted(entry)} but not both csi "
                                 "and noise_var: not logged")
            return
        try:
            h = pmt_to_csi(entry[CSI], self.nr, self.nt)
            if not bool(h.abs().sum() > 0):
                raise ValueError("csi tag is all zero")
            nv = tag_float(entry[NOISE_VAR])
            if nv is None or not np.isfinite(nv) or nv < 0:
                raise ValueError(f"noise_var tag {pmt.to_python(entry[NOISE_VAR])!r} is not a finite number >= 0")
        except ValueError as exc:
            self.failures.report("bad-estimate", f"{self.name()}: {exc} at item {offset}: frame not logged")
            return
        self.logged += 1  # held by the writer: written now or with a later chunk
        self._disk.call(self.writer.add, self._frame if self._frame is not None else -1, h, nv,
                        lost="frames are held and")

    @guarded_stop
    def stop(self) -> bool:
        self._flush_pending(before=2**63)
        if self.writer is not None:
            self._disk.call(self.writer.close, lost=f"{self.writer.held()} frames not written;")
        return True

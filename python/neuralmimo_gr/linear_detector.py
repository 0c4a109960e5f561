"""ZF / MMSE detector, switchable while running: ``Nr`` streams in, ``Nt`` symbol streams out."""

from __future__ import annotations

import threading

import numpy as np
import pmt
import torch
from gnuradio import gr

from neuralmimo.constellation import Constellation
from neuralmimo.detectors import linear_detect

from ._common import (CSI, DETECTOR, FRAME_START, NOISE_VAR, FailureLog, big_buffers, guarded_work, pmt_to_csi,
                      stack_streams, tag_float, write_streams, zero_nonfinite)

LINEAR_DETECTORS = ("zf", "mmse")


class linear_detector(gr.sync_block):
    """Zero-forcing or unbiased MMSE equalisation with the channel estimate from the tags.

    Inputs: ``nr`` complex streams of data vectors with the :class:`ls_channel_estimator`'s
    ``csi`` and ``noise_var`` tags at each frame's first data vector. Outputs: ``nt`` complex
    streams of equalised symbols and, if ``llr_output``, one float stream of
    ``nt * bits_per_symbol``-vectors of max-log LLRs (user-major; positive favours bit 1).

    ``set_detector("zf" | "mmse")`` may be called at any time (GRC callback); under a lock the
    request is stored and applied at the next frame boundary (``frame_start``/``csi`` tag), so a
    frame is never equalised by two algorithms. A ``detector`` tag marks the first vector
    processed by each newly applied algorithm. All tags of input 0 are passed to every output.

    Bad input: a malformed ``csi`` (wrong size, NaN/Inf) or ``noise_var`` (negative, NaN) tag is
    ignored and the last good value kept; NaN/Inf input vectors are replaced by zeros (their
    symbols come out as 0); vectors before the first channel estimate come out as 0. Each is
    logged once and counted in :meth:`problems`.
    """

    def __init__(self, nr: int = 4, nt: int = 2, modulation: str = "qpsk", detector: str = "mmse",
                 llr_output: bool = False):
        if nr < 1 or nt < 1 or nt > nr:
            raise ValueError(f"linear detection needs 1 <= nt <= nr, got nr={nr}, nt={nt}")
        if detector not in LINEAR_DETECTORS:
            raise ValueError(f"detector must be one of {LINEAR_DETECTORS}, got {detector!r}")
        self.constellation = Constellation(modulation)
        self.nr, self.nt, self.llr_output = int(nr), int(nt), bool(llr_output)
        out_sig = [np.complex64] * self.nt
        if self.llr_output:
            out_sig.append((np.float32, self.nt * self.constellation.bits_per_symbol))
        gr.sync_block.__init__(self, name="linear_detector", in_sig=[np.complex64] * self.nr, out_sig=out_sig)
        self._lock = threading.Lock()
        self._requested = detector
        self._active: str | None = None
        self._h: torch.Tensor | None = None
        self._noise_var = 0.0
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)
        big_buffers(self)

    # ----------------------------------------------------------------- runtime control
    def set_detector(self, detector: str) -> None:
        """Request ZF or MMSE from the next frame on; an unknown name is logged and ignored."""
        if detector not in LINEAR_DETECTORS:
            self.logger.error(f"set_detector({detector!r}) refused: choose one of {LINEAR_DETECTORS}")
            return
        with self._lock:
            self._requested = detector

    def detector(self) -> str:
        """The algorithm in force (or requested, before the first frame)."""
        return self._active or self._requested

    def problems(self) -> dict[str, int]:
        return dict(self.failures.counts)

    # ----------------------------------------------------------------- streaming
    def _frame_boundary(self, tags: list, offset: int) -> None:
        """Apply what arrives at a frame boundary: requested algorithm, new CSI, noise variance."""
        with self._lock:
            requested = self._requested
        if requested != self._active:
            self._active = requested
            for k in range(self.nt + self.llr_output):
                self.add_item_tag(k, offset, pmt.intern(DETECTOR), pmt.intern(requested))
        for t in tags:
            key = pmt.symbol_to_string(t.key)
            if key == CSI:
                try:
                    self._h = pmt_to_csi(t.value, self.nr, self.nt)
                except ValueError as exc:
                    self.failures.report("bad-csi", f"{self.name()}: {exc} at item {t.offset}; keeping the last good estimate")
            elif key == NOISE_VAR:
                v = tag_float(t.value)
                if v is None or not np.isfinite(v) or v < 0:
                    self.failures.report("bad-noise-var", f"{self.name()}: invalid noise_var tag {t.value} at item "
                                         f"{t.offset}; keeping {self._noise_var:g}")
                else:
                    self._noise_var = v

    @guarded_work("zeros")
    def work(self, input_items, output_items):
        n = len(output_items[0])
        r0 = self.nitems_read(0)
        tags = sorted(self.get_tags_in_window(0, 0, n), key=lambda t: t.offset)
        for t in tags:  # pass every tag through, same offset (sync block)
            for k in range(len(output_items)):
                self.add_item_tag(k, t.offset, t.key, t.value)
        boundary_keys = (FRAME_START, CSI)
        cuts = sorted({t.offset - r0 for t in tags if pmt.symbol_to_string(t.key) in boundary_keys} | {0, n})
        y_all = stack_streams(input_items, n)
        if zero_nonfinite(y_all):
            self.failures.report("nonfinite", f"{self.name()}: NaN/Inf input vectors replaced by 0")
        # Walk the frame boundaries in order (state changes there), then detect all segments of
        # equal length and algorithm in one batched call: whole frames in the middle of the
        # buffer share a length, only the two buffer edges differ.
        groups: dict[tuple[int, str], list] = {}
        for a, b in zip(cuts[:-1], cuts[1:]):
            at_a = [t for t in tags if t.offset - r0 == a]
            if any(pmt.symbol_to_string(t.key) in boundary_keys for t in at_a):
                self._frame_boundary(at_a, r0 + a)
            if self._h is None:
                self.failures.report("no-csi", f"{self.name()}: no channel estimate yet (no csi tag): output is 0")
                continue
            groups.setdefault((b - a, self._active or self._requested), []).append((a, self._h, self._noise_var))
        x_all = torch.zeros(self.nt, n, dtype=torch.complex64)
        llr_all = torch.zeros(n, self.nt * self.constellation.bits_per_symbol) if self.llr_output else None
        for (length, kind), segs in groups.items():
            first, count = segs[0][0], len(segs)
            if segs[-1][0] - first == (count - 1) * length:  # back to back: views, no gather
                cols = slice(first, first + count * length)
                y = y_all[:, cols].reshape(self.nr, count, length).transpose(0, 1)  # (S, Nr, length)
            else:
                cols = (torch.tensor([a for a, _, _ in segs])[:, None] + torch.arange(length)).reshape(-1)
                y = y_all[:, cols].reshape(self.nr, count, length).transpose(0, 1)
            h = torch.stack([h for _, h, _ in segs])
            nv = torch.tensor([v for _, _, v in segs])
            x, eff = linear_detect(y, h, nv, kind, self.constellation)  # (S, Nt, length), (S, Nt)
            x_all[:, cols] = x.transpose(0, 1).reshape(self.nt, -1)
            if llr_all is not None:
                llr = self.constellation.llr_maxlog(x.transpose(1, 2), eff.clamp(min=1e-12)[:, None, :])
                llr_all[cols] = llr.reshape(-1, llr_all.shape[1])
        write_streams(output_items[: self.nt], x_all)
        if llr_all is not None:
            output_items[self.nt][:n] = llr_all.numpy()
        return n

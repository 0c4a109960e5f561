"""ZF / MMSE detector, switchable while running: ``Nr`` streams in, ``Nt`` symbol streams out."""

from __future__ import annotations

import threading

import numpy as np
import pmt
import torch
from gnuradio import gr

from neuralmimo.constellation import Constellation
from neuralmimo.detectors import linear_detect

from ._common import (EstimateTags, FailureLog, UserPhase, big_buffers, detect_groups, frame_segments, guarded_work,
                      mark_stale, write_streams)
from .tags import DETECTOR

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

    Bad input: a malformed ``csi`` (wrong size, NaN/Inf), a degenerate one (all zero,
    rank-deficient) or an unusable ``noise_var`` (negative, NaN, absurdly large for the estimate)
    is refused and the last good value kept; such a frame, and a frame that arrives tagged
    ``csi_stale``, is counted (``stale-csi-frame``) and its outputs carry ``csi_stale``. NaN/Inf input vectors are replaced by zeros (their
    symbols come out as 0); vectors before the first channel estimate come out as 0. Each is
    logged once and counted in :meth:`problems`.

    Separate user oscillators: a ``user_phase`` tag (``frame_sync``, through the estimator) gives
    each user's rotation along the frame; the equalised streams are derotated by it, which is exact
    for ZF and MMSE (the rotated channel ``H D`` gives ``D^H`` times the equaliser of ``H``).
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
        self._estimate = EstimateTags(self, self.nr, self.nt)
        self._user_phase = UserPhase(self, self.nt)
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
        mark_stale(self, tags, self._estimate.apply(tags), offset, self.nt + self.llr_output)
        self._user_phase.boundary(tags)

    @guarded_work("zeros")
    def work(self, input_items, output_items):
        n = len(output_items[0])
        y_all, segments = frame_segments(self, input_items, len(output_items))
        # Walk the frame boundaries in order (state changes there), then detect all segments of
        # equal length and algorithm in one batched call: whole frames in the middle of the
        # buffer share a length, only the two buffer edges differ.
        groups: dict[tuple[int, str], list] = {}
        est = self._estimate
        for a, b, offset, boundary_tags in segments:
            if boundary_tags:
                self._frame_boundary(boundary_tags, offset)
            rotation = self._user_phase.segment(b - a)
            if est.h is None:
                self.failures.report("no-csi", f"{self.name()}: no channel estimate yet (no csi tag): output is 0")
                continue
            groups.setdefault((b - a, self._active or self._requested), []).append((a, (est.h, est.noise_var, rotation)))
        const = self.constellation

        def detect(y, states, kind):
            h = torch.stack([st[0] for st in states])
            nv = torch.tensor([st[1] for st in states], dtype=torch.float64)  # |y|^2 of a 1e22 signal overflows float32
            x, eff = linear_detect(y, h, nv, kind, const)  # (S, Nt, length), (S, Nt)
            if any(st[2] is not None for st in states):  # each user's rotation: exact for ZF and MMSE
                rot = np.stack([np.zeros((self.nt, y.shape[-1])) if st[2] is None else st[2] for st in states])
                x = x * torch.from_numpy(np.exp(-1j * rot).astype(np.complex64))
            llr = const.llr_maxlog(x.transpose(1, 2), eff.clamp(min=1e-12)[:, None, :]) if self.llr_output else None
            return x, llr

        x_all, llr_all, _ = detect_groups(self, y_all, groups, detect, self.nt,
                                          self.nt * const.bits_per_symbol if self.llr_output else 0)
        write_streams(output_items[: self.nt], x_all)
        if llr_all is not None:
            output_items[self.nt][:n] = llr_all.numpy()
        return n

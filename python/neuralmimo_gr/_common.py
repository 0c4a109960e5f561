"""Shared plumbing of the gr-neuralmimo blocks: stream stacking, frame segments, once-per-failure
logging and the guard that keeps exceptions out of ``work()``. The tag contract (keys, PMT
conversions) is :mod:`.tags`."""

from __future__ import annotations

import functools
import threading

import numpy as np
import pmt
import torch

from neuralmimo.receiver.estimation import estimate_problems

from .tags import CSI, CSI_STALE, FRAME_START, NOISE_VAR, USER_PHASE, pmt_to_csi, pmt_to_user_phase, tag_float



class FailureLog:
    """Log each distinct failure once, count every occurrence.

    ``work()`` runs thousands of times per second: logging every bad buffer would flood the
    console, logging nothing would hide it. ``counts`` keeps the tally for getters and tests.
    """

    def __init__(self, logger):
        self._logger = logger
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def report(self, kind: str, message: str) -> None:
        with self._lock:
            first = kind not in self.counts
            self.counts[kind] = self.counts.get(kind, 0) + 1
        if first:
            self._logger.error(f"{message} (logged once; further occurrences are counted)")

    def count(self, kind: str) -> None:
        """Count an occurrence without logging (a consequence of something already reported)."""
        with self._lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1


def stack_streams(items, n: int) -> torch.Tensor:
    """Input/output buffers of ``S`` streams -> ``(S, n)`` complex64 tensor (a copy)."""
    return torch.from_numpy(np.stack([np.asarray(a[:n]) for a in items]))


def zero_nonfinite(x: torch.Tensor) -> int:
    """Zero (in place) every column of ``x (S, n)`` with a NaN/Inf entry; returns how many.

    One scalar reduction decides the common all-finite case (NaN and Inf propagate through the
    sum; a spurious overflow only triggers the exact per-column check)."""
    if bool(torch.isfinite(torch.view_as_real(x).sum())):
        return 0
    bad = ~torch.isfinite(torch.view_as_real(x)).all(-1).all(0)
    x[:, bad] = 0
    return int(bad.sum())


WORK_BUFFER_ITEMS = 65536


def big_buffers(block, minimum: int = 0) -> None:
    """Ask for output buffers of at least ``max(WORK_BUFFER_ITEMS, minimum)`` items, so that one
    ``work()`` call can cover many frames and the fixed Python/torch cost per call is amortised.
    Measured with ``neuralmimo bench flowgraph`` (8x32, frames of 1040 vectors): flowgraph /
    kernel rate 0.24 at 8192 items, 0.5 at 32768, 0.58 at 65536. GNU Radio never waits for a
    buffer to fill, so this adds memory (8 bytes x items per stream), not latency."""
    block.set_min_output_buffer(int(max(WORK_BUFFER_ITEMS, minimum)))


def write_streams(items, values: torch.Tensor, start: int = 0) -> None:
    """``values (S, n)`` -> ``items[s][start:start+n]`` for each stream ``s``."""
    arr = values.numpy()
    for s, out in enumerate(items):
        out[start:start + arr.shape[1]] = arr[s]


def tags_by_key(block, port: int, n: int, key: str) -> list:
    """Tags with ``key`` on input ``port`` among the next ``n`` items, sorted by offset."""
    k = pmt.intern(key)
    tags = [t for t in block.get_tags_in_window(port, 0, n) if pmt.eq(t.key, k)]
    return sorted(tags, key=lambda t: t.offset)


def frame_segments(block, input_items, n_outputs: int) -> tuple[torch.Tensor, list]:
    """The common first half of a frame-aware sync detector's ``work()``.

    Passes every tag of input 0 to every output (same offset), stacks the inputs into
    ``y_all (S, n)`` with NaN/Inf vectors zeroed (reported once as ``nonfinite``) and cuts the
    buffer at the frame boundaries (``frame_start``/``csi`` tags). Returns ``y_all`` and the
    segments ``[(a, b, offset, boundary_tags)]`` in order: columns ``a:b``, absolute offset of
    ``a``, and the tags at ``a`` when ``a`` is a frame boundary (else ``[]``), which the caller
    applies before detecting the segment."""
    n = len(input_items[0])
    r0 = block.nitems_read(0)
    tags = sorted(block.get_tags_in_window(0, 0, n), key=lambda t: t.offset)
    for t in tags:
        for k in range(n_outputs):
            block.add_item_tag(k, t.offset, t.key, t.value)
    boundary = (FRAME_START, CSI)
    cuts = sorted({t.offset - r0 for t in tags if pmt.symbol_to_string(t.key) in boundary} | {0, n})
    y_all = stack_streams(input_items, n)
    if zero_nonfinite(y_all):
        block.failures.report("nonfinite", f"{block.name()}: NaN/Inf input vectors replaced by 0")
    segments = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        at_a = [t for t in tags if t.offset - r0 == a]
        is_boundary = any(pmt.symbol_to_string(t.key) in boundary for t in at_a)
        segments.append((a, b, r0 + a, at_a if is_boundary else []))
    return y_all, segments


def gather_segments(y_all: torch.Tensor, starts: list[int], length: int) -> tuple[object, torch.Tensor]:
    """Columns of ``len(starts)`` equal-length segments: ``(cols, y (S, rows, length))``; ``cols``
    is a slice (a view, no copy) when the segments are back to back."""
    count, rows = len(starts), y_all.shape[0]
    if starts[-1] - starts[0] == (count - 1) * length:
        cols = slice(starts[0], starts[0] + count * length)
    else:
        cols = (torch.tensor(starts)[:, None] + torch.arange(length)).reshape(-1)
    return cols, y_all[:, cols].reshape(rows, count, length).transpose(0, 1)


def detect_groups(block, y_all: torch.Tensor, groups: dict, detect, n_streams: int, llr_width: int = 0):
    """Detect every group of equal-length frames in one batched call and gather the outputs.

    ``groups``: ``{(length, key): [(first column, frame state), ...]}``; ``detect(y (S, Nr, length),
    states, key)`` returns ``(x (S, n_streams, length), llr (S, length, llr_width) or None)``.
    One frame must never cost its neighbours: if a batch raises, its frames are detected one by
    one and only the frames that fail output 0 (reported once as ``frame-failed``, every one
    counted). Returns ``(x_all (n_streams, n), llr_all (n, llr_width) or None, failures)`` with
    ``failures`` the ``(key, exception, first column)`` of every failed frame.
    """
    n = y_all.shape[1]
    x_all = torch.zeros(n_streams, n, dtype=torch.complex64)
    llr_all = torch.zeros(n, llr_width) if llr_width else None
    failed = []
    for (length, key), segs in groups.items():
        starts = [a for a, _ in segs]
        try:
            parts = [(starts, detect(gather_segments(y_all, starts, length)[1], [st for _, st in segs], key))]
        except Exception:  # noqa: BLE001 - retried frame by frame below
            parts = []
            for a, st in segs:
                try:
                    parts.append(([a], detect(y_all[:, a:a + length].unsqueeze(0), [st], key)))
                except Exception as exc:  # noqa: BLE001 - contained to this frame
                    failed.append((key, exc, a))
                    block.failures.report("frame-failed", f"{block.name()}: detection failed on the frame at item "
                                          f"{block.nitems_read(0) + a} ({type(exc).__name__}: {exc}); its vectors "
                                          "output 0, the other frames are unaffected")
        for frame_starts, (x, llr) in parts:
            cols, _ = gather_segments(y_all[:1], frame_starts, length)
            x_all[:, cols] = x.transpose(0, 1).reshape(n_streams, -1).to(torch.complex64)
            if llr_all is not None:
                llr_all[cols] = llr.reshape(-1, llr_width).float()
    return x_all, llr_all, failed


class UserPhase:
    """Each user's residual rotation along a frame, from the ``user_phase`` tag at its first data
    vector (``neuralmimo.receiver.tracking``): user ``k`` of data vector ``d`` turned by ``p_k + r_k d``
    against the channel estimate. Reset to none at every frame boundary; a malformed tag is
    refused (reported once, counted) and the frame detected without it."""

    def __init__(self, block, nt: int):
        self.block, self.nt = block, nt
        self.first: np.ndarray | None = None
        self.rate: np.ndarray | None = None
        self.index = 0  # data vectors of the current frame already detected

    def boundary(self, tags: list) -> None:
        self.first = self.rate = None
        self.index = 0
        for t in tags:
            if pmt.symbol_to_string(t.key) != USER_PHASE:
                continue
            try:
                self.first, self.rate = pmt_to_user_phase(t.value, self.nt)
            except ValueError as exc:
                self.block.failures.report("bad-user-phase", f"{self.block.name()}: {exc} at item {t.offset}; the frame "
                                           "is detected without the users' rotation")

    def segment(self, length: int) -> np.ndarray | None:
        """The rotation ``(Nt, length)`` rad of the next ``length`` data vectors of the frame (``None``
        when the frame has none); advances along the frame."""
        start, self.index = self.index, self.index + length
        if self.rate is None:
            return None
        return self.first[:, None] + self.rate[:, None] * np.arange(start, start + length)[None, :]


# A noise variance more than this many times the mean received signal power per antenna
# (SNR below -60 dB) is not an estimate a detector can use: a unit mix-up or a corrupt tag.
MAX_NOISE_TO_SIGNAL = 1e6


class EstimateTags:
    """The channel estimate and noise variance a detector keeps from ``csi``/``noise_var`` tags.

    A tag is refused, and the last good value kept, when it is malformed (wrong type or size,
    NaN/Inf), degenerate (an all-zero or rank-deficient ``csi``: ZF undefined, MMSE meaningless;
    see :func:`neuralmimo.receiver.estimation.estimate_problems`) or absurd (a ``noise_var`` below
    ``noise_floor`` (``None``: ``>= 0``) or above ``MAX_NOISE_TO_SIGNAL`` times the signal power
    ``||H||_F^2 / Nr`` of the estimate in force). Each refusal is reported once per kind and
    counted; :meth:`apply` returns the reasons, so the caller can mark the frame ``csi_stale``.
    """

    def __init__(self, block, nr: int, nt: int, noise_floor: float | None = None, rcond: float = 1e-6):
        self.block, self.nr, self.nt, self.noise_floor, self.rcond = block, nr, nt, noise_floor, rcond
        self.h: torch.Tensor | None = None
        self.noise_var = 0.0

    def apply(self, tags: list) -> list[str]:
        """Apply the ``csi`` then the ``noise_var`` tags of one frame boundary (the noise variance
        is judged against the frame's own estimate); returns why any of them was refused."""
        order = {CSI: 0, NOISE_VAR: 1}
        reasons = []
        for t in sorted((t for t in tags if pmt.symbol_to_string(t.key) in order),
                        key=lambda t: order[pmt.symbol_to_string(t.key)]):
            reason = self._update(t)
            if reason is not None:
                reasons.append(reason)
        return reasons

    def _update(self, t) -> str | None:
        blk = self.block
        if pmt.symbol_to_string(t.key) == CSI:
            try:
                h = pmt_to_csi(t.value, self.nr, self.nt)
                problem = estimate_problems(h[None].to(torch.complex128), self.rcond)[0]
                if problem is not None:
                    raise ValueError(f"unusable csi tag: {problem}")
            except ValueError as exc:
                blk.failures.report("bad-csi", f"{blk.name()}: {exc} at item {t.offset}; the frame is detected with "
                                    "the last good estimate and tagged csi_stale")
                return str(exc)
            self.h = h
            return None
        v = tag_float(t.value)
        reason = None
        if v is None or not np.isfinite(v):
            reason = f"noise_var tag {t.value} is not a finite number"
        elif v < 0 or (self.noise_floor is not None and v <= self.noise_floor):
            reason = f"noise_var tag {v:g} is not above {self.noise_floor or 0:g}"
        elif self.h is not None:
            signal = float(torch.linalg.matrix_norm(self.h.to(torch.complex128)) ** 2) / self.nr
            if v > MAX_NOISE_TO_SIGNAL * signal:
                reason = (f"noise_var tag {v:g} is absurd: more than {MAX_NOISE_TO_SIGNAL:g} times the signal power "
                          f"{signal:.3g} of the channel estimate")
        if reason is not None:
            blk.failures.report("bad-noise-var", f"{blk.name()}: {reason} at item {t.offset}; keeping "
                                f"{self.noise_var:g} and tagging the frame csi_stale")
            return reason
        self.noise_var = v
        return None


def mark_stale(block, tags: list, reasons: list[str], offset: int, n_outputs: int) -> bool:
    """Whether the frame starting at ``offset`` is detected with stale side information: it
    arrived tagged ``csi_stale`` (passed on already) or ``reasons`` says a tag was refused here
    (then a ``csi_stale`` tag is added to every output). Counted as ``stale-csi-frame``."""
    arrived = any(pmt.symbol_to_string(t.key) == CSI_STALE for t in tags)
    if reasons and not arrived:
        value = pmt.string_to_symbol("; ".join(reasons))
        for k in range(n_outputs):
            block.add_item_tag(k, offset, pmt.intern(CSI_STALE), value)
    if arrived or reasons:
        block.failures.count("stale-csi-frame")
        return True
    return False


TORCH_THREADS_PER_BLOCK = 1


class _ThreadState(threading.local):
    torch_threads: int | None = None


_thread_state = _ThreadState()


def guarded_work(fallback: str):
    """Decorator for ``work``/``general_work``: an exception never escapes (in GNU Radio 3.10 it
    would kill the block thread and hang ``tb.run()``). It is logged once per distinct message;
    ``fallback`` says what the call then does: ``"zeros"`` (sync block: output zeros for the
    whole buffer), ``"consume"`` (general block: drop the input seen, produce nothing) or
    ``"sink"`` (consume everything)."""

    def wrap(method):
        @functools.wraps(method)
        def inner(self, input_items, output_items):
            wanted = getattr(self, "torch_threads", TORCH_THREADS_PER_BLOCK)
            if _thread_state.torch_threads != wanted:
                # OpenMP thread counts are per calling thread: torch.set_num_threads in the main
                # thread does not reach GNU Radio's block threads, where torch would default to
                # every core and spin against the other blocks (measured 5-9x slower small ops).
                torch.set_num_threads(wanted)
                _thread_state.torch_threads = wanted
            try:
                return method(self, input_items, output_items)
            except Exception as exc:  # noqa: BLE001 - the whole point is to catch everything
                self.failures.report(f"exception:{type(exc).__name__}:{exc}",
                                     f"{self.name()}: internal error {type(exc).__name__}: {exc}")
                if fallback == "zeros":
                    for out in output_items:
                        out[:] = 0
                    return len(output_items[0])
                if fallback == "sink":
                    return len(input_items[0])
                n_in = min((len(x) for x in input_items), default=0)
                for i in range(len(input_items)):
                    self.consume(i, n_in)
                return 0

        return inner

    return wrap


def guarded_stop(method):
    """Decorator for ``stop()`` (and ``start()``): an exception never escapes. GNU Radio 3.10 calls
    them from C++, where a Python exception ends the whole process with SIGABRT (exit 134),
    taking every other block down with it. It is logged and counted (``stop-failed``) instead,
    and the call returns ``True``: the flowgraph ends normally."""

    @functools.wraps(method)
    def inner(self, *args):
        try:
            return method(self, *args)
        except Exception as exc:  # noqa: BLE001 - anything escaping here aborts the process
            self.failures.report(f"{method.__name__}-failed", f"{self.name()}: {method.__name__}() failed: "
                                 f"{type(exc).__name__}: {exc}")
            return True

    return inner


class DiskWriter:
    """The disk writes of a recording block, contained: :meth:`call` runs one write; an
    ``OSError`` (folder removed, not writable, disk full) or a writer's ``ValueError`` is reported
    once (``write-failed``, with the reason), counted, and :attr:`failing` is set; the stream goes
    on. :meth:`call` returns ``None`` on failure. ``retry`` writers try again at the next call (a
    folder restored in the meantime is written again); the others stop writing for good."""

    def __init__(self, block, retry: bool):
        self.block, self.retry = block, retry
        self.failing = False
        self.stopped = False
        self.failures = 0

    def call(self, fn, *args, lost: str = "", always: bool = False, **kwargs):
        """``fn(*args, **kwargs)``, contained; ``always``: even after the writer stopped (closing
        what was written)."""
        if self.stopped and not always:
            return None
        try:
            out = fn(*args, **kwargs)
        except (OSError, ValueError) as exc:
            self.failures += 1
            self.failing = True
            self.stopped = not self.retry
            blk = self.block
            then = "retrying at the next write" if self.retry else "recording stopped; the stream goes on"
            blk.failures.report("write-failed", f"{blk.name()}: cannot write ({type(exc).__name__}: {exc}); "
                                f"{lost + ' ' if lost else ''}{then}")
            return None
        if self.failing:
            self.failing = False
            self.block.logger.info(f"{self.block.name()}: writing again")
        return out

"""Frame synchronisation of a pulse-shaped multi-antenna receiver: preamble detection, timing,
CFO, re-acquisition and residual phase tracking (numpy, no GNU Radio).

Input: the ``Nr`` matched-filter outputs at ``sps`` samples per symbol (:mod:`neuralmimo.receiver.pulse`),
in order, in pieces of any length (:meth:`FrameSynchronizer.push`), with the samples lost between
pieces when known (:meth:`FrameSynchronizer.gap`, from UHD's ``rx_time`` tags). Output: whole
frames at one sample per symbol, ``Np`` pilots + ``Nd`` data vectors (the preamble removed), with
their number, CFO, fractional start, sync metrics and per-user CFO -- what the GNU Radio
``frame_sync`` block tags and hands to the LS estimator.

A frame on air is ``[preamble (2 N symbols, neuralmimo.receiver.preamble), pilots (Np), data (Nd)]``.

State machine (like gr-dvbs2rx's frame synchroniser)::

    SEARCHING --preamble found--> FOUND --next preamble where expected--> LOCKED --+
        ^                            |                                    ^        | (each frame)
        |                            +------- next preamble missing ------+--------+
        +--- lost: no preamble within HOLD frames, or samples lost (gap) ---+

* **Detection** (SEARCHING): the Schmidl-Cox metric ``M(t) = |P(t)|^2 / R(t)^2`` summed over all
  receive antennas (``P = sum_r sum_{m<W} conj(y_r[t+m]) y_r[t+m+W]``, ``W = N sps``, ``R`` the mean
  energy of the two halves), compared with a threshold set by the false-alarm probability ``pfa``
  per frame length of noise (:func:`neuralmimo.receiver.preamble.autocorrelation_threshold`); the peak of
  ``M`` after the first crossing is the coarse start and ``angle(P) / (2 pi W)`` the CFO (cycles
  per sample; within ``1 / (2 N)`` cycles per symbol).
* **Fine timing and verification**: the autocorrelation must not be higher a quarter to half
  a period earlier (a preamble cut at its start by a gap or by the start of the stream is
  otherwise found a few symbols late, where the streams' cyclic shifts correlate as other
  streams' sequences); after derotating the CFO, the correlation with every
  stream's known preamble at symbol spacing, ``T(d) = sum_{r,k} |c_rk(d)|^2``, is maximised over
  integer lags and refined by a parabola through the peak (the fractional start); the normalised
  correlation ``rho`` must pass its own false-alarm threshold
  (:func:`neuralmimo.receiver.preamble.correlation_threshold`), which rejects what the autocorrelation
  alone cannot (e.g. constant pilot rows, which are periodic too).
* **Tracking** (FOUND/LOCKED): the next preamble is looked for only within ``window`` samples of
  where the frame length puts it (lower thresholds: fewer positions are tested). A frame is handed
  out only when the next preamble has been found where a whole number of frame lengths puts it
  (within ``0.5`` sample plus 50 ppm): lost or inserted samples inside a frame move the next
  preamble, and the frame is then dropped (``slip``) instead of being cut wrongly. A frame that is
  followed by no preamble within ``HOLD`` frame lengths is dropped (``unconfirmed``); the last
  frame of a burst therefore needs a closing preamble (the frame source sends one). Inside a
  frame the symbols are taken at the nominal spacing from its fractional start: a 20 ppm
  sample-rate offset moves the last symbol by 0.02 samples (each frame's own start absorbs the
  rest), less than a spacing measured from two starts would add (their errors, ~0.04 samples at
  10 dB, spread over the frame).
* **Numbering** from the timeline: ``number = round((t + lost - origin) / Ls)``, ``t`` the frame's
  start, ``lost`` the samples reported lost so far (:meth:`gap`), ``Ls`` the frame length in
  samples; ``origin`` (frame 0's start) follows each frame, so slow drifts (a sample-rate offset)
  and slips of less than half a frame keep the numbering. A frame whose number is not above the
  last one handed out is dropped (``misnumbered``): no frame reaches the estimator twice.
* **Residual phase** (optional, ``constellation`` given): the CFO estimate's error and phase noise
  turn the phase across a frame; the pilots fix it at the frame's start only. A decision-directed
  tracker (:func:`track_phase`) follows it through the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..params import Param, check_all
from .frames import FrameLayout
from .preamble import FINE_GUARD, Preamble, autocorrelation_threshold, correlation_threshold
from .pulse import INTERP_HALF, interpolate, interpolate_grid, noise_correlation_energy
from .tracking import CHUNK, UserRates, air_length, chunk_for, pilot_fit, remove_tracking, track_phase

HOLD = 4  # frame lengths an unconfirmed frame waits for a following preamble
PHASE_NOISE_FRAMES = 16  # frames whose phase-noise estimates choose the tracker's chunk
STATE_FRAMES = 8  # the tracker's frame-to-frame state changes every this many frames (_track)
PPM_TOLERANCE = 50e-6  # sample-rate offset allowed between confirmed preambles
PEAK_RATIO = 4 / 3  # a start is refused if the autocorrelation is this much higher earlier (_detect)
SEARCHING, FOUND, LOCKED = "searching", "found", "locked"
MAX_VERIFY_PER_FRAME = 8  # preamble verifications per frame length of searched input (cost bound)
DC_BLOCK_FRAMES = 8  # the DC estimate averages over about this many frame lengths
SILENT_FRAMES = 64  # frame lengths searched without a preamble before the input is diagnosed
PERIODS = tuple(range(2, 65))
TONE_LAG_RATIO = 0.5  # a candidate as periodic at one symbol as at W is a tone or a DC offset (_search)
TONE_FRACTION = 0.8  # a "preamble" with more of its energy in one spectral line is a tone (_detect_many)  # preamble periods (symbols) the diagnosis looks for


PARAMS = {  # neuralmimo.params: the constructor and the frame_sync block check against these
    "nr": Param(int, 1, 1024),
    "sps": Param(int, 2, 64, doc="samples per symbol"),
    "pfa": Param(float, 0, 1, lo_open=True, hi_open=True, doc="false frame starts per frame length of noise"),
    "origin": Param(float, 0, 1e15, unit="samples"),
    "preamble_period": Param(int, 2, 1024, unit="symbols"),
    "span": Param(int, 2, 64, doc="RRC span in symbols (even)"),
    "rolloff": Param(float, 0, 1, lo_open=True),
    "samp_rate": Param(float, 0, 1e12, lo_open=True, unit="Hz"),
    "coarse_period": Param(int, 0, 512, unit="symbols", doc="version-2 preamble's short period (0: version 1)"),
    "pilot_spacing": Param(int, 0, 65536, doc="data vectors between tracking pilots (0: none)"),
}


class DCBlocker:
    """Removes a DC offset per receive stream (a direct-conversion front end without DC
    correction): every sample minus the mean of the input up to the last whole block of
    ``block`` samples before it (a running mean over the first blocks, then an exponential one
    over ``ema`` blocks), where that mean is significant (larger than ``SIGNIFICANCE`` standard
    errors) and matters (its power above ``MIN_POWER`` times the rest): input without a DC offset
    passes unchanged, bit for bit. Blocks lie on the stream's
    own sample count, so the output does not depend on how the input is cut into pieces (a
    replay gives the live samples bit for bit). The first block is held back until complete and
    corrected by its own mean. Without it a DC above the noise makes every window periodic:
    every start passes the autocorrelation test and is verified (~100x slower than real time)."""

    SIGNIFICANCE = 6.0
    # and only a DC offset that matters: one whose power exceeds this fraction of the rest. A
    # frame's own mean (DFT pilots' first row is constant: ~0.3 % of the power for 16 pilots in a
    # 304-symbol frame) is signal, not offset; a DC offset starts to make noise look periodic to
    # the autocorrelation test at ~30 % of the noise power.
    MIN_POWER = 0.05

    STRIDE = 4

    BLOCKS_PER_UPDATE = 8

    def __init__(self, nr: int, block: int, ema: int = 8):
        self.first = int(block)  # held back at the start, corrected by its own mean
        # then the statistics are updated every BLOCKS_PER_UPDATE blocks (whole strides: every
        # block samples alike); the per-update cost is Python overhead, not arithmetic
        self.block = -(-int(block) * self.BLOCKS_PER_UPDATE // self.STRIDE) * self.STRIDE
        self.ema = int(ema)
        self.mean = np.zeros((nr, 1), dtype=np.complex128)  # running mean of the input
        self.power = np.zeros((nr, 1), dtype=np.float64)  # running mean of |input|^2
        self.dc = np.zeros((nr, 1), dtype=np.complex64)  # what is subtracted (0 unless significant)
        self._sum = np.zeros((nr, 1), dtype=np.complex128)
        self._sq = np.zeros((nr, 1), dtype=np.float64)
        self._count = 0  # samples in the current block
        self._blocks = 0
        self._held: list[np.ndarray] = []  # the first block, until complete

    def _update(self, total: np.ndarray, sq: np.ndarray, n: int) -> None:
        mean, power = total / n, sq / n
        if not (np.isfinite(mean).all() and np.isfinite(power).all()):
            return  # a NaN burst must not poison every later sample
        self._blocks += 1
        w = 1.0 / min(self._blocks, self.ema)
        self.mean += w * (mean - self.mean)
        self.power += w * (power - self.power)
        n_eff = n * min(self._blocks, self.ema)
        var = np.maximum(self.power - np.abs(self.mean) ** 2, 0.0)
        dc_power = np.abs(self.mean) ** 2
        significant = (dc_power > self.SIGNIFICANCE ** 2 * var / n_eff) & (dc_power > self.MIN_POWER * var)
        self.dc = np.where(significant, self.mean, 0).astype(np.complex64)

    def remove(self, s: np.ndarray) -> np.ndarray:
        """``s (Nr, n)`` minus the DC estimate (the output is shorter than the input while the
        first block is held back)."""
        if self._blocks == 0:
            self._held.append(s)
            if sum(h.shape[1] for h in self._held) < self.first:
                return s[:, :0]
            s, self._held = np.concatenate(self._held, axis=1), []
            return np.concatenate([self._own_mean(s[:, :self.first]), self._causal(s[:, self.first:])], axis=1)
        return self._causal(s)

    def flush(self) -> np.ndarray:
        """The samples held back (the first block, incomplete), corrected by their own mean: a
        gap in the stream comes before the next samples."""
        if self._blocks or not self._held:
            return np.zeros((self.dc.shape[0], 0), np.complex64)
        s, self._held = np.concatenate(self._held, axis=1), []
        return self._own_mean(s)

    def _own_mean(self, s: np.ndarray) -> np.ndarray:
        self._update(s.sum(1, keepdims=True, dtype=np.complex128),
                     (np.abs(s) ** 2).sum(1, keepdims=True, dtype=np.float64), s.shape[1])
        self._blocks = max(self._blocks, 1)
        return s - self.dc if self.dc.any() else s

    def _causal(self, s: np.ndarray) -> np.ndarray:
        """``s`` minus the estimate in force at each sample; every ``STRIDE``-th sample (on the
        stream's own count) feeds the statistics of the block it lies in (a mean needs no more,
        and the receiver's time is better spent elsewhere)."""
        out = s if not self.dc.any() else None
        pos = 0
        while pos < s.shape[1]:
            n = min(self.block - self._count, s.shape[1] - pos)
            if self.dc.any():
                if out is None or out is s:
                    out = s.copy()
                out[:, pos:pos + n] -= self.dc
            seg = s[:, pos + (-self._count) % self.STRIDE:pos + n:self.STRIDE]
            self._sum += seg.sum(1, keepdims=True, dtype=np.complex128)
            self._sq += (np.einsum("ij,ij->i", seg.real, seg.real, dtype=np.float64)
                         + np.einsum("ij,ij->i", seg.imag, seg.imag, dtype=np.float64))[:, None]
            self._count += n
            pos += n
            if self._count == self.block:
                self._update(self._sum, self._sq, self.block // self.STRIDE)
                self._sum[:], self._sq[:], self._count = 0, 0, 0
        return out


@dataclass
class Detection:
    """A preamble found: fractional start (absolute sample), CFO (cycles/sample), Schmidl-Cox
    metric, normalised correlation, per-user CFO (cycles/sample), samples lost before it."""

    start: float
    cfo: float
    metric: float
    correlation: float
    user_cfo: np.ndarray
    lost: int


@dataclass
class SyncedFrame:
    """A frame handed out: ``symbols (Nr, Np + Nd)`` complex64 at one sample per symbol, CFO
    derotated (and phase tracked if enabled), tracking pilots removed; ``start`` the fractional
    sample of its first preamble symbol; ``cfo`` and ``user_cfo`` in cycles per sample; with
    tracking: ``phase`` the common phase removed per vector (rad), ``slips`` the cycle slips the
    tracking pilots caught, ``user_rate`` each user's residual rotation (rad per vector, zero at
    the pilot block's middle; :func:`neuralmimo.receiver.tracking.user_rotation`)."""

    number: int
    start: float
    cfo: float
    metric: float
    correlation: float
    user_cfo: np.ndarray
    symbols: np.ndarray
    phase: np.ndarray = field(default_factory=lambda: np.zeros(0))
    slips: int = 0
    user_rate: np.ndarray = field(default_factory=lambda: np.zeros(0))


class FrameSynchronizer:
    """Preamble-based frame synchroniser (module docstring).

    ``nr`` receive streams; ``layout`` pilots and data after the preamble; ``preamble`` the
    :class:`~neuralmimo.receiver.preamble.Preamble`; ``sps`` samples per symbol; ``taps`` the matched
    filter (for the noise correlation in the thresholds); ``pfa`` false frame starts per frame
    length of noise-only input; ``window`` the tracking search half-width (samples, default
    ``sps``); ``origin`` the sample where frame 0 starts (numbering); ``constellation`` enables
    the phase tracker with ``chunk`` data vectors per phase estimate; ``pilot_spacing`` the frame
    format's tracking pilots (one after every ``pilot_spacing`` data vectors, 0: none;
    :mod:`neuralmimo.receiver.tracking`).
    """

    def __init__(self, nr: int, layout: FrameLayout, preamble: Preamble, sps: int, taps: np.ndarray,
                 pfa: float = 1e-4, window: int | None = None, origin: float = 0.0, constellation=None,
                 chunk: int = CHUNK, dc_block: bool = True, pilot_spacing: int = 0):
        if preamble.nt != layout.nt:
            raise ValueError(f"preamble has {preamble.nt} streams, frame layout {layout.nt}")
        check_all(PARAMS, {"nr": nr, "sps": sps, "pfa": pfa, "origin": origin, "pilot_spacing": pilot_spacing})
        self.nr, self.layout, self.preamble, self.sps = int(nr), layout, preamble, int(sps)
        self.pilot_spacing = int(pilot_spacing)
        self.air_length = air_length(layout, self.pilot_spacing)  # pilots, data and tracking pilots
        self.symbols_per_frame = preamble.length + self.air_length
        self.frame_samples = self.symbols_per_frame * self.sps  # Ls
        self.half = preamble.period * self.sps  # W
        self.long_offset = preamble.coarse_length * self.sps  # samples from a preamble's start to its long periods
        # version 2: the fine CFO's branches next to the coarse one are compared (_detect_many)
        self._branches = (-1, 0, 1) if preamble.coarse_period else (0,)
        self.window = int(window if window is not None else self.sps)
        self.search_span = 2 * self.sps  # fine-timing lags around the autocorrelation peak
        self.pfa = float(pfa)
        self.origin = float(origin)
        c = noise_correlation_energy(np.asarray(taps, dtype=np.float64))
        self.noise_corr = c
        self.threshold_search = autocorrelation_threshold(pfa, self.frame_samples, nr, self.half, c)
        self.threshold_track = autocorrelation_threshold(pfa, 2 * self.window + 1, nr, self.half, c)
        self.threshold_corr = correlation_threshold(pfa, 2 * self.search_span + 1, nr, layout.nt, preamble.length)
        self._ref = preamble.symbols()  # (Nt, L): the coarse part (version 2) and the long periods
        self._ref_h = np.ascontiguousarray(np.conj(self._ref).T).astype(np.complex64)  # (L, Nt)
        self.constellation, self.chunk = constellation, int(chunk)
        self.user_rates = UserRates(layout.nt, (self.air_length - (layout.n_pilots - 1) / 2))
        self._phase_noise: list[float] = []  # the tracker's estimates of the last frames, rad^2 per vector
        self._measurement_noise: list[float] = []  # ... and of one vector's phase-measurement variance
        self._tracked = 0  # frames tracked so far (the tracker's state changes every STATE_FRAMES of them)
        self._state = (self.chunk, None)  # (chunk, users' prior) of the current group of frames
        # zeros stand for the samples before the stream's start (and before a gap): a preamble at
        # the very start can be verified, and one cut by the start is refused (its autocorrelation
        # is higher earlier, see _detect_many)
        self._pad = INTERP_HALF + self.half // 2 + self.search_span + 2 + self.long_offset
        self._buf = np.zeros((nr, self._pad), dtype=np.complex64)
        self._base = -self._pad  # absolute offset of _buf[:, 0]
        self._lost = 0  # samples lost so far (gap)
        self._search_from = 0
        self._open: Detection | None = None  # found, not yet confirmed by the next preamble
        self._missed = False  # the next preamble was not where expected: searching with a frame open
        self._last_number: int | None = None
        self.state = SEARCHING
        self.counts: dict[str, int] = {}
        self._dc = DCBlocker(self.nr, self.frame_samples, DC_BLOCK_FRAMES) if dc_block else None
        self._verify_budget = 0.0  # verifications left (refilled per frame length searched)
        self._silent_from = 0  # first sample searched since the last preamble found
        self.diagnosis: str | None = None  # why nothing is found, once diagnosed

    # ------------------------------------------------------------------ input
    def push(self, samples: np.ndarray) -> list[SyncedFrame]:
        """Append ``samples (Nr, n)`` (matched-filter output) and return the frames completed."""
        s = np.asarray(samples, dtype=np.complex64)
        if s.ndim != 2 or s.shape[0] != self.nr:
            raise ValueError(f"expected samples of shape ({self.nr}, n), got {s.shape}")
        if self._dc is not None:
            s = self._dc.remove(s)
        return self._push_clean(s)

    def _push_clean(self, s: np.ndarray) -> list[SyncedFrame]:
        self._buf = np.concatenate([self._buf, s], axis=1)
        out: list[SyncedFrame] = []
        while self._step(out):
            pass
        out = self._render(out)
        self._trim()
        if out:
            self._track(out)
        return out

    def gap(self, lost: int) -> list[SyncedFrame]:
        """``lost`` samples were lost before the next sample pushed (an overflow). A frame complete
        before the gap whose own preamble was where its predecessor put it (``locked``) is handed
        out; a freshly acquired one cannot be confirmed (its successor is gone) and is dropped like
        everything else; the search starts again after the gap. Returns the frames handed out."""
        if lost <= 0:
            return []
        out: list[SyncedFrame] = self._push_clean(self._dc.flush()) if self._dc is not None else []
        end = self._base + self._buf.shape[1]
        if self._open is not None:
            if self.state == LOCKED and not self._missed and \
                    self._open.start + self.frame_samples + INTERP_HALF + 1 <= end:
                self._emit(self._open, None, out)
            else:
                self._count("gap-dropped")
        out = self._render(out)
        self._open, self._missed, self.state = None, False, SEARCHING
        self._lost += int(lost)
        self._base, self._buf = end - self._pad, np.zeros((self.nr, self._pad), dtype=np.complex64)
        self._search_from = end
        if out:
            self._track(out)
        return out

    @property
    def lost(self) -> int:
        """Samples reported lost so far (:meth:`gap`)."""
        return self._lost

    @property
    def end(self) -> int:
        return self._base + self._buf.shape[1]

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    # ------------------------------------------------------------------ the state machine
    def _step(self, out: list) -> bool:
        """One transition; ``False`` when more input is needed."""
        Ls = self.frame_samples
        if self._open is None or self._missed:
            lo = self._search_from
            limit = None if self._open is None else self._open.start + HOLD * Ls
            det, searched_to = self._search(lo, limit)
            self._search_from = max(self._search_from, searched_to)
            if det is None:
                if self._open is not None and limit is not None and self._search_from >= limit:
                    self._count("unconfirmed")
                    self._open, self._missed, self.state = None, False, SEARCHING
                    return True
                return False
            self._count("acquired")
            if self._open is not None:
                dist = det.start - self._open.start
                k = round(dist / Ls)
                if k >= 1 and abs(dist - k * Ls) <= 0.5 + PPM_TOLERANCE * k * Ls:
                    self._emit(self._open, det if k == 1 else None, out)
                    self.state = LOCKED
                else:
                    self._count("slip")
                    self.state = FOUND
            else:
                self.state = FOUND
            self._open, self._missed = det, False
            self._search_from = int(math.floor(det.start)) + self.preamble.length * self.sps
            return True
        # tracking: the next preambles of every frame the buffer holds, detected together
        reach = self.window + self.preamble.length * self.sps + INTERP_HALF + 4  # what _detect_many needs, + rounding
        k_max = int((self.end - reach - self._open.start) // Ls)
        if k_max < 1:
            return False
        centers = np.round(self._open.start + Ls * np.arange(1, k_max + 1)).astype(np.int64)
        for det in self._detect_many(centers, self.window, self.threshold_track, reference_cfo=self._open.cfo):
            expected = self._open.start + Ls
            if det is None or abs(det.start - expected) > 0.5 + PPM_TOLERANCE * Ls:
                # the next preamble is not where expected: search from just after this frame's preamble
                self._count("lock-miss")
                self._missed = True
                self._search_from = int(math.floor(self._open.start)) + self.preamble.length * self.sps
                return True
            self._emit(self._open, det, out)
            self._open, self.state = det, LOCKED
        self._search_from = int(math.floor(self._open.start)) + self.preamble.length * self.sps
        return True

    def _trim(self) -> None:
        keep_from = self._search_from - INTERP_HALF - 2 * self.search_span - 2 - self.long_offset
        if self._open is not None:
            keep_from = min(keep_from, int(math.floor(self._open.start)) - INTERP_HALF - 2)
        drop = max(0, min(keep_from - self._base, self._buf.shape[1]))
        if drop:
            self._buf = self._buf[:, drop:]
            self._base += drop

    # ------------------------------------------------------------------ detection
    def _lookahead(self) -> int:
        """Samples needed after a candidate start to evaluate it completely."""
        return 3 * self.half + self.search_span + self.preamble.length * self.sps + INTERP_HALF + 2

    def _search(self, lo: int, limit: float | None) -> tuple[Detection | None, int]:
        """First verified preamble at or after absolute sample ``lo``; returns it (or ``None``)
        and how far the search got (where to continue).

        Cost bound: the metric is computed once for the whole range, and at most
        ``MAX_VERIFY_PER_FRAME`` candidates per frame length searched are verified (the budget
        refills with the samples searched); candidates beyond it are skipped and counted
        (``verify-capped``). Input that passes the autocorrelation test everywhere (a DC offset the
        blocker has not yet learnt, a tone, saturation) costs at most that many verifications."""
        lo = max(lo, self._base + INTERP_HALF + self.search_span + 1)
        hi = self.end - self._lookahead()
        if limit is not None:
            hi = min(hi, int(math.ceil(limit)))
        if hi <= lo:
            return None, lo
        cap = MAX_VERIFY_PER_FRAME
        self._verify_budget = min(self._verify_budget + cap * (hi - lo) / self.frame_samples, 2.0 * cap)
        step = 2 * self.frame_samples  # the metric is computed window by window: a hit costs one window
        while lo < hi:
            top = min(hi, lo + step)
            metric, _ = self._autocorrelation(lo, top + self.half + 1)
            above = metric[:top - lo] > self.threshold_search
            # starts as periodic at one symbol as at W: a tone or a DC offset, not a preamble (for
            # periods >= 4 symbols: a length-2 or -3 sequence is itself nearly periodic at one
            # symbol; measured worst preamble ratio 0.31 at N = 4, 8 users; >= 0.5 at N = 2)
            if above.any() and self.preamble.period >= 4:
                tonal = self._lag_metric(lo, top, self.sps) > TONE_LAG_RATIO * metric[:top - lo]
                if (above & tonal).any():
                    self._count("tone-like")
                    above &= ~tonal
            pos = 0
            while True:
                nxt = np.flatnonzero(above[pos:])
                if nxt.size == 0:
                    break
                first = pos + int(nxt[0])
                peak = first + int(np.argmax(metric[first:first + self.half + 1]))
                if self._verify_budget < 1.0:
                    self._count("verify-capped")
                    break  # the rest of this window is not verified: cost bound
                self._verify_budget -= 1.0
                det = self._detect(lo + peak - self.long_offset, self.search_span, self.threshold_search)
                if det is not None:
                    self._silent_from = lo + peak
                    return det, lo + peak
                pos = peak + 1  # not a preamble (or not verified): go on after this peak
            lo = top
        self._note_silence(hi)
        return None, hi

    def _note_silence(self, searched_to: int) -> None:
        """After ``SILENT_FRAMES`` frame lengths searched without a preamble, diagnose the input
        once (:attr:`diagnosis`, counted as ``no-preamble``): a periodicity at another preamble
        period says the receiver's period differs from the transmitter's."""
        if self.diagnosis is not None or searched_to - self._silent_from < SILENT_FRAMES * self.frame_samples:
            return
        span = min(self._buf.shape[1] - 2 * PERIODS[-1] * self.sps - 1, 4 * self.frame_samples)
        found = []
        if span > 0:
            y = self._buf[:, -(span + 2 * PERIODS[-1] * self.sps):]
            for period in PERIODS:
                w = period * self.sps
                m = periodicity(y, w, span)
                threshold = autocorrelation_threshold(self.pfa, self.frame_samples, self.nr, w, self.noise_corr)
                if m > threshold:
                    found.append((m, period))
        self._count("no-preamble")
        mine = self.preamble.period
        other = [p for _, p in sorted(found, reverse=True) if p != mine]
        if other and mine not in [p for _, p in found]:
            self.diagnosis = (f"no preamble found in {SILENT_FRAMES} frame lengths, but the input repeats with a period "
                              f"of {other[0]} symbols: the transmitter's preamble period is probably {other[0]}, "
                              f"this receiver expects {mine}")
        else:
            self.diagnosis = (f"no preamble found in {SILENT_FRAMES} frame lengths of input: is the transmitter on, "
                              "and are its preamble period, samples per symbol and pulse this receiver's?")

    def _autocorrelation(self, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        """Schmidl-Cox metric and ``P`` for starts ``lo .. hi - 1`` (absolute samples)."""
        metric, p = self._metrics_around(np.array([lo]), hi - lo)
        return metric[0], p[0]

    def _lag_metric(self, lo: int, hi: int, lag: int) -> np.ndarray:
        """:func:`lag_metric` at ``lag`` samples (windows of ``W``) for starts ``lo .. hi - 1``.
        At one symbol a preamble's is small (the Zadoff-Chu sequences have an ideal periodic
        autocorrelation and the pulse no inter-symbol interference), a tone's or a DC offset's as
        large as at ``W``: every start of such input passes the autocorrelation test, and this
        cheap test keeps it from the verification."""
        count = hi - lo
        return lag_metric(self._windows(np.array([lo]), count - 1 + self.half + lag)[:, 0], self.half, lag, count)

    def _windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """``(Nr, K, length)`` samples from each absolute start (a gather)."""
        idx = (np.asarray(starts, dtype=np.int64) - self._base)[:, None] + np.arange(length)[None, :]
        return self._buf[:, idx]

    def _metrics_around(self, firsts: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """Schmidl-Cox metric and ``P`` at ``count`` consecutive starts from each of ``firsts``:
        ``(K, count)`` each."""
        W = self.half
        y = self._windows(firsts, count - 1 + 2 * W)  # (Nr, K, count - 1 + 2W)
        prod = (np.conj(y[..., :count - 1 + W]) * y[..., W:]).sum(0)  # (K, count - 1 + W)
        energy = (y.real ** 2 + y.imag ** 2).sum(0)
        zero = np.zeros((len(firsts), 1))
        cp = np.concatenate([zero, np.cumsum(prod, axis=1, dtype=np.complex128)], 1)
        ce = np.concatenate([zero, np.cumsum(energy, axis=1, dtype=np.float64)], 1)
        p = cp[:, W:W + count] - cp[:, :count]
        r = 0.5 * (ce[:, 2 * W:2 * W + count] - ce[:, :count])
        return np.abs(p) ** 2 / np.maximum(r, 1e-300) ** 2, p

    def _fine_cfo(self, starts: np.ndarray) -> np.ndarray:
        """Fine CFO (cycles per sample, within ``1 / (2 W)``) of preambles starting at ``starts``:
        the phase of the long periods' autocorrelation ``P`` at lag ``W``; in version 2 without
        the first ``FINE_GUARD`` symbols of the period (the coarse part's pulse tails)."""
        W = self.half
        if not self.long_offset:
            _, p = self._metrics_around(starts, 1)
            return np.angle(p[:, 0]) / (2 * np.pi * W)
        g = FINE_GUARD * self.sps
        y = self._windows(np.asarray(starts) + self.long_offset + g, 2 * W - g)
        p = np.einsum("rkn,rkn->k", np.conj(y[..., :W - g]), y[..., W:])
        return np.angle(p) / (2 * np.pi * W)

    def _coarse_cfo(self, starts: np.ndarray) -> np.ndarray:
        """Coarse CFO (cycles per sample) from the coarse part of preambles starting at ``starts``
        (version 2): the phase of its autocorrelation at one short period ``Ws = Ns sps``, over
        ``R - 1`` periods and every antenna; unambiguous within ``1 / (2 Ws)``."""
        ws = self.preamble.coarse_period * self.sps
        n = (self.preamble.coarse_repeats - 1) * ws
        y = self._windows(starts, n + ws)  # (Nr, K, n + Ws)
        p = np.einsum("rkn,rkn->k", np.conj(y[..., :n]), y[..., ws:])
        return np.angle(p) / (2 * np.pi * ws)

    def _detect(self, center: int, span: int, threshold: float) -> Detection | None:
        return self._detect_many(np.array([center]), span, threshold)[0]

    def _detect_many(self, centers: np.ndarray, span: int, threshold: float,
                     reference_cfo: float | None = None) -> list[Detection | None]:
        """Fine timing, CFO and verification of preambles starting within ``span`` samples of each
        of ``centers`` (absolute, ``(K,)``), all at once; ``None`` where the metrics do not pass
        the thresholds or the samples are not (all) held."""
        sps, L, W = self.sps, self.preamble.length, self.half
        centers = np.asarray(centers, dtype=np.int64)
        off = self.long_offset
        coarse = bool(off)
        held = (centers + min(0, off - W // 2) - span - INTERP_HALF - 2 >= self._base) & \
               (centers + span + L * sps + INTERP_HALF + 3 <= self.end)
        out: list[Detection | None] = [None] * len(centers)
        if not held.any():
            return out
        ok_idx = np.flatnonzero(held)
        cen = centers[ok_idx]
        cfo = self._fine_cfo(cen)  # (K,) within 1 / (2 N) cycles per symbol
        branch = np.zeros(len(cen), np.int64)  # multiples of 1 / W added to the fine CFO (version 2)
        if coarse:
            branch = np.round((self._coarse_cfo(cen) - cfo) * W).astype(np.int64)
        # correlation with the known preamble at integer lags, CFO derotated (each branch)
        lo = cen - span
        n_seg = 2 * span + (L - 1) * sps + 1
        idx = np.arange(2 * span + 1)[:, None] + np.arange(L)[None, :] * sps  # (D, L)
        ts = []
        branches = self._branches
        if coarse and reference_cfo is not None and \
                np.array_equal(branch, np.round((reference_cfo - cfo) * W).astype(np.int64)):
            # tracking: the coarse estimate and the previous frame's CFO agree on every branch
            # (two independent references); the neighbours' correlation is not needed
            branches = (0,)
        for b in branches:
            f = cfo + (branch + b) / W if coarse else cfo
            seg = self._windows(lo, n_seg) * np.exp(-2j * np.pi * f[:, None] * np.arange(n_seg)[None, :]).astype(np.complex64)
            c = seg[:, :, idx] @ self._ref_h  # (Nr, K, D, Nt): one product per antenna and candidate
            ts.append((np.abs(c) ** 2).sum(3).sum(0))  # (K, D); one axis at a time: the same whatever K
        if len(branches) > 1:  # only the right branch makes the coarse part correlate too: a wrong coarse estimate is caught here
            best = np.argmax(np.stack([t.max(1) for t in ts]), axis=0)  # (K,)
            corrected = best != 1
            branch = branch + best - 1
            t = np.stack(ts)[best, np.arange(len(cen))]
        else:
            t, corrected = ts[0], np.zeros(len(cen), bool)
        d = np.argmax(t, axis=1)
        inner = (d > 0) & (d < t.shape[1] - 1)  # a peak at the window's edge may lie outside it
        # second pass at the integer peak alone: the CFO measured there and the correlation at the
        # peak and its neighbours with that CFO, so that the result depends on the data at the
        # peak, not on where the search was centred (a replay gives the live frames bit for bit)
        peak = lo + d
        cfo = self._fine_cfo(peak)
        if coarse:
            cfo = cfo + branch / W
        n3 = 2 + (L - 1) * sps + 1
        seg = self._windows(peak - 1, n3) * np.exp(-2j * np.pi * cfo[:, None] * np.arange(n3)[None, :]).astype(np.complex64)
        idx3 = np.arange(3)[:, None] + np.arange(L)[None, :] * sps
        c3 = seg[:, :, idx3] @ self._ref_h
        t3 = (np.abs(c3) ** 2).sum(3).sum(0)  # (K, 3): lags peak - 1, peak, peak + 1
        tm, t0_, tp = t3[:, 0], t3[:, 1], t3[:, 2]
        den = tm - 2 * t0_ + tp
        mu = np.where(den < 0, np.clip(0.5 * (tm - tp) / np.where(den < 0, den, -1.0), -0.5, 0.5), 0.0)
        start = peak + mu  # (K,)
        # symbol-spaced samples at the fractional starts: verification and per-user CFO
        pos = start[:, None] + np.arange(L)[None, :] * sps  # (K, L)
        ys = interpolate(self._buf, (pos - self._base).reshape(-1)).reshape(self.nr, len(cen), L)
        ys *= np.exp(-2j * np.pi * cfo[:, None] * (pos - start[:, None])).astype(np.complex64)
        ref = np.conj(self._ref).astype(np.complex64)
        # the verification ignores the samples' mean: a tone (or a DC offset) is periodic at every
        # lag, the CFO estimate derotates it into a constant, and a constant correlates with the
        # sequences' (small, nonzero) sums; a preamble loses only that small part (2/(2N) of its energy)
        yc = ys - ys.mean(2, keepdims=True)
        cc = np.einsum("rkl,ml->rkm", yc, ref)  # (Nr, K, Nt); einsum: per frame the same whatever K
        energy = (np.abs(yc) ** 2).sum(2).sum(0)
        rho = (np.abs(cc) ** 2).sum(2).sum(0) / np.maximum(energy * L, 1e-300)
        t0 = np.round(start).astype(np.int64)
        # the autocorrelation at the start, and a quarter to half a period earlier: it must peak
        # here, not earlier. A preamble seen from a later symbol (cut by a gap or the start of the
        # stream) correlates as well with the streams' cyclic shifts (a shift by the spacing is
        # another stream's sequence), but its autocorrelation falls from an earlier start on.
        # Expected ratio of the largest earlier metric to the metric here: at most (3/4)^2 = 0.56
        # at a true start, at least 1 / 0.56 = 1.78 one shift late; PEAK_RATIO sits between them.
        m, _ = self._metrics_around(t0 + off - W // 2, W // 2 + 1)  # (K, W/2 + 1): starts t0 - W/2 .. t0
        metric, earlier = m[:, -1], m[:, :W // 4 + 1].max(1)
        n, o = self.preamble.period, self.preamble.coarse_length
        first = np.einsum("rkl,ml->rkm", ys[..., o:o + n], ref[:, o:o + n])
        second = np.einsum("rkl,ml->rkm", ys[..., o + n:], ref[:, o + n:])
        user = cfo[:, None] + np.angle((np.conj(first) * second).sum(0)) / (2 * np.pi * n * sps)  # (K, Nt)
        # a tone is periodic at every lag and correlates with the Zadoff-Chu sequences where its
        # frequency (after the CFO derotation, ambiguous by 1/W) meets one of their spectral
        # lines; its spectrum is one line, a preamble's is flat (measured max: 0.59 of the
        # energy in one line at N = 2, 0.15 at N = 8; a tone: >= 0.95 with 4x zero padding)
        spec = (np.abs(np.fft.fft(ys, 4 * L, axis=2)) ** 2).sum(0)  # (K, 4L)
        tonal = spec.max(1) / np.maximum(L * (np.abs(ys) ** 2).sum(2).sum(0), 1e-300) > TONE_FRACTION
        good = inner & (rho >= self.threshold_corr) & (metric >= threshold) & (earlier <= PEAK_RATIO * metric) & ~tonal
        for j in np.flatnonzero(good & corrected):
            self._count("cfo-branch")  # the coarse estimate was a branch off; the correlation corrected it
        for j in np.flatnonzero(good):
            out[ok_idx[j]] = Detection(float(start[j]), float(cfo[j]), float(metric[j]), float(rho[j]),
                                       user[j].astype(np.float64), self._lost)
        return out

    # ------------------------------------------------------------------ output
    def _emit(self, det: Detection, successor: Detection | None, out: list) -> None:
        """Hand out ``det``'s frame (numbered; its symbols are cut in :meth:`_render`)."""
        number = int(round((det.start + det.lost - self.origin) / self.frame_samples))
        if self._last_number is not None and number <= self._last_number:
            self._count("misnumbered")
            return
        self.origin = det.start + det.lost - number * self.frame_samples
        self._last_number = number
        self._silent_from = max(self._silent_from, int(det.start))
        self._count("frames")
        out.append(SyncedFrame(number, det.start, det.cfo, det.metric, det.correlation, det.user_cfo,
                               np.zeros(0, np.complex64)))

    def _render(self, frames: list[SyncedFrame]) -> list[SyncedFrame]:
        """Cut the symbols of the frames handed out: interpolated at their starts plus
        ``(preamble + j) * sps``, CFO derotated. Last check, on the pilots: a frame whose
        LS fit leaves clearly more of the pilot energy unexplained than its preamble's SNR allows
        (:func:`pilots_misaligned`) is dropped (``pilot-residual``). Returns the frames kept."""
        if not frames:
            return frames
        rel = (self.preamble.length + np.arange(self.air_length)) * self.sps  # samples from the start
        ys = np.stack([interpolate_grid(self._buf, f.start + rel[0] - self._base, self.sps, len(rel)) for f in frames])
        cfo = np.array([f.cfo for f in frames])
        ys *= np.exp(-2j * np.pi * cfo[:, None, None] * rel[None, None, :]).astype(np.complex64)  # (F, Nr, L)
        bad = pilots_misaligned(ys[..., :self.layout.n_pilots], self.layout, np.array([f.correlation for f in frames]))
        kept = []
        for i, f in enumerate(frames):
            if bad[i]:
                self._count("pilot-residual")
                self.counts["frames"] -= 1
                continue
            f.symbols = ys[i]
            kept.append(f)
        return kept

    @property
    def phase_noise(self) -> float:
        """The phase-noise increment (rad^2 per vector) the tracker measured: the median of the
        last ``PHASE_NOISE_FRAMES`` frames' estimates (a frame whose decisions failed is an
        outlier); 0 before the first frame."""
        return float(np.median(self._phase_noise)) if self._phase_noise else 0.0

    def _track(self, frames: list[SyncedFrame]) -> None:
        """Phase tracking (with a constellation) and the tracking pilots' removal.

        What the tracker carries from frame to frame (the users' rates, the phase noise and the
        chunk length chosen from it) changes only every ``STATE_FRAMES`` frames: frames are tracked
        in groups that end on multiples of it, so a frame's result does not depend on how the
        stream was cut into pieces (a replay gives the live decisions bit for bit)."""
        body = np.stack([f.symbols for f in frames])
        if self.constellation is None:
            out, _ = remove_tracking(body, self.layout, self.pilot_spacing)
            for i, f in enumerate(frames):
                f.symbols = np.ascontiguousarray(out[i])
            return
        pos = 0
        while pos < len(frames):
            if self._tracked % STATE_FRAMES == 0:  # a new group: the state it is tracked with
                noise = float(np.median(self._measurement_noise)) if self._measurement_noise else 0.0
                self._state = (chunk_for(noise, self.phase_noise, self.chunk), self.user_rates.prior())
            chunk, prior = self._state
            n = STATE_FRAMES - self._tracked % STATE_FRAMES
            group = frames[pos:pos + n]
            t = track_phase(body[pos:pos + n], self.layout, self.constellation, chunk, spacing=self.pilot_spacing,
                            user_prior=prior)
            for i, f in enumerate(group):
                f.symbols, f.phase, f.slips, f.user_rate = t.frames[i], t.phase[i], int(t.slips[i]), t.user_rate[i]
                self.user_rates.update(t.user_measured[i])
                if np.isfinite(t.phase_noise[i]) and np.isfinite(t.noise[i]):
                    self._phase_noise = (self._phase_noise + [float(t.phase_noise[i])])[-PHASE_NOISE_FRAMES:]
                    self._measurement_noise = (self._measurement_noise + [float(t.noise[i])])[-PHASE_NOISE_FRAMES:]
                if f.slips:
                    self.counts["cycle-slip"] = self.counts.get("cycle-slip", 0) + f.slips
            self._tracked += len(group)
            pos += n


def pilots_misaligned(y_p: np.ndarray, layout: FrameLayout, correlation: np.ndarray) -> np.ndarray:
    """Whether frames' received pilots ``y_p (F, Nr, Np)`` are clearly not the pilots, given each
    frame's preamble correlation ``rho ~ s / (1 + s)`` (``s`` its SNR per antenna).

    The LS fit leaves the unexplained fraction ``u`` of the pilot energy (:func:`pilot_fit`):
    about ``u0 = (1 - Nt/Np) / (1 + s) = (1 - Nt/Np) (1 - rho)`` for aligned pilots, about
    ``1 - Nt/Np`` for a window of data. A frame is refused when ``u`` exceeds the geometric mean of
    the two (``False`` for all frames when ``Np = Nt``: no residual). Detects a frame cut in the
    wrong place that passed both preambles' checks."""
    if layout.n_pilots <= layout.nt:
        return np.zeros(y_p.shape[0], dtype=bool)
    u = pilot_fit(y_p, layout)[2]
    full = 1.0 - layout.nt / layout.n_pilots
    expected = full * np.clip(1.0 - np.asarray(correlation), 1e-6, 1.0)
    return u > np.sqrt(expected * full)


def lag_metric(y: np.ndarray, window: int, lag: int, count: int) -> np.ndarray:
    """Schmidl-Cox metric ``|P|^2 / R^2`` of ``y (Nr, n)`` (summed over the streams) at ``lag``
    samples with windows of ``window`` samples, for starts ``0 .. count - 1`` (``n >= count - 1
    + window + lag``): ``P`` the correlation of each window with the one ``lag`` later, ``R`` the
    mean energy of the two."""
    y = np.asarray(y[:, :count - 1 + window + lag])
    prod = (np.conj(y[:, :count - 1 + window]) * y[:, lag:lag + count - 1 + window]).sum(0)
    energy = (y.real ** 2 + y.imag ** 2).sum(0)
    cp = np.concatenate([[0], np.cumsum(prod, dtype=np.complex128)])
    ce = np.concatenate([[0], np.cumsum(energy, dtype=np.float64)])
    p = cp[window:window + count] - cp[:count]
    r = 0.5 * ((ce[window:window + count] - ce[:count]) + (ce[window + lag:window + lag + count] - ce[lag:lag + count]))
    return np.abs(p) ** 2 / np.maximum(r, 1e-300) ** 2


def periodicity(y: np.ndarray, w: int, span: int) -> float:
    """How strongly ``y (Nr, n)`` repeats itself every ``w`` samples: the largest
    :func:`lag_metric` at lag ``w`` over starts ``0 .. span - 1`` (``n >= span + 2 w``)."""
    return float(lag_metric(y, w, w, span).max())

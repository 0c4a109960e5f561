"""Phase tracking inside a frame: tracking pilots, the common phase tracker that uses them (and
the decisions between them), cycle-slip detection, and each user's residual rotation (numpy,
no GNU Radio).

**Tracking pilots** (optional; a frame-format parameter ``spacing`` = ``P``): on air, a known
vector follows every ``P`` data vectors::

    [ preamble | Np pilots | P data, t_0, P data, t_1, ... , rest of the data ]

``floor(Nd / P)`` tracking pilots; ``t_j`` is column ``j mod Np`` of the pilot matrix (unit
modulus, every user's symbol nonzero, so one vector gives every user's phase). The frame
synchroniser removes them: the LS estimator and the detectors see ``Np + Nd`` vectors as
without them. Cost: ``1 / (P + 1)`` of the data rate (3 % for ``P = 32``).

**Why**: the decision-directed tracker alone follows the phase modulo the constellation's
symmetry (90 degrees for QPSK and 16-QAM): when phase noise or a residual CFO moves the phase by
more than 45 degrees between two of its estimates, it locks onto the rotated constellation and
every later decision of the frame is wrong -- a cycle slip, unnoticed. A known vector has no
such ambiguity: at each tracking pilot the tracker compares its prediction with the pilot's
phase; a difference of a quarter turn or more is a slip (counted), and the decisions since the
previous anchor are re-derotated from the pilots (:func:`track_phase`).

**The tracker** (:func:`track_phase`): a sequential pass over chunks of data vectors (the
second-order decision-directed loop of the single-carrier receiver: predicted phase, MMSE
decisions, the maximum-likelihood phase given them, a frequency update) anchored at each tracking
pilot, then a per-vector refinement: each vector's phase error given its decisions (known
symbols on pilots), smoothed over the frame by the steady-state fixed-interval smoother of a
random-walk phase in white measurement noise (weights ``lambda^|k|``, ``lambda`` from the ratio
of the phase-noise increment, estimated from the measurements themselves, to the measurement
variance). Phase noise of 1e-3 rad^2 per sample moves the phase by ~14 degrees RMS over a
16-vector chunk at 4 samples per symbol: per-vector smoothing is what follows it.

**Per-user rotation** (separate user oscillators): each user's symbols turn at its own residual
frequency against the common phase; the receiver cannot remove that from the antennas' samples
(they mix the users), so the tracker estimates each user's rate ``r_k`` (radians per vector,
phase zero at the middle of the pilot block, where the channel estimate is referenced) from the
decisions of every chunk, and the detectors remove it: user ``k`` of output vector ``n`` is
rotated by ``r_k (n - (Np - 1) / 2)`` (:func:`user_rotation`). The channel becomes
``H diag(exp(j r (n - c)))``; for ZF and MMSE, derotating the equalised streams is exact
(``(D^H G D + s I)^{-1} D^H H^H = D^H (G + s I)^{-1} H^H`` for a unitary diagonal ``D``); a
nonlinear detector is given the column-rotated channel per chunk of vectors instead.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from ..params import Param, check_all
from .frames import FrameLayout

PARAMS = {"pilot_spacing": Param(int, 0, 65536, doc="data vectors between tracking pilots (0: none)")}
SLIP = math.pi / 4  # a tracking pilot this far (or more) from the prediction: a cycle slip
SLIP_WINDOW = 8  # vectors a decision-directed track averages (the slip count with tracking pilots)
REFINE_ITERATIONS = 2
Q_FLOOR = 1e-7  # rad^2 per vector: the smoother's least phase-noise increment (a stable oscillator)
LAG = 8  # vectors: the long lag of the phase-noise estimate
# a frame re-tracked with its own users' rates (track_phase, bootstrap) when they turn its users by
# this much at its end (0.35 rad: ~2e-4 cycles per symbol on a 272-vector frame, above the 99th
# percentile of a frame's own estimate without separate oscillators at 10 dB, 4 x 8, measured 0.30;
# what is smaller waits for the prior averaged over frames), and the result kept when its decisions
# fit better by this factor
BOOTSTRAP_ROTATION = 0.35
BOOTSTRAP_FIT = 0.8
BOOTSTRAP_SIGNIFICANCE = 3.0  # ... and beyond this many standard errors of the frame's own estimate
BOOTSTRAP_BAD_FIT = 2.0  # ... or when its decisions fit worse than this many times the noise explains (measured
# without separate oscillators: 1.1-1.8 at 6-14 dB, 4 x 8 QPSK; with them, before the prior: 2-3)
CHUNK = 16  # most data vectors per chunk of the sequential pass (chunk_for)
CHUNK_SCALE = 6.0  # chunk_for: 8 vectors at 10 dB (4 x 8) and 1e-3 rad^2 per sample (4 samples per symbol)


# ----------------------------------------------------------------------------------- the format
def tracking_count(n_data: int, spacing: int) -> int:
    """Tracking pilots in a frame of ``n_data`` data vectors with one after every ``spacing``."""
    check_all(PARAMS, {"pilot_spacing": spacing})
    return int(n_data) // int(spacing) if spacing else 0


def air_length(layout: FrameLayout, spacing: int) -> int:
    """Vectors on air after the preamble: pilots, data and tracking pilots."""
    return layout.length + tracking_count(layout.n_data, spacing)


def tracking_positions(n_data: int, spacing: int) -> np.ndarray:
    """Where the tracking pilots sit among the ``n_data + count`` vectors after the pilot block."""
    j = np.arange(tracking_count(n_data, spacing))
    return j * (spacing + 1) + spacing


def tracking_symbols(layout: FrameLayout, count: int) -> np.ndarray:
    """The tracking pilots, ``(Nt, count)`` complex64: column ``j mod Np`` of the pilot matrix."""
    x_p = layout.pilots().numpy()
    return x_p[:, np.arange(count) % layout.n_pilots].astype(np.complex64)


def insert_tracking(data: np.ndarray, layout: FrameLayout, spacing: int) -> np.ndarray:
    """Data ``(..., Nt, Nd)`` -> ``(..., Nt, Nd + count)`` with the tracking pilots in place."""
    count = tracking_count(layout.n_data, spacing)
    if not count:
        return data
    out = np.empty((*data.shape[:-1], layout.n_data + count), dtype=np.result_type(data.dtype, np.complex64))
    pos = tracking_positions(layout.n_data, spacing)
    mask = np.ones(out.shape[-1], bool)
    mask[pos] = False
    out[..., mask] = data
    out[..., pos] = tracking_symbols(layout, count)
    return out


def remove_tracking(body: np.ndarray, layout: FrameLayout, spacing: int) -> tuple[np.ndarray, np.ndarray]:
    """Received ``(..., Nr, Np + Nd + count)`` -> (frames without the tracking pilots ``(..., Nr, Np
    + Nd)``, the tracking pilots ``(..., Nr, count)``)."""
    count = tracking_count(layout.n_data, spacing)
    if not count:
        return body, body[..., :0]
    pos = layout.n_pilots + tracking_positions(layout.n_data, spacing)
    mask = np.ones(body.shape[-1], bool)
    mask[pos] = False
    return body[..., mask], body[..., pos]


# ----------------------------------------------------------------------------------- the tracker
def pilot_fit(y_p: np.ndarray, layout: FrameLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LS fit of received pilots ``y_p (F, Nr, Np)``: ``(H (F, Nr, Nt), residual noise variance (F,),
    unexplained fraction of the pilot energy (F,))`` -- :mod:`neuralmimo.receiver.estimation` and
    :func:`neuralmimo.receiver.alignment.unexplained_fraction` in numpy with per-frame products (a
    frame's numbers do not depend on how many frames are fitted together, see :func:`track_phase`)."""
    x_p = layout.pilots().numpy().astype(np.complex128)
    proj = (x_p.conj().T @ np.linalg.inv(x_p @ x_p.conj().T)).astype(np.complex64)  # (Np, Nt), fixed
    h = y_p @ proj
    resid = y_p - h @ x_p.astype(np.complex64)
    r2 = (np.abs(resid) ** 2).sum(2).sum(1).astype(np.float64)
    e2 = (np.abs(y_p) ** 2).sum(2).sum(1).astype(np.float64)
    dof = y_p.shape[1] * (layout.n_pilots - layout.nt)
    nv = r2 / dof if dof > 0 else np.full(len(r2), np.nan)
    return h, nv, np.where(e2 > 0, r2 / np.maximum(e2, 1e-300), np.inf)


def nearest_point(constellation):
    """A function mapping complex values to the nearest constellation point (same shape). Square
    constellations (BPSK, QPSK, 16-QAM: points = a product of per-dimension levels) are sliced per
    dimension (a search among midpoints), others by distance to every point."""
    points = constellation.points.numpy().astype(np.complex64)
    re, im = np.unique(points.real), np.unique(points.imag)
    if len(re) * len(im) != len(points):
        return lambda z: points[np.argmin(np.abs(z[..., None] - points) ** 2, axis=-1)]
    mid_re, mid_im = (re[1:] + re[:-1]) / 2, (im[1:] + im[:-1]) / 2
    steps = np.diff(re)
    if len(re) == len(im) and len(re) > 1 and np.allclose(re, im) and np.allclose(steps, steps[0]):
        # a uniform grid (BPSK's imaginary axis aside: QPSK, 16-QAM): rounding, no search
        lo, step, top = np.float32(re[0]), np.float32(steps[0]), np.float32(len(re) - 1)

        if len(re) == 2:  # BPSK's real axis / QPSK: the sign
            def two(z):
                out = np.where(z.real >= 0, re[1], re[0]).astype(np.complex64)
                out.imag = np.where(z.imag >= 0, im[1], im[0])
                return out
            return two

        def grid(z):
            i_re = np.minimum(np.maximum(np.rint((z.real - lo) / step), 0), top)
            i_im = np.minimum(np.maximum(np.rint((z.imag - lo) / step), 0), top)
            return ((lo + i_re * step) + 1j * (lo + i_im * step)).astype(np.complex64)
        return grid

    def slice_(z):
        return (re[np.searchsorted(mid_re, z.real)] + 1j * im[np.searchsorted(mid_im, z.imag)]).astype(np.complex64)
    return slice_


@dataclass
class Tracked:
    """What :func:`track_phase` gives: ``frames (F, Nr, Np + Nd)`` complex64 derotated by the common
    phase, tracking pilots removed; ``phase (F, Np + Nd)`` that phase (rad); ``slips (F,)`` cycle
    slips detected at tracking pilots; ``user_rate (F, Nt)`` each user's residual rotation removed
    by the detectors (rad per output vector, zero at the pilot block's middle; :func:`user_rotation`),
    the prior given, relative to this frame's common phase; ``user_measured (F, Nt)`` the rates
    this frame measured (rad per on-air vector, mean zero over the users): what a running prior
    is made of (:class:`UserRates`)."""

    frames: np.ndarray
    phase: np.ndarray
    slips: np.ndarray
    user_rate: np.ndarray
    user_measured: np.ndarray
    phase_noise: np.ndarray = None  # (F,) the phase-noise increment the refinement estimated, rad^2 per vector
    fit: np.ndarray = None  # (F,) mean squared distance of the equalised data to their decisions
    noise: np.ndarray = None  # (F,) one vector's phase-measurement variance, rad^2 (chunk_for)


class UserRates:
    """Each user's residual rotation averaged over frames (users' oscillators drift slowly; one
    frame's estimate is too noisy to apply: at 10 dB, 4 x 8 QPSK, ~3e-4 rad per vector, ~5
    degrees at a 272-vector frame's end, which costs more than it removes when the users share
    an oscillator). An exponential mean over ``1 / alpha`` frames, applied only once it is
    significant (``SIGNIFICANCE`` standard errors) and matters (a rotation above ``MIN_ROTATION``
    rad at the frame's end): without separate oscillators the tracker is the common one."""

    SIGNIFICANCE = 5.0
    MIN_ROTATION = 0.02

    def __init__(self, nt: int, half_length: float, alpha: float = 1 / 16):
        self.alpha, self.half_length = float(alpha), float(half_length)
        self.mean, self.sq, self.frames = np.zeros(nt), np.zeros(nt), 0

    def update(self, measured: np.ndarray) -> None:
        """One frame's ``user_measured`` (rad per on-air vector, mean zero)."""
        m = np.asarray(measured, dtype=np.float64)
        if not np.isfinite(m).all():
            return
        self.frames += 1
        a = max(self.alpha, 1.0 / self.frames)
        self.mean += a * (m - self.mean)
        self.sq += a * (m * m - self.sq)

    def prior(self) -> np.ndarray:
        """The rates to apply: the mean where significant and large enough, else zeros."""
        if self.frames < 4:
            return np.zeros_like(self.mean)
        var = np.maximum(self.sq - self.mean ** 2, 0.0)
        n_eff = min(self.frames, (2 - self.alpha) / self.alpha)
        stderr = np.sqrt(var / n_eff)
        on = (np.abs(self.mean) > self.SIGNIFICANCE * stderr).any() and \
            np.abs(self.mean).max() * self.half_length > self.MIN_ROTATION
        return self.mean.copy() if on else np.zeros_like(self.mean)


def user_rotation(user_rate: np.ndarray, layout: FrameLayout, first: int = 0, count: int | None = None) -> np.ndarray:
    """``exp(j r_k (n - (Np - 1) / 2))`` for output vectors ``n = Np + first .. Np + first + count - 1``
    (data vectors ``first ..``): ``(..., Nt, count)`` complex64 from ``user_rate (..., Nt)``. A
    detector's estimate of user ``k``'s symbol ``n`` is multiplied by the conjugate."""
    count = layout.n_data - first if count is None else count
    n = layout.n_pilots + first + np.arange(count) - (layout.n_pilots - 1) / 2
    return np.exp(1j * np.asarray(user_rate, dtype=np.float64)[..., None] * n).astype(np.complex64)


def chunk_for(noise: float, phase_noise: float, longest: int = CHUNK) -> int:
    """Data vectors per chunk of the sequential pass, from the phase measurement's noise ``noise``
    (rad^2 per vector) and the phase-noise increment ``phase_noise`` (rad^2 per vector; 0:
    unknown). A chunk of ``c`` vectors measures the phase with variance ``noise / c`` while the
    phase moves ``c q`` between chunks: ``c ~ sqrt(noise / q)`` balances them (scaled so that 16
    vectors slipped at 1e-3 rad^2 per sample and 10 dB, where 8 do not; at 0-4 dB long chunks are
    what keeps the decisions' errors from turning the track). At least 4, at most ``longest``."""
    if not phase_noise > 0:
        return int(longest)
    return int(np.clip(round(CHUNK_SCALE * math.sqrt(noise / phase_noise)), 4, longest))


def _chunks(layout: FrameLayout, spacing: int, chunk: int) -> list[tuple[int, int, bool]]:
    """``(start, end, is_tracking_pilot)`` over the vectors after the pilot block (on-air order):
    chunks of at most ``chunk`` data vectors that never straddle a tracking pilot, and each
    tracking pilot alone."""
    out, pos = [], 0
    tp = set(tracking_positions(layout.n_data, spacing).tolist())
    total = layout.n_data + len(tp)
    while pos < total:
        if pos in tp:
            out.append((pos, pos + 1, True))
            pos += 1
            continue
        nxt = min([p for p in tp if p > pos], default=total)
        end = min(pos + chunk, nxt)
        out.append((pos, end, False))
        pos = end
    return out


def _smoothing_weights(q: np.ndarray, r: np.ndarray, length: int) -> np.ndarray:
    """Kernels ``lambda^|k|`` for ``|k| < length`` per frame, ``(F, 2 length - 1)``: the steady-state
    fixed-interval smoother of a random walk with increment variance ``q`` seen in white noise of
    variance ``r``, ``lambda = 1 + rho / 2 - sqrt(rho + rho^2 / 4)``, ``rho = q / r``."""
    rho = q / np.maximum(r, 1e-12)
    lam = 1 + rho / 2 - np.sqrt(rho + rho * rho / 4)
    k = np.abs(np.arange(-(length - 1), length))
    return lam[:, None] ** k[None, :]


def _kernel_spectra(kernels: np.ndarray, m: int) -> np.ndarray:
    """The kernels' spectra for :func:`_smooth` on ``m`` vectors (zero-padded past ``3 m``)."""
    return np.fft.rfft(kernels, 1 << int(math.ceil(math.log2(3 * m))))


def _smooth(values: np.ndarray, weights: np.ndarray, spectra: np.ndarray) -> np.ndarray:
    """Normalised convolution per frame with the kernels whose spectra are ``spectra``
    (:func:`_kernel_spectra`): ``sum_k K[k] w[n-k] v[n-k] / sum_k K[k] w[n-k]``, ``(F, M)``."""
    f, m = values.shape
    n = 2 * (spectra.shape[1] - 1)
    both = np.fft.irfft(np.fft.rfft(np.concatenate([weights * values, weights]), n) * np.concatenate([spectra, spectra]), n)
    num, den = both[:f, m - 1:2 * m - 1], both[f:, m - 1:2 * m - 1]
    return num / np.maximum(den, 1e-30)


def track_phase(frames: np.ndarray, layout: FrameLayout, constellation, chunk: int = CHUNK, freq_gain: float = 0.5,
                spacing: int = 0, user_prior: np.ndarray | None = None, bootstrap: int = 2,
                adapt_users: bool = False) -> Tracked:
    """Track the common phase and each user's residual rotation through frames ``(F, Nr, Np + Nd +
    count)`` complex64 at one sample per symbol (CFO derotated, tracking pilots in place when
    ``spacing``), module docstring.

    1. ``H`` and the noise variance from the pilot block (LS), the MMSE filter ``W``.
    2a. With tracking pilots: the start is the pilots' own phases (known symbols: no ambiguity),
        unwrapped and linearly interpolated from the pilot block's reference. Cycle slips: where a
        decision-directed track alone (the decisions' phase modulo the constellation's symmetry,
        ``exp(j M phase)`` averaged over ``SLIP_WINDOW`` vectors) changes between two pilots by a
        quarter turn or more otherwise than the pilots do -- counted; the pilots undid them.
    2b. Without: a sequential pass: chunk ``c`` is derotated by the predicted phase ``phi + f d``
        (``d`` vectors on), users by ``user_prior`` (rad per on-air vector, :class:`UserRates`),
        sliced to ``x_hat``; ``e = angle(sum conj(H D x_hat) y)`` (over antennas and vectors: the
        maximum-likelihood common phase given the decisions) updates ``phi`` and the frequency
        ``f += freq_gain e / d`` (reset when it would turn a chunk by 45 degrees: a runaway).
    3. Refinement (once after 2a, twice after 2b): per-vector phase errors given the decisions
       (known symbols on all pilots), weighted by ``|H D x_hat|^2 / sigma^2``, smoothed over the
       frame (:func:`_smoothing_weights`; the phase-noise increment estimated from the
       measurements themselves, :func:`_phase_noise`).
    4. Each user's residual rotation, least squares on time through the pilot block's middle: its
       angles at the tracking pilots (2a) or per data chunk from the decisions, unwrapped (2b); the
       frame's own measurement of the users' rates (``user_measured``, with its standard error). A
       frame whose users turn otherwise than the prior says (significantly, and by
       ``BOOTSTRAP_ROTATION`` at its end) or whose decisions fit badly is tracked again with its
       own rates as the prior (which in 2b follows the users along the pass, ``adapt_users``; at
       most ``bootstrap`` times), and that is kept where the equalised data fit their decisions
       better (``fit``, by ``BOOTSTRAP_FIT``).
    Every product is a per-frame matrix product (numpy's ``matmul`` over stacked matrices: one
    product per frame) or an elementwise product summed along a frame's own axes, and every inverse
    a per-frame solve, so a frame's result does not depend on how many frames are processed
    together (a replay gives the live decisions bit for bit).

    Frame-length limit without tracking: a residual CFO ``df`` (cycles per symbol) turns the
    phase by ``2 pi df Nd`` over the data; LS-based detection of QPSK loses ~0.5 dB at an rms
    phase error of ~6 degrees, so ``Nd < 1 / (60 df)`` (e.g. ``df = 1e-4``: ``Nd < 170``).
    """
    ctx = _Context.of(frames, layout, constellation, spacing, user_prior, adapt_users)
    f, count = ctx.f, ctx.count
    rate = ctx.rate
    if count:
        phase_v, anchors = _pilot_start(ctx)
        slips = np.zeros(f, np.int64)
    else:
        phase_v, slips, rate = _sequential_start(ctx, chunk, freq_gain, adapt_users)
    # from the tracking pilots' start one pass is enough (measured: the same SER at 1e-3 and 3e-3
    # rad^2 per sample); from the decision-directed start, two
    phase_v, q, err, x_hat = _refine(ctx, phase_v, rate, 1 if count else REFINE_ITERATIONS)
    if count:
        slips = _slips_at_pilots(ctx, phase_v + err, anchors)
    y, measured, stderr, fit = _measure_users(ctx, phase_v, rate, x_hat, chunk)
    out, _ = remove_tracking(y, layout, spacing)
    kept = np.ones(ctx.m_total, bool)
    kept[ctx.tp_pos] = False
    # the users' rates in output vectors (tracking pilots removed): the same rotation per on-air vector
    # spread over fewer output vectors
    scale = (layout.length + count - 1 - ctx.center) / max(layout.length - 1 - ctx.center, 1.0)
    res = Tracked(out, phase_v[:, kept], slips, rate * scale, measured, q, fit, ctx.noise)
    if bootstrap:
        # this frame's users turn otherwise than the prior says, by a rotation that matters: track it
        # again with its own rates, following them along the pass, and keep what fits the decisions
        # clearly better (the first frames of a link whose users have separate oscillators, before
        # the prior over frames is established; the measurement itself falls short where the
        # prior's decisions turned, hence the adaptation)
        delta = measured - (rate - rate.mean(-1, keepdims=True))
        # ... or its decisions fit badly (users turned so far that their residuals wrapped and cancel):
        # the equalised noise alone gives a fit of about sigma^2 mean(diag(W W^H))
        expected = ctx.nv * (np.abs(ctx.w) ** 2).sum(-1).mean(-1)
        turned = (np.abs(delta) * (ctx.m_total - ctx.center) > BOOTSTRAP_ROTATION) & \
            (np.abs(delta) > BOOTSTRAP_SIGNIFICANCE * stderr)
        own = turned.any(-1) | (fit > BOOTSTRAP_BAD_FIT * expected)
        if own.any():
            again = track_phase(frames[own], layout, constellation, chunk, freq_gain, spacing, measured[own],
                                bootstrap=bootstrap - 1, adapt_users=True)
            better = np.zeros(f, bool)
            better[own] = again.fit < BOOTSTRAP_FIT * fit[own]
            pick = better[own]
            for name in ("frames", "phase", "slips", "user_rate", "user_measured", "phase_noise", "fit", "noise"):
                getattr(res, name)[better] = getattr(again, name)[pick]
    return res


@dataclass
class _Context:
    """What every step of :func:`track_phase` shares: the frames ``y (F, Nr, M)``, the format (known
    symbols, tracking pilots' positions, times from the pilot block's middle), the pilot block's
    LS channel ``h``, noise variance ``nv``, MMSE filter ``w``, each user's energy, the equalised
    ``zy = W y`` and matched ``gy = H^H y`` of every vector (a phase only multiplies them), the
    users' prior rates relative to the common phase and whether any user turns."""

    layout: FrameLayout
    y: np.ndarray
    f: int
    nt: int
    n_p: int
    count: int
    m_total: int
    known: np.ndarray
    is_known: np.ndarray
    tp_pos: np.ndarray
    slicer: object
    symmetry: float
    center: float
    t_all: np.ndarray
    h: np.ndarray
    nv: np.ndarray
    w: np.ndarray
    energy: np.ndarray
    noise: np.ndarray
    rate: np.ndarray
    users: bool
    zy: np.ndarray
    gy: np.ndarray
    chunks: list
    mids: np.ndarray

    @classmethod
    def of(cls, frames, layout, constellation, spacing, user_prior, adapt_users) -> "_Context":
        f = frames.shape[0]
        nt, n_p = layout.nt, layout.n_pilots
        count = tracking_count(layout.n_data, spacing)
        if frames.shape[2] != layout.length + count:
            raise ValueError(f"frames of {frames.shape[2]} vectors, expected {layout.length + count}")
        y = frames.astype(np.complex64, copy=False)
        m_total = layout.length + count
        known, is_known, tp_pos = _known(layout, spacing)
        center = (n_p - 1) / 2  # the pilot block's phase reference
        h, nv, _ = pilot_fit(y[..., :n_p], layout)
        nv = np.nan_to_num(nv, nan=0.0)
        w = _mmse(h, nv, nt)
        energy = (np.abs(h) ** 2).sum(1)  # (F, Nt): each user's weight in the common phase
        prior = np.zeros(nt) if user_prior is None else np.asarray(user_prior, dtype=np.float64)
        rate = _relative(np.broadcast_to(prior, (f, nt)), energy)  # relative to this frame's common phase
        return cls(layout, y, f, nt, n_p, count, m_total, known, is_known, tp_pos, nearest_point(constellation),
                   math.pi if constellation.name == "bpsk" else math.pi / 2,  # rotations the decisions cannot see
                   center, np.arange(m_total) - center, h, nv, w, energy,
                   # one vector's phase-measurement noise, nv / (2 |H x|^2), |H x|^2 ~ the channel's energy
                   np.maximum(nv, 1e-12) / (2 * np.maximum(energy.sum(1), 1e-12)),
                   rate, bool(rate.any()) or adapt_users, w @ y, h.conj().transpose(0, 2, 1) @ y,
                   [], np.zeros(0))  # the chunks: set by the sequential pass (2b), unused after the pilots' start

    def rotation(self, rate: np.ndarray, cols) -> np.ndarray:
        """Each user's rotation ``exp(j r t)`` at the vectors ``cols``, ``(F, Nt, n)`` complex64."""
        return np.exp(1j * rate[..., None] * self.t_all[cols]).astype(np.complex64)


def _pilot_start(ctx: _Context) -> tuple[np.ndarray, np.ndarray]:
    """2a: the tracking pilots' own phases (known symbols: no ambiguity), unwrapped from the pilot
    block's reference (0 at its middle) and linearly interpolated: ``(phase (F, M), anchors (F,
    1 + count))``."""
    tp = ctx.tp_pos
    rot = ctx.rotation(ctx.rate, tp) if ctx.users else 1.0
    theta = np.angle((np.conj(ctx.known[None, :, tp] * rot) * ctx.gy[..., tp]).sum(1))  # (F, count)
    anchors = np.unwrap(np.concatenate([np.zeros((ctx.f, 1)), theta], 1), axis=1)
    j, frac = _interpolation(tp.astype(np.float64), ctx.center, ctx.m_total)
    return anchors[:, j] * (1 - frac) + anchors[:, j + 1] * frac, anchors


def _sequential_start(ctx: _Context, chunk: int, freq_gain: float, adapt_users: bool):
    """2b: the sequential decision-directed pass over chunks of ``chunk`` data vectors (docstring of
    :func:`track_phase`): ``(phase (F, M), slips (F,), users' rates (F, Nt))``; it also sets the
    context's chunks to these."""
    f, nt, n_p, center = ctx.f, ctx.nt, ctx.n_p, ctx.center
    ctx.chunks = _chunks(ctx.layout, 0, chunk)
    ctx.mids = mids = np.array([(a + b - 1) / 2 + n_p for a, b, _ in ctx.chunks])
    rate, users = ctx.rate, ctx.users
    phase = np.zeros((f, len(ctx.chunks)))
    phi, freq = np.zeros(f), np.zeros(f)
    last_t = center
    # adapt_users: each user's rate follows its residual angles along the pass (least squares on
    # time through the pilots' middle, the prior counting as one chunk four chunks away)
    s_tt = np.full((f, nt), (4.0 * chunk) ** 2)
    s_tp = rate * s_tt
    for c, (a, b, _) in enumerate(ctx.chunks):
        a, b = a + n_p, b + n_p
        t = mids[c]
        step = t - last_t
        pred = phi + freq * step
        turn = np.exp(-1j * pred).astype(np.complex64)[:, None, None]
        rot = ctx.rotation(rate, slice(a, b)) if users else None  # (F, Nt, n)
        z = ctx.zy[..., a:b] * turn
        x_hat = ctx.slicer(z * rot.conj() if users else z)
        xr = x_hat * rot if users else x_hat
        # e = angle(sum over antennas and vectors of conj(H D x_hat) y e^{-j pred})
        e = np.angle((np.conj(xr) * ctx.gy[..., a:b]).sum(2).sum(1) * np.exp(-1j * pred))
        freq = freq + freq_gain * e / max(step, 1.0)
        # a frequency that turns a chunk by 45 degrees is not a residual CFO but the loop running away
        # on wrong decisions (seen at 1e-3 rad^2 phase noise): start it again
        freq[np.abs(freq) * chunk > math.pi / 4] = 0.0
        phi = pred + e
        phase[:, c] = phi
        last_t = t
        if adapt_users:
            zu = ctx.zy[..., a:b] * (turn * np.exp(-1j * e).astype(np.complex64)[:, None, None])
            ru = np.angle((np.conj(xr) * zu).sum(2))  # each user's residual after its rotation
            s_tp += (t - center) * (rate * (t - center) + ru)
            s_tt += (t - center) ** 2
            rate = _relative(s_tp / s_tt, ctx.energy)
    # per vector: the chunks' phases at their middles, linearly interpolated (the same weights for every frame)
    j, frac = _interpolation(mids, center, ctx.m_total)
    ext = np.concatenate([np.zeros((f, 1)), phase], 1)
    phase_v = ext[:, j] * (1 - frac) + ext[:, j + 1] * frac
    phase_v[:, :n_p] = 0.0
    return phase_v, np.zeros(f, np.int64), rate


def _refine(ctx: _Context, phase_v: np.ndarray, rate: np.ndarray, iterations: int):
    """3: per-vector phase errors given the decisions, smoothed (docstring of :func:`track_phase`):
    ``(phase (F, M), phase-noise increment q (F,), the last errors (F, M), the decisions (F, Nt, M))``."""
    users = ctx.users
    rot = ctx.rotation(rate, slice(None)) if users else None  # (F, Nt, M)
    gram = ctx.h.conj().transpose(0, 2, 1) @ ctx.h  # (F, Nt, Nt)
    q, kernels = None, None
    for _ in range(iterations):
        turn = np.exp(-1j * phase_v).astype(np.complex64)[:, None, :]
        z = ctx.zy * turn
        x_hat = np.where(ctx.is_known, ctx.known[None], ctx.slicer(z * rot.conj() if users else z))
        xr = x_hat * rot if users else x_hat
        c = (np.conj(xr) * ctx.gy).sum(1) * turn[:, 0]  # (F, M): sum over antennas of conj(H D x_hat) y e^{-j phase}
        weight = (np.conj(xr) * (gram @ xr)).sum(1).real / np.maximum(ctx.nv, 1e-12)[:, None]  # |H x|^2 / sigma^2 ~ 1 / (2 r_n)
        err = np.angle(c)  # each vector's phase error given its decisions
        if kernels is None:  # from the first iteration's measurements (the second's barely differ)
            r = 1.0 / (2 * np.maximum(weight.mean(1), 1e-12))
            q = _phase_noise(phase_v + err)
            kernels = _kernel_spectra(_smoothing_weights(q, r, ctx.m_total), ctx.m_total)
        # the errors are smoothed, not the phase: the track carries the slow part (a residual CFO's
        # ramp, which a random-walk smoother with a wide kernel would flatten at the frame's ends)
        phase_v = phase_v + _smooth(err, weight, kernels)
    return phase_v, q, err, x_hat


def _slips_at_pilots(ctx: _Context, decided: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Cycle slips per frame ``(F,)``: where a decision-directed track alone would have slipped. It
    follows the decisions' phase (``decided (F, M)``: the track plus each vector's error, known
    symbols at the pilots) modulo the constellation's symmetry, so between two tracking pilots its
    change is the data's phase changes unwrapped by that period; a quarter turn (or more) against
    the pilots' own change (``anchors``) is a slip the pilots undid."""
    n_p, tp = ctx.n_p, ctx.tp_pos
    m = decided[:, n_p:]
    # what decisions alone see is m modulo the symmetry: exp(j M m), M = 2 pi / symmetry (the M-th
    # power of Viterbi and Viterbi), averaged over SLIP_WINDOW vectors as a decision-directed tracker
    # averages (single vectors' noise would look like slips at low SNR), then unwrapped
    power = 2 * math.pi / ctx.symmetry
    c = np.cumsum(np.exp(1j * power * m), axis=1)
    v = c[:, SLIP_WINDOW:] - c[:, :-SLIP_WINDOW]  # sums over SLIP_WINDOW vectors, ending at n + SLIP_WINDOW
    v = np.concatenate([np.repeat(v[:, :1], SLIP_WINDOW // 2, 1), v,
                        np.repeat(v[:, -1:], SLIP_WINDOW - SLIP_WINDOW // 2, 1)], 1)
    dd = np.unwrap(np.angle(v), axis=1) / power
    seg = tp - n_p  # the pilots' positions in m
    before = np.r_[0, seg[:-1] + 1]  # each segment's first data vector
    dd_change = dd[:, seg - 1] - dd[:, before]
    # from the segment's first data vector to its last: the pilots' change over the same span
    span = (seg - 1 - before) / np.maximum(seg + 1 - np.r_[-1, seg[:-1]], 1)
    pilot_change = anchors[:, 1:] - anchors[:, :-1]
    return (np.abs(np.angle(np.exp(1j * (pilot_change * span - dd_change)))) >= SLIP).sum(1)


def _measure_users(ctx: _Context, phase_v: np.ndarray, rate: np.ndarray, x_hat: np.ndarray, chunk: int):
    """4: the frames derotated by the common phase ``(F, Nr, M)``, each user's rate as this frame
    measures it (least squares on time through the pilot block's middle, mean zero over the users)
    with its standard error, and how well the decisions fit (the mean squared distance of the
    equalised data to their nearest points) -- ``(y, measured (F, Nt), stderr (F, Nt), fit (F,))``."""
    n_p, tp = ctx.n_p, ctx.tp_pos
    turn = np.exp(-1j * phase_v).astype(np.complex64)[:, None, :]
    zu = ctx.zy * turn
    if ctx.users:
        zu = zu * ctx.rotation(rate, slice(None)).conj()
    if ctx.count:
        # with tracking pilots: each user's angle at each of them against its known symbol (no
        # ambiguity, whatever the decisions did), unwrapped along the frame
        ru = np.unwrap(np.angle(np.conj(ctx.known[None, :, tp]) * zu[..., tp]), axis=-1)  # (F, Nt, count)
        tu = tp - ctx.center
    else:
        # from the decisions, per data chunk: a user turned by more than 45 degrees is decided on the
        # turned constellation, its residual is the turn modulo the constellation's symmetry (a
        # quarter turn for QPSK and 16-QAM); from chunk to chunk it moves little, so unwrapping
        # recovers the turn (else the rate saturates, ~halved)
        firsts = np.array([a for a, _, _ in ctx.chunks])
        ru = np.angle(np.add.reduceat(np.conj(x_hat[..., n_p:]) * zu[..., n_p:], firsts, axis=-1))  # (F, Nt, C)
        ru = np.unwrap(ru, period=ctx.symmetry, axis=-1)
        tu = ctx.mids - ctx.center
    slope = (ru * tu).sum(-1) / (tu * tu).sum()
    # the slope's standard error from the fit's own scatter (a weak user's angles scatter widely)
    stderr = np.sqrt(((ru - slope[..., None] * tu) ** 2).sum(-1) / max(len(tu) - 1, 1) / (tu * tu).sum())
    measured = rate + slope
    measured -= measured.mean(-1, keepdims=True)
    data = zu[..., ~ctx.is_known]
    fit = (np.abs(data - ctx.slicer(data)) ** 2).mean(-1).mean(-1)
    return ctx.y * turn, measured, stderr, fit


@functools.lru_cache(maxsize=32)
def _known_cached(nt: int, n_pilots: int, n_data: int, spacing: int):
    layout = FrameLayout(nt, n_pilots, n_data)
    count = tracking_count(n_data, spacing)
    m_total = layout.length + count
    known = np.zeros((nt, m_total), np.complex64)
    known[:, :n_pilots] = layout.pilots().numpy()
    is_known = np.zeros(m_total, bool)
    is_known[:n_pilots] = True
    tp_pos = n_pilots + tracking_positions(n_data, spacing)
    known[:, tp_pos] = tracking_symbols(layout, count)
    is_known[tp_pos] = True
    for a in (known, is_known, tp_pos):
        a.flags.writeable = False
    return known, is_known, tp_pos


def _known(layout: FrameLayout, spacing: int):
    """The known symbols of a frame's vectors after the preamble ``(Nt, M)`` (zeros on data), which
    vectors are known ``(M,)`` and where the tracking pilots are (cached, read-only)."""
    return _known_cached(layout.nt, layout.n_pilots, layout.n_data, int(spacing))


@functools.lru_cache(maxsize=32)
def _interpolation_cached(mids: tuple, center: float, m_total: int) -> tuple[np.ndarray, np.ndarray]:
    xs = np.r_[center, mids]
    pos = np.arange(m_total)
    j = np.clip(np.searchsorted(xs, pos, side="right") - 1, 0, len(xs) - 2)
    frac = np.clip((pos - xs[j]) / (xs[j + 1] - xs[j]), 0.0, 1.0)
    j.flags.writeable = frac.flags.writeable = False
    return j, frac


def _interpolation(mids: np.ndarray, center: float, m_total: int) -> tuple[np.ndarray, np.ndarray]:
    """For every vector, the knot before it ``j (M,)`` and its fraction to the next ``(M,)``: the phase
    at the reference (knot 0) and at the chunks' middles, linearly interpolated (held beyond the last)."""
    return _interpolation_cached(tuple(float(m) for m in mids), float(center), int(m_total))


def _phase_noise(track: np.ndarray) -> np.ndarray:
    """The phase-noise increment (rad^2 per vector) of per-vector phase measurements ``track (F, M)``:
    with white measurement noise of variance r, the differences at lag k have ``var = k q + 2 r``,
    so ``q = (var(d_LAG) - var(d_1)) / (LAG - 1)``; variances from medians (a decision error is an
    outlier; the median of a chi-square with one degree of freedom is 0.455) of the centred
    differences (a residual CFO's ramp adds ``(k slope)^2``); no model of r needed (channel-estimate
    and decision errors add to it)."""
    d1, dk = np.diff(track, axis=1), track[:, LAG:] - track[:, :-LAG]
    m1 = np.median((d1 - d1.mean(1, keepdims=True)) ** 2, axis=1)
    mk = np.median((dk - dk.mean(1, keepdims=True)) ** 2, axis=1)
    return np.maximum((mk - m1) / (0.455 * (LAG - 1)), Q_FLOOR)


def _relative(rate: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Users' rates relative to the common phase: a rotation common to every user belongs to the
    common track (the split is otherwise ambiguous and drifts), so the energy-weighted mean is
    removed -- the common phase measured from all users is that weighted mean."""
    return rate - (rate * energy).sum(-1, keepdims=True) / np.maximum(energy.sum(-1, keepdims=True), 1e-30)


def _mmse(h: np.ndarray, nv: np.ndarray, nt: int) -> np.ndarray:
    gram = np.einsum("frt,fru->ftu", h.conj(), h) + nv[:, None, None] * np.eye(nt)
    return np.linalg.solve(gram, h.conj().transpose(0, 2, 1)).astype(np.complex64)  # (F, Nt, Nr)

"""Root-raised-cosine pulse shaping, matched filtering and fractional-delay interpolation (numpy).

The GNU Radio blocks shape and filter with GNU Radio's own ``firdes.root_raised_cosine`` and FIR
blocks; this module is the same filter for the core simulations and tests (``rrc_taps`` equals
``firdes.root_raised_cosine`` normalised to unit energy, tested in ``tests/gr/qa_pulse_shaping.py``)
plus what the frame synchroniser needs from the filter: the noise correlation after the matched
filter and a fractional-delay interpolator.

With unit-energy taps ``g`` (``sum g^2 = 1``), a transmitter that upsamples unit-energy symbols by
``sps`` and filters with ``g`` and a receiver that filters with ``g`` again give back each symbol
at its sampling instant with gain 1 (the raised cosine is Nyquist) and white noise of the input
variance at symbol spacing: the per-symbol SNR of a pulse-shaped link equals the channel block's
SNR setting, so a pulse-shaped loopback and a symbol-rate one are compared at the same SNR.
"""

from __future__ import annotations

import numpy as np


def rrc_pulse(t: np.ndarray, rolloff: float) -> np.ndarray:
    """Root-raised-cosine pulse at times ``t`` (symbols), peak ``1 - a + 4a/pi``:
    ``g(t) = [sin(pi t (1-a)) + 4 a t cos(pi t (1+a))] / [pi t (1 - (4 a t)^2)]`` with roll-off ``a``,
    the limits at ``t = 0`` and ``|t| = 1/(4a)`` in closed form."""
    t = np.asarray(t, dtype=np.float64)
    a = float(rolloff)
    g = np.empty_like(t)
    zero = np.abs(t) < 1e-12
    edge = np.abs(np.abs(4 * a * t) - 1) < 1e-9
    rest = ~(zero | edge)
    g[zero] = 1 - a + 4 * a / np.pi
    g[edge] = a / np.sqrt(2) * ((1 + 2 / np.pi) * np.sin(np.pi / (4 * a)) + (1 - 2 / np.pi) * np.cos(np.pi / (4 * a)))
    tr = t[rest]
    g[rest] = (np.sin(np.pi * tr * (1 - a)) + 4 * a * tr * np.cos(np.pi * tr * (1 + a))) / \
              (np.pi * tr * (1 - (4 * a * tr) ** 2))
    return g


def check_rrc(sps: int, rolloff: float, span: int) -> None:
    """``ValueError`` unless ``sps >= 2``, ``0 < rolloff <= 1`` and ``span`` is even and >= 2."""
    if sps < 2:
        raise ValueError(f"pulse shaping needs sps >= 2 samples per symbol, got {sps}")
    if not 0 < rolloff <= 1:
        raise ValueError(f"rolloff must be in (0, 1], got {rolloff}")
    if span < 2 or span % 2:
        raise ValueError(f"span must be an even number of symbols >= 2, got {span}")


def rrc_taps(sps: int, rolloff: float, span: int) -> np.ndarray:
    """Root-raised-cosine filter: :func:`rrc_pulse` at ``span * sps + 1`` instants ``1/sps`` apart,
    centred, scaled to unit energy, float64."""
    check_rrc(sps, rolloff, span)
    g = rrc_pulse((np.arange(span * sps + 1) - span * sps / 2) / sps, rolloff)
    return g / np.sqrt(np.sum(g ** 2))


def shape(symbols: np.ndarray, taps: np.ndarray, sps: int) -> np.ndarray:
    """Upsample ``symbols (S, n)`` by ``sps`` and filter with ``taps``: ``(S, n * sps)`` complex64,
    causal like GNU Radio's ``interp_fir_filter_ccf`` (the pulse of symbol ``i`` peaks at sample
    ``i * sps + (len(taps) - 1) / 2``)."""
    s = np.asarray(symbols)
    up = np.zeros((s.shape[0], s.shape[1] * sps), dtype=np.complex128)
    up[:, ::sps] = s
    return np.stack([np.convolve(u, taps)[: up.shape[1]] for u in up]).astype(np.complex64)


def matched_filter(y: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Causal matched filter of ``y (S, n)`` (the RRC is symmetric, so the taps are its own
    matched filter): ``(S, n)`` complex64, like GNU Radio's ``fir_filter_ccf``. After shaping and
    matched filtering, symbol ``i`` sits at sample ``i * sps + len(taps) - 1``."""
    return np.stack([np.convolve(np.asarray(u), taps)[: len(u)] for u in y]).astype(np.complex64)


def noise_correlation_energy(taps: np.ndarray) -> float:
    """``sum_l rho(l)^2`` of white noise after the filter, ``rho`` its autocorrelation normalised
    to ``rho(0) = 1`` (``~ sps (1 - rolloff/4)`` for an RRC): how many samples' worth of
    variance a sum of products of filtered noise carries (the frame synchroniser's threshold)."""
    rho = np.correlate(taps, taps, mode="full") / np.sum(taps ** 2)
    return float(np.sum(rho ** 2))


INTERP_HALF = 8  # taps each side of the fractional-delay interpolator (16 taps: -53 dB, tested)
INTERP_PHASES = 1024  # fractional positions tabulated (position error <= 1/2048 sample)


def _interp_table() -> np.ndarray:
    """Hann-windowed sinc weights ``(INTERP_PHASES + 1, 2 INTERP_HALF)`` float32 at fractions
    ``i / INTERP_PHASES``, each row normalised to unit DC gain."""
    frac = np.arange(INTERP_PHASES + 1) / INTERP_PHASES
    k = np.arange(-INTERP_HALF + 1, INTERP_HALF + 1)
    x = k[None, :] - frac[:, None]
    w = np.sinc(x) * (0.5 + 0.5 * np.cos(np.pi * x / INTERP_HALF))
    return (w / w.sum(1, keepdims=True)).astype(np.float32)


_TABLE = _interp_table()


def interpolate(y: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Values of the band-limited streams ``y (S, n)`` at fractional sample ``positions (P,)``:
    ``(S, P)`` complex64, by a Hann-windowed sinc of ``2 INTERP_HALF`` taps with unit DC gain,
    tabulated at ``INTERP_PHASES`` fractions (error below -50 dB for signals below a fifth of
    the sample rate, e.g. an RRC with roll-off 0.35 at ``sps = 4``: measured in
    ``tests/core/qa_pulse.py``). Positions must lie in ``[INTERP_HALF - 1, n - INTERP_HALF - 1]``."""
    p = np.asarray(positions, dtype=np.float64)
    base = np.floor(p).astype(np.int64)
    w = _TABLE[np.rint((p - base) * INTERP_PHASES).astype(np.int64)]  # (P, 2H)
    idx = base[:, None] + np.arange(-INTERP_HALF + 1, INTERP_HALF + 1)[None, :]
    if idx.size and (idx.min() < 0 or idx.max() >= y.shape[1]):
        raise ValueError("interpolation positions too close to the ends of the buffer")
    g = np.asarray(y)[:, idx]  # (S, P, 2H)
    return np.einsum("spk,pk->sp", g, w).astype(np.complex64, copy=False)


def interpolate_grid(y: np.ndarray, start: float, step: int, count: int) -> np.ndarray:
    """:func:`interpolate` at ``start + j * step``, ``j = 0 .. count - 1``, for an integer ``step``
    (one sample per symbol out of ``sps`` per symbol): the fraction is the same for every point, so
    the filter runs on a strided view of ``y`` with no gather (5x faster; the same numbers)."""
    base = int(np.floor(start))
    w = _TABLE[int(np.rint((start - base) * INTERP_PHASES))].astype(np.complex64)
    first = base - INTERP_HALF + 1
    if first < 0 or first + (count - 1) * step + 2 * INTERP_HALF > y.shape[1]:
        raise ValueError("interpolation positions too close to the ends of the buffer")
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(y), 2 * INTERP_HALF, axis=1)
    return windows[:, first:first + (count - 1) * step + 1:step] @ w

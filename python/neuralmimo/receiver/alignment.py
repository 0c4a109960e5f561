"""Frame alignment for receivers that frame by sample count (no frame tags): detect a slip from
the pilot residual and find the frame start again by a bounded search over the pilots.

A receiver framing by count (``ls_channel_estimator(framing="count")``, a USRP receiver started
in time with its transmitter) loses alignment when a sample is lost (a USRP overflow) or
inserted. Every later frame is then cut at the wrong place and, without this, detected wrongly
for the rest of the run.

The LS pilot residual tells: with ``P = X_p^H (X_p X_p^H)^{-1}`` the residual
``Y_p (I - P X_p)`` of correctly aligned pilots is noise only; a window shifted by ``d`` samples
holds ``|d|`` samples that are not pilots (data of this or the previous frame, or inserted
zeros), whose energy the projection cannot remove. (The DFT pilots are shift-invariant up to a
phase per row, so the ``Np - |d|`` pilot samples still fit: the residual grows with ``|d|`` from
the first sample on.) The statistic is the *unexplained fraction* ``||Y_p (I - P X_p)||^2 /
||Y_p||^2`` (:func:`unexplained_fraction`): about ``(1 - Nt/Np) / (1 + SNR)`` when aligned, near
``1 - Nt/Np`` for data; unlike the absolute residual it does not move with the receive gain and
does not fall when a window holds inserted zeros; the residual noise variance itself does not
depend on the channel's energy, so it is the steadier of the two under fading. A frame is
*suspect* when either rises above its running threshold: the median of the last frames plus
the larger of ``(jump - 1)`` times the median and six robust standard deviations (so the margin
is small on a steady channel and follows the spread of a fading one). The start is then
searched in ``[expected - span, expected + span]`` as the window with the smallest fraction (a
bounded correlation search: the residual is the received energy minus its correlation with the
pilot rows). A new start is taken only if its fraction is ``ACCEPT_GAIN`` times smaller than the
expected window's and back below the threshold; otherwise the rise was not a slip
(interference, an SNR change) and the alignment is kept. Measured in
``tests/gr/qa_count_framing.py`` and ``neuralmimo soak --faults`` (see the README).

Slips of up to ``span`` samples (default ``(Np + Nd - 1) // 2``) are found exactly, with the
frame numbering intact; a longer slip is found modulo the frame length (its frame numbers cannot
be known from the samples alone: use ``rx_time`` tags, :func:`timeline_position`). Needs
``Np > Nt`` (with ``Np = Nt`` there is no residual).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from .estimation import LSChannelEstimator

SLIP_JUMP = 1.25  # a statistic this many times its running median (at least) makes a frame suspect
MAD_SIGMAS = 6.0  # ... or this many robust standard deviations above it, if more
ACCEPT_GAIN = 1.2  # a new start must explain the pilots this much better than the expected one
HISTORY = 15  # frames in the running median
MIN_HISTORY = 5  # frames needed before slips are looked for


@dataclass(frozen=True)
class Realignment:
    """Outcome of a search: the new frame start (absolute sample offset), the shift from the
    expected start in samples (negative: samples were lost) and the unexplained fraction there."""

    start: int
    shift: int
    fraction: float


def unexplained_fraction(y_p: torch.Tensor, noise_var: torch.Tensor, nt: int) -> torch.Tensor:
    """``||Y_p (I - P X_p)||^2 / ||Y_p||^2`` of received pilot windows ``y_p (..., Nr, Np)`` from
    the LS residual noise variance of :class:`~neuralmimo.receiver.estimation.LSChannelEstimator`
    (``noise_var (...)``, the residual energy per ``Nr (Np - Nt)`` degrees of freedom); ``inf``
    for an all-zero window. float64."""
    energy = y_p.abs().square().sum((-2, -1)).to(torch.float64)
    dof = y_p.shape[-2] * (y_p.shape[-1] - nt)
    return torch.nan_to_num(noise_var.to(torch.float64) * dof / energy, nan=float("inf"), posinf=float("inf"))


class _Running:
    """Median and robust spread of the last values of a statistic."""

    def __init__(self, history: int):
        self.values: deque[float] = deque(maxlen=history)

    def add(self, v: float) -> None:
        if np.isfinite(v):
            self.values.append(float(v))

    def threshold(self, jump: float) -> float | None:
        """``median + max((jump - 1) * median, MAD_SIGMAS * 1.4826 * MAD)``: a relative margin
        where the statistic is steady (a static channel), its spread where it is not (fading)."""
        if len(self.values) < MIN_HISTORY:
            return None
        v = np.asarray(self.values)
        m = float(np.median(v))
        return m + max((jump - 1.0) * m, MAD_SIGMAS * 1.4826 * float(np.median(np.abs(v - m))))


class PilotAligner:
    """Running pilot-residual statistics and the bounded search (module docstring).

    ``estimator``: the :class:`~neuralmimo.receiver.estimation.LSChannelEstimator` of the frame's pilots;
    ``span``: the largest shift searched, in samples; ``jump``: the smallest relative rise of a
    statistic above its running median that makes a frame suspect.
    """

    def __init__(self, estimator: LSChannelEstimator, span: int, jump: float | None = None, history: int = HISTORY):
        if estimator.n_pilots <= estimator.nt:
            raise ValueError("slip detection needs Np > Nt (a pilot residual)")
        self.estimator, self.span, self.jump = estimator, int(span), float(SLIP_JUMP if jump is None else jump)
        self._fraction, self._noise = _Running(history), _Running(history)

    def median(self) -> float | None:
        """Running median of the unexplained fraction (for messages)."""
        v = self._fraction.values
        return float(np.median(v)) if len(v) >= MIN_HISTORY else None

    def suspect(self, fraction: float, noise_var: float) -> bool:
        """Whether a frame may be misaligned: its unexplained fraction or its residual noise
        variance rose above its running threshold (:meth:`_Running.threshold`). An all-zero
        window (fraction ``inf``) is suspect: a receiver that lost samples may fill the gap with
        zeros. The noise variance does not depend on the channel's energy (steadier under fading);
        the fraction does not move with the receive gain."""
        tf, tn = self._fraction.threshold(self.jump), self._noise.threshold(self.jump)
        if tf is None or tn is None or np.isnan(fraction):
            return False
        return fraction > tf or (np.isfinite(noise_var) and noise_var > tn)

    def accept(self, fraction: float, noise_var: float) -> None:
        """Add a frame's statistics to the running history."""
        self._fraction.add(fraction)
        self._noise.add(noise_var)

    def search(self, y: np.ndarray | list, expected: int, first: int, fraction: float) -> Realignment | None:
        """The frame start near ``expected`` whose pilots fit best, if it is clearly better.

        ``y``: the ``Nr`` received streams (arrays) covering absolute samples ``first ..
        first + len``; candidates are clipped to what they hold; ``fraction``: the expected
        window's unexplained fraction. Returns ``None`` when the best window is the expected one,
        is not ``ACCEPT_GAIN`` times better than it, or is not back below the running threshold
        (then the rise was not a slip: interference, an SNR change)."""
        n_p = self.estimator.n_pilots
        n = min(len(s) for s in y)
        lo = max(first, expected - self.span)
        hi = min(first + n - n_p, expected + self.span)
        threshold = self._fraction.threshold(self.jump)
        if hi < lo or threshold is None:
            return None
        windows = np.stack([np.lib.stride_tricks.sliding_window_view(np.asarray(s[lo - first:hi - first + n_p]), n_p)
                            for s in y], axis=1)  # (C, Nr, Np)
        y_w = torch.from_numpy(np.ascontiguousarray(windows))
        fractions = unexplained_fraction(y_w, self.estimator(y_w)[1], self.estimator.nt)
        best = int(torch.argmin(fractions))
        start, best_fraction = lo + best, float(fractions[best])
        if start == expected or not best_fraction <= threshold or not best_fraction * ACCEPT_GAIN <= fraction:
            return None
        return Realignment(start, start - expected, best_fraction)


def timeline_position(offset_ref: int, time_ref: tuple[int, float], time: tuple[int, float], samp_rate: float) -> int:
    """Where a sample stamped ``time`` (an ``rx_time`` tag: whole seconds, fractional seconds)
    lies on the receiver's timeline, counted from the sample at stream offset ``offset_ref``
    stamped ``time_ref``: ``offset_ref + round((time - time_ref) * samp_rate)``. Whole and
    fractional seconds are subtracted apart (a float64 of seconds since 1970 resolves only
    ~0.2 us). The difference to the sample's stream offset is how many samples were lost
    (overflows) since the reference."""
    elapsed = (int(time[0]) - int(time_ref[0])) + (float(time[1]) - float(time_ref[1]))
    return int(offset_ref + round(elapsed * samp_rate))

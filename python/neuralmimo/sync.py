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
does not fall when a window holds inserted zeros. A frame whose fraction is more than ``jump``
times the running median of the last frames is *suspect*; the start is then searched in
``[expected - span, expected + span]`` as the window with the smallest fraction (a bounded
correlation search: the residual is the received energy minus its correlation with the pilot
rows). The new start is accepted only if its fraction is back below ``jump`` times the median;
otherwise the jump is not a slip (interference, an SNR change) and the alignment is kept. The
jump a slip makes shrinks with the SNR and the slip: one sample at 10 dB raises the fraction
about 1.7x. Measured (``tests/gr/qa_count_framing.py`` set-up, 2x4 QPSK, Np = 16, Nd = 112,
12 random slips of 1..62 samples in 200 frames, 4 seeds): all slips re-acquired at 20 and
10 dB, 11-12 of 12 at 6 dB; no re-acquisition in slip-free runs at 6, 10 and 20 dB.

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

SLIP_JUMP = 2.5  # unexplained fraction / its running median that makes a frame suspect
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
    the LS residual noise variance of :class:`~neuralmimo.estimation.LSChannelEstimator`
    (``noise_var (...)``, the residual energy per ``Nr (Np - Nt)`` degrees of freedom); ``inf``
    for an all-zero window. float64."""
    energy = y_p.abs().square().sum((-2, -1)).to(torch.float64)
    dof = y_p.shape[-2] * (y_p.shape[-1] - nt)
    return torch.nan_to_num(noise_var.to(torch.float64) * dof / energy, nan=float("inf"), posinf=float("inf"))


class PilotAligner:
    """Running pilot-residual statistics and the bounded search (module docstring).

    ``estimator``: the :class:`~neuralmimo.estimation.LSChannelEstimator` of the frame's pilots;
    ``span``: the largest shift searched, in samples.
    """

    def __init__(self, estimator: LSChannelEstimator, span: int, jump: float | None = None, history: int = HISTORY):
        if estimator.n_pilots <= estimator.nt:
            raise ValueError("slip detection needs Np > Nt (a pilot residual)")
        self.estimator, self.span, self.jump = estimator, int(span), float(SLIP_JUMP if jump is None else jump)
        self._history: deque[float] = deque(maxlen=history)

    def median(self) -> float | None:
        return float(np.median(self._history)) if len(self._history) >= MIN_HISTORY else None

    def suspect(self, fraction: float) -> bool:
        """Whether a frame with this unexplained fraction may be misaligned (an all-zero window,
        ``inf``, is: a receiver that lost samples may fill the gap with zeros)."""
        m = self.median()
        return m is not None and not np.isnan(fraction) and fraction > self.jump * m

    def accept(self, fraction: float) -> None:
        """Add a frame's unexplained fraction to the running statistics."""
        if np.isfinite(fraction):
            self._history.append(float(fraction))

    def search(self, y: np.ndarray | list, expected: int, first: int) -> Realignment | None:
        """The frame start near ``expected`` whose pilots fit best, if it restores the fraction.

        ``y``: the ``Nr`` received streams (arrays) covering absolute samples ``first ..
        first + len``; candidates are clipped to what they hold. Returns ``None`` when the best
        window is the expected one or no window brings the fraction back below ``jump`` times
        the running median."""
        n_p = self.estimator.n_pilots
        n = min(len(s) for s in y)
        lo = max(first, expected - self.span)
        hi = min(first + n - n_p, expected + self.span)
        if hi < lo:
            return None
        windows = np.stack([np.lib.stride_tricks.sliding_window_view(np.asarray(s[lo - first:hi - first + n_p]), n_p)
                            for s in y], axis=1)  # (C, Nr, Np)
        y_w = torch.from_numpy(np.ascontiguousarray(windows))
        fraction = unexplained_fraction(y_w, self.estimator(y_w)[1], self.estimator.nt)
        best = int(torch.argmin(fraction))
        start, best_fraction = lo + best, float(fraction[best])
        m = self.median()
        if start == expected or m is None or not best_fraction <= self.jump * m:
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

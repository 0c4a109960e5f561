"""Error rates with Wilson score and frame-clustered confidence intervals.

Always labelled: ``SER`` counts errors per *complex symbol* (one stream of one vector), ``BER``
per *bit*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch


def wilson_interval(errors: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``errors / trials``."""
    if trials <= 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = errors / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    lo = 0.0 if errors == 0 else max(0.0, centre - half)  # exact ends: no round-off above 0 / below 1
    hi = 1.0 if errors == trials else min(1.0, centre + half)
    return (lo, hi)


def clustered_interval(errors_per_frame, symbols_per_frame, confidence: float = 0.95) -> tuple[float, float]:
    """Normal-approximation interval for an error rate measured over ``F`` independent frames.

    Under block fading the errors of one frame share a channel realisation, so they are not
    independent and the binomial (Wilson) interval is too narrow. Frames are independent: with
    ``e_i`` errors out of ``n_i`` symbols in frame ``i`` (``symbols_per_frame``: an int or one
    count per frame), the rate ``r = sum e / sum n`` is a ratio estimator with standard error
    ``sqrt(sum (e_i - r n_i)^2 / (F (F - 1))) / mean(n)``; for equal frames that is the sample
    standard deviation of the per-frame rates over ``sqrt(F)``.
    """
    e = torch.as_tensor(errors_per_frame, dtype=torch.float64).reshape(-1)
    n = torch.broadcast_to(torch.as_tensor(symbols_per_frame, dtype=torch.float64), e.shape)
    f = e.numel()
    if f < 2 or float(n.sum()) == 0:
        return (0.0, 1.0)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    r = float(e.sum() / n.sum())
    se = math.sqrt(float(((e - r * n) ** 2).sum()) / (f * (f - 1))) / float(n.mean())
    return (max(0.0, r - z * se), min(1.0, r + z * se))


def error_rate_interval(errors_per_frame, symbols_per_frame, confidence: float = 0.95) -> tuple[float, float]:
    """Conservative interval for a block-fading error rate: the union of the Wilson interval
    (right when errors are few) and :func:`clustered_interval` (right when frames cluster)."""
    e = torch.as_tensor(errors_per_frame).reshape(-1)
    n = torch.broadcast_to(torch.as_tensor(symbols_per_frame), e.shape)
    w = wilson_interval(int(e.sum()), int(n.sum()), confidence)
    c = clustered_interval(e, symbols_per_frame, confidence)
    return (min(w[0], c[0]), max(w[1], c[1]))


@dataclass
class ErrorRate:
    """``errors`` out of ``trials`` counted per ``unit`` (``"complex symbol"`` or ``"bit"``)."""

    errors: int
    trials: int
    unit: str
    confidence: float = 0.95

    @property
    def rate(self) -> float:
        return self.errors / self.trials if self.trials else float("nan")

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.errors, self.trials, self.confidence)

    def __add__(self, other: "ErrorRate") -> "ErrorRate":
        if other.unit != self.unit:
            raise ValueError(f"cannot add error rates per {self.unit} and per {other.unit}")
        return ErrorRate(self.errors + other.errors, self.trials + other.trials, self.unit, self.confidence)

    def __str__(self) -> str:
        lo, hi = self.ci
        kind = "SER" if self.unit == "complex symbol" else "BER"
        return f"{kind}={self.rate:.3e} [{lo:.2e}, {hi:.2e}] ({self.errors}/{self.trials} per {self.unit})"


def snr_at(ser_target: float, snrs, sers) -> float:
    """SNR (dB) where a measured SER curve crosses ``ser_target``, by linear interpolation of
    ``log10(SER)`` between the two points around it (``nan`` if it does not cross; a zero SER
    counts as 1e-12)."""
    snrs = [float(x) for x in snrs]
    logs = [math.log10(max(float(x), 1e-12)) for x in sers]
    t = math.log10(ser_target)
    for i in range(len(snrs) - 1):
        if (logs[i] - t) * (logs[i + 1] - t) <= 0 and logs[i] != logs[i + 1]:
            return snrs[i] + (t - logs[i]) * (snrs[i + 1] - snrs[i]) / (logs[i + 1] - logs[i])
    return float("nan")


def symbol_errors(idx_hat: torch.Tensor, idx: torch.Tensor) -> ErrorRate:
    """SER per complex symbol from point indices of equal shape."""
    return ErrorRate(int((idx_hat != idx).sum()), idx.numel(), "complex symbol")


def bit_errors(bits_hat: torch.Tensor, bits: torch.Tensor) -> ErrorRate:
    """BER per bit from bit tensors of equal shape."""
    return ErrorRate(int((bits_hat != bits).sum()), bits.numel(), "bit")

"""Error rates with Wilson score confidence intervals.

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


def symbol_errors(idx_hat: torch.Tensor, idx: torch.Tensor) -> ErrorRate:
    """SER per complex symbol from point indices of equal shape."""
    return ErrorRate(int((idx_hat != idx).sum()), idx.numel(), "complex symbol")


def bit_errors(bits_hat: torch.Tensor, bits: torch.Tensor) -> ErrorRate:
    """BER per bit from bit tensors of equal shape."""
    return ErrorRate(int((bits_hat != bits).sum()), bits.numel(), "bit")

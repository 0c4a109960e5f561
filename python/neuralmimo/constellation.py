"""Gray-labelled constellations with unit average energy, hard decisions and max-log LLRs.

Conventions
-----------
* Symbols are complex (``torch.complex64``/``complex128``); BPSK points lie on the real axis.
* Average symbol energy ``E|s|^2 = 1`` for every constellation.
* Bit labels: ``bits[i, b]`` is bit ``b`` (MSB first) of point ``i``; neighbouring points differ
  in exactly one bit (Gray).
* LLRs follow Sionna's sign convention: ``LLR_b = log P(b=1 | z) - log P(b=0 | z)``, so a bit
  decides to 1 when its LLR is positive.
"""

from __future__ import annotations

import itertools
import math

import torch

MODULATIONS = ("bpsk", "qpsk", "16qam")


def _gray_pam(bits_per_dim: int) -> tuple[list[float], list[tuple[int, ...]]]:
    """Gray-labelled PAM levels ``-(M-1), ..., M-1`` and their bit labels (MSB first)."""
    m = 1 << bits_per_dim
    levels = [float(2 * i - (m - 1)) for i in range(m)]
    labels = []
    for i in range(m):
        g = i ^ (i >> 1)
        labels.append(tuple((g >> (bits_per_dim - 1 - b)) & 1 for b in range(bits_per_dim)))
    return levels, labels


class Constellation:
    """A Gray-labelled constellation with unit average energy.

    Parameters
    ----------
    name : {"bpsk", "qpsk", "16qam"}

    Attributes
    ----------
    points : torch.Tensor, complex64, shape ``(M,)``
    bits : torch.Tensor, int64, shape ``(M, bits_per_symbol)``
    pam_levels : torch.Tensor, float32, shape ``(sqrt(M),)`` or ``(2,)`` for BPSK
        The per-real-dimension alphabet of the real-valued model (eq. (2) of the learngene
        paper): ``S = Re(S_bar) = Im(S_bar)``. For BPSK the imaginary dimension is always 0.
    """

    def __init__(self, name: str):
        name = name.lower().replace("-", "")
        if name not in MODULATIONS:
            raise ValueError(f"unknown modulation {name!r}; choose one of {MODULATIONS}")
        self.name = name
        if name == "bpsk":
            pts = [complex(-1.0, 0.0), complex(1.0, 0.0)]
            labels = [(0,), (1,)]
            pam = [-1.0, 1.0]
        else:
            bpd = 1 if name == "qpsk" else 2
            levels, pam_labels = _gray_pam(bpd)
            scale = math.sqrt(2.0 * sum(v * v for v in levels) / len(levels))
            pts, labels = [], []
            # first half of the bits select the in-phase level, second half the quadrature level
            for (li, lab_i), (lq, lab_q) in itertools.product(zip(levels, pam_labels), repeat=2):
                pts.append(complex(li / scale, lq / scale))
                labels.append(lab_i + lab_q)
            pam = [v / scale for v in levels]
        self.points = torch.tensor(pts, dtype=torch.complex64)
        self.bits = torch.tensor(labels, dtype=torch.int64)
        self.pam_levels = torch.tensor(pam, dtype=torch.float32)
        self.num_points = len(pts)
        self.bits_per_symbol = self.bits.shape[1]
        self.is_real = name == "bpsk"

    def __repr__(self) -> str:
        return f"Constellation({self.name!r})"

    # ------------------------------------------------------------------ mapping
    def symbols(self, indices: torch.Tensor) -> torch.Tensor:
        """Point indices (any shape, int64) -> complex symbols (same shape, complex64)."""
        return self.points.to(indices.device)[indices]

    def random_indices(self, shape, generator: torch.Generator | None = None) -> torch.Tensor:
        """Uniform i.i.d. point indices of the given shape."""
        return torch.randint(0, self.num_points, tuple(shape), generator=generator)

    def indices_to_bits(self, indices: torch.Tensor) -> torch.Tensor:
        """Point indices ``(...)`` -> bits ``(..., bits_per_symbol)`` (int64)."""
        return self.bits.to(indices.device)[indices]

    def bits_to_indices(self, bits: torch.Tensor) -> torch.Tensor:
        """Bits ``(..., bits_per_symbol)`` -> point indices ``(...)``."""
        weights = 1 << torch.arange(self.bits_per_symbol - 1, -1, -1, device=bits.device)
        code = (bits.long() * weights).sum(-1)
        lut = torch.empty(self.num_points, dtype=torch.int64)
        lut[(self.bits * weights.cpu()).sum(-1)] = torch.arange(self.num_points)
        return lut.to(bits.device)[code]

    # ------------------------------------------------------------------ demapping
    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared distances ``|z - s_m|^2``: ``(...)`` complex -> ``(..., M)`` real."""
        pts = self.points.to(device=z.device, dtype=z.dtype if z.is_complex() else torch.complex64)
        if not z.is_complex():
            z = z.to(pts.dtype)
        return (z.unsqueeze(-1) - pts).abs().square()

    def hard_decision(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest point index: ``(...)`` complex -> ``(...)`` int64."""
        return self.distances(z).argmin(-1)

    def llr_maxlog(self, z: torch.Tensor, noise_var: torch.Tensor | float) -> torch.Tensor:
        """Max-log bit LLRs of equalised symbols ``z = s + e``, ``e ~ CN(0, noise_var)``.

        ``LLR_b = min_{s: b=0} |z-s|^2 / v - min_{s: b=1} |z-s|^2 / v``  (positive favours 1).

        Shapes: ``z (...)`` complex, ``noise_var`` broadcastable to ``z`` -> ``(..., bits_per_symbol)``.
        For BPSK only the real part carries the symbol; the effective variance of that part is
        ``v/2``, which the formula accounts for because ``|z-s|^2`` then differs only through
        the real part.
        """
        d = self.distances(z)  # (..., M)
        v = torch.as_tensor(noise_var, dtype=d.dtype, device=d.device)
        d = d / v.unsqueeze(-1) if v.dim() > 0 else d / v
        d0, d1 = self._per_bit(d, float("inf"), lambda t: t.amin(-2))
        return d0 - d1

    def _per_bit(self, per_point: torch.Tensor, fill: float, reduce):
        """``reduce`` over the points whose bit ``b`` is 0 and over those where it is 1:
        ``(..., M)`` -> two ``(..., bits_per_symbol)`` tensors (the other points set to ``fill``)."""
        bits = self.bits.to(per_point.device)  # (M, B)
        f = torch.tensor(fill, dtype=per_point.dtype, device=per_point.device)
        x = per_point.unsqueeze(-1)  # (..., M, 1)
        return reduce(torch.where(bits == 0, x, f)), reduce(torch.where(bits == 1, x, f))

    def llr_from_log_probs(self, log_p: torch.Tensor) -> torch.Tensor:
        """Exact bit LLRs of a posterior over the points: ``log_p (..., M)`` (log-probabilities)
        -> ``(..., bits_per_symbol)``, ``log sum_{s: b=1} p(s) - log sum_{s: b=0} p(s)``."""
        l0, l1 = self._per_bit(log_p, float("-inf"), lambda t: t.logsumexp(-2))
        return l1 - l0

    @staticmethod
    def llr_to_bits(llr: torch.Tensor) -> torch.Tensor:
        """Hard bits from LLRs (1 where LLR > 0)."""
        return (llr > 0).long()

"""Synchronisation preamble: two periods of a Zadoff-Chu sequence, one cyclic shift per stream.

Stream ``k`` of ``Nt`` sends ``[z_k, z_k]`` with ``z_k`` the length-``N`` Zadoff-Chu sequence
``z[n] = exp(-j pi u n^2 / N)`` (``N`` even; ``exp(-j pi u n (n+1) / N)`` for odd ``N``) cyclically
shifted by ``k * floor(N / Nt)`` symbols. Why this sequence:

* **Detection and CFO without knowing the channel** (Schmidl and Cox, IEEE Trans. Commun. 45(12),
  1997): every stream repeats with period ``N``, so the sum a receive antenna sees, whatever the
  channel mixes, repeats too; the correlation of the received samples with themselves ``N``
  symbols later has magnitude near the energy at the preamble (a CFO only turns its phase, by
  ``2 pi CFO N``), and that phase is the CFO estimate, unambiguous for ``|CFO| < 1 / (2 N)`` cycles
  per symbol (1/32 = 3.1 % of the symbol rate for ``N = 16``).
* **Every stream told apart** (code-orthogonal): a Zadoff-Chu sequence has an ideal periodic
  autocorrelation, so distinct cyclic shifts are orthogonal over a period: correlating one period
  with ``z_k`` gives stream ``k``'s channel alone (for delay spreads below the shift spacing),
  which gives the fine timing of all streams together and each user's own CFO (separate user
  oscillators) from the phase between the two periods.
* **Constant modulus**: unit-energy symbols like the pilots and QPSK data (no peak-power cost).

The preamble costs ``2 N`` symbol periods per frame (32 for ``N = 16``: 11 % of a 16 + 256 frame).

**Version 2: a coarse part for wide CFOs.** Oscillators without a shared reference (two TCXOs of
+-2 ppm at 5.8 GHz, 250 kbaud) give CFOs of up to ~9 % of the symbol rate, beyond the ``1 / (2 N)``
the two long periods resolve. Version 2 puts ``R`` repetitions of a short Zadoff-Chu sequence of
length ``Ns`` (``coarse_period``, one cyclic shift per stream) in front of the long periods::

    [ s_k s_k ... s_k  (R x Ns) | z_k z_k (2 x N) ]

Why this part, there: in front, so that nothing extends the long periods' periodicity (a part
that continued them cyclically -- ``z_k``'s first symbols after them, or its last ones before --
would flatten the top of the autocorrelation over ``Ns`` symbols, and a start ``N / Nt`` symbols
off, where the streams' cyclic shifts correlate as each other's sequences, was then found: seen
at 1e-3 rad^2 phase noise). Its pulse tails reach into the first long period, the same every
frame: the fine CFO estimate of a version-2 preamble leaves the first ``FINE_GUARD`` symbols of
the period out (without that guard its bias was -1.3e-4 cycles per symbol at 10 dB).

The autocorrelation of the short part at lag ``Ns`` gives a coarse CFO, unambiguous for
``|CFO| < 1 / (2 Ns)`` cycles per symbol (12.5 % for ``Ns = 4``), which picks the branch of the
fine estimate (``fine + k / N``). A wrong branch cannot be caught by the long periods alone: a
Zadoff-Chu sequence with a CFO of ``k / N`` cycles per symbol *is* the sequence shifted by ``k / u``
symbols (the known range-Doppler coupling of Zadoff-Chu sequences), so it correlates fully one
symbol off. The short part breaks that symmetry: only the right branch makes the whole preamble
correlate coherently (:class:`neuralmimo.receiver.framesync.FrameSynchronizer` compares the
neighbouring branches). Version 1 (``coarse_period = 0``) is the two long periods alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def zadoff_chu(length: int, root: int = 1) -> np.ndarray:
    """The length-``N`` Zadoff-Chu sequence with root ``u`` (``gcd(u, N) = 1``), complex128, unit
    modulus, ideal periodic autocorrelation."""
    if length < 2:
        raise ValueError(f"Zadoff-Chu length must be >= 2, got {length}")
    if math.gcd(root, length) != 1:
        raise ValueError(f"Zadoff-Chu root {root} must be coprime with the length {length}")
    n = np.arange(length)
    if length % 2 == 0:
        return np.exp(-1j * np.pi * root * n * n / length)
    return np.exp(-1j * np.pi * root * n * (n + 1) / length)


COARSE_REPEATS = 4  # repetitions of the short sequence in a version-2 preamble
FINE_GUARD = 2  # symbols at a version-2 long period's start left out of the fine CFO estimate


@dataclass(frozen=True)
class Preamble:
    """The preamble of ``nt`` streams: period ``period`` (``N``), root ``root``; ``coarse_period``
    (``Ns``, 0 = none: version 1) the short sequence repeated ``coarse_repeats`` times in front
    (module docstring)."""

    nt: int
    period: int = 16
    root: int = 1
    coarse_period: int = 0
    coarse_repeats: int = COARSE_REPEATS

    def __post_init__(self):
        if self.nt < 1 or self.period < max(2, self.nt):
            raise ValueError(f"preamble period must be >= max(2, nt) to give every stream its own cyclic shift, "
                             f"got period={self.period}, nt={self.nt}")
        zadoff_chu(self.period, self.root)  # validates the root
        if self.coarse_period:
            if not 2 <= self.coarse_period < self.period or self.coarse_repeats < 3:
                raise ValueError(f"coarse preamble period must be in [2, {self.period}) (shorter than the long "
                                 f"period) with >= 3 repetitions, got coarse_period={self.coarse_period}, "
                                 f"coarse_repeats={self.coarse_repeats}")

    @property
    def version(self) -> int:
        """1: two long periods; 2: a coarse part in front (module docstring)."""
        return 2 if self.coarse_period else 1

    @property
    def coarse_length(self) -> int:
        """Symbols of the coarse part (0 in version 1): where the long periods start."""
        return self.coarse_period * self.coarse_repeats if self.coarse_period else 0

    @property
    def length(self) -> int:
        """Symbols per frame: the coarse part and two long periods."""
        return self.coarse_length + 2 * self.period

    @property
    def shift_spacing(self) -> int:
        return self.period // self.nt

    def periods(self) -> np.ndarray:
        """One period per stream, ``(Nt, N)`` complex128: ``z`` cyclically shifted by ``k * N // Nt``."""
        z = zadoff_chu(self.period, self.root)
        return np.stack([np.roll(z, k * self.shift_spacing) for k in range(self.nt)])

    def coarse_periods(self) -> np.ndarray:
        """One short period per stream, ``(Nt, Ns)`` complex128 (``(Nt, 0)`` in version 1): the
        length-``Ns`` Zadoff-Chu sequence cyclically shifted by ``k * Ns // Nt`` (streams share a
        shift when ``Nt > Ns``: the sum is periodic all the same)."""
        if not self.coarse_period:
            return np.zeros((self.nt, 0), np.complex128)
        z = zadoff_chu(self.coarse_period, 1)
        return np.stack([np.roll(z, (k * self.coarse_period) // self.nt) for k in range(self.nt)])

    def symbols(self) -> np.ndarray:
        """What each stream sends, ``(Nt, coarse_length + 2 N)`` complex128."""
        p = self.periods()
        return np.concatenate([np.tile(self.coarse_periods(), self.coarse_repeats if self.coarse_period else 0), p, p],
                              axis=1)

    def cfo_range(self) -> float:
        """Largest CFO magnitude the estimate resolves without ambiguity, cycles per symbol."""
        return 1.0 / (2 * (self.coarse_period or self.period))


# ----------------------------------------------------------------------------------- thresholds
def autocorrelation_threshold(pfa: float, tests: int, nr: int, samples_per_half: int, noise_corr: float) -> float:
    """Threshold on the Schmidl-Cox metric ``|P|^2 / R^2`` for a false-alarm probability ``pfa`` over
    ``tests`` positions (e.g. one frame length of noise).

    With noise only, ``P = sum_r sum_{m<W} conj(y_r[m]) y_r[m+W]`` is a sum of ``Nr W`` products of
    filtered noise: complex Gaussian by the central limit theorem with ``E|P|^2 = Nr W c sigma^4``,
    ``c = sum_l rho(l)^2`` the noise correlation energy (:func:`neuralmimo.receiver.pulse.
    noise_correlation_energy`), while ``R`` (the mean energy of a half) ~ ``Nr W sigma^2``. So
    ``|P|^2 / R^2`` is exponential with mean ``mu = c / (Nr W)``: ``Pr(metric > g) = exp(-g / mu)``
    per position, and by the union bound over ``tests`` positions (conservative: neighbouring
    positions are correlated) ``g = mu ln(tests / pfa)``."""
    if not 0 < pfa < 1:
        raise ValueError(f"false-alarm probability must be in (0, 1), got {pfa}")
    mu = noise_corr / (nr * samples_per_half)
    return float(mu * math.log(max(tests, 1) / pfa))


def gamma_tail(shape: int, x: float) -> float:
    """``Pr(G > x)`` for ``G ~ Gamma(shape, 1)``, integer shape: ``exp(-x) sum_{i<shape} x^i / i!``."""
    term, total = 1.0, 1.0
    for i in range(1, shape):
        term *= x / i
        total += term
    return float(math.exp(-x + math.log(total))) if total > 0 else 0.0


def correlation_threshold(pfa: float, tests: int, nr: int, nt: int, length: int) -> float:
    """Threshold on the normalised preamble correlation ``rho = sum_{r,k} |c_rk|^2 / (E_y L)`` for a
    false-alarm probability ``pfa`` over ``tests`` lags.

    ``c_rk = sum_n conj(p_k[n]) y_r[n]`` over the ``L`` symbol-spaced samples (white noise after the
    matched filter, variance ``sigma^2``) is ``CN(0, sigma^2 L)``, independent over ``k`` (the
    streams' sequences are orthogonal) and ``r``; ``E_y ~ Nr L sigma^2``. So with noise only
    ``rho ~ Gamma(Nr Nt, 1) / (Nr L)``; the threshold solves ``Pr(rho > g) = pfa / tests``.
    With the preamble received at SNR ``s`` per antenna, ``rho ~ s / (1 + s)``."""
    shape, target = nr * nt, pfa / max(tests, 1)
    lo, hi = 0.0, float(shape)
    while gamma_tail(shape, hi) > target:
        hi *= 2
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gamma_tail(shape, mid) > target else (lo, mid)
    return hi / (nr * length)


# ----------------------------------------------------------------------------------- Cramer-Rao bound
def cfo_crb(received: np.ndarray, noise_var: float, times: np.ndarray) -> float:
    """Cramer-Rao bound on the variance of a CFO estimate (cycles per sample squared) from a known
    preamble received through an unknown channel.

    Model: ``y_r[n] = c_r a_r[n] exp(j 2 pi f t_n) + w_r[n]``, ``w ~ CN(0, sigma^2)`` white, the
    noiseless received preamble ``a_r[n]`` (``received (Nr, L)``) known up to one unknown complex
    gain ``c_r`` per antenna (the channel's phase and amplitude at that antenna), sampled at
    ``times (L,)`` (samples). The Fisher information of ``theta = 2 pi f`` with each antenna's
    phase a nuisance parameter is (Kay, Fundamentals of Statistical Signal Processing I, sec. 3.11,
    the phase-and-frequency example generalised to a known envelope)

        J = (2 / sigma^2) sum_r [ sum_n t_n^2 |a_r[n]|^2 - (sum_n t_n |a_r[n]|^2)^2 / sum_n |a_r[n]|^2 ],

    and ``var(f) >= 1 / ((2 pi)^2 J)``. For a constant envelope ``|a_r| = A`` over ``L`` symbol-spaced
    samples (``t_n = n sps``) this is the classic ``6 / ((2 pi sps)^2 sum_r SNR_r L (L^2 - 1))``.
    The matched filter's symbol-spaced samples are the ones with white noise; the estimator may use
    more samples, which carry correlated noise, so it can come slightly below this bound."""
    a2 = np.abs(np.asarray(received)) ** 2
    t = np.asarray(times, dtype=np.float64)
    e = a2.sum(1)
    j = (2.0 / noise_var) * np.sum((a2 * t ** 2).sum(1) - (a2 * t).sum(1) ** 2 / np.maximum(e, 1e-300))
    return float(1.0 / ((2 * np.pi) ** 2 * j))

"""The synchronisation preamble, its detection thresholds and the CFO Cramer-Rao bound."""

import math

import numpy as np
import pytest

from neuralmimo.receiver.preamble import (Preamble, autocorrelation_threshold, cfo_crb, correlation_threshold, gamma_tail,
                                 zadoff_chu)


@pytest.mark.parametrize("length", [16, 17, 32])
def test_zadoff_chu_has_unit_modulus_and_ideal_periodic_autocorrelation(length):
    z = zadoff_chu(length)
    assert np.allclose(np.abs(z), 1.0)
    corr = [abs(np.vdot(z, np.roll(z, d))) for d in range(length)]
    assert corr[0] == pytest.approx(length) and max(corr[1:]) < 1e-9 * length


def test_streams_repeat_with_the_period_and_are_orthogonal_over_one():
    p = Preamble(4, 16)
    sym = p.symbols()
    assert sym.shape == (4, 32) and np.allclose(sym[:, :16], sym[:, 16:])
    gram = p.periods() @ p.periods().conj().T
    assert np.allclose(gram, 16 * np.eye(4), atol=1e-9)
    assert p.cfo_range() == pytest.approx(1 / 32)


@pytest.mark.parametrize("args", [(5, 4), (0, 16), (2, 16, 2)])
def test_bad_preambles_are_refused(args):
    with pytest.raises(ValueError):
        Preamble(*args)


def test_gamma_tail_matches_a_monte_carlo_estimate():
    rng = np.random.default_rng(0)
    g = rng.gamma(8, 1.0, 200000)
    for x in (6.0, 12.0, 16.0):
        p = gamma_tail(8, x)
        assert abs(np.mean(g > x) - p) <= 4 * math.sqrt(p * (1 - p) / g.size) + 1e-6
    assert gamma_tail(1, 3.0) == pytest.approx(math.exp(-3.0))


def test_correlation_threshold_gives_its_false_alarm_probability_on_white_noise():
    nr, nt, length, pfa = 4, 2, 32, 0.05
    g = correlation_threshold(pfa, 1, nr, nt, length)
    rng = np.random.default_rng(1)
    ref = Preamble(nt, 16).symbols()
    w = (rng.standard_normal((20000, nr, length)) + 1j * rng.standard_normal((20000, nr, length))) * np.sqrt(0.5)
    c = w @ ref.conj().T
    rho = (np.abs(c) ** 2).sum((1, 2)) / ((np.abs(w) ** 2).sum((1, 2)) * length)
    rate = np.mean(rho > g)
    # E_y is random too (the threshold treats it as its mean): the rate is close to, not exactly, pfa
    assert 0.3 * pfa < rate < 1.3 * pfa, rate


def test_autocorrelation_threshold_gives_its_false_alarm_probability_per_position():
    """One position tested: Pr(|P|^2 / R^2 > g) = pfa on matched-filtered white noise."""
    from neuralmimo.receiver.pulse import matched_filter, noise_correlation_energy, rrc_taps

    nr, period, sps, pfa = 2, 16, 4, 0.02
    taps = rrc_taps(sps, 0.35, 8)
    W = period * sps
    g = autocorrelation_threshold(pfa, 1, nr, W, noise_correlation_energy(taps))
    rng = np.random.default_rng(2)
    trials = 6000
    w = ((rng.standard_normal((trials * nr, 2 * W + 64)) + 1j * rng.standard_normal((trials * nr, 2 * W + 64)))
         * np.sqrt(0.5)).astype(np.complex64)
    y = matched_filter(w, taps)[:, 64:].reshape(trials, nr, 2 * W)
    p = (np.conj(y[..., :W]) * y[..., W:]).sum((1, 2))
    r = 0.5 * (np.abs(y) ** 2).sum((1, 2))
    rate = np.mean(np.abs(p) ** 2 / r ** 2 > g)
    assert abs(rate - pfa) <= 4 * math.sqrt(pfa * (1 - pfa) / trials) + 0.004, rate


def test_cfo_crb_reduces_to_the_constant_envelope_closed_form():
    nr, length, sps, nv = 3, 32, 4, 0.1
    a = np.exp(1j * np.random.default_rng(3).uniform(0, 2 * np.pi, (nr, length)))  # |a| = 1
    times = np.arange(length) * sps
    snr_sum = nr * 1.0 / nv
    closed = 6 / ((2 * np.pi * sps) ** 2 * snr_sum * length * (length ** 2 - 1))
    assert cfo_crb(a, nv, times) == pytest.approx(closed, rel=1e-9)

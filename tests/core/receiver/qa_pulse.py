"""Root-raised-cosine shaping, matched filtering, noise correlation and interpolation."""

import numpy as np
import pytest

from neuralmimo.receiver.pulse import interpolate, matched_filter, noise_correlation_energy, rrc_pulse, rrc_taps, shape


def test_rrc_is_symmetric_unit_energy_and_nyquist_after_matching():
    g = rrc_taps(4, 0.35, 8)
    assert len(g) == 33 and np.allclose(g, g[::-1]) and np.isclose(np.sum(g ** 2), 1.0)
    rc = np.convolve(g, g)  # the raised cosine: 1 at its centre, ~0 at the other symbol instants
    centre = len(g) - 1
    assert np.isclose(rc[centre], 1.0)
    others = rc[centre % 4::4]
    assert np.max(np.abs(np.delete(others, centre // 4))) < 0.02  # truncation to 8 symbols


def test_shaping_and_matched_filtering_return_the_symbols_and_keep_the_noise_variance():
    rng = np.random.default_rng(0)
    sym = ((rng.integers(0, 2, (2, 400)) * 2 - 1) + 1j * (rng.integers(0, 2, (2, 400)) * 2 - 1)) / np.sqrt(2)
    g = rrc_taps(4, 0.35, 8)
    z = matched_filter(shape(sym, g, 4), g)
    got = z[:, len(g) - 1::4][:, :380]
    assert np.max(np.abs(got - sym[:, :380])) < 0.05
    # white noise of variance 1 at the sample rate -> variance 1 at symbol spacing, uncorrelated
    w = (rng.standard_normal((1, 200000)) + 1j * rng.standard_normal((1, 200000))) * np.sqrt(0.5)
    v = matched_filter(w, g)[0, 100::4]
    assert abs(np.var(v) - 1.0) < 0.03  # se of a variance from 5e4 samples: 0.0045
    assert abs(np.mean(v[1:] * np.conj(v[:-1]))) < 0.03


def test_noise_correlation_energy_matches_the_raised_cosine_closed_form():
    for sps, a in ((4, 0.35), (2, 0.5), (8, 0.25)):
        assert noise_correlation_energy(rrc_taps(sps, a, 16)) == pytest.approx(sps * (1 - a / 4), rel=0.02)


def test_interpolation_of_a_pulse_shaped_signal_is_accurate():
    rng = np.random.default_rng(1)
    sym = np.exp(1j * np.pi / 2 * rng.integers(0, 4, (1, 600)))
    g = rrc_taps(4, 0.35, 16)
    y = shape(sym, g, 4)
    pos = np.arange(100, 2000, 4) + 0.37
    # exact values at the fractional positions: the sum of the analytic (truncated) pulses
    norm = np.sqrt(np.sum(rrc_pulse((np.arange(len(g)) - 32) / 4, 0.35) ** 2))
    ref = []
    for p in pos:
        t = (p - np.arange(600) * 4 - 32) / 4  # symbols from each pulse's centre
        ref.append(np.sum(sym[0] * np.where(np.abs(t) <= 8, rrc_pulse(t, 0.35), 0)) / norm)
    ref = np.array(ref)
    got = interpolate(y, pos)[0]
    err = np.sum(np.abs(got - ref) ** 2) / np.sum(np.abs(ref) ** 2)
    assert 10 * np.log10(err) < -50, 10 * np.log10(err)
    with pytest.raises(ValueError):
        interpolate(y, np.array([2.0]))


@pytest.mark.parametrize("args", [(1, 0.35, 8), (4, 0.0, 8), (4, 1.5, 8), (4, 0.35, 7)])
def test_bad_filter_settings_are_refused(args):
    with pytest.raises(ValueError):
        rrc_taps(*args)

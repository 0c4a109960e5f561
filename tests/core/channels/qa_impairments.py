"""Radio impairments: each one does what it says, all of them are seeded and independent of how
the stream is cut."""

import numpy as np
import pytest

from neuralmimo.channels.impairments import RadioImpairments


def _tone(n, f=0.01):
    return np.exp(2j * np.pi * f * np.arange(n))[None, :].astype(np.complex64)


def _run(imp, x, chunk):
    outs, gaps, pos = [], [], 0
    for a in range(0, x.shape[1], chunk):
        y, g = imp.process(x[:, a:a + chunk])
        gaps += [(pos + o, n) for o, n in g]
        outs.append(y)
        pos += y.shape[1]
    return np.concatenate(outs, 1), gaps


def test_output_does_not_depend_on_how_the_stream_is_cut():
    x = np.repeat(_tone(20000), 2, 0)
    kw = dict(seed=3, delay=5.3, sro_ppm=40, cfo=1e-3, stream_cfo=[0, 2e-4], phase_noise=1e-4, lo_phase=True,
              gain_imbalance_db=2.0, noise_var=0.01, drop_rate=1e-3, drop_length=(1, 300))
    a, ga = _run(RadioImpairments(2, **kw), x, 20000)
    b, gb = _run(RadioImpairments(2, **kw), x, 777)
    n = min(a.shape[1], b.shape[1])
    assert ga[:len(gb)] == gb[:len(ga)] and np.allclose(a[:, :n], b[:, :n], atol=1e-5)


def test_fractional_delay_and_cfo():
    x = _tone(4000)
    y, _ = RadioImpairments(1, delay=12.25, cfo=2e-3).process(x)
    m = np.arange(200, 3000)
    want = np.exp(2j * np.pi * (0.01 * (m - 12.25) + 2e-3 * m))
    assert np.max(np.abs(y[0, m] - want)) < 1e-3


def test_sample_rate_offset_stretches_time():
    x = _tone(40000, 0.002)
    y, _ = RadioImpairments(1, sro_ppm=100).process(x)
    m = 30000
    assert np.angle(y[0, m] * np.conj(np.exp(2j * np.pi * 0.002 * m * (1 - 1e-4)))) == pytest.approx(0, abs=1e-3)


def test_phase_noise_is_a_wiener_process_of_the_given_increment_variance():
    x = np.ones((1, 200000), np.complex64)
    y, _ = RadioImpairments(1, phase_noise=1e-4, seed=2).process(x)
    phi = np.unwrap(np.angle(y[0, 20:]))
    inc = np.diff(phi)
    assert np.var(inc) == pytest.approx(1e-4, rel=0.03)


def test_gains_lo_phases_and_noise():
    x = np.ones((3, 50000), np.complex64)
    imp = RadioImpairments(3, gain_imbalance_db=3.0, lo_phase=True, noise_var=0.5, seed=4)
    y, _ = imp.process(x)
    mean = y[:, 100:].mean(1)
    assert np.allclose(np.abs(mean), imp.gains(), atol=0.02)
    assert np.allclose(np.angle(mean * np.exp(-1j * imp.lo_phases())), 0, atol=0.02)
    assert np.all(np.abs(20 * np.log10(imp.gains())) <= 3.0)
    assert np.var(y[:, 100:] - mean[:, None]) == pytest.approx(0.5, rel=0.02)


def test_overflows_drop_runs_and_report_where_and_how_many():
    x = (np.arange(100000) / 1000.0)[None].astype(np.complex64)  # a ramp: the value tells the sample
    imp = RadioImpairments(1, drop_rate=5e-4, drop_length=(1, 500), seed=5)
    y, gaps = _run(imp, x, 3000)
    device = np.rint(y[0].real * 1000).astype(int)
    lost, at = 0, dict(gaps)
    for i in range(1, len(device)):
        lost += at.get(i, 0)
        assert device[i] == i + lost
    assert len(gaps) >= 20 and imp.lost == sum(n for _, n in gaps)


@pytest.mark.parametrize("kw", [dict(delay=-1), dict(noise_var=float("nan")), dict(drop_length=(5, 2)),
                                dict(stream_cfo=[0.0, 0.1])])
def test_bad_settings_are_refused(kw):
    with pytest.raises(ValueError):
        RadioImpairments(1, **kw)

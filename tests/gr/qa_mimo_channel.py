"""MIMO channel: block fading, noise level in the project SNR convention, delay and CFO, runtime control."""

import math

import numpy as np
import pmt
import pytest
from gnuradio import gr
from gnuradio.neuralmimo import mimo_channel
from neuralmimo.snr import noise_variance

from conftest import data, run, sinks, sources, tag, tags

pytestmark = pytest.mark.timeout(120)


def _through(chan, x, nr, tag_list=()):
    tb = gr.top_block()
    src = sources(tb, x, tag_list)
    snk = sinks(tb, nr)
    for k, s in enumerate(src):
        tb.connect(s, (chan, k))
    for r in range(nr):
        tb.connect((chan, r), snk[r])
    tb.chan = chan
    run(tb)
    return np.stack([data(s) for s in snk]), snk


def _random_symbols(nt, n, seed):
    rng = np.random.default_rng(seed)
    return ((rng.integers(0, 2, (nt, n)) * 2 - 1) + 1j * (rng.integers(0, 2, (nt, n)) * 2 - 1)) / math.sqrt(2)


def test_block_fading_is_exactly_h_x_per_block_at_high_snr():
    nt, nr, B, blocks_ = 2, 4, 50, 6
    x = _random_symbols(nt, B * blocks_, 1)
    y, _ = _through(mimo_channel(nt, nr, {"name": "kronecker", "args": {"rho_rx": 0.5}}, 200.0, B, 0, 0.0, 3), x, nr)
    hs = []
    for b in range(blocks_):
        xb, yb = x[:, b * B:(b + 1) * B], y[:, b * B:(b + 1) * B]
        h = yb @ np.linalg.pinv(xb)  # least squares of a noiseless block
        assert np.abs(yb - h @ xb).max() < 1e-4  # one H for the whole block
        hs.append(h)
    for a, b in zip(hs[:-1], hs[1:]):
        assert np.abs(a - b).max() > 1e-2  # and a new H for every block


def test_noise_variance_matches_project_snr_convention():
    """Zero input: the output is noise only, E|n|^2 = E||H||_F^2 / Nr / 10^(SNR/10). The sample
    mean of N = Nr * n exponential(1) variables has relative standard error 1/sqrt(N); allow 5."""
    nt, nr, n, snr = 2, 4, 20_000, 7.0
    y, _ = _through(mimo_channel(nt, nr, "iid", snr, 100, 0, 0.0, 1), np.zeros((nt, n)), nr)
    want = noise_variance(snr, "project", channel_energy=nr * nt, nr=nr, nt=nt)
    got = float(np.mean(np.abs(y) ** 2))
    assert abs(got / want - 1) < 5 / math.sqrt(nr * n)


def test_delay_shifts_samples_and_tags_and_output_is_deterministic():
    nt, nr, B, d = 2, 3, 40, 7
    x = _random_symbols(nt, 4 * B, 2)
    tg = [tag(0, "frame_start", pmt.from_long(0)), tag(B, "frame_start", pmt.from_long(1))]
    y0, _ = _through(mimo_channel(nt, nr, "iid", 200.0, B, 0, 0.0, 5), x, nr, tg)
    y0b, _ = _through(mimo_channel(nt, nr, "iid", 200.0, B, 0, 0.0, 5), x, nr, tg)
    assert np.array_equal(y0, y0b)  # seeded: the same samples every run
    yd, snk = _through(mimo_channel(nt, nr, "iid", 200.0, B, d, 0.0, 5), x, nr, tg)
    assert yd.shape == y0.shape  # a sync block: the last d samples stay inside the channel
    assert np.abs(yd[:, :d]).max() < 1e-6  # leading zeros (+ negligible noise)
    assert np.allclose(yd[:, d:], y0[:, :-d], atol=1e-4)  # same channels, same block alignment
    for s in snk:
        assert tags(s, "frame_start") == [(d, 0), (B + d, 1)]


def test_cfo_rotates_every_stream_by_the_absolute_sample_index():
    nt, nr, B, cfo = 2, 2, 64, 0.01
    x = _random_symbols(nt, 5 * B, 3)
    y0, _ = _through(mimo_channel(nt, nr, "iid", 200.0, B, 0, 0.0, 9), x, nr)
    y1, _ = _through(mimo_channel(nt, nr, "iid", 200.0, B, 0, cfo, 9), x, nr)
    rot = np.exp(2j * np.pi * cfo * np.arange(x.shape[1]))
    assert np.allclose(y1, y0 * rot, atol=1e-4)


def test_runtime_control_and_configuration_errors():
    chan = mimo_channel(2, 4, "iid", 10.0, 100, 0, 0.0, 0)
    chan.set_snr_db(3.0)
    assert chan.snr_db() == 3.0
    chan.set_channel("no-such-model")  # logged and refused, nothing raised
    chan.set_channel("{name: kronecker, args: {bogus: 1}}")
    assert chan.channel.name == "iid"
    chan.set_channel("{name: kronecker, args: {rho_rx: 0.3}}")
    assert (chan.channel.name, chan.channel.args) == ("kronecker", {"rho_rx": 0.3})
    for bad in (dict(nt=0), dict(block_length=0), dict(delay=-1), dict(channel="rayleigh"),
                dict(nt=3, channel="deepsic-sed", nr=2), dict(snr_convention="per-bit")):
        with pytest.raises(ValueError):
            mimo_channel(**{**dict(nt=2, nr=4), **bad})

"""RRC Pulse Shaper and Matched Filter: GNU Radio's own filter design, the core's taps, symbols back."""

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr
from gnuradio.neuralmimo import rrc_matched_filter, rrc_pulse_shaper
from gnuradio.neuralmimo.pulse_shaping import rrc_taps as gr_rrc_taps
from neuralmimo.receiver.pulse import rrc_taps

from conftest import run, sinks, sources, tag, tags

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("sps, rolloff, span", [(4, 0.35, 8), (2, 0.5, 6), (8, 0.22, 10)])
def test_gnuradio_taps_equal_the_core_taps(sps, rolloff, span):
    assert np.allclose(gr_rrc_taps(sps, rolloff, span), rrc_taps(sps, rolloff, span), atol=1e-7)


def test_shaping_then_matched_filtering_returns_the_symbols_and_moves_tags_with_the_rate():
    rng = np.random.default_rng(0)
    sym = np.exp(1j * np.pi / 4 * (2 * rng.integers(0, 4, (2, 300)) + 1))
    tb = gr.top_block()
    src = sources(tb, sym, [tag(10, "frame_start", pmt.from_long(7))])
    shaper, mf = rrc_pulse_shaper(2, 4, 0.35, 8), rrc_matched_filter(2, 4, 0.35, 8)
    out = sinks(tb, 2)
    for k in range(2):
        tb.connect(src[k], (shaper, k), (mf, k), out[k])
    run(tb)
    y = np.array(out[1].data())
    assert len(y) == 1200
    assert np.max(np.abs(y[32::4][:290] - sym[1, :290])) < 0.05  # symbol i at sample 4 i + span * sps
    assert tags(out[0], "frame_start") == [(40, 7)]


@pytest.mark.parametrize("args", [(2, 1, 0.35, 8), (2, 4, 0.0, 8), (2, 4, 0.35, 7), (0, 4, 0.35, 8)])
def test_bad_settings_are_refused(args):
    with pytest.raises(ValueError):
        rrc_pulse_shaper(*args)

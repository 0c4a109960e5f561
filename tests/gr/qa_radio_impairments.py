"""Radio Impairments in a flowgraph: the core process, rx_time like a USRP, upstream tags not passed."""

import numpy as np
import pmt
import pytest
from gnuradio import gr
from gnuradio.neuralmimo import radio_impairments
from neuralmimo.channels.impairments import RadioImpairments

from conftest import run, sinks, sources, tag, tags

pytestmark = pytest.mark.timeout(60)


def test_output_equals_the_core_process_and_rx_time_marks_every_overflow():
    x = np.exp(2j * np.pi * 0.01 * np.arange(60000))[None].repeat(2, 0)
    kw = dict(delay=3.5, sro_ppm=10, cfo=1e-3, phase_noise=1e-5, lo_phase=True, gain_imbalance_db=1.0,
              noise_var=0.01, drop_rate=2e-4, drop_length=(10, 500))
    tb = gr.top_block()
    src = sources(tb, x, [tag(100, "frame_start", pmt.from_long(1))])
    blk = radio_impairments(2, 1e6, kw["delay"], kw["sro_ppm"], kw["cfo"], 0.0, kw["phase_noise"], kw["lo_phase"],
                            kw["gain_imbalance_db"], kw["noise_var"], kw["drop_rate"], kw["drop_length"], 7)
    out = sinks(tb, 2)
    for k in range(2):
        tb.connect(src[k], (blk, k), out[k])
    run(tb)
    want, gaps = RadioImpairments(2, seed=7, **kw).process(x)
    got = np.array(out[1].data())
    assert np.allclose(got, want[1, :len(got)], atol=1e-5) and len(got) >= want.shape[1] - 20
    times = tags(out[0], "rx_time")
    assert times[0] == (0, (0, 0.0))
    lost = 0
    for (offset, (whole, frac)), (o, n) in zip(times[1:], gaps):
        lost += n
        assert offset == o and (whole + frac) * 1e6 == pytest.approx(o + lost, abs=1e-3)
    assert len(times) == len(gaps) + 1 and blk.lost() == lost
    assert tags(out[0], "frame_start") == []


def test_setters_refuse_bad_values_and_keep_running():
    blk = radio_impairments(2)
    blk.set_cfo(float("nan"))
    blk.set_noise_var(-1)
    blk.set_stream_cfo([1.0, 2.0, 3.0])
    assert blk.process.cfo == 0.0 and blk.process.noise_var == 0.0 and np.all(blk.process.stream_cfo == 0)
    blk.set_cfo(1e-3)
    blk.set_stream_cfo([1e-4, -1e-4])
    assert blk.process.cfo == 1e-3 and np.allclose(blk.process.stream_cfo, [1e-4, -1e-4])


def test_values_no_radio_has_are_refused_by_the_constructor_and_ignored_by_the_callbacks():
    """Issue 29, class 8: the constructor raises ValueError naming the parameter; a callback logs
    and keeps the running value (one declaration, neuralmimo.channels.impairments.PARAMS)."""
    from gnuradio.neuralmimo import radio_impairments

    for bad in (dict(drop_rate=1.5), dict(sro_ppm=1e6), dict(cfo=float("nan")), dict(stream_cfo=[0.1, 0.7]),
                dict(drop_length=(9, 3)), dict(samp_rate=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            radio_impairments(2, **{"samp_rate": 1e6, **bad})
    r = radio_impairments(2, 1e6, drop_rate=0.01, sro_ppm=5.0)
    r.set_drop_rate(1.5)
    r.set_sro_ppm(float("inf"))
    r.set_cfo("x")
    assert (r.process.drop_rate, r.process.sro_ppm, r.process.cfo) == (0.01, 5.0, 0.0)
    r.set_drop_rate(0.2)
    assert r.process.drop_rate == 0.2

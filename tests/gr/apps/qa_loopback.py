"""End to end: the shipped loopback flowgraph agrees with the core simulation; the chain is
invariant to a channel delay."""

import math
from pathlib import Path

import pytest
from gnuradio import gr
from gnuradio.neuralmimo import error_rate_probe, linear_detector, ls_channel_estimator, mimo_channel, mimo_frame_source
from gnuradio.neuralmimo.apps.harness import compile_grc, load_top_block_class
from gnuradio.neuralmimo.apps.loopback import sim_config_of
from neuralmimo.lab.sim import simulate

from conftest import run

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[3]


def test_loopback_grc_ser_equals_core_simulation(tmp_path):
    """Same settings, independent randomness: the SERs differ by sampling error only. Each side's
    95 % half-width h (frame-clustered, conservative) gives se ~ h / 1.96; the difference must
    lie within 3.29 combined standard errors (two-sided 99.9 %)."""
    cls = load_top_block_class(compile_grc(ROOT / "examples" / "loopback_linear.grc", tmp_path)[0])
    frames, snr, seed = 150, 5.0, 3
    tb = cls(snr_db=snr, n_frames=frames, seed=seed)
    tb.probe_zf.report_on_stop = tb.probe_mmse.report_on_stop = False
    run(tb, 240)
    lay = tb.est.layout
    cfg = sim_config_of(tb, [snr], frames, seed + 100)  # independent randomness
    core = {r["detector"]: r for r in simulate(cfg, progress=False)}
    for det, probe in (("zf", tb.probe_zf), ("mmse", tb.probe_mmse)):
        assert probe.frames() == frames and probe.symbols() == frames * lay.nt * lay.n_data
        lo, hi = probe.ser_interval()
        h_fg, h_core = (hi - lo) / 2, (core[det]["ci"][1] - core[det]["ci"][0]) / 2
        tol = 3.29 * math.hypot(h_fg, h_core) / 1.96
        assert abs(probe.ser() - core[det]["ser"]) <= tol, (det, probe.ser(), core[det]["ser"], tol)
    assert tb.probe_mmse.ser() < tb.probe_zf.ser()  # paired: MMSE beats ZF on the same frames


def _chain_ser(delay: int, frames: int = 40) -> tuple[int, float]:
    nt, nr, n_p, n_d = 2, 4, 4, 60
    tb = gr.top_block()
    tb.src = mimo_frame_source(nt, n_p, n_d, "qpsk", False, 1, frames)
    tb.chan = mimo_channel(nt, nr, "iid", 6.0, n_p + n_d, delay, 0.0, 2)
    tb.est = ls_channel_estimator(nr, nt, n_p, n_d)
    tb.det = linear_detector(nr, nt, "qpsk", "mmse")
    tb.probe = error_rate_probe(nt, n_d, "qpsk", 1)
    for k in range(nt):
        tb.connect((tb.src, k), (tb.chan, k))
        tb.connect((tb.det, k), (tb.probe, k))
    for r in range(nr):
        tb.connect((tb.chan, r), (tb.est, r))
        tb.connect((tb.est, r), (tb.det, r))
    run(tb)
    return tb.probe.frames(), tb.probe.ser()


def test_channel_delay_is_absorbed_by_the_frame_tags():
    frames0, ser0 = _chain_ser(0)
    frames_d, ser_d = _chain_ser(13)
    # a sync channel keeps the last `delay` samples: the last frame is incomplete and not
    # estimated; every frame that arrives is detected exactly as without the delay
    assert frames0 == 40 and frames_d == 39
    assert 0 < ser0 < 0.5
    _, ser_short = _chain_ser(0, frames=39)
    assert ser_d == pytest.approx(ser_short, abs=0)


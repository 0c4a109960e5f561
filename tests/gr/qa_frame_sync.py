"""Frame Sync in real flowgraphs: the shipped over-the-air loopback against its genie receiver,
the tags and messages at each frame, overflows from rx_time, and noise only."""

import math
from pathlib import Path

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr
from gnuradio.neuralmimo import (error_rate_probe, frame_sync, linear_detector, ls_channel_estimator, mimo_channel,
                                 mimo_frame_source, radio_impairments, rrc_matched_filter, rrc_pulse_shaper)
from gnuradio.neuralmimo.apps.harness import compile_grc, load_top_block_class

from conftest import run, sinks, tags

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
NT, NR, NP, ND, N, SPS = 2, 4, 8, 64, 16, 4
FRAME = 2 * N + NP + ND  # symbols per frame on air


def _link(tb, frames, seed=1, **radio):
    """source (preamble) -> channel (symbol rate) -> shaper -> radio -> matched filter -> frame sync."""
    tb.src = mimo_frame_source(NT, NP, ND, "qpsk", False, seed, frames, 0, N)
    tb.chan = mimo_channel(NT, NR, "iid", 200.0, FRAME, 0, 0.0, seed + 1)
    tb.shape = rrc_pulse_shaper(NR, SPS, 0.35, 8)
    tb.radio = radio_impairments(NR, 1e6, seed=seed + 2, **radio)
    tb.mf = rrc_matched_filter(NR, SPS, 0.35, 8)
    tb.sync = frame_sync(NR, NT, NP, ND, "qpsk", N, SPS, 0.35, 8, 1e-4, True, 1e6, 32 + radio.get("delay", 0.0))
    for k in range(NT):
        tb.connect((tb.src, k), (tb.chan, k))
    for r in range(NR):
        tb.connect((tb.chan, r), (tb.shape, r), (tb.radio, r), (tb.mf, r), (tb.sync, r))


def _receiver(tb, seed=1):
    tb.est = ls_channel_estimator(NR, NT, NP, ND)
    tb.det = linear_detector(NR, NT, "qpsk", "mmse")
    tb.probe = error_rate_probe(NT, ND, "qpsk", seed)
    tb.probe.report_on_stop = False
    for r in range(NR):
        tb.connect((tb.sync, r), (tb.est, r), (tb.det, r))
    for k in range(NT):
        tb.connect((tb.det, k), (tb.probe, k))


def test_ota_loopback_grc_reaches_the_genie_receiver():
    """examples/loopback_ota.grc at its default impairments (start offset 517.37 samples, CFO
    5 kHz = 2 % of the symbol rate, 20 ppm, phase noise, LO phases, gain imbalance): every frame
    arrives, and MMSE after Frame Sync is within 0.5 dB of the genie receiver of the same frames,
    i.e. its SER at most ~1.4x the genie's at SER ~1e-2 (plus sampling error)."""
    cls = load_top_block_class(compile_grc(ROOT / "examples" / "loopback_ota.grc", Path("/tmp") / "qa_ota")[0])
    tb = cls(snr_db=10.0, n_frames=120, seed=2)
    for p in (tb.probe_zf, tb.probe_mmse, tb.probe_genie):
        p.report_on_stop = False
    run(tb, 240)
    assert tb.probe_mmse.frames() == tb.probe_genie.frames() == 120
    assert not tb.probe_mmse.problems()
    assert set(tb.sync.problems()) == {"acquired", "frames"}  # one acquisition, no false user-CFO warning
    sync, genie = tb.probe_mmse, tb.probe_genie
    half = lambda p: (p.ser_interval()[1] - p.ser_interval()[0]) / 2
    assert sync.ser() <= 1.4 * genie.ser() + 3.29 * math.hypot(half(sync), half(genie)) / 1.96, (sync.ser(), genie.ser())


def test_tags_and_messages_at_every_frame():
    tb = gr.top_block()
    cfo = 0.004  # cycles per sample = 4 kHz at 1 MS/s
    _link(tb, 20, delay=100.5, cfo=cfo, noise_var=0.01)
    out = sinks(tb, NR)
    msgs = blocks.message_debug()
    tb.connect((tb.sync, 0), out[0])
    for r in range(1, NR):
        tb.connect((tb.sync, r), out[r])
    tb.msg_connect((tb.sync, "sync"), (msgs, "store"))
    run(tb)
    L = NP + ND
    starts = tags(out[0], "frame_start")
    assert [o for o, _ in starts] == [i * L for i in range(20)] and [v for _, v in starts] == list(range(20))
    assert all(v == pytest.approx(cfo * 1e6, rel=0.02) for _, v in tags(out[0], "cfo"))
    timing = [v for _, v in tags(out[0], "timing")]
    assert np.allclose(np.diff(timing), FRAME * SPS, atol=0.3) and timing[0] == pytest.approx(132.5, abs=0.3)
    assert all(len(v) == NT for _, v in tags(out[0], "user_cfo"))
    assert all(0.5 < v <= 1.0 for _, v in tags(out[0], "sync_metric"))
    assert len(out[0].data()) == 20 * L
    assert msgs.num_messages() == 20
    m = pmt.to_python(msgs.get_message(3))
    assert m["frame"] == 3 and m["timing"] == pytest.approx(timing[3])


def test_overflows_lose_frames_but_never_their_numbers():
    """Overflows (runs of 1..2000 samples, rx_time tags like a USRP source): frames around them are
    dropped, every other frame reaches the probe with its own number."""
    tb = gr.top_block()
    _link(tb, 200, cfo=0.002, sro_ppm=20, noise_var=0.02, drop_rate=2e-4, drop_length=(1, 2000))
    _receiver(tb)
    run(tb)
    p = tb.probe
    assert tb.radio.lost() > 0 and tb.sync.problems().get("gap-dropped", 0) + tb.sync.problems().get("slip", 0) > 5
    assert 100 <= p.frames() < 200
    assert "misnumbered-frame" not in p.problems() and "unmatched-frame" not in p.problems()
    assert p.ser() < 0.02


def test_noise_only_gives_no_frame():
    tb = gr.top_block()
    length = 300 * FRAME * SPS
    src = blocks.null_source(gr.sizeof_gr_complex)
    head = blocks.head(gr.sizeof_gr_complex, length)
    tb.radio = radio_impairments(NR, 1e6, noise_var=1.0, seed=3)
    tb.mf = rrc_matched_filter(NR, SPS, 0.35, 8)
    tb.sync = frame_sync(NR, NT, NP, ND, "qpsk", N, SPS)
    out = sinks(tb, NR)
    tb.connect(src, head)
    for r in range(NR):
        tb.connect(head, (tb.radio, r))
        tb.connect((tb.radio, r), (tb.mf, r), (tb.sync, r), out[r])
    run(tb)
    assert len(out[0].data()) == 0 and tb.sync.problems().get("acquired", 0) == 0


@pytest.mark.parametrize("spread", [0.0, 1e-3])
def test_users_cfo_spread_is_tracked_tagged_and_removed_by_the_detector(spread):
    """Separate user oscillators (per-stream CFO before the channel, +-spread cycles per symbol) on
    the version-2 frame format (coarse preamble part, a tracking pilot every 32 data vectors): each
    user's CFO is tagged (user_cfo); each user's rotation along the frame is tagged (user_phase) and
    removed by the linear detector. Without removal, user k's symbols at a 256-vector frame's end
    turn by 2 pi 1e-3 x ~260 = 1.6 rad against the channel estimate (beyond 45 degrees from about
    the frame's middle on: SER > 0.25); with it the SER stays near the common-oscillator link's."""
    nd, frames = 256, 40
    frame = 2 * N + 16 + NP + nd + nd // 32
    tb = gr.top_block()
    tb.src = mimo_frame_source(NT, NP, nd, "qpsk", False, 1, frames, 0, N, 4, 32)
    tb.users = radio_impairments(NT, 1e6 / SPS, stream_cfo=[spread, -spread], seed=5)
    tb.chan = mimo_channel(NT, NR, "iid", 200.0, frame, 0, 0.0, 2)
    tb.shape = rrc_pulse_shaper(NR, SPS, 0.35, 8)
    tb.radio = radio_impairments(NR, 1e6, noise_var=0.05, seed=3)
    tb.mf = rrc_matched_filter(NR, SPS, 0.35, 8)
    tb.sync = frame_sync(NR, NT, NP, nd, "qpsk", N, SPS, coarse_period=4, pilot_spacing=32)
    tb.est = ls_channel_estimator(NR, NT, NP, nd)
    tb.det = linear_detector(NR, NT, "qpsk", "mmse")
    tb.probe = error_rate_probe(NT, nd, "qpsk", 1)
    tb.probe.report_on_stop = False
    out = sinks(tb, NR)
    for k in range(NT):
        tb.connect((tb.src, k), (tb.users, k), (tb.chan, k))
        tb.connect((tb.det, k), (tb.probe, k))
    for r in range(NR):
        tb.connect((tb.chan, r), (tb.shape, r), (tb.radio, r), (tb.mf, r), (tb.sync, r), out[r])
        tb.connect((tb.sync, r), (tb.est, r), (tb.det, r))
    run(tb)
    user = np.array([v for _, v in tags(out[0], "user_cfo")])  # Hz at 1 MS/s
    assert len(user) >= 35 and tb.probe.frames() >= 35
    want = np.array([spread, -spread]) / SPS * 1e6
    assert np.allclose(user.mean(0), want, atol=60), (user.mean(0), want)
    phases = [v for _, v in tags(out[0], "user_phase")]
    if spread:
        rates = np.array([np.asarray(v)[NT:] for v in phases])  # rad per data vector
        assert len(rates) >= 25  # from the first frames on (re-tracked with their own rates), every frame once averaged
        # relative to the common phase (the users' energy-weighted mean, which changes with the
        # channel): their difference is 2 pi (spread - (-spread)) per vector
        assert np.isclose(np.median(rates[:, 0] - rates[:, 1]), 4 * np.pi * spread, rtol=0.1)
    else:
        assert not phases
    # the common-oscillator link's SER at this SNR is below 1e-3: with the rotation removed the
    # users' link stays far below the 0.25 of a rotation left in place
    assert tb.probe.ser() < 0.02, tb.probe.ser()


def test_settings_out_of_range_are_refused_at_once():
    """Issue 29, class 8: frame_sync(sps=100000) used to take minutes to build its filters; now
    every setting is checked against its declaration before anything is built."""
    for bad in (dict(sps=100000), dict(origin=float("nan")), dict(origin=float("inf")), dict(pfa=0.0),
                dict(rolloff=1.5), dict(preamble_period=1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            frame_sync(NR, NT, NP, ND, "qpsk", **{"preamble_period": N, "sps": SPS, **bad})


def test_malformed_rx_time_tags_cost_no_frame():
    """Issue 29, class 4: rx_time tags with a NaN fraction (or one outside [0, 1)) in the middle of
    a run used to be taken as timestamps: Frame Sync discarded buffers of good frames and
    misnumbered the next ones. They are ignored and counted; every frame arrives in order."""
    from gnuradio.neuralmimo.apps.faults import Fault, fault_injector

    tb = gr.top_block()
    tb.src = mimo_frame_source(NT, NP, ND, "qpsk", False, 1, 40, 0, N)
    tb.chan = mimo_channel(NT, NR, "iid", 200.0, FRAME, 0, 0.0, 2)
    tb.shape = rrc_pulse_shaper(NR, SPS, 0.35, 8)
    tb.radio = radio_impairments(NR, 1e6, seed=3)  # stamps rx_time at the start, like a USRP
    L = FRAME * SPS
    tb.inj = fault_injector(NR, [Fault(k * L + 37, "bad-time", 1) for k in (5, 12, 13, 30)])
    tb.mf = rrc_matched_filter(NR, SPS, 0.35, 8)
    tb.sync = frame_sync(NR, NT, NP, ND, "qpsk", N, SPS, 0.35, 8, 1e-4, True, 1e6, 32)
    for k in range(NT):
        tb.connect((tb.src, k), (tb.chan, k))
    for r in range(NR):
        tb.connect((tb.chan, r), (tb.shape, r), (tb.radio, r), (tb.inj, r), (tb.mf, r), (tb.sync, r))
    _receiver(tb)
    run(tb)
    assert tb.probe.frames() == 40 and not tb.probe.problems()
    assert tb.sync.problems()["bad-rx-time"] == 4 and "gap-dropped" not in tb.sync.problems()

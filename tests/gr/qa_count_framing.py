"""Count framing re-acquires (issue 14, class 2): samples deleted or inserted at random places
(a USRP overflow, a transport glitch) shift the frame timing; the estimator notices the jump of
its pilot residual, finds the pilots again and the SER is back at its floor within two frames of
each slip. ``rx_time`` tags (what ``uhd_usrp_source`` emits after an overflow) re-align even
across long gaps, with the right frame numbers."""

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr
from gnuradio.neuralmimo import error_rate_probe, linear_detector, ls_channel_estimator, mimo_channel, mimo_frame_source
from gnuradio.neuralmimo.apps.faults import Fault, fault_injector

from conftest import run

pytestmark = pytest.mark.timeout(300)
NT, NR, NP, ND, SEED = 2, 4, 16, 112, 5
L = NP + ND
SNR_DB = 20.0  # per antenna; QPSK 2x4 MMSE: SER floor ~5e-5, a misaligned frame ~0.5-0.75


def _connect(tb, src, chan, inj, est, det, probe):
    """frame source -> channel -> faults -> estimator -> detector -> probe, every stream."""
    for k in range(NT):
        tb.connect((src, k), (chan, k))
        tb.connect((det, k), (probe, k))
    for r in range(NR):
        tb.connect((chan, r), (inj, r))
        tb.connect((inj, r), (est, r))
        tb.connect((est, r), (det, r))
    tb._keep = [src, chan, inj, est, det, probe]


def _run(faults, frames, samp_rate=0.0, snr_db=SNR_DB):
    """frame source -> channel -> faults -> LS (count framing) -> MMSE -> probe; returns
    ``({frame number: symbol errors}, estimator, probe, injector)``."""
    tb = gr.top_block()
    src = mimo_frame_source(NT, NP, ND, "qpsk", False, SEED, frames)
    chan = mimo_channel(NT, NR, "iid", snr_db, L, 0, 0.0, SEED)
    inj = fault_injector(NR, faults, samp_rate)
    est = ls_channel_estimator(NR, NT, NP, ND, "count", samp_rate=samp_rate)
    det = linear_detector(NR, NT, "qpsk", "mmse")
    probe = error_rate_probe(NT, ND, "qpsk", SEED)
    dbg = blocks.message_debug()
    _connect(tb, src, chan, inj, est, det, probe)
    tb.msg_connect(probe, "stats", dbg, "store")
    tb._keep = [src, chan, inj, est, det, probe, dbg]
    run(tb, 240)
    stats = [pmt.to_python(dbg.get_message(i)) for i in range(dbg.num_messages())]
    return {m["frame"]: m["symbol_errors"] for m in stats}, est, probe, inj


def _slips(rng, frames, count):
    """``count`` deletions/insertions of 1..L/2-1 samples at random places, >= 8 frames apart."""
    gaps = np.sort(rng.choice(np.arange(8, frames - 4, 8), size=count, replace=False))
    out = []
    for g in gaps:
        offset = int(g * L + rng.integers(0, L))
        out.append(Fault(offset, "delete" if rng.random() < 0.5 else "insert", int(rng.integers(1, L // 2 - 1))))
    return out


@pytest.mark.parametrize("snr_db", [20.0, 10.0])
def test_slips_are_reacquired_within_two_frames(snr_db):
    frames = 200
    faults = _slips(np.random.default_rng(7), frames, 12)
    clean, _, _, _ = _run([], frames, snr_db=snr_db)
    errors, est, probe, inj = _run(faults, frames, snr_db=snr_db)
    assert len(inj.applied) == len(faults)
    assert len(est.reacquisitions) == len(faults)  # one re-acquisition per slip, none spurious
    assert est.problems().get("reacquired") == len(faults)
    hit = {f.offset // L for f in faults}  # frames a slip lands in (numbered by the source)
    hit |= {k + 1 for k in hit}  # and the next (within two frames of each slip)
    floor = {n: e for n, e in errors.items() if n not in hit}
    assert len(floor) >= frames - 2 * len(faults) - 1  # nothing else lost
    # every other frame is cut exactly as without slips: the same samples, the same decisions,
    # the same errors (a misaligned frame has about half of its symbols wrong)
    assert {n: clean[n] for n in floor} == floor
    assert [n for n, _ in probe.unmatched_frames() if n not in hit] == []


def test_without_reacquisition_a_slip_ruins_every_later_frame():
    """The failure this guards against (and what the test above measures against): tag-less
    framing with no slip handling, emulated by a frame period the search cannot see (Np = Nt)."""
    frames = 40
    tb = gr.top_block()
    src = mimo_frame_source(NT, NT, ND, "qpsk", False, SEED, frames)
    chan = mimo_channel(NT, NR, "iid", SNR_DB, NT + ND, 0, 0.0, SEED)
    inj = fault_injector(NR, [Fault(10 * (NT + ND) + 50, "delete", 3)])
    est = ls_channel_estimator(NR, NT, NT, ND, "count")
    det = linear_detector(NR, NT, "qpsk", "mmse")
    probe = error_rate_probe(NT, ND, "qpsk", SEED)
    _connect(tb, src, chan, inj, est, det, probe)
    run(tb)
    late = probe.frame_errors()[12:]
    assert min(e for e, _ in late) > 0.3 * NT * ND  # every later frame misaligned
    assert est.reacquisitions == []


def test_rx_time_tags_realign_long_gaps_with_the_right_frame_numbers():
    """An overflow losing 3.4 frames: the residual search alone would find the pilots but not
    how many frames went missing; rx_time says how many samples did."""
    frames = 60
    fs = 1e6
    faults = [Fault(int(20.3 * L), "delete", int(3.4 * L)), Fault(int(40.6 * L), "delete", 17)]
    errors, est, probe, inj = _run(faults, frames, samp_rate=fs)
    assert [r["source"] for r in est.reacquisitions] == ["rx_time", "rx_time"]
    assert est.problems().get("rx-time-gap") == 2 and "reacquired" not in est.problems()
    lost = {20, 21, 22, 23} | {40}  # frames touched by the gaps
    assert sorted(errors) == [n for n in range(frames) if n not in lost]  # numbered by the timeline
    assert max(errors.values()) <= 0.02 * NT * ND
    assert probe.unmatched_frames() == []


def test_fault_injector_applies_faults_exactly():
    x = np.arange(40, dtype=np.complex64)
    tb = gr.top_block()
    src = blocks.vector_source_c(x.tolist(), False)
    inj = fault_injector(1, [(5, "delete", 2), (10, "insert", 3), (20, "repeat", 2), (30, "nan", 1)])
    snk = blocks.vector_sink_c()
    tb.connect(src, inj, snk)
    tb._keep = [src, inj, snk]
    run(tb)
    out = np.asarray(snk.data())
    want = np.concatenate([x[:5], x[7:10], np.zeros(3), x[10:22], x[20:30], [np.nan], x[31:]])
    assert np.array_equal(np.isnan(out), np.isnan(want)) and np.array_equal(out[~np.isnan(out)], want[~np.isnan(want)])
    assert [a["out_offset"] for a in inj.applied] == [5, 8, 21, 33]

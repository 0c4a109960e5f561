"""Frame numbers are honoured (issue 14, class 1): a frame dropped or repeated upstream, or a
restarted transmitter, keeps the number its tag says (logged as ``frame-gap``/``frame-repeat``),
so the probe compares every frame with the right reference; a frame the probe cannot match is
reported, with the number it does match when there is one."""

import numpy as np
import pmt
import pytest
import torch
from gnuradio import gr
from gnuradio.neuralmimo import error_rate_probe, linear_detector, ls_channel_estimator
from neuralmimo.constellation import Constellation
from neuralmimo.receiver.frames import FrameLayout, frame_data_indices

from conftest import run, sinks, sources, tag, tags

pytestmark = pytest.mark.timeout(120)
NT, NR, NP, ND, SEED = 2, 4, 4, 32, 11
LAYOUT = FrameLayout(NT, NP, ND)
CONST = Constellation("qpsk")


def _received(numbers, noise=0.02, seed=0):
    """What the receiver gets when the transmitter sent frames ``numbers`` back to back (each
    through its own random channel): ``(Nr, F * L)`` and the ``frame_start`` tags."""
    g = torch.Generator().manual_seed(seed)
    idx = frame_data_indices(CONST, LAYOUT, SEED, list(numbers))
    x = LAYOUT.assemble(CONST.symbols(idx))  # (F, Nt, L)
    h = torch.randn(len(numbers), NR, NT, dtype=torch.complex64, generator=g)
    y = h @ x + noise * torch.randn(len(numbers), NR, LAYOUT.length, dtype=torch.complex64, generator=g)
    stream = y.transpose(0, 1).reshape(NR, -1).numpy()
    return stream, [tag(i * LAYOUT.length, "frame_start", pmt.from_long(n)) for i, n in enumerate(numbers)]


def _receive(stream, tag_list):
    tb = gr.top_block()
    est = ls_channel_estimator(NR, NT, NP, ND)
    det = linear_detector(NR, NT, "qpsk", "mmse")
    probe = error_rate_probe(NT, ND, "qpsk", SEED)
    src, snk = sources(tb, stream, tag_list), sinks(tb, 1)
    for r in range(NR):
        tb.connect(src[r], (est, r))
        tb.connect((est, r), (det, r))
    for k in range(NT):
        tb.connect((det, k), (probe, k))
    tb.connect((est, 0), snk[0])
    tb._keep += [est, det, probe]
    run(tb)
    return est, probe, [v for _, v in tags(snk[0], "frame_start")]


def test_dropped_repeated_and_restarted_frames_keep_their_numbers():
    sent = [0, 1, 2, 4, 5, 5, 6, 7, 0, 1, 2]  # 3 lost, 5 twice, then the transmitter restarts
    est, probe, numbered = _receive(*_received(sent))
    assert numbered == sent
    assert est.problems() == {"frame-gap": 1, "frame-repeat": 2}
    assert probe.frames() == len(sent)
    assert probe.ser() == 0.0  # every frame compared with its own reference (0.55 if misnumbered)
    assert probe.unmatched_frames() == []


def _probe(decided_frames):
    """Feed ``[(tag number, (Nt, Nd) constellation indices)]`` straight into a probe."""
    stream = np.concatenate([CONST.points.numpy()[idx] for _, idx in decided_frames], axis=1)
    tb = gr.top_block()
    probe = error_rate_probe(NT, ND, "qpsk", SEED)
    src = sources(tb, stream, [tag(i * ND, "frame_start", pmt.from_long(n)) for i, (n, _) in enumerate(decided_frames)])
    for k in range(NT):
        tb.connect(src[k], (probe, k))
    tb.probe = probe
    run(tb)
    return probe


def test_probe_reports_frames_it_cannot_match():
    ref = frame_data_indices(CONST, LAYOUT, SEED, list(range(20))).numpy()
    rng = np.random.default_rng(3)
    noisy = ref[3].copy()
    flip = rng.random(noisy.shape) < 0.3  # a bad but real frame: 30 % errors is not chance (75 %)
    noisy[flip] = (noisy[flip] + 1) % 4
    frames = [(2, ref[2]), (3, noisy), (5, ref[7]), (6, rng.integers(0, 4, (NT, ND))), (8, ref[8])]
    probe = _probe(frames)
    assert probe.frames() == 5
    assert probe.unmatched_frames() == [(5, 7), (6, None)]  # tagged 5, carries frame 7; 6 is noise
    assert probe.problems() == {"misnumbered-frame": 1, "unmatched-frame": 1}


def test_gap_repeat_statistics_do_not_flag_correct_frames():
    """Frames whose numbers only jump are not reported by the probe (no false alarms)."""
    ref = frame_data_indices(CONST, LAYOUT, SEED, [4, 9, 1]).numpy()
    probe = _probe([(4, ref[0]), (9, ref[1]), (1, ref[2])])
    assert probe.unmatched_frames() == [] and probe.problems() == {} and probe.ser() == 0.0

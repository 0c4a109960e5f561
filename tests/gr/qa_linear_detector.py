"""Linear detector: equality with the core ZF/MMSE, runtime switching at frame boundaries, bad input."""

import threading

import numpy as np
import pmt
import pytest
import torch
from gnuradio import blocks
from gnuradio.neuralmimo import linear_detector
from neuralmimo.constellation import Constellation
from neuralmimo.detectors import linear_detect

from conftest import data, detector_flowgraph, estimate_tags, random_frames, run, sinks, tag, tags

pytestmark = pytest.mark.timeout(120)
NT, NR, ND = 2, 4, 8


def _frames(n_frames, seed=0):
    return random_frames(n_frames, NR, NT, ND, seed)


def _tags(h, nv, n_frames):
    return estimate_tags(h[:n_frames], nv, ND)


def _detect(y_stream, tag_list, det, llr=False, throttle=None):
    # small chunks when throttled: switches can land between them
    tb, snk = detector_flowgraph(y_stream, tag_list, det, NT, throttle, chunk=2 * ND)
    llr_snk = None
    if llr:
        llr_snk = sinks(tb, 1, NT * det.constellation.bits_per_symbol, blocks.vector_sink_f)[0]
        tb.connect((det, NT), llr_snk)
    tb.det = det
    return tb, snk, llr_snk


@pytest.mark.parametrize("kind,modulation", [("zf", "qpsk"), ("mmse", "qpsk"), ("mmse", "16qam"), ("zf", "bpsk")])
def test_output_equals_core_detector(kind, modulation):
    n_frames = 6
    h, y, nv = _frames(n_frames)
    stream = y.transpose(0, 1).reshape(NR, -1).numpy()
    tb, snk, llr_snk = _detect(stream, _tags(h, nv, n_frames), linear_detector(NR, NT, modulation, kind, True), llr=True)
    run(tb)
    out = np.stack([data(s) for s in snk])
    const = Constellation(modulation)
    x, eff = linear_detect(y, h, nv.float(), kind, const)
    assert np.allclose(out, x.transpose(0, 1).reshape(NT, -1).numpy(), atol=1e-4)
    llr = data(llr_snk).reshape(-1, NT, const.bits_per_symbol)
    ref = const.llr_maxlog(x.transpose(1, 2), eff[:, None, :]).reshape(-1, NT, const.bits_per_symbol)
    assert np.allclose(llr, ref.numpy(), rtol=1e-3, atol=1e-3)
    for s in snk:  # tags passed through, one detector tag at the start
        assert [o for o, _ in tags(s, "csi")] == [f * ND for f in range(n_frames)]
        assert tags(s, "detector") == [(0, kind)]


def test_each_users_rotation_from_the_user_phase_tag_is_removed():
    """Separate user oscillators (issue 31): user k of data vector d turned by p_k + r_k d against the
    channel estimate (the user_phase tag at the frame's first data vector, from Frame Sync through
    the estimator). The equalised streams are derotated: exactly MMSE of H diag(rotation) for ZF
    and MMSE, so the decisions of strongly turning users (up to 0.9 rad across a frame) are right
    at high SNR; a frame without the tag and a malformed tag are detected without rotation."""
    from gnuradio.neuralmimo.tags import user_phase_to_pmt

    nd, n_frames = 64, 3
    const = Constellation("qpsk")
    g = np.random.default_rng(4)
    h = (g.standard_normal((n_frames, NR, NT)) + 1j * g.standard_normal((n_frames, NR, NT))).astype(np.complex64)
    idx = g.integers(0, 4, (n_frames, NT, nd))
    x = const.points.numpy()[idx]
    first, rate = np.array([0.2, -0.3]), np.array([0.012, -0.01])
    turn = np.exp(1j * (first[:, None] + rate[:, None] * np.arange(nd))).astype(np.complex64)  # (Nt, Nd)
    y = h @ (x * turn) + 0.01 * (g.standard_normal((n_frames, NR, nd)) + 1j * g.standard_normal((n_frames, NR, nd)))
    nv = np.full(n_frames, 2e-4)
    tag_list = estimate_tags(torch.from_numpy(h), nv, nd)
    tag_list.append(tag(0, "user_phase", user_phase_to_pmt(first, rate)))  # frame 0
    tag_list.append(tag(2 * nd, "user_phase", pmt.init_f32vector(3, [0.0, 1.0, 2.0])))  # frame 2: malformed
    det = linear_detector(NR, NT, "qpsk", "mmse")
    tb, snk, _ = _detect(y.transpose(1, 0, 2).reshape(NR, -1), tag_list, det)
    run(tb)
    out = np.stack([data(s) for s in snk]).reshape(NT, n_frames, nd).transpose(1, 0, 2)
    ref, _ = linear_detect(torch.from_numpy(y.astype(np.complex64)), torch.from_numpy(h), torch.from_numpy(nv), "mmse", const)
    assert np.allclose(out[0], ref[0].numpy() * turn.conj(), atol=1e-4)
    assert (const.hard_decision(torch.from_numpy(out[0])).numpy() == idx[0]).all()
    assert np.allclose(out[1:], ref[1:].numpy(), atol=1e-4)  # no tag, and a refused one: no rotation
    assert det.problems().get("bad-user-phase") == 1


def test_switching_while_running_lands_on_frame_boundaries():
    """Switch ZF<->MMSE from another thread while a throttled stream runs: every frame is
    equalised entirely by the algorithm its detector tag announces, nothing lost or repeated."""
    n_frames = 400
    h, y, nv = _frames(n_frames, seed=1)
    stream = y.transpose(0, 1).reshape(NR, -1).numpy()
    det = linear_detector(NR, NT, "qpsk", "zf")
    tb, snk, _ = _detect(stream, _tags(h, nv, n_frames), det, throttle=n_frames * ND / 1.5)
    stop = threading.Event()

    def flip():
        i = 0
        while not stop.wait(0.03):
            det.set_detector("mmse" if i % 2 == 0 else "zf")
            i += 1

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        run(tb)
    finally:
        stop.set()
        flipper.join()
    out = np.stack([data(s) for s in snk])
    assert out.shape == (NT, n_frames * ND)  # items in = items out
    switches = tags(snk[0], "detector")
    assert len(switches) >= 4  # the test really switched mid-stream
    assert all(o % ND == 0 for o, _ in switches)  # only at frame boundaries
    assert [v for _, v in tags(snk[0], "frame_start")] == list(range(n_frames))  # each frame once
    const = Constellation("qpsk")
    ref = {k: linear_detect(y, h, nv.float(), k, const)[0] for k in ("zf", "mmse")}
    kind_of = {}
    for o, k in switches:
        kind_of[o // ND] = k
    current = None
    for f in range(n_frames):
        current = kind_of.get(f, current)
        assert np.allclose(out[:, f * ND:(f + 1) * ND], ref[current][f].numpy(), atol=1e-4), f"frame {f} ({current})"


def test_bad_input_keeps_streaming_with_last_good_state():
    n_frames = 4
    h, y, nv = _frames(n_frames, seed=2)
    y[1, :, 3] = float("nan")  # a NaN vector in frame 1
    t = _tags(h, nv, n_frames)
    t[2 * 3 + 1] = tag(2 * ND, "csi", pmt.init_c32vector(3, [1, 2, 3]))  # frame 2: malformed csi
    t[3 * 3 + 2] = tag(3 * ND, "noise_var", pmt.from_double(-1.0))  # frame 3: invalid noise_var
    lead = np.ones((NR, 5), dtype=np.complex64)  # 5 vectors before any channel estimate
    stream = np.concatenate([lead, y.transpose(0, 1).reshape(NR, -1).numpy()], axis=1)
    shifted = []
    for tt in t:
        tt.offset += 5
        shifted.append(tt)
    det = linear_detector(NR, NT, "qpsk", "mmse")
    tb, snk, _ = _detect(stream, shifted, det)
    run(tb)
    out = np.stack([data(s) for s in snk])[:, 5:]
    assert np.stack([data(s) for s in snk]).shape == (NT, 5 + n_frames * ND)
    assert np.all(np.stack([data(s) for s in snk])[:, :5] == 0)
    const = Constellation("qpsk")
    y_clean = y.clone()
    y_clean[1, :, 3] = 0
    h_used = h.clone()
    h_used[2] = h[1]  # malformed csi: the last good one stays
    nv_used = nv.clone().float()
    nv_used[3] = nv[2]  # invalid noise_var: the last good one stays
    want, _ = linear_detect(y_clean, h_used, nv_used, "mmse", const)
    assert np.allclose(out, want.transpose(0, 1).reshape(NT, -1).numpy(), atol=1e-4)
    assert det.problems() == {"no-csi": 1, "nonfinite": 1, "bad-csi": 1, "bad-noise-var": 1, "stale-csi-frame": 2}


def test_configuration_errors_and_refused_switch():
    for bad in (dict(nt=5), dict(detector="ml"), dict(modulation="8psk")):
        with pytest.raises(ValueError):
            linear_detector(**{**dict(nr=4, nt=2), **bad})
    det = linear_detector(4, 2, "qpsk", "zf")
    det.set_detector("ml")  # logged, refused, no exception
    assert det.detector() == "zf"

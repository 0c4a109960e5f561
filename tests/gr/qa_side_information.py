"""Degenerate but finite side information (issue 14, class 3): an all-zero or rank-deficient
``csi`` tag, an absurd ``noise_var``, a NaN SNR on the channel, a negative ``rcond`` are
refused or flagged with a reason; a frame processed with stale side information carries a
``csi_stale`` tag and is counted, never passed off as a normal frame."""

import numpy as np
import pmt
import pytest
import torch
from gnuradio import gr
from gnuradio.neuralmimo import linear_detector, ls_channel_estimator, mimo_channel
from neuralmimo.constellation import Constellation
from neuralmimo.detectors import linear_detect
from neuralmimo.receiver.frames import FrameLayout

from conftest import data, detector_flowgraph, estimate_tags, random_frames, run, sinks, sources, tag, tags

pytestmark = pytest.mark.timeout(120)
NT, NR, NP, ND = 2, 4, 4, 8
L = NP + ND
BAD_FRAME = 2


def _frames(n_frames, seed=0):
    return random_frames(n_frames, NR, NT, ND, seed)


def _rank_one():
    col = torch.randn(NR, 1, dtype=torch.complex64, generator=torch.Generator().manual_seed(9))
    return torch.cat([col, 2 * col], 1)  # second column a multiple of the first


# (what replaces frame BAD_FRAME's tag, which tag, what the detector must keep)
DEGENERATE = {
    "all-zero csi": ("csi", lambda h, nv: torch.zeros(NR, NT, dtype=torch.complex64), "h"),
    "rank-deficient csi": ("csi", lambda h, nv: _rank_one(), "h"),
    "absurd noise_var": ("noise_var", lambda h, nv: 1e30, "nv"),
    "NaN noise_var": ("noise_var", lambda h, nv: float("nan"), "nv"),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_detector_refuses_degenerate_side_information_and_marks_the_frame(case):
    key, value, kept = DEGENERATE[case]
    n_frames = 5
    h, y, nv = _frames(n_frames, seed=3)
    tag_list = estimate_tags(h, nv, ND)
    bad = value(h, nv)
    i = next(k for k, t in enumerate(tag_list)
             if t.offset == BAD_FRAME * ND and pmt.symbol_to_string(t.key) == key)
    from gnuradio.neuralmimo.tags import csi_to_pmt

    tag_list[i] = tag(BAD_FRAME * ND, key, csi_to_pmt(bad) if key == "csi" else pmt.from_double(bad))
    det = linear_detector(NR, NT, "qpsk", "mmse")
    tb, snk = detector_flowgraph(y.transpose(0, 1).reshape(NR, -1).numpy(), tag_list, det, NT)
    tb.det = det
    run(tb)
    # the bad frame is detected with the last good value, the others with their own
    h_used, nv_used = h.clone(), nv.clone().float()
    if kept == "h":
        h_used[BAD_FRAME] = h[BAD_FRAME - 1]
    else:
        nv_used[BAD_FRAME] = nv[BAD_FRAME - 1]
    want, _ = linear_detect(y, h_used, nv_used, "mmse", Constellation("qpsk"))
    out = np.stack([data(s) for s in snk])
    assert np.allclose(out, want.transpose(0, 1).reshape(NT, -1).numpy(), atol=1e-4)
    for s in snk:  # marked on every output, at the frame's first vector, with a reason
        stale = tags(s, "csi_stale")
        assert [o for o, _ in stale] == [BAD_FRAME * ND]
        assert isinstance(stale[0][1], str) and stale[0][1]
    probs = det.problems()
    assert probs["stale-csi-frame"] == 1
    assert probs["bad-csi" if key == "csi" else "bad-noise-var"] == 1


def test_noise_variance_is_judged_against_the_frame_s_own_estimate():
    """A strong channel with a proportionally large noise variance (any scale) is fine: the
    csi tag is applied before the noise_var tag of the same frame, whatever their order."""
    h, y, nv = _frames(3, seed=4)
    scale = 1e8
    tag_list = []
    for f in range(3):  # noise_var first, then csi, at each boundary
        from gnuradio.neuralmimo.tags import csi_to_pmt

        tag_list += [tag(f * ND, "frame_start", pmt.from_long(f)),
                     tag(f * ND, "noise_var", pmt.from_double(float(nv[f]) * scale ** 2)),
                     tag(f * ND, "csi", csi_to_pmt(h[f] * scale))]
    det = linear_detector(NR, NT, "qpsk", "mmse")
    tb, snk = detector_flowgraph((y * scale).transpose(0, 1).reshape(NR, -1).numpy(), tag_list, det, NT)
    tb.det = det
    run(tb)
    assert det.problems() == {}
    assert tags(snk[0], "csi_stale") == []


def _estimator_chain(stream, tag_list):
    """LS estimator -> MMSE detector; returns (estimator, detector, the detector's first sink)."""
    tb = gr.top_block()
    est = ls_channel_estimator(NR, NT, NP, ND)
    det = linear_detector(NR, NT, "qpsk", "mmse")
    src, snk = sources(tb, stream, tag_list), sinks(tb, NT)
    for r in range(NR):
        tb.connect(src[r], (est, r))
        tb.connect((est, r), (det, r))
    for k in range(NT):
        tb.connect((det, k), snk[k])
    tb._keep += [est, det]
    run(tb)
    return est, det, snk[0]


def test_estimator_marks_frames_that_reuse_the_last_good_estimate():
    g = torch.Generator().manual_seed(5)
    lay = FrameLayout(NT, NP, ND)
    n_frames = 5
    h = torch.randn(n_frames, NR, NT, dtype=torch.complex64, generator=g)
    x = lay.assemble(torch.randn(n_frames, NT, ND, dtype=torch.complex64, generator=g))
    fr = (h @ x + 0.05 * torch.randn(n_frames, NR, L, dtype=torch.complex64, generator=g)).numpy()
    fr[0, :, :NP] = 0  # frame 0: no good estimate at all yet
    fr[BAD_FRAME, :, :NP] = 0  # a burst of zeros over frame 2's pilots
    stream = np.concatenate(list(fr), axis=1)
    est, det, snk = _estimator_chain(stream, [tag(f * L, "frame_start", pmt.from_long(f)) for f in range(n_frames)])
    stale = tags(snk, "csi_stale")
    assert [o for o, _ in stale] == [0, BAD_FRAME * ND]  # passed through the detector
    assert "no good estimate yet" in stale[0][1] and "rank-deficient" in stale[1][1]
    assert det.problems()["stale-csi-frame"] == 2  # counted where it is detected
    assert [o for o, _ in tags(snk, "csi")] == [f * ND for f in range(1, n_frames)]  # frame 0 has none to give


def test_channel_refuses_non_finite_snr_and_cfo():
    for bad in (dict(snr_db=float("nan")), dict(snr_db=float("inf")), dict(cfo=float("nan"))):
        with pytest.raises(ValueError, match="finite"):
            mimo_channel(**{**dict(nt=NT, nr=NR), **bad})
    ch = mimo_channel(NT, NR, "iid", snr_db=12.0)
    nv = ch.noise_var()
    ch.set_snr_db(float("nan"))  # a GUI slider gone wrong: logged and ignored
    ch.set_snr_db(float("-inf"))
    ch.set_cfo(float("inf"))
    assert ch.snr_db() == 12.0 and ch.noise_var() == nv
    ch.set_snr_db(3.0)
    assert ch.snr_db() == 3.0


@pytest.mark.parametrize("kwargs", [dict(rcond=-1.0), dict(rcond=float("nan")), dict(rcond=1.0),
                                    dict(fallback_noise_var=float("inf")), dict(fallback_noise_var=float("nan"))])
def test_estimator_refuses_meaningless_thresholds(kwargs):
    with pytest.raises(ValueError):
        ls_channel_estimator(NR, NT, NP, ND, **kwargs)


@pytest.mark.parametrize("scale", [1e22, 1e30])
def test_mmse_decides_the_same_at_any_scale_float32_holds(scale):
    """Issue 29, class 8: at input amplitudes >= 1e22 the noise variance (|y|^2 ~ 1e44) no longer
    fits float32; the MMSE block kept it in float32 and failed every frame. It is float64 now:
    the decisions at 1e22 and 1e30 are those at scale 1, with no problem counted."""
    h, y, nv = _frames(4, seed=5)
    outs = []
    for s in (1.0, scale):
        tag_list = []
        for f in range(4):
            from gnuradio.neuralmimo.tags import csi_to_pmt

            tag_list += [tag(f * ND, "frame_start", pmt.from_long(f)),
                         tag(f * ND, "csi", csi_to_pmt(h[f] * s)),
                         tag(f * ND, "noise_var", pmt.from_double(float(nv[f]) * s * s))]
        det = linear_detector(NR, NT, "qpsk", "mmse")
        tb, snk = detector_flowgraph((y * s).transpose(0, 1).reshape(NR, -1).numpy(), tag_list, det, NT)
        tb.det = det
        run(tb)
        assert det.problems() == {}
        outs.append(np.stack([np.array(k.data()) for k in snk]))  # symbol estimates: scale-free
    c = Constellation("qpsk")
    assert torch.equal(c.hard_decision(torch.from_numpy(outs[0])), c.hard_decision(torch.from_numpy(outs[1])))

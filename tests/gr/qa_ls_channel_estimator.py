"""LS channel estimator: equality with the core LS, tag offsets, and every kind of bad input."""

import numpy as np
import pmt
import pytest
import torch
from gnuradio import gr
from gnuradio.neuralmimo import ls_channel_estimator
from neuralmimo.receiver.estimation import ls_estimate
from neuralmimo.receiver.frames import FrameLayout

from conftest import data, run, sinks, sources, tag, tags

pytestmark = pytest.mark.timeout(120)
NT, NR, NP, ND = 2, 4, 4, 6
L = NP + ND


def _frames(n_frames, seed=0, noise=0.05):
    """Received frames ``(F, Nr, L)``: random channel per frame, pilots + random data, noise."""
    g = torch.Generator().manual_seed(seed)
    lay = FrameLayout(NT, NP, ND)
    h = torch.randn(n_frames, NR, NT, dtype=torch.complex64, generator=g)
    x = lay.assemble(torch.randn(n_frames, NT, ND, dtype=torch.complex64, generator=g))
    return (h @ x + noise * torch.randn(n_frames, NR, L, dtype=torch.complex64, generator=g)).numpy()


def _estimate(stream, tag_list, **kw):
    tb = gr.top_block()
    est = ls_channel_estimator(NR, NT, NP, ND, **kw)
    src = sources(tb, stream, tag_list)
    snk = sinks(tb, NR)
    for r in range(NR):
        tb.connect(src[r], (est, r))
        tb.connect((est, r), snk[r])
    tb.est = est
    run(tb)
    return np.stack([data(s) for s in snk]), snk[0], est


def _stream(frames):
    return np.concatenate(list(frames), axis=1)  # (Nr, F * L)


def _csi(snk):
    return [(o, np.asarray(v, dtype=np.complex64).reshape(NR, NT)) for o, v in tags(snk, "csi")]


def test_output_and_tags_equal_the_core_ls():
    fr = _frames(5)
    out, snk, est = _estimate(_stream(fr), [tag(i * L, "frame_start", pmt.from_long(40 + i)) for i in range(5)])
    assert out.shape == (NR, 5 * ND)
    assert np.array_equal(out, _stream(fr[:, :, NP:]))  # the data vectors, bit-exact
    h_ls, nv = ls_estimate(torch.from_numpy(fr[:, :, :NP]), FrameLayout(NT, NP, ND).pilots())
    csi = _csi(snk)
    assert [o for o, _ in csi] == [i * ND for i in range(5)]  # at each frame's first data vector
    for i, (_, h) in enumerate(csi):
        assert np.allclose(h, h_ls[i].numpy(), atol=1e-5)
    assert [o for o, _ in tags(snk, "frame_start")] == [i * ND for i in range(5)]
    assert [v for _, v in tags(snk, "frame_start")] == list(range(40, 45))
    assert np.allclose([v for _, v in tags(snk, "noise_var")], nv.numpy(), rtol=1e-5)
    assert est.problems() == {}


def test_bad_pilots_keep_the_last_good_estimate():
    fr = _frames(4, seed=1)
    fr[1, 2, 1] = np.nan  # NaN burst inside frame 1's pilots
    fr[2, :, :NP] = 0  # frame 2: receiver underflow, all-zero pilots -> rank-deficient estimate
    out, snk, est = _estimate(_stream(fr), [tag(i * L, "frame_start", pmt.from_long(i)) for i in range(4)])
    assert out.shape == (NR, 4 * ND)  # nothing lost
    csi = _csi(snk)
    assert len(csi) == 4
    assert np.array_equal(csi[1][1], csi[0][1]) and np.array_equal(csi[2][1], csi[0][1])
    h3, _ = ls_estimate(torch.from_numpy(fr[3:, :, :NP]), FrameLayout(NT, NP, ND).pilots())
    assert np.allclose(csi[3][1], h3[0].numpy(), atol=1e-5)  # recovers with the next good frame
    probs = est.problems()
    assert probs.get("non-finite") == 1  # one kind, however the details differ
    assert probs.get("rank-deficient channel estimate") == 1


def test_missing_misplaced_and_late_tags():
    fr = _frames(6, seed=2)
    lead = np.ones((NR, 3), dtype=np.complex64)  # junk before the first tag: dropped
    stream = np.concatenate([lead, _stream(fr[:3]), fr[3][:, :5], _stream(fr[3:])], axis=1)
    # tags: frame 0 and 1 present, frame 2's tag missing (flywheel), a partial frame 3 of 5
    # samples, then the real frame 3 tagged early relative to frame timing (misplaced)
    t = [tag(3, "frame_start", pmt.from_long(0)), tag(3 + L, "frame_start", pmt.from_long(1)),
         tag(3 + 3 * L, "frame_start", pmt.from_long(3)), tag(3 + 3 * L + 5, "frame_start", pmt.from_long(3))]
    t += [tag(3 + 3 * L + 5 + i * L, "frame_start", pmt.from_long(3 + i)) for i in range(1, 3)]
    out, snk, est = _estimate(stream, t)
    numbers = [v for _, v in tags(snk, "frame_start")]
    assert numbers == [0, 1, 2, 3, 4, 5]  # frame 2 bridged by timing, the fragment dropped
    assert np.array_equal(out, _stream(fr[:, :, NP:]))
    assert est.dropped_samples == 3 + 5
    assert set(est.problems()) == {"before-first-tag", "missing-tag", "misplaced-tag"}


def test_count_framing_and_fallback_noise_variance():
    fr = _frames(3, seed=3)
    tb_out, snk, est = _estimate(_stream(fr), [], framing="count")
    assert [v for _, v in tags(snk, "frame_start")] == [0, 1, 2]
    # Np == Nt: no residual to estimate the noise from, the fallback is tagged
    tb = gr.top_block()
    e2 = ls_channel_estimator(NR, NT, NT, ND, framing="count", fallback_noise_var=0.123)
    stream = np.random.default_rng(0).standard_normal((NR, 2 * (NT + ND))).astype(np.complex64)
    src, snk2 = sources(tb, stream), sinks(tb, NR)
    for r in range(NR):
        tb.connect(src[r], (e2, r))
        tb.connect((e2, r), snk2[r])
    tb.e2 = e2
    run(tb)
    assert np.allclose([v for _, v in tags(snk2[0], "noise_var")], [0.123, 0.123])


@pytest.mark.parametrize("kwargs", [dict(n_pilots=1), dict(framing="sync"), dict(nr=0), dict(fallback_noise_var=-1)])
def test_configuration_errors_raise_at_construction(kwargs):
    with pytest.raises(ValueError):
        ls_channel_estimator(**{**dict(nr=NR, nt=NT, n_pilots=NP, n_data=ND), **kwargs})

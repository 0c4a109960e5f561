"""MIMO frame source: frame layout, tags at exact offsets, seeded data, data from an input stream."""

import numpy as np
import pytest
import torch
from gnuradio import blocks, gr
from gnuradio.neuralmimo import mimo_frame_source
from neuralmimo.constellation import Constellation
from neuralmimo.receiver.frames import FrameLayout, frame_data_indices, pilot_matrix
from neuralmimo.receiver.preamble import Preamble

from conftest import data, run, sinks, tags

pytestmark = pytest.mark.timeout(120)


def _run_source(src, nt):
    tb = gr.top_block()
    snk = sinks(tb, nt)
    for k in range(nt):
        tb.connect((src, k), snk[k])
    tb.src = src
    run(tb)
    return np.stack([data(s) for s in snk]), snk


def test_frames_pilots_data_and_tags():
    nt, n_p, n_d, n_frames, seed = 3, 4, 10, 7, 5
    out, snk = _run_source(mimo_frame_source(nt, n_p, n_d, "16qam", False, seed, n_frames, 100), nt)
    L = n_p + n_d
    assert out.shape == (nt, n_frames * L)  # finite source: exactly n_frames frames
    frames = torch.from_numpy(out).reshape(nt, n_frames, L).transpose(0, 1)
    const = Constellation("16qam")
    expected = FrameLayout(nt, n_p, n_d).assemble(
        const.symbols(frame_data_indices(const, FrameLayout(nt, n_p, n_d), seed, range(100, 100 + n_frames))))
    assert torch.allclose(frames, expected, atol=1e-6)
    assert torch.allclose(frames[:, :, :n_p], pilot_matrix(nt, n_p).expand(n_frames, nt, n_p), atol=1e-6)
    for s in snk:  # every output: one frame_start per frame, at its first sample, numbered on
        assert tags(s, "frame_start") == [(i * L, 100 + i) for i in range(n_frames)]


def test_data_from_input_stream_in_time_order_and_bad_indices():
    nt, n_p, n_d, n_frames = 2, 2, 3, 2
    idx = np.arange(nt * n_d * n_frames) % 4
    idx[5] = 9  # out of range for QPSK: reduced modulo 4 and logged, the stream continues
    tb = gr.top_block()
    src = mimo_frame_source(nt, n_p, n_d, "qpsk", True, 0, 0)
    feed = blocks.vector_source_b(idx.astype(np.uint8).tolist(), False)
    snk = sinks(tb, nt)
    tb.connect(feed, src)
    for k in range(nt):
        tb.connect((src, k), snk[k])
    tb.src, tb.feed = src, feed
    run(tb)
    out = np.stack([data(s) for s in snk])
    assert out.shape == (nt, n_frames * (n_p + n_d))
    const = Constellation("qpsk")
    sent = idx % 4
    for f in range(n_frames):
        block = out[:, f * (n_p + n_d) + n_p:(f + 1) * (n_p + n_d)]  # (Nt, Nd)
        # input order: vector 0's Nt symbols, then vector 1's, ...
        want = const.points[torch.from_numpy(sent[f * nt * n_d:(f + 1) * nt * n_d].reshape(n_d, nt).T.copy())]
        assert np.allclose(block, want.numpy(), atol=1e-6)
    assert src.failures.counts == {"index-range": 1}


@pytest.mark.parametrize("kwargs", [dict(nt=4, n_pilots=3), dict(n_data=0), dict(modulation="8psk"), dict(n_frames=-1)])
def test_configuration_errors_raise_at_construction(kwargs):
    with pytest.raises(ValueError):
        mimo_frame_source(**kwargs)


def test_preamble_in_front_of_every_frame_and_a_closing_one():
    tb = gr.top_block()
    src = mimo_frame_source(2, 4, 10, "qpsk", False, 1, 3, 0, 8)
    out = sinks(tb, 2)
    for k in range(2):
        tb.connect((src, k), out[k])
    run(tb)
    L = 16 + 14
    y = np.array(out[1].data())
    pre = Preamble(2, 8).symbols()[1]
    assert len(y) == 3 * L + 32 and np.allclose(y[16:20], np.array(src.layout.pilots()[1]))
    for f in range(4):
        assert np.allclose(y[f * L:f * L + 16], pre, atol=1e-6)
    assert np.all(y[3 * L + 16:] == 0)
    assert tags(out[0], "frame_start") == [(0, 0), (L, 1), (2 * L, 2)]


def test_version_2_frame_format_coarse_preamble_and_tracking_pilots():
    """coarse_period puts 4 short periods in front of the preamble; pilot_spacing a known vector
    (column j of the pilot matrix) after every P data vectors; the data are those of the version-1
    frame (same seed), the tags sit at each frame's first preamble symbol."""
    from neuralmimo.receiver.tracking import tracking_positions, tracking_symbols

    def frames(**kw):
        tb = gr.top_block()
        src = mimo_frame_source(2, 4, 10, "qpsk", False, 1, 2, 0, 8, **kw)
        out = sinks(tb, 2)
        for k in range(2):
            tb.connect((src, k), out[k])
        run(tb)
        return src, np.stack([np.array(o.data()) for o in out]), tags(out[0], "frame_start")

    _, y1, _ = frames()
    src, y2, t2 = frames(coarse_period=2, pilot_spacing=4)
    pre = Preamble(2, 8, coarse_period=2)
    L = pre.length + 4 + 10 + 2  # 2 tracking pilots in 10 data vectors
    assert src.frame_length == L and t2 == [(0, 0), (L, 1)]
    assert np.allclose(y2[:, :pre.length], pre.symbols(), atol=1e-6)
    body = y2[:, pre.length + 4:L]  # data with tracking pilots, frame 0
    pos = tracking_positions(10, 4)
    assert np.allclose(body[:, pos], tracking_symbols(src.layout, 2), atol=1e-6)
    assert np.allclose(np.delete(body, pos, axis=1), y1[:, 16 + 4:16 + 14], atol=1e-6)
    with pytest.raises(ValueError, match="need a preamble"):
        mimo_frame_source(2, 4, 10, "qpsk", False, 1, 2, 0, 0, 0, 4)

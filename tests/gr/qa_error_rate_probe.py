"""Error-rate probe: exact error counts against the regenerated reference, stats messages."""

import numpy as np
import pmt
import pytest
from gnuradio import blocks, gr
from gnuradio.neuralmimo import error_rate_probe
from neuralmimo.constellation import Constellation
from neuralmimo.receiver.frames import FrameLayout, frame_data_indices

from conftest import run, sources, tag

pytestmark = pytest.mark.timeout(120)


def test_counts_injected_errors_exactly_and_publishes_per_frame_stats():
    nt, nd, seed, numbers = 2, 50, 7, [10, 11, 13]  # frame 12 lost on the way: no confusion
    const = Constellation("16qam")
    idx = frame_data_indices(const, FrameLayout(nt, nt, nd), seed, numbers).numpy()  # (F, Nt, Nd)
    rx = idx.copy()
    rx[0, 0, :3] = (rx[0, 0, :3] + 1) % 16  # 3 symbol errors in frame 10
    rx[2, 1, 7] = (rx[2, 1, 7] + 5) % 16  # 1 in frame 13
    sym = const.points.numpy()[rx] * 0.9 + 0.01  # a little distortion, same decisions
    stream = np.concatenate(list(sym), axis=1)  # (Nt, F * Nd)
    tb = gr.top_block()
    probe = error_rate_probe(nt, nd, "16qam", seed, "test")
    src = sources(tb, stream, [tag(i * nd, "frame_start", pmt.from_long(n)) for i, n in enumerate(numbers)])
    dbg = blocks.message_debug()
    for k in range(nt):
        tb.connect(src[k], (probe, k))
    tb.msg_connect(probe, "stats", dbg, "store")
    tb.probe, tb.dbg = probe, dbg
    run(tb)
    assert probe.symbols() == 3 * nt * nd and probe.frames() == 3
    assert probe.ser() == pytest.approx(4 / (3 * nt * nd))
    bit_errs = sum(int(np.sum(const.bits.numpy()[a] != const.bits.numpy()[b])) for a, b in
                   [(idx[0, 0, i], rx[0, 0, i]) for i in range(3)] + [(idx[2, 1, 7], rx[2, 1, 7])])
    assert probe.ber() == pytest.approx(bit_errs / (3 * nt * nd * 4))
    assert probe.frame_errors() == [(3, nt * nd), (0, nt * nd), (1, nt * nd)]
    msgs = [pmt.to_python(dbg.get_message(i)) for i in range(dbg.num_messages())]
    assert [m["frame"] for m in msgs] == numbers
    assert [m["symbol_errors"] for m in msgs] == [3, 0, 1]
    assert msgs[-1]["cum_ser"] == pytest.approx(probe.ser())
    lo, hi = probe.ser_interval()
    assert lo <= probe.ser() <= hi


def test_vectors_before_the_first_tag_are_not_counted():
    nt, nd = 1, 20
    const = Constellation("qpsk")
    idx = frame_data_indices(const, FrameLayout(nt, nt, nd), 0, [0]).numpy()[0]
    stream = np.concatenate([np.zeros((nt, 5)), const.points.numpy()[idx]], axis=1)
    tb = gr.top_block()
    probe = error_rate_probe(nt, nd, "qpsk", 0)
    src = sources(tb, stream, [tag(5, "frame_start", pmt.from_long(0))])
    tb.connect(src[0], probe)
    tb.probe = probe
    run(tb)
    assert (probe.symbols(), probe.ser()) == (nd, 0.0)

"""Block plumbing (gnuradio.neuralmimo._common): a failure logged once per kind and counted,
NaN/Inf columns zeroed, equal-length frames gathered as a view when back to back, a batch that
raises retried frame by frame, and a work() that never raises."""

import numpy as np
import torch
from gnuradio import blocks, gr
from gnuradio.neuralmimo import _common

from conftest import run


class Logger:
    def __init__(self):
        self.lines = []

    def error(self, text):
        self.lines.append(text)


def test_failures_are_logged_once_per_kind_and_every_one_is_counted():
    log = Logger()
    f = _common.FailureLog(log)
    for _ in range(3):
        f.report("a", "first kind")
    f.report("b", "second kind")
    f.count("a")
    assert f.counts == {"a": 4, "b": 1} and len(log.lines) == 2 and "logged once" in log.lines[0]


def test_nonfinite_columns_are_zeroed():
    x = torch.ones(2, 5, dtype=torch.complex64)
    assert _common.zero_nonfinite(x) == 0
    x[1, 2] = complex(float("nan"), 0)
    x[0, 4] = complex(0, float("inf"))
    assert _common.zero_nonfinite(x) == 2
    assert torch.equal(x[:, [2, 4]], torch.zeros(2, 2, dtype=torch.complex64)) and bool((x[:, :2] == 1).all())


def test_segments_are_gathered_as_a_view_when_back_to_back():
    y = torch.arange(2 * 12, dtype=torch.float32).reshape(2, 12).to(torch.complex64)
    cols, g = _common.gather_segments(y, [0, 4, 8], 4)
    assert cols == slice(0, 12) and g.shape == (3, 2, 4) and torch.equal(g[1], y[:, 4:8])
    cols, g = _common.gather_segments(y, [0, 8], 4)
    assert not isinstance(cols, slice) and torch.equal(g[1], y[:, 8:12])


class Flaky:
    """Stands in for a block: detect_groups reports through ``failures`` and ``name()``."""

    def __init__(self):
        self.failures = _common.FailureLog(Logger())

    def name(self):
        return "flaky"

    def nitems_read(self, port):
        return 100


def test_a_batch_that_raises_is_retried_frame_by_frame_and_only_bad_frames_output_zero():
    blk = Flaky()
    y = torch.ones(2, 12, dtype=torch.complex64)
    groups = {(4, 7): [(0, "good"), (4, "bad"), (8, "good")]}

    def detect(yb, states, key):
        if "bad" in states:
            raise RuntimeError("bad frame")
        return 2 * yb, None

    x, llr, failed = _common.detect_groups(blk, y, groups, detect, 2)
    assert llr is None and [(k, a) for k, _, a in failed] == [(7, 4)]
    assert bool((x[:, :4] == 2).all()) and bool((x[:, 4:8] == 0).all()) and bool((x[:, 8:] == 2).all())
    assert blk.failures.counts == {"frame-failed": 1}


class Raises(gr.sync_block):
    def __init__(self):
        gr.sync_block.__init__(self, name="raises", in_sig=[np.complex64], out_sig=[np.complex64])
        self.failures = _common.FailureLog(self.logger)

    @_common.guarded_work("zeros")
    def work(self, input_items, output_items):
        raise ValueError("always")


def test_guarded_work_outputs_zeros_and_the_flowgraph_ends():
    tb = gr.top_block()
    src = blocks.vector_source_c([1 + 1j] * 1000)
    blk = Raises()
    snk = blocks.vector_sink_c()
    tb.connect(src, blk, snk)
    run(tb, 60)
    assert len(snk.data()) == 1000 and not any(snk.data())
    assert list(blk.failures.counts.values()) == [sum(blk.failures.counts.values())]

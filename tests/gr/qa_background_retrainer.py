"""Background Re-trainer block (issue 29, class 2): its thread is supervised. Malformed drift
events are ignored and counted; an internal error in the thread's own work is reported on
``status`` (``retrain-error``) and the thread serves the next event."""

from __future__ import annotations

import time

import pmt
import pytest
from gnuradio import blocks, gr
from gnuradio.neuralmimo import background_retrainer

pytestmark = pytest.mark.timeout(120)


def _wait(predicate, timeout_s=10.0):
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.05)
    return predicate()


def test_the_thread_survives_malformed_events_and_its_own_failures(tmp_path):
    rt = background_retrainer(str(tmp_path / "log"), str(tmp_path / "watch"), min_frames=10_000_000)
    real_on_status = rt.retrainer.on_status
    calls = {"n": 0}

    def broken_once(event):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("the re-trainer's work fails on purpose")
        return real_on_status(event)

    rt.retrainer.on_status = broken_once
    tb = gr.top_block()
    # a flowgraph that runs while the test posts: a throttled null stream, stopped by the test
    src = blocks.null_source(gr.sizeof_gr_complex)
    thr = blocks.throttle(gr.sizeof_gr_complex, 1e5)
    tb.connect(src, thr, blocks.null_sink(gr.sizeof_gr_complex))
    tb.rt = rt
    debug = blocks.message_debug()
    tb.msg_connect((rt, "status"), (debug, "store"))
    tb.start()
    try:
        port = pmt.intern("status")
        post = lambda d: rt.to_basic_block()._post(port, pmt.to_pmt(d))  # noqa: E731
        post({"event": "swapped", "path": str(tmp_path / "model")})
        post({"event": "drift", "frame": 5})  # the 2nd event the thread handles: its work raises
        for bad in ("seven", float("nan"), [3], -1):
            post({"event": "drift", "frame": bad})
        post({"event": "drift", "frame": 9})
        assert _wait(lambda: any(e["event"] == "retrain-collecting" for e in rt.events()))
        events = [e["event"] for e in rt.events()]
        assert events.count("retrain-error") == 1 and events.count("retrain-ignored") == 4
        assert rt._thread.is_alive()
        assert rt.problems()["thread-error"] == 1 and rt.problems()["bad-drift-event"] == 4
        assert [e for e in rt.events() if e["event"] == "retrain-collecting"][0]["since_frame"] == 9
    finally:
        tb.stop()
        tb.wait()
    assert _wait(lambda: debug.num_messages() >= 6)


def test_settings_are_checked_when_the_block_is_built(tmp_path):
    for bad in (dict(nice=-3), dict(budget_s=float("nan")), dict(extra_args="--out /tmp"), dict(min_frames=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            background_retrainer(str(tmp_path / "log"), str(tmp_path / "watch"), **bad)

"""SupervisedThread (neuralmimo.supervise): a step that raises costs that step only."""

from __future__ import annotations

import threading

from neuralmimo.supervise import STOP, SupervisedThread


def test_a_failing_step_is_reported_and_the_thread_goes_on():
    stop, seen, reports = threading.Event(), [], []
    items = iter([1, "boom", 2, "boom", 3, None])

    def step():
        item = next(items)
        if item is None:
            return STOP
        if item == "boom":
            raise RuntimeError("step failed on purpose")
        seen.append(item)
        return None

    th = SupervisedThread("worker", step, stop, lambda name, exc: reports.append((name, str(exc))))
    th.start()
    th.join(10)
    assert not th.is_alive() and seen == [1, 2, 3]
    assert th.errors == 2 and reports == [("worker", "step failed on purpose")] * 2
    assert th.last_error == "RuntimeError: step failed on purpose"


def test_a_failing_reporter_does_not_end_the_thread_and_stop_ends_it():
    stop, calls = threading.Event(), {"n": 0}

    def step():
        calls["n"] += 1
        if calls["n"] == 5:
            stop.set()
        raise ValueError("always")

    def report(name, exc):
        raise RuntimeError("the reporter is broken too")

    th = SupervisedThread("worker", step, stop, report)
    th.start()
    th.join(10)
    assert not th.is_alive() and th.errors == 5 and calls["n"] == 5

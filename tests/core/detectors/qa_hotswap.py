"""ModelSwitch (detectors/hotswap.py) driven with fake detectors and a fake clock: swaps exactly at
frame boundaries, reverts on failure and on slowdown, bursts of requests, a watch folder that
changes while loading, threads that survive bad requests and end at stop()."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from neuralmimo.bundle import MANIFEST, BundleError
from neuralmimo.detectors.hotswap import ModelSwitch, check_complexity, resolve_model_path

TIMEOUT = 10.0


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class FakeDetector:
    """Seconds per vector on the fake clock; ``fail``: raises on every frame."""

    architecture = "fake"

    def __init__(self, path, clock, cost=1.0, fail=False, keep=1.0, layers=0):
        self.path, self.clock, self.cost, self.fail = str(path), clock, cost, fail
        self.hyperparameters = {"keep": 1.0}
        self.options = {"keep": keep, "layers": layers}

    def describe(self):
        return {"architecture": self.architecture, "sha256": "0" * 64, "path": self.path, "options": self.options}

    def detect_with_llr(self, y, h, nv, users, llr=False):
        if self.fail:
            raise RuntimeError("broken model")
        self.clock.t += self.cost * y.shape[0] * y.shape[2]
        return torch.full((y.shape[0], 2, y.shape[2]), float(self.cost), dtype=torch.complex64), None

    def configured(self, keep, layers):
        if layers > 3:
            raise ValueError("the model has 3 layers")
        return FakeDetector(self.path, self.clock, self.cost * keep, self.fail, keep, layers)


def bundle(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).write_text("{}")
    return folder


def make_switch(tmp_path, **kw):
    clock = FakeClock()
    events = []

    def load(path, sha):
        name = path.name
        if name.startswith("bad"):
            raise BundleError(f"{path}: not a bundle")
        gate = kw.get("gate") if name == "slowload" else None
        if gate is not None:  # (entered, release): tell that the load began, wait to be released
            gate[0].set()
            gate[1].wait(TIMEOUT)
        return FakeDetector(path, clock, cost=100.0 if name.startswith("slow") else 1.0, fail=name.startswith("fail"))

    sw = ModelSwitch(None, load=load, emit=events.append, log=lambda level, text: None, clock=clock,
                     **{k: v for k, v in kw.items() if k != "gate"})
    return sw, events, clock


def run_frames(sw, frames, length=4, first_column=0):
    """One work() call over ``frames`` frames of ``length`` vectors, each at a boundary; returns
    the columns and detector of every frame, the remaining failures and the model tags."""
    groups, out = {}, []
    for f in range(frames):
        a = first_column + f * length
        sw.boundary(offset=a, frame=f)
        det = sw.active
        groups.setdefault((length, id(det)), []).append((a, (det, None, 0.1, 2)))
        out.append((a, det))

    def detect(gs):
        failed = []
        for (n, key), segs in gs.items():
            for a, st in segs:
                try:
                    sw.detect(st[0], torch.zeros(1, 2, n), torch.zeros(1, 2, 2), torch.ones(1), [2], False)
                except Exception as exc:  # noqa: BLE001 - as the block's detect_groups
                    failed.append((key, exc, a))
        return failed

    failed, tags = sw.end_of_call(groups, detect(groups), detect)
    return out, failed, tags


def swap_in(sw, tmp_path, name, frames, first_column=0):
    """Request bundle ``name``, wait until it loaded, run ``frames`` frames (it comes into force at
    the first); returns run_frames' result."""
    sw.request(str(bundle(tmp_path, name)))
    assert sw.wait_idle(TIMEOUT)
    return run_frames(sw, frames, first_column=first_column)


def test_a_loaded_model_comes_into_force_exactly_at_the_next_boundary(tmp_path):
    sw, events, _ = make_switch(tmp_path)
    a, b = bundle(tmp_path, "a"), bundle(tmp_path, "b")
    sw.request(str(a))
    assert sw.wait_idle(TIMEOUT) and sw.active is None and sw.pending.path == str(a)
    assert sw.boundary(offset=0, frame=0).path == str(a)
    sw.request(str(b))
    assert sw.wait_idle(TIMEOUT)
    assert sw.active.path == str(a)  # loaded, not yet in force: a frame is never split
    out, failed, tags = run_frames(sw, 2, first_column=100)
    assert [d.path for _, d in out] == [str(b), str(b)] and not failed and not tags
    swapped = [e for e in events if e["event"] == "swapped"]
    assert [(e["path"], e["offset"]) for e in swapped] == [(str(a), 0), (str(b), 100)]
    assert sw.previous.path == str(a) and [e["event"] for e in events].count("loaded") == 2
    sw.stop()


def test_a_new_model_failing_in_probation_is_reverted_and_its_frames_detected_again(tmp_path):
    sw, events, _ = make_switch(tmp_path)
    swap_in(sw, tmp_path, "a", 3)
    good = sw.active
    out, failed, tags = swap_in(sw, tmp_path, "fail", 3, first_column=12)
    assert out[0][1].fail and failed == []  # every failed frame was detected again by the old model
    assert tags == [(12, good)] and sw.active is good and sw.previous is None
    assert len(sw.reverts) == 1 and "failed on a frame" in sw.reverts[0]["reason"]
    assert [e for e in events if e["event"] == "reverted"][0]["to"] == good.path
    sw.stop()


def test_failures_after_probation_stay_contained_to_their_frames(tmp_path):
    sw, _, _ = make_switch(tmp_path, probation_frames=2)
    swap_in(sw, tmp_path, "a", 1)
    swap_in(sw, tmp_path, "b", 6)
    b = sw.active
    b.fail = True  # fails only now, past its probation
    _, failed, tags = run_frames(sw, 2, first_column=40)
    assert len(failed) == 2 and not tags and sw.active is b and not sw.reverts
    sw.stop()


def test_a_model_slower_than_max_slowdown_is_reverted_at_the_next_boundary(tmp_path):
    sw, events, clock = make_switch(tmp_path, max_slowdown=50.0)
    swap_in(sw, tmp_path, "a", 4)
    fast = sw.active
    swap_in(sw, tmp_path, "slow", 4, first_column=16)  # 100x slower per vector on the fake clock
    assert sw.active.cost == 100.0 and sw.pending is fast  # in force until the next boundary
    assert "100x slower" in sw.reverts[0]["reason"]
    out, _, _ = run_frames(sw, 1, first_column=32)
    assert out[0][1] is fast and sw.swaps[-1]["offset"] == 32
    # a model within the limit stays
    sw2, _, _ = make_switch(tmp_path, max_slowdown=200.0)
    swap_in(sw2, tmp_path, "a", 4)
    swap_in(sw2, tmp_path, "slow", 8)
    assert sw2.active.cost == 100.0 and not sw2.reverts
    sw.stop()
    sw2.stop()


def test_in_a_burst_of_requests_only_the_last_wins(tmp_path):
    sw, events, _ = make_switch(tmp_path)
    paths = [bundle(tmp_path, f"m{i}") for i in range(5)]
    for p in paths:
        sw.request(str(p))
    assert sw.wait_idle(TIMEOUT)
    assert sw.boundary(offset=0).path == str(paths[-1])
    superseded = [e for e in events if e["event"] == "superseded"]
    assert [e["path"] for e in superseded] == [str(p) for p in paths[:-1]]
    assert [e["by"] for e in superseded] == [str(p) for p in paths[1:]]
    sw.stop()


def test_a_watch_folder_that_changes_while_loading_ends_with_the_newest_bundle(tmp_path):
    entered, release = threading.Event(), threading.Event()
    watch = tmp_path / "watch"
    watch.mkdir()
    bundle(watch, "old")  # present at start: never swapped in by itself
    sw, events, _ = make_switch(tmp_path, watch_dir=str(watch), watch_interval_s=0.05, gate=(entered, release))
    sw.start()
    time.sleep(0.2)
    bundle(watch, "slowload")  # its load blocks until released
    assert entered.wait(TIMEOUT)
    newest = bundle(watch, "new")  # arrives while the first one loads
    time.sleep(0.3)
    release.set()
    deadline = time.time() + TIMEOUT
    while (sw.pending is None or sw.pending.path != str(newest)) and time.time() < deadline:
        time.sleep(0.02)
    assert sw.pending.path == str(newest)
    assert not any(e.get("path", "").endswith("/old") for e in events)
    sw.stop()
    assert sw.threads_alive() == []


def test_bad_requests_are_refused_and_the_loader_lives_on(tmp_path):
    sw, events, _ = make_switch(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    for bad in ("x" * 300, str(tmp_path / "missing"), str(bundle(tmp_path, "bad")), str(locked / "y" / ("z" * 300))):
        sw.request(bad)
    sw.set_complexity(0.0)
    sw.set_complexity("half")
    assert sw.wait_idle(TIMEOUT)
    assert len(sw.refusals) == 6 and sw.threads_alive() == ["model-switch-loader"]
    reasons = [r["reason"] for r in sw.refusals]
    assert sum("bad complexity" in r for r in reasons) == 2 and sum("not a bundle" in r for r in reasons) == 1
    assert sum("no such bundle" in r for r in reasons) == 3
    sw.request(str(bundle(tmp_path, "a")))
    assert sw.wait_idle(TIMEOUT) and sw.pending is not None
    assert resolve_model_path("x" * 300) is None
    sw.stop()


def test_the_complexity_dial_reslices_the_model_that_will_be_in_force(tmp_path):
    sw, events, _ = make_switch(tmp_path, complexity=(0.5, 0))
    sw.request(str(bundle(tmp_path, "a")))
    assert sw.wait_idle(TIMEOUT) and sw.pending.options == {"keep": 0.5, "layers": 0}
    sw.boundary(offset=0)
    sw.set_complexity(0.25, 2)
    assert sw.wait_idle(TIMEOUT) and sw.pending.options == {"keep": 0.25, "layers": 2}
    sw.set_complexity(1.0, 7)  # more layers than the model has: refused, the setting stays
    assert sw.wait_idle(TIMEOUT) and "complexity refused" in sw.refusals[-1]["reason"]
    assert sw.complexity == (0.25, 2)
    with pytest.raises(ValueError):
        check_complexity(1.5, 0)
    sw.stop()


def test_stop_joins_every_thread_and_requests_made_while_stopped_are_served_at_start(tmp_path):
    watch = tmp_path / "w"
    watch.mkdir()
    sw, _, _ = make_switch(tmp_path, watch_dir=str(watch), watch_interval_s=0.05)
    sw.start()
    assert sorted(sw.threads_alive()) == ["model-switch-loader", "model-switch-watch"]
    sw.stop()
    assert sw.threads_alive() == []
    sw.request(str(bundle(tmp_path, "a")))
    assert sw.pending is None
    assert sw.wait_idle(TIMEOUT) and sw.pending is not None  # wait_idle starts the threads again
    sw.stop()
    assert sw.threads_alive() == []


def test_supervised_threads_survive_their_own_work_failing(tmp_path):
    """Issue 29, class 2: the loader's and the watcher's work functions are made to raise on
    purpose (not a bad request: an internal error); each error is reported once per kind and
    counted (``thread-error``) and both threads go on serving."""
    sw, events, _ = make_switch(tmp_path, watch_dir=str(tmp_path / "watch"), watch_interval_s=0.05)
    (tmp_path / "watch").mkdir()
    scans = {"n": 0}
    real_scan = sw._scan

    def broken_scan():
        scans["n"] += 1
        if scans["n"] <= 3:
            raise RuntimeError("scan broken on purpose")
        return real_scan()

    sw._scan = broken_scan
    real_apply = sw._apply_complexity
    sw._apply_complexity = lambda setting: (_ for _ in ()).throw(KeyError("loader broken on purpose"))
    sw.start()
    try:
        sw.set_complexity(0.5)  # the loader's work raises outside any request handler's refusal path
        assert sw.wait_idle(TIMEOUT)
        sw._apply_complexity = real_apply
        deadline = time.monotonic() + TIMEOUT
        while scans["n"] <= 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert scans["n"] > 4  # the watcher scanned again after its failures
        assert sorted(sw.threads_alive()) == ["model-switch-loader", "model-switch-watch"]
        assert sw.thread_errors == {"model-switch-watch: RuntimeError": 3}
        assert [e["reason"] for e in sw.refusals] == ["complexity: KeyError: 'loader broken on purpose'"]
        sw.request(str(bundle(tmp_path, "good")))  # and the loader still serves
        assert sw.wait_idle(TIMEOUT) and sw.pending is not None
        time.sleep(0.1)
        b = bundle(tmp_path / "watch", "new")  # the watcher still watches
        deadline = time.monotonic() + TIMEOUT
        while not any(e["event"] == "loaded" and e["path"] == str(b) for e in events) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert any(e["event"] == "loaded" and e["path"] == str(b) for e in events)
        assert sum(e["event"] == "thread-error" for e in events) == 3
    finally:
        sw.stop()
    assert sw.threads_alive() == []

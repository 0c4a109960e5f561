"""The background re-trainer's state machine (neuralmimo.site.retrain) with a stand-in for the lab's
``adapt`` command: drift -> collecting -> training (after min_frames logged frames from the
drift's frame on) -> done / failed / killed past its budget; one re-training at a time; the
base is the model in force; a drift-back while collecting cancels."""

import sys
import time
from pathlib import Path

import torch
from neuralmimo.site.csilog import CSILogWriter, frames_since
from neuralmimo.site.retrain import BackgroundRetrainer, RetrainSettings

# stands in for `neuralmimo adapt`: writes --out/--name (or fails / hangs, as asked)
FAKE = """
import sys, time, pathlib
args = sys.argv[2:]
opt = dict(zip(args[::2], args[1::2]))
mode = pathlib.Path(opt["--csi"]).parent.joinpath("mode").read_text()
if mode == "hang":
    time.sleep(60)
if mode == "fail":
    sys.exit(3)
(pathlib.Path(opt["--out"]) / opt["--name"]).mkdir(parents=True)
(pathlib.Path(opt["--out"]) / opt["--name"] / "since").write_text(opt["--since-frame"] + " " + opt["--base"])
"""


def _log(folder: Path, frames: range):
    w = CSILogWriter(folder, 4, 2, chunk_frames=50)
    for f in frames:
        w.add(f, torch.ones(4, 2), 0.1)
    w.close()


def _wait(rt, kinds, timeout=20.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        for e in rt.poll():
            if e["event"] in kinds:
                return e
        time.sleep(0.05)
    raise AssertionError(f"no {kinds} within {timeout} s (state {rt.state})")


def _retrainer(tmp_path, mode="ok", **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "mode").write_text(mode)
    script = tmp_path / "fake_adapt.py"
    script.write_text(FAKE)
    s = RetrainSettings(tmp_path / "log", tmp_path / "watch", command=(sys.executable, str(script)), **kw)
    rt = BackgroundRetrainer(s)
    rt.on_status({"event": "swapped", "path": "/models/old"})
    return rt


def test_frames_since_counts_chunks_by_frame_number(tmp_path):
    assert frames_since(tmp_path / "none", 0) == 0
    _log(tmp_path / "log", range(100, 300))
    assert frames_since(tmp_path / "log", 0) == 200
    assert frames_since(tmp_path / "log", 200) == 100
    assert frames_since(tmp_path / "log", 225) == 75  # a chunk straddling the frame counts from it
    assert frames_since(tmp_path / "log", 400) == 0


def test_drift_waits_for_frames_then_trains_on_them(tmp_path):
    rt = _retrainer(tmp_path, min_frames=100, budget_s=10)
    _log(tmp_path / "log", range(0, 120))  # before the drift
    (e,) = rt.on_status({"event": "drift", "frame": 100})
    assert e["event"] == "retrain-collecting" and e["base"] == "/models/old"
    assert rt.poll() == []  # only 20 frames from 100 on
    _log(tmp_path / "log", range(120, 260))
    started = _wait(rt, {"retrain-started"})
    assert started["since_frame"] == 100 and started["frames"] >= 100
    assert "--since-frame" in started["command"] and started["command"][started["command"].index("--base") + 1] == "/models/old"
    assert rt.on_status({"event": "drift", "frame": 200})[0]["event"] == "retrain-ignored"  # one at a time
    done = _wait(rt, {"retrain-done", "retrain-failed"})
    assert done["event"] == "retrain-done", done
    assert (Path(done["bundle"]) / "since").read_text() == "100 /models/old"
    assert rt.state == "idle"


def test_failure_and_hang_leave_the_old_model(tmp_path):
    rt = _retrainer(tmp_path / "a", "fail", min_frames=10, budget_s=10)
    _log(tmp_path / "a" / "log", range(0, 50))
    rt.on_status({"event": "drift", "frame": 0})
    e = _wait(rt, {"retrain-failed", "retrain-done"})
    assert e["event"] == "retrain-failed" and "exited with 3" in e["reason"]
    rt = _retrainer(tmp_path / "b", "hang", min_frames=10, budget_s=0.5, grace_s=0.5)
    _log(tmp_path / "b" / "log", range(0, 50))
    rt.on_status({"event": "drift", "frame": 0})
    e = _wait(rt, {"retrain-failed", "retrain-done"})
    assert e["event"] == "retrain-failed" and "past its budget" in e["reason"]
    assert not any((tmp_path / "b" / "watch").glob("adapted-*"))


def test_drift_back_cancels_and_no_base_fails(tmp_path):
    rt = _retrainer(tmp_path, min_frames=1000)
    rt.on_status({"event": "drift", "frame": 5})
    assert rt.on_status({"event": "drift-back"})[0]["event"] == "retrain-cancelled" and rt.state == "idle"
    bare = BackgroundRetrainer(RetrainSettings(tmp_path / "log", tmp_path / "watch"))
    assert bare.on_status({"event": "drift", "frame": 1})[0]["event"] == "retrain-failed"

"""Containment: one bad frame never costs its neighbours; a model that passes validation but fails
or stalls at run time is reverted; hot-swap edge cases (non-atomic copies into the watched folder,
a missing folder, a zero poll interval, superseded requests).

Faults are injected where the project's own code would fail: a detector family registered for
the test whose detections raise on chosen frames (or sleep), and the linear detector's solver
raising on one frame. GNU Radio and PyTorch run unmodified.
"""

from __future__ import annotations

import dataclasses
import importlib
import shutil
import threading
import time

import numpy as np
import pmt
import pytest
import torch
from gnuradio import blocks
from gnuradio.neuralmimo import linear_detector, neural_detector
from neuralmimo.bundle import MANIFEST, WEIGHTS, save_model
from neuralmimo.constellation import Constellation
from neuralmimo.detectors import REGISTRY, linear_detect, load_detector
from neuralmimo.detectors.sdnet import SDNET_CODEC, SDNetDetector

from conftest import data, detector_flowgraph, estimate_tags, run

pytestmark = pytest.mark.timeout(180)
NT, NR, ND = 2, 4, 16
POISON = 0.123456  # the noise variance of the frames the injected faults hit
QPSK = Constellation("qpsk")


def _frames(n_frames, poisoned=(), seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n_frames, NR, NT, dtype=torch.complex64, generator=g)
    y = torch.randn(n_frames, NR, ND, dtype=torch.complex64, generator=g)
    nv = 0.05 + 0.5 * torch.rand(n_frames, generator=g, dtype=torch.float64)
    for f in poisoned:
        nv[f] = POISON
    return h, y, nv


def _streams(y):
    return y.transpose(0, 1).reshape(NR, -1).numpy()


def _outputs(snk):
    return np.stack([data(s) for s in snk]).reshape(NT, -1, ND).transpose(1, 0, 2)  # (frames, Nt, Nd)


def test_linear_detector_zeroes_only_the_frame_whose_solve_fails(monkeypatch):
    def flaky(y, h, nv, kind, constellation):
        if bool((torch.as_tensor(nv) == POISON).any()):
            raise torch.linalg.LinAlgError("injected: the solver fails on this frame")
        return linear_detect(y, h, nv, kind, constellation)

    monkeypatch.setattr(importlib.import_module("gnuradio.neuralmimo.linear_detector"), "linear_detect", flaky)
    n = 30
    h, y, nv = _frames(n, poisoned=(7,))
    det = linear_detector(NR, NT, "qpsk", "mmse")
    tb, snk = detector_flowgraph(_streams(y), estimate_tags(h, nv, ND), det, NT)
    run(tb)
    out = _outputs(snk)
    want, _ = linear_detect(y, h, nv.float(), "mmse", QPSK)
    assert np.abs(out[7]).max() == 0
    good = [f for f in range(n) if f != 7]
    assert np.allclose(out[good], want[good].numpy(), atol=1e-4)
    assert det.problems().get("frame-failed") == 1


class FlakySDNet(SDNetDetector):
    """SDNet that raises on frames with the poisoned noise variance (the dummy frame at load time
    has noise variance 1, so it passes validation)."""

    codec = dataclasses.replace(SDNET_CODEC, architecture="flaky-sdnet")

    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        if bool((torch.as_tensor(noise_var) == POISON).any()):
            raise RuntimeError("injected: the model fails on this frame")
        return super().detect_with_llr(y, h, noise_var, n_users, llr)


class SlowSDNet(SDNetDetector):
    """SDNet far slower than real time (sleeps 50 ms per frame except on the dummy one: ~3 ms per
    vector, hundreds of times the real model)."""

    codec = dataclasses.replace(SDNET_CODEC, architecture="slow-sdnet")

    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        if not bool((torch.as_tensor(noise_var) == 1).all()):
            time.sleep(0.05 * y.shape[0])
        return super().detect_with_llr(y, h, noise_var, n_users, llr)


@pytest.fixture
def bundles(tmp_path, monkeypatch, trained_like_sdnet):
    monkeypatch.setitem(REGISTRY, "flaky-sdnet", FlakySDNet)
    monkeypatch.setitem(REGISTRY, "slow-sdnet", SlowSDNet)
    system = {"nt": NT, "nr": NR, "modulation": "qpsk"}
    out = {}
    for name, codec, seed in (("good", SDNET_CODEC, 1), ("good2", SDNET_CODEC, 2), ("flaky", FlakySDNet.codec, 3),
                              ("slow", SlowSDNet.codec, 4)):
        out[name] = save_model(trained_like_sdnet(NT, NR, 2, seed=seed), codec, tmp_path / name, system=system)
    return out


def _status_events(status):
    return [pmt.to_python(status.get_message(i)) for i in range(status.num_messages())]


def _run_with_status(det, y, tag_list, throttle=None):
    tb, snk = detector_flowgraph(_streams(y), tag_list, det, NT, throttle, chunk=ND)
    status = blocks.message_debug()
    tb.msg_connect((det, "status"), (status, "store"))
    tb._keep = getattr(tb, "_keep", []) + [status]
    run(tb)
    return _outputs(snk), _status_events(status)


def test_neural_detector_contains_a_failing_frame(bundles):
    n = 24
    h, y, nv = _frames(n, poisoned=(5, 6))
    det = neural_detector(NR, NT, "qpsk", str(bundles["flaky"]))
    out, _ = _run_with_status(det, y, estimate_tags(h, nv, ND))
    good = [f for f in range(n) if f not in (5, 6)]
    want = load_detector(bundles["flaky"]).detect(y[good], h[good], nv[good].float())  # raises on poisoned only
    assert np.abs(out[[5, 6]]).max() == 0
    assert np.allclose(out[good], want.numpy(), atol=1e-5)
    assert det.problems()["frame-failed"] == 2
    det.close()


def test_a_new_model_failing_on_its_first_frames_is_reverted(bundles):
    """good is in force; flaky is requested and fails on the first poisoned frame after its swap:
    the block reverts to good at once, detects the frames flaky failed on again with good (none
    is lost), marks it with a model tag and says so on status."""
    n = 120
    h, y, nv = _frames(n, poisoned=range(0, n, 3))  # good ignores the poison, flaky fails on it
    det = neural_detector(NR, NT, "qpsk", str(bundles["good"]))
    assert det.wait_idle()
    tag_list = estimate_tags(h, nv, ND)

    def request():
        time.sleep(0.05)
        det.set_model(str(bundles["flaky"]))

    th = threading.Thread(target=request)
    th.start()
    out, events = _run_with_status(det, y, tag_list, throttle=ND * 400)
    th.join()
    kinds = [e["event"] for e in events]
    assert "reverted" in kinds, kinds
    rev = events[kinds.index("reverted")]
    assert rev["path"] == str(bundles["flaky"]) and rev["to"] == str(bundles["good"]) and "failed" in rev["reason"]
    assert det.model_info()["path"] == str(bundles["good"])  # good is in force again
    # no frame is lost: the ones flaky failed on were detected again by good
    assert all(np.abs(out[f]).max() > 0 for f in range(n)) and det.failed_frames == []
    assert det.problems()["frame-failed"] >= 1  # it did fail
    want = load_detector(bundles["good"]).detect(y, h, nv.float()).numpy()
    swapped = [s["frame"] for s in det.swaps if s["path"] == str(bundles["flaky"])][0]
    assert np.allclose(out[:swapped], want[:swapped], atol=1e-5)
    first_poisoned = next(f for f in range(swapped, n) if f % 3 == 0)
    assert np.allclose(out[first_poisoned:], want[first_poisoned:], atol=1e-5)  # good again from the failure on
    det.close()


def test_a_new_model_far_slower_than_the_old_one_is_reverted(bundles):
    n = 200
    h, y, nv = _frames(n)
    det = neural_detector(NR, NT, "qpsk", str(bundles["good"]), max_slowdown=20.0)
    assert det.wait_idle()

    def request():
        time.sleep(0.1)
        det.set_model(str(bundles["slow"]))

    th = threading.Thread(target=request)
    th.start()
    _, events = _run_with_status(det, y, estimate_tags(h, nv, ND), throttle=ND * 400)
    th.join()
    rev = [e for e in events if e["event"] == "reverted"]
    assert rev and "slower per vector" in rev[0]["reason"], [e["event"] for e in events]
    assert det.model_info()["path"] == str(bundles["good"])
    det.close()


def test_watcher_retries_a_bundle_copied_non_atomically_and_floors_its_interval(bundles, tmp_path):
    watch = tmp_path / "watch"  # missing at start: a warning, not an error
    det = neural_detector(NR, NT, "qpsk", str(bundles["good"]), watch_dir=str(watch), watch_interval_s=0)
    assert det.switch.watch_interval_s >= 0.05
    assert det.wait_idle()
    watch.mkdir()
    time.sleep(0.3)  # the watcher has seen the empty folder
    target = watch / "incoming"
    target.mkdir()
    shutil.copy(bundles["good2"] / MANIFEST, target / MANIFEST)  # the manifest first ...
    deadline = time.time() + 10
    while not det.refusals and time.time() < deadline:
        time.sleep(0.05)
    assert det.refusals and "no weights.safetensors" in det.refusals[-1]["reason"]
    shutil.copy(bundles["good2"] / WEIGHTS, target / WEIGHTS)  # ... the weights later
    def pending_path():
        p = det.switch.pending
        return None if p is None else p.describe()["path"]

    deadline = time.time() + 10
    while pending_path() != str(target.resolve()) and time.time() < deadline:
        time.sleep(0.05)
    assert pending_path() == str(target.resolve())
    det.close()


def test_a_request_superseded_before_a_frame_boundary_is_reported(bundles):
    h, y, nv = _frames(4)
    det = neural_detector(NR, NT, "qpsk", str(bundles["good"]))
    assert det.wait_idle()
    det.set_model(str(bundles["good2"]))
    det.set_model(str(bundles["flaky"]))
    assert det.wait_idle()
    _, events = _run_with_status(det, y, estimate_tags(h, nv, ND))
    sup = [e for e in events if e["event"] == "superseded"]
    assert len(sup) >= 2 and sup[-1]["path"] == str(bundles["good2"]) and sup[-1]["by"] == str(bundles["flaky"])
    assert det.model_info()["path"] == str(bundles["flaky"])
    det.close()

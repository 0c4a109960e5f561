"""DriftWatch (site/drift.py): the neural detector's drift monitor and channel-family check,
without GNU Radio: events at a drift and back, one channel-family warning per model, a monitor
that fails turns itself off and never raises."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from neuralmimo.site.drift import DriftWatch, channel_statistics


def _model(stats=None, real=False, nr=4, nt=2):
    manifest = {"training": {"channel_stats": stats}} if stats is not None else {"training": {}}
    bundle = SimpleNamespace(manifest=manifest, system={"channel": {"name": "deepsic-sed"}})
    return SimpleNamespace(bundle=bundle, nr=nr, nt=nt, real_channels_only=real,
                           describe=lambda: {"path": "/m", "architecture": "fake"})


def _channels(n, scale_user1=1.0, seed=0, real=False):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, 4, 2, dtype=torch.complex64, generator=g)
    if real:
        h = h.real.to(torch.complex64)
    h[:, :, 1] *= scale_user1
    return h


def test_drift_and_back_are_reported_with_where_and_time():
    events, warnings = [], []
    watch = DriftWatch(2, window=16, threshold=0.2, emit=events.append, warn=warnings.append)
    watch.new_model(_model(channel_statistics(_channels(4000))))
    for h in _channels(32, seed=1):
        watch.frame(h, frame=0, offset=0)
    assert events == [] and watch.state()["frames"] == 32
    for i, h in enumerate(_channels(32, scale_user1=10.0, seed=2)):  # user 1 20 dB stronger
        watch.frame(h, frame=i, offset=100 + i)
    assert [e["event"] for e in events] == ["drift"] and "time" in events[0] and events[0]["offset"] >= 100
    assert len(warnings) == 1 and "drifted" in warnings[0] and watch.events == events
    for h in _channels(64, seed=3):
        watch.frame(h)
    assert [e["event"] for e in events] == ["drift", "drift-back"]


def test_a_real_channel_model_warns_once_on_complex_estimates():
    events, warnings = [], []
    watch = DriftWatch(2, emit=events.append, warn=warnings.append)
    watch.new_model(_model(real=True))
    for h in _channels(5, real=True):
        watch.frame(h)
    assert events == [] and watch.state() is None  # no statistics, no monitor
    for h in _channels(5):
        watch.frame(h, frame=7)
    assert [e["event"] for e in events] == ["channel-family"] and events[0]["frame"] == 7
    assert "deepsic-sed" in events[0]["message"] and len(warnings) == 1
    watch.new_model(_model(real=True))  # the next model is checked again
    watch.frame(_channels(1)[0])
    assert len(events) == 2


def test_malformed_statistics_and_a_failing_monitor_turn_it_off_without_raising():
    events, problems = [], []
    watch = DriftWatch(2, emit=events.append, problem=lambda kind, text: problems.append(kind))
    watch.new_model(_model({"version": 1, "r": "not numbers"}))
    assert watch.state() is None and events[-1]["event"] == "drift-monitor" and problems == ["bad-channel-stats"]
    watch.new_model(_model(channel_statistics(_channels(100))))
    assert watch.state() is not None
    watch.frame(torch.zeros(3, 3, dtype=torch.complex64))  # the wrong shape for the monitor
    assert watch.state() is None and problems[-1] == "drift-monitor-failed"
    assert events[-1] == {**events[-1], "event": "drift-monitor", "state": "off"}

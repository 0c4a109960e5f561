"""``neuralmimo learngene diversity`` end to end on a tiny configuration (plane-wave tasks: no
Sionna needed), and the pieces it is made of."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from neuralmimo.bundle import load_model
from neuralmimo.channels import make_channel
from neuralmimo.detectors.sdnet.model import SDNET_CODEC
from neuralmimo.lab.cli import main
from neuralmimo.lab.learngene import LearngeneConfig, TaskSplits, learning_trend, task_channel

TINY = {"name": "tiny-diversity",
        "data": {"ues_per_task": 400, "family": "plane-waves", "paths": 6, "val_vectors_per_ue": 4,
                 "test_vectors_per_ue": 8},
        "individual": {"n_conv": 2, "batch_size": 64},
        "diversity": {"task": 11, "rho": [1.0, 0.0], "plane_wave_paths": [3], "epochs": 5, "kbest_k": 16}}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("diversity")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    assert main(["learngene", "diversity", "--config", str(root / "tiny.yaml"), "--out", str(root / "run"),
                 "--no-progress"]) == 0
    return root / "run"


@pytest.mark.timeout(600)
def test_every_variant_is_trained_and_tested_on_the_same_vectors(run):
    res = json.loads((run / "diversity" / "results.json").read_text())
    assert [v["variant"]["name"] for v in res["variants"]] == ["rho-1", "rho-0", "plane-waves-3"]
    for v in res["variants"]:
        t = v["test"]
        assert t["symbols"] == 40 * 8 * 8  # 40 test channels x 8 vectors x 8 streams
        for det in ("sdnet", "zf", "mmse", "kbest"):
            assert t[det]["ci"][0] <= t[det]["ser"] <= t[det]["ci"][1]
            assert t[det]["errors"] == round(t[det]["ser"] * t["symbols"])
        # near-ML on the same vectors and estimates is at least as good as MMSE (to within one interval)
        assert t["kbest"]["ser"] <= t["mmse"]["ci"][1]
        hist = json.loads((run / "diversity" / v["variant"]["name"] / "metrics.json").read_text())["history"]
        assert len(hist) == 5 and hist[-1]["train_loss"] < hist[0]["train_loss"]  # it learned
    report = (run / "diversity" / "report.md").read_text()
    assert report.count("\n| rho-") == 2 and "| plane-waves-3 |" in report
    for png in ("ser_vs_rho.png", "learning_curves.png"):
        assert (run / "diversity" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (run / "baselines").exists()  # diversity is its own study, not a step of `run`


def test_bundle_records_the_channel_it_was_trained_for(run):
    cfg = LearngeneConfig.from_dict(TINY)
    for name, rho in (("rho-1", 1.0), ("rho-0", 0.0)):
        model, bundle = load_model(run / "diversity" / name / "bundle", SDNET_CODEC)
        spec = bundle.manifest["system"]["channel"]
        assert spec["name"] == "anchored" and spec["args"]["rho"] == rho
        assert spec["args"]["base"]["name"] == "plane-waves"
        # the recorded channel is the one the pipeline tested on: same channels, in order
        channel = make_channel(spec, 32, 8)
        vcfg = LearngeneConfig.from_dict({**TINY, "data": {**TINY["data"], "rho": rho}})
        assert torch.allclose(channel._stored, TaskSplits(vcfg, 11).test, atol=1e-6)
        assert "channel_stats" in bundle.manifest["training"]
    assert task_channel(cfg, 11)["name"] == "plane-waves"


def test_learning_trend_tells_falling_from_flat():
    g = torch.Generator().manual_seed(0)
    flat = [{"epoch": e, "val_ser": 0.1 * (1 + 0.05 * float(torch.randn(1, generator=g)))} for e in range(40)]
    falling = [{"epoch": e, "val_ser": 0.5 * 0.95 ** e} for e in range(40)]
    assert learning_trend(flat)["falling"] is False
    t = learning_trend(falling)
    assert t["falling"] is True and t["change"] < -0.1
    assert learning_trend(falling[:3])["falling"] is None  # too short to tell

"""``neuralmimo learngene individual --site LOG``: learngene as per-site adaptation, on a CSI log
written as the CSI Logger block writes it, from a tiny plane-wave learngene run (no Sionna)."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from neuralmimo.bundle import load_bundle
from neuralmimo.channels import make_channel
from neuralmimo.site.csilog import CSILogWriter
from neuralmimo.detectors import SystemSpec, load_detector
from neuralmimo.lab.cli import main

TINY = {"name": "tiny-site",
        "data": {"ues_per_task": 300, "family": "plane-waves", "paths": 6, "collective_tasks": [0, 1],
                 "target_tasks": [50], "val_vectors_per_ue": 4, "test_vectors_per_ue": 8},
        "collective": {"epochs_per_task": 1, "batch_size": 100},
        "individual": {"n_conv": 8, "epochs": 3, "batch_size": 100}}


def _site_log(folder, task=77, frames=400, nr=32, nt=8):
    """What a CSI Logger records at a site: LS-like estimates (channel + a little noise) per frame."""
    chan = make_channel({"name": "plane-waves", "args": {"task_id": task, "paths": 6, "split": "all",
                                                         "ues_per_task": frames}}, 32, 8)
    g = torch.Generator().manual_seed(4)
    h = chan.h[:, :nr, :nt] + 0.05 * torch.randn(chan.h[:, :nr, :nt].shape, dtype=torch.complex64, generator=g)
    log = CSILogWriter(folder, nr, nt, chunk_frames=128)
    for i, hi in enumerate(h):
        log.add(i, hi, 0.01)
    log.close()
    return folder


@pytest.fixture(scope="module")
def learngene_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY))
    for step in ("collective", "extract"):
        assert main(["learngene", step, "--config", str(root / "tiny.yaml"), "--out", str(root / "run"),
                     "--no-progress"]) == 0
    return root


@pytest.mark.timeout(600)
def test_site_models_are_trained_reported_and_published(learngene_run, capsys):
    root = learngene_run
    log = _site_log(root / "site-a")
    assert main(["learngene", "individual", "--config", str(root / "tiny.yaml"), "--out", str(root / "run"),
                 "--site", str(log), "--watch", str(root / "watch"), "--no-progress"]) == 0
    assert "# Learngene as per-site adaptation: site-a" in capsys.readouterr().out
    out = root / "run" / "site" / "site-a"
    m = json.loads((out / "metrics.json").read_text())
    selected = json.loads((root / "run" / "extract" / "metrics.json").read_text())["selected"]
    assert list(m["schemes"]) == ["scratch", f"inherit-{selected}"]
    assert m["channels"] == [324, 36, 40]  # the log's 400 frames split 81/9/10 %
    for scheme, r in m["schemes"].items():
        assert r["epochs"] == 3
        assert [h["elapsed_s"] for h in r["history"]] == sorted(h["elapsed_s"] for h in r["history"])
        assert r["history"][-1]["train_loss"] < r["history"][0]["train_loss"]
        b = load_bundle(out / scheme / "bundle")
        assert b.system["channel"] == {"name": "file", "args": {"mapping": str(log), "split": "test"}}
        assert b.manifest["training"]["role"] == "site"
    lg = load_bundle(out / f"inherit-{selected}" / "bundle")
    assert lg.manifest["learngene"]["strategy"] == f"inherit-{selected}"
    # the published copy is whole, and a receiver of the site's system accepts it
    published = list((root / "watch").iterdir())
    assert len(published) == 1 and published[0].name.startswith("sdnet-site-site-a-")
    assert load_bundle(published[0]).sha256 == lg.sha256
    load_detector(published[0], SystemSpec(32, 8, "qpsk"))
    assert (out / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    # the recorded channel is the site's test split, as the block's channel model reads it
    assert make_channel(b.system["channel"], 32, 8).h.shape == (40, 32, 8)


@pytest.mark.timeout(300)
def test_time_budget_and_refusals(learngene_run, tmp_path, capsys):
    root = learngene_run
    log = _site_log(tmp_path / "site-b", frames=200)
    assert main(["learngene", "individual", "--config", str(root / "tiny.yaml"), "--out", str(root / "run"),
                 "--site", str(log), "--budget", "0.01", "--no-progress"]) == 0
    m = json.loads((root / "run" / "site" / "site-b" / "metrics.json").read_text())
    assert all(r["epochs"] == 1 for r in m["schemes"].values())  # the budget ends training after one epoch
    capsys.readouterr()
    # no learngene in the run folder; a site of another size; --budget without --site: one line, exit 2
    for argv, text in ((["--out", str(tmp_path / "empty"), "--site", str(log)], "no learngene to start from"),
                       (["--out", str(root / "run"), "--site", str(_site_log(tmp_path / "small", nr=4, nt=2))],
                        "SDNet's tasks are 32x8"),
                       (["--out", str(root / "run"), "--budget", "5"], "--budget and --watch go with --site")):
        assert main(["learngene", "individual", "--config", str(root / "tiny.yaml"), *argv, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err and err.count("\n") == 1, err

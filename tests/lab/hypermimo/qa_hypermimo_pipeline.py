"""The quick HyperMIMO pipeline end to end (``neuralmimo hypermimo run --config
configs/hypermimo/quick.yaml``): bundles a receiver loads, every method on the same data, the
report with the paper's numbers beside ours, mobility, plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from neuralmimo.bundle import load_model
from neuralmimo.detectors import SystemSpec, load_detector
from neuralmimo.detectors.mmnet.model import HYPERMIMO_CODEC
from neuralmimo.lab.cli import main

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "configs" / "hypermimo" / "quick.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hypermimo") / "quick"
    assert main(["hypermimo", "run", "--config", str(CONFIG), "--out", str(out), "--no-progress",
                 "--threads", "1"]) == 0
    return out


@pytest.mark.timeout(900)
def test_bundles_load_as_receivers_and_record_their_drop(run):
    hist = json.loads((run / "train" / "history.json").read_text())
    for csi in ("perfect", "ls"):
        h = hist[f"drop0-{csi}"]["history"]
        assert h[-1]["mse"] < 0.5 * h[0]["mse"]  # the loss fell
        det = load_detector(run / "train" / f"drop0-{csi}", SystemSpec(12, 6, "qpsk"))
        assert det.architecture == "hypermimo" and det.hyperparameters["csi"] == csi
        system = det.bundle.system
        assert system["snr_convention"] == "hypermimo" and len(system["channel"]["args"]["angles_deg"]) == 6
        assert system["n_pilots"] == (16 if csi == "ls" else None)
    oamp = json.loads((run / "train" / "drop0-oampnet.json").read_text())
    assert len(oamp["gamma"]) == len(oamp["theta"]) == 10


@pytest.mark.timeout(900)
def test_every_method_sees_the_same_symbols_and_the_report_has_the_paper_beside_ours(run):
    ev = json.loads((run / "evaluate" / "drop0.json").read_text())
    for csi in ("perfect", "ls"):
        for p in ev["csi"][csi]:
            assert len({n for _, n in p["counts"].values()}) == 1  # same number of symbols for every method
            assert set(p["counts"]) >= {"hypermimo", "oampnet", "mmse", "zf", "ml"}
            assert p["ser"]["ml"] <= p["ser"]["mmse"]
    sub = ev["csi"]["perfect"][0]["subset"]["counts"]
    assert "mmnet" in sub and sub["mmnet"][1] == sub["mmse"][1]
    assert ev["timing"]["speedup"] > 100  # weight generation vs per-channel training
    report = (run / "report.md").read_text()
    assert "HyperMIMO gain over LMMSE | 2.85 dB" in report and "Mobility" in report and "Beyond the paper" in report
    across = json.loads((run / "across" / "results.json").read_text())
    assert across["variants"] == ["r, hidden 75", "r+spatial, hidden 75"]
    assert all(set(m["drops"]) == {"0"} for m in across["models"].values())
    spatial, _ = load_model(run / "across" / "r+spatial-hidden-75", HYPERMIMO_CODEC)  # a bundle the block loads
    assert spatial.inputs == "r+spatial"
    res = json.loads((run / "results.json").read_text())
    assert set(res["average"]) == {"perfect", "ls"}
    for png in ("ser_perfect.png", "ser_ls.png", "mobility_rotation.png", "mobility_displacement.png",
                "train/loss.png"):
        assert (run / png).stat().st_size > 10_000, png

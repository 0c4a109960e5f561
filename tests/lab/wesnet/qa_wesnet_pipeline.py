"""The quick DetNet/WeSNet pipeline end to end (``neuralmimo wesnet run --config
configs/wesnet/quick.yaml``): every variant trains and its loss falls, the WeSNet beats MMSE by
more than 4 standard errors on the same vectors, one bundle's BER does not rise with the kept
fraction, FLOPs from the formula equal the count on the tensors, the report and the plots exist,
and ``neuralmimo sim`` prints the kept-fraction trade-off of a bundle."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from neuralmimo.detectors import SystemSpec, load_detector
from neuralmimo.lab.cli import main

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "configs" / "wesnet" / "quick.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("wesnet") / "quick"
    assert main(["wesnet", "run", "--config", str(CONFIG), "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.mark.timeout(900)
def test_every_variant_trains_and_loads_as_a_receiver(run):
    hist = json.loads((run / "train" / "history.json").read_text())
    val = hist.pop("_validation")
    assert set(hist) == {"detnet", "wesnet-hf", "l-wesnet-hf-50", "r-wesnet-hf"}
    for name, h in hist.items():
        assert h["history"][-1]["loss"] < 0.7 * h["history"][0]["loss"], name  # the loss fell
        assert h["history"][-1]["val_ber"] < min(h["history"][0]["val_ber"], val["mmse_ber"]), name
        det = load_detector(run / "train" / name, SystemSpec(16, 8, "bpsk"))
        assert det.architecture == ("detnet" if name == "detnet" else "wesnet")
        assert det.bundle.system["snr_convention"] == "detnet"
    assert hist["r-wesnet-hf"]["history"][-1]["log_l1"] > 0


@pytest.mark.timeout(900)
def test_wesnet_beats_mmse_by_more_than_four_standard_errors(run):
    ber = json.loads((run / "evaluate" / "ber.json").read_text())
    p = next(p for p in ber if p["snr_db"] == 8.0)
    n = p["bits"]
    e_w, e_m = p["errors"]["wesnet-hf"] / n, p["errors"]["mmse"] / n
    se = math.sqrt(e_w * (1 - e_w) / n + e_m * (1 - e_m) / n)  # independent-sample SE (conservative when paired)
    assert e_m - e_w > 4 * se, (e_w, e_m, se)
    assert p["ber"]["kbest8"] < p["ber"]["mmse"] < p["ber"]["zf"]


@pytest.mark.timeout(900)
def test_the_dial_is_monotone_and_flops_agree(run):
    results = json.loads((run / "results.json").read_text())
    assert all(results["targets"]["dial_monotone"])
    rows = results["complexity"]
    assert all(r["matmul_flops"] == r["counted_flops"] for r in rows)
    flops = [r["matmul_flops"] for r in rows]
    assert flops == sorted(flops) and flops[0] < flops[-1]
    dial = json.loads((run / "evaluate" / "dial.json").read_text())
    keep = dial["keep"]["points"][0]["ber"]
    assert keep["keep=0.1"] > keep["keep=1"]
    assert [t["keep"] for t in dial["timing"]] == [0.1, 0.25, 0.5, 1.0]
    report = (run / "report.md").read_text()
    for text in ("## BER vs SNR (Fig. 4/8)", "## The complexity dial", "## Layer truncation", "Table II",
                 "51.43", "public training log [DN] is for 30x60 BPSK"):
        assert text in report
    for png in ("ber_snr.png", "ber_keep.png", "ber_depth.png", "flops_keep.png", "training.png"):
        assert (run / png).stat().st_size > 5000


@pytest.mark.timeout(900)
def test_sim_prints_the_kept_fraction_trade_off(run, capsys):
    b = run / "train" / "wesnet-hf"
    assert main(["sim", "--detectors", f"mmse,{b}@keep=0.25,{b}@keep=1.0", "--nr", "16", "--nt", "8",
                 "--modulation", "bpsk", "--channel", "iid-real", "--snr-convention", "detnet", "--snr", "8",
                 "--perfect-csi", "--symbols", "4000", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "wesnet-hf@keep=0.25" in out and "options {'keep': 0.25, 'layers': 0, 'fallback': True}" in out
    assert "FLOPs per vector" in out

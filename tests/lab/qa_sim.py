"""neuralmimo sim evaluates trained bundles next to the classical detectors on the same frames."""

import json
import subprocess
import sys
from pathlib import Path

from neuralmimo.lab.sim import SimConfig, simulate

ROOT = Path(__file__).resolve().parents[2]
HYPER = ROOT / "models" / "hypernet-deepsic-sed-n12"
CLI = [sys.executable, "-m", "neuralmimo.lab.cli"]
SED = dict(channel="deepsic-sed", nt=8, nr=12, modulation="bpsk", snr_convention="deepsic", snr_db=[10.0],
           pilots=800, frame_data=200)


def test_bundle_next_to_mmse_on_the_same_frames():
    """Synthetic channel at 10 dB (deepsic): the shipped hypernetwork beats MMSE -- the 95 %
    frame-clustered intervals of the two SERs do not overlap -- and exact ML stays below both."""
    recs = simulate(SimConfig(**SED, detectors=["mmse", "ml", str(HYPER), f"{HYPER}@iterations=1"], symbols=60_000,
                              seed=3), progress=False)
    by = {r["detector"]: r for r in recs}
    nn = by[str(HYPER)]
    assert nn["architecture"] == "hypernet-deepsic" and nn["sha256"] == json.loads(
        (HYPER / "manifest.json").read_text())["weights_sha256"] and nn["options"] == {"iterations": 3, "fallback": True}
    assert nn["n_symbols"] == by["mmse"]["n_symbols"] >= 60_000
    assert nn["ci"][1] < by["mmse"]["ci"][0], (nn["ser"], by["mmse"]["ser"])
    assert by["ml"]["ser"] < nn["ser"]
    assert by[f"{HYPER}@iterations=1"]["options"] == {"iterations": 1, "fallback": True}


def test_perfect_csi_with_a_bundle():
    recs = simulate(SimConfig(**{**SED, "pilots": None}, detectors=["mmse", str(HYPER)], symbols=8000), progress=False)
    assert {r["csi"] for r in recs} == {"perfect"} and all(0 <= r["ser"] < 0.1 for r in recs)


def test_cli_prints_the_bundle_next_to_mmse_and_refuses_in_one_line():
    args = CLI + ["sim", "--channel", "deepsic-sed", "--nt", "8", "--nr", "12", "--modulation", "bpsk",
                  "--snr-convention", "deepsic", "--snr", "10", "--symbols", "4000", "--no-progress"]
    out = subprocess.run(args + ["--detectors", f"mmse,{HYPER}"], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "SER mmse" in out.stdout and "SER hypernet-deepsic-sed-n12" in out.stdout and "sha256" in out.stdout
    for entry, code, why in ((f"mmse,{HYPER}@speed=3", 2, "has no run-time option 'speed'"),
                             ("mmse,models/sdnet-learngene-umi50", 1, "model is for qpsk"),
                             ("mmse,models/no-such-bundle", 1, "no such bundle"),
                             ("mmse,sphere", 2, "unknown detector 'sphere'")):
        r = subprocess.run(args + ["--detectors", entry], capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert r.returncode == code and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr

"""The quick DeepSIC / modular-hypernetwork pipeline end to end, and learning checks.

Runs ``neuralmimo deepsic run --config configs/deepsic/quick.yaml`` once (module fixture) and
checks its outputs and that the hypernetwork learned: on held-out synthetic (SED) blocks at
10 dB (test profiles from another seed than training) its SER is below MMSE's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from neuralmimo.bundle import load_model
from neuralmimo.detectors.deepsic.model import HYPERNET_CODEC, JOINT_CODEC, ModularHypernetwork
from neuralmimo.detectors.deepsic.train import front_end, train_hypernetwork
from neuralmimo.lab.cli import main
from neuralmimo.lab.deepsic import (
    DeepSICConfig,
    Receivers,
    ScenarioConfig,
    run_transmission,
    training_blocks,
)

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "configs" / "deepsic" / "quick.yaml"


def _clearly_below(p_a: float, p_b: float, n: int, z: float = 4.0) -> bool:
    """``p_a < p_b`` by more than ``z`` standard deviations of the difference of two independent
    binomial proportions over ``n`` symbols each (conservative: both detectors see the same
    symbols, whose pairing only shrinks the spread of the difference)."""
    return p_b - p_a > z * math.sqrt((p_a * (1 - p_a) + p_b * (1 - p_b)) / n)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("deepsic") / "quick"
    assert main(["deepsic", "run", "--config", str(CONFIG), "--out", str(out), "--no-progress",
                 "--threads", "1"]) == 0
    return out


@pytest.mark.timeout(900)
def test_training_losses_fall_and_bundles_load(run):
    hist = json.loads((run / "train" / "history.json").read_text())
    for key in ("hyper_history", "joint_history"):
        assert hist[key][-1]["loss"] < 0.5 * hist[key][0]["loss"], key
    assert all(h["k_seen"] == list(range(2, 7)) for h in hist["hyper_history"])  # every K in every epoch
    hyper, bundle = load_model(run / "train" / "hypernetwork", HYPERNET_CODEC)
    q = hyper.iterations
    hp = bundle.hyperparameters
    assert (hp["n_rx"], hp["k_max"], hp["modulation"], hp["iterations"]) == (8, 6, "bpsk", 3) and q == 3
    joint = load_model(run / "train" / "joint", JOINT_CODEC)[0].thetas()
    assert sorted(joint) == list(range(2, 7))
    assert all(joint[k].shape == (k, 16 * (8 + k + 1) + 18) for k in joint)
    assert (run / "train" / "loss.png").stat().st_size > 0


def test_hypernetwork_beats_mmse_on_held_out_sed_blocks(run):
    r = json.loads((run / "scenarios" / "fixed_k" / "metrics.json").read_text())
    sc = r["scenario"]
    n = sc["blocks"] * sc["n_info"] * sc["k_max"]
    ser = r["mean_ser"]
    assert _clearly_below(ser["hypernetwork"], ser["mmse"], n), ser
    assert ser["ml"] < ser["hypernetwork"]  # exact ML stays the bound
    assert (run / "scenarios" / "fixed_k" / "ser_vs_block.png").stat().st_size > 0


def test_varying_users_handled_per_block(run):
    r = json.loads((run / "scenarios" / "varying_k" / "metrics.json").read_text())
    ks = r["n_users"]
    assert len(set(ks)) > 1 and all(3 <= k <= 6 for k in ks)
    for m in ("joint", "online", "hypernetwork", "mmse", "ml"):
        assert len(r["ser"][m]) == len(ks) and all(0 <= s <= 1 for s in r["ser"][m]), m
    sc = r["scenario"]
    n = sc["blocks"] * sc["n_info"] * min(ks)
    assert _clearly_below(r["mean_ser"]["hypernetwork"], r["mean_ser"]["mmse"], n), r["mean_ser"]


def test_online_deepsic_starts_warm_no_worse_than_mmse(run):
    """Issue 30: online DeepSIC's first block, and each block where the user count changed, are
    not worse than MMSE at 95 % confidence (they start from the joint model for that K)."""
    for name in ("fixed_k", "varying_k"):
        r = json.loads((run / "scenarios" / name / "metrics.json").read_text())
        ks, ser, n_info = r["n_users"], r["ser"], r["scenario"]["n_info"]
        cold = [0] + [t for t in range(1, len(ks)) if ks[t] != ks[t - 1]]
        n = sum(n_info * ks[t] for t in cold)
        online = sum(ser["online"][t] * n_info * ks[t] for t in cold) / n
        mmse = sum(ser["mmse"][t] * n_info * ks[t] for t in cold) / n
        assert not _clearly_below(mmse, online, n, z=1.96), (name, cold, online, mmse)


def test_report_has_tables(run):
    report = (run / "report.md").read_text()
    assert "Mean SER over the blocks" in report and "Runtime over the transmission" in report
    res = json.loads((run / "results.json").read_text())
    assert res["complexity"]["fixed_k"]["ratio_prop1"] < 0.2
    secs = res["scenarios"]["fixed_k"]["seconds"]
    assert secs["online"] > secs["hypernetwork"]  # online retrains on every block (not a timing bound)


@pytest.mark.timeout(900)
def test_k_not_seen_in_last_epoch_is_still_served():
    """Train with every K, then a last epoch without K = 4: the hypernetwork still beats MMSE at
    K = 4 on held-out blocks (it did not forget a K it was trained on)."""
    torch.set_num_threads(1)
    cfg = DeepSICConfig.load(CONFIG)
    blocks = training_blocks(cfg)
    fe = front_end(blocks, cfg.spec)
    torch.manual_seed(1)
    hyper = ModularHypernetwork(cfg.spec, cfg.receiver.k_max)
    epochs = 20
    sets = [None] * (epochs - 1) + [{2, 3, 5, 6}]
    hist = train_hypernetwork(hyper, fe, blocks, epochs=epochs, lr=cfg.training.hyper_lr,
                              epoch_k_sets=sets, seed=1)
    assert 4 in hist[-2]["k_seen"] and 4 not in hist[-1]["k_seen"]
    sc = ScenarioConfig(name="k4", channel={"name": "deepsic-sed", "args": {"profile_amplitude_db": 4.0}}, k_min=4,
                        k_max=4, snr_db=10.0, n_pilots=800, n_info=2000, blocks=10, seed=5)
    rx = Receivers(hyper, {})
    r = run_transmission(cfg, sc, rx, 10.0, 800, methods=("hypernetwork", "mmse"))
    ser = {m: sum(v) / len(v) for m, v in r["ser"].items()}
    assert _clearly_below(ser["hypernetwork"], ser["mmse"], 10 * 2000 * 4), ser

"""Data-parallel training under ``torchrun`` (2 processes, gloo) of every family's quick-config
training through its own training function and the shared loop: both processes end with
identical weights, and the final loss agrees with a single-process run of the same global batch.

* SDNet and hypernetwork-DeepSIC train on a fixed set per epoch, each process on its slice of
  every single-process batch: the same samples, so the losses must agree within the epoch's
  standard error (they differ only by float summation order and SDNet's batch-norm statistics,
  computed per process as in ``DistributedDataParallel`` without SyncBatchNorm).
* HyperMIMO and WeSNet draw fresh batches, each process its own seeded half: a different but
  equally likely run, so the loss must lie within 4 standard deviations of 9 single-process runs
  (seeds 0-8: the run-to-run spread, times the prediction interval's sqrt(1 + 1/9)). Five seeds
  were too few: their spread came out 4x below that of ten.
"""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
from neuralmimo.lab.scale import family_training, final_loss, torchrun
from safetensors.torch import load_file

LENGTH = {"sdnet": 3, "deepsic": 4, "hypermimo": 400, "wesnet": 200}
SLICED = ("sdnet", "deepsic")


def _torchrun(args: list[str]) -> None:
    """``torchrun`` with 2 processes, started once more when a process died by SIGABRT: seen once
    in a full CI run (hypermimo; "terminate called without an active exception" from rank 0, a C++
    thread torn down inside the torch/gloo runtime, no Python traceback), not reproduced in 3 runs
    of the test alone. The crash is reported; a second one fails the test."""
    try:
        torchrun(args, processes=2, threads=1)
    except RuntimeError as e:
        if "SIGABRT" not in str(e):
            raise
        print(f"torchrun: a process died by SIGABRT; starting it once more:\n{str(e)[-600:]}")
        torchrun(args, processes=2, threads=1)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("family", list(LENGTH))
def test_two_processes_hold_identical_weights_and_match_one_process(family, tmp_path):
    _torchrun(["--family", family, "--length", str(LENGTH[family]), "--out", str(tmp_path)])
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys() and all(torch.equal(w0[k], w1[k]) for k in w0)
    meta = json.loads((tmp_path / "rank0.json").read_text())
    assert meta["processes"] == 2
    loss_dp, se_dp = final_loss(meta["history"])
    other = json.loads((tmp_path / "rank1.json").read_text())["history"][-1]
    assert final_loss([other]) == (loss_dp, se_dp)  # the records are reduced over the processes

    model, run = family_training(family, LENGTH[family], seed=0)
    hist, _ = run()
    loss_1, se_1 = final_loss(hist)
    if family in SLICED:
        assert abs(loss_dp - loss_1) < 4 * math.hypot(se_dp, se_1), (loss_dp, loss_1, se_dp, se_1)
        # the same samples from the same start: the weights move together
        moved = max(float((v - w0[k]).abs().max()) for k, v in model.state_dict().items() if v.is_floating_point())
        assert moved < 0.1, moved
    else:
        others = []
        for seed in range(1, 9):
            _, run = family_training(family, LENGTH[family], seed=seed)
            others.append(final_loss(run()[0])[0])
        mean, sd = statistics.mean(others + [loss_1]), statistics.stdev(others + [loss_1])
        bound = 4 * sd * math.sqrt(1 + 1 / 9)
        assert abs(loss_dp - mean) < bound, (loss_dp, mean, sd, others, loss_1)


@pytest.mark.timeout(600)
def test_pipeline_spreads_independent_models_over_processes(tmp_path):
    """``torchrun ... neuralmimo wesnet train`` with two variants: each process trains one alone,
    so every bundle equals, bit for bit, the one a single process trains; rank 0 writes the
    history of both."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    cfg = yaml.safe_load((root / "configs" / "wesnet" / "quick.yaml").read_text())
    cfg["training"].update(steps=120, steps_per_epoch=40)
    cfg["models"] = [m for m in cfg["models"] if m["name"] in ("detnet", "wesnet-hf")]
    cfg["evaluation"].update(dial_model="wesnet-hf", depth_models=["wesnet-hf"])
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(cfg))
    cli = str(Path(sys.executable).parent / "neuralmimo")
    single = subprocess.run([cli, "wesnet", "train", "--config", str(config), "--out", str(tmp_path / "one"),
                             "--no-progress", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stdout + single.stderr
    both = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", cli,
                           "wesnet", "train", "--config", str(config), "--out", str(tmp_path / "two"), "--no-progress",
                           "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert both.returncode == 0, both.stdout + both.stderr
    for name in ("detnet", "wesnet-hf"):
        a = load_file(str(tmp_path / "one" / "train" / name / "weights.safetensors"))
        b = load_file(str(tmp_path / "two" / "train" / name / "weights.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
    hist = json.loads((tmp_path / "two" / "train" / "history.json").read_text())
    assert {"detnet", "wesnet-hf"} <= set(hist)

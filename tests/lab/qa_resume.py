"""Checkpoint and resume: a training run killed (SIGKILL) in the middle and continued with
``--resume RUN`` ends with the same weights, bit for bit, as the uninterrupted run of the same
configuration -- for DetNet/WeSNet (fresh batches from a generator, best-epoch state,
regulariser) and hypernetwork-DeepSIC (a generator carried across epochs, two training loops);
and in the core, SDNet with the learngene gradient recorder (its state is checkpointed too)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "neuralmimo"


def _tiny(family: str, tmp: Path) -> Path:
    cfg = yaml.safe_load((ROOT / "configs" / family / "quick.yaml").read_text())
    cfg["name"] = "tiny"
    if family == "wesnet":
        cfg["training"].update(steps=480, steps_per_epoch=40, keep_best=True)
        cfg["models"] = [m for m in cfg["models"] if m["name"] == "r-wesnet-hf"]
        cfg["evaluation"].update(dial_model="r-wesnet-hf", depth_models=["r-wesnet-hf"])
        stage = "train/r-wesnet-hf"
    else:
        cfg["training"].update(hyper_epochs=8, joint_epochs=4)
        stage = "train/hypernetwork"
    path = tmp / f"{family}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, stage


def _train(family, args, **kw):
    return subprocess.Popen([str(CLI), family, "train", "--no-progress", "--threads", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _weights(run: Path, family: str) -> dict:
    folder = run / "train" / ("r-wesnet-hf" if family == "wesnet" else "hypernetwork")
    return load_file(str(folder / "weights.safetensors"))


@pytest.mark.timeout(600)
@pytest.mark.parametrize("family", ["wesnet", "deepsic"])
def test_killed_run_resumed_ends_bit_for_bit_as_the_uninterrupted_run(family, tmp_path):
    config, stage = _tiny(family, tmp_path)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = _train(family, ["--config", str(config), "--out", str(killed)])
    ckpt = killed / "checkpoints" / stage / "checkpoint.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if ckpt.exists():
            try:
                epoch = json.loads(ckpt.read_text())["epoch"]
            except (json.JSONDecodeError, OSError):
                epoch = 0
            if epoch >= 3:
                proc.send_signal(signal.SIGKILL)
                break
        time.sleep(0.02)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run was not killed mid-way:\n{out}"
    assert not (killed / "train" / "history.json").exists()

    resumed = _train(family, ["--resume", str(killed)])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    uninterrupted = _train(family, ["--config", str(config), "--out", str(whole)])
    out, _ = uninterrupted.communicate(timeout=300)
    assert uninterrupted.returncode == 0, out

    a, b = _weights(killed, family), _weights(whole, family)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((killed / "train" / ("r-wesnet-hf" if family == "wesnet" else "hypernetwork")
                           / "manifest.json").read_text())
    history = manifest["training"]["history"]
    restarts = [r["epoch"] for r in history if r.get("resumed")]
    assert len(restarts) == 1 and restarts[0] >= 4  # it continued from the checkpoint, not from scratch


@pytest.mark.timeout(300)
def test_sdnet_with_gradient_recorder_resumes_exactly(tmp_path):
    from neuralmimo import training
    from neuralmimo.channels import make_channel
    from neuralmimo.constellation import Constellation
    from neuralmimo.detectors.sdnet.learngene import GradientRecorder
    from neuralmimo.detectors.sdnet.model import SDNet
    from neuralmimo.detectors.sdnet.train import make_optimiser, train

    h = make_channel("iid", 32, 8).sample(300, torch.Generator().manual_seed(3))

    def stop_after(n):  # a progress factory that dies after n epochs (their checkpoints written)
        def progress(iterable, **_):
            for i, e in enumerate(iterable):
                if i == n:
                    raise KeyboardInterrupt
                yield e
        return progress

    def run(folder, resume=False, progress=None):
        torch.manual_seed(0)
        model = SDNet(8, 32, 2)
        rec = GradientRecorder(dict(model.named_parameters()))
        with training.checkpointing(folder, every=1, resume=resume), training.checkpoint_stage("sdnet"):
            train(model, make_optimiser(model, 1e-3), h, epochs=4, snr_db=20.0, constellation=Constellation("qpsk"),
                  n_pilots=16, batch_size=50, seed=5, recorder=rec, record_last_epoch=True, progress=progress)
        return model, rec

    whole, rec_whole = run(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", progress=stop_after(2))
    assert json.loads((tmp_path / "killed" / "sdnet" / "checkpoint.json").read_text())["epoch"] == 2
    resumed, rec_resumed = run(tmp_path / "killed", resume=True)
    for (k, v), (_, w) in zip(whole.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, w), k  # parameters and batch-norm statistics
    assert rec_resumed.batches == rec_whole.batches > 0
    assert all(torch.equal(rec_whole.sums[n], rec_resumed.sums[n]) for n in rec_whole.sums)

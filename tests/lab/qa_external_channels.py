"""External channel files in the pipelines: a learngene task and a HyperMIMO drop read from
files (MATLAB v7.3 as QuaDRiGa users export it, and .npz) run through the real CLI steps, and a
DeepSIC scenario's channel may be a file; their bundles record the file channel."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from neuralmimo.channels import FileChannel
from neuralmimo.lab.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _kronecker(n, nr, nt, seed):
    rng = np.random.default_rng(seed)
    r = 0.7 ** np.abs(np.subtract.outer(np.arange(nr), np.arange(nr)))
    l_rx = np.linalg.cholesky(r)
    w = (rng.standard_normal((n, nr, nt)) + 1j * rng.standard_normal((n, nr, nt))) / np.sqrt(2)
    return (l_rx @ w).astype(np.complex64)


@pytest.mark.timeout(300)
def test_learngene_target_task_from_a_quadriga_style_mat73_file(tmp_path):
    h5py = pytest.importorskip("h5py")
    h = _kronecker(400, 32, 8, 0)  # (ue, bs antenna, ue port)
    # QuaDRiGa is downlink-first: H as MATLAB shows it is [ue port, bs antenna, ue]; saved with -v7.3
    matlab = h.transpose(2, 1, 0)
    a = np.ascontiguousarray(matlab.T)
    comp = np.empty(a.shape, dtype=[("real", "<f4"), ("imag", "<f4")])
    comp["real"], comp["imag"] = a.real, a.imag
    with h5py.File(tmp_path / "task900.mat", "w", userblock_size=512) as f:
        f.create_dataset("H", data=comp)
    with open(tmp_path / "task900.mat", "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .")
    (tmp_path / "task900.yaml").write_text(yaml.safe_dump({"file": "task900.mat", "h": "H", "axes": ["tx", "rx", "sample"]}))
    cfg = yaml.safe_load((ROOT / "configs" / "learngene" / "quick.yaml").read_text())
    cfg["data"].update(target_tasks=[900], task_files={900: str(tmp_path / "task900.yaml")}, snr_db=0.0)
    (tmp_path / "lg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["learngene", "baselines", "--config", str(tmp_path / "lg.yaml"), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    rows = json.loads((tmp_path / "run" / "baselines" / "metrics.json").read_text())["rows"]
    assert rows[0]["task"] == 900 and rows[0]["symbols"] == 40 * 40 * 8  # 10 % test UEs x 40 vectors x 8 streams
    assert 0 < rows[0]["mmse"] <= rows[0]["zf"] < 0.75  # 32x8 Kronecker at 0 dB: MMSE no worse than ZF, both
    # better than guessing


@pytest.mark.timeout(300)
def test_hypermimo_drop_from_a_file_trains_and_its_bundle_names_the_file(tmp_path):
    np.savez(tmp_path / "drop.npz", H=_kronecker(500, 12, 6, 1))
    (tmp_path / "drop.yaml").write_text(yaml.safe_dump({"file": "drop.npz", "h": "H", "axes": ["sample", "rx", "tx"],
                                                         "normalise": "set"}))
    cfg = yaml.safe_load((ROOT / "configs" / "hypermimo" / "quick.yaml").read_text())
    cfg["system"]["drop_files"] = {0: str(tmp_path / "drop.yaml")}
    cfg["training"].update(steps=40, steps_per_epoch=20, csi=["perfect"], oampnet_steps=5)
    (tmp_path / "hm.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["hypermimo", "train", "--config", str(tmp_path / "hm.yaml"), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "run" / "train" / "drop0-perfect" / "manifest.json").read_text())
    assert manifest["system"]["channel"] == {"name": "file", "args": {"mapping": str(tmp_path / "drop.yaml")}}
    hist = manifest["training"]["history"]
    assert hist[-1]["mse"] < hist[0]["mse"]
    chan = FileChannel(tmp_path / "drop.yaml")
    assert torch.allclose(chan.h.abs().square().mean(), torch.tensor(1.0))


def test_deepsic_scenario_channel_may_be_a_file(tmp_path):
    from neuralmimo.lab.deepsic import DeepSICConfig

    np.savez(tmp_path / "sc.npz", H=_kronecker(50, 8, 6, 2).real)  # the paper's DeepSIC is real-valued
    (tmp_path / "sc.yaml").write_text(yaml.safe_dump({"file": "sc.npz", "h": "H", "axes": ["sample", "rx", "tx"],
                                                       "complex": False}))
    cfg = yaml.safe_load((ROOT / "configs" / "deepsic" / "quick.yaml").read_text())
    file = {"name": "file", "args": {"mapping": str(tmp_path / "sc.yaml")}}
    cfg["training"]["channel"] = file  # a scenario's channel family is the training one
    cfg["scenarios"] = [s for s in cfg["scenarios"] if s["k_max"] == 6]  # the file holds 6 users
    for s in cfg["scenarios"]:
        s["channel"] = file
    DeepSICConfig.from_dict(cfg)  # validated against the receiver's 8 x K_max
    assert FileChannel(tmp_path / "sc.yaml").real_valued
    cfg["scenarios"][0]["channel"] = {"name": "file", "args": {"mapping": str(tmp_path / "missing.yaml")}}
    with pytest.raises(ValueError, match="cannot read the channel mapping"):
        DeepSICConfig.from_dict(cfg)

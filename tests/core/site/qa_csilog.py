"""CSI log files (``neuralmimo/csilog.py``): written in chunks, continued, bounded, read back
exactly; a different log or a damaged one is a one-line CSILogError."""

import json

import numpy as np
import pytest
import torch
from neuralmimo.site.csilog import CSILogError, CSILogWriter, is_csi_log, read_csi_log


def test_written_continued_and_read_back(tmp_path):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(30, 3, 2, dtype=torch.complex64, generator=g)
    w = CSILogWriter(tmp_path, 3, 2, chunk_frames=8, info={"site": "lab"})
    for i in range(20):
        w.add(i, h[i], 0.1 * i)
    w.close()
    w2 = CSILogWriter(tmp_path, 3, 2, chunk_frames=8)  # continued by a second run
    for i in range(20, 30):
        w2.add(i, h[i].numpy(), 0.1 * i)
    w2.close()
    log = read_csi_log(tmp_path)
    assert torch.equal(log.h, h) and np.allclose(log.noise_var, 0.1 * np.arange(30)) and list(log.frame) == list(range(30))
    assert log.info == {"site": "lab"} and is_csi_log(tmp_path) and not is_csi_log(tmp_path / "none")
    with pytest.raises(CSILogError, match="holds a 3x2 CSI log, not 4x2"):
        CSILogWriter(tmp_path, 4, 2)
    with pytest.raises(CSILogError, match="shape"):
        w2.add(0, torch.zeros(2, 2), 0.1)


def test_bound_and_damage(tmp_path):
    w = CSILogWriter(tmp_path, 2, 2, chunk_frames=5, max_bytes=1500)
    for i in range(50):
        w.add(i, np.ones((2, 2)), 1.0)
    w.close()
    log = read_csi_log(tmp_path)
    assert w.bytes() <= 1500 and log.frames_dropped == 50 - len(log.frame) and log.frame[-1] == 49
    m = json.loads((tmp_path / "manifest.json").read_text())
    (tmp_path / m["chunks"][0]["file"]).unlink()
    with pytest.raises(CSILogError, match="cannot be read"):
        read_csi_log(tmp_path)
    (tmp_path / "manifest.json").write_text("{")
    with pytest.raises(CSILogError, match="not valid JSON"):
        read_csi_log(tmp_path)


def test_a_folder_removed_and_restored_loses_no_frame(tmp_path):
    """Issue 29: while the folder is gone the frames are held (bounded) and written with the next
    chunk once it is back; beyond MAX_HELD_CHUNKS chunks the oldest are dropped and counted."""
    import shutil

    from neuralmimo.site.csilog import MAX_HELD_CHUNKS

    w = CSILogWriter(tmp_path / "log", 2, 2, chunk_frames=4)
    h = torch.ones(2, 2, dtype=torch.complex64)
    for i in range(4):
        w.add(i, h * i, 0.1)
    saved = tmp_path / "saved"
    shutil.move(tmp_path / "log", saved)
    for i in range(4, 12):
        try:
            w.add(i, h * i, 0.1)
        except OSError:
            pass  # the chunk at 8 and at 12 frames cannot be written
    assert w.held() == 8 and w.frames_lost == 0
    shutil.move(saved, tmp_path / "log")
    for i in range(12, 16):
        w.add(i, h * i, 0.1)
    w.close()
    log = read_csi_log(tmp_path / "log")
    assert list(log.frame) == list(range(16))
    shutil.rmtree(tmp_path / "log")
    for i in range(16, 16 + 4 * (MAX_HELD_CHUNKS + 2)):
        try:
            w.add(i, h, 0.1)
        except OSError:
            pass
    assert w.held() == 4 * MAX_HELD_CHUNKS and w.frames_lost == 8

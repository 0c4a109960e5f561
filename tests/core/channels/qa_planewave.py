"""Fixed-geometry plane-wave tasks (channels.planewave)."""

from __future__ import annotations

import pytest
import torch
from neuralmimo.channels import make_channel, plane_wave_task, vec_columns


def test_channels_span_exactly_the_fixed_paths():
    d = plane_wave_task(3, 400, paths=5)
    h = d["h"]
    assert h.shape == (400, 32, 8) and h.dtype == torch.complex64
    assert torch.allclose(h.abs().square().sum((-2, -1)), torch.full((400,), 256.0), rtol=1e-4)
    s = torch.linalg.svdvals(vec_columns(h).to(torch.complex128))
    # 5 fixed rank-one paths: vec(H) lies in a 5-dimensional subspace of C^256
    assert s[4] > 1e3 * s[5]


def test_geometry_depends_on_task_and_seed_only():
    a = plane_wave_task(7, 100, 9)["h"]
    assert torch.equal(a, plane_wave_task(7, 100, 9)["h"])
    c = plane_wave_task(8, 100, 9)["h"]
    assert not torch.allclose(a, c)
    # another task has other angles: its channels leave the first task's subspace
    basis = torch.linalg.svd(vec_columns(plane_wave_task(7, 400, 9)["h"]).to(torch.complex128).T,
                             full_matrices=False)[0][:, :9]
    v = vec_columns(c).to(torch.complex128).T
    residual = v - basis @ (basis.mH @ v)
    assert residual.norm() > 0.3 * v.norm()


def test_split_and_registry():
    d = plane_wave_task(0, 1000, 4)
    assert [(d["split"] == s).sum() for s in (0, 1, 2)] == [810, 90, 100]
    m = make_channel({"name": "plane-waves", "args": {"task_id": 0, "paths": 4, "ues_per_task": 1000}}, 32, 8)
    assert torch.equal(m.h, d["h"][d["split"] == 2])
    assert m.mean_energy == pytest.approx(256.0, rel=1e-4)
    with pytest.raises(ValueError, match="paths >= 1"):
        plane_wave_task(0, 10, 0)

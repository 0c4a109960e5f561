"""SDNet learns a detector better than MMSE where its inputs allow it: a task whose channels lie
in one fixed low-dimensional subspace (a few plane waves with fixed angles, random gains per UE).

A regression test of the model and training loop against a baseline they must beat. On our
Sionna UMi tasks (20 clusters x 20 rays, per-UE or even per-task cluster geometry) SDNet
converges to ZF-level SER instead; docs/sdnet/where-sdnet-wins.md measures where it wins.
Runs in the lab environment only, once per CI run.
"""

from __future__ import annotations

import pytest
import torch
from neuralmimo.channels import plane_wave_task
from neuralmimo.constellation import Constellation
from neuralmimo.detectors.sdnet.model import SDNet
from neuralmimo.detectors.sdnet.train import draw_batch, evaluate, make_optimiser, train
from neuralmimo.metrics import wilson_interval


@pytest.mark.timeout(900)
def test_sdnet_beats_mmse_on_a_fixed_geometry_task():
    torch.set_num_threads(2)
    const = Constellation("qpsk")
    h = plane_wave_task(5, 5000, paths=9)["h"]
    train_h, test_h = h[:4000], h[4000:]
    test = draw_batch(test_h, 20.0, const, 16, torch.Generator().manual_seed(1), vectors_per_ue=8)
    torch.manual_seed(0)
    model = SDNet(8, 32, 8)
    hist = train(model, make_optimiser(model, 1e-3), train_h, epochs=12, snr_db=20.0, constellation=const,
                 n_pilots=16, batch_size=100, seed=0)
    assert hist[-1]["train_loss"] < 0.5 * hist[0]["train_loss"]
    res = evaluate(model, test, const)
    n = res["symbols"]
    sdnet_hi = wilson_interval(round(res["sdnet"] * n), n, 0.99)[1]
    mmse_lo = wilson_interval(round(res["mmse"] * n), n, 0.99)[0]
    assert sdnet_hi < mmse_lo, res

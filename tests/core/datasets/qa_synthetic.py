"""draw_frames: one way to draw frames for every family, the simulation and the lab."""

import math

import pytest
import torch
from neuralmimo.channels import IIDRayleigh
from neuralmimo.constellation import Constellation
from neuralmimo.datasets import draw_frames
from neuralmimo.receiver.estimation import ls_estimate
from neuralmimo.receiver.frames import pilot_matrix

QPSK = Constellation("qpsk")


def test_dft_pilots_frames_and_ls_estimate():
    g = torch.Generator().manual_seed(0)
    h = IIDRayleigh(6, 3).sample(50, g)
    f = draw_frames(h, QPSK, 8, 20, 0.1, g)
    assert f.y.shape == (50, 6, 28) and f.idx.shape == (50, 3, 20) and f.pilot_idx is None
    assert torch.equal(f.x_p, pilot_matrix(3, 8)) and bool(f.active.all())
    h_ref, nv_ref = ls_estimate(f.y_p, pilot_matrix(3, 8))
    torch.testing.assert_close(f.h_ls, h_ref) and torch.testing.assert_close(f.noise_var_hat, nv_ref)
    # the residual noise estimate is unbiased: mean of 50 frames x 6 x (8 - 3) complex samples
    n = 50 * 6 * 5
    assert abs(float(f.noise_var_hat.mean()) / 0.1 - 1) < 5 / math.sqrt(n)
    # y = H x + n with the returned symbols
    x = torch.cat([pilot_matrix(3, 8).expand(50, 3, 8), QPSK.symbols(f.idx)], -1)
    resid = f.y - f.h @ x
    assert abs(float(resid.abs().square().mean()) / 0.1 - 1) < 5 / math.sqrt(50 * 6 * 28)


def test_random_pilots_with_users_joining_and_leaving():
    g = torch.Generator().manual_seed(1)
    h = IIDRayleigh(6, 4).sample(3, g)
    f = draw_frames(h, QPSK, 40, 10, torch.tensor([0.1, 0.2, 0.3]), g, pilots="random", n_users=[4, 2, 3])
    assert f.labels.shape == (3, 4, 50) and f.n_users.tolist() == [4, 2, 3]
    for t, k in enumerate([4, 2, 3]):
        assert bool((f.labels[t, k:] == 0).all()) and bool((f.h[t, :, k:] == 0).all())
        assert bool((f.h_ls[t, :, k:] == 0).all())
        ref, _ = ls_estimate(f.y_p[t], QPSK.symbols(f.pilot_idx[t, :k]))
        torch.testing.assert_close(f.h_ls[t, :, :k], ref, rtol=1e-4, atol=1e-4)


def test_reproducible_and_estimation_optional():
    h = IIDRayleigh(4, 2).sample(5, torch.Generator().manual_seed(2))
    a = draw_frames(h, QPSK, 4, 6, 0.5, torch.Generator().manual_seed(3))
    b = draw_frames(h, QPSK, 4, 6, 0.5, torch.Generator().manual_seed(3), estimate=False)
    assert torch.equal(a.y, b.y) and torch.equal(a.idx, b.idx) and b.h_ls is None
    torch.testing.assert_close(b.estimate().h_ls, a.h_ls)
    with pytest.raises(ValueError, match="pilots must be one of"):
        draw_frames(h, QPSK, 4, 6, 0.5, torch.Generator(), pilots="zadoff-chu")

"""Core pieces the streaming blocks rely on: seeded frame data, block-fading processes, the
channel with supplied noise, CFO, the fixed-pilot LS estimator, estimate checks, clustered CIs."""

import math

import pytest
import torch

from neuralmimo.channels import (BlockFadingProcess, DeepSICSynthetic, IIDRayleigh, TimeVaryingCorrelated, apply_cfo,
                                 transmit)
from neuralmimo.constellation import Constellation
from neuralmimo.estimation import LSChannelEstimator, PilotError, estimate_problems, ls_estimate
from neuralmimo.frames import FrameLayout, frame_data_indices, pilot_matrix
from neuralmimo.metrics import clustered_interval, error_rate_interval, wilson_interval


def test_frame_data_depends_only_on_seed_and_frame_number():
    const, lay = Constellation("qpsk"), FrameLayout(2, 2, 30)
    a = frame_data_indices(const, lay, 3, [5, 6, 7])
    b = frame_data_indices(const, lay, 3, [7, 5])
    assert torch.equal(a[2], b[0]) and torch.equal(a[0], b[1])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], frame_data_indices(const, lay, 4, [5])[0])


def test_block_fading_processes():
    iid = BlockFadingProcess(IIDRayleigh(3, 2), seed=1)
    h0, h1 = iid.next(), iid.next()
    assert h0.shape == (3, 2) and not torch.equal(h0, h1)
    assert torch.equal(BlockFadingProcess(IIDRayleigh(3, 2), seed=1).next(), h0)
    sed = DeepSICSynthetic(4, 3, seed=2)
    proc = BlockFadingProcess(sed)
    for t in range(3):
        assert torch.equal(proc.next(), sed.channel(t, 3))
    # time-varying: consecutive blocks correlate with rho_time (Gauss-Markov); 4000 runs of two
    # blocks, the sample correlation of one entry has standard error < 1/sqrt(4000)
    m = TimeVaryingCorrelated(2, 1, rho_rx=0.0, rho_tx=0.0, rho_time=0.8, shadowing_std_db=0.0)
    pairs = []
    for s in range(4000):
        p = BlockFadingProcess(m, seed=s)
        pairs.append(torch.stack([p.next()[0, 0], p.next()[0, 0]]))
    z = torch.stack(pairs).to(torch.complex128)
    rho = (z[:, 1] * z[:, 0].conj()).mean().real / z[:, 0].abs().square().mean()
    assert abs(float(rho) - 0.8) < 5 / math.sqrt(4000)


def test_transmit_with_supplied_unit_noise_and_cfo():
    h = torch.randn(3, 2, dtype=torch.complex64)
    x = torch.randn(2, 10, dtype=torch.complex64)
    w = torch.randn(3, 10, dtype=torch.complex64)
    assert torch.allclose(transmit(h, x, 0.25, unit_noise=w), h @ x + 0.5 * w)
    y = torch.ones(2, 5, dtype=torch.complex64)
    r = apply_cfo(y, 0.1, 1000)
    want = torch.polar(torch.ones(5, dtype=torch.float64), 2 * math.pi * 0.1 * torch.arange(1000, 1005, dtype=torch.float64))
    assert torch.allclose(r[1], want.to(torch.complex64), atol=1e-5)


def test_fixed_pilot_estimator_equals_ls_and_checks_pilots():
    x_p = pilot_matrix(3, 5)
    y = torch.randn(4, 6, 5, dtype=torch.complex64)
    h1, n1 = LSChannelEstimator(x_p)(y)
    h2, n2 = ls_estimate(y, x_p)
    assert torch.allclose(h1, h2, atol=1e-6) and torch.allclose(n1, n2, atol=1e-6)
    with pytest.raises(PilotError):
        LSChannelEstimator(torch.ones(2, 4, dtype=torch.complex64))  # identical rows: rank 1


def test_estimate_problems_names_each_failure():
    h = torch.randn(3, 4, 2, dtype=torch.complex64)
    h[1, 0, 0] = float("nan")
    h[2] = 0
    p = estimate_problems(h)
    assert p[0] is None and "non-finite" in p[1] and "rank-deficient" in p[2]


def test_clustered_interval_is_the_standard_error_over_frames():
    e = torch.tensor([0, 10, 0, 10])  # all-or-nothing frames: strongly clustered errors
    lo, hi = clustered_interval(e, 10)
    se = float((e / 10.0).std()) / 2
    assert (lo, hi) == pytest.approx((max(0, 0.5 - 1.959964 * se), min(1, 0.5 + 1.959964 * se)), rel=1e-5)
    # the binomial interval ignores the clustering and is much narrower
    w = wilson_interval(20, 40)
    assert (hi - lo) > 1.5 * (w[1] - w[0])
    u = error_rate_interval(e, 10)
    assert u[0] <= min(lo, w[0]) + 1e-12 and u[1] >= max(hi, w[1]) - 1e-12
    # unequal frame sizes: the ratio estimator
    lo2, hi2 = clustered_interval([1, 3, 3], [10, 20, 30])
    assert lo2 < 7 / 60 < hi2

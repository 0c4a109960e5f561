"""Block-fading processes and the transmission Y = H X + N with supplied noise; carrier frequency offset."""

import math

import torch
from neuralmimo.channels import (
    BlockFadingProcess,
    DeepSICSynthetic,
    IIDRayleigh,
    TimeVaryingCorrelated,
    apply_cfo,
    transmit,
)


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

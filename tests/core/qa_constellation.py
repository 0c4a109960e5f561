"""Constellations: energy, Gray labels, demapping, LLRs; real-valued model; frames."""

import itertools

import pytest
import torch
from neuralmimo.constellation import MODULATIONS, Constellation


@pytest.mark.parametrize("name", MODULATIONS)
def test_unit_energy_and_gray(name):
    c = Constellation(name)
    assert torch.isclose(c.points.abs().square().mean(), torch.tensor(1.0), atol=1e-6)
    assert len(set(map(tuple, c.bits.tolist()))) == c.num_points  # labels unique
    # Gray: every nearest neighbour differs in exactly one bit
    d = (c.points[:, None] - c.points[None, :]).abs()
    dmin = d[d > 1e-6].min()
    for i, j in itertools.product(range(c.num_points), repeat=2):
        if i != j and abs(float(d[i, j]) - float(dmin)) < 1e-5:
            assert int((c.bits[i] != c.bits[j]).sum()) == 1


@pytest.mark.parametrize("name", MODULATIONS)
def test_bits_indices_round_trip(name):
    c = Constellation(name)
    idx = c.random_indices((1000,), torch.Generator().manual_seed(1))
    assert torch.equal(c.bits_to_indices(c.indices_to_bits(idx)), idx)
    assert torch.equal(c.hard_decision(c.symbols(idx)), idx)


@pytest.mark.parametrize("name", MODULATIONS)
def test_llr_signs_agree_with_hard_decisions(name):
    c = Constellation(name)
    g = torch.Generator().manual_seed(2)
    z = torch.complex(torch.randn(20000, generator=g), torch.randn(20000, generator=g)) * 1.2
    llr = c.llr_maxlog(z, 0.3)
    hard_bits = c.indices_to_bits(c.hard_decision(z))
    # the max-log LLR sign is the bit of the nearest point wherever the LLR is not a tie
    nz = llr.abs() > 1e-4
    assert nz.float().mean() > 0.99
    assert torch.equal(Constellation.llr_to_bits(llr)[nz], hard_bits[nz])










def test_llr_from_log_probs_is_exact_posterior_llr():
    c = Constellation("16qam")
    g = torch.Generator().manual_seed(3)
    log_p = torch.log_softmax(torch.randn(5, 16, generator=g), -1)
    llr = c.llr_from_log_probs(log_p)
    p = log_p.exp()
    for i, b in itertools.product(range(5), range(4)):
        p1 = p[i][c.bits[:, b] == 1].sum()
        p0 = p[i][c.bits[:, b] == 0].sum()
        assert abs(float(llr[i, b]) - float(torch.log(p1 / p0))) < 1e-5

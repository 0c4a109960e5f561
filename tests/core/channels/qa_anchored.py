"""Within-task diversity: channels mixed into one fixed channel of their task (channels.anchored)."""

from __future__ import annotations

import math

import pytest
import torch
from neuralmimo.channels import anchor_mix, crandn, make_channel


def _inner(a, b):
    """Normalised correlation Re<a, b> / (|a| |b|) per channel."""
    num = (a.conj() * b).sum((-2, -1)).real
    return num / (a.abs().square().sum((-2, -1)) * b.abs().square().sum((-2, -1))).sqrt()


@pytest.mark.parametrize("rho", [0.0, 0.7, 0.97, 1.0])
def test_mix_has_the_anchor_share_rho(rho):
    g = torch.Generator().manual_seed(1)
    h, h0 = crandn((4000, 32, 8), g), crandn((32, 8), g)
    mixed = anchor_mix(h, h0, rho)
    assert torch.allclose(mixed.abs().square().sum((-2, -1)), torch.full((4000,), 256.0), rtol=1e-4)
    # independent H' of the anchor: the correlation with H0 is rho (up to the 1/sqrt(256) spread of <H0, H'>)
    assert float(_inner(mixed, h0.expand_as(mixed)).mean()) == pytest.approx(rho, abs=0.01)
    if rho == 1.0:
        assert torch.allclose(mixed, mixed[0].expand_as(mixed))
    if rho == 0.0:
        assert torch.allclose(mixed, h / h.abs().square().mean((-2, -1), keepdim=True).sqrt(), atol=1e-6)


def test_bad_arguments_are_refused():
    h = crandn((3, 4, 2))
    with pytest.raises(ValueError, match=r"rho must lie in \[0, 1\]"):
        anchor_mix(h, h[0], 1.5)
    with pytest.raises(ValueError, match="the anchor is"):
        anchor_mix(h, h[0, :3], 0.5)
    with pytest.raises(ValueError, match="anchor 9000 is not a channel"):
        make_channel({"name": "anchored", "args": {"rho": 0.9, "anchor": 9000, "base": "plane-waves"}}, 32, 8)


def test_stored_base_shares_its_anchor_across_splits():
    base = {"name": "plane-waves", "args": {"task_id": 2, "paths": 6, "ues_per_task": 500}}
    test = make_channel({"name": "anchored", "args": {"rho": 1.0, "anchor": 3, "base": base}}, 32, 8)
    train_base = make_channel({**base, "args": {**base["args"], "split": "train"}}, 32, 8)
    h0 = train_base.h[3]
    assert torch.allclose(test.sample(5, torch.Generator().manual_seed(0)), (h0 * math.sqrt(256) / h0.norm()).expand(5, 32, 8),
                          atol=1e-5)


def test_generated_base_is_mixed_at_every_draw():
    m = make_channel({"name": "anchored", "args": {"rho": 0.9, "base": "iid"}}, 4, 4)
    a, b = m.sample(2000, torch.Generator().manual_seed(1)), m.sample(2000, torch.Generator().manual_seed(2))
    assert not torch.allclose(a, b)
    assert float(_inner(a, m.anchor.expand_as(a)).mean()) == pytest.approx(0.9, abs=0.03)
    assert m.mean_energy == pytest.approx(16.0, rel=1e-3)

"""DeepSIC front end and online training [MH]."""

import torch
from neuralmimo.constellation import Constellation
from neuralmimo.datasets import draw_frames
from neuralmimo.detectors.deepsic.model import (
    ModuleSpec,
    deepsic_detect,
    deepsic_logits,
    init_modules,
    unrolled_loss,
)
from neuralmimo.detectors.deepsic.train import front_end, train_online

BPSK = Constellation("bpsk")


def test_front_end_normalises_noise_to_unit_variance():
    g = torch.Generator().manual_seed(5)
    spec = ModuleSpec(8)
    h = torch.randn(4, 8, 3, generator=g).to(torch.complex64)  # real channel
    b = draw_frames(h, BPSK, 800, 4000 - 800, 0.2, g, pilots="random", n_users=3)
    fe = front_end(b, spec)
    resid = fe.feats - (fe.h_cols.mT @ (2.0 * b.labels - 1).float()).mT  # y/sigma - (H_hat/sigma) s
    assert abs(float(resid.var()) - 1.0) < 0.05  # 128k samples: sd of the variance estimate ~0.004


def test_online_training_reduces_pilot_loss():
    g = torch.Generator().manual_seed(6)
    spec = ModuleSpec(6)
    h = torch.exp(-(torch.arange(6.0)[:, None] - torch.arange(4.0)[None, :]).abs())[None] * 2.0
    b = draw_frames(h.to(torch.complex64), BPSK, 800, 800 - 800, 0.2, g, pilots="random", n_users=4)
    fe = front_end(b, spec)
    theta0 = init_modules(4, spec, g)
    feats, labels = fe.feats[0], b.labels[0, :4]
    before = float(unrolled_loss(deepsic_logits(theta0, feats, spec, 3), labels))
    theta = train_online(theta0, feats, labels, spec, iterations=3, steps=100)
    after = float(unrolled_loss(deepsic_logits(theta, feats, spec, 3), labels))
    assert after < 0.5 * before
    assert float((deepsic_detect(theta, feats, spec, 3) != labels).double().mean()) < 0.05

"""A short HyperMIMO training on one fixed drop learns: at 6 dB (hypermimo convention) it beats
LMMSE on the same channels, symbols and noise by more than 4 standard errors of the paired
difference (per-channel error counts)."""

import pytest
import torch

from neuralmimo.channels import make_channel
from neuralmimo.constellation import Constellation
from neuralmimo.detectors import linear_detect
from neuralmimo.detectors.mmnet.model import HyperMIMO
from neuralmimo.datasets import draw_channel_batch as draw_batch
from neuralmimo.detectors.mmnet.train import train_hypermimo

pytestmark = pytest.mark.timeout(600)


def test_short_training_beats_lmmse_on_a_fixed_drop():
    chan = make_channel({"name": "local-scattering", "args": {"seed": 0}}, 12, 6)
    const = Constellation("qpsk")
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(0)
    model = HyperMIMO(6, 5)
    hist = train_hypermimo(model, lambda s: draw_batch(chan, const, 500, 1, (0.0, 10.0), g), steps=2000,
                           steps_per_epoch=250)
    assert hist[-1]["mse"] < 0.5 * hist[0]["mse"]  # the loss fell
    b = draw_batch(chan, const, 4000, 25, 6.0, torch.Generator().manual_seed(99))
    with torch.no_grad():
        hyper = model(b.y, b.h, b.noise_var)[1].argmax(-1)
    x, _ = linear_detect(b.y, b.h, b.noise_var, "mmse", const)
    lmmse = const.hard_decision(x)
    per_channel = ((lmmse != b.idx).double().sum((1, 2)) - (hyper != b.idx).double().sum((1, 2))) / (6 * 25)
    gain, se = float(per_channel.mean()), float(per_channel.std() / per_channel.numel() ** 0.5)
    assert gain > 4 * se, (gain, se)

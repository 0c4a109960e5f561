"""Shared pytest configuration: one torch thread (the machines have 2 shared cores), and
helpers more than one QA file needs."""

import pytest
import torch

torch.set_num_threads(1)


def _trained_like_sdnet(nt, nr, n_conv, input_width=None, seed=0):
    """An eval-mode SDNet whose batch-norm statistics and affine parameters are away from the
    identity, as after training."""
    from neuralmimo.detectors.sdnet.model import SDNet

    torch.manual_seed(seed)
    m = SDNet(nt, nr, n_conv, input_width)
    for bn in m.norms:
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.3, 3.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    return m.eval()


@pytest.fixture
def trained_like_sdnet():
    """``trained_like_sdnet(nt, nr, n_conv, input_width=None, seed=0)`` -> an SDNet as after training."""
    return _trained_like_sdnet

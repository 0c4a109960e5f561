"""SDNet's frame-amortised kernel equals the plain module; FLOP counts; batch-norm folding."""

import pytest
import torch
from neuralmimo.constellation import Constellation
from neuralmimo.detectors.sdnet.fast import SDNetKernel, sdnet_fast_detect
from neuralmimo.detectors.sdnet.model import sdnet_detect

QPSK = Constellation("qpsk")


@pytest.mark.parametrize("nt,nr,n_conv,width", [(8, 32, 8, None), (8, 32, 12, None), (4, 32, 3, 16),
                                                (2, 2, 8, None), (3, 4, 1, None)])
def test_fast_path_equals_plain_module(nt, nr, n_conv, width, trained_like_sdnet):
    """(2, 2, 8): the ZF row's influence reaches the last image row, exercising the edge padding."""
    m = trained_like_sdnet(nt, nr, n_conv, width)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, nr, nt, dtype=torch.complex64, generator=g)
    y = torch.randn(3, nr, 200, dtype=torch.complex64, generator=g)
    ref = sdnet_detect(m, y, h, QPSK)
    out = sdnet_fast_detect(SDNetKernel(m), y, h, QPSK)
    assert out.shape == ref.shape == (3, nt, 200)
    assert float((out - ref).abs().max()) < 1e-5


def test_fast_path_flops_table_iv(trained_like_sdnet):
    k = SDNetKernel(trained_like_sdnet(8, 32, 8))
    f = k.flops_per_vector()
    assert f["plain"] == 9_917_440  # Table IV
    # layers l = 1..10 compute l + 1 of 65 rows; the FC multiplies 11 of 65 rows
    assert f["fast"] == sum(2 * (l + 1) * 16 * w.shape[0] * w.shape[1] * 9 for l, w in enumerate(k.weights, 1)) \
        + 2 * 11 * 16 * 16
    assert f["ratio"] > 9.9


def test_batchnorm_folded_into_convolutions(trained_like_sdnet):
    m = trained_like_sdnet(2, 4, 1)
    k = SDNetKernel(m)
    x = torch.randn(5, 1, 9, 4)
    conv, bn = m.convs[0], m.norms[0]
    ref = bn(conv(x))
    out = torch.nn.functional.conv2d(x, k.weights[0], k.biases[0], padding=1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)

"""The real-valued model of [LG] eq. (2)-(3)."""

import torch
from neuralmimo.realvalued import (
    mat_to_complex,
    mat_to_real,
    vec_to_complex,
    vec_to_real,
)


def test_real_model_eq2_both_directions():
    g = torch.Generator().manual_seed(3)
    h = torch.complex(torch.randn(5, 6, 3, generator=g), torch.randn(5, 6, 3, generator=g))
    x = torch.complex(torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g))
    hr, xr = mat_to_real(h), vec_to_real(x)
    assert hr.shape == (5, 12, 6)
    y = (h @ x.unsqueeze(-1)).squeeze(-1)
    assert torch.allclose((hr @ xr.unsqueeze(-1)).squeeze(-1), vec_to_real(y), atol=1e-5)
    assert torch.equal(mat_to_complex(hr), h)
    assert torch.equal(vec_to_complex(xr), x)

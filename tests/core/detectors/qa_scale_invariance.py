"""Scale: the LS estimate and every classical detector give the same decisions for any finite
input scale float32 can hold (they are scale-free in exact arithmetic; each frame is normalised
by a power of two, which is exact)."""

import pytest
import torch
from neuralmimo.channels import Kronecker
from neuralmimo.constellation import Constellation
from neuralmimo.datasets import draw_frames
from neuralmimo.detectors import kbest_detect, linear_detect, ml_detect
from neuralmimo.receiver.estimation import LSChannelEstimator, frame_scale
from neuralmimo.receiver.frames import pilot_matrix

QAM = Constellation("16qam")


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(0)
    return draw_frames(Kronecker(6, 3, rho_rx=0.5).sample(40, g), QAM, 6, 50, 0.02, g, estimate=False)


def _decisions(y, constellation=QAM):
    h, nv = LSChannelEstimator(pilot_matrix(3, 6))(y[..., :6])
    y_d = y[..., 6:]
    out = {k: constellation.hard_decision(linear_detect(y_d, h, nv, k, constellation)[0]) for k in ("zf", "mmse")}
    out["kbest"] = kbest_detect(y_d, h, constellation, 8)
    out["ml"] = ml_detect(y_d, h, constellation)
    return out, h, nv


@pytest.mark.parametrize("scale", [1e19, 3e18, 1e-20, 1e-30, 2.0**-100, 7.3])
def test_same_decisions_at_any_finite_scale(frames, scale):
    ref, h_ref, nv_ref = _decisions(frames.y)
    assert float((ref["mmse"] != frames.idx).double().mean()) < 0.05  # a working receiver at this SNR
    y = frames.y * scale
    assert bool(torch.isfinite(torch.view_as_real(y)).all())
    out, h, nv = _decisions(y)
    for k in ref:
        assert torch.equal(out[k], ref[k]), k
    torch.testing.assert_close(h / scale, h_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(nv / scale**2, nv_ref, rtol=1e-5, atol=0)


def test_frame_scale_is_a_power_of_two_and_exact():
    x = torch.tensor([[[3.0e19 + 0j]], [[0j]], [[float("nan") + 0j]]])
    s = frame_scale(x)
    assert s.shape == (3, 1, 1) and s[1, 0, 0] == 1 and s[2, 0, 0] == 1
    assert float(torch.log2(s[0, 0, 0])) == round(float(torch.log2(s[0, 0, 0])))
    y = torch.randn(4, 3, 2, dtype=torch.complex64)
    sc = frame_scale(y).to(torch.float32)
    assert torch.equal((y / sc) * sc, y)  # exact round trip

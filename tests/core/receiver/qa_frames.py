"""Core pieces the streaming blocks rely on: seeded frame data, block-fading processes, the
channel with supplied noise, CFO, the fixed-pilot LS estimator, estimate checks, clustered CIs."""



import pytest
import torch
from neuralmimo.constellation import Constellation
from neuralmimo.receiver.frames import FrameLayout, frame_data_indices, pilot_matrix


def test_frame_data_depends_only_on_seed_and_frame_number():
    const, lay = Constellation("qpsk"), FrameLayout(2, 2, 30)
    a = frame_data_indices(const, lay, 3, [5, 6, 7])
    b = frame_data_indices(const, lay, 3, [7, 5])
    assert torch.equal(a[2], b[0]) and torch.equal(a[0], b[1])
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a[0], frame_data_indices(const, lay, 4, [5])[0])


@pytest.mark.parametrize("nt,n_p", [(1, 1), (4, 4), (4, 16), (8, 16), (3, 7)])
def test_pilots_orthogonal(nt, n_p):
    p = pilot_matrix(nt, n_p, torch.complex128)
    assert torch.allclose(p @ p.mH, n_p * torch.eye(nt, dtype=torch.complex128), atol=1e-9)
    assert torch.allclose(p.abs(), torch.ones_like(p.real, dtype=torch.float64))


def test_pilots_need_enough_columns():
    with pytest.raises(ValueError, match="n_pilots >= nt"):
        pilot_matrix(4, 3)


def test_frame_assemble_split():
    lay = FrameLayout(nt=2, n_pilots=4, n_data=5)
    data = torch.randn(3, 2, 5, dtype=torch.complex64)
    frame = lay.assemble(data)
    assert frame.shape == (3, 2, 9)
    p, d = lay.split(frame)
    assert torch.equal(d, data) and torch.equal(p[0], lay.pilots())
    with pytest.raises(ValueError):
        lay.split(frame[..., :8])

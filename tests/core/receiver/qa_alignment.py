"""neuralmimo.receiver.alignment: the pilot search finds a slip exactly, refuses what is not a slip, and the
rx_time timeline counts lost samples exactly at epoch-sized timestamps."""

import numpy as np
import pytest
import torch

from neuralmimo.receiver.estimation import LSChannelEstimator
from neuralmimo.receiver.frames import FrameLayout
from neuralmimo.receiver.alignment import PilotAligner, timeline_position, unexplained_fraction

NT, NR, NP, ND = 2, 4, 16, 48
LAY = FrameLayout(NT, NP, ND)


def _stream(frames=12, snr_db=20.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = LAY.assemble(torch.randn(frames, NT, ND, dtype=torch.complex64, generator=g))
    h = torch.randn(frames, NR, NT, dtype=torch.complex64, generator=g)
    sigma = (NT / 10 ** (snr_db / 10)) ** 0.5
    y = h @ x + sigma * torch.randn(frames, NR, LAY.length, dtype=torch.complex64, generator=g)
    return y.transpose(0, 1).reshape(NR, -1).numpy()


def _warm(al, y, frames=8):
    est = al.estimator
    for f in range(frames):
        y_p = torch.from_numpy(np.ascontiguousarray(y[:, f * LAY.length:f * LAY.length + NP]))[None]
        nv = est(y_p)[1]
        al.accept(float(unexplained_fraction(y_p, nv, NT)[0]), float(nv[0]))


@pytest.mark.parametrize("shift", [-31, -1, 1, 7, 31])
def test_search_finds_the_shifted_pilots_exactly(shift):
    y = _stream()
    al = PilotAligner(LSChannelEstimator(LAY.pilots()), span=(LAY.length - 1) // 2)
    _warm(al, y)
    true_start = 9 * LAY.length
    found = al.search(list(y), true_start - shift, 0, fraction=1.0)  # framing expects the frame `shift` off
    assert found is not None and (found.start, found.shift) == (true_start, shift)
    assert al.search(list(y), true_start, 0, fraction=1.0) is None  # aligned already: nothing to do


def test_zeros_and_noise_are_not_pilots():
    y = _stream()
    al = PilotAligner(LSChannelEstimator(LAY.pilots()), span=(LAY.length - 1) // 2)
    _warm(al, y)
    start = 9 * LAY.length
    z = y.copy()
    z[:, start - 40:start + LAY.length] = 0  # a gap of zeros where the frame should be
    assert al.search(list(z), start, 0, fraction=1.0) is None  # an empty window never wins
    assert al.suspect(float("inf"), 0.0) and not al.suspect(float("nan"), 1.0)


def test_needs_a_residual():
    with pytest.raises(ValueError, match="Np > Nt"):
        PilotAligner(LSChannelEstimator(FrameLayout(NT, NT, ND).pilots()), span=10)


def test_timeline_counts_lost_samples_at_epoch_timestamps():
    fs = 61.44e6
    ref = (1_790_000_000, 0.123456789)  # whole seconds since 1970: a float64 of it resolves ~0.2 us
    later = (1_790_000_003, 0.123456789 + 5000 / fs)
    assert timeline_position(1000, ref, later, fs) == 1000 + 3 * int(fs) + 5000

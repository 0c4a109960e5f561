"""The frame synchroniser as a pure state machine: frames found, numbered and cut the same however
the stream is pieced; a gap; the phase tracker; the pilot check."""

import numpy as np
import pytest
import torch

from neuralmimo.constellation import Constellation
from neuralmimo.receiver.estimation import LSChannelEstimator
from neuralmimo.receiver.frames import FrameLayout, frame_data_indices
from neuralmimo.receiver.framesync import LOCKED, FrameSynchronizer, pilots_misaligned
from neuralmimo.receiver.tracking import track_phase
from neuralmimo.receiver.preamble import Preamble
from neuralmimo.receiver.pulse import matched_filter, rrc_taps, shape

LAYOUT, PRE, SPS = FrameLayout(2, 8, 40), Preamble(2, 16), 4
CONST = Constellation("qpsk")


def _received(frames=12, seed=0, offset=37.0, noise=0.01):
    """Matched-filter output of ``frames`` frames (+ closing preamble) through a fixed 3x2
    channel, starting ``offset`` samples into the stream, and the frames' data indices."""
    idx = frame_data_indices(CONST, LAYOUT, seed, list(range(frames)))
    body = LAYOUT.assemble(CONST.symbols(idx)).numpy()
    pre = PRE.symbols().astype(np.complex64)
    sym = np.concatenate([np.concatenate([pre, b], 1) for b in body] + [pre, 0 * pre], 1)
    rng = np.random.default_rng(seed)
    h = ((rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))) / np.sqrt(2)).astype(np.complex64)
    taps = rrc_taps(SPS, 0.35, 8)
    y = np.concatenate([np.zeros((3, int(offset)), np.complex64), shape(h @ sym, taps, SPS)], 1)
    y += (noise * (rng.standard_normal(y.shape) + 1j * rng.standard_normal(y.shape))).astype(np.complex64)
    return matched_filter(y, taps), idx, taps


def _sync(taps, offset):
    return FrameSynchronizer(3, LAYOUT, PRE, SPS, taps, origin=offset + len(taps) - 1, constellation=CONST)


def test_frames_are_found_numbered_and_cut_the_same_however_the_stream_is_pieced():
    z, idx, taps = _received()
    whole = _sync(taps, 37).push(z)
    pieced, s = [], _sync(taps, 37)
    rng = np.random.default_rng(1)
    pos = 0
    while pos < z.shape[1]:
        n = int(rng.integers(1, 700))
        pieced += s.push(z[:, pos:pos + n])
        pos += n
    assert [f.number for f in whole] == list(range(12)) == [f.number for f in pieced]
    assert s.state == LOCKED
    for a, b in zip(whole, pieced):  # bit for bit: a replay gives the live run's decisions
        assert a.start == b.start and np.array_equal(a.symbols, b.symbols)
    starts = np.array([f.start for f in whole])
    assert np.allclose(starts, 37 + 32 + np.arange(12) * (PRE.length + LAYOUT.length) * SPS, atol=0.1)  # parabolic peak: small bias


def test_a_gap_drops_the_frame_it_cuts_and_keeps_the_numbering():
    z, idx, taps = _received()
    L = (PRE.length + LAYOUT.length) * SPS
    cut_at, lost = 69 + 5 * L + 100, 300  # inside frame 5
    s = _sync(taps, 37)
    out = s.push(z[:, :cut_at]) + s.gap(lost) + s.push(z[:, cut_at + lost:])
    numbers = [f.number for f in out]
    assert 5 not in numbers and numbers == sorted(numbers) and numbers[-1] == 11
    assert set(range(7, 12)) <= set(numbers)  # back within two frames
    for f in out:  # every frame handed out is the frame its number says
        x = torch.from_numpy(f.symbols[None])
        h, _ = LSChannelEstimator(LAYOUT.pilots())(x[..., :LAYOUT.n_pilots])
        est = torch.linalg.pinv(h) @ x[..., LAYOUT.n_pilots:]
        assert torch.equal(CONST.hard_decision(est)[0], idx[f.number])


def test_noise_only_finds_nothing():
    rng = np.random.default_rng(3)
    taps = rrc_taps(SPS, 0.35, 8)
    w = (rng.standard_normal((3, 40000)) + 1j * rng.standard_normal((3, 40000))).astype(np.complex64)
    s = _sync(taps, 0)
    assert s.push(matched_filter(w, taps)) == [] and s.counts.get("acquired", 0) == 0


def test_phase_tracker_follows_a_residual_frequency_offset():
    lay = FrameLayout(2, 8, 256)
    g = torch.Generator().manual_seed(0)
    idx = CONST.random_indices((4, 2, 256), g)
    x = lay.assemble(CONST.symbols(idx))
    h = torch.randn(4, 4, 2, dtype=torch.complex64, generator=g)
    drift = torch.polar(torch.ones(lay.length), 2 * torch.pi * 2e-3 * torch.arange(lay.length).float())
    y = (h @ x) * drift.to(torch.complex64)  # 2e-3 cycles/symbol: 184 degrees over the frame
    y = y + 0.05 * torch.randn(y.shape, dtype=torch.complex64, generator=g)
    est = LSChannelEstimator(lay.pilots())

    def errors(frames):
        hh, _ = est(frames[..., :8])
        return int((CONST.hard_decision(torch.linalg.pinv(hh) @ frames[..., 8:]) != idx).sum())

    t = track_phase(y.numpy(), lay, CONST, chunk=16)
    tracked = torch.from_numpy(t.frames)
    assert errors(y) > 500 and errors(tracked) == 0
    # the tracked phase of the last vector ~ the drift from the pilots' middle to it
    want = 2 * np.pi * 2e-3 * (8 + 256 - 1 - 3.5)
    assert np.allclose(t.phase[:, -1], want, atol=0.15)


def test_tracking_pilots_catch_and_undo_a_planted_cycle_slip():
    """A quarter-turn phase jump inside the data: the decision-directed tracker alone cannot see it
    (QPSK looks the same turned by 90 degrees) and decides every later vector of the frame turned;
    with a tracking pilot every 32 data vectors the next pilot catches it (a slip, counted) and the
    errors stay between the two pilots around the jump."""
    from neuralmimo.receiver.tracking import insert_tracking, tracking_positions

    lay, spacing, jump = FrameLayout(2, 8, 256), 32, 8 + 100  # the jump's on-air vector (pilot block first)
    g = torch.Generator().manual_seed(3)
    idx = CONST.random_indices((6, 2, 256), g)
    x = lay.assemble(CONST.symbols(idx)).numpy()
    h = torch.randn(6, 4, 2, dtype=torch.complex64, generator=g).numpy()
    est = LSChannelEstimator(lay.pilots())

    def received(body):
        turn = np.where(np.arange(body.shape[-1]) >= jump, 1j, 1.0).astype(np.complex64)
        y = (h @ body) * turn
        return (y + 0.05 * torch.randn(y.shape, dtype=torch.complex64, generator=g).numpy()).astype(np.complex64)

    def errors(frames):  # per data vector, (F, Nd)
        hh, _ = est(torch.from_numpy(frames[..., :8]))
        xh = torch.linalg.pinv(hh) @ torch.from_numpy(frames[..., 8:])
        return (CONST.hard_decision(xh) != idx).any(1).numpy()

    plain = track_phase(received(x), lay, CONST)
    assert errors(plain.frames)[:, jump - 8 + 16:].all()  # from the jump on (past its chunk) all wrong
    body = np.concatenate([x[..., :8], insert_tracking(x[..., 8:], lay, spacing)], -1)
    t = track_phase(received(body), lay, CONST, spacing=spacing)
    assert (t.slips >= 1).all()
    # on air the jump (100 vectors after the pilot block) lies between tracking pilots 2 and 3
    # (positions 98 and 131): data vectors 96..127; every data vector outside that segment is right
    pos = tracking_positions(256, spacing)
    assert pos[2] < jump - 8 < pos[3]
    bad = errors(t.frames)
    assert bad[:, 3 * spacing:4 * spacing].any() and not np.delete(bad, np.arange(3 * spacing, 4 * spacing), 1).any()


def test_pilot_check_refuses_a_window_of_data():
    lay = FrameLayout(2, 16, 64)
    g = torch.Generator().manual_seed(1)
    x = lay.assemble(CONST.symbols(CONST.random_indices((6, 2, 64), g)))
    y = torch.randn(6, 4, 2, dtype=torch.complex64, generator=g) @ x
    y = y + 0.1 * torch.randn(y.shape, dtype=torch.complex64, generator=g)
    rho = np.full(6, 0.95)
    assert not pilots_misaligned(y[..., :16].numpy(), lay, rho).any()
    assert pilots_misaligned(y[..., 20:36].numpy(), lay, rho).all()


def _noise(n, seed=0, scale=0.1):
    rng = np.random.default_rng(seed)
    return (scale * (rng.standard_normal((3, n)) + 1j * rng.standard_normal((3, n)))).astype(np.complex64)


@pytest.mark.parametrize("kind", ["dc", "tone", "saturated"])
def test_cost_is_bounded_and_no_frame_is_found_on_radio_junk(kind):
    """Issue 29, class 3: input that passes the autocorrelation test almost everywhere -- a DC
    offset far above the noise (the blocker removes it), a strong tone (its spectrum is one line:
    refused by the verification), a saturated front end -- gives no frame, and the preamble
    verifications stay within MAX_VERIFY_PER_FRAME per frame length searched (the cost bound;
    without it every window was verified, ~100x slower than real time)."""
    from neuralmimo.receiver import framesync as fsm

    n = 200 * (PRE.length + LAYOUT.length) * SPS
    y = _noise(n)
    if kind == "dc":
        y += np.complex64(2 + 1j)
    elif kind == "tone":
        y += (2 * np.exp(2j * np.pi * 0.013 * np.arange(n))).astype(np.complex64)
    else:
        y = (np.sign(y.real) + 1j * np.sign(y.imag)).astype(np.complex64) + np.complex64(1)
    taps = rrc_taps(SPS, 0.35, 8)
    s = _sync(taps, 37)
    verified = {"n": 0}
    real = s._detect_many

    def counting(centers, span, threshold):
        verified["n"] += len(centers)
        return real(centers, span, threshold)

    s._detect_many = counting
    frames = []
    for k in range(0, n, 4096):
        frames += s.push(y[:, k:k + 4096])
    assert frames == [] and s.counts.get("frames", 0) == 0
    assert verified["n"] <= fsm.MAX_VERIFY_PER_FRAME * 200 + 2 * fsm.MAX_VERIFY_PER_FRAME
    assert s.counts["no-preamble"] == 1 and s.diagnosis is not None


def test_frames_under_a_dc_offset_are_found_and_detected():
    """A DC offset 10x the signal on every antenna: the frames are found, numbered and decoded."""
    z, idx, taps = _received(frames=30)
    z = z + np.complex64(10 - 5j)
    out = _sync(taps, 37).push(z)
    assert [f.number for f in out] == list(range(1, 30)) or [f.number for f in out] == list(range(30))
    for f in out[1:]:
        x = torch.from_numpy(f.symbols[None])
        h, _ = LSChannelEstimator(LAYOUT.pilots())(x[..., :LAYOUT.n_pilots])
        est = torch.linalg.pinv(h) @ x[..., LAYOUT.n_pilots:]
        assert torch.equal(CONST.hard_decision(est)[0], idx[f.number])


def test_a_preamble_period_mismatch_is_diagnosed():
    """Issue 29, class 6: a receiver expecting period 8 on a transmitter sending period 16 used to
    log nothing at all; now the silence is diagnosed, naming the period the input repeats with."""
    z, _, taps = _received(frames=100)
    s = FrameSynchronizer(3, LAYOUT, Preamble(2, 8), SPS, taps, constellation=CONST)
    assert s.push(z) == []
    assert s.counts["no-preamble"] == 1
    assert "period of 16 symbols" in s.diagnosis and "expects 8" in s.diagnosis

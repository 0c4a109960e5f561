"""The frame synchroniser's targets on the core over-the-air link (neuralmimo.lab.ota): 4x8 QPSK,
RRC at 4 samples per symbol, a preamble of two 16-symbol Zadoff-Chu periods, i.i.d. Rayleigh
block fading per frame, white receiver noise, and every impairment of a radio."""

import math

import numpy as np
import pytest
from dataclasses import replace

from neuralmimo.lab.ota import LinkSettings, false_starts, impaired, run_link
from neuralmimo.metrics import snr_at

pytestmark = pytest.mark.timeout(600)
BASE = LinkSettings()
# a random start (integer + fractional), CFO 2 % of the symbol rate, 20 ppm, phase noise
# (1e-4 rad^2 per sample: 16 Hz linewidth at 1 MS/s, 0.35 rad rms over a frame), random LO phase
# per receive channel, +-1 dB gain imbalance
RADIO = impaired(BASE, timing_offset=517.37, phase_noise=1e-4)


def test_mmse_after_sync_is_within_half_a_db_of_the_genie_receiver():
    snrs, sync, genie = [8.0, 10.0], [], []
    for snr in snrs:
        r = run_link(RADIO, snr, 150, seed=5)
        assert r.received == list(range(150)) and r.misnumbered == 0
        sync.append(r.ser)
        genie.append(r.genie_ser)
    # both curves cross SER 1e-2 between the points (8 dB: ~2.7e-2, 10 dB: ~9e-3)
    loss = snr_at(1e-2, snrs, sync) - snr_at(1e-2, snrs, genie)
    assert math.isfinite(loss) and loss <= 0.5, (sync, genie, loss)


def test_detection_probability_at_genie_ser_1e_1():
    """Every frame is found (>= 99.9 %: at most 1 of 1000 missed) at the SNR where the genie's
    SER is ~1e-1."""
    r = run_link(RADIO, 4.5, 1000, seed=3)
    assert r.genie_ser >= 0.08, r.genie_ser
    assert r.misnumbered == 0
    assert len(r.received) >= 999, (len(r.received), r.counts)


@pytest.mark.parametrize("pfa", [1e-1, 1e-2])
def test_false_starts_on_noise_stay_below_the_design_probability(pfa):
    """Noise only: frame starts acquired per frame length of noise <= pfa (the thresholds use a
    union bound, so the rate is well below; the verification stage lowers it further)."""
    count, lengths = false_starts(BASE, 2000, pfa, seed=1)
    assert count <= pfa * lengths, (count, lengths)


def test_reacquisition_within_two_frames_after_every_overflow():
    """~100 overflows of 1..3000 samples, each reported as an rx_time gap: after every one, one of
    the next two frames that start after it is handed out, and no frame reaches the receiver with
    another frame's number (its SER would be ~0.75) or twice."""
    frames = 400
    # runs of 1500 samples on average take ~30 % of the device samples: 140 per run length gives ~100
    s = impaired(BASE, timing_offset=17.6, drop_rate=140 / (frames * BASE.frame_samples), drop_length=(1, 3000))
    r = run_link(s, 12.0, frames, seed=4)
    assert 80 <= len(r.gap_ends) <= 130, len(r.gap_ends)
    assert r.misnumbered == 0 and len(set(r.received)) == len(r.received)
    assert max(r.frame_ser) < 0.2 and r.ser < 3 * r.genie_ser + 1e-3, (max(r.frame_ser), r.ser, r.genie_ser)
    Ls, judged = s.frame_samples, 0
    got = set(r.received)
    starts = [e - n for e, n in zip(r.gap_ends, r.gaps)] + [math.inf]  # device samples where each run begins
    for end, next_gap in zip(r.gap_ends, starts[1:]):
        first = math.ceil((end - r.origin) / Ls)  # the first frame that starts after the gap
        if first + 1 >= frames or r.origin + (first + 2) * Ls + 64 * s.sps > next_gap:
            continue  # the next gap comes before those two frames are complete (and confirmed)
        judged += 1
        assert first in got or first + 1 in got, (end, first)
    assert judged >= 30, judged  # overflows followed by two whole frames before the next one


def test_cfo_estimate_is_within_twice_its_cramer_rao_bound_at_10_db():
    r = run_link(impaired(BASE, cfo=0.01, sro_ppm=0.0, phase_noise=0.0), 10.0, 300, seed=6)
    err = np.asarray(r.cfo_estimates) - 0.01 / BASE.sps
    ratio = math.sqrt(np.mean(err ** 2) / np.mean(r.cfo_crb))
    assert ratio <= 2.0, ratio


def test_per_user_cfo_is_measured_from_each_users_preamble():
    user = (0.004, -0.004, 0.002, 0.0)  # cycles per symbol
    r = run_link(impaired(BASE, cfo=0.01, user_cfo=user, phase_noise=0.0), 15.0, 100, seed=8)
    est = np.mean(r.user_cfo_estimates, axis=0) * BASE.sps
    assert np.allclose(est, 0.01 + np.asarray(user), atol=3e-4), est
    assert len(r.received) == 100


def test_results_do_not_depend_on_how_the_stream_is_pieced():
    """Bit for bit (what makes a replayed capture give the live decisions): the same frames, CFO
    estimates and symbol errors whether the synchroniser gets 777 or 65536 samples at a time."""
    a = run_link(replace(RADIO, chunk=777), 8.0, 40, seed=9)
    b = run_link(replace(RADIO, chunk=65536), 8.0, 40, seed=9)
    assert a.received == b.received and a.cfo_estimates == b.cfo_estimates and a.frame_ser == b.frame_ser


# the version-2 frame format: a coarse preamble part (12.5 % of the symbol rate) and a tracking
# pilot every 32 data vectors
V2 = replace(RADIO, coarse_period=4, pilot_spacing=32)


@pytest.mark.parametrize("cfo", [0.09, -0.09])
def test_acquisition_at_9_percent_cfo(cfo):
    """Issue 31: two radios with their own TCXOs see up to ~9 % of the symbol rate. With the
    version-2 preamble every frame arrives and MMSE stays near the genie (SER within 1.4x, the
    0.5-dB criterion at SER ~1e-2 plus sampling error); version 1 resolves only +-3.1 %."""
    r = run_link(replace(V2, cfo=cfo), 10.0, 100, seed=4)
    assert r.received == list(range(100)) and r.misnumbered == 0, r.counts
    est = np.asarray(r.cfo_estimates) * BASE.sps
    assert np.all(np.abs(est - cfo) < 5e-3), est  # the right branch (1/16 apart); the phase noise's scatter
    assert r.ser <= 1.4 * r.genie_ser + 3 * math.sqrt(r.genie_ser / r.genie_symbols), (r.ser, r.genie_ser)
    old = run_link(replace(RADIO, cfo=cfo), 10.0, 20, seed=4)
    assert len(old.received) < 10 or old.ser > 0.3  # outside version 1's range: lost or mis-derotated


def test_a_wrong_coarse_branch_is_caught_by_the_known_preamble(monkeypatch):
    """A coarse CFO estimate one branch off (1 / N cycles per symbol) makes the Zadoff-Chu long
    periods correlate fully one symbol off; only the right branch makes the coarse part correlate
    too. Planted on every detection: each is corrected (cfo-branch), no frame is lost or mistimed."""
    from neuralmimo.receiver.framesync import FrameSynchronizer

    coarse = FrameSynchronizer._coarse_cfo
    monkeypatch.setattr(FrameSynchronizer, "_coarse_cfo",
                        lambda self, starts: coarse(self, starts) + 1.0 / self.half)
    r = run_link(replace(V2, cfo=0.05), 10.0, 40, seed=2)
    assert r.counts.get("cfo-branch", 0) >= 40, r.counts
    assert r.received == list(range(40)) and max(r.frame_ser) < 0.1
    assert np.allclose(np.asarray(r.cfo_estimates) * BASE.sps, 0.05, atol=5e-3)


def test_per_user_cfo_is_removed_with_tracking_pilots():
    """Issue 31 target: users' offsets +-5e-4 and +-2.5e-4 cycles per symbol around the common CFO
    (separate user oscillators) at 10 dB: the SER within 1.5x of the common-oscillator link's on
    the same frames (before: 0.15 against 7e-3)."""
    user = tuple(5e-4 * np.array([1.0, -1.0, 0.5, -0.5]))
    common = run_link(V2, 10.0, 120, seed=1)
    users = run_link(replace(V2, user_cfo=user), 10.0, 120, seed=1)
    assert len(users.received) == 120
    assert users.ser <= 1.5 * common.ser, (users.ser, common.ser)


def test_version_2_results_do_not_depend_on_how_the_stream_is_pieced():
    """Bit for bit with the coarse part, tracking pilots, phase noise and separate user
    oscillators (the tracker's frame-to-frame state changes only every STATE_FRAMES frames)."""
    s = replace(V2, phase_noise=1e-3, user_cfo=(4e-4, -4e-4, 2e-4, -2e-4))
    a = run_link(replace(s, chunk=777), 10.0, 40, seed=9)
    b = run_link(replace(s, chunk=65536), 10.0, 40, seed=9)
    assert a.received == b.received and a.cfo_estimates == b.cfo_estimates and a.frame_ser == b.frame_ser


def test_ota_report_writes_its_tables_and_plots(tmp_path):
    from neuralmimo.lab.ota import ota_report

    res = ota_report(tmp_path, frames=20, false_start_lengths=100, map_frames=4, map_axes=("cfo", "phase_noise"))
    assert {p.name for p in tmp_path.iterdir()} >= {"report.md", "results.json", "ser_sync_vs_genie.png", "cfo_vs_crb.png",
                                                   "robustness_map.png"}
    assert len(res["ser"]) == 6 and all(r["received"] == 20 and r["received_v2"] == 20 for r in res["ser"][2:])
    text = (tmp_path / "report.md").read_text()
    assert res["overflows"]["misnumbered"] == 0 and "Cramer-Rao" in text and "Robustness map" in text


def test_the_robustness_map_delivers_every_frame_across_10_percent_cfo():
    """The map's smoke run on two axes: at +-10 % CFO of the symbol rate (version-2 frames) every
    frame arrives at every SNR, and the envelope holds the nominal point of each axis."""
    from neuralmimo.lab.ota import MAP_AXES, map_envelope, robustness_map

    res = robustness_map(frames=12, snrs=(8.0, 12.0, 16.0), axes=("cfo", "sro_ppm"))
    cfo = res["cfo"]
    assert np.min(cfo["delivered"]) == 1.0, cfo["delivered"]
    assert cfo["values"] == list(MAP_AXES["cfo"]["values"]) and len(cfo["ser"][0]) == 3
    env = map_envelope(res, max_loss_db=1.5)  # 12 frames a point: a coarse estimate of the loss
    assert 0.0 in env["cfo"] and 0.0 in env["sro_ppm"]

"""The fault soak end to end, tiny: the count-framed receiver with the neural detector under a
fault schedule of every kind loses no good frame, misnumbers none, re-acquires every silent
slip within two frames, sees each repeated frame twice under its number, reverts the model
that fails at run time, ignores rx_time tags with a NaN fraction and malformed drift events, and
keeps streaming while its CSI log folder comes and goes and its recorder's disk is full (issue 14, "prove it"; `neuralmimo soak --faults` runs it at 10^7)."""

from pathlib import Path

import numpy as np
import pytest
from gnuradio.neuralmimo.apps.stress import FAULT_SOAK_KINDS, fault_schedule, format_soak_faults, soak_faults

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[3]


def test_fault_schedule_covers_every_kind_and_never_overlaps():
    faults, corrupt, events = fault_schedule(np.random.default_rng(0), 2000, 1024, 511)
    assert {e["kind"] for e in events} == set(FAULT_SOAK_KINDS)
    assert len(faults) + len(corrupt) == len(events)
    for a, b in zip(faults, faults[1:]):
        assert b.offset >= a.offset + (a.count if a.kind != "insert" else 0) + 8 * 1024


def test_receiver_survives_the_fault_schedule():
    r = soak_faults(ROOT / "models", vectors=400_000, interval_s=0.2, seed=3, progress=False)
    print(format_soak_faults(r))
    assert r["ok"], format_soak_faults(r)
    assert r["faults_applied"] + r["tags_corrupted"] == sum(r["faults"].values())
    assert r["slips_reacquired"] == r["silent_slips"] > 0 and r["latency_frames_max"] <= 2
    assert r["repeated_frames_seen_twice"] == r["faults"]["repeat-frame"] > 0
    assert r["reacquisitions_rx_time"] == r["faults"]["drop-frame"] > 0
    assert r["reverts"] >= 1 and r["refusals"] >= 1
    assert r["detector_problems"]["stale-csi-frame"] >= r["faults"]["absurd-tag"]
    assert r["good_frame_ser"] < 0.1  # the frames are really detected (chance: 0.5)
    # issue 29: disk faults, malformed timestamps and drift events on the side cost no good frame
    assert r["bad_timestamps"] > 0 and r["estimator_problems"]["bad-rx-time"] == r["bad_timestamps"]
    c, rt = r["csi_log"], r["retrainer"]
    assert c["outages"] >= 1 and c["frames_logged"] > 0 and c["frames_read_back"] + c["frames_lost"] == c["frames_logged"]
    assert "write-failed" in r["recorder_problems"]
    assert rt["alive"] and rt["malformed_sent"] >= 1 and rt["ignored"] == rt["malformed_sent"]

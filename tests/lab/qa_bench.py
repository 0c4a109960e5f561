"""neuralmimo bench: our detectors against Sionna's on identical data (same decisions), and any
bundle timed against MMSE on frames of its own system (bench neural --models)."""

from pathlib import Path

import pytest

from neuralmimo.lab.bench import bench_bundles, bench_detectors, format_bench_neural

ROOT = Path(__file__).resolve().parents[2]
HYPER = ROOT / "models" / "hypernet-deepsic-sed-n12"


def test_decisions_match_sionna():
    pytest.importorskip("sionna")
    rows = bench_detectors(n_vectors=256, repeats=1, configs=((4, 8),), kbest_k=64)
    by = {r["detector"]: r for r in rows}
    # exact ML and the linear detectors are deterministic functions of the same data
    assert by["ml"]["agreement"] == 1.0
    assert by["zf"]["agreement"] == 1.0 and by["mmse"]["agreement"] >= 0.999
    # K = |S|^(Nt-1) = 64: both K-best detectors are exact ML
    assert by["kbest"]["agreement"] == 1.0


def test_bundles_are_timed_against_mmse_with_flops():
    rows = bench_bundles([str(HYPER), f"{HYPER}@iterations=1"], frames=2, frame_data=64, repeats=1)
    full, one = rows
    assert full["reference"] == "MMSE" and full["vps"] > 0 and full["ref_vps"] > 0
    assert full["ratio"] == full["vps"] / full["ref_vps"] or abs(full["ratio"] - full["vps"] / full["ref_vps"]) < 1e-9
    # 2 Q K (D H + H |S|) per vector with D = N + K - 1 (BPSK, real channel), plus 2 K |phi| / 64 per frame
    k, n, h, q = 12, 12, 16, 3
    per_frame = 2 * k * 25_154 / 64
    assert abs(full["flops"] - (2 * q * k * ((n + k - 1) * h + h * 2) + per_frame)) < 1e-6
    assert abs(one["flops"] - (2 * 1 * k * ((n + k - 1) * h + h * 2) + per_frame)) < 1e-6
    assert one["options"] == {"iterations": 1, "fallback": True} and full["sha256"] == one["sha256"]
    assert "hypernet-deepsic-sed-n12@iterations=1" in format_bench_neural(rows)

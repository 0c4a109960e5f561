"""Our detectors against Sionna's on identical data: same decisions (lab environment)."""

import pytest

pytest.importorskip("sionna")

from neuralmimo.lab.bench import bench_detectors  # noqa: E402


def test_decisions_match_sionna():
    rows = bench_detectors(n_vectors=256, repeats=1, configs=((4, 8),), kbest_k=64)
    by = {r["detector"]: r for r in rows}
    # exact ML and the linear detectors are deterministic functions of the same data
    assert by["ml"]["agreement"] == 1.0
    assert by["zf"]["agreement"] == 1.0 and by["mmse"]["agreement"] >= 0.999
    # K = |S|^(Nt-1) = 64: both K-best detectors are exact ML
    assert by["kbest"]["agreement"] == 1.0

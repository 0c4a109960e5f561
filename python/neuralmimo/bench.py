"""Detector throughput against Sionna's reference detectors, in one process on the same data.

Each received vector has its own channel (the workload Sionna's detectors are built for), so
the comparison is per vector, like for like. Ratios, not absolute rates, are the result: the
machines are shared and noisy.
"""

from __future__ import annotations

import time

import torch

from .channels import IIDRayleigh
from .constellation import Constellation
from .detectors import kbest_detect, linear_detect, ml_detect
from .snr import complex_noise, noise_variance


def _best_time(fn, repeats: int) -> float:
    fn()  # warm-up (allocations, Sionna's first-call set-up)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _chunked(fn, n: int, chunk: int):
    """Run ``fn(slice)`` over ``range(n)`` in chunks and concatenate (bounds Sionna's memory)."""
    return lambda: torch.cat([fn(slice(i, min(n, i + chunk))) for i in range(0, n, chunk)])


def bench_detectors(n_vectors: int = 4096, repeats: int = 3, threads: int = 1, kbest_k: int = 16,
                    configs=((8, 32), (6, 12)), snr_db: float = 0.0, seed: int = 0) -> list[dict]:
    """Vectors/s of our ZF/MMSE/ML/K-best and Sionna's on identical QPSK data.

    Returns rows with ``detector``, ``config``, ``ours_vps``, ``sionna_vps``, ``ratio`` (ours over
    Sionna) and ``agreement`` (fraction of identical symbol decisions).
    """
    try:
        from sionna.phy.mapping import Constellation as SnConstellation
        from sionna.phy.mimo import KBestDetector, LinearDetector, MaximumLikelihoodDetector
    except ImportError as e:  # pragma: no cover
        raise RuntimeError("bench detectors needs Sionna: run it in the lab environment (.venv/lab)") from e
    torch.set_num_threads(threads)
    const = Constellation("qpsk")
    sn_points = SnConstellation("qam", 2).points.detach().to(torch.complex64)
    sn_to_ours = const.hard_decision(sn_points)  # Sionna point index -> our point index
    rows = []
    for nt, nr in configs:
        g = torch.Generator().manual_seed(seed)
        chan = IIDRayleigh(nr, nt)
        nv = noise_variance(snr_db, channel_energy=chan.mean_energy, nr=nr, nt=nt)
        h = chan.sample(n_vectors, g)
        idx = const.random_indices((n_vectors, nt, 1), g)
        y = h @ const.symbols(idx) + complex_noise((n_vectors, nr, 1), nv, g)
        y_vec = y[..., 0]
        s = (nv * torch.eye(nr, dtype=torch.complex64)).expand(n_vectors, nr, nr)
        n_ml = min(n_vectors, 256) if 4**nt > 4096 else n_vectors  # 65,536 candidates: keep Sionna's ML in memory

        ours = {
            "zf": lambda sl=slice(None): const.hard_decision(linear_detect(y[sl], h[sl], nv, "zf", const)[0])[..., 0],
            "mmse": lambda sl=slice(None): const.hard_decision(linear_detect(y[sl], h[sl], nv, "mmse", const)[0])[..., 0],
            "ml": lambda sl=slice(0, n_ml): ml_detect(y[sl], h[sl], const)[..., 0],
            "kbest": lambda sl=slice(None): kbest_detect(y[sl], h[sl], const, kbest_k)[..., 0],
        }
        sn_zf = LinearDetector("zf", "symbol", "maxlog", "qam", 2, hard_out=True)
        sn_mmse = LinearDetector("lmmse", "symbol", "maxlog", "qam", 2, hard_out=True)
        sn_ml = MaximumLikelihoodDetector("symbol", "maxlog", nt, "qam", 2, hard_out=True)
        sn_kb = KBestDetector("symbol", nt, kbest_k, "qam", 2, hard_out=True)

        def sn(det, sl):
            return sn_to_ours[det(y_vec[sl], h[sl], s[sl]).long()]

        ml_chunk = max(1, (1 << 26) // (4**nt * nr))
        theirs = {
            "zf": lambda: sn(sn_zf, slice(None)),
            "mmse": lambda: sn(sn_mmse, slice(None)),
            "ml": _chunked(lambda sl: sn(sn_ml, sl), n_ml, ml_chunk),
            "kbest": _chunked(lambda sl: sn(sn_kb, sl), n_vectors, 1024),
        }
        for det in ("zf", "mmse", "ml", "kbest"):
            n = n_ml if det == "ml" else n_vectors
            t_ours = _best_time(ours[det], repeats)
            t_sn = _best_time(theirs[det], repeats)
            agree = float((ours[det]() == theirs[det]()).float().mean())
            rows.append({"config": f"{nt}x{nr}", "detector": det, "vectors": n, "ours_vps": n / t_ours,
                         "sionna_vps": n / t_sn, "ratio": t_sn / t_ours, "agreement": agree, "threads": threads})
    return rows


def format_bench(rows: list[dict]) -> str:
    head = f"{'config':>7} {'detector':>8} {'vectors':>8} {'ours vec/s':>12} {'Sionna vec/s':>13} {'ratio':>8} {'same decisions':>15}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['config']:>7} {r['detector']:>8} {r['vectors']:>8} {r['ours_vps']:>12.0f} {r['sionna_vps']:>13.0f} "
                     f"{r['ratio']:>7.1f}x {100 * r['agreement']:>14.2f}%")
    lines.append("ratio = ours / Sionna vectors per second, measured in this process on identical data "
                 f"(QPSK, i.i.d. Rayleigh, one channel per vector, {rows[0]['threads'] if rows else 1} torch thread(s))")
    return "\n".join(lines)

"""Benchmarks: ratios against a reference run in the same process, plus FLOPs per vector.

* :func:`bench_detectors` -- classical detectors against Sionna's on identical data (each received
  vector has its own channel, the workload Sionna's detectors are built for);
* :func:`bench_training` -- the SDNet training loop against a plain ``nn.Sequential`` loop;
* :func:`bench_training_wesnet` -- the same for DetNet/WeSNet, with the paper-scale projection;
* :func:`bench_neural` -- SDNet's fast path against the plain module, hypernetwork-DeepSIC;
* :func:`bench_bundles` -- any trained bundle against MMSE on frames of its own system.

Ratios, not absolute rates, are the result: the machines are shared and noisy.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing as mp
import time

import torch
from torch import nn

from ..channels import IIDRayleigh
from ..constellation import Constellation
from ..detectors import kbest_detect, linear_detect, load_detector, ml_detect, parse_bundle_entry
from ..detectors.deepsic import HyperDeepSICDetector, ModularHypernetwork, ModuleSpec
from ..detectors.sdnet.fast import SDNetKernel, sdnet_fast_detect
from ..detectors.sdnet.model import SDNet, sdnet_detect
from ..detectors.sdnet.train import draw_batch, make_optimiser, train
from ..snr import complex_noise, noise_variance
from .families import FAMILIES


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


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


def _plain_sdnet(n_conv: int, nt: int = 8, nr: int = 32) -> torch.nn.Sequential:
    """The reference: SDNet written as a plain ``nn.Sequential`` (default NCHW layout)."""
    layers, cin = [], 1
    for i in range(n_conv + 2):
        cout = 1 if i == n_conv + 1 else 8
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.Tanh()]
        cin = cout
    layers += [nn.Flatten(), nn.Linear((2 * nr + 1) * 2 * nt, 2 * nt), nn.Tanh()]
    return nn.Sequential(*layers)


def _training_worker(args) -> float:
    """One single-thread training epoch in a worker process; returns its seconds."""
    depth, samples, batch_size, seed = args
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(seed)
    h = IIDRayleigh(32, 8).sample(samples, g)
    model = SDNet(8, 32, depth)
    opt = make_optimiser(model, 1e-3)
    run = lambda: train(model, opt, h, epochs=1, snr_db=25.0, constellation=Constellation("qpsk"),  # noqa: E731
                        n_pilots=16, batch_size=batch_size, seed=seed)
    run()
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def _parallel_rate(depth: int, samples: int, batch_size: int, workers: int, seed: int) -> float:
    """Aggregate samples/s of ``workers`` single-thread trainings running at once."""
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        times = list(pool.map(_training_worker, [(depth, samples, batch_size, seed + i) for i in range(workers)]))
    return workers * samples / max(times)


def bench_training(n_conv=(12, 8), samples: int = 4000, repeats: int = 2, threads: int = 2,
                   batch_size: int = 500, seed: int = 0, workers: int = 2, epochs: int = 3) -> dict:
    """Training samples/s of :func:`neuralmimo.detectors.sdnet.train.train` (which also draws each epoch's
    frames, LS estimates and ZF inputs) against a plain ``nn.Sequential`` + Adam loop fed with
    precomputed inputs, same model size, batch and data, in this process, ``epochs`` epochs per
    timed run (ours draws the next epoch while one trains). Also projects the paper-scale
    pipeline time (Table III) from the measured rates."""
    torch.set_num_threads(threads)
    depths = (n_conv,) if isinstance(n_conv, int) else tuple(n_conv)
    const = Constellation("qpsk")
    g = torch.Generator().manual_seed(seed)
    h = IIDRayleigh(32, 8).sample(samples, g)
    data = draw_batch(h, 25.0, const, 16, g)
    x_nchw, target = data.inputs.contiguous(), data.target
    rows = []
    for depth in depths:
        torch.manual_seed(seed)
        plain = _plain_sdnet(depth)
        opt = torch.optim.Adam(plain.parameters(), lr=1e-3)

        def plain_epoch():
            for _ in range(epochs):
                perm = torch.randperm(samples)
                for s in range(0, samples, batch_size):
                    b = perm[s:s + batch_size]
                    opt.zero_grad()
                    ((plain(x_nchw[b]) - target[b]) ** 2).mean().backward()
                    opt.step()

        torch.manual_seed(seed)
        ours = SDNet(8, 32, depth)
        opt2 = make_optimiser(ours, 1e-3)

        def ours_epoch():
            train(ours, opt2, h, epochs=epochs, snr_db=25.0, constellation=const, n_pilots=16, batch_size=batch_size,
                  seed=seed)

        # interleaved, best of each: a slow stretch of the machine hits both loops alike
        plain_epoch(), ours_epoch()  # warm-up
        t_plain, t_ours = math.inf, math.inf
        for _ in range(repeats):
            t_plain = min(t_plain, _timed(plain_epoch))
            t_ours = min(t_ours, _timed(ours_epoch))
        row = {"n_conv": depth, "plain_sps": epochs * samples / t_plain, "ours_sps": epochs * samples / t_ours,
               "ratio": t_plain / t_ours}
        if workers > 1:
            row["parallel_sps"] = _parallel_rate(depth, samples, batch_size, workers, seed)
            row["parallel_ratio"] = row["parallel_sps"] / row["plain_sps"]
        rows.append(row)
    rate = {r["n_conv"]: r["ours_sps"] for r in rows}
    plain_rate = {r["n_conv"]: r["plain_sps"] for r in rows}
    out = {"threads": threads, "samples": samples, "batch_size": batch_size, "workers": workers, "rows": rows}
    if 12 in rate and 8 in rate:
        proj = {"ours": paper_scale_hours(rate[12], rate[8]), "plain": paper_scale_hours(plain_rate[12], plain_rate[8])}
        if workers > 1:
            # the pipeline trains the collective model in one process and individual models in parallel
            par = {r["n_conv"]: r["parallel_sps"] for r in rows}
            proj["ours_parallel_individuals"] = paper_scale_hours(rate[12], par[8])
        out["paper_projection_hours"] = proj
    return out


def paper_scale_hours(rate_col: float, rate_ind: float, tasks: int = 50, epochs_col: int = 50, targets: int = 5,
                      schemes: int = 7, epochs_ind: int = 200, pretrain_epochs: int = 50, train_ues: int = 8100) -> float:
    """Training time of the paper-scale pipeline (Table III) at the given samples/s: collective
    50 tasks x 50 epochs at Nconv=12; per target 7 individual models (scratch, transfer, five
    distinct expansion strategies) x 200 epochs at Nconv=8; one transfer pre-training."""
    col = tasks * epochs_col * train_ues / rate_col
    ind = (targets * schemes * epochs_ind + pretrain_epochs) * train_ues / rate_ind
    return (col + ind) / 3600.0


def format_bench_training(r: dict) -> str:
    lines = [f"SDNet training throughput, {r['samples']} samples per epoch, batch {r['batch_size']}, "
             f"{r['threads']} torch threads (best of repeats; ratio = ours / plain loop, same process)",
             f"{'Nconv':>6} {'plain samples/s':>16} {'ours samples/s':>15} {'ratio':>6}"
             + (f" {str(r['workers']) + ' x 1-thread samples/s':>24} {'ratio':>6}" if r.get("workers", 0) > 1 else "")]
    for row in r["rows"]:
        line = f"{row['n_conv']:>6} {row['plain_sps']:>16.0f} {row['ours_sps']:>15.0f} {row['ratio']:>6.2f}"
        if "parallel_sps" in row:
            line += f" {row['parallel_sps']:>24.0f} {row['parallel_ratio']:>6.2f}"
        lines.append(line)
    if "paper_projection_hours" in r:
        p = r["paper_projection_hours"]
        extra = (f", ours with parallel individual models {p['ours_parallel_individuals']:.1f} h"
                 if "ours_parallel_individuals" in p else "")
        lines.append(f"paper-scale pipeline projection (Table III, training only): plain loop {p['plain']:.1f} h, "
                     f"ours {p['ours']:.1f} h{extra}")
    return "\n".join(lines)


def bench_training_wesnet(layers: int = 90, hidden: int = 240, nt: int = 30, nr: int = 60, batch: int = 1000,
                          steps: int = 3, repeats: int = 2, threads: int = 2, seed: int = 0,
                          paper_samples: int = 25000 * 5000) -> dict:
    """DetNet/WeSNet training samples/s (:func:`~neuralmimo.detectors.detnet.train.train_detnet`:
    fresh channels, symbols and noise per batch, the real-valued inputs, ZF for the loss, every
    layer's output in eq. (20)) against a plain ``nn.Sequential`` + Adam loop with the same
    dense FLOPs per layer (``Linear(4K, hidden)``, ReLU, ``Linear(hidden, 4K)``: ``8 K hidden``
    multiply-accumulates, as DetNet's ``5K -> hidden -> K + 2K``) on precomputed inputs, same
    batch, same process. Projects the paper configuration ([WS] Table III: 25,000 x 5,000
    samples, this network) per model from the measured rate."""
    from ..channels import make_channel
    from ..datasets import draw_channel_batch
    from ..detectors.detnet.model import DetNet
    from ..detectors.detnet.train import train_detnet

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = DetNet(nt, layers, hidden, "bpsk", "half-exp")
    k = model.k
    chan, const = make_channel("iid-real", nr, nt), Constellation("bpsk")
    g = torch.Generator().manual_seed(seed)
    ours = lambda: train_detnet(model, lambda s: draw_channel_batch(chan, const, batch, 1, (8.0, 14.0), g,  # noqa: E731
                                                                    convention="detnet"), steps=steps,
                                steps_per_epoch=steps)
    blocks = []
    for _ in range(layers):
        blocks += [nn.Linear(4 * k, hidden), nn.ReLU(), nn.Linear(hidden, 4 * k)]
    plain = nn.Sequential(*blocks)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-3)
    x, target = torch.randn(batch, 4 * k, generator=g), torch.randn(batch, 4 * k, generator=g)

    def plain_run():
        for _ in range(steps):
            opt.zero_grad()
            ((plain(x) - target) ** 2).mean().backward()
            opt.step()

    ours()  # warm-up
    plain_run()
    t_ours, t_plain = _best_time(ours, repeats), _best_time(plain_run, repeats)
    rate = steps * batch / t_ours
    return {"layers": layers, "hidden": hidden, "nt": nt, "nr": nr, "batch": batch, "threads": threads,
            "ours_sps": rate, "plain_sps": steps * batch / t_plain, "ratio": t_plain / t_ours,
            "paper_hours_per_model": paper_samples / rate / 3600.0, "paper_samples": paper_samples}


def format_bench_training_wesnet(r: dict) -> str:
    return "\n".join([
        f"DetNet/WeSNet training throughput: {r['nt']}x{r['nr']} BPSK, L = {r['layers']}, {r['hidden']} hidden units, "
        f"batch {r['batch']}, {r['threads']} torch threads (best of repeats; ratio = plain time / ours, same process)",
        f"plain nn.Sequential (same dense FLOPs) {r['plain_sps']:.0f} samples/s, ours {r['ours_sps']:.0f} samples/s "
        f"(data, real-valued inputs, ZF and all-layer loss included), ratio {r['ratio']:.2f}",
        f"paper configuration ([WS] Table III, {r['paper_samples']:,} samples) at this rate: "
        f"{r['paper_hours_per_model']:.1f} h per model"])


# --------------------------------------------------------------------------- neural detectors
def random_sdnet(nt: int, nr: int, n_conv: int, seed: int = 0):
    """An eval-mode SDNet with non-trivial batch-norm statistics (timing does not need training)."""
    torch.manual_seed(seed)
    m = SDNet(nt, nr, n_conv)
    for bn in m.norms:
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def bench_neural(frames: int = 8, frame_data: int = 1024, repeats: int = 3, threads: int = 1) -> list[dict]:
    """Per-frame inference throughput of the neural detectors, in one process on the same frames:
    the rows of every family's ``neural_bench`` entry (:mod:`neuralmimo.lab.families`, in the
    table's order, one generator for all): :func:`bench_sdnet`, :func:`bench_deepsic`,
    :func:`bench_hypermimo`."""
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(1)
    return [row for fam in FAMILIES if fam.neural_bench
            for row in fam.entry("neural_bench")(frames, frame_data, repeats, g)]


def bench_sdnet(frames: int, frame_data: int, repeats: int, g: torch.Generator, n_conv: int = 8, nt: int = 8,
                nr: int = 32) -> list[dict]:
    """SDNet: the frame-amortised kernel (:mod:`neuralmimo.detectors.sdnet.fast`) against the plain
    ``nn.Module`` (:func:`neuralmimo.detectors.sdnet.model.sdnet_detect`), both including the
    per-frame ZF; the ratio, the FLOPs per vector of each (Table IV counting) and the GFLOP/s each
    achieves."""
    const = Constellation("qpsk")
    h = torch.randn(frames, nr, nt, dtype=torch.complex64, generator=g)
    y = torch.randn(frames, nr, frame_data, dtype=torch.complex64, generator=g)
    model = random_sdnet(nt, nr, n_conv)
    kernel = SDNetKernel(model)
    t_plain = _best_time(lambda: sdnet_detect(model, y, h, const), repeats)
    t_fast = _best_time(lambda: sdnet_fast_detect(kernel, y, h, const), repeats)
    diff = float((sdnet_detect(model, y, h, const) - sdnet_fast_detect(kernel, y, h, const)).abs().max())
    fl = kernel.flops_per_vector()
    n = frames * frame_data
    return [{"model": f"SDNet Nconv={n_conv} {nt}x{nr} QPSK", "reference": "plain nn.Module", "vectors": n,
             "ref_vps": n / t_plain, "vps": n / t_fast, "ratio": t_plain / t_fast,
             "flops_ref": fl["plain"], "flops": fl["fast"], "gflops_ref": fl["plain"] * n / t_plain / 1e9,
             "gflops": fl["fast"] * n / t_fast / 1e9, "max_abs_diff": diff}]


def bench_deepsic(frames: int, frame_data: int, repeats: int, g: torch.Generator, n_rx: int = 12, k_max: int = 12,
                  k: int = 8) -> list[dict]:
    """Hypernetwork-DeepSIC (``N, K_max, K``): modules generated once per frame, all vectors in one
    batched pass; FLOPs per vector ``2 Q K (D 16 + 16 |S|)`` with ``D = N + K - 1``; then the
    complex-baseband one against joint DeepSIC (:func:`_bench_complex_deepsic`)."""
    torch.manual_seed(2)
    spec = ModuleSpec(n_rx)
    hyper = ModularHypernetwork(spec, k_max).eval()
    det = HyperDeepSICDetector.from_model(hyper)
    hd = torch.randn(frames, n_rx, k, generator=g).to(torch.complex64)
    yd = torch.randn(frames, n_rx, frame_data, dtype=torch.complex64, generator=g)
    nv = torch.full((frames,), 0.1)
    t_hyper = _best_time(lambda: det.detect(yd, hd, nv), repeats)
    flops = det.flops_per_vector(frame_data, k)
    n = frames * frame_data
    return [{"model": f"hypernet-DeepSIC N={n_rx} Kmax={k_max} K={k} BPSK", "reference": "-", "vectors": n,
             "ref_vps": None, "vps": n / t_hyper, "ratio": None, "flops_ref": None, "flops": flops,
             "gflops_ref": None, "gflops": flops * n / t_hyper / 1e9, "max_abs_diff": None},
            _bench_complex_deepsic(frames, frame_data, repeats, g)]


def _bench_complex_deepsic(frames: int, frame_data: int, repeats: int, g: torch.Generator, nr: int = 12,
                           k: int = 8) -> dict:
    """The complex-baseband hypernetwork-DeepSIC (random weights, Q = 3) against joint DeepSIC's
    fixed complex-input modules (``[Re y; Im y]``, Q = 3) on the same QPSK frames: the issue's
    runtime budget is 2x joint DeepSIC."""
    from ..detectors.deepsic import ComplexHyperDeepSICDetector, PhaseInvariantHypernetwork, SoftICModuleSpec
    from ..detectors.deepsic.model import deepsic_detect, init_modules, noise_std_per_dim, rx_features

    const = Constellation("qpsk")
    torch.manual_seed(5)
    det = ComplexHyperDeepSICDetector.from_model(PhaseInvariantHypernetwork(SoftICModuleSpec(nr, "qpsk"), k).eval())
    h = torch.randn(frames, nr, k, dtype=torch.complex64, generator=g)
    y = h @ const.symbols(const.random_indices((frames, k, frame_data), g)) + complex_noise((frames, nr, frame_data), 0.1, g)
    nv = torch.full((frames,), 0.1)
    spec = ModuleSpec(nr, "qpsk", False)
    theta = init_modules(k, spec, g)

    def joint():
        feats = rx_features(y, spec, noise_std_per_dim(nv))
        return deepsic_detect(theta.expand(frames, -1, -1), feats, spec, 3)

    t_model = _best_time(lambda: det.detect(y, h, nv), repeats)
    t_joint = _best_time(joint, repeats)
    n = frames * frame_data
    joint_flops = 2 * 3 * k * (spec.n_inputs(k) * spec.hidden + spec.hidden * spec.num_classes)
    flops = det.flops_per_vector(frame_data, k)
    return {"model": f"hypernet-DeepSIC complex N={nr} K={k} QPSK", "reference": "joint DeepSIC",
            "vectors": n, "ref_vps": n / t_joint, "vps": n / t_model, "ratio": t_joint / t_model,
            "flops_ref": joint_flops, "flops": flops, "gflops_ref": joint_flops * n / t_joint / 1e9,
            "gflops": flops * n / t_model / 1e9, "max_abs_diff": None}


def bench_hypermimo(frames: int, frame_data: int, repeats: int, g: torch.Generator, nr: int = 12,
                    nu: int = 6) -> list[dict]:
    """HyperMIMO (T = 5, paper sizes, random weights) against unbiased MMSE on the same frames;
    and its per-frame work (QR + one hypernetwork pass) against MMNet trained for one channel
    (300 Adam steps of 32 vectors, T = 10, batched over 32 channels)."""
    from ..detectors.mmnet import HyperMIMODetector
    from ..detectors.mmnet.model import HyperMIMO, qr_positive
    from ..detectors.mmnet.train import train_mmnet_per_channel

    const = Constellation("qpsk")
    torch.manual_seed(4)
    model = HyperMIMO(nu, 5).eval()
    det = HyperMIMODetector.from_model(model, nr)
    h = torch.randn(frames, nr, nu, dtype=torch.complex64, generator=g)
    y = h @ const.symbols(const.random_indices((frames, nu, frame_data), g)) + complex_noise((frames, nr, frame_data), 0.1, g)
    nv = torch.full((frames,), 0.1)
    t_model = _best_time(lambda: det.detect(y, h, nv), repeats)
    t_mmse = _best_time(lambda: linear_detect(y, h, nv, "mmse", const), repeats)
    n = frames * frame_data
    flops = det.flops_per_vector(frame_data)
    hs = torch.randn(256, nr, nu, dtype=torch.complex64, generator=g)
    nvs = torch.full((256,), 0.1)

    @torch.no_grad()
    def generate():
        model.generate(qr_positive(hs)[1], nvs)

    t_gen = _best_time(generate, repeats) / 256
    t0 = time.perf_counter()
    train_mmnet_per_channel(hs[:32], nvs[:32], const, g, layers=10, steps=300, vectors=32)
    t_train = (time.perf_counter() - t0) / 32
    return [{"model": f"HyperMIMO T=5 {nu}x{nr} QPSK", "reference": "MMSE", "vectors": n, "ref_vps": n / t_mmse,
             "vps": n / t_model, "ratio": t_mmse / t_model, "flops_ref": None, "flops": flops, "gflops_ref": None,
             "gflops": flops * n / t_model / 1e9, "max_abs_diff": None, "generate_s_per_channel": t_gen,
             "mmnet_train_s_per_channel": t_train, "generation_speedup": t_train / t_gen}]


def bench_bundles(entries: list[str], frames: int = 8, frame_data: int = 1024, repeats: int = 3,
                  threads: int = 1) -> list[dict]:
    """Per-frame inference throughput of trained bundles (``PATH[@key=value...]``), each on random
    frames of its own system (``Nr x Nt``, modulation), against unbiased MMSE on the same frames in
    this process; FLOPs per vector from the detector where its family counts them."""
    torch.set_num_threads(threads)
    rows = []
    g = torch.Generator().manual_seed(1)
    for entry in entries:
        path, options = parse_bundle_entry(entry)
        det = load_detector(path)
        det.configure(**options)
        nr, nt = det.nr, det.nt
        const = det.constellation
        h = torch.randn(frames, nr, nt, dtype=torch.complex64, generator=g)
        x = const.symbols(const.random_indices((frames, nt, frame_data), g))
        y = h @ x + complex_noise((frames, nr, frame_data), 0.1, g)
        nv = torch.full((frames,), 0.1)
        t_model = _best_time(lambda: det.detect(y, h, nv), repeats)
        t_mmse = _best_time(lambda: linear_detect(y, h, nv, "mmse", const), repeats)
        n = frames * frame_data
        flops = det.flops_per_vector(frame_data)
        label = path.name + "".join(f"@{k}={v}" for k, v in options.items())
        rows.append({"model": f"{label} ({det.architecture} {nt}x{nr} {const.name})", "reference": "MMSE",
                     "vectors": n, "ref_vps": n / t_mmse, "vps": n / t_model, "ratio": t_mmse / t_model,
                     "flops_ref": None, "flops": flops, "gflops_ref": None,
                     "gflops": None if flops is None else flops * n / t_model / 1e9, "max_abs_diff": None,
                     "sha256": det.sha256, "options": dict(det.option_values)})
    return rows


def format_bench_neural(rows: list[dict]) -> str:
    w = max([40] + [len(r["model"]) for r in rows])
    lines = [f"{'model':<{w}} | {'vectors/s':>11} | {'reference':>15} | {'ref vectors/s':>13} | {'ratio':>8} | "
             f"{'FLOP/vector':>12} | {'ref FLOP/vec':>12} | {'GFLOP/s':>7} | {'ref GFLOP/s':>11}"]
    lines.append("-" * len(lines[0]))

    def opt(v, fmt, width):
        return "-".rjust(width) if v is None else format(v, fmt).rjust(width)

    for r in rows:
        ratio = "-".rjust(8) if r["ratio"] is None else f"{r['ratio']:.3g}x".rjust(8)
        lines.append(f"{r['model']:<{w}} | {r['vps']:>11,.0f} | {r['reference']:>15} | {opt(r['ref_vps'], ',.0f', 13)} | "
                     f"{ratio} | {opt(r['flops'], ',.0f', 12)} | {opt(r['flops_ref'], ',', 12)} | "
                     f"{opt(r['gflops'], '.2f', 7)} | {opt(r['gflops_ref'], '.2f', 11)}")
    for r in rows:
        if r["max_abs_diff"] is not None:
            lines.append(f"{r['model']}: fast path vs plain module, max |difference| {r['max_abs_diff']:.1e}")
        if "generation_speedup" in r:
            lines.append(f"{r['model']}: weights per frame (QR + hypernetwork) {r['generate_s_per_channel'] * 1e6:.1f} us "
                         f"vs MMNet trained per channel (300 Adam steps) {r['mmnet_train_s_per_channel'] * 1e3:.1f} ms: "
                         f"{r['generation_speedup']:,.0f}x")
    lines.append("ratio = vectors/s over the reference's, same frames, same process; FLOP/vector counts 2 x "
                 "multiply-accumulates, per-frame work shared over the frame's vectors")
    return "\n".join(lines)

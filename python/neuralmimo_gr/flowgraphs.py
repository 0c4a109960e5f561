"""Running flowgraphs from Python: compile a ``.grc`` with ``grcc``, run a top block with a
timeout, the loopback demo (flowgraph vs core simulation) and the flowgraph benchmark.

Used by ``neuralmimo loopback``, ``neuralmimo bench flowgraph`` and the tests.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

GRCC_ERROR_MARKERS = ("error", "traceback", "failed", "not connected", "invalid")


def quiet_info_logs() -> None:
    """Raise GNU Radio's default log level to WARN for command-line runs: the scheduler logs
    every enlarged buffer at INFO, which would bury the results (errors still show)."""
    from gnuradio import gr

    gr.logging().set_default_level(gr.log_levels.warn)


def installed_blocks_dir() -> Path:
    """Where CMake installed the GRC block YAML for this Python environment."""
    return Path(sys.prefix) / "share" / "gnuradio" / "grc" / "blocks"


def compile_grc(grc: Path, out_dir: Path, blocks_dir: Path | None = None, timeout_s: float = 120) -> tuple[Path, str]:
    """Compile ``grc`` with ``grcc`` into ``out_dir``; returns (generated .py, grcc output).

    ``grcc`` exits 0 even when a block YAML fails to load or a port is unconnected, so its
    output is checked too: any line with an error marker raises ``RuntimeError``.
    """
    grcc = shutil.which("grcc")
    if grcc is None:
        raise RuntimeError("grcc not found (install the Debian package gnuradio)")
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    paths = [str(blocks_dir or installed_blocks_dir())] + [p for p in env.get("GRC_BLOCKS_PATH", "").split(os.pathsep) if p]
    env["GRC_BLOCKS_PATH"] = os.pathsep.join(paths)
    proc = subprocess.run([grcc, "-o", str(out_dir), str(grc)], env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    output = proc.stdout + proc.stderr
    bad = [line for line in output.splitlines()
           if any(m in line.lower() for m in GRCC_ERROR_MARKERS)]
    generated = out_dir / (_flowgraph_id(grc) + ".py")
    if proc.returncode != 0 or bad or not generated.exists():
        raise RuntimeError(f"grcc failed on {grc} (exit {proc.returncode}):\n" + ("\n".join(bad) or output))
    return generated, output


def _flowgraph_id(grc: Path) -> str:
    import yaml

    return yaml.safe_load(Path(grc).read_text())["options"]["parameters"]["id"]


def load_top_block_class(py: Path):
    """The top block class of a generated flowgraph module (class name = flowgraph id)."""
    spec = importlib.util.spec_from_file_location(py.stem, py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, py.stem)


def run_flowgraph(tb, timeout_s: float) -> float:
    """``tb.start(); tb.wait()`` with a timeout; returns the wall time in seconds.

    In GNU Radio 3.10 an exception in a Python ``work()`` kills that block's thread and
    ``tb.wait()`` never returns; a timeout turns that into a ``TimeoutError``.
    """
    done = threading.Event()
    t0 = time.perf_counter()
    tb.start()
    threading.Thread(target=lambda: (tb.wait(), done.set()), daemon=True).start()
    if not done.wait(timeout_s):
        threading.Thread(target=tb.stop, daemon=True).start()
        raise TimeoutError(f"flowgraph did not finish within {timeout_s} s")
    return time.perf_counter() - t0


# ----------------------------------------------------------------------------- loopback demo
def sim_config_of(tb, snrs: list[float], frames: int, seed: int):
    """The core :class:`SimConfig` with the settings of a loopback top block (its ``src``,
    ``chan`` and ``est`` blocks): the same channel, sizes, modulation and pilots."""
    from neuralmimo.sim import SimConfig

    lay = tb.est.layout
    return SimConfig(channel=tb.chan.model_name, channel_kwargs=tb.chan.model_args, nt=lay.nt, nr=tb.est.nr,
                     modulation=tb.src.constellation.name, snr_db=list(snrs), pilots=lay.n_pilots,
                     frame_data=lay.n_data, detectors=["zf", "mmse"], symbols=frames * lay.nt * lay.n_data, seed=seed)


def loopback_demo(grc: Path, snrs: list[float], frames: int, seed: int, out_dir: Path, timeout_s: float = 600,
                  progress: bool = True) -> list[dict]:
    """Run the loopback flowgraph at each SNR and the core simulation with the same settings
    (read from the flowgraph's own blocks); returns one record per (SNR, detector)."""
    from neuralmimo.sim import simulate

    quiet_info_logs()
    cls = load_top_block_class(compile_grc(grc, out_dir / "generated")[0])
    records, cfg = [], None
    iterator = snrs
    if progress:
        from tqdm import tqdm
        iterator = tqdm(snrs, desc="loopback flowgraph", unit="snr")
    for snr in iterator:
        tb = cls(snr_db=snr, n_frames=frames, seed=seed)
        probes = {"zf": tb.probe_zf, "mmse": tb.probe_mmse}
        for p in probes.values():
            p.report_on_stop = False
        wall = run_flowgraph(tb, timeout_s)
        cfg = sim_config_of(tb, snrs, frames, seed)
        for det, p in probes.items():
            records.append({"snr_db": snr, "detector": det, "source": "flowgraph", "ser": p.ser(),
                            "ci": list(p.ser_interval()), "n_symbols": p.symbols(), "frames": p.frames(),
                            "wall_s": wall})
    for r in simulate(cfg, progress=progress):
        records.append({"snr_db": r["snr_db"], "detector": r["detector"], "source": "core sim", "ser": r["ser"],
                        "ci": r["ci"], "n_symbols": r["n_symbols"]})
    for r in records:
        r.update(channel=cfg.channel, nt=cfg.nt, nr=cfg.nr, modulation=cfg.modulation, pilots=cfg.pilots,
                 frame_data=cfg.frame_data, snr_convention=cfg.snr_convention)
    return records


def format_loopback(records: list[dict]) -> str:
    """SER table: flowgraph next to the core simulation for each detector and SNR."""
    by = {(r["snr_db"], r["detector"], r["source"]): r for r in records}
    snrs = list(dict.fromkeys(r["snr_db"] for r in records))
    r0 = records[0]
    lines = [f"loopback_linear: {r0['channel']} {r0['nt']}x{r0['nr']} (Nt x Nr) {r0['modulation']}, "
             f"LS from Np={r0['pilots']}, Nd={r0['frame_data']} data vectors per frame",
             f"{'SNR [dB]':>9} | {'ZF flowgraph':>22} | {'ZF core sim':>22} | {'MMSE flowgraph':>22} | {'MMSE core sim':>22} | agree"]
    lines.append("-" * len(lines[1]))
    for s in snrs:
        cells, agree = [], True
        for det in ("zf", "mmse"):
            a, b = by[(s, det, "flowgraph")], by[(s, det, "core sim")]
            for r in (a, b):
                half = (r["ci"][1] - r["ci"][0]) / 2
                cells.append(f"{r['ser']:.3e} ±{half:.1e}".rjust(22))
            agree &= a["ci"][0] <= b["ci"][1] and b["ci"][0] <= a["ci"][1]
        lines.append(f"{s:>9.1f} | " + " | ".join(cells) + f" | {'yes' if agree else 'NO'}")
    lines.append("SER per complex symbol, project SNR convention; ± is the 95 % half-width (Wilson or over "
                 "frames, whichever is wider); agree = the intervals overlap")
    return "\n".join(lines)


def plot_loopback(records: list[dict], path: Path) -> None:
    """SER vs SNR of the flowgraph and the core simulation, one curve per (detector, source)."""
    from neuralmimo.sim import plot_ser

    curves = [{**r, "detector": f"{r['detector']} {r['source']}"} for r in records]
    plot_ser(curves, path, title="Loopback flowgraph vs core simulation")


# ----------------------------------------------------------------------------- benchmark
def bench_flowgraph(nt: int = 8, nr: int = 32, n_pilots: int = 16, n_data: int = 1024, frames: int = 256,
                    snr_db: float = 10.0, repeats: int = 2, timeout_s: float = 600) -> dict:
    """Data vectors/s of frame source -> channel -> LS -> MMSE -> null sinks, and of the same core
    kernels called frame by frame in this process (best of ``repeats``). Both use one torch thread
    per thread of work (the blocks' default, ``_common.TORCH_THREADS_PER_BLOCK``)."""
    from gnuradio import blocks, gr

    from neuralmimo.channels import BlockFadingProcess, make_channel, transmit
    from neuralmimo.constellation import Constellation
    from neuralmimo.detectors import linear_detect
    from neuralmimo.estimation import LSChannelEstimator, estimate_problems
    from neuralmimo.frames import FrameLayout, frame_data_indices
    from neuralmimo.snr import noise_variance

    from . import linear_detector, ls_channel_estimator, mimo_channel, mimo_frame_source

    quiet_info_logs()
    from ._common import TORCH_THREADS_PER_BLOCK

    threads = TORCH_THREADS_PER_BLOCK
    torch.set_num_threads(threads)
    vectors = frames * n_data

    def run_fg() -> float:
        tb = gr.top_block()
        src = mimo_frame_source(nt, n_pilots, n_data, "qpsk", False, 0, frames)
        chan = mimo_channel(nt, nr, "iid", {}, snr_db, n_pilots + n_data, 0, 0.0, 1)
        est = ls_channel_estimator(nr, nt, n_pilots, n_data)
        det = linear_detector(nr, nt, "qpsk", "mmse")
        for k in range(nt):
            tb.connect((src, k), (chan, k))
            tb.connect((det, k), blocks.null_sink(gr.sizeof_gr_complex))
        for r in range(nr):
            tb.connect((chan, r), (est, r))
            tb.connect((est, r), (det, r))
        return run_flowgraph(tb, timeout_s)

    def run_kernels() -> float:
        const, lay = Constellation("qpsk"), FrameLayout(nt, n_pilots, n_data)
        model = make_channel("iid", nr, nt)
        process, g = BlockFadingProcess(model, 1), torch.Generator().manual_seed(2)
        nv = noise_variance(snr_db, "project", channel_energy=model.mean_energy, nr=nr, nt=nt)
        estimate = LSChannelEstimator(lay.pilots())
        t0 = time.perf_counter()
        for f in range(frames):
            frame = lay.assemble(const.symbols(frame_data_indices(const, lay, 0, [f])))[0]
            y = transmit(process.next(), frame, nv, g)
            y_p, y_d = lay.split(y[None])
            h, nv_hat = estimate(y_p)
            estimate_problems(h)
            linear_detect(y_d[0], h[0], float(nv_hat[0]), "mmse", const)
        return time.perf_counter() - t0

    t_fg = min(run_fg() for _ in range(repeats))
    t_k = min(run_kernels() for _ in range(repeats))
    return {"config": f"{nt}x{nr}", "frame": f"{n_pilots}+{n_data}", "frames": frames, "vectors": vectors,
            "threads": threads, "flowgraph_vps": vectors / t_fg, "kernel_vps": vectors / t_k,
            "ratio": (vectors / t_fg) / (vectors / t_k), "flowgraph_s": t_fg, "kernel_s": t_k,
            "cpu_count": os.cpu_count()}


def format_bench_flowgraph(r: dict) -> str:
    return (f"flowgraph bench {r['config']} (Nt x Nr), frames of {r['frame']} vectors, {r['frames']} frames, "
            f"{r['threads']} torch thread(s)\n"
            f"  flowgraph (source -> channel -> LS -> MMSE): {r['flowgraph_vps']:>12,.0f} vectors/s ({r['flowgraph_s']:.2f} s)\n"
            f"  core kernels, frame by frame, same process: {r['kernel_vps']:>12,.0f} vectors/s ({r['kernel_s']:.2f} s)\n"
            f"  ratio flowgraph / kernels: {r['ratio']:.2f} (goal >= 0.5)")



# ----------------------------------------------------------------------------- neural loopback demo
def _probe_record(probe, detector: str, scenario: str, wall: float) -> dict:
    return {"scenario": scenario, "detector": detector, "source": "flowgraph", "ser": probe.ser(),
            "ci": list(probe.ser_interval()), "n_symbols": probe.symbols(), "frames": probe.frames(), "wall_s": wall}


def _run_loopback(grc: Path, out_dir: Path, timeout_s: float, **params):
    cls = load_top_block_class(compile_grc(grc, out_dir / "generated")[0])
    tb = cls(**params)
    for p in (tb.probe_zf, tb.probe_mmse, tb.probe_nn):
        p.report_on_stop = False
    wall = run_flowgraph(tb, timeout_s)
    return tb, wall


def neural_loopback_demo(examples: Path, models: Path, out_dir: Path, sed_frames: int = 100, umi_frames: int = 1000,
                         timeout_s: float = 900, progress: bool = True) -> list[dict]:
    """``loopback_neural.grc`` (hypernetwork-DeepSIC, 12x8 BPSK, DeepSIC synthetic channel at a
    nominal 10 dB) and ``loopback_sdnet.grc`` (SDNet-learngene, 32x8 QPSK, UMi task 50 at 25 dB),
    each detector's flowgraph SER next to the lab evaluation of the same model and settings:
    ``run_transmission`` of the DeepSIC pipeline on the same channel sequence, and the test SER
    the learngene pipeline recorded in the SDNet bundle's manifest."""
    from neuralmimo.bundle import load_bundle
    from neuralmimo.channels import DeepSICSynthetic
    from neuralmimo.deepsic import load_hypernetwork
    from neuralmimo.deepsic_pipeline import DeepSICConfig, Receivers, ScenarioConfig, run_transmission
    from neuralmimo.metrics import wilson_interval
    from neuralmimo.snr import convert_snr_db

    quiet_info_logs()
    records = []
    # hypernetwork-DeepSIC on the synthetic channel
    hyper_path = models / "hypernet-deepsic-sed-n12"
    nt, nr, n_pilots, n_data, snr_deepsic = 8, 12, 800, 1520, 10.0
    sed = DeepSICSynthetic(nr, nt, profile_amplitude_db=4.0, seed=0)
    snr_project = convert_snr_db(snr_deepsic, "deepsic", "project", channel_energy=sed.mean_energy, nr=nr, nt=nt)
    if progress:
        print(f"loopback_neural: {sed_frames} frames, hypernetwork-DeepSIC {hyper_path} ...", flush=True)
    tb, wall = _run_loopback(examples / "loopback_neural.grc", out_dir, timeout_s, snr_db=snr_project,
                             n_frames=sed_frames, seed=1, model=str(hyper_path))
    scen = "SED 12x8 BPSK, 10 dB (deepsic)"
    for det, p in (("zf", tb.probe_zf), ("mmse", tb.probe_mmse), ("hypernetwork-DeepSIC", tb.probe_nn)):
        records.append(_probe_record(p, det, scen, wall))
    hyper, q, _ = load_hypernetwork(hyper_path)
    cfg = DeepSICConfig.from_dict({"receiver": {"n_rx": nr, "k_max": hyper.k_max}})
    sc = ScenarioConfig(name="loopback", channel="sed", channel_args={"profile_amplitude_db": 4.0}, k_min=nt, k_max=nt,
                        snr_db=snr_deepsic, n_pilots=n_pilots, n_info=n_data, blocks=sed_frames, seed=0)
    lab = run_transmission(cfg, sc, Receivers(hyper, {}, hyper.spec, q), snr_deepsic, n_pilots,
                           methods=("zf", "mmse", "hypernetwork"))
    n_sym = sed_frames * n_data * nt
    for det, m in (("zf", "zf"), ("mmse", "mmse"), ("hypernetwork-DeepSIC", "hypernetwork")):
        ser = sum(lab["ser"][m]) / len(lab["ser"][m])
        errors = int(round(ser * n_sym))
        records.append({"scenario": scen, "detector": det, "source": "lab", "ser": ser,
                        "ci": list(wilson_interval(errors, n_sym)), "n_symbols": n_sym})
    # SDNet-learngene on UMi task 50
    sdnet_path = models / "sdnet-learngene-umi50"
    if progress:
        print(f"loopback_sdnet: {umi_frames} frames, SDNet {sdnet_path} ...", flush=True)
    tb, wall = _run_loopback(examples / "loopback_sdnet.grc", out_dir, timeout_s, snr_db=25.0, n_frames=umi_frames,
                             seed=1, model=str(sdnet_path))
    scen = "UMi task 50 32x8 QPSK, 25 dB"
    for det, p in (("zf", tb.probe_zf), ("mmse", tb.probe_mmse), ("SDNet-learngene", tb.probe_nn)):
        records.append(_probe_record(p, det, scen, wall))
    test = load_bundle(sdnet_path).manifest["training"]["test"]
    for det, key in (("zf", "zf"), ("mmse", "mmse"), ("SDNet-learngene", "sdnet")):
        n_sym = int(test["symbols"])
        errors = int(round(test[key] * n_sym))
        records.append({"scenario": scen, "detector": det, "source": "lab", "ser": test[key],
                        "ci": list(wilson_interval(errors, n_sym)), "n_symbols": n_sym})
    return records


def format_neural_demo(records: list[dict]) -> str:
    by = {(r["scenario"], r["detector"], r["source"]): r for r in records}
    keys = list(dict.fromkeys((r["scenario"], r["detector"]) for r in records))
    lines = [f"{'loopback':<32} | {'detector':<21} | {'flowgraph SER':>21} | {'lab SER (same model)':>21} | agree",
             "-" * 110]
    for scen, det in keys:
        a, b = by[(scen, det, "flowgraph")], by[(scen, det, "lab")]
        cells = [f"{r['ser']:.3e} ±{(r['ci'][1] - r['ci'][0]) / 2:.1e}".rjust(21) for r in (a, b)]
        agree = a["ci"][0] <= b["ci"][1] and b["ci"][0] <= a["ci"][1]
        lines.append(f"{scen:<32} | {det:<21} | {cells[0]} | {cells[1]} | {'yes' if agree else 'NO'}")
    lines.append("SER per complex symbol; ± is the 95 % half-width (flowgraph: Wilson or over frames; lab: Wilson). "
                 "Lab: hypernetwork-DeepSIC through the DeepSIC pipeline on the same channel sequence (random BPSK "
                 "pilots instead of the flowgraph's DFT pilots); SDNet: the test SER in the bundle's manifest "
                 "(learngene pipeline, 1,000 test UEs x 50 vectors).")
    return "\n".join(lines)

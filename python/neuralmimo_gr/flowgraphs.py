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


# ----------------------------------------------------------------------------- neural block benchmark / soak
def _frame_stream(nr: int, nt: int, frames: int, frame_data: int, seed: int = 0, real_channel: bool = False):
    """Random frames as the estimator would output them: ``y (frames, Nr, Nd)``, ``h``, ``nv`` and
    the tag list (frame_start, csi, noise_var at each frame's first vector)."""
    import pmt

    from ._common import csi_to_pmt

    g = torch.Generator().manual_seed(seed)
    h = torch.randn(frames, nr, nt, generator=g).to(torch.complex64) if real_channel else \
        torch.randn(frames, nr, nt, dtype=torch.complex64, generator=g)
    y = torch.randn(frames, nr, frame_data, dtype=torch.complex64, generator=g)
    nv = 0.05 + 0.1 * torch.rand(frames, generator=g)
    tags = [gr_tag(f * frame_data, key, value) for f in range(frames)
            for key, value in (("frame_start", pmt.from_long(f)), ("csi", csi_to_pmt(h[f])),
                               ("noise_var", pmt.from_double(float(nv[f]))))]
    return y, h, nv, tags


def gr_tag(offset: int, key: str, value):
    """A stream tag ``(offset, key, pmt value)``."""
    import pmt
    from gnuradio import gr

    t = gr.tag_t()
    t.offset, t.key, t.value, t.srcid = int(offset), pmt.intern(key), value, pmt.PMT_F
    return t


def _neural_fg(det, y, tags, repeat: bool = False, n_items: int | None = None):
    """vector sources (one per antenna, tags on 0) [-> head] -> neural detector -> null sinks."""
    from gnuradio import blocks, gr

    tb = gr.top_block()
    streams = y.transpose(0, 1).reshape(y.shape[1], -1).numpy()
    keep = [det]
    for r, row in enumerate(streams):
        src = blocks.vector_source_c(row.tolist(), repeat, 1, tags if r == 0 else [])
        keep.append(src)
        if n_items is not None:
            head = blocks.head(gr.sizeof_gr_complex, int(n_items))
            keep.append(head)
            tb.connect(src, head, (det, r))
        else:
            tb.connect(src, (det, r))
    tb._keep = keep
    return tb


def bench_neural_flowgraph(frames: int = 64, frame_data: int = 1024, repeats: int = 2, timeout_s: float = 600) -> list[dict]:
    """The neural detector block in a flowgraph (vector sources with the estimator's tags ->
    block -> null sinks) against its kernel called frame by frame in this process, for SDNet
    (8x32 QPSK, Nconv = 8) and hypernetwork-DeepSIC (12x8 BPSK, K_max = 12). Random weights."""
    import tempfile

    from gnuradio import blocks, gr

    from neuralmimo.bench import _random_sdnet
    from neuralmimo.deepsic import ModularHypernetwork, ModuleSpec, save_hypernetwork
    from neuralmimo.neural import SystemSpec, load_detector
    from neuralmimo.sdnet import save_sdnet

    from . import neural_detector
    from ._common import TORCH_THREADS_PER_BLOCK

    quiet_info_logs()
    torch.set_num_threads(TORCH_THREADS_PER_BLOCK)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sd = save_sdnet(_random_sdnet(8, 32, 8), Path(tmp) / "sdnet", system={"nt": 8, "nr": 32, "modulation": "qpsk"})
        torch.manual_seed(3)
        hp = save_hypernetwork(ModularHypernetwork(ModuleSpec(12), 12), Path(tmp) / "hyper", iterations=3,
                               system={"n_rx": 12, "k_max": 12, "modulation": "bpsk"})
        for name, path, (nr, nt, mod), real in (("SDNet 8x32 QPSK", sd, (32, 8, "qpsk"), False),
                                                ("hypernet-DeepSIC 12x8 BPSK", hp, (12, 8, "bpsk"), True)):
            y, h, nv, tags = _frame_stream(nr, nt, frames, frame_data, real_channel=real)
            kernel = load_detector(path, SystemSpec(nr, nt, mod))

            def run_fg():
                det = neural_detector(nr, nt, mod, str(path))
                det.wait_idle()
                tb = _neural_fg(det, y, tags)
                for k in range(nt):
                    snk = blocks.null_sink(gr.sizeof_gr_complex)
                    tb._keep.append(snk)
                    tb.connect((det, k), snk)
                return run_flowgraph(tb, timeout_s)

            def run_kernel():
                t0 = time.perf_counter()
                for f in range(frames):
                    kernel.detect(y[f:f + 1], h[f:f + 1], nv[f:f + 1])
                return time.perf_counter() - t0

            t_fg = min(run_fg() for _ in range(repeats))
            t_k = min(run_kernel() for _ in range(repeats))
            n = frames * frame_data
            rows.append({"model": name, "vectors": n, "flowgraph_vps": n / t_fg, "kernel_vps": n / t_k,
                         "ratio": t_k / t_fg})
    return rows


def format_bench_neural_flowgraph(rows: list[dict]) -> str:
    lines = [f"{'neural detector block':<28} | {'flowgraph vectors/s':>19} | {'kernel vectors/s':>16} | flowgraph / kernel"]
    for r in rows:
        lines.append(f"{r['model']:<28} | {r['flowgraph_vps']:>19,.0f} | {r['kernel_vps']:>16,.0f} | {r['ratio']:.2f}")
    lines.append("flowgraph: vector sources with the estimator's tags -> neural_detector -> null sinks (includes the "
                 "sources' own cost); kernel: the same detector called frame by frame in this process")
    return "\n".join(lines)


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _frame_checker(frame_data: int, frames_per_cycle: int, warm_items: int):
    """A sink that counts items and checks that frame_start tags arrive exactly every
    ``frame_data`` items with consecutive numbers (mod the source's cycle), and model tags only at
    frame starts; it samples the process RSS once ``warm_items`` have passed."""
    import numpy as np
    import pmt
    from gnuradio import gr

    class frame_checker(gr.sync_block):
        def __init__(self):
            gr.sync_block.__init__(self, name="frame_checker", in_sig=[np.complex64], out_sig=[])
            self.items = 0
            self.frames = 0
            self.lost = 0
            self.duplicated = 0
            self.misplaced = 0
            self.model_tags = 0
            self.model_tags_off_boundary = 0
            self.nonfinite = 0
            self.rss_warm = None
            self._last = None  # (offset, number)

        def work(self, input_items, output_items):
            n = len(input_items[0])
            r0 = self.nitems_read(0)
            for t in self.get_tags_in_window(0, 0, n):
                key = pmt.symbol_to_string(t.key)
                if key == "frame_start":
                    num = pmt.to_long(t.value)
                    if self._last is not None:
                        step = (t.offset - self._last[0]) // frame_data
                        if t.offset - self._last[0] != frame_data or num != (self._last[1] + 1) % frames_per_cycle:
                            if step > 1:
                                self.lost += step - 1
                            elif step < 1:
                                self.duplicated += 1
                            else:
                                self.misplaced += 1
                    self._last = (t.offset, num)
                    self.frames += 1
                elif key == "model":
                    self.model_tags += 1
                    if t.offset % frame_data:
                        self.model_tags_off_boundary += 1
            if not np.isfinite(input_items[0]).all():
                self.nonfinite += 1
            self.items = r0 + n
            if self.rss_warm is None and self.items >= warm_items:
                self.rss_warm = _rss_bytes()
            return n

    return frame_checker()


def soak_neural(models: Path, vectors: int = 10_000_000, swaps: int = 100, interval_s: float = 0.1,
                frames_per_cycle: int = 64, frame_data: int = 1024, timeout_s: float = 3600,
                progress: bool = True) -> dict:
    """Stream ``vectors`` data vectors (12x8 BPSK frames with the estimator's tags, cycled)
    through the neural detector while a thread requests models every ``interval_s``: the two
    shipped hypernetwork-DeepSIC bundles alternately (valid), and every third request an invalid
    one (a copy with one flipped weight byte, the 32x8 SDNet bundle, a missing path, a pickle
    renamed ``weights.safetensors``), until ``swaps`` valid swaps have landed.

    Reports vectors in/out, frames lost/duplicated/misplaced (from the passed-through
    ``frame_start`` tags), swaps applied and whether each landed on a frame boundary, refusals,
    and the RSS growth from the first 10 % of the stream to the end."""
    import json as _json
    import pickle  # only pickle.dumps, to craft the refused "pickle renamed .safetensors" bundle
    import shutil
    import tempfile

    from gnuradio import blocks, gr

    from neuralmimo.bundle import MANIFEST, WEIGHTS, file_sha256

    from . import neural_detector

    quiet_info_logs()
    nr, nt = 12, 8
    valid = [models / "hypernet-deepsic-sed-n12", models / "hypernet-deepsic-tv-n12"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        flipped = tmp / "flipped"
        shutil.copytree(valid[0], flipped)
        raw = bytearray((flipped / WEIGHTS).read_bytes())
        raw[-3] ^= 0xFF
        (flipped / WEIGHTS).write_bytes(bytes(raw))
        pickled = tmp / "pickled"
        shutil.copytree(valid[0], pickled)
        (pickled / WEIGHTS).write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
        m = _json.loads((pickled / MANIFEST).read_text())
        m["weights_sha256"] = file_sha256(pickled / WEIGHTS)
        (pickled / MANIFEST).write_text(_json.dumps(m))
        invalid = [flipped, models / "sdnet-learngene-umi50", tmp / "missing", pickled]

        y, h, nv, tags = _frame_stream(nr, nt, frames_per_cycle, frame_data, real_channel=True)
        n_frames = max(1, -(-vectors // frame_data))  # whole frames, at least `vectors`
        total = n_frames * frame_data
        det = neural_detector(nr, nt, "bpsk", str(valid[0]))
        det.wait_idle()
        tb = _neural_fg(det, y, tags, repeat=True, n_items=total)
        checker = _frame_checker(frame_data, frames_per_cycle, total // 10)
        tb.connect((det, 0), checker)
        for k in range(1, nt):
            snk = blocks.null_sink(gr.sizeof_gr_complex)
            tb._keep.append(snk)
            tb.connect((det, k), snk)
        tb._keep.append(checker)
        done = threading.Event()
        requests = {"valid": 0, "invalid": 0}

        def swapper():
            i = 0
            while not done.is_set() and len(det.swaps) < swaps + 1:  # +1: the initial model
                if i % 3 == 2:
                    det.set_model(str(invalid[(i // 3) % len(invalid)]))
                    requests["invalid"] += 1
                else:
                    det.set_model(str(valid[(requests["valid"] + 1) % 2]))  # alternate, starting with the other
                    requests["valid"] += 1
                i += 1
                done.wait(interval_s)

        rss_start = _rss_bytes()
        th = threading.Thread(target=swapper, daemon=True)
        th.start()
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="vec", unit_scale=True, desc="soak")
            stop_bar = threading.Event()

            def poll():
                while not stop_bar.wait(0.5):
                    bar.n = checker.items
                    bar.set_postfix(swaps=len(det.swaps) - 1, refused=len(det.refusals))
                    bar.refresh()

            threading.Thread(target=poll, daemon=True).start()
        wall = run_flowgraph(tb, timeout_s)
        done.set()
        th.join()
        if bar is not None:
            stop_bar.set()
            bar.n = checker.items
            bar.close()
        det.wait_idle()
        rss_end = _rss_bytes()
        det.close()
    warm = checker.rss_warm or rss_start
    applied = det.swaps[1:]
    return {"vectors_in": total, "vectors_out": checker.items, "frames": checker.frames, "frames_expected": n_frames,
            "lost": checker.lost + (n_frames - checker.frames), "duplicated": checker.duplicated,
            "misplaced": checker.misplaced, "nonfinite_buffers": checker.nonfinite,
            "swaps_requested_valid": requests["valid"], "swaps_applied": len(applied),
            "swaps_off_frame_boundary": sum(1 for s in applied if s["offset"] % frame_data),
            "model_tags_off_boundary": checker.model_tags_off_boundary,
            "invalid_requested": requests["invalid"], "refusals": len(det.refusals),
            "refusal_kinds": sorted({r["reason"].split(": ", 1)[-1][:60] for r in det.refusals}),
            "rss_start_mb": rss_start / 2**20, "rss_warm_mb": warm / 2**20, "rss_end_mb": rss_end / 2**20,
            "rss_growth_pct": 100.0 * (rss_end - warm) / warm, "wall_s": wall, "vectors_per_s": total / wall}


def format_soak(r: dict) -> str:
    ok = r["vectors_in"] == r["vectors_out"] and r["lost"] == 0 and r["duplicated"] == 0 and r["misplaced"] == 0
    lines = [f"soak: {r['vectors_in']:,} vectors in, {r['vectors_out']:,} out, {r['frames']:,} frames "
             f"({r['vectors_per_s']:,.0f} vectors/s, {r['wall_s']:.0f} s)",
             f"  lost frames {r['lost']}, duplicated {r['duplicated']}, misplaced {r['misplaced']} -> "
             f"{'OK' if ok else 'FAILED'}",
             f"  swaps applied {r['swaps_applied']} (requested {r['swaps_requested_valid']}), off a frame boundary: "
             f"{r['swaps_off_frame_boundary']}",
             f"  invalid requests {r['invalid_requested']}, refused {r['refusals']}:",
             *[f"    - ...{k}" for k in r["refusal_kinds"]],
             f"  RSS {r['rss_warm_mb']:.0f} MB after 10 % -> {r['rss_end_mb']:.0f} MB at the end: growth "
             f"{r['rss_growth_pct']:+.1f} % (goal < 5 %)"]
    return "\n".join(lines)

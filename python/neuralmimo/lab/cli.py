"""The ``neuralmimo`` command line: argument parsing only; every command delegates to a lab
module (simulation, pipelines, benchmarks) or to the GNU Radio side (flowgraph commands, rx
environment). Errors are one line on stderr and a non-zero exit code, never a traceback."""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path

import yaml

from ..bundle import BundleError
from ..channels import ChannelSpec, describe_channels
from ..channels.impairments import PARAMS as IMPAIRMENT_PARAMS
from ..constellation import MODULATIONS
from ..params import safe_name
from ..snr import CONVENTIONS
from .families import FAMILIES, by_pipeline
from .families import NAMES as FAMILY_NAMES


def parse_snr_range(text: str) -> list[float]:
    """``"0:2:20"`` -> 0, 2, ..., 20 (inclusive); ``"5,10,15"`` -> a list; ``"7"`` -> [7]. An empty
    sweep, a start above the stop and non-finite values are refused."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3 or not parts[1] > 0:
                raise argparse.ArgumentTypeError(f"SNR range must be start:step:stop with step > 0, got {text!r}")
            start, step, stop = parts
            if not all(math.isfinite(v) for v in parts) or start > stop:
                raise argparse.ArgumentTypeError(f"SNR range {text!r} is empty (start:step:stop with start <= stop)")
            n = int(round((stop - start) / step))
            values = [round(start + i * step, 10) for i in range(n + 1) if start + i * step <= stop + 1e-9]
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"SNR points must be numbers, start:step:stop or a comma list, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"SNR points must be finite numbers and at least one, got {text!r}")
    return values


def positive_int(text) -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {v}")
    return v


def non_negative_int(text) -> int:
    try:
        v = int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {v}")
    return v


def finite_float(text) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def non_negative_float(text) -> float:
    v = finite_float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def positive_number(text) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


def bundle_name(text) -> str:
    """argparse type of a folder name a command creates inside its output folder (no ``/``, no ``..``)."""
    try:
        return safe_name(text, "--name")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def writable_file(path: Path) -> Path:
    """``path``'s folder exists (or is created) and a file can be created there; checked before a
    long run. Tried by creating it (permission bits say nothing to root, nor about /proc or a
    read-only mount); a file that was not there before is removed again."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        existed = path.exists()
        with open(path, "ab"):
            pass
        if not existed:
            path.unlink()
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def writable_dir(path: Path) -> Path:
    """``path`` exists (or is created) and a file can be created in it (tried, as above)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
    except OSError as e:
        raise OSError(f"cannot write into {path}: {e.strerror or e}") from None
    return path


def channel_spec(value) -> ChannelSpec:
    """argparse type of ``--channel``: a model name or a ``{name, args}`` mapping as YAML/JSON text."""
    try:
        return ChannelSpec.parse(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _gr(module: str):
    """An app of the GNU Radio side (``gnuradio.neuralmimo.apps``: ``harness``, ``loopback``,
    ``stress``, ``adapt_demo``), imported only by the commands that run flowgraphs (rx environment)."""
    import importlib

    try:
        return importlib.import_module(f"gnuradio.neuralmimo.apps.{module}")
    except ImportError as e:
        raise RuntimeError(f"this command needs GNU Radio and gr-neuralmimo (the rx environment, "
                           f".venv/rx/bin/neuralmimo): {e}") from e


def _write_json(path: Path | None, obj) -> None:
    if path is not None:
        path.write_text(json.dumps(obj, indent=1))


def _check_outputs(a) -> None:
    """Every output a command will write is writable, before it starts (not after a long run)."""
    for name in ("json", "plot"):
        value = getattr(a, name, None)
        if isinstance(value, Path):
            writable_file(value)
    for name in ("out",):
        value = getattr(a, name, None)
        if isinstance(value, Path):
            writable_dir(value)


# ----------------------------------------------------------------------------------------- sim
def _add_sim(sub):
    from .sim import CLASSICAL

    p = sub.add_parser("sim", help="SER/BER vs SNR of classical detectors and trained bundles on the same frames",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Monte-Carlo sweep of the MIMO receiver. Each frame has its own channel "
                                   "realisation: Np orthogonal pilots, then --frame-data data vectors. SER is per "
                                   "complex symbol, BER per bit, both with 95 % intervals (SER: Wilson or over "
                                   "frames, whichever is wider).\n\nchannel models:\n" + describe_channels())
    p.add_argument("--channel", type=channel_spec, default=ChannelSpec("iid"),
                   help="channel model: a name, or '{name: NAME, args: {...}}' (YAML/JSON), e.g. "
                        "'{name: kronecker, args: {rho_rx: 0.7, rho_tx: 0.3}}' or '{name: umi-task, args: "
                        "{task_id: 4}}'; models and their arguments are listed below (default iid)")
    p.add_argument("--nt", type=positive_int, default=4, help="transmit streams / users (default 4)")
    p.add_argument("--nr", type=positive_int, default=8, help="receive antennas (default 8)")
    p.add_argument("--modulation", choices=MODULATIONS, default="qpsk", help="Gray constellation (default qpsk)")
    p.add_argument("--snr", type=parse_snr_range, default=parse_snr_range("0:2:20"),
                   help="SNR points in dB: start:step:stop or a comma list (default 0:2:20)")
    p.add_argument("--snr-convention", choices=CONVENTIONS, default="project",
                   help="project: E||Hx||^2/E||n||^2; deepsic: 1/noise variance per real dimension with "
                        "unit-gain diagonal; detnet: mean column energy / per-dimension noise; hypermimo: 1/noise "
                        "variance per complex dimension with unit-gain users, the per-user SNR (default project)")
    csi = p.add_mutually_exclusive_group()
    csi.add_argument("--pilots", type=positive_int, default=16, help="LS estimation from N orthogonal pilots, N >= nt (default 16)")
    csi.add_argument("--perfect-csi", action="store_true", help="detect with the true channel and noise variance")
    p.add_argument("--mmse-noise", choices=["estimated", "true"], default="estimated",
                   help="noise variance MMSE uses with LS CSI: the pilot-residual estimate or the true one")
    p.add_argument("--detectors", default="zf,mmse",
                   help=f"comma list of {','.join(CLASSICAL)} and bundle folders (an entry with a '/'), a bundle "
                        "optionally with run-time options PATH@key=value (default zf,mmse)")
    p.add_argument("--kbest-k", type=positive_int, default=16, help="K of the K-best detector (default 16)")
    p.add_argument("--symbols", type=positive_int, default=100_000,
                   help="complex symbols per SNR point, rounded up to whole frames (default 100000)")
    p.add_argument("--frame-data", type=positive_int, default=16, help="data vectors per frame / channel realisation (default 16)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--json", action="store_true", help="print JSON records instead of a table")
    p.add_argument("--plot", type=Path, help="write an SER-vs-SNR PNG here")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--config", type=Path,
                   help="YAML file whose keys (option names with _ for -, e.g. snr, channel) set the "
                        "defaults; options given on the command line override it (see configs/sim/)")
    p.set_defaults(func=cmd_sim)


def cmd_sim(a) -> int:
    from .figures import plot_ser
    from .sim import SimConfig, format_table, simulate

    if a.plot:
        writable_file(a.plot)
    cfg = SimConfig(channel=a.channel, nt=a.nt, nr=a.nr, modulation=a.modulation, snr_db=a.snr,
                    snr_convention=a.snr_convention, pilots=None if a.perfect_csi else a.pilots,
                    detectors=[d.strip() for d in a.detectors.split(",") if d.strip()], symbols=a.symbols,
                    frame_data=a.frame_data, kbest_k=a.kbest_k, mmse_noise=a.mmse_noise, seed=a.seed)
    records = simulate(cfg, progress=not a.no_progress and not a.json)
    if a.json:
        print(json.dumps(records, indent=1))
    else:
        print(f"channel={cfg.channel_spec} {cfg.nt}x{cfg.nr} (Nt x Nr) {cfg.modulation} "
              f"CSI={'perfect' if cfg.pilots is None else f'LS Np={cfg.pilots}'} seed={cfg.seed}")
        print(format_table(records))
    if a.plot:
        plot_ser(records, a.plot, f"{cfg.channel_spec.name} {cfg.nt}x{cfg.nr} {cfg.modulation}")
        if not a.json:
            print(f"plot: {a.plot}")
    return 0


# ----------------------------------------------------------------------------------------- umi
def _add_umi(sub):
    p = sub.add_parser("umi", help="3GPP 38.901 UMi NLoS task datasets (lab environment)")
    s = p.add_subparsers(dest="umi_cmd", required=True)
    g = s.add_parser("generate", help="generate and cache UMi tasks (needs Sionna)")
    g.add_argument("--tasks", default="0", help="task ids: a range a:b (exclusive) or a comma list (default 0)")
    g.add_argument("--ues", type=positive_int, default=10_000, help="UEs per task (default 10000, as in the paper)")
    g.add_argument("--chunk", type=positive_int, default=500, help="UEs generated per Sionna call with --drop-per-ue "
                   "(default 500)")
    g.add_argument("--seed", type=non_negative_int, default=2024, help="dataset seed (default 2024)")
    g.add_argument("--cache-dir", type=Path, help="cache folder (default $NEURALMIMO_CACHE or ~/.cache/neuralmimo)")
    g.add_argument("--drop-per-ue", action="store_true",
                   help="an independent drop per UE (the generator before cache version 2, which the medium run and "
                        "the shipped sdnet-learngene-umi50 used) instead of one spatially consistent scene per task")
    g.set_defaults(func=cmd_umi_generate)


def _task_ids(text: str) -> list[int]:
    if ":" in text:
        a, b = text.split(":")
        return list(range(int(a), int(b)))
    return [int(t) for t in text.split(",") if t]


def cmd_umi_generate(a) -> int:
    from ..channels.umi import UMiConfig, generate_task, task_centre

    cfg = UMiConfig(ues_per_task=a.ues, chunk=a.chunk, seed=a.seed, spatial_consistency=not a.drop_per_ue)
    for t in _task_ids(a.tasks):
        path = generate_task(cfg, t, a.cache_dir)
        x, y = task_centre(cfg, t)
        print(f"task {t}: centre ({x:.1f}, {y:.1f}) m -> {path}")
    return 0


# --------------------------------------------------------------------------------------- bench
def _add_bench_common(p, repeats: int = 3) -> None:
    p.add_argument("--repeats", type=positive_int, default=repeats, help=f"timed repetitions, best kept (default {repeats})")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")


def _add_bench(sub):
    p = sub.add_parser("bench", help="throughput benchmarks against reference implementations")
    s = p.add_subparsers(dest="bench_cmd", required=True)
    d = s.add_parser("detectors", help="ZF/MMSE/ML/K-best vs Sionna's detectors on the same data (lab environment)")
    d.add_argument("--vectors", type=positive_int, default=4096, help="received vectors per configuration (default 4096)")
    d.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    d.add_argument("--kbest-k", type=positive_int, default=16, help="K of both K-best detectors (default 16)")
    _add_bench_common(d)
    d.set_defaults(func=cmd_bench_detectors)
    f = s.add_parser("flowgraph", help="frame source -> channel -> LS -> MMSE flowgraph vs the core kernels, and Frame Sync "
                     "against real time (rx environment)")
    f.add_argument("--nt", type=positive_int, default=8, help="transmit streams (default 8)")
    f.add_argument("--nr", type=positive_int, default=32, help="receive antennas (default 32)")
    f.add_argument("--pilots", type=positive_int, default=16, help="pilot vectors per frame (default 16)")
    f.add_argument("--frame-data", type=positive_int, default=1024, help="data vectors per frame (default 1024)")
    f.add_argument("--frames", type=positive_int, default=512, help="frames per run (default 512)")
    f.add_argument("--sync-seconds", type=non_negative_float, default=2.0,
                   help="seconds of 8-channel signal at 1 MS/s for the Frame Sync real-time bench, on one core "
                        "(default 2; 0: skip it)")
    f.add_argument("--sync-junk", default="",
                   help="comma list of frame-free inputs for Frame Sync's cost bound: noise-dc, tone, saturated, noise "
                        "(default none)")
    f.add_argument("--sync-junk-seconds", type=positive_number, default=10.0,
                   help="seconds of each --sync-junk input at 1 MS/s, 8 channels (default 10)")
    _add_bench_common(f)
    f.set_defaults(func=cmd_bench_flowgraph)
    t = s.add_parser("training", help="training throughput per family in 1 process and in 2 data-parallel processes "
                     "(torchrun, gloo) with the scaling efficiency and paper-scale projections; our loop vs a plain "
                     "nn.Sequential + Adam loop (SDNet, DetNet/WeSNet)")
    t.add_argument("--family", choices=["all", *FAMILY_NAMES], default="all",
                   help="all (default); sdnet: also the plain loop at Nconv depths below; wesnet: also the plain "
                        "loop at 30x60 BPSK, --layers, --batch")
    t.add_argument("--processes", type=positive_int, default=2,
                   help="data-parallel processes (and threads of the 1-process run) for the scaling rows (default 2)")
    t.add_argument("--no-scaling", action="store_true", help="skip the 1-process / DDP scaling rows")
    t.add_argument("--layers", type=positive_int, default=90, help="wesnet: layers L (default 90, the paper's)")
    t.add_argument("--batch", type=positive_int, default=1000, help="wesnet: batch per step (default 1000)")
    t.add_argument("--n-conv", type=lambda v: tuple(int(x) for x in v.split(",")), default=(12, 8),
                   help="SDNet depths Nconv, comma list (default 12,8: collective and individual models)")
    t.add_argument("--samples", type=positive_int, default=4000, help="training samples per timed epoch (default 4000)")
    t.add_argument("--threads", type=positive_int, default=2, help="torch threads (default 2)")
    t.add_argument("--workers", type=non_negative_int, default=2,
                   help="also time this many single-thread training processes at once (default 2; 0: skip)")
    _add_bench_common(t, repeats=2)
    t.set_defaults(func=cmd_bench_training)
    dl = s.add_parser("dial", help="a DetNet/WeSNet bundle in the neural detector block at each kept fraction on the "
                     "same frames: time per vector vs FLOPs (rx environment)")
    dl.add_argument("--model", required=True, help="DetNet/WeSNet bundle folder")
    dl.add_argument("--keeps", type=lambda v: [float(x) for x in v.split(",")], default=[0.1, 0.2, 0.5, 1.0],
                   help="kept fractions, comma list (default 0.1,0.2,0.5,1.0)")
    dl.add_argument("--frames", type=positive_int, default=16, help="frames (default 16)")
    dl.add_argument("--frame-data", type=positive_int, default=1024, help="data vectors per frame (default 1024)")
    _add_bench_common(dl, repeats=2)
    dl.set_defaults(func=cmd_bench_dial)
    fb = s.add_parser("fallback", help="the neural detector block with a bundle's envelope check on and off, on frames "
                      "inside the envelope: what the MMSE fallback costs where it never acts (rx environment)")
    fb.add_argument("--model", required=True, help="bundle folder with an envelope")
    fb.add_argument("--frames", type=positive_int, default=256, help="frames (default 256)")
    fb.add_argument("--frame-data", type=positive_int, default=64, help="data vectors per frame (default 64)")
    _add_bench_common(fb, repeats=5)
    fb.set_defaults(func=cmd_bench_fallback)
    n = s.add_parser("neural", help="neural detectors: SDNet fast path vs the plain module, hypernetwork-DeepSIC, any "
                     "bundle vs MMSE, and the neural detector block in a flowgraph vs its kernel (rx environment)")
    n.add_argument("--models", default="",
                   help="comma list of bundle folders (PATH[@key=value]) to time on random frames of their own "
                        "system, against MMSE in the same process; without it, random-weight SDNet and "
                        "hypernetwork-DeepSIC")
    n.add_argument("--frames", type=positive_int, default=8, help="frames for the kernel comparison (default 8)")
    n.add_argument("--frame-data", type=positive_int, default=1024, help="data vectors per frame (default 1024)")
    n.add_argument("--fg-frames", type=non_negative_int, default=64, help="frames for the flowgraph comparison (default 64; 0: skip)")
    n.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1, the block's default)")
    _add_bench_common(n)
    n.set_defaults(func=cmd_bench_neural)


def cmd_bench_detectors(a) -> int:
    from .bench import bench_detectors, format_bench

    rows = bench_detectors(n_vectors=a.vectors, repeats=a.repeats, threads=a.threads, kbest_k=a.kbest_k)
    print(format_bench(rows))
    _write_json(a.json, rows)
    return 0


def cmd_bench_flowgraph(a) -> int:
    stress = _gr("stress")
    r = stress.bench_flowgraph(nt=a.nt, nr=a.nr, n_pilots=a.pilots, n_data=a.frame_data, frames=a.frames,
                               repeats=a.repeats)
    print(stress.format_bench_flowgraph(r))
    sync = None
    if a.sync_seconds > 0:
        sync = stress.bench_frame_sync(seconds=a.sync_seconds, repeats=a.repeats)
        print(stress.format_bench_frame_sync(sync))
    junk = []
    for kind in a.sync_junk.split(",") if a.sync_junk else []:
        junk.append(stress.bench_frame_sync_junk(kind.strip(), seconds=a.sync_junk_seconds))
        print(stress.format_bench_frame_sync_junk(junk[-1]))
    _write_json(a.json, {**r, "frame_sync": sync, "frame_sync_junk": junk})
    return 0


def cmd_bench_training(a) -> int:
    from .bench import bench_training, bench_training_wesnet, format_bench_training, format_bench_training_wesnet

    from .scale import bench_scaling, format_bench_scaling

    out = {}
    if not a.no_scaling:
        # each family's model and data at its paper configuration's size, a short timed run
        paper = {f.name: Path("configs") / f.pipeline / f.paper_config for f in FAMILIES}
        rows = [bench_scaling(f.name, config=paper[f.name], length=f.bench_length, processes=a.processes,
                              paper=paper[f.name])
                for f in FAMILIES if a.family in ("all", f.name)]
        print(format_bench_scaling(rows), flush=True)
        out["scaling"] = rows
    if a.family in ("all", "wesnet"):
        r = bench_training_wesnet(layers=a.layers, batch=a.batch, repeats=a.repeats, threads=a.threads)
        print(format_bench_training_wesnet(r), flush=True)
        out["wesnet"] = r
    if a.family in ("all", "sdnet"):
        r = bench_training(n_conv=a.n_conv, samples=a.samples, repeats=a.repeats, threads=a.threads, workers=a.workers)
        print(format_bench_training(r))
        out["sdnet"] = r
    _write_json(a.json, out)
    return 0


def cmd_bench_dial(a) -> int:
    stress = _gr("stress")
    rows = stress.bench_dial_flowgraph(a.model, a.keeps, frames=a.frames, frame_data=a.frame_data, repeats=a.repeats)
    print(stress.format_bench_dial_flowgraph(rows, a.model))
    _write_json(a.json, rows)
    return 0


def cmd_bench_fallback(a) -> int:
    stress = _gr("stress")
    r = stress.bench_fallback_flowgraph(a.model, frames=a.frames, frame_data=a.frame_data, repeats=a.repeats)
    print(stress.format_bench_fallback(r))
    _write_json(a.json, r)
    return 0


def cmd_bench_neural(a) -> int:
    from .bench import bench_bundles, bench_neural, format_bench_neural

    models = [m.strip() for m in a.models.split(",") if m.strip()]
    if models:
        rows = bench_bundles(models, frames=a.frames, frame_data=a.frame_data, repeats=a.repeats, threads=a.threads)
    else:
        rows = bench_neural(frames=a.frames, frame_data=a.frame_data, repeats=a.repeats, threads=a.threads)
    print(format_bench_neural(rows))
    out = {"kernels": rows}
    if a.fg_frames and not models:
        try:
            stress = _gr("stress")
        except RuntimeError as e:
            print(f"(flowgraph comparison skipped: {e})")
        else:
            fr = stress.bench_neural_flowgraph(frames=a.fg_frames, frame_data=a.frame_data, repeats=min(a.repeats, 2))
            print(stress.format_bench_neural_flowgraph(fr))
            out["flowgraph"] = fr
    _write_json(a.json, out)
    return 0


# ---------------------------------------------------------------------------- flowgraph commands
def _add_soak(sub):
    p = sub.add_parser("soak", help="stream >= 1e7 vectors through the neural detector block with >= 100 model swaps "
                       "(valid and invalid mixed); report loss/duplication, refusals and memory growth (rx environment)")
    p.add_argument("--models", type=Path, default=Path("models"), help="folder with the shipped bundles (default models)")
    p.add_argument("--vectors", type=positive_number, default=1e7, help="data vectors to stream (default 1e7)")
    p.add_argument("--swaps", type=positive_int, default=100, help="valid swaps to apply (default 100)")
    p.add_argument("--interval", type=positive_number, default=0.1, help="seconds between model requests (default 0.1)")
    p.add_argument("--faults", action="store_true",
                   help="the fault soak instead: the count-framed receiver (rx_time) with the neural detector under a "
                        "fault schedule (silent slips, dropped and repeated frames, NaN bursts, absurd tags, invalid "
                        "and failing models); exit 1 on any misnumbered frame or any good frame lost")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the fault schedule (--faults; default 0)")
    p.add_argument("--json", type=Path, help="also write the results as JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_soak)


def cmd_soak(a) -> int:
    stress = _gr("stress")
    if a.faults:
        r = stress.soak_faults(a.models, int(a.vectors), a.interval, a.seed, progress=not a.no_progress)
        print(stress.format_soak_faults(r))
        _write_json(a.json, r)
        return 0 if r["ok"] else 1
    r = stress.soak_neural(a.models, int(a.vectors), a.swaps, a.interval, progress=not a.no_progress)
    print(stress.format_soak(r))
    _write_json(a.json, r)
    ok = r["vectors_in"] == r["vectors_out"] and not (r["lost"] or r["duplicated"] or r["misplaced"])
    return 0 if ok and r["swaps_off_frame_boundary"] == 0 else 1


def _add_loopback(sub):
    p = sub.add_parser("loopback", help="run a loopback .grc headless and compare its SER with the core simulation "
                       "(rx environment)")
    p.add_argument("--grc", type=Path, default=Path("examples/loopback_linear.grc"),
                   help="flowgraph with parameters snr_db, n_frames, seed and probes probe_zf, probe_mmse "
                        "(default examples/loopback_linear.grc)")
    p.add_argument("--snr", type=parse_snr_range, default=[0.0, 5.0, 10.0], help="SNR points in dB (default 0,5,10)")
    p.add_argument("--frames", type=positive_int, default=200, help="frames per SNR point (default 200)")
    p.add_argument("--seed", type=non_negative_int, default=1, help="seed of the flowgraph and the simulation (default 1)")
    p.add_argument("--out", type=Path, default=Path("out/loopback"), help="folder for generated code, JSON and PNG")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("over-the-air loopbacks (examples/loopback_ota.grc): impairments; default: the flowgraph's own")
    radio = IMPAIRMENT_PARAMS  # one declaration of each range: the block's constructor and callbacks use it too
    g.add_argument("--cfo-hz", type=finite_float, help="common carrier frequency offset [Hz], below half the sample rate")
    g.add_argument("--timing-offset", type=radio["delay"].arg("--timing-offset"),
                   help=f"start offset of the receiver: {radio['delay'].describe()}, fractional")
    g.add_argument("--sro-ppm", type=radio["sro_ppm"].arg("--sro-ppm"),
                   help=f"sample-rate offset: {radio['sro_ppm'].describe()}")
    g.add_argument("--phase-noise", type=radio["phase_noise"].arg("--phase-noise"),
                   help=f"Wiener phase noise: {radio['phase_noise'].describe()}")
    g.add_argument("--samp-rate", type=positive_number, help="sample rate [Hz] (CFO in Hz is relative to it)")
    g.add_argument("--drop-rate", type=radio["drop_rate"].arg("--drop-rate"),
                   help=f"overflows (runs of 1..4096 lost samples): {radio['drop_rate'].describe()}")
    g.add_argument("--gain-imbalance-db", type=radio["gain_imbalance_db"].arg("--gain-imbalance-db"),
                   help=f"gain per receive channel within +- this: {radio['gain_imbalance_db'].describe()}")
    g.add_argument("--coarse", type=non_negative_int, help="the preamble's coarse period (0: a version-1 preamble, "
                   "CFO within 1/(2 N) of the symbol rate; 4: within 12.5 %%)")
    g.add_argument("--pilot-spacing", type=non_negative_int, help="a tracking pilot after every this many data vectors "
                   "(0: none)")
    g.add_argument("--record", type=Path, help="record the receive streams as a SigMF capture in this folder (one SNR), "
                   "with the live SERs in live.json: replay it with 'neuralmimo replay'")
    p.set_defaults(func=cmd_loopback)


def cmd_loopback(a) -> int:
    loopback = _gr("loopback")
    a.out.mkdir(parents=True, exist_ok=True)
    impairments = {k: getattr(a, k) for k in loopback.OTA_OPTIONS}
    if loopback.is_ota_loopback(a.grc, a.out):
        records = loopback.ota_loopback_demo(a.grc, a.snr, a.frames, a.seed, a.out, impairments,
                                             progress=not a.no_progress, record_to=a.record)
        print(loopback.format_ota_loopback(records))
        _write_json(a.out / "loopback.json", records)
        loopback.plot_ota_loopback(records, a.out / "loopback_ser.png")
        print(f"results: {a.out / 'loopback.json'}, plot: {a.out / 'loopback_ser.png'}")
        return _measured(records)
    if any(v is not None for v in impairments.values()) or a.record is not None:
        raise ValueError(f"{a.grc} is not an over-the-air loopback (no genie probe): the impairment options apply "
                         "to examples/loopback_ota.grc")
    records = loopback.loopback_demo(a.grc, a.snr, a.frames, a.seed, a.out, progress=not a.no_progress)
    print(loopback.format_loopback(records))
    _write_json(a.out / "loopback.json", records)
    loopback.plot_loopback(records, a.out / "loopback_ser.png")
    print(f"results: {a.out / 'loopback.json'}, plot: {a.out / 'loopback_ser.png'}")
    return _measured(records)


def _measured(records: list[dict]) -> int:
    """0 when every flowgraph probe measured symbols; else one line and 1 (an SER of no symbols is
    NaN: the receiver found no frame, which is a failed run, not a result)."""
    empty = sorted({f"{r['detector']} at {r['snr_db']:g} dB" for r in records
                    if r.get("source") == "flowgraph" and not r.get("n_symbols")})
    if empty:
        print(f"neuralmimo: error: no frame reached the probe ({', '.join(empty)}): nothing was measured; see the "
              "sync events above", file=sys.stderr)
        return 1
    return 0


def _add_ota_report(sub):
    p = sub.add_parser("ota-report", help="measure the frame synchroniser on the core over-the-air link: SER vs the "
                       "genie receiver, CFO vs its Cramer-Rao bound, false starts, re-acquisition, per-user CFO, and "
                       "the robustness map (heat maps against CFO, phase noise, SRO, users' CFO spread, overflows)")
    p.add_argument("--out", type=Path, default=Path("out/ota"), help="folder for report.md, PNGs and results.json")
    p.add_argument("--frames", type=positive_int, default=200, help="frames per SNR point (default 200)")
    p.add_argument("--false-start-lengths", type=positive_int, default=40000,
                   help="frame lengths of noise for the false-start count (default 40000: no start bounds the rate "
                        "below 7.5e-5 at 95 %%)")
    p.add_argument("--map-frames", type=positive_int, default=100,
                   help="frames per point of the robustness map (CFO, phase noise, SRO, users' CFO spread, overflows "
                        "against SNR; default 100)")
    p.set_defaults(func=cmd_ota_report)


def cmd_ota_report(a) -> int:
    from .ota import ota_report

    res = ota_report(a.out, frames=a.frames, false_start_lengths=a.false_start_lengths, map_frames=a.map_frames,
                     progress=lambda text: print(f"[ota-report] {text}", flush=True))
    print(f"loss at SER 1e-2: {res['loss_db_at_1e-2']:.2f} dB; report: {a.out / 'report.md'}")
    return 0


def _add_replay(sub):
    p = sub.add_parser("replay", help="run a recorded SigMF capture through a receiver flowgraph and print the SER per "
                       "detector, next to the live run's when the capture has one (rx environment)")
    p.add_argument("capture", type=Path, help="the capture's .sigmf-collection or its folder")
    p.add_argument("--grc", type=Path, default=Path("examples/replay_ota.grc"),
                   help="receiver flowgraph with a 'capture' parameter (default examples/replay_ota.grc)")
    p.add_argument("--out", type=Path, default=Path("out/replay"), help="folder for generated code and JSON")
    p.set_defaults(func=cmd_replay)


def cmd_replay(a) -> int:
    loopback = _gr("loopback")
    a.out.mkdir(parents=True, exist_ok=True)
    result = loopback.replay_capture(a.capture, a.grc, a.out)
    print(loopback.format_replay(result))
    _write_json(a.out / "replay.json", result)
    return 0 if all(result.get("reproduces_live", {}).values()) else 1


def _add_adapt(sub):
    p = sub.add_parser("adapt", help="fine-tune a HyperMIMO or hypernetwork-DeepSIC bundle on a site's recorded channels "
                       "(a CSI Logger folder or "
                       "a channel mapping file) in the background and write the new bundle atomically into a folder "
                       "a Neural MIMO Detector watches")
    p.add_argument("--csi", type=Path, required=True, help="CSI log folder (CSI Logger block) or channel mapping file")
    p.add_argument("--base", type=Path, required=True, help="the bundle to start from (hypermimo, hypernet-deepsic or "
                   "hypernet-deepsic-complex)")
    p.add_argument("--out", type=Path, required=True, help="folder for the new bundle (the detector's watch_dir)")
    p.add_argument("--name", type=bundle_name, help="the new bundle's folder name: letters, digits, ._+- (default "
                   "adapted-<time>)")
    p.add_argument("--steps", type=positive_int, default=2000, help="training steps (default 2000)")
    p.add_argument("--batch", type=positive_int, help="channels (HyperMIMO, default 200) or blocks (DeepSIC, default "
                   "32) per step")
    p.add_argument("--since-frame", type=non_negative_int, help="train on the CSI log's frames from this frame number "
                   "on only (what the receiver saw after its users moved)")
    p.add_argument("--lr", type=positive_number, help="learning rate (HyperMIMO: decays from it to a tenth, default "
                   "3e-4; DeepSIC: constant, default 3e-4)")
    p.add_argument("--budget-s", type=non_negative_float, default=0.0, help="stop after this many seconds (0: none)")
    p.add_argument("--nice", type=non_negative_int, default=10, help="lower this process's priority by N (default 10)")
    p.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the symbols and noise (default 0)")
    p.set_defaults(func=cmd_adapt)


def cmd_adapt(a) -> int:
    import torch

    from .adapt import adapt_bundle

    torch.set_num_threads(a.threads)
    extra = {} if a.batch is None else {"batch": a.batch}
    if a.since_frame is not None:
        extra["since_frame"] = a.since_frame
    if a.lr is not None:
        from ..bundle import read_manifest

        hypermimo = read_manifest(a.base)[1]["architecture"]["name"] == "hypermimo"
        extra["lr"] = (a.lr, a.lr / 10) if hypermimo else a.lr
    r = adapt_bundle(a.csi, a.base, a.out, steps=a.steps, budget_s=a.budget_s, seed=a.seed, name=a.name,
                     nice=a.nice, **extra)
    print(f"{r.bundle}: {r.steps} steps on {r.frames} recorded channels in {r.seconds:.1f} s")
    return 0


def _add_adapt_demo(sub):
    p = sub.add_parser("adapt-demo", help="a loopback whose users move: drift, background re-training, hot swap and "
                       "SER recovery in one running flowgraph (rx environment)")
    p.add_argument("--model", type=Path, default=Path("models/hypermimo-ls12x6-drop0"),
                   help="the bundle trained for the old positions (default models/hypermimo-ls12x6-drop0)")
    p.add_argument("--out", type=Path, default=Path("out/adapt-demo"), help="run folder (default out/adapt-demo)")
    p.add_argument("--old-channel", default="{name: local-scattering, args: {seed: 0}}",
                   help="the channel before the move (default local-scattering drop 0)")
    p.add_argument("--new-channel", default="{name: local-scattering, args: {seed: 5}}",
                   help="the channel after the move (default local-scattering drop 5)")
    p.add_argument("--snr-db", type=finite_float, default=8.0, help="SNR, hypermimo convention (default 8)")
    p.add_argument("--frame-rate", type=positive_number, default=150.0, help="frames per second (default 150)")
    p.add_argument("--move-frame", type=positive_int, default=1500, help="the users move at this frame (default 1500)")
    p.add_argument("--min-frames", type=positive_int, default=1500,
                   help="frames logged after the drift before re-training (default 1500)")
    p.add_argument("--post-frames", type=positive_int, default=2000, help="frames after the swap (default 2000)")
    p.add_argument("--budget-s", type=positive_number, default=300.0, help="re-training time budget (default 300 s)")
    p.add_argument("--steps", type=positive_int, default=10000, help="re-training steps at most (default 10000)")
    p.add_argument("--lr", type=positive_number, help="re-training learning rate (adapt's default otherwise)")
    p.add_argument("--reference", type=Path, default=Path("models/hypermimo-ls12x6-drop5"),
                   help="a bundle trained offline on the new positions: compare the adapted model with it on the new "
                   "positions (SNR at SER 1e-3; default models/hypermimo-ls12x6-drop5, skipped if absent)")
    p.add_argument("--compare-snr", type=parse_snr_range, default="2:2:12",
                   help="SNR points of that comparison (default 2:2:12)")
    p.add_argument("--compare-frames", type=positive_int, default=3000, help="frames per comparison point (default 3000)")
    p.add_argument("--no-progress", action="store_true", help="quiet")
    p.set_defaults(func=cmd_adapt_demo)


def cmd_adapt_demo(a) -> int:
    from ..channels import ChannelSpec

    demo = _gr("adapt_demo")
    s = demo.AdaptDemoSettings(model=a.model, out=a.out, old_channel=ChannelSpec.parse(a.old_channel).to_dict(),
                               new_channel=ChannelSpec.parse(a.new_channel).to_dict(), snr_db=a.snr_db,
                               frame_rate=a.frame_rate, move_frame=a.move_frame, min_frames=a.min_frames,
                               post_frames=a.post_frames, budget_s=a.budget_s, steps=a.steps, lr=a.lr)
    res = demo.run_adapt_demo(s, progress=not a.no_progress)
    print(demo.format_adapt_demo(res))
    if res["swap_bundle"] is not None:
        bundles = {"old model": a.model, "adapted": res["swap_bundle"]}
        reference = a.reference if a.reference is not None and a.reference.exists() else None
        if reference is not None:
            bundles["offline (new)"] = reference
        c = demo.compare_on_channel(bundles, s.new_channel, s, a.compare_snr, a.compare_frames)
        print(demo.format_comparison(c))
        res_json = json.loads((a.out / "results.json").read_text())
        res_json["comparison"] = c
        if reference is not None:
            gap = c["snr_at_target"]["adapted"] - c["snr_at_target"]["offline (new)"]
            res_json["adapted_minus_offline_db_at_1e-3"] = gap
            print(f"adapted vs offline on the new positions at SER 1e-3: {gap:+.2f} dB")
        _write_json(a.out / "results.json", res_json)
    print(f"plot: {a.out / 'adapt_demo.png'}; results: {a.out / 'results.json'}")
    return 0 if res["swap_bundle"] is not None and res["lost_vectors"] == 0 else 1


def _add_loopback_neural(sub):
    p = sub.add_parser("loopback-neural", help="the neural loopbacks (hypernetwork-DeepSIC on a real and on a complex "
                       "channel, SDNet on a static site and on UMi, HyperMIMO next to ZF/MMSE) with the lab evaluation of the same models (rx environment)")
    p.add_argument("--examples", type=Path, default=Path("examples"), help="folder with loopback_neural.grc, "
                   "loopback_deepsic_complex.grc, loopback_sdnet_site.grc, loopback_sdnet.grc and loopback_hypermimo.grc "
                   "(default examples)")
    p.add_argument("--models", type=Path, default=Path("models"), help="folder with the shipped bundles (default models)")
    p.add_argument("--sed-frames", type=positive_int, default=100, help="frames (blocks) of the DeepSIC loopback (default 100)")
    p.add_argument("--umi-frames", type=positive_int, default=1000, help="frames (one channel each) of each SDNet loopback "
                   "(default 1000)")
    p.add_argument("--hypermimo-frames", type=positive_int, default=400,
                   help="frames of the HyperMIMO loopback (default 400)")
    p.add_argument("--complex-frames", type=positive_int, default=400,
                   help="frames of the complex hypernetwork-DeepSIC loopback (default 400)")
    p.add_argument("--out", type=Path, default=Path("out/loopback-neural"), help="folder for generated code and JSON")
    p.add_argument("--no-progress", action="store_true", help="quiet")
    p.set_defaults(func=cmd_loopback_neural)


def cmd_loopback_neural(a) -> int:
    loopback = _gr("loopback")
    a.out.mkdir(parents=True, exist_ok=True)
    records = loopback.neural_loopback_demo(a.examples, a.models, a.out, a.sed_frames, a.umi_frames,
                                            a.hypermimo_frames, a.complex_frames, progress=not a.no_progress)
    print(loopback.format_neural_demo(records))
    _write_json(a.out / "loopback_neural.json", records)
    return 0


def _add_companion(sub):
    p = sub.add_parser("companion", help="open GNU Radio Companion with this module's blocks, running flowgraphs in "
                       "this environment (rx)",
                       description="Starts gnuradio-companion in this environment's interpreter (so GRC's Run Command "
                                   "'{python} -u {filename}' runs flowgraphs where torch and the blocks are) with the "
                                   "installed block folder on GRC_BLOCKS_PATH. make grc does the same.")
    p.add_argument("flowgraphs", nargs="*", type=Path, help="flowgraphs to open (e.g. examples/loopback_neural.grc)")
    p.set_defaults(func=cmd_companion)
    p = sub.add_parser("grcc", help="compile a flowgraph with this module's blocks on the block path, checking that "
                       "no block was dropped (rx environment)")
    p.add_argument("flowgraph", type=Path, help="the .grc file")
    p.add_argument("-o", "--out", type=Path, default=Path("out/grc"), help="output folder (default out/grc)")
    p.set_defaults(func=cmd_grcc)


def cmd_companion(a) -> int:
    import os

    harness = _gr("harness")
    for f in a.flowgraphs:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such flowgraph")
    argv = harness.companion_command(a.flowgraphs)
    sys.stdout.flush()
    os.execve(argv[0], argv, harness.grc_environment())  # GRC replaces this process


def cmd_grcc(a) -> int:
    harness = _gr("harness")
    if not a.flowgraph.is_file():
        raise FileNotFoundError(f"{a.flowgraph}: no such flowgraph")
    generated, _ = harness.compile_grc(a.flowgraph, a.out)
    print(f"{generated}\nrun it with: {sys.executable} {generated}")
    return 0


# ------------------------------------------------------------------------------------ pipelines
def _add_pipelines(sub):
    for fam in FAMILIES:
        name, text, mod = fam.pipeline, fam.summary, fam.module()
        p = sub.add_parser(name, help=text,
                           description="Each step reads the steps before it from the run folder --out and writes its "
                                       "config, metrics (JSON), plots (PNG) and model bundles there. 'run' does all "
                                       "steps.")
        s = p.add_subparsers(dest=f"{name}_cmd", required=True)
        for step in ("run", *mod.STEPS):
            q = s.add_parser(step, help="all steps in order" if step == "run" else mod.STEP_HELP[step])
            q.add_argument("--config", dest="pipeline_config", type=Path,
                           help=f"pipeline YAML (configs/{name}/*.yaml); required unless --resume")
            q.add_argument("--out", type=Path, help=f"run folder (default out/{name}/<config name>)")
            q.add_argument("--resume", type=Path, metavar="RUN",
                           help="continue the killed run in folder RUN with its own config.yaml: finished steps are "
                                "skipped, training continues from the last checkpoints (same result as an "
                                "uninterrupted run)")
            q.add_argument("--device", help="train on cpu, cuda or cuda:N (default: the config's device, or cpu); "
                                            "under torchrun each process takes GPU LOCAL_RANK")
            q.add_argument("--checkpoint-every", type=positive_int, default=1, metavar="EPOCHS",
                           help="checkpoint every training loop every EPOCHS epochs (default 1)")
            q.add_argument("--threads", type=positive_int, help="torch threads of this process (default: the config's, or 2)")
            q.add_argument("--no-progress", action="store_true", help="hide progress bars")
            if (name, step) == ("learngene", "individual"):
                q.add_argument("--site", type=Path, metavar="LOG",
                               help="per-site adaptation: train scratch and the run's learngene model on a site's "
                                    "channels (a CSI Logger folder or a channel mapping file) into --out's site/ "
                                    "folder; the run must hold a learngene (extract/)")
                q.add_argument("--budget", type=float, default=0.0, metavar="SECONDS",
                               help="with --site: stop each model's training after SECONDS (default: the config's epochs)")
                q.add_argument("--watch", type=Path, metavar="DIR",
                               help="with --site: also put the learngene model into a Neural MIMO Detector's watch "
                                    "folder DIR (atomically; the block swaps it in at a frame boundary)")
            q.set_defaults(func=cmd_pipeline, pipeline=name, step=step)


def cmd_pipeline(a) -> int:
    import torch

    from .. import training

    fam = by_pipeline(a.pipeline)
    mod = fam.module()

    if a.resume is not None:
        if a.out is not None and a.out != a.resume:
            raise ValueError("give the run folder once: --resume RUN (not also --out)")
        if not (a.resume / "config.yaml").is_file():
            raise ValueError(f"{a.resume}: not a run folder (no config.yaml): nothing to resume")
    config = a.pipeline_config or (a.resume / "config.yaml" if a.resume is not None else None)
    if config is None:
        raise ValueError("give --config CONFIG (or --resume RUN)")
    cfg = fam.load_config(config)
    device = training.check_device(a.device or cfg.device)
    # under torchrun: join the job (gloo on CPU, NCCL on GPUs); a single process otherwise
    device = training.init_distributed(str(device))
    torch.set_num_threads(a.threads or getattr(cfg, "threads", 2))
    run = a.resume or a.out or Path("out") / a.pipeline / cfg.name
    if getattr(a, "site", None) is not None:  # learngene individual --site LOG
        if a.budget < 0:
            raise ValueError(f"--budget must be >= 0 seconds, got {a.budget:g}")
        summary = mod.train_site(cfg, run, a.site, a.budget, a.watch, progress=not a.no_progress)
        print((run / "site" / a.site.name / "report.md").read_text())
        return 0 if summary else 1
    if getattr(a, "watch", None) is not None or getattr(a, "budget", 0.0):
        raise ValueError("--budget and --watch go with --site")
    steps = None if a.step == "run" else [a.step]
    with training.use_device(device):
        mod.run_pipeline(cfg, run, steps, progress=not a.no_progress, resume=a.resume is not None,
                         checkpoint_every=a.checkpoint_every)
    if not training.is_main():
        return 0
    for report in (run / "compare" / "report.md", run / "report.md", run / "diversity" / "report.md"):
        if report.exists() and (a.step in ("run", "compare", "report") or a.step == report.parent.name):
            print(report.read_text())
            break
    return 0


# -------------------------------------------------------------------------------------- bundles
def _add_bundle(sub):
    p = sub.add_parser("bundle", help="show, check or upgrade a model bundle (safetensors + manifest.json)")
    s = p.add_subparsers(dest="bundle_cmd", required=True)
    q = s.add_parser("inspect", help="print the manifest summary of a bundle (validated)")
    q.add_argument("path", type=Path, help="bundle folder (or its manifest.json)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_bundle_inspect)
    q = s.add_parser("verify", help="validate a bundle as a receiver would; exit 1 with the reason if refused")
    q.add_argument("path", type=Path, help="bundle folder (or its manifest.json)")
    q.add_argument("--nr", type=positive_int, help="receive streams of the flowgraph")
    q.add_argument("--nt", type=positive_int, help="transmit streams (users) of the flowgraph")
    q.add_argument("--modulation", help="modulation of the flowgraph")
    q.add_argument("--sha256", help="expected sha256 of the weights (64 hex digits)")
    q.set_defaults(func=cmd_bundle_verify)
    q = s.add_parser("upgrade", help="rewrite a schema-version-1 bundle's manifest in the current schema "
                     "(weights untouched)")
    q.add_argument("path", type=Path, help="bundle folder")
    q.set_defaults(func=cmd_bundle_upgrade)
    q = s.add_parser("stats", help="write the training channel statistics (the drift monitor's reference) into a "
                     "bundle's manifest, from the channel its system section records (weights untouched)")
    q.add_argument("path", type=Path, help="bundle folder")
    q.add_argument("--frames", type=positive_int, default=2000, help="channels drawn (default 2000)")
    q.add_argument("--force", action="store_true", help="replace statistics the bundle already has")
    q.set_defaults(func=cmd_bundle_stats)
    q = s.add_parser("envelope", help="sweep a bundle against MMSE on its recorded system and write the region "
                     "where it is not worse (95 %% confidence) into its manifest (weights untouched); receivers "
                     "detect with MMSE outside it")
    q.add_argument("path", type=Path, help="bundle folder")
    q.add_argument("--snr", type=parse_snr_range, help="SNR sweep in the bundle's convention (default: 5 dB below "
                   "its training range to 30 dB in 2 dB steps)")
    q.add_argument("--users", type=user_counts, help="user counts, e.g. 6 or 1:12 or 2,4,8 (default: every count "
                   "the model serves)")
    q.add_argument("--symbols", type=positive_int, default=200_000,
                   help="complex symbols per SNR point and user count (default 200000)")
    q.add_argument("--frame-data", type=positive_int, default=32, help="data vectors per frame (default 32)")
    q.add_argument("--seed", type=non_negative_int, default=0, help="seed of the sweep; the check uses seed + 1")
    q.add_argument("--no-validate", action="store_true", help="skip the second sweep with the fallback on")
    q.add_argument("--plot", type=Path, help="write the SER-vs-SNR PNG (envelope shaded) here")
    q.add_argument("--report", type=Path, help="write the tables (Markdown) here")
    q.add_argument("--no-progress", action="store_true", help="no progress bars")
    q.set_defaults(func=cmd_bundle_envelope)


def cmd_bundle_inspect(a) -> int:
    from ..detectors import inspect_bundle

    info = inspect_bundle(a.path)
    if a.json:
        print(json.dumps(info, indent=1))
        return 0
    kind = {"detector": "", "data": "  (data, not a detector)", "unknown": "  (unknown architecture)"}[info["kind"]]
    print(f"{info['path']}\n  architecture  {info['architecture']}{kind}\n"
          f"  sha256        {info['sha256']}\n  parameters    {info['parameters']:,}")
    for key in ("hyperparameters", "system"):
        print(f"  {key:<13} " + ", ".join(f"{k}={v}" for k, v in info[key].items()))
    names = [f"{k}{v}" for k, v in info["tensors"].items()]
    more = f", ... ({len(names) - 8} more)" if len(names) > 8 else ""
    print(f"  tensors       {len(names)}: " + ", ".join(names[:8]) + more)
    if info.get("envelope"):
        print(f"  envelope      {info['envelope']}")
    elif info["kind"] == "detector":
        print("  envelope      none recorded (no MMSE fallback; neuralmimo bundle envelope measures it)")
    if info["learngene"]:
        lg = info["learngene"]
        print("  learngene     " + ", ".join(f"{k}={lg[k]}" for k in ("strategy", "layers", "source_sha256", "segment")
                                              if k in lg))
    return 0


def cmd_bundle_verify(a) -> int:
    from ..detectors import SystemSpec, verify_bundle

    system = None
    if a.nr is not None or a.nt is not None or a.modulation is not None:
        if None in (a.nr, a.nt, a.modulation):
            print("neuralmimo: error: give all of --nr, --nt and --modulation to check the system configuration",
                  file=sys.stderr)
            return 2
        system = SystemSpec(a.nr, a.nt, a.modulation)
    try:
        print(verify_bundle(a.path, system, a.sha256))
    except BundleError as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_bundle_upgrade(a) -> int:
    from ..bundle import MANIFEST, SCHEMA_VERSION, load_bundle, read_manifest
    from ..detectors.registry import codec_of

    directory, manifest = read_manifest(a.path)  # validates (and upgrades a version-1 manifest in memory)
    load_bundle(directory, codec_of(manifest["architecture"]["name"]))  # the weights fit the upgraded manifest
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    print(f"{directory}: manifest written in schema version {SCHEMA_VERSION} (weights unchanged)")
    return 0


def cmd_bundle_stats(a) -> int:
    from ..bundle import MANIFEST, load_bundle, read_manifest
    from ..channels import make_channel
    from ..detectors.registry import codec_of
    from ..site.drift import model_statistics

    directory, manifest = read_manifest(a.path)
    load_bundle(directory, codec_of(manifest["architecture"]["name"]))  # a valid bundle first
    system, training = manifest["system"], manifest.setdefault("training", {})
    if training.get("channel_stats") is not None and not a.force:
        raise ValueError(f"{directory} already records channel statistics (--force replaces them)")
    if not system.get("channel"):
        raise ValueError(f"{directory}: the manifest records no training channel (system.channel)")
    channel = make_channel(system["channel"], system["nr"], system["nt"])
    training["channel_stats"] = model_statistics(channel, a.frames)
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2))
    print(f"{directory}: channel statistics of {a.frames} channels of {system['channel']['name']} written "
          "(weights unchanged)")
    return 0


def user_counts(text) -> list[int]:
    """``"6"``, ``"1:12"`` (inclusive) or ``"2,4,8"`` -> a list of user counts >= 1."""
    text = str(text).strip()
    try:
        if ":" in text:
            lo, hi = (int(v) for v in text.split(":"))
            values = list(range(lo, hi + 1))
        else:
            values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected user counts such as 6, 1:12 or 2,4,8, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"user counts must be >= 1, got {text!r}")
    return values


def cmd_bundle_envelope(a) -> int:
    from .envelope import format_envelope, measure_envelope, plot_envelope, validate_envelope, write_envelope

    command = "neuralmimo " + " ".join(sys.argv[1:]) if sys.argv and "neuralmimo" in sys.argv[0] else ""
    section = measure_envelope(a.path, a.snr, a.users, a.symbols, a.frame_data, a.seed,
                               progress=not a.no_progress, command=command)
    directory = write_envelope(a.path, section)
    bad = [] if a.no_validate else validate_envelope(directory, section, progress=not a.no_progress)
    write_envelope(directory, section)
    table = format_envelope(section, directory.name)
    print(table)
    if a.report:
        a.report.parent.mkdir(parents=True, exist_ok=True)
        a.report.write_text(table + "\n")
    if a.plot:
        plot_envelope(section, a.plot, f"{directory.name}: envelope against MMSE")
    print(f"{directory}: envelope written (weights unchanged)")
    for b in bad:
        print(f"warning: with its fallback, the model is still worse than MMSE at {b['snr_db']:g} dB with "
              f"{b['n_users']} users (an edge the sweep's steps do not resolve?)", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="neuralmimo", description="gr-neuralmimo lab tools: simulate, train, evaluate, "
                                "benchmark, check model bundles, run the demo flowgraphs.")
    p.add_argument("--debug", action="store_true", help="show the traceback of a failure (also NEURALMIMO_DEBUG=1)")
    sub = p.add_subparsers(dest="cmd", required=True)
    _add_sim(sub)
    _add_umi(sub)
    _add_bench(sub)
    _add_loopback(sub)
    _add_loopback_neural(sub)
    _add_adapt(sub)
    _add_adapt_demo(sub)
    _add_replay(sub)
    _add_ota_report(sub)
    _add_companion(sub)
    _add_pipelines(sub)
    _add_bundle(sub)
    _add_soak(sub)
    return p


def subcommand_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of sub-command ``name`` (argparse keeps it in a private attribute)."""
    return parser._subparsers._group_actions[0].choices[name]


def _apply_config(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """Parse twice: a ``--config`` YAML sets the sub-command's defaults, explicit options win."""
    args = parser.parse_args(argv)
    cfg_path = getattr(args, "config", None)
    if not cfg_path:
        return args
    try:
        values = yaml.safe_load(Path(cfg_path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        parser.error(f"{cfg_path}: cannot read the configuration ({' '.join(str(e).split())})")
    if not isinstance(values, dict):
        parser.error(f"{cfg_path}: a configuration is a mapping of option names to values")
    sub = subcommand_parser(parser, args.cmd)
    known = {a.dest: a for a in sub._actions}
    defaults = {}
    for key, val in values.items():
        dest = key.replace("-", "_")
        if dest not in known or dest in ("config", "func", "help"):
            parser.error(f"{cfg_path}: unknown option {key!r}")
        action = known[dest]
        try:
            if dest == "snr" and isinstance(val, list):
                val = [float(v) for v in val]
            elif action.type is not None:
                val = action.type(val if isinstance(val, (dict, list)) else str(val))
        except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
            parser.error(f"{cfg_path}: option {key!r}: {e}")
        defaults[dest] = val
    sub.set_defaults(**defaults)
    return parser.parse_args(argv)


class OneLineParser(argparse.ArgumentParser):
    """An argument error is one line on stderr (``neuralmimo: error: ...``) and exit code 2."""

    def error(self, message):
        self.exit(2, f"neuralmimo: error: {self.prog.split(' ', 1)[-1] + ': ' if ' ' in self.prog else ''}{message}\n")


_NEGATIVE_NUMBER = re.compile(r"^-\d|^-\.\d")
_TAKES_NUMBERS = ("--snr", "--cfo-hz", "--sro-ppm")


def _join_negative_values(argv: list[str]) -> list[str]:
    """``--snr -5:1:5`` -> ``--snr=-5:1:5`` (argparse would read ``-5:1:5`` as an option)."""
    out, i = [], 0
    while i < len(argv):
        if argv[i] in _TAKES_NUMBERS and i + 1 < len(argv) and _NEGATIVE_NUMBER.match(argv[i + 1]):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv=None) -> int:
    """Run a command; every failure is one line on stderr and a non-zero exit code (1: a bundle
    was refused, 2: an error in the input, 3: an internal error). ``--debug`` (or
    ``NEURALMIMO_DEBUG=1``) shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("NEURALMIMO_DEBUG", "") not in ("", "0")
    argv = _join_negative_values([x for x in argv if x != "--debug"])
    try:
        args = _apply_config(build_parser(), argv)
        _check_outputs(args)
        return args.func(args)
    except BundleError as e:
        if debug:
            raise
        print(f"neuralmimo: refused: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, RuntimeError, OSError, TypeError, KeyError, yaml.YAMLError) as e:
        if debug:
            raise
        print(f"neuralmimo: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("neuralmimo: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - never a traceback unless asked for
        if debug:
            raise
        where = traceback.extract_tb(e.__traceback__)[-1]
        print(f"neuralmimo: internal error: {type(e).__name__}: {_one_line(e)} (at {Path(where.filename).name}:"
              f"{where.lineno}; run with --debug for the traceback)", file=sys.stderr)
        return 3


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, (ValueError, OSError, RuntimeError)) else f"{type(e).__name__}: {text}"


if __name__ == "__main__":
    sys.exit(main())

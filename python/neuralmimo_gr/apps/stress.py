"""Load on the blocks: the classical flowgraph against its own kernels (:func:`bench_flowgraph`),
the neural detector block against its kernel (:func:`bench_neural_flowgraph`), the hot-swap
soak (:func:`soak_neural`: >= 10^7 vectors with >= 100 model swaps, valid and invalid mixed)
and the fault soak (:func:`soak_faults`: the count-framed receiver under slips, dropped and
repeated frames, NaN bursts, absurd tags, invalid and failing models).

Used by ``neuralmimo bench flowgraph``, ``bench neural`` and ``soak`` (``make bench``, ``make soak``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pmt
import torch
from gnuradio import blocks, gr
from tqdm import tqdm

from neuralmimo.bundle import MANIFEST, WEIGHTS, file_sha256, save_model
from neuralmimo.channels import make_channel, transmit
from neuralmimo.constellation import Constellation
from neuralmimo.detectors import REGISTRY, FrameDetector, SystemSpec, linear_detect, load_detector
from neuralmimo.detectors.deepsic import HYPERNET_CODEC, HyperDeepSICDetector, ModularHypernetwork, ModuleSpec
from neuralmimo.detectors.mmnet import HYPERMIMO_CODEC, HyperMIMO
from neuralmimo.detectors.sdnet import SDNET_CODEC
from neuralmimo.receiver.estimation import LSChannelEstimator, estimate_problems
from neuralmimo.receiver.frames import FrameLayout, frame_data_indices
from neuralmimo.lab.bench import random_sdnet
from neuralmimo.site.csilog import read_csi_log
from neuralmimo.snr import noise_variance

from .._common import TORCH_THREADS_PER_BLOCK
from ..tags import csi_to_pmt
from ..error_rate_probe import error_rate_probe
from .faults import Fault, fault_injector, tag_corruptor
from .harness import gr_tag, quiet_info_logs, run_flowgraph
from ..linear_detector import linear_detector
from ..ls_channel_estimator import ls_channel_estimator
from ..mimo_channel import mimo_channel
from ..mimo_frame_source import mimo_frame_source
from ..neural_detector import neural_detector
from ..background_retrainer import background_retrainer
from ..csi_logger import csi_logger
from ..frame_recorder import frame_recorder

# the bytes of pickle.dumps({"weights": [1.0, 2.0]}): a pickle renamed weights.safetensors must be
# refused without being unpickled
PICKLED_DICT = (b"\x80\x04\x95$\x00\x00\x00\x00\x00\x00\x00}\x94\x8c\x07weights\x94]\x94(G?\xf0"
                b"\x00\x00\x00\x00\x00\x00G@\x00\x00\x00\x00\x00\x00\x00es.")

def bench_flowgraph(nt: int = 8, nr: int = 32, n_pilots: int = 16, n_data: int = 1024, frames: int = 256,
                    snr_db: float = 10.0, repeats: int = 2, timeout_s: float = 600) -> dict:
    """Data vectors/s of frame source -> channel -> LS -> MMSE -> null sinks, and of the same core
    kernels called frame by frame in this process (best of ``repeats``). Both use one torch thread
    per thread of work (the blocks' default, ``_common.TORCH_THREADS_PER_BLOCK``)."""

    quiet_info_logs()
    threads = TORCH_THREADS_PER_BLOCK
    torch.set_num_threads(threads)
    vectors = frames * n_data

    def run_fg() -> float:
        tb = gr.top_block()
        src = mimo_frame_source(nt, n_pilots, n_data, "qpsk", False, 0, frames)
        chan = mimo_channel(nt, nr, "iid", snr_db, n_pilots + n_data, 0, 0.0, 1)
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
        process, g = model.block_process(1), torch.Generator().manual_seed(2)
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
            f"  ratio flowgraph / kernels: {r['ratio']:.2f} ")


# ----------------------------------------------------------------------------- neural block benchmark / soak
def bench_frame_sync(nr: int = 8, nt: int = 4, seconds: float = 1.0, samp_rate: float = 1e6, repeats: int = 2,
                     one_core: bool = True, timeout_s: float = 600, coarse_period: int = 4, pilot_spacing: int = 16) -> dict:
    """Frame Sync against real time: ``seconds`` of the impaired 4x8 link of ``neuralmimo.lab.ota``
    (random start, 2 % CFO, 20 ppm, phase noise; frames 32 + 16 + 256 symbols at 4 samples per
    symbol) through vector sources -> RRC Matched Filter -> Frame Sync -> null sinks, and the core
    synchroniser alone on the matched-filter output in pieces of 65536 samples. Real-time ratio =
    samples per second per channel / ``samp_rate``. ``one_core``: the process (all the
    flowgraph's threads) is pinned to one CPU core for the measurement. The frame format: the
    examples' (a version-2 preamble, ``coarse_period``; a tracking pilot every ``pilot_spacing``
    data vectors); 0 and 0 for version 1."""
    from neuralmimo.receiver.framesync import FrameSynchronizer
    from neuralmimo.lab.ota import LinkSettings, impaired, receive_waveform
    from neuralmimo.receiver.pulse import matched_filter, rrc_taps

    from ..frame_sync import frame_sync
    from ..pulse_shaping import rrc_matched_filter

    quiet_info_logs()
    s = impaired(LinkSettings(nr=nr, nt=nt, coarse_period=coarse_period, pilot_spacing=pilot_spacing),
                 timing_offset=517.37, phase_noise=1e-4)
    frames = int(seconds * samp_rate / s.frame_samples)
    y, _, _, _, _ = receive_waveform(s, 10.0, frames, seed=3)
    n = y.shape[1]
    taps = rrc_taps(s.sps, s.rolloff, s.span)
    z = matched_filter(y, taps)
    affinity = os.sched_getaffinity(0)
    if one_core:
        os.sched_setaffinity(0, {min(affinity)})
    torch.set_num_threads(1)
    try:
        def run_fg() -> tuple[float, int]:
            tb = gr.top_block()
            srcs = [blocks.vector_source_c(row.tolist()) for row in y]
            mf = rrc_matched_filter(nr, s.sps, s.rolloff, s.span)
            sync = frame_sync(nr, nt, s.n_pilots, s.n_data, s.modulation, s.period, s.sps, s.rolloff, s.span, s.pfa, True,
                              samp_rate, s.timing_offset + s.span * s.sps, coarse_period, pilot_spacing)
            for r in range(nr):
                tb.connect(srcs[r], (mf, r), (sync, r), blocks.null_sink(gr.sizeof_gr_complex))
            t = run_flowgraph(tb, timeout_s)
            return t, sync.problems().get("frames", 0)

        def run_core() -> tuple[float, int]:
            sync = FrameSynchronizer(nr, s.layout, s.preamble, s.sps, taps, origin=s.timing_offset + len(taps) - 1,
                                     constellation=Constellation(s.modulation), pilot_spacing=pilot_spacing)
            t0, found = time.perf_counter(), 0
            for a in range(0, n, 65536):
                found += len(sync.push(z[:, a:a + 65536]))
            return time.perf_counter() - t0, found

        fg = min(run_fg() for _ in range(repeats))
        core = min(run_core() for _ in range(repeats))
    finally:
        os.sched_setaffinity(0, affinity)
    return {"nr": nr, "nt": nt, "samples": n, "samp_rate": samp_rate, "frames_sent": frames, "one_core": one_core,
            "coarse_period": coarse_period, "pilot_spacing": pilot_spacing,
            "flowgraph_s": fg[0], "flowgraph_frames": fg[1], "flowgraph_realtime": n / fg[0] / samp_rate,
            "core_s": core[0], "core_frames": core[1], "core_realtime": n / core[0] / samp_rate}


JUNK_KINDS = ("noise-dc", "tone", "saturated", "noise")


def bench_frame_sync_junk(kind: str = "noise-dc", nr: int = 8, nt: int = 4, seconds: float = 10.0,
                          samp_rate: float = 1e6, timeout_s: float = 600) -> dict:
    """Frame Sync searching radio input that holds no frame (issue 29): ``seconds`` of ``kind``
    (:data:`JUNK_KINDS`: receiver noise plus a DC offset 5x its amplitude, noise plus a strong
    tone, a saturated front end, plain noise) through a repeating source of 65536 samples ->
    head -> Frame Sync -> null sinks, the process pinned to one core. Its cost must stay bounded
    on any input: the real-time ratio (samples per second per channel / ``samp_rate``) and what
    the synchroniser counted (no frame may come out)."""
    from ..frame_sync import frame_sync

    if kind not in JUNK_KINDS:
        raise ValueError(f"junk input must be one of {JUNK_KINDS}, got {kind!r}")
    quiet_info_logs()
    rng = np.random.default_rng(0)
    m = 65536
    noise = (0.1 * (rng.standard_normal((nr, m)) + 1j * rng.standard_normal((nr, m)))).astype(np.complex64)
    if kind == "noise-dc":
        x = noise + np.complex64(0.4 + 0.3j)
    elif kind == "tone":
        x = noise + (0.5 * np.exp(2j * np.pi * 0.01 * np.arange(m))).astype(np.complex64)
    elif kind == "saturated":
        x = ((np.sign(noise.real) + 1j * np.sign(noise.imag)) * 0.7).astype(np.complex64)
    else:
        x = noise
    n = int(seconds * samp_rate)
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    torch.set_num_threads(1)
    try:
        tb = gr.top_block()
        sync = frame_sync(nr, nt, 16, 256, "qpsk", 16, 4, 0.35, 8, 1e-4, True, samp_rate)
        for r in range(nr):
            tb.connect(blocks.vector_source_c(x[r].tolist(), True), blocks.head(gr.sizeof_gr_complex, n), (sync, r),
                       blocks.null_sink(gr.sizeof_gr_complex))
        t = run_flowgraph(tb, timeout_s)
    finally:
        os.sched_setaffinity(0, affinity)
    return {"input": kind, "nr": nr, "samples": n, "samp_rate": samp_rate, "seconds": t, "realtime": n / t / samp_rate,
            "problems": sync.problems()}


def format_bench_frame_sync_junk(r: dict) -> str:
    return (f"frame sync on {r['input']} ({r['nr']} channels, {r['samples']:,} samples each, one core): "
            f"{r['realtime']:.2f}x real time at {r['samp_rate'] / 1e6:g} MS/s ({r['seconds']:.2f} s); counted "
            f"{r['problems']}")


def format_bench_frame_sync(r: dict) -> str:
    core = "one core" if r["one_core"] else "all cores"
    fmt = (f"version-2 preamble (coarse period {r['coarse_period']}), a tracking pilot every {r['pilot_spacing']}"
           if r.get("coarse_period") else "version-1 preamble") if r.get("coarse_period") or not r.get("pilot_spacing") \
        else f"tracking pilot every {r['pilot_spacing']}"
    return (f"frame sync bench: {r['nt']}x{r['nr']}, {r['samples']:,} samples per channel ({r['frames_sent']} frames), "
            f"{core}, {fmt}\n"
            f"  flowgraph (sources -> RRC matched filter -> Frame Sync -> null sinks): {r['flowgraph_realtime']:.2f}x real "
            f"time at {r['samp_rate'] / 1e6:g} MS/s ({r['flowgraph_s']:.2f} s, {r['flowgraph_frames']} frames)\n"
            f"  core synchroniser alone (pieces of 65536 samples):                      {r['core_realtime']:.2f}x real "
            f"time ({r['core_s']:.2f} s, {r['core_frames']} frames)")


def _frame_stream(nr: int, nt: int, frames: int, frame_data: int, seed: int = 0, real_channel: bool = False):
    """Random frames as the estimator would output them: ``y (frames, Nr, Nd)``, ``h``, ``nv`` and
    the tag list (frame_start, csi, noise_var at each frame's first vector)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(frames, nr, nt, generator=g).to(torch.complex64) if real_channel else \
        torch.randn(frames, nr, nt, dtype=torch.complex64, generator=g)
    y = torch.randn(frames, nr, frame_data, dtype=torch.complex64, generator=g)
    nv = 0.05 + 0.1 * torch.rand(frames, generator=g)
    tags = [gr_tag(f * frame_data, key, value) for f in range(frames)
            for key, value in (("frame_start", pmt.from_long(f)), ("csi", csi_to_pmt(h[f])),
                               ("noise_var", pmt.from_double(float(nv[f]))))]
    return y, h, nv, tags


def _neural_fg(det, y, tags, repeat: bool = False, n_items: int | None = None, null_outputs: int = 0):
    """vector sources (one per antenna, tags on 0) [-> head] -> neural detector [-> null sinks
    on its first ``null_outputs`` outputs]."""
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
    for k in range(null_outputs):
        snk = blocks.null_sink(gr.sizeof_gr_complex)
        keep.append(snk)
        tb.connect((det, k), snk)
    tb._keep = keep
    return tb


def bench_neural_flowgraph(frames: int = 64, frame_data: int = 1024, repeats: int = 2, timeout_s: float = 600) -> list[dict]:
    """The neural detector block in a flowgraph (vector sources with the estimator's tags ->
    block -> null sinks) against its kernel called frame by frame in this process, for SDNet
    (8x32 QPSK, Nconv = 8), hypernetwork-DeepSIC (12x8 BPSK, K_max = 12) and HyperMIMO (12x6 QPSK,
    T = 5). Random weights."""
    quiet_info_logs()
    torch.set_num_threads(TORCH_THREADS_PER_BLOCK)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sd = save_model(random_sdnet(8, 32, 8), SDNET_CODEC, Path(tmp) / "sdnet",
                        system={"nt": 8, "nr": 32, "modulation": "qpsk"})
        torch.manual_seed(3)
        hp = save_model(ModularHypernetwork(ModuleSpec(12), 12), HYPERNET_CODEC, Path(tmp) / "hyper",
                        system={"nr": 12, "nt": 12, "modulation": "bpsk"})
        torch.manual_seed(4)
        hm = save_model(HyperMIMO(6, 5), HYPERMIMO_CODEC, Path(tmp) / "hypermimo",
                        system={"nr": 12, "nt": 6, "modulation": "qpsk"})
        for name, path, (nr, nt, mod), real in (("SDNet 8x32 QPSK", sd, (32, 8, "qpsk"), False),
                                                ("hypernet-DeepSIC 12x8 BPSK", hp, (12, 8, "bpsk"), True),
                                                ("HyperMIMO 12x6 QPSK", hm, (12, 6, "qpsk"), False)):
            y, h, nv, tags = _frame_stream(nr, nt, frames, frame_data, real_channel=real)
            kernel = load_detector(path, SystemSpec(nr, nt, mod))

            def run_fg():
                det = neural_detector(nr, nt, mod, str(path))
                det.wait_idle()
                return run_flowgraph(_neural_fg(det, y, tags, null_outputs=nt), timeout_s)

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


def bench_fallback_flowgraph(bundle: str, frames: int = 256, frame_data: int = 64, repeats: int = 5,
                             timeout_s: float = 600) -> dict:
    """The cost of the envelope check inside the envelope: the neural detector block with a
    bundle that carries an envelope, on frames whose estimates put them in its middle (so no
    frame falls back), with the MMSE fallback on and off, interleaved, best of ``repeats``.
    Also the share of the frames the fallback detected (0 expected) and, for scale, MMSE alone
    on frames outside (every frame falling back)."""
    quiet_info_logs()
    torch.set_num_threads(TORCH_THREADS_PER_BLOCK)
    kernel = load_detector(bundle)
    if kernel.envelope is None:
        raise ValueError(f"{bundle}: the bundle has no envelope (neuralmimo bundle envelope {bundle})")
    nr, nt, mod = kernel.nr, kernel.nt, kernel.constellation.name
    y, h, _, _ = _frame_stream(nr, nt, frames, frame_data, real_channel=kernel.real_channels_only)
    env = kernel.envelope
    k = nt if env.intervals(nt) else max(u for u in env.user_counts if env.intervals(u))
    lo, hi = max(env.intervals(k), key=lambda iv: iv[1] - iv[0])
    n_p = env.n_pilots or 0
    energy = h[:, :, :k].abs().double().square().sum((1, 2))
    r = 10 ** (((lo + hi) / 2 - env.offset_db(k)) / 10)
    nv = energy / (nr * (r + (k / n_p if n_p else 0.0)))  # the middle of the envelope, exactly
    tags = [gr_tag(f * frame_data, key, value) for f in range(frames)
            for key, value in (("frame_start", pmt.from_long(f)), ("csi", csi_to_pmt(h[f])),
                               ("noise_var", pmt.from_double(float(nv[f])))) + ((("n_users", pmt.from_long(k)),)
                                                                               if k != nt else ())]
    best = {True: float("inf"), False: float("inf")}
    shares = {}
    for _ in range(repeats):
        for on in (True, False):
            det = neural_detector(nr, nt, mod, str(bundle), fallback=on)
            det.wait_idle()
            best[on] = min(best[on], run_flowgraph(_neural_fg(det, y, tags, null_outputs=nt), timeout_s))
            shares[on] = det.fallback_frames / frames
            det.close()
    n = frames * frame_data
    return {"bundle": str(bundle), "frames": frames, "frame_data": frame_data, "envelope_snr_db": (lo + hi) / 2,
            "vps_fallback_on": n / best[True], "vps_fallback_off": n / best[False],
            "ratio_on_to_off": best[False] / best[True], "fallback_share": shares[True]}


def format_bench_fallback(r: dict) -> str:
    return (f"{r['bundle']}: {r['frames']} frames x {r['frame_data']} vectors at {r['envelope_snr_db']:g} dB (inside "
            f"its envelope): block {r['vps_fallback_on']:,.0f} vectors/s with the MMSE fallback on, "
            f"{r['vps_fallback_off']:,.0f} with it off: {r['ratio_on_to_off']:.3f}x (fallback on "
            f"{r['fallback_share']:.0%} of the frames)")


def bench_dial_flowgraph(bundle: str, keeps: list[float], frames: int = 16, frame_data: int = 1024,
                         repeats: int = 2, timeout_s: float = 600) -> list[dict]:
    """A DetNet/WeSNet bundle in the neural detector block at each kept fraction, on the same
    frames (vector sources with the estimator's tags -> block at ``keep`` -> null sinks), in this
    process: flowgraph vectors/s, the block's own seconds in detection (its per-model timing)
    and the FLOPs per vector; best of ``repeats``. The speed-up is against the largest fraction."""
    quiet_info_logs()
    torch.set_num_threads(TORCH_THREADS_PER_BLOCK)
    kernel = load_detector(bundle)
    nr, nt, mod = kernel.nr, kernel.nt, kernel.constellation.name
    y, h, nv, tags = _frame_stream(nr, nt, frames, frame_data, real_channel=True)
    rows = []
    for keep in keeps:
        best_fg, best_block = float("inf"), float("inf")
        for _ in range(repeats):
            det = neural_detector(nr, nt, mod, str(bundle), keep=keep)
            det.wait_idle()
            best_fg = min(best_fg, run_flowgraph(_neural_fg(det, y, tags, null_outputs=nt), timeout_s))
            best_block = min(best_block, det.switch.detection_seconds())
            options = det.model_info()["options"]
            det.close()
        kernel.configure(keep=keep)
        n = frames * frame_data
        rows.append({"keep": keep, "options": options, "vectors": n, "flowgraph_vps": n / best_fg,
                     "block_detect_seconds_per_vector": best_block / n, "flops_per_vector": kernel.flops_per_vector(frame_data)})
    ref = max(rows, key=lambda r: r["keep"])
    for r in rows:
        r["speedup_block"] = ref["block_detect_seconds_per_vector"] / r["block_detect_seconds_per_vector"]
        r["speedup_flowgraph"] = r["flowgraph_vps"] / ref["flowgraph_vps"]
        r["flops_ratio"] = ref["flops_per_vector"] / r["flops_per_vector"]
    return rows


def format_bench_dial_flowgraph(rows: list[dict], bundle: str) -> str:
    lines = [f"complexity dial of {bundle} in the neural detector block (same frames, 1 torch thread)",
             f"{'kept':>6} | {'FLOPs/vector':>13} | {'FLOP ratio':>10} | {'block us/vector':>15} | {'speed-up':>8} | "
             f"{'flowgraph vectors/s':>19} | {'speed-up':>8}"]
    for r in rows:
        lines.append(f"{100 * r['keep']:>5g}% | {r['flops_per_vector']:>13,.0f} | {r['flops_ratio']:>9.2f}x | "
                     f"{1e6 * r['block_detect_seconds_per_vector']:>15.2f} | {r['speedup_block']:>7.2f}x | "
                     f"{r['flowgraph_vps']:>19,.0f} | {r['speedup_flowgraph']:>7.2f}x")
    lines.append("block: seconds the block spends in its detector (its own timing); flowgraph: sources with the "
                 "estimator's tags -> block -> null sinks; speed-ups against the largest kept fraction")
    return "\n".join(lines)


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
        (pickled / WEIGHTS).write_bytes(PICKLED_DICT)
        m = json.loads((pickled / MANIFEST).read_text())
        m["weights_sha256"] = file_sha256(pickled / WEIGHTS)
        (pickled / MANIFEST).write_text(json.dumps(m))
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
             f"{r['rss_growth_pct']:+.1f} %"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- fault soak
class _FailingDeepSIC(HyperDeepSICDetector):
    """hypernetwork-DeepSIC that passes validation (its dummy frame has noise variance 1, the
    fingerprint probe exactly ``PROBE_NOISE``) and then
    raises on every frame: a model that fails only at run time. Registered for the soak only."""

    codec = dataclasses.replace(HYPERNET_CODEC, architecture="soak-failing-deepsic")

    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        nv = torch.as_tensor(noise_var, dtype=torch.float32)
        probe = torch.tensor(FrameDetector.PROBE_NOISE, dtype=torch.float32)
        if not bool(((nv == 1) | (nv == probe)).all()):  # the dummy frame and the fingerprint probe pass
            raise RuntimeError("soak: this model fails at run time")
        return super().detect_with_llr(y, h, noise_var, n_users, llr)


FAULT_SOAK_KINDS = ("slip-delete", "slip-insert", "drop-frame", "repeat-frame", "nan-burst", "absurd-tag", "bad-time")
# what the soak's side thread does besides requesting models (issue 29): malformed drift events
# on the re-trainer's status port, and the CSI log folder removed and restored
MALFORMED_DRIFT = ({"event": "drift", "frame": "seven"}, {"event": "drift", "frame": float("nan")},
                   {"event": "drift", "frame": [3]}, {"event": "drift", "frame": -4})


def fault_schedule(rng: np.random.Generator, n_frames: int, length: int, span: int, spacing=(10, 30)):
    """Random stream faults, one every ``spacing`` frames (after 8 clean frames), and what each
    may cost. Returns ``(faults, corrupt_frames, events)``; an event is a dict with the kind, the
    source frame it lands in, and ``hit``: the source frames it may spoil (a silent slip: its
    frame and the next, found from the pilots; a stamped overflow dropping a frame: that frame;
    a repeated frame: none, it arrives twice)."""
    faults, corrupt, events = [], [], []
    k = 8
    while k < n_frames - 4:
        kind = FAULT_SOAK_KINDS[int(rng.integers(len(FAULT_SOAK_KINDS)))]
        o = k * length + int(rng.integers(0, length))
        c = int(rng.integers(1, span))
        if kind == "slip-delete":
            faults.append(Fault(o, "delete", c, stamped=False))
            hit = set(range(o // length, (o + c) // length + 2))
        elif kind == "slip-insert":
            faults.append(Fault(o, "insert", c))
            hit = {o // length, o // length + 1}
        elif kind == "drop-frame":
            o, c = k * length, length
            faults.append(Fault(o, "delete", c, stamped=True))
            hit = {k}
        elif kind == "repeat-frame":
            o, c = k * length, length
            faults.append(Fault(o, "repeat", c))
            hit = set()
        elif kind == "nan-burst":
            o, c = k * length + int(rng.integers(0, length - 64)), int(rng.integers(1, 64))
            faults.append(Fault(o, "nan", c))
            hit = {k}
        elif kind == "bad-time":  # an rx_time tag with a NaN fraction: ignored, nothing lost
            o, c = k * length + int(rng.integers(0, length)), 1
            faults.append(Fault(o, "bad-time", c))
            hit = set()
        else:
            o, c = k * length, 0
            corrupt.append(k)
            hit = {k}
        events.append({"kind": kind, "offset": o, "count": c, "frame": o // length, "hit": sorted(hit)})
        k += int(rng.integers(*spacing))
    return faults, corrupt, events


def soak_faults(models: Path, vectors: int = 10_000_000, interval_s: float = 0.25, seed: int = 0,
                n_pilots: int = 32, n_data: int = 992, snr_db: float = 10.0, timeout_s: float = 3600,
                progress: bool = True) -> dict:
    """The receiver a USRP feeds (count framing with ``rx_time``) under a fault schedule.

    frame source -> ``deepsic-sed`` channel (12x8 BPSK, ``snr_db`` in the deepsic convention)
    -> :class:`~gnuradio.neuralmimo.apps.faults.fault_injector` (silent slips of up to half a frame,
    both ways; frames dropped by a stamped overflow; repeated frames; NaN bursts) -> LS
    estimator (count framing, ``rx_time``) -> :class:`~gnuradio.neuralmimo.apps.faults.tag_corruptor`
    (all-zero ``csi``, ``noise_var`` 1e30) -> neural detector (hypernetwork-DeepSIC) -> error-rate
    probe, while a thread requests models every ``interval_s``: the two shipped bundles, invalid
    ones (flipped weight byte, pickle, missing, wrong architecture) and one that passes validation
    but fails at run time (to be reverted). Disk and message faults (issue 29) on the side: a
    *CSI Logger* on the estimator's output whose log folder the thread removes and restores, a
    *Frame Recorder* on the radio streams writing to a full disk (``/dev/full``), rx_time tags
    with a NaN fraction in the schedule, and malformed ``drift`` events posted to a *Background
    Re-trainer* fed by the detector's ``status`` (each must be ignored, its thread alive).

    Ground truth is the schedule: every source frame that no fault may spoil (a *good* frame)
    must reach the probe under its own number and match its reference. Reports vectors in/out,
    frames lost/duplicated/misnumbered, re-acquisitions and their latency in frames, model
    reverts, RSS growth; ``ok`` is False on any misnumbered frame, any good frame lost or
    unmatched, or any duplicate other than the repeated frames."""
    quiet_info_logs()
    nr, nt, length = 12, 8, n_pilots + n_data
    samp_rate = 1e6
    n_frames = max(16, -(-vectors // n_data))
    span = (length - 1) // 2
    rng = np.random.default_rng(seed)
    faults, corrupt, events = fault_schedule(rng, n_frames, length, span)
    valid = [models / "hypernet-deepsic-sed-n12", models / "hypernet-deepsic-tv-n12"]
    registered = "soak-failing-deepsic" not in REGISTRY
    REGISTRY["soak-failing-deepsic"] = _FailingDeepSIC
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            flipped, pickled, failing = tmp / "flipped", tmp / "pickled", tmp / "failing"
            for b in (flipped, pickled, failing):
                shutil.copytree(valid[0], b)
            raw = bytearray((flipped / WEIGHTS).read_bytes())
            raw[-3] ^= 0xFF
            (flipped / WEIGHTS).write_bytes(bytes(raw))
            (pickled / WEIGHTS).write_bytes(PICKLED_DICT)
            m = json.loads((pickled / MANIFEST).read_text())
            m["weights_sha256"] = file_sha256(pickled / WEIGHTS)
            (pickled / MANIFEST).write_text(json.dumps(m))
            m = json.loads((failing / MANIFEST).read_text())
            m["architecture"]["name"] = "soak-failing-deepsic"
            (failing / MANIFEST).write_text(json.dumps(m))
            invalid = [flipped, pickled, tmp / "missing", models / "sdnet-learngene-umi50"]

            tb = gr.top_block()
            logger = csi_logger(nr, nt, str(tmp / "csi-log"), chunk_frames=64)
            (tmp / "full").mkdir()
            for r in range(nr):
                (tmp / "full" / f"rec-ch{r}.sigmf-data").symlink_to("/dev/full")
            recorder = frame_recorder(nr, str(tmp / "full"), "rec", samp_rate)
            retrainer = background_retrainer(str(tmp / "csi-log"), str(tmp / "watch"), min_frames=10_000_000)
            src = mimo_frame_source(nt, n_pilots, n_data, "bpsk", False, seed, n_frames)
            chan = mimo_channel(nt, nr, "deepsic-sed", snr_db, length, 0, 0.0, seed, "deepsic")
            inj = fault_injector(nr, faults, samp_rate)
            est = ls_channel_estimator(nr, nt, n_pilots, n_data, "count", samp_rate=samp_rate)
            cor = tag_corruptor(nr, nr, nt, corrupt)
            det = neural_detector(nr, nt, "bpsk", str(valid[0]))
            probe = error_rate_probe(nt, n_data, "bpsk", seed)
            for k in range(nt):
                tb.connect((src, k), (chan, k))
                tb.connect((det, k), (probe, k))
            for r in range(nr):
                tb.connect((chan, r), (inj, r))
                tb.connect((inj, r), (est, r))
                tb.connect((est, r), (cor, r))
                tb.connect((cor, r), (det, r))
                tb.connect((est, r), (logger, r))
                tb.connect((inj, r), (recorder, r))
            tb.msg_connect((det, "status"), (retrainer, "status"))
            done = threading.Event()
            requests = {"valid": 0, "invalid": 0, "failing": 0, "malformed_drift": 0, "log_outages": 0}
            log_dir, away = tmp / "csi-log", tmp / "csi-log-away"

            def swapper():
                i = 0
                while not done.wait(interval_s):
                    if i % 5 == 1 and probe.frames() < 0.8 * n_frames:  # a malformed drift event on the
                        # re-trainer's status port (not near the end: messages after the stop are not handled)
                        event = MALFORMED_DRIFT[requests["malformed_drift"] % len(MALFORMED_DRIFT)]
                        retrainer.to_basic_block()._post(pmt.intern("status"), pmt.to_pmt(event))
                        requests["malformed_drift"] += 1
                    if i % 4 == 0 and log_dir.exists():  # the log folder removed ...
                        log_dir.rename(away)
                        requests["log_outages"] += 1
                    elif i % 4 == 2 and away.exists():  # ... and restored
                        away.rename(log_dir)
                    if i % 7 == 6:
                        det.set_model(str(failing))
                        requests["failing"] += 1
                    elif i % 3 == 2:
                        det.set_model(str(invalid[(i // 3) % len(invalid)]))
                        requests["invalid"] += 1
                    else:
                        det.set_model(str(valid[(requests["valid"] + 1) % 2]))
                        requests["valid"] += 1
                    i += 1

            rss_start = _rss_bytes()
            rss_warm = [None]
            rss_trace: list[tuple[int, int]] = []  # (frames received, RSS MB) every 10 %
            th = threading.Thread(target=swapper, daemon=True)
            th.start()
            stop_poll = threading.Event()
            bar = tqdm(total=n_frames, unit="frame", desc="fault soak", disable=not progress)

            retrainer_alive = []  # the re-trainer's thread, sampled while the flowgraph runs

            def poll():
                while not stop_poll.wait(0.5):
                    retrainer_alive.append(retrainer._thread is not None and retrainer._thread.is_alive())
                    bar.n = probe.frames()
                    if rss_warm[0] is None and probe.frames() >= n_frames // 10:
                        rss_warm[0] = _rss_bytes()
                    if probe.frames() >= len(rss_trace) * n_frames // 10:
                        rss_trace.append((probe.frames(), round(_rss_bytes() / 2**20)))
                    bar.set_postfix(reacq=len(est.reacquisitions), reverts=len(det.reverts),
                                    refused=len(det.refusals))
                    bar.refresh()

            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
            wall = run_flowgraph(tb, timeout_s)
            done.set()
            stop_poll.set()
            th.join()
            poller.join()
            bar.n = probe.frames()
            bar.close()
            det.wait_idle()
            if away.exists():
                away.rename(log_dir)
            retrainer_alive = bool(retrainer_alive) and all(retrainer_alive)
            retrainer_events = retrainer.events()
            logger.stop()
            try:
                logged = int(read_csi_log(log_dir).h.shape[0])
            except ValueError:
                logged = 0
            retrainer.stop()
            rss_end = _rss_bytes()
            det.close()
    finally:
        if registered:
            REGISTRY.pop("soak-failing-deepsic", None)

    # ---- compare with the ground truth
    records = probe.frame_records()
    seen: dict[int, int] = {}
    for number, _, _ in records:
        seen[number] = seen.get(number, 0) + 1
    spoiled = {f for e in events for f in e["hit"]} | {f for f in det.failed_frames if f is not None}
    repeated = {e["frame"] for e in events if e["kind"] == "repeat-frame"}
    good = [f for f in range(n_frames) if f not in spoiled]
    unmatched = probe.unmatched_frames()
    misnumbered = [(n, m) for n, m in unmatched if m is not None]
    lost_good = sorted({f for f in good if f not in seen} | {n for n, m in unmatched if m is None and n in good})
    unexpected_dup = sorted(f for f, c in seen.items() if c > (2 if f in repeated else 1))
    # re-acquisition latency: source frames from each silent slip to the frame framing moved at
    slips = [(e, a) for e, a in zip([e for e in events if e["kind"] != "absurd-tag"], inj.applied)
             if e["kind"] in ("slip-delete", "slip-insert")]
    pilot_reacq = [r for r in est.reacquisitions if r["source"] == "pilots"]
    latency = []
    for e, a in slips:
        after = [r for r in pilot_reacq if r["offset"] >= a["out_offset"] - span]
        if after:
            latency.append(after[0]["frame"] - e["frame"])
    good_set = set(good)
    good_errors = sum(e for n, e, _ in records if n in good_set and seen[n] == 1)
    good_symbols = sum(s for n, _, s in records if n in good_set and seen[n] == 1)
    warm = rss_warm[0] or rss_start
    kinds = {k: sum(1 for e in events if e["kind"] == k) for k in FAULT_SOAK_KINDS}
    r = {"vectors_in": n_frames * n_data, "vectors_out": probe.symbols() // nt, "frames_sent": n_frames,
         "frames_received": len(records), "faults": kinds, "faults_applied": len(inj.applied),
         "tags_corrupted": len(cor.corrupted), "good_frames": len(good), "lost_good_frames": lost_good,
         "misnumbered_frames": misnumbered, "unexpected_duplicates": unexpected_dup,
         "repeated_frames_seen_twice": sum(1 for f in repeated if seen.get(f) == 2),
         "reacquisitions_pilots": len(pilot_reacq),
         "reacquisitions_rx_time": sum(1 for x in est.reacquisitions if x["source"] == "rx_time"),
         "silent_slips": len(slips), "slips_reacquired": len(latency),
         "latency_frames_max": max(latency, default=0), "latency_frames_mean": float(np.mean(latency)) if latency else 0.0,
         "good_frame_ser": good_errors / max(good_symbols, 1),
         "estimator_problems": est.problems(), "detector_problems": det.problems(), "probe_problems": probe.problems(),
         "swaps": len(det.swaps) - 1, "requests": requests, "refusals": len(det.refusals), "reverts": len(det.reverts),
         "model_failed_frames": len(det.failed_frames),
         "rss_warm_mb": warm / 2**20, "rss_end_mb": rss_end / 2**20, "rss_growth_pct": 100.0 * (rss_end - warm) / warm,
         "rss_trace_mb": rss_trace, "wall_s": wall, "vectors_per_s": n_frames * n_data / wall,
         "events": events, "reacquisitions": est.reacquisitions,
         "bad_timestamps": kinds.get("bad-time", 0),
         "csi_log": {"outages": requests["log_outages"], "frames_logged": logger.status()["frames_logged"],
                     "frames_read_back": logged, "write_failures": logger.status()["write_failures"],
                     "frames_lost": logger.status()["frames_lost"]},
         "recorder_problems": recorder.problems(),
         "retrainer": {"malformed_sent": requests["malformed_drift"], "alive": retrainer_alive,
                       "ignored": sum(e["event"] == "retrain-ignored" for e in retrainer_events),
                       "started": sum(e["event"] == "retrain-started" for e in retrainer_events),
                       "errors": sum(e["event"] == "retrain-error" for e in retrainer_events)}}
    rt = r["retrainer"]
    r["side_ok"] = (rt["alive"] and rt["ignored"] == rt["malformed_sent"] and rt["started"] == rt["errors"] == 0
                    and "write-failed" in r["recorder_problems"]
                    and r["csi_log"]["frames_read_back"] + r["csi_log"]["frames_lost"] == r["csi_log"]["frames_logged"])
    r["ok"] = not (misnumbered or lost_good or unexpected_dup) and r["side_ok"]
    return r


def format_soak_faults(r: dict) -> str:
    f = r["faults"]
    lines = [
        f"fault soak: {r['vectors_in']:,} vectors in, {r['vectors_out']:,} out; {r['frames_sent']:,} frames sent, "
        f"{r['frames_received']:,} received ({r['vectors_per_s']:,.0f} vectors/s, {r['wall_s']:.0f} s)",
        f"  faults applied {r['faults_applied']} + {r['tags_corrupted']} absurd tags: " +
        ", ".join(f"{k} {v}" for k, v in f.items()),
        f"  silent slips {r['silent_slips']}: re-acquired from the pilots {r['slips_reacquired']}, latency "
        f"{r['latency_frames_mean']:.2f} frames mean, {r['latency_frames_max']} max; rx_time re-alignments "
        f"{r['reacquisitions_rx_time']}",
        f"  repeated frames seen twice under their number: {r['repeated_frames_seen_twice']}/{f['repeat-frame']}",
        f"  models: {r['swaps']} swaps, {r['refusals']} refused, {r['reverts']} reverted, frames a model failed on "
        f"{r['model_failed_frames']}",
        f"  good frames {r['good_frames']:,}: lost or unmatched {len(r['lost_good_frames'])}, misnumbered frames "
        f"{len(r['misnumbered_frames'])}, unexpected duplicates {len(r['unexpected_duplicates'])}; SER of good frames "
        f"{r['good_frame_ser']:.2e} -> {'OK' if r['ok'] else 'FAILED'}",
        f"  RSS {r['rss_warm_mb']:.0f} MB after 10 % -> {r['rss_end_mb']:.0f} MB at the end: growth "
        f"{r['rss_growth_pct']:+.1f} %",
    ]
    c, rt = r["csi_log"], r["retrainer"]
    lines.append(f"  disk and messages: CSI log removed and restored {c['outages']} times: {c['frames_logged']:,} frames "
                 f"logged, {c['frames_read_back']:,} read back, {c['frames_lost']} dropped while held "
                 f"({c['write_failures']} failed writes); recorder on a full disk: {r['recorder_problems']}; "
                 f"{rt['malformed_sent']} malformed drift events: {rt['ignored']} ignored, re-trainer "
                 f"{'alive' if rt['alive'] else 'DEAD'}; {r['bad_timestamps']} rx_time tags with a NaN fraction "
                 f"(estimator: {r['estimator_problems'].get('bad-rx-time', 0)} counted)")
    if not r["ok"]:
        lines.append(f"  lost good: {r['lost_good_frames'][:20]} misnumbered: {r['misnumbered_frames'][:20]} "
                     f"duplicates: {r['unexpected_duplicates'][:20]}")
    return "\n".join(lines)

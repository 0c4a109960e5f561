"""``neuralmimo adapt-demo``: a receiver that re-trains itself when its users move.

One flowgraph, end to end (frame source -> channel -> LS -> MMSE and the neural detector, with a
CSI Logger and a Background Re-trainer)::

    src --head/throttle--> chan --> est --+--> MMSE ----------------> probe_mmse
                                          +--> neural detector -----> probe_nn
                                          |       | status   ^ watch_dir
                                          |       v          |
                                          |   Background Re-trainer --(neuralmimo adapt, own process)
                                          +--> CSI Logger ----------------^ (the CSI log)

The users start at one drop (the drop the model was trained for); at ``move_frame`` the
channel block switches to another drop. The detector's drift monitor fires, the re-trainer waits
for ``min_frames`` logged frames of the new positions, fine-tunes the model in force on them in
the background, the detector swaps the new bundle in at a frame boundary, and the run continues
``post_frames`` frames after the swap. The source's streams end through ``head`` blocks whose
length is set once the swap is seen, so the flowgraph finishes on its own and every vector sent
is detected (``lost_vectors`` counts the difference).

Results: per-frame errors of both detectors, the drift metric over time, every event (move,
drift, re-training, swap) with its frame and time, a table of SER per segment and a plot.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from neuralmimo.channels import ChannelSpec

from .harness import quiet_info_logs


@dataclass
class AdaptDemoSettings:
    model: Path                 # the bundle in force at the start (trained for the old positions)
    out: Path                   # run folder: CSI log, watch folder, results, plot
    old_channel: dict = field(default_factory=lambda: {"name": "local-scattering", "args": {"seed": 0}})
    new_channel: dict = field(default_factory=lambda: {"name": "local-scattering", "args": {"seed": 5}})
    snr_db: float = 8.0
    snr_convention: str = "hypermimo"
    n_pilots: int = 16
    n_data: int = 240
    frame_rate: float = 150.0   # frames per second (throttle): the air interface's pace
    move_frame: int = 1500
    min_frames: int = 1500      # frames logged after the drift before re-training starts
    post_frames: int = 2000     # frames detected after the swap
    budget_s: float = 300.0     # the re-trainer's time budget (10,000 steps of the LMMSE-start HyperMIMO take ~270 s on 2 cores)
    steps: int = 10000
    lr: float | None = None
    drift_window: int = 256
    drift_threshold: float = 0.2
    max_wait_s: float = 600.0   # give up (and end the run) if no swap comes this long after the move
    seed: int = 1


def _build(s: AdaptDemoSettings, nr: int, nt: int, modulation: str):
    from gnuradio import blocks, gr

    from .. import background_retrainer, csi_logger, error_rate_probe, linear_detector, ls_channel_estimator
    from .. import mimo_channel, mimo_frame_source, neural_detector

    tb = gr.top_block("adapt_demo")
    frame_len = s.n_pilots + s.n_data
    tb.src = mimo_frame_source(nt, s.n_pilots, s.n_data, modulation, seed=s.seed)
    tb.heads = [blocks.head(gr.sizeof_gr_complex, 1 << 62) for _ in range(nt)]
    tb.throttle = blocks.throttle(gr.sizeof_gr_complex, s.frame_rate * frame_len)
    tb.chan = mimo_channel(nt, nr, ChannelSpec.parse(s.old_channel).to_dict(), s.snr_db, frame_len, 0, 0.0,
                           s.seed + 1, s.snr_convention)
    tb.est = ls_channel_estimator(nr, nt, s.n_pilots, s.n_data)
    tb.mmse = linear_detector(nr, nt, modulation, "mmse")
    watch, log = s.out / "watch", s.out / "csi-log"
    tb.det = neural_detector(nr, nt, modulation, str(s.model), str(watch), 0.5, drift_window=s.drift_window,
                             drift_threshold=s.drift_threshold)
    tb.logger = csi_logger(nr, nt, str(log), 256, 200_000_000, description="adapt-demo")
    extra = "" if s.lr is None else f"--lr {s.lr}"
    tb.retrainer = background_retrainer(str(log), str(watch), s.min_frames, s.budget_s, s.steps, 1, 10, extra)
    tb.probe_mmse = error_rate_probe(nt, s.n_data, modulation, s.seed, "MMSE")
    tb.probe_nn = error_rate_probe(nt, s.n_data, modulation, s.seed, "neural")
    for k in range(nt):
        tb.connect((tb.src, k), tb.heads[k])
        tb.connect(tb.heads[k], tb.throttle if k == 0 else (tb.chan, k))
    tb.connect(tb.throttle, (tb.chan, 0))
    for r in range(nr):
        tb.connect((tb.chan, r), (tb.est, r))
        for b in (tb.mmse, tb.det, tb.logger):
            tb.connect((tb.est, r), (b, r))
    for k in range(nt):
        tb.connect((tb.mmse, k), (tb.probe_mmse, k))
        tb.connect((tb.det, k), (tb.probe_nn, k))
    tb.status = blocks.message_debug()
    tb.msg_connect((tb.det, "status"), (tb.retrainer, "status"))
    tb.msg_connect((tb.det, "status"), (tb.status, "store"))
    return tb


def run_adapt_demo(s: AdaptDemoSettings, progress: bool = True) -> dict:
    """Run the demo (module docstring); returns the results also written to ``out/results.json``."""
    import shutil

    from neuralmimo.detectors import load_detector

    quiet_info_logs()
    det0 = load_detector(s.model)
    nr, nt, modulation = det0.nr, det0.nt, det0.constellation.name
    if not (det0.bundle.manifest.get("training") or {}).get("channel_stats"):
        raise ValueError(f"{s.model} records no training channel statistics: its drift monitor would be off "
                         "(neuralmimo bundle stats adds them)")
    for sub in ("watch", "csi-log"):
        shutil.rmtree(s.out / sub, ignore_errors=True)
    (s.out / "watch").mkdir(parents=True, exist_ok=True)
    tb = _build(s, nr, nt, modulation)
    frame_len = s.n_pilots + s.n_data
    timeline, events = [], []
    t0 = time.monotonic()
    state = {"moved": None, "swap": None, "end_frame": None, "gave_up": False}
    done = threading.Event()

    def log(kind, **info):
        events.append({"event": kind, "t": time.monotonic() - t0, **info})
        if progress:
            extra = ", ".join(f"{k}={v}" for k, v in info.items() if k in ("frame", "bundle", "distance", "reason"))
            print(f"[{time.monotonic() - t0:6.1f} s] {kind} {extra}", flush=True)

    def end_at(frame):
        state["end_frame"] = frame
        for h in tb.heads:
            h.set_length(frame * frame_len)

    def watch():
        seen_drift, seen_rt = 0, 0
        while not done.wait(0.2):
            frames = tb.probe_nn.frames()
            d = tb.det.drift()
            timeline.append({"t": time.monotonic() - t0, "frame": frames,
                             "distance": None if d is None else d["distance"]})
            if state["moved"] is None and frames >= s.move_frame:
                tb.chan.set_channel(ChannelSpec.parse(s.new_channel).to_dict())
                state["moved"] = time.monotonic() - t0
                log("move-requested", frame=frames)
            for e in tb.det.drift_events[seen_drift:]:
                log(e["event"], frame=e["frame"], distance=round(e["distance"], 3))
            seen_drift = len(tb.det.drift_events)
            new = tb.retrainer.events()[seen_rt:]
            for e in new:
                log(e["event"], **{k: v for k, v in e.items() if k in ("frame", "bundle", "reason", "since_frame",
                                                                       "seconds", "frames")})
            seen_rt += len(new)
            if state["swap"] is None and state["moved"] is not None:
                swaps = [w for w in tb.det.swaps if "adapted-" in str(w.get("path"))]
                if swaps:
                    state["swap"] = swaps[0]
                    log("swapped", frame=swaps[0]["frame"], bundle=swaps[0]["path"])
                    end_at(swaps[0]["frame"] + s.post_frames)
                elif time.monotonic() - t0 - state["moved"] > s.max_wait_s:
                    state["gave_up"] = True
                    log("gave-up", reason=f"no swap {s.max_wait_s:.0f} s after the move")
                    end_at(frames + 200)

    thread = threading.Thread(target=watch, daemon=True)
    tb.start()
    thread.start()
    tb.wait()
    done.set()
    thread.join()
    wall = time.monotonic() - t0
    return _results(s, tb, timeline, events, state, wall, frame_len, nt)


def _segment(records, lo, hi):
    sel = [(e, n) for f, e, n in records if lo <= f < hi]
    errors, symbols = sum(e for e, _ in sel), sum(n for _, n in sel)
    return {"frames": len(sel), "errors": errors, "symbols": symbols, "ser": errors / symbols if symbols else None}


def _results(s, tb, timeline, events, state, wall, frame_len, nt) -> dict:
    nn, mmse = tb.probe_nn.frame_records(), tb.probe_mmse.frame_records()
    sent = state["end_frame"]
    move = tb.chan.channel_changes[0][0] if tb.chan.channel_changes else None
    drift = next((e for e in tb.det.drift_events if e["event"] == "drift"), None)
    swap = state["swap"]
    segs = {}
    if move is not None:
        segs["before the move"] = (0, move)
        end = swap["frame"] if swap else 1 << 62
        segs["after the move, old model"] = (move, end)
        if swap:
            segs["after adaptation"] = (swap["frame"], 1 << 62)
    table = {name: {"neural": _segment(nn, lo, hi), "mmse": _segment(mmse, lo, hi)} for name, (lo, hi) in segs.items()}
    rt = tb.retrainer.events()
    started = next((e for e in rt if e["event"] == "retrain-started"), None)
    finished = next((e for e in rt if e["event"] in ("retrain-done", "retrain-failed")), None)
    drift_t = next((e["t"] for e in events if e["event"] == "drift"), None)
    swap_t = next((e["t"] for e in events if e["event"] == "swapped"), None)
    detected = tb.probe_nn.symbols()
    res = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(s).items()},
           "frames_sent": sent, "vectors_sent": None if sent is None else sent * s.n_data,
           "vectors_detected_neural": detected // nt, "vectors_detected_mmse": tb.probe_mmse.symbols() // nt,
           "lost_vectors": None if sent is None else sent * s.n_data - detected // nt,
           "move_frame": move, "drift_frame": None if drift is None else drift["frame"],
           "swap_frame": None if swap is None else swap["frame"], "swap_bundle": None if swap is None else swap["path"],
           "drift_to_swap_s": None if drift_t is None or swap_t is None else swap_t - drift_t,
           "drift_to_swap_frames": None if drift is None or swap is None else swap["frame"] - drift["frame"],
           "retrain_seconds": None if finished is None else finished.get("seconds"),
           "retrain_started_frames": None if started is None else started.get("frames"),
           "segments": table, "events": events, "timeline": timeline,
           "retrainer_events": [{k: v for k, v in e.items() if k != "command"} for e in rt],
           "detector_problems": tb.det.problems(), "wall_s": wall, "gave_up": state["gave_up"]}
    res["per_frame"] = {"neural": nn, "mmse": mmse}
    s.out.mkdir(parents=True, exist_ok=True)
    (s.out / "results.json").write_text(json.dumps({k: v for k, v in res.items() if k != "per_frame"}, indent=1,
                                                   default=str) + "\n")
    plot_adapt_demo(res, s.out / "adapt_demo.png")
    return res


def plot_adapt_demo(res: dict, path: Path, window: int = 200) -> None:
    """SER of both detectors (moving average over ``window`` frames), the drift distance and the
    events over frames."""
    from neuralmimo.lab.figures import plt, save_figure

    fig, (ax, axd) = plt.subplots(2, 1, figsize=(8, 5.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    for name, color in (("mmse", "tab:gray"), ("neural", "tab:green")):
        rec = res["per_frame"][name]
        frames = [f for f, _, _ in rec]
        ser = []
        e_sum = n_sum = 0
        for i, (_, e, n) in enumerate(rec):
            e_sum += e
            n_sum += n
            if i >= window:
                e_sum -= rec[i - window][1]
                n_sum -= rec[i - window][2]
            ser.append(max(e_sum / n_sum, 1e-5) if n_sum else None)
        label = "MMSE" if name == "mmse" else "neural detector (re-trained in the background)"
        ax.plot(frames[window:], ser[window:], color=color, label=label)  # full windows only
    ax.set_yscale("log")
    ax.set_ylabel(f"SER (moving mean, {window} frames)")
    axd.plot([p["frame"] for p in res["timeline"] if p["distance"] is not None],
             [p["distance"] for p in res["timeline"] if p["distance"] is not None], color="tab:purple")
    axd.axhline(res["settings"]["drift_threshold"], color="tab:purple", ls=":", lw=1)
    axd.set_ylabel("drift: covariance\ndistance")
    axd.set_xlabel("frame")
    started = next((e for e in res["events"] if e["event"] == "retrain-started"), None)
    start_frame = None
    if started is not None:  # the frame the receiver was at when the re-trainer started
        start_frame = min(res["timeline"], key=lambda p: abs(p["t"] - started["t"]))["frame"]
    marks = [(res.get("move_frame"), "users move", "tab:red"), (res.get("drift_frame"), "drift", "tab:purple"),
             (start_frame, "re-training starts", "tab:orange"), (res.get("swap_frame"), "new model swapped in", "tab:blue")]
    lo, hi = ax.get_ylim()
    for frame, text, color in marks:
        if frame is not None:
            for a in (ax, axd):
                a.axvline(frame, color=color, ls="--", lw=1)
            ax.text(frame, lo * 1.15, " " + text, color=color, fontsize=8, va="bottom", rotation=90)
    if res.get("drift_frame") is not None:
        ax.axvspan(res["drift_frame"], res["swap_frame"] or ax.get_xlim()[1], color="tab:blue", alpha=0.06,
                   label="collecting CSI, then re-training")
    ax.grid(alpha=0.3, which="both")
    axd.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    t = res.get("drift_to_swap_s")
    ax.set_title("Site adaptation in a running flowgraph" + ("" if t is None else f": drift to swap {t:.0f} s"))
    save_figure(fig, path)


def format_adapt_demo(res: dict) -> str:
    lines = ["segment                     | frames |   neural SER |     MMSE SER",
             "----------------------------+--------+--------------+-------------"]
    for name, seg in res["segments"].items():
        n, m = seg["neural"], seg["mmse"]
        fmt = (lambda x: "n/a" if x is None else f"{x:.3e}")
        lines.append(f"{name:<27} | {n['frames']:>6} | {fmt(n['ser']):>12} | {fmt(m['ser']):>12}")
    lines.append(f"move at frame {res['move_frame']}, drift at frame {res['drift_frame']}, swap at frame "
                 f"{res['swap_frame']} ({res['swap_bundle']})")
    t, f = res["drift_to_swap_s"], res["drift_to_swap_frames"]
    lines.append("drift to swap: " + ("no swap" if t is None else f"{t:.1f} s, {f} frames") +
                 (f"; re-training took {res['retrain_seconds']:.1f} s" if res.get("retrain_seconds") else ""))
    lines.append(f"vectors sent {res['vectors_sent']}, detected by the neural detector {res['vectors_detected_neural']}, "
                 f"by MMSE {res['vectors_detected_mmse']}: lost {res['lost_vectors']}")
    return "\n".join(lines)


def compare_on_channel(bundles: dict, channel: dict, s: AdaptDemoSettings, snrs: list[float], frames: int = 3000,
                       target: float = 1e-3) -> dict:
    """Each bundle (``{label: path}``) and MMSE on the same ``frames`` frames of ``channel`` at each
    SNR (the demo's convention, LS CSI from its DFT pilots, :func:`~neuralmimo.datasets.draw_channel_batch`):
    SER per SNR and the SNR at which each crosses ``target`` (log-interpolated)."""
    import torch

    from neuralmimo.channels import make_channel
    from neuralmimo.datasets import draw_channel_batch
    from neuralmimo.detectors import linear_detect, load_detector
    from neuralmimo.metrics import snr_at

    dets = {name: load_detector(path) for name, path in bundles.items()}
    first = next(iter(dets.values()))
    const = first.constellation
    chan = make_channel(channel, first.nr, first.nt)
    ser = {name: [] for name in [*dets, "MMSE"]}
    for snr in snrs:
        b = draw_channel_batch(chan, const, frames, s.n_data, snr, torch.Generator().manual_seed(11),
                               convention=s.snr_convention, csi="ls", n_pilots=s.n_pilots)
        for name, det in dets.items():
            ser[name].append(float((const.hard_decision(det.detect(b.y, b.h, b.noise_var)) != b.idx).double().mean()))
        x, _ = linear_detect(b.y, b.h, b.noise_var, "mmse", const)
        ser["MMSE"].append(float((const.hard_decision(x) != b.idx).double().mean()))
    return {"channel": channel, "snr_db": list(snrs), "target": target, "symbols_per_point": frames * s.n_data * first.nt,
            "ser": ser, "snr_at_target": {name: snr_at(target, snrs, v) for name, v in ser.items()}}


def format_comparison(c: dict) -> str:
    names = list(c["ser"])
    lines = [f"on the new positions ({ChannelSpec.parse(c['channel'])}), {c['symbols_per_point']:,} symbols per point",
             "SNR [dB] | " + " | ".join(f"{n:>14}" for n in names)]
    for i, snr in enumerate(c["snr_db"]):
        lines.append(f"{snr:>8.1f} | " + " | ".join(f"{c['ser'][n][i]:>14.3e}" for n in names))
    lines.append(f"SNR at SER {c['target']:g} | " + " | ".join(
        f"{'not reached' if v != v else f'{v:.2f} dB':>14}" for v in c["snr_at_target"].values()))
    return "\n".join(lines)

"""``neuralmimo bundle envelope``: measure where a bundle's model is not worse than MMSE.

The sweep draws frames as ``neuralmimo sim`` does on the system the manifest
records (its channel, ``Nr``, modulation, pilots -- LS CSI, or perfect CSI where ``n_pilots`` is
null -- and SNR convention; a model of the paper's real-valued DeepSIC receiver gets the real
channel its pipeline made from a complex one) at each nominal SNR, for every user count the model serves
(``1..K_max`` for a hypernetwork, ``Nt`` otherwise), and detects each with MMSE and the model
(fallback off). The frames are then sorted into bins around the nominal SNRs by their *estimated*
SNR (:func:`~neuralmimo.envelope.estimate_snr_db`, what the receiver decides on). In a bin the
model is *worse* when the paired 95 % interval of the SER difference lies above zero, *not
worse* when it does not and the measured difference is not positive or the interval lies below
10 % of MMSE's SER (:func:`~neuralmimo.envelope.paired_difference`); the envelope is the runs of
bins where it is not worse
(:func:`~neuralmimo.envelope.intervals_from_sweep`). It is written into the manifest's
``envelope`` section (weights untouched, like ``bundle stats``), then checked by a second sweep
on independent frames (seed + 1) with the fallback on: the model with its fallback must not be
worse than MMSE anywhere (``validation`` in each point; the command reports any point that is).
"""

from __future__ import annotations

import datetime
import json
import math
from pathlib import Path

import torch
from tqdm import tqdm

from ..bundle import MANIFEST, read_manifest
from ..channels import beamformed_gains, make_channel
from ..datasets import draw_frames
from ..detectors import SystemSpec, linear_detect, load_detector
from ..envelope import ENVELOPE_VERSION, check_envelope, estimate_snr_db, intervals_from_sweep, paired_difference
from ..metrics import error_rate_interval
from ..snr import convert_snr_db, noise_variance
from .figures import plt, save_figure

DEFAULT_TOP_DB = 30.0
DEFAULT_STEP_DB = 2.0
BELOW_TRAINING_DB = 5.0


def default_snr_grid(system: dict, step: float = DEFAULT_STEP_DB) -> list[float]:
    """From 5 dB below the training range (its lowest SNR; 0 dB where none is recorded) to 30 dB
    in ``step`` dB (30 dB appended where the steps miss it)."""
    lo = (min(system["snr_db"]) if system["snr_db"] else 0.0) - BELOW_TRAINING_DB
    n = int(math.floor((DEFAULT_TOP_DB - lo) / step + 1e-9)) + 1
    grid = [round(lo + i * step, 6) for i in range(n)]
    return grid if grid[-1] >= DEFAULT_TOP_DB - 1e-9 else grid + [DEFAULT_TOP_DB]


def supported_user_counts(path) -> list[int]:
    """Every user count the bundle's model serves: ``1..K_max`` (hypernetworks) or ``Nt``."""
    det = load_detector(path)
    return list(range(1, det.nt + 1)) if det.serves_fewer_users else [det.nt]


MIN_BIN_FRAMES = 20  # fewer frames in a bin decide nothing: the bin is left out of the envelope


def _receiver_channel(det, channel, nr: int, k: int):
    """``(sample(b, g) -> h, E||H||_F^2)`` of the channel as the model's receiver sees it: a model
    of the paper's real-valued DeepSIC receiver on a complex channel model gets the real
    channel its pipeline trained it on (:func:`~neuralmimo.channels.beamformed_gains`, as
    ``lab.deepsic.steps.receiver_channel``); its energy is then measured on 4,096 draws."""
    if det.real_channels_only and not channel.real_valued:
        draws = beamformed_gains(channel.sample(4096, torch.Generator().manual_seed(12345)))
        return (lambda b, g: beamformed_gains(channel.sample(b, g))), float(draws.abs().square().sum((1, 2)).mean())
    return channel.sample, float(channel.mean_energy)


def _frames(det, system: dict, k: int, grid: list[float], symbols: int, frame_data: int, seed: int,
            batch_frames: int = 256):
    """``(index of the nominal SNR, frames, h, noise variance)`` batches at every SNR of ``grid``,
    drawn as ``neuralmimo sim`` draws them (LS estimates from the system's pilots, or perfect
    CSI), and the offset of the convention from the project SNR for ``k`` users."""
    nr, conv = system["nr"], system["snr_convention"]
    sample, energy = _receiver_channel(det, make_channel(system["channel"], nr, k), nr, k)
    offset = convert_snr_db(0.0, "project", conv, channel_energy=energy, nr=nr, nt=k)
    n_pilots = system["n_pilots"] or k
    n_frames = math.ceil(symbols / (k * frame_data))

    def batches():
        for i, snr in enumerate(grid):
            g = torch.Generator().manual_seed(seed * 7919 + i)
            nv = noise_variance(snr, conv, channel_energy=energy, nr=nr, nt=k)
            done = 0
            while done < n_frames:
                b = min(batch_frames, n_frames - done)
                f = draw_frames(sample(b, g), det.constellation, n_pilots, frame_data, nv, g)
                if system["n_pilots"]:
                    h, nv_hat = f.h_ls, f.noise_var_hat
                    if torch.isnan(nv_hat).any():
                        nv_hat = torch.full((b,), nv)
                else:
                    h, nv_hat = f.h, torch.full((b,), nv)
                yield i, f, h, nv_hat
                done += b
    return batches(), offset


def _user_count_sweep(directory: Path, system: dict, k: int, grid: list[float], symbols: int, frame_data: int,
                      seed: int) -> dict:
    """One user count: frames at every nominal SNR of ``grid`` (:func:`_frames`), the model
    (fallback off) and MMSE on each, binned by each frame's estimated SNR."""
    det = load_detector(directory, SystemSpec(system["nr"], k, system["modulation"]))
    const = det.constellation
    batches, offset = _frames(det, system, k, grid, symbols, frame_data, seed)
    snr_est, err_model, err_mmse = [], [], []
    with torch.inference_mode():
        for _, f, h, nv_hat in batches:
            err_model.append((const.hard_decision(det.detect(f.y_d, h, nv_hat)) != f.idx).sum((1, 2)))
            mmse = linear_detect(f.y_d, h, nv_hat, "mmse", const)[0]
            err_mmse.append((const.hard_decision(mmse) != f.idx).sum((1, 2)))
            snr_est.append(estimate_snr_db(h, nv_hat, [k] * h.shape[0], offset, system["n_pilots"]))
    est, em, er = torch.cat(snr_est), torch.cat(err_model), torch.cat(err_mmse)
    per_frame = k * frame_data
    half = (grid[1] - grid[0]) / 2 if len(grid) > 1 else math.inf
    points = []
    for j, centre in enumerate(grid):
        lo = centre - ((centre - grid[j - 1]) / 2 if j else half)
        hi = centre + ((grid[j + 1] - centre) / 2 if j + 1 < len(grid) else half)
        sel = (est >= lo) & (est < hi)
        frames = int(sel.sum())
        p = {"snr_db": centre, "bin": [lo, hi], "frames": frames, "n_symbols": frames * per_frame}
        if frames < MIN_BIN_FRAMES:
            points.append({**p, "ser": 0.0, "ser_ci": [0.0, 1.0], "ser_mmse": 0.0, "ser_mmse_ci": [0.0, 1.0],
                           "diff": 0.0, "diff_ci": [-1.0, 1.0], "worse": True, "not_worse": False, "undecided": True})
            continue
        d = paired_difference(em[sel], er[sel], per_frame)
        points.append({**p, "ser": float(em[sel].sum()) / (frames * per_frame),
                       "ser_ci": list(error_rate_interval(em[sel], per_frame)),
                       "ser_mmse": float(er[sel].sum()) / (frames * per_frame),
                       "ser_mmse_ci": list(error_rate_interval(er[sel], per_frame)),
                       "diff": d["diff"], "diff_ci": d["diff_ci"], "worse": d["worse"], "not_worse": d["not_worse"]})
    return {"n_users": k, "project_offset_db": round(offset, 6), "snr_db": intervals_from_sweep(points),
            "sweep": points}


def measure_envelope(path, snr_db: list[float] | None = None, users: list[int] | None = None,
                     symbols: int = 200_000, frame_data: int = 32, seed: int = 0, progress: bool = True,
                     command: str = "") -> dict:
    """The envelope section of the bundle at ``path`` (not yet written), with each bin's table.

    ``snr_db``: the sweep's nominal SNRs, which are also the centres of the bins the frames are
    sorted into by their estimated SNR (default :func:`default_snr_grid`); ``users``: the user
    counts (default :func:`supported_user_counts`); ``symbols``: complex symbols per nominal
    SNR and user count. A bin with fewer than :data:`MIN_BIN_FRAMES` frames is ``undecided``
    and left out of the envelope.
    """
    directory, manifest = read_manifest(path)
    system = manifest["system"]
    if system["channel"] is None:
        raise ValueError(f"{directory}: the manifest records no training channel (system.channel): nothing to "
                         "sweep on")
    grid = sorted(float(v) for v in (snr_db or default_snr_grid(system)))
    counts = users or supported_user_counts(directory)
    out_users = [_user_count_sweep(directory, system, k, grid, symbols, frame_data, seed)
                 for k in tqdm(counts, desc="user counts", unit="K", disable=not progress)]
    return {"version": ENVELOPE_VERSION, "reference": "mmse", "confidence": 0.95,
            "snr_convention": system["snr_convention"],
            "csi": f"LS, Np={system['n_pilots']}" if system["n_pilots"] else "perfect",
            "users": out_users,
            "measured": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                         "symbols": symbols, "frame_data": frame_data, "seed": seed, "command": command,
                         "channel": system["channel"], "binned_by": "estimated SNR (neuralmimo.envelope)"}}


def write_envelope(path, section: dict) -> Path:
    """Validate ``section`` and write it into the bundle's manifest (weights and every other
    field untouched); returns the bundle folder."""
    directory, manifest = read_manifest(path)
    check_envelope(section, nt=manifest["system"]["nt"], snr_convention=manifest["system"]["snr_convention"])
    raw = json.loads((directory / MANIFEST).read_text())
    raw["envelope"] = section
    (directory / MANIFEST).write_text(json.dumps(raw, indent=2))
    read_manifest(directory)  # what a receiver will read
    return directory


def validate_envelope(path, section: dict, progress: bool = True) -> list[dict]:
    """Sweep the bundle (envelope written) with its fallback on against MMSE on independent
    frames (seed + 1) at the nominal SNRs; each point gets ``validation = {ser, diff_ci, worse,
    fallback_frames}``. Returns the points where the model with its fallback is still worse
    than MMSE at 95 % (should be none)."""
    directory, manifest = read_manifest(path)
    system, measured = manifest["system"], section["measured"]
    grid = [p["snr_db"] for p in section["users"][0]["sweep"]]
    bad = []
    for u in tqdm(section["users"], desc="check with the fallback", unit="K", disable=not progress):
        k = u["n_users"]
        det = load_detector(directory, SystemSpec(system["nr"], k, system["modulation"]))
        const = det.constellation
        batches, _ = _frames(det, system, k, grid, measured["symbols"], measured["frame_data"], measured["seed"] + 1)
        errors = {i: ([], [], []) for i in range(len(grid))}
        with torch.inference_mode():
            for i, f, h, nv_hat in batches:
                x, _, outside = det.detect_with_fallback(f.y_d, h, nv_hat, llr=False)
                mmse = linear_detect(f.y_d, h, nv_hat, "mmse", const)[0]
                errors[i][0].append((const.hard_decision(x) != f.idx).sum((1, 2)))
                errors[i][1].append((const.hard_decision(mmse) != f.idx).sum((1, 2)))
                errors[i][2].append(outside)
        per_frame = k * measured["frame_data"]
        for i, p in enumerate(u["sweep"]):
            em, er, out = (torch.cat(v) for v in errors[i])
            d = paired_difference(em, er, per_frame)
            p["validation"] = {"ser": float(em.sum()) / (em.numel() * per_frame), "diff_ci": d["diff_ci"],
                               "worse": d["worse"], "fallback_frames": float(out.double().mean())}
            if d["worse"]:
                bad.append({"n_users": k, "snr_db": p["snr_db"], **p["validation"]})
    measured["validation_seed"] = measured["seed"] + 1
    return bad


def format_envelope(section: dict, label: str = "") -> str:
    """Markdown: the intervals per user count, then each user count's sweep table."""
    conv = section["snr_convention"]
    lines = [f"Envelope{' of ' + label if label else ''} ({conv} SNR, {section['csi']} CSI; not worse than MMSE "
             f"at {section['confidence']:.0%}, paired: no significant and no measured excess, or below 10 % of "
             f"MMSE's SER; "
             f"{section['measured']['symbols']:,} symbols per nominal SNR, frames binned by their estimated SNR):", ""]
    lines += ["| users | envelope [dB] | worse than MMSE at [dB] |", "|---:|---|---|"]
    for u in section["users"]:
        worse = [p["snr_db"] for p in u["sweep"] if p["worse"] and not p.get("undecided")]
        lines.append(f"| {u['n_users']} | {', '.join(f'{a:g} to {b:g}' for a, b in u['snr_db']) or 'none'} | "
                     f"{', '.join(f'{v:g}' for v in worse) or 'nowhere'} |")
    for u in section["users"]:
        val = any("validation" in p for p in u["sweep"])
        lines += ["", f"K = {u['n_users']}:", "",
                  "| SNR bin [dB] | frames | SER model | SER MMSE | difference (95 % CI) | verdict |"
                  + (" nominal SNR with fallback: SER, MMSE share, worse |" if val else ""),
                  "|---:|---:|---:|---:|---|---|" + ("---|" if val else "")]
        for p in u["sweep"]:
            verdict = ("undecided (too few frames)" if p.get("undecided") else "**worse**" if p["worse"] else
                       "not worse" if p.get("not_worse", True) else "not shown not worse")
            row = (f"| {p['snr_db']:g} | {p['frames']} | {p['ser']:.2e} | {p['ser_mmse']:.2e} | {p['diff']:+.1e} "
                   f"[{p['diff_ci'][0]:+.1e}, {p['diff_ci'][1]:+.1e}] | {verdict} |")
            if val:
                v = p.get("validation", {})
                row += (f" {v.get('ser', float('nan')):.2e}, {v.get('fallback_frames', 0.0):.0%}, "
                        f"{'**yes**' if v.get('worse') else 'no'} |")
            lines.append(row)
    return "\n".join(lines)


def plot_envelope(section: dict, path, title: str = "") -> None:
    """SER vs SNR of the model and MMSE per user count (up to 12 panels), envelope shaded; a point
    without errors is drawn at its 95 % upper bound (a hollow triangle)."""
    users = section["users"][-12:]
    cols = min(len(users), 4)
    rows = math.ceil(len(users) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False, sharey=True)
    for ax in axes.flat[len(users):]:
        ax.set_visible(False)
    for ax, u in zip(axes.flat, users):
        pts = [p for p in u["sweep"] if not p.get("undecided")]
        for lo, hi in u["snr_db"]:
            ax.axvspan(lo - 0.15, hi + 0.15, color="tab:green", alpha=0.15, lw=0)
        for key, ci, label, style in (("ser_mmse", "ser_mmse_ci", "MMSE", "s--"), ("ser", "ser_ci", "model", "o-")):
            seen = [p for p in pts if p[key] > 0]
            line = ax.plot([p["snr_db"] for p in seen], [p[key] for p in seen], style, ms=4, label=label)
            zero = [p for p in pts if p[key] <= 0]
            if zero:
                ax.plot([p["snr_db"] for p in zero], [p[ci][1] for p in zero], "v", mfc="none",
                        color=line[0].get_color(), ms=5)
        worse = [p for p in pts if p["worse"]]
        if worse:
            ax.plot([p["snr_db"] for p in worse], [max(p["ser"], 1e-7) for p in worse], "x", color="tab:red", ms=9,
                    mew=2, label="worse than MMSE")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(f"K = {u['n_users']}", fontsize=10)
        ax.set_xlabel(f"SNR [dB] ({section['snr_convention']})")
    axes[0][0].set_ylabel("SER")
    axes[0][0].plot([], [], "v", mfc="none", color="gray", label="no errors: 95 % bound")
    axes[0][0].fill_between([], [], color="tab:green", alpha=0.15, label="envelope")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    save_figure(fig, path)

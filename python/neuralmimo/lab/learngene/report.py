"""The SDNet + learngene [LG] pipeline's results as figures, tables and ``report.md`` (the paper's numbers
side by side with ours)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..figures import plt, save_figure
from .config import LearngeneConfig

# Table I of the paper (Nconv = 12, SNR 25 dB): ZF and MMSE SER on its target tasks B-F.
PAPER_TABLE_I = {"task": ["B", "C", "D", "E", "F"],
                 "zf": [1.26e-1, 9.64e-2, 1.21e-1, 1.25e-1, 6.48e-2],
                 "mmse": [9.82e-2, 7.82e-2, 1.17e-1, 9.92e-2, 5.02e-2],
                 "sdnet_same_task": [2.01e-2, 1.01e-4, 1.33e-2, 2.30e-2, 5.87e-4]}


def format_baselines(rows: list[dict]) -> str:
    lines = ["| target task | ZF SER | MMSE SER | paper task | paper ZF | paper MMSE |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        p = i if i < 5 else None
        paper = (f"{PAPER_TABLE_I['task'][p]} | {PAPER_TABLE_I['zf'][p]:.2e} | {PAPER_TABLE_I['mmse'][p]:.2e}"
                 if p is not None else "- | - | -")
        lines.append(f"| {r['task']} | {r['zf']:.2e} | {r['mmse']:.2e} | {paper} |")
    return "\n".join(lines) + "\n"


def plot_site(records: dict, mmse_val: float, path: Path, name: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for (scheme, r), color in zip(records.items(), ("tab:blue", "tab:green")):  # orange is MMSE's
        pts = [(h["elapsed_s"], h["val_ser"]) for h in r["history"] if h["val_ser"] > 0]
        ax.semilogy([t for t, _ in pts], [v for _, v in pts], marker=".", color=color, label=scheme)
        if r["beats_mmse"]:
            ax.axvline(r["beats_mmse"]["seconds"], color=color, ls=":", lw=1)
    ax.axhline(mmse_val, color="tab:orange", ls="--", lw=1, label="MMSE (validation)")
    ax.set_xlabel("training time (s)")
    ax.set_ylabel("SER (validation)")
    ax.set_title(f"site {name}: time to beat MMSE (dotted)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def format_site(cfg: LearngeneConfig, summary: dict) -> str:
    n = summary["channels"]
    lines = [f"# Learngene as per-site adaptation: {Path(summary['site']).name}", "",
             f"Site channels: {summary['site']} ({n[0]} train / {n[1]} val / {n[2]} test). SDNet Nconv="
             f"{cfg.individual.n_conv}, up to {cfg.individual.epochs} epochs"
             + (f" or {summary['budget_s']:g} s" if summary["budget_s"] else "") +
             f"; {cfg.data.modulation.upper()} at {cfg.data.snr_db} dB. MMSE on the validation vectors: "
             f"{summary['mmse_val']:.2e} ({summary['val_symbols']} symbols). 'Beats MMSE': the first epoch whose "
             f"validation SER's 95 % upper bound is below MMSE's.", "",
             "| scheme | beats MMSE after | epochs trained | test SER | test ZF | test MMSE |", "|---|---|---|---|---|---|"]
    for scheme, r in summary["schemes"].items():
        b = r["beats_mmse"]
        when = f"{b['seconds']:.0f} s (epoch {b['epoch']})" if b else "never"
        t = r["test"]
        lines.append(f"| {scheme} | {when} | {r['epochs']} | {t['sdnet']:.2e} | {t['zf']:.2e} | {t['mmse']:.2e} |")
    if summary.get("published"):
        lines += ["", f"Published for hot-swap: `{summary['published']}`."]
    lines += ["", "![convergence](convergence.png)", ""]
    return "\n".join(lines) + "\n"


def _gain(test: dict) -> float:
    return test["mmse"]["ser"] / test["sdnet"]["ser"] if test["sdnet"]["ser"] > 0 else math.inf


def _beats_mmse(test: dict) -> bool:
    """SDNet's 95 % interval lies entirely below MMSE's."""
    return test["sdnet"]["ci"][1] < test["mmse"]["ci"][0]


def format_diversity(cfg: LearngeneConfig, recs: list[dict]) -> str:
    dv, ic = cfg.diversity, cfg.individual
    lines = [f"# Where SDNet wins: within-task diversity ({cfg.name})", "",
             f"Scratch SDNet (Nconv={ic.n_conv}, batch {ic.batch_size}, lr {ic.lr}) trained {dv.epochs} epochs on task "
             f"{dv.task} of each variant ({cfg.data.ues_per_task} channels per task, 81/9/10 % split), "
             f"{cfg.data.modulation.upper()} at {cfg.data.snr_db} dB (project convention), LS estimates from "
             f"{cfg.data.n_pilots} pilots. `rho-R`: the task's channels H_u mixed into its anchor H_0 (training channel "
             f"{cfg.data.anchor}) as R*H_0 + sqrt(1-R^2)*H_u, re-normalised; `1-rho^2` is each channel's energy share "
             f"independent of the anchor. `plane-waves-P`: P plane waves with fixed angles and powers, i.i.d. gains per "
             f"channel. SER per complex symbol on the test split ({cfg.data.test_vectors_per_ue} vectors per channel), "
             f"every detector on the same vectors; [95 % interval over channels]. K-best: K={dv.kbest_k} (near-ML) on "
             f"the same LS estimate. `trend`: mean validation SER over the last 10 % of epochs relative to the 10 % "
             f"before (falling = dropped by > 2 standard errors: more epochs would help).", "",
             "| variant | 1-rho^2 | SDNet | ZF | MMSE | K-best | MMSE/SDNet | SDNet beats MMSE | trend |",
             "|---|---:|---|---|---|---|---:|---|---|"]

    def cell(t):
        return f"{t['ser']:.2e} [{t['ci'][0]:.1e}, {t['ci'][1]:.1e}]"

    for r in recs:
        v, t, tr = r["variant"], r["test"], r["trend"]
        share = "-" if v["rho"] is None else f"{1 - v['rho'] ** 2:.3f}"
        trend = "-" if tr["falling"] is None else f"{100 * tr['change']:+.0f} % ({'falling' if tr['falling'] else 'flat'})"
        lines.append(f"| {v['name']} | {share} | {cell(t['sdnet'])} | {cell(t['zf'])} | {cell(t['mmse'])} | "
                     f"{cell(t['kbest'])} | {_gain(t):.2f} | {'yes' if _beats_mmse(t) else 'no'} | {trend} |")
    lines += ["", "![SER vs rho](ser_vs_rho.png)", "", "![learning curves](learning_curves.png)", ""]
    return "\n".join(lines) + "\n"


def plot_diversity(recs: list[dict], path: Path, cfg: LearngeneConfig) -> None:
    """SER of SDNet, ZF, MMSE and K-best against rho (left) and plane-wave paths (right)."""
    groups = [[r for r in recs if r["variant"]["rho"] is not None], [r for r in recs if r["variant"]["rho"] is None]]
    groups = [g for g in groups if g]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4.2), squeeze=False)
    style = {"sdnet": ("SDNet", "tab:blue", "o", "-"), "zf": ("ZF", "tab:red", "s", "--"),
             "mmse": ("MMSE", "tab:orange", "^", "--"),
             "kbest": (f"K-best K={cfg.diversity.kbest_k} (no error: drawn at its 95 % bound)", "k", "x", ":")}
    for ax, g in zip(axes[0], groups):
        xs = range(len(g))
        for key, (label, color, marker, ls) in style.items():
            ser = [r["test"][key]["ser"] for r in g]
            lo = [r["test"][key]["ci"][0] for r in g]
            hi = [r["test"][key]["ci"][1] for r in g]
            # a zero-error point is drawn at its upper bound (no value on a log axis)
            y = [s if s > 0 else h for s, h in zip(ser, hi)]
            err = [[max(0.0, yy - l) for yy, l in zip(y, lo)], [max(0.0, h - yy) for yy, h in zip(y, hi)]]
            ax.errorbar(list(xs), y, yerr=err, label=label, color=color, marker=marker, ls=ls, capsize=3)
        if g[0]["variant"]["rho"] is not None:
            ax.set_xticks(list(xs), [f"{r['variant']['rho']:g}\n({1 - r['variant']['rho'] ** 2:.2f})" for r in g])
            ax.set_xlabel("rho  (independent energy share 1-rho^2)")
            ax.set_title(f"{cfg.data.family} task {cfg.diversity.task} mixed into one of its channels")
        else:
            ax.set_xticks(list(xs), [str(r["variant"]["paths"]) for r in g])
            ax.set_xlabel("fixed plane waves per task")
            ax.set_title("plane-wave tasks (fixed geometry, i.i.d. gains)")
        ax.set_yscale("log")
        ax.set_ylabel("SER (test, 95 % interval)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    save_figure(fig, path)


def plot_diversity_learning(recs: list[dict], path: Path) -> None:
    """Validation SER per epoch over the variant's test MMSE SER: below 1, SDNet beats MMSE."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in recs:
        mmse = r["test"]["mmse"]["ser"]
        pts = [(h["epoch"], h["val_ser"] / mmse) for h in r["history"] if h["val_ser"] > 0 and mmse > 0]
        ax.semilogy([e for e, _ in pts], [v for _, v in pts], label=r["variant"]["name"])
    ax.axhline(1.0, color="tab:orange", ls="--", lw=1, label="MMSE")
    ax.set_ylim(top=10.0)  # the first epochs (ratios of 10-10^4) tell nothing about the end
    ax.set_xlabel("epoch")
    ax.set_ylabel("SDNet validation SER / MMSE test SER")
    ax.set_title("learning curves (flat at the end: trained out)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    save_figure(fig, path)


# ---------------------------------------------------------------------------------------- plots

def plot_rho_heatmap(rho: list[dict[int, float]], tasks: list[int], path: Path) -> None:
    layers = sorted(rho[0])
    m = np.array([[r[l] for r in rho] for l in layers])
    fig, ax = plt.subplots(figsize=(max(5, 0.18 * len(tasks) + 3), 4))
    im = ax.imshow(m, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1,
                   extent=(0.5, len(tasks) + 0.5, layers[0] - 0.5, layers[-1] + 0.5))
    ax.set_xlabel("task (training order)")
    ax.set_ylabel("significant layer ID")
    ax.set_title("gradient significance rho (eq. 20)")
    fig.colorbar(im, ax=ax)
    save_figure(fig, path)


def plot_strategy_bars(ms: dict, base: dict, path: Path, task: int) -> None:
    names = [s for s in ("scratch", "embed-top", "embed-middle", "inherit-bottom", "inherit-top", "inherit-middle",
                         "transfer") if s in ms]
    vals = [ms[s]["test"]["sdnet"] for s in names]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(range(len(names)), vals, color="tab:blue")
    for k, c in (("zf", "tab:red"), ("mmse", "tab:orange")):
        ax.axhline(base[k], color=c, ls="--", label=k.upper())
    ax.set_xticks(range(len(names)), [n.replace("inherit-bottom", "bottom (embed=inherit)") for n in names],
                  rotation=25, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("SER (test)")
    ax.set_title(f"task {task}: SER per expansion strategy")
    ax.legend()
    save_figure(fig, path)


def plot_convergence(histories: dict, path: Path, title: str, rename: dict | None = None,
                     baselines: dict | None = None) -> None:
    """Validation SER per epoch; ``baselines`` ({"ZF": ser, ...}) as dashed horizontal lines."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for s, h in histories.items():
        pts = [(r["epoch"], r["val_ser"]) for r in h if r["val_ser"] > 0]  # zero-error epochs: no value on a log axis
        ax.semilogy([e for e, _ in pts], [v for _, v in pts], label=(rename or {}).get(s, s))
    for (name, value), color in zip((baselines or {}).items(), ("tab:red", "tab:orange")):
        if value > 0:
            ax.axhline(value, color=color, ls="--", lw=1, label=f"{name} (test)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("SER (validation)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def plot_snr_sweep(sweep: dict, path: Path, task: int) -> None:
    snrs = [float(s) for s in sweep]
    fig, ax = plt.subplots(figsize=(6, 4))
    keys = [k for k in next(iter(sweep.values())) if k in ("zf", "mmse", "scratch", "transfer") or k.startswith("inherit-")]
    for k in keys:
        label = {"zf": "ZF", "mmse": "MMSE"}.get(k, f"learngene ({k})" if k.startswith("inherit-") else k)
        pts = [(x, sweep[s][k]) for x, s in zip(snrs, sweep) if sweep[s][k] > 0]  # zero-error points omitted
        ax.semilogy([x for x, _ in pts], [v for _, v in pts], marker="o", label=label)
    ax.set_xlabel("SNR (dB, project convention)")
    ax.set_ylabel("SER")
    ax.set_title(f"task {task}: SER vs SNR")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, path)


# --------------------------------------------------------------------------------------- report

def format_report(cfg: LearngeneConfig, results: dict, schemes: list[str]) -> str:
    lines = [f"# Learngene pipeline report: {cfg.name}", "",
             f"Collective tasks: {len(cfg.data.collective_tasks)} x {cfg.collective.epochs_per_task} epochs "
             f"(Nconv={cfg.collective.n_conv}); individual: {cfg.individual.epochs} epochs (Nconv={cfg.individual.n_conv}), "
             f"lambda={cfg.individual.lam}; {cfg.data.ues_per_task} UEs per task; SNR {cfg.data.snr_db} dB (project "
             f"convention); channel normalisation: {cfg.data.normalise}. SER per complex symbol on each target task's "
             f"test split ({cfg.data.test_vectors_per_ue} data vectors per UE).", ""]
    ex = results["extract"]
    lines += ["## Learngene selection (Fig. 8)", "",
              f"Selected segment: **{ex['selected']}** (collective layers {ex['layers']}).", "",
              "| segment | layers | rho slope per task (each layer) | mean rho, last third of tasks | decreasing |",
              "|---|---|---|---|---|"]
    for s in ex["scores"]:
        lines.append(f"| {s['segment']} | {s['layers']} | {', '.join(f'{v:+.2e}' for v in s['slopes'])} | "
                     f"{s['late_rho']:.3f} | {s['decreasing']} |")
    lines += ["", "![rho](fig8_gradient_significance.png)", ""]
    if results.get("baselines_table_i"):
        lines += ["## ZF / MMSE before training next to the paper's Table I", "",
                  format_baselines(results["baselines_table_i"])]
    lines += ["## SER at the training SNR per scheme (Fig. 9)", ""]
    head = ["task", "ZF", "MMSE"] + schemes
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, row in results["ser_25db"].items():
        b = results["baselines"][t]
        lines.append(f"| {t} | {b['zf']:.2e} | {b['mmse']:.2e} | " + " | ".join(f"{row[s]:.2e}" for s in schemes) + " |")
    lines += ["", "`inherit-bottom` is also `embed-bottom` (the same model, Sec. V-B).", ""]
    if results["reach_epoch"]:
        lines += ["## Epoch at which each scheme first reaches scratch's final validation SER", "",
                  "| task | " + " | ".join(s for s in schemes if s != "scratch") + " |",
                  "|---|" + "---|" * (len(schemes) - 1)]
        for t, row in results["reach_epoch"].items():
            lines.append(f"| {t} | " + " | ".join(str(row.get(s)) for s in schemes if s != "scratch") + " |")
        lines.append("")
    if results.get("beat_mmse_epoch"):
        lines += ["## Epoch at which each scheme first beats MMSE (validation SER below MMSE's on the same vectors)", "",
                  "| task | MMSE (validation) | " + " | ".join(schemes) + " |", "|---|---|" + "---|" * len(schemes)]
        for t, row in results["beat_mmse_epoch"].items():
            lines.append(f"| {t} | {row['mmse_val']:.2e} | " + " | ".join(str(row.get(s)) for s in schemes) + " |")
        lines.append("")
    lines += ["## SER vs SNR (Fig. 12)", ""]
    for t, sweep in results["snr_sweep"].items():
        keys = list(next(iter(sweep.values())))
        lines += [f"Task {t}:", "", "| SNR dB | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
        for snr, row in sweep.items():
            lines.append(f"| {snr} | " + " | ".join(f"{row[k]:.2e}" for k in keys) + " |")
        lines += ["", f"![snr](fig12_snr_task{int(t):03d}.png)", ""]
    if "scalability" in results:
        lines += ["## Scalability to (Nt, Nr) = (4, 32) (Fig. 13)", "",
                  "The 4-stream model sees the same convolution geometry as the 8-stream collective model: its input "
                  "image (65 x 8) is upsampled (nearest, x2) along the width to 65 x 16, so the learngene's 3x3 "
                  "kernels apply unchanged; the FC maps 65*16 -> 8. The 4x32 channels are the first 4 UE ports of "
                  "each 8-port UMi channel.", "",
                  "| scheme | test SER | ZF | MMSE |", "|---|---|---|---|"]
        for s, r in results["scalability"].items():
            lines.append(f"| {s} | {r['test']['sdnet']:.2e} | {r['test']['zf']:.2e} | {r['test']['mmse']:.2e} |")
        lines += ["", "![scal](fig13_scalability.png)", ""]
    lines += ["## Complexity (Table IV)", "", "| scheme | layers | trainable parameters | FLOPs | transferred ratio |",
              "|---|---|---|---|---|"]
    for r in results["complexity"]:
        ratio = "-" if r["transferred"] is None else f"{100 * r['transferred']:.1f} %"
        lines.append(f"| {r['scheme']} | {r['layers']} | {r['params']:,} | {r['flops']:,} | {ratio} |")
    return "\n".join(lines) + "\n"

"""The DetNet and WeSNet [WS] pipeline's results as figures, tables and ``report.md`` (the paper's numbers
side by side with ours)."""

from __future__ import annotations

import math
from pathlib import Path

from ...detectors.classical import linear_flops
from ...detectors.detnet.model import (DetNet, count_matmul_flops, detnet_elementwise_flops, detnet_matmul_flops,
                                       kept_units, table2_flops)
from ...metrics import wilson_interval
from ...snr import convert_snr_db
from ..figures import plt, save_figure
from ..runs import read_json, write_json
from .config import WeSNetConfig

# DetNet's public training log ([DN] code, 30x60 BPSK, 8..13 dB) -- the targets of issue 16
DETNET_LOG = {8.0: 1.17e-2, 9.0: 4.99e-3, 10.0: 1.81e-3, 11.0: 5.68e-4, 12.0: 1.47e-4, 13.0: 3.25e-5}
PAPER = {"flops_reduction_50pct": 51.43, "params_reduction_50pct": 49.78, "params_reduction_20pct": 79.82,
         "params_reduction_30pct": 68.73, "mmse_ber_8db": 2.75e-2}


# ---------------------------------------------------------------------------------- complexity
def complexity_table(cfg: WeSNetConfig, keeps: list[float], vectors_per_frame: int = 1) -> list[dict]:
    """FLOPs per vector (ours: formula and a count on the sliced tensors; [WS] Table II) and
    parameters at each kept fraction, full depth. ``vectors_per_frame = 1``: ``H^T H`` per
    vector as in the paper's per-slot counting."""
    s, tr = cfg.system, cfg.training
    ref = DetNet(s.nt, tr.layers, tr.hidden, s.modulation)
    k, aux = ref.k, ref.aux
    rows = []
    for keep in keeps:
        net = ref.sliced(keep)
        u = net.units
        ours = detnet_matmul_flops(k, s.nr, tr.layers, u, aux, vectors_per_frame)
        counted = count_matmul_flops(net, s.nr, vectors_per_frame)
        rows.append({"keep": keep, "units": u, "matmul_flops": ours, "counted_flops": counted,
                     "elementwise_flops": detnet_elementwise_flops(k, tr.layers, u, aux),
                     "table2_flops": table2_flops("wesnet", s.nt, tr.layers, keep),
                     "parameters": sum(p.numel() for p in net.parameters())})
    return rows


# -------------------------------------------------------------------------------------- report
def plot_training(history: dict, path: Path) -> None:
    """Loss eq. (20) and the validation BER per epoch (MMSE's on the same vectors dotted)."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(9, 3.4))
    val = history.get("_validation", {})
    for name, h in history.items():
        if name.startswith("_"):
            continue
        recs = h["history"] or []
        line, = ax.plot([r["epoch"] for r in recs], [r["loss"] for r in recs], label=name, alpha=0.8)
        if recs and "val_ber" in recs[0]:
            bx.plot([r["epoch"] for r in recs], [r["val_ber"] for r in recs], color=line.get_color(), label=name)
    if "mmse_ber" in val:
        bx.axhline(val["mmse_ber"], color="gray", ls=":", label="MMSE")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss eq. (20)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2)
    bx.set_xlabel("epoch")
    bx.set_ylabel(f"BER at {val.get('snr_db', '?')} dB (fixed vectors)")
    bx.set_yscale("log")
    bx.grid(alpha=0.3, which="both")
    bx.legend(fontsize=6)
    save_figure(fig, path)


def _label(name: str) -> str:
    return {"zf": "ZF", "mmse": "MMSE"}.get(name, name.replace("kbest", "K-best K=") if name.startswith("kbest")
                                            else name)


def _plot_ber_snr(cfg: WeSNetConfig, ber: list[dict], path: Path, with_log: bool) -> None:
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    snr = [p["snr_db"] for p in ber]
    for i, name in enumerate(ber[0]["ber"]):
        ys = [p["ber"][name] for p in ber]
        style = {"zf": ("tab:brown", "v", "--"), "mmse": ("tab:gray", "x", "--")}.get(name)
        if name.startswith("kbest"):
            style = ("black", "+", ":")
        c, mk, ls = style or (None, "os^Dv<>p"[i % 8], "-")
        ax.plot([s for s, y in zip(snr, ys) if y > 0], [y for y in ys if y > 0], color=c, marker=mk, ls=ls,
                markersize=4, label=_label(name))
    if with_log:
        ax.plot(list(DETNET_LOG), list(DETNET_LOG.values()), "r*", markersize=7, label="DetNet public log [DN]")
    ax.set_yscale("log")
    ax.set_xlabel("SNR [dB] (detnet convention: mean column energy / noise variance per real dimension)")
    ax.set_ylabel("BER")
    ax.set_title(f"{cfg.system.nt}x{cfg.system.nr} {cfg.system.modulation.upper()} (Fig. 4/8) -- `{cfg.name}`",
                 fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, path)


def _plot_keep(dial: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    keeps = dial["keep"]["keeps"]
    for p in dial["keep"]["points"]:
        pts = [(100 * k, p["ber"][f"keep={k:g}"]) for k in keeps if p["ber"][f"keep={k:g}"] > 0]  # 0 errors: no point
        line, = ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o",
                        label=f"{dial['keep']['model']}, {p['snr_db']:g} dB")
        ax.axhline(p["ber"]["mmse"], color=line.get_color(), ls=":", lw=0.8)
    ax.plot([], [], "k:", lw=0.8, label="MMSE (same vectors)")
    ax.set_yscale("log")
    ax.set_xlabel("kept profile coefficients [%]")
    ax.set_ylabel("BER")
    ax.set_title("one trained bundle, sliced at inference (Fig. 5); points without errors omitted", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _plot_depth(depth: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, d in depth.items():
        for p in d["points"]:
            pts = [(x, p["ber"][f"L={x}"]) for x in d["depths"] if p["ber"][f"L={x}"] > 0]  # 0 errors: no point
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=f"{name}, {p['snr_db']:g} dB")
    ax.set_yscale("log")
    ax.set_xlabel("layers kept at inference")
    ax.set_ylabel("BER")
    ax.set_title("layer truncation (Fig. 6-7); points without errors omitted", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    save_figure(fig, path)


def _plot_flops(rows: list[dict], detnet_flops: float, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    x = [100 * r["keep"] for r in rows]
    ax.plot(x, [r["matmul_flops"] + r["elementwise_flops"] for r in rows], "o-", label="ours (formula = tensor count)")
    ax.plot(x, [r["table2_flops"] for r in rows], "s--", label="[WS] Table II, WeSNet")
    ax.axhline(detnet_flops, color="gray", ls=":", label="[WS] Table II, DetNet")
    ax.set_xlabel("kept profile coefficients [%]")
    ax.set_ylabel("FLOPs per detected vector")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _snr_at(points: list[dict], name: str, target: float) -> float | None:
    """SNR (dB) where the BER curve crosses ``target`` (log-linear interpolation), else None."""
    prev = None
    for p in points:
        v = p["ber"][name]
        if v <= target:
            if prev is None:
                return p["snr_db"]
            s0, v0 = prev
            if v0 <= 0 or v <= 0:
                return p["snr_db"]
            return s0 + (p["snr_db"] - s0) * (math.log(v0) - math.log(target)) / (math.log(v0) - math.log(v))
        prev = (p["snr_db"], v)
    return None


def _ci(p: dict, name: str) -> str:
    e, n = p["errors"][name], p["bits"]
    lo, hi = wilson_interval(e, n)
    return f"{e / n:.2e} [{lo:.1e}, {hi:.1e}]"


def step_report(cfg: WeSNetConfig, run: Path, progress: bool = True) -> dict:
    ber = read_json(run / "evaluate" / "ber.json")
    dial = read_json(run / "evaluate" / "dial.json")
    hist = read_json(run / "train" / "history.json")
    s, tr, ev = cfg.system, cfg.training, cfg.evaluation
    keeps = ev.keeps
    rows = complexity_table(cfg, sorted(set(keeps) | {0.2, 0.5, 1.0}))
    full = next(r for r in rows if r["keep"] == 1.0)
    half = next(r for r in rows if r["keep"] == 0.5)
    detnet_t2 = table2_flops("detnet", s.nt, tr.layers)
    names = list(ber[0]["ber"])
    lines = [f"# DetNet / WeSNet [WS] -- `{cfg.name}`", "",
             f"{s.nt} x {s.nr} {s.modulation.upper()}, channel `{s.channel['name']}`, SNR in the `detnet` convention. "
             f"L = {tr.layers} layers, {tr.hidden} hidden units, batch {tr.batch}, Adam at "
             f"lr {tr.lr:g}{'' if tr.lr_end is None else f' decaying to {tr.lr_end:g}'}"
             f"{', best validation epoch kept' if tr.keep_best else ''} (steps per model below), training SNR uniform in {tr.snr_db} dB; {ev.vectors} test "
             f"vectors per SNR (one channel each), every detector on the same vectors. [WS] Table III: L = 90, "
             "240 hidden units, 25,000 iterations of batch 5,000 (it lists 500,000 training samples; DetNet's code "
             "draws fresh data every iteration, as we do), 50,000 test samples.", ""]
    val = hist.get("_validation", {})
    lines += ["## Training", "", f"Validation: BER on {val.get('vectors')} fixed vectors at {val.get('snr_db')} dB after "
              f"each epoch (MMSE on them: {val.get('mmse_ber', float('nan')):.2e}).", "",
              "| model | profile | kept | learnable | lambda | steps | seconds | samples/s | final loss | final "
              "validation BER |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m in cfg.models:
        h = hist[m.name]
        last = (h["history"] or [{}])[-1].get("loss", float("nan"))
        val_ber = (h["history"] or [{}])[-1].get("val_ber")
        lines.append(f"| {m.name} | {m.profile} | {m.keep:g} | {m.learnable} | {m.reg_lambda:g} | {m.steps or tr.steps} | "
                     f"{h['seconds']:.0f} | {h['samples_per_second']:.0f} | {last:.3f} | "
                     f"{'' if val_ber is None else f'{val_ber:.2e}'} |")
    paper_system = (s.nt, s.nr, s.modulation, s.channel["name"]) == (30, 60, "bpsk", "iid-real")
    log_text = ("the last column is DetNet's public training log [DN] (the target: our DetNet within 1.5x of it)"
                if paper_system else "DetNet's public training log [DN] is for 30x60 BPSK on the real channel; "
                "not compared on this system")
    lines += ["", "![training](training.png)", "", "## BER vs SNR (Fig. 4/8)", "",
              f"BER with 95 % Wilson intervals; {log_text}.", "",
              "| SNR [dB] | " + " | ".join(_label(n) for n in names) + (" | DetNet log |" if paper_system else " |"),
              "|---" * (len(names) + 1 + paper_system) + "|"]
    for p in ber:
        log = DETNET_LOG.get(p["snr_db"])
        lines.append(f"| {p['snr_db']:g} | " + " | ".join(_ci(p, n) for n in names) +
                     (f" | {'' if log is None else f'{log:.2e}'} |" if paper_system else " |"))
    lines += ["", "![BER vs SNR](ber_snr.png)", ""]
    targets = {}
    if paper_system:
        learned = [m.name for m in cfg.models]
        logs = [p for p in ber if p["snr_db"] in DETNET_LOG]
        ratios = {n: {p["snr_db"]: p["ber"][n] / DETNET_LOG[p["snr_db"]] for p in logs} for n in learned}
        targets["vs_detnet_log"] = ratios
        lines += ["BER / DetNet's public log per SNR (target: <= 1.5x at every point; the dial model "
                  f"`{ev.dial_model}` is the one shipped):", "",
                  "| model | " + " | ".join(f"{p['snr_db']:g} dB" for p in logs) + " | max |",
                  "|---" * (len(logs) + 2) + "|"]
        for n in learned:
            lines.append(f"| {n} | " + " | ".join(f"{ratios[n][p['snr_db']]:.2f}x" for p in logs) +
                         f" | {max(ratios[n].values()):.2f}x |")
        lines.append("")
    mmse8 = next((p["ber"]["mmse"] for p in ber if p["snr_db"] == 8.0), None)
    if mmse8 is not None and paper_system:
        lines.append(f"MMSE at 8 dB: {mmse8:.3e} (issue: about {PAPER['mmse_ber_8db']:.2e}).")
    lines.append("")
    lines += ["SNR at BER 1e-3: " + ", ".join(f"{_label(n)} {v:.2f} dB" if (v := _snr_at(ber, n, 1e-3)) is not None
                                               else f"{_label(n)} > sweep" for n in names), ""]
    if dial.get("keep"):
        d = dial["keep"]
        lines += [f"## The complexity dial: one bundle (`{d['model']}`), sliced at inference (Fig. 5)", "",
                  "| SNR [dB] | " + " | ".join(f"{100 * k:g} %" for k in d["keeps"]) + " | MMSE |",
                  "|---" * (len(d["keeps"]) + 2) + "|"]
        for p in d["points"]:
            lines.append(f"| {p['snr_db']:g} | " + " | ".join(f"{p['ber'][f'keep={k:g}']:.2e}" for k in d["keeps"]) +
                         f" | {p['ber']['mmse']:.2e} |")
        mono = []
        for p in d["points"]:
            v = [p["ber"][f"keep={k:g}"] for k in d["keeps"]]
            # non-increasing up to the statistical noise of the counts (2 standard errors)
            se = [math.sqrt(max(x, 1.0 / p["bits"]) / p["bits"]) for x in v]
            mono.append(all(v[i + 1] <= v[i] + 2 * (se[i] + se[i + 1]) for i in range(len(v) - 1)))
        targets["dial_monotone"] = mono
        lines += ["", f"BER non-increasing in the kept fraction (within 2 standard errors) at each SNR: {mono}.", "",
                  "![BER vs kept](ber_keep.png)", "", "Time per vector in the run-time detector (this process, "
                  f"{ev.timing_frames} frames x {ev.timing_vectors} vectors, best of 3):", "",
                  "| kept | FLOPs / vector | us / vector | speed-up vs 100 % |", "|---|---|---|---|"]
        t100 = next(t for t in dial["timing"] if t["keep"] == max(x["keep"] for x in dial["timing"]))
        for t in dial["timing"]:
            lines.append(f"| {100 * t['keep']:g} % | {t['flops_per_vector']:,.0f} | {1e6 * t['seconds_per_vector']:.2f} | "
                         f"{t100['seconds_per_vector'] / t['seconds_per_vector']:.2f}x |")
        t50 = next((t for t in dial["timing"] if t["keep"] == 0.5), None)
        if t50:
            targets["speedup_50"] = t100["seconds_per_vector"] / t50["seconds_per_vector"]
        lines.append("")
    if dial.get("depth"):
        lines += ["## Layer truncation (Fig. 6-7)", ""]
        for name, d in dial["depth"].items():
            lines += [f"`{name}`:", "", "| SNR [dB] | " + " | ".join(f"L={x}" for x in d["depths"]) + " |",
                      "|---" * (len(d["depths"]) + 1) + "|"]
            for p in d["points"]:
                lines.append(f"| {p['snr_db']:g} | " + " | ".join(f"{p['ber'][f'L={x}']:.2e}" for x in d["depths"]) + " |")
            lines.append("")
        lines += ["![BER vs depth](ber_depth.png)", ""]
    lines += ["## Complexity (Fig. 10-12, Table II)", "",
              f"Per detected vector, L = {tr.layers}, H^T H per vector (the paper's per-slot counting). *Ours*: the "
              "matrix products by formula (`detnet_matmul_flops`) and counted by `torch.utils.flop_counter` on the "
              "sliced tensors (they agree), plus element-wise operations. *Table II*: [WS]'s expressions as printed.",
              "", "| kept | units | ours: products (formula) | ours: counted | element-wise | Table II WeSNet | "
              "parameters |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {100 * r['keep']:g} % | {r['units']} | {r['matmul_flops']:,.0f} | {r['counted_flops']:,.0f} | "
                     f"{r['elementwise_flops']:,} | {r['table2_flops']:,.0f} | {r['parameters']:,} |")
    ours_ratio = (half["matmul_flops"] + half["elementwise_flops"]) / (full["matmul_flops"] + full["elementwise_flops"])
    t2_ratio = table2_flops("wesnet", s.nt, tr.layers, 0.5) / detnet_t2
    zf, mmse = table2_flops("zf", s.nt), table2_flops("mmse", s.nt)
    rows_real = 2 * s.nr
    k_real = s.nt * (1 if s.modulation == "bpsk" else 2)
    zf_ours, mmse_ours = linear_flops(rows_real, k_real, 1), linear_flops(rows_real, k_real, 1, mmse=True)
    targets.update({"flops_ratio_50": ours_ratio, "table2_ratio_50": t2_ratio})
    lines += ["", f"Per slot (one vector per channel): ours ZF {zf_ours:,.0f}, MMSE {mmse_ours:,.0f} FLOPs "
                  f"(`linear_flops`: Gram, Cholesky, H^T y and two triangular solves on the {rows_real} x {k_real} "
                  f"real model); Table II as printed: ZF {zf:,.0f}, MMSE {mmse:,.0f}, DetNet {detnet_t2:,.0f} "
                  f"(Nt = {s.nt}; it counts complex arithmetic and an explicit inverse). Ours, DetNet: "
                  f"{full['matmul_flops'] + full['elementwise_flops']:,.0f}.", "",
              f"WeSNet-50 % / DetNet: **ours {100 * ours_ratio:.1f} %** of DetNet's FLOPs (target <= 51 %); "
              f"Table II's own formula gives {100 * t2_ratio:.2f} %, i.e. a {100 * (1 - t2_ratio):.2f} % reduction -- "
              f"not the paper's stated {PAPER['flops_reduction_50pct']} % (which does not follow from its formula). "
              f"Parameters: 50 % keeps {100 * half['parameters'] / full['parameters']:.1f} % (paper: "
              f"{100 - PAPER['params_reduction_50pct']:.2f} %).", "",
              "![FLOPs vs kept](flops_keep.png)", ""]
    ref = DetNet(s.nt, tr.layers, tr.hidden, s.modulation)
    depths = sorted(set(ev.depths) | {tr.layers})
    lines += ["FLOPs per slot (ours, products + element-wise) and parameters vs layers kept (Fig. 11):", "",
              "| layers | " + " | ".join(f"{100 * k:g} %: FLOPs | parameters" for k in (1.0, 0.5, 0.2)) + " |",
              "|---" * 7 + "|"]
    for d in depths:
        cells = []
        for k in (1.0, 0.5, 0.2):
            u = kept_units(k, tr.hidden)
            f = detnet_matmul_flops(ref.k, s.nr, d, u, ref.aux, 1) + detnet_elementwise_flops(ref.k, d, u, ref.aux)
            cells.append(f"{f:,.0f} | {sum(p.numel() for p in ref.sliced(k, d).parameters()):,}")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    lines.append("")
    _plot_ber_snr(cfg, ber, run / "ber_snr.png", paper_system)
    if dial.get("keep"):
        _plot_keep(dial, run / "ber_keep.png")
    if dial.get("depth"):
        _plot_depth(dial["depth"], run / "ber_depth.png")
    _plot_flops(rows, detnet_t2, run / "flops_keep.png")
    conv = convert_snr_db(0.0, "detnet", "project", channel_energy=s.nr * s.nt, nr=s.nr, nt=s.nt)
    lines += ["## Conventions and deviations", "",
              f"- SNR: `detnet` = project SNR {-conv:+.2f} dB here (mean column energy {s.nr} over the per-dimension "
              "noise variance; DetNet's generator `y = Hx + w sqrt(tr(H^T H)/K)/sqrt(SNR)`).",
              "- The weight-scaling profile acts on the hidden units (eq. (19)), feeding both the detection and the "
              "auxiliary sublayer, not on the first sublayer's inputs as eq. (18) reads: see "
              "`neuralmimo/detectors/detnet/model.py` for why (eq. (9)'s input order and Table II's linear cost).",
              "- L-WeSNet's profile is `exp(-cumsum(softplus(rho)))` per layer: monotone by construction.",
              f"- Initialisation `{tr.init}`: [WS] Table III states Xavier; on DetNet's unnormalised inputs it "
              "saturates the soft sign at the start (measured in `DetNet.reset_parameters`), so we default to "
              "DetNet's code, N(0, 0.01^2).",
              f"- R-WeSNet: lambda per model in the table above, penalty from layer {tr.reg_start} (eq. (22) gives "
              "neither).",
              "- Fig. 6-7 train one model per depth in [WS]; we truncate one trained model (the dial a running "
              "receiver has).", ""]
    text = "\n".join(lines)
    (run / "report.md").write_text(text)
    results = {"targets": targets, "complexity": rows}
    write_json(run / "results.json", results)
    return results

"""The DeepSIC [MH] pipeline's results as figures, tables and ``report.md`` (the paper's numbers
side by side with ours)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ...detectors import ML_MAX_CANDIDATES
from ...metrics import snr_at
from ..figures import plt, save_figure
from ..runs import read_json, write_json
from .config import DeepSICConfig

METHODS = ("joint", "online", "hypernetwork", "mmse", "ml")


# --------------------------------------------------------------------------------- complexity
def complexity(cfg: DeepSICConfig, n_users: int, n_pilots: int, n_info: int) -> dict:
    """Proposition 1 and Corollary 1 from the actual parameter counts.

    Units: one multiply-accumulate of one parameter on one symbol. Inference runs the module
    ``Q`` times per symbol (``alpha_I = Q``); online training runs ``steps`` Adam iterations over
    the pilots, each a forward and a backward pass (about 3 forward passes: ``alpha_T = 3 Q steps``).
    The hypernetwork runs once per user (``|phi|`` MACs) and LS costs ``(N + K) K B_pilot`` MACs.
    """
    q, steps = cfg.receiver.iterations, cfg.online.steps
    hyper = cfg.receiver.hypernetwork()
    theta = hyper.spec.n_params(n_users)
    phi = hyper.n_hyper_params()
    a_i, a_t = q, 3 * q * steps
    ls = (cfg.receiver.n_rx + n_users) * n_users * n_pilots
    c_online = (a_t * n_pilots + a_i * n_info) * theta * n_users
    c_hyper = a_i * n_info * theta * n_users + n_users * phi + ls
    cor1 = (a_i * n_info) / (a_t * n_pilots) * (1 + phi / (theta * n_info))
    return {"K": n_users, "theta": theta, "phi_hyper": phi, "alpha_I": a_i, "alpha_T": a_t,
            "C_online": c_online, "C_hyper": c_hyper, "ratio_prop1": c_hyper / c_online, "ratio_cor1": cor1}


# -------------------------------------------------------------------------------------- report
STYLE = {"joint": ("tab:blue", "o"), "online": ("tab:orange", "s"), "hypernetwork": ("tab:green", "^"),
         "mmse": ("tab:gray", "x"), "ml": ("black", "+")}
LABEL = {"joint": "joint DeepSIC", "online": "online DeepSIC", "hypernetwork": "modular hypernetwork",
         "mmse": "MMSE (LS CSI)", "ml": "exact ML (LS CSI)"}


def plot_training(hist: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, name in (("hyper_history", "hypernetwork"), ("joint_history", "joint (all K)")):
        ax.plot([h["epoch"] for h in hist[key]], [h["loss"] for h in hist[key]], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (mean over iterations)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def method_labels(cfg: DeepSICConfig) -> dict:
    """:data:`LABEL` with the hypernetwork named by the configured architecture."""
    if cfg.receiver.architecture == "hypernet-deepsic-complex":
        return {**LABEL, "hypernetwork": "hypernetwork-DeepSIC (complex)"}
    return LABEL


def plot_ser_vs_block(r: dict, path: Path, title: str, labels: dict = LABEL) -> None:
    """Aggregated SER (mean over blocks ``1..t``) vs block index, as Figs. 3-6; ``K[t]`` below."""
    fig, (ax, axk) = plt.subplots(2, 1, figsize=(6, 4.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for m, v in r["ser"].items():
        vals = torch.tensor(v, dtype=torch.float64)
        ok = ~torch.isnan(vals)
        if not bool(ok.any()):
            continue
        cum = torch.cumsum(torch.where(ok, vals, 0), 0) / torch.cumsum(ok.double(), 0).clamp(min=1)
        c, mk = STYLE[m]
        ax.plot(range(1, len(v) + 1), cum.tolist(), color=c, marker=mk, markevery=max(1, len(v) // 10), label=labels[m])
    ax.set_yscale("log")
    ax.set_ylabel("aggregated SER")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    axk.step(range(1, len(r["n_users"]) + 1), r["n_users"], where="mid", color="tab:purple")
    axk.set_ylabel("K[t]")
    axk.set_xlabel("block index t")
    axk.grid(alpha=0.3)
    save_figure(fig, path)


def plot_sweep(r: dict, path: Path, title: str, labels: dict = LABEL) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for m in METHODS:
        ys = [p["mean_ser"].get(m) for p in r["points"]]
        if all(y is None for y in ys):
            continue
        c, mk = STYLE[m]
        ax.plot([x for x, y in zip(r["values"], ys) if y], [y for y in ys if y], color=c, marker=mk, label=labels[m])
    ax.set_yscale("log")
    ax.set_xlabel({"snr_db": "SNR [dB]", "n_pilots": "pilots per block B_pilot"}[r["sweep"]])
    if r["sweep"] == "n_pilots":
        ax.set_xscale("log")
    ax.set_ylabel(f"SER (mean over {len(r['points'][0]['n_users'])} blocks)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, path)


SER_TARGET = 1e-2


def snr_crossings(results: dict) -> dict:
    """For every SNR sweep: the SNR (dB) at which each method's mean SER crosses
    :data:`SER_TARGET` (``nan`` when it does not) and the hypernetwork's gain over MMSE."""
    out = {}
    for name, r in results.items():
        if r.get("sweep") != "snr_db":
            continue
        c = {}
        for m in METHODS:
            pts = [(v, p["mean_ser"].get(m)) for v, p in zip(r["values"], r["points"])]
            pts = [(v, s) for v, s in pts if s is not None]
            c[m] = snr_at(SER_TARGET, [v for v, _ in pts], [s for _, s in pts]) if len(pts) > 1 else float("nan")
        gain = c["mmse"] - c["hypernetwork"]
        c["gain_over_mmse_db"] = None if math.isnan(gain) else gain
        out[name] = c
    return out


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3e}"


def step_report(cfg: DeepSICConfig, run: Path, progress: bool = True) -> dict:
    results = {sc.name: read_json(run / "scenarios" / sc.name / "metrics.json") for sc in cfg.scenarios}
    train = read_json(run / "train" / "history.json")
    labels = method_labels(cfg)
    lines = [f"# DeepSIC: joint, online and modular hypernetwork -- `{cfg.name}`", "",
             f"Hypernetwork architecture: `{cfg.receiver.architecture}`" + (
                 " (soft-IC MMSE modules 3+(K-1) -> 16 -> |S| correcting the Gaussian log-likelihood, "
                 "docs/deepsic/complex.md); joint and online DeepSIC keep the paper's modules."
                 if cfg.receiver.architecture == "hypernet-deepsic-complex" else "."), "",
             f"Receiver: N = {cfg.receiver.n_rx}, K_max = {cfg.receiver.k_max}, {cfg.receiver.modulation.upper()}, "
             f"Q = {cfg.receiver.iterations} iterations, paper modules {cfg.spec.rx_features}+(K-1)"
             f"{'' if cfg.spec.soft_per_user == 1 else f'x{cfg.spec.soft_per_user}'} -> "
             f"{cfg.receiver.module_hidden} -> {cfg.spec.num_classes}; training channel `{cfg.training.channel}`, "
             f"{cfg.training.symbols_per_k} symbols per K in {cfg.k_values[0]}..{cfg.k_values[-1]}.", "",
             f"Online DeepSIC: {cfg.online.steps} Adam steps per block from the previous block's modules; the "
             f"first block and every change of K start from "
             f"{'the joint model for that K' if cfg.online.start == 'joint' else 'fresh modules (the paper)'} "
             f"with {cfg.online.cold_steps} steps.", "",
             f"Training time: hypernetwork {train['seconds']['hypernetwork']:.0f} s, joint (all K) "
             f"{train['seconds']['joint']:.0f} s.", "",
             "## Mean SER over the blocks", "",
             "| scenario | SNR [dB] | pilots | K[t] | " + " | ".join(labels[m] for m in METHODS) + " |",
             "|---|---|---|---|" + "---|" * len(METHODS)]
    runtime_rows = []
    for name, r in results.items():
        pts = r["points"] if "points" in r else [r]
        for p in pts:
            ks = p["n_users"]
            krange = f"{min(ks)}" if min(ks) == max(ks) else f"{min(ks)}..{max(ks)}"
            lines.append(f"| {name} | {p['snr_db']:g} | {p['n_pilots']} | {krange} | "
                         + " | ".join(_fmt(p["mean_ser"].get(m)) for m in METHODS) + " |")
        if "points" not in r:
            runtime_rows.append((name, r))
    lines += ["", f"ML is evaluated on the same blocks where |S|^K <= {ML_MAX_CANDIDATES} candidates "
              "(otherwise n/a); MMSE and ML use the LS estimate and the pilot-residual noise variance. "
              f"SNRs in the `{cfg.snr_convention}` convention.", ""]
    crossings = snr_crossings(results)
    if crossings:
        lines += [f"## SNR needed for SER {SER_TARGET:g} (log-interpolated between sweep points)", "",
                  "| scenario | " + " | ".join(labels[m] for m in METHODS) + " | hypernetwork gain over MMSE |",
                  "|---|" + "---|" * (len(METHODS) + 1)]
        for name, c in crossings.items():
            gain = c.get("gain_over_mmse_db")
            lines.append(f"| {name} | " + " | ".join("not reached" if math.isnan(c[m]) else f"{c[m]:.2f} dB"
                                                      for m in METHODS)
                         + f" | {'n/a' if gain is None else f'{gain:.2f} dB'} |")
        lines += ["", "Not reached: the method's SER does not cross the target inside the sweep.", ""]
    if runtime_rows:
        lines += ["## Runtime over the transmission (Table I), measured in this run", "",
                  "| scenario | blocks | joint [s] | online [s] | hypernetwork [s] | MMSE [s] | online / hypernetwork "
                  "| hypernetwork / joint |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in runtime_rows:
            s = r["seconds"]
            lines.append(f"| {name} | {len(r['n_users'])} | {s['joint']:.2f} | {s['online']:.2f} | "
                         f"{s['hypernetwork']:.2f} | {s['mmse']:.2f} | {s['online'] / max(s['hypernetwork'], 1e-9):.0f}x "
                         f"| {s['hypernetwork'] / max(s['joint'], 1e-9):.2f}x |")
        lines += ["", f"Single process, {cfg.threads} torch threads, CPU; each time includes the LS front end "
                  "(online: training on the pilots + detection; hypernetwork: weight generation + detection).", ""]
    lines += ["## Complexity (Proposition 1 / Corollary 1) from the parameter counts", "",
              "| scenario | K | B_pilot | B_info | params per module | hypernetwork params | alpha_T/alpha_I | C_hyper/C_online (Prop. 1) "
              "| Corollary 1 |", "|---|---|---|---|---|---|---|---|---|"]
    comp = {}
    for sc in cfg.scenarios:
        pil = sc.n_pilots if isinstance(sc.n_pilots, int) else max(sc.n_pilots)
        c = complexity(cfg, sc.k_max, pil, sc.n_info)
        comp[sc.name] = c
        lines.append(f"| {sc.name} | {c['K']} | {pil} | {sc.n_info} | {c['theta']} | {c['phi_hyper']} | "
                     f"{c['alpha_T'] // c['alpha_I']} | {c['ratio_prop1']:.3f} | {c['ratio_cor1']:.3f} |")
    lines += ["", "Figures: `train/loss.png`, `scenarios/*/ser_vs_*.png`.", ""]
    report = "\n".join(lines)
    (run / "report.md").write_text(report)
    summary = {"scenarios": {n: ({"mean_ser": r["mean_ser"], "seconds": r["seconds"]} if "points" not in r else
                                 {"sweep": r["sweep"], "values": r["values"],
                                  "mean_ser": [p["mean_ser"] for p in r["points"]]}) for n, r in results.items()},
               "complexity": comp, "train_seconds": train["seconds"], "snr_at_ser_target": crossings,
               "ser_target": SER_TARGET}
    write_json(run / "results.json", summary)
    return summary

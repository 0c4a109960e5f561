"""The HyperMIMO [HM] pipeline's steps (training, evaluation), :data:`PIPELINE` and the
entries of the families table (``scale_training``, ``training_samples``)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ... import training
from ...bundle import BundleError, load_model, read_manifest, save_model
from ...channels import ChannelSpec, make_channel
from ...constellation import Constellation
from ...datasets import draw_channel_batch as draw_batch
from ...detectors import ML_MAX_CANDIDATES, linear_detect, ml_detect
from ...detectors.mmnet.model import HYPERMIMO_CODEC, HyperMIMO, OAMPNet
from ...detectors.mmnet.train import detect_mmnet_per_channel, train_hypermimo, train_mmnet_per_channel, train_oampnet
from ...site.drift import model_statistics
from ..runs import Pipeline, Step, read_json, write_json
from .config import HyperMIMOConfig
from .report import _rate, plot_training, step_report


def _bundle_dir(run: Path, drop: int, csi: str) -> Path:
    return run / "train" / f"drop{drop}-{csi}"


# ------------------------------------------------------------------------------------ training
def step_train(cfg: HyperMIMOConfig, run: Path, progress: bool = True) -> dict:
    """One HyperMIMO per drop and CSI kind; OAMPNet per drop (perfect CSI). Under torchrun the
    drops are spread over the processes (data-parallel when there are fewer drops than processes)."""
    for d in training.each_job(cfg.drops):
        _train_drop(cfg, run, d, progress)
    training.barrier()
    if not training.is_main():
        return {}
    history = {}
    for d in cfg.drops:
        for csi in cfg.training.csi:
            history[f"drop{d}-{csi}"] = _finished(_bundle_dir(run, d, csi), cfg.training)
        oamp = read_json(run / "train" / f"drop{d}-oampnet.json")
        history[f"drop{d}-oampnet"] = {"history": oamp["history"], "seconds": oamp.get("seconds")}
    write_json(run / "train" / "history.json", history)
    plot_training(history, run / "train" / "loss.png")
    return history


def _drop_channel(cfg: HyperMIMOConfig, d: int, chan) -> dict:
    """A bundle's ``system.channel`` for drop ``d``: the drop's angles, or its channel file."""
    s = cfg.system
    if d in s.drop_files:
        return cfg.channel_spec(d).__dict__
    return {"name": "local-scattering", "args": {"angle_std_deg": s.angle_std_deg, "spacing": s.spacing,
                                                 "angles_deg": [round(a, 6) for a in chan.drop_angles_deg]}}


def _train_drop(cfg: HyperMIMOConfig, run: Path, d: int, progress: bool) -> None:
    """The models of drop ``d`` not yet trained by this config (a rerun skips the others)."""
    tr, s = cfg.training, cfg.system
    const = cfg.constellation
    bar = tqdm if progress else None
    chan = cfg.channel(d)
    batch = training.local_batch(tr.batch)
    for csi in tr.csi:
        if _finished(_bundle_dir(run, d, csi), tr) is not None:  # resumed run: trained by the same config
            continue
        g = torch.Generator().manual_seed(training.rank_seed(tr.seed * 1000 + d))
        torch.manual_seed(tr.seed * 1000 + d)
        model = HyperMIMO(s.nu, tr.layers, tr.hidden, s.modulation, start=tr.start)
        t0 = time.perf_counter()
        with training.checkpoint_stage(f"train/drop{d}-{csi}"):
            hist = train_hypermimo(model, lambda step: draw_batch(chan, const, batch, tr.vectors, tuple(tr.snr_db), g,
                                                                  csi=csi, n_pilots=s.n_pilots),
                                   steps=tr.steps, steps_per_epoch=tr.steps_per_epoch, lr=tuple(tr.lr), progress=bar,
                                   generators=(g,))
        seconds = time.perf_counter() - t0
        model.csi = csi
        system = {"nr": s.nr, "nt": s.nu, "modulation": s.modulation,
                  "n_pilots": s.n_pilots if csi == "ls" else None, "snr_convention": "hypermimo",
                  "snr_db": list(tr.snr_db),
                  "channel": _drop_channel(cfg, d, chan)}
        if training.writer():
            save_model(model, HYPERMIMO_CODEC, _bundle_dir(run, d, csi), system=system,
                       training={"drop": d, "csi": csi, "config": asdict(tr), "seconds": seconds, "history": hist,
                                 "channel_stats": model_statistics(chan)})  # for the block's drift monitor
    oamp_path = run / "train" / f"drop{d}-oampnet.json"
    if oamp_path.exists() and _per_drop(read_json(oamp_path).get("config") or {}) == _per_drop(asdict(tr)):
        return
    oamp_batch = training.local_batch(100)
    g = torch.Generator().manual_seed(training.rank_seed(tr.seed * 1000 + 500 + d))
    torch.manual_seed(tr.seed * 1000 + 500 + d)
    oamp = OAMPNet(tr.oampnet_iterations, s.modulation)
    t0 = time.perf_counter()
    with training.checkpoint_stage(f"train/drop{d}-oampnet"):
        hist = train_oampnet(oamp, lambda step: draw_batch(chan, const, oamp_batch, 4, tuple(tr.snr_db), g),
                             steps=tr.oampnet_steps, progress=bar, generators=(g,))
    if training.writer():
        write_json(oamp_path, {"gamma": oamp.gamma.tolist(), "theta": oamp.theta.tolist(), "history": hist,
                               "config": asdict(tr), "seconds": time.perf_counter() - t0})


def _per_drop(training: dict) -> dict:
    """The training settings a per-drop model depends on (not the ``across`` variants)."""
    return {k: v for k, v in training.items() if not k.startswith("across_")}


def _finished(directory: Path, tr) -> dict | None:
    """History of a bundle already trained by training config ``tr`` (a resumed run), else None:
    a run killed half-way restarts from the first model it had not written."""
    try:
        _, manifest = read_manifest(directory)
    except BundleError:
        return None
    training = manifest.get("training") or {}
    if _per_drop(training.get("config") or {}) != _per_drop(asdict(tr)):
        return None
    return {"history": training.get("history"), "seconds": training.get("seconds")}


def load_oampnet(run: Path, drop: int, cfg: HyperMIMOConfig) -> OAMPNet:
    p = read_json(run / "train" / f"drop{drop}-oampnet.json")
    m = OAMPNet(len(p["gamma"]), cfg.system.modulation)
    with torch.no_grad():
        m.gamma.copy_(torch.tensor(p["gamma"]))
        m.theta.copy_(torch.tensor(p["theta"]))
    return m.eval()


# ---------------------------------------------------------------------------------- evaluation
def _ser_counts(idx_hat: torch.Tensor, idx: torch.Tensor) -> tuple[int, int]:
    return int((idx_hat != idx).sum()), idx.numel()


@torch.no_grad()
def _detect(method: str, model, b, const: Constellation, chunk: int = 500) -> torch.Tensor:
    """Point indices ``(B, Nu, n)`` of a method on a batch (chunked over channels)."""
    outs = []
    for a in range(0, b.y.shape[0], chunk):
        y, h, nv = b.y[a:a + chunk], b.h[a:a + chunk], b.noise_var[a:a + chunk]
        if method in ("mmse", "zf"):
            x, _ = linear_detect(y, h, nv, method, const)
            outs.append(const.hard_decision(x))
        elif method == "ml":
            outs.append(ml_detect(y, h, const))
        else:  # hypermimo, oampnet
            outs.append(model(y, h, nv)[1].argmax(-1))
    return torch.cat(outs)


def evaluate_point(cfg: HyperMIMOConfig, chan, models: dict, csi: str, snr_db: float, g: torch.Generator,
                   mmnet: bool) -> dict:
    """Every method at one SNR on the same channels; returns errors and symbols per method and,
    for MMNet per channel, the same counts of every method on its channel subset."""
    ev, const = cfg.evaluation, cfg.constellation
    b = draw_batch(chan, const, ev.channels, ev.vectors, snr_db, g, csi=csi, n_pilots=cfg.system.n_pilots)
    methods = ["hypermimo", "oampnet", "mmse", "zf"]
    if ev.ml and const.num_points ** cfg.system.nu <= ML_MAX_CANDIDATES:
        methods.append("ml")
    decisions = {m: _detect(m, models.get(m), b, const) for m in methods}
    out = {"counts": {m: _ser_counts(decisions[m], b.idx) for m in methods}}
    if mmnet:
        k = min(ev.mmnet_channels, ev.channels)
        t0 = time.perf_counter()
        model = train_mmnet_per_channel(b.h[:k], b.noise_var[:k], const, g, layers=ev.mmnet_layers,
                                        steps=ev.mmnet_steps, lr=ev.mmnet_lr)
        train_s = time.perf_counter() - t0
        idx = detect_mmnet_per_channel(model, b.y[:k], b.h[:k], b.noise_var[:k], const)
        out["subset"] = {"channels": k, "counts": {"mmnet": _ser_counts(idx, b.idx[:k]),
                                                   **{m: _ser_counts(decisions[m][:k], b.idx[:k]) for m in methods}}}
        out["mmnet_train_seconds_per_channel"] = train_s / k
    return out


def step_evaluate(cfg: HyperMIMOConfig, run: Path, progress: bool = True) -> dict:
    ev = cfg.evaluation
    results = {}
    for d in cfg.drops:
        chan = cfg.channel(d)
        oamp = load_oampnet(run, d, cfg)
        per_csi = {}
        for csi in cfg.training.csi:
            hyper, _ = load_model(_bundle_dir(run, d, csi), HYPERMIMO_CODEC)
            models = {"hypermimo": hyper, "oampnet": oamp}
            g = torch.Generator().manual_seed(ev.seed * 1000 + d + (500 if csi == "ls" else 0))
            points = []
            for snr in tqdm(ev.snr_db, desc=f"drop {d} {csi}", leave=False, disable=not progress):
                p = evaluate_point(cfg, chan, models, csi, float(snr), g, mmnet=csi == "perfect" and ev.mmnet_channels > 0)
                p["snr_db"] = float(snr)
                p["ser"] = {m: _rate(c) for m, c in p["counts"].items()}
                points.append(p)
            per_csi[csi] = points
        timing = _timing(cfg, chan, models["hypermimo"])
        mm = [p["mmnet_train_seconds_per_channel"] for p in per_csi.get("perfect", []) if "mmnet_train_seconds_per_channel" in p]
        if mm:
            timing["mmnet_train_seconds_per_channel"] = sum(mm) / len(mm)
            timing["speedup"] = timing["mmnet_train_seconds_per_channel"] / timing["generate_seconds_per_channel"]
        results[d] = {"drop": d, "angles_deg": getattr(chan, "drop_angles_deg", None), "csi": per_csi,
                      "timing": timing}
        write_json(run / "evaluate" / f"drop{d}.json", results[d])
    return results


@torch.no_grad()
def _timing(cfg: HyperMIMOConfig, chan, model: HyperMIMO, channels: int = 2000) -> dict:
    """Seconds per channel of HyperMIMO's per-frame work: QR and one hypernetwork pass (weight
    generation), in this process."""
    from ...detectors.mmnet.model import qr_positive

    g = torch.Generator().manual_seed(0)
    h = chan.sample(channels, g)
    nv = torch.full((channels,), 0.1)
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        _, r_a = qr_positive(h)
        model.generate(r_a, nv, h)
        best = min(best, time.perf_counter() - t0)
    return {"generate_seconds_per_channel": best / channels}


# ---------------------------------------------------------------------------------- mobility
@torch.no_grad()
def step_mobility(cfg: HyperMIMOConfig, run: Path, progress: bool = True) -> dict:
    """SER at ``mobility.snr_db`` of the HyperMIMO trained on each drop (perfect CSI) after all
    users rotated by ``+-angle`` (Fig. 6a, both directions averaged) or moved by a distance in
    random directions (Fig. 6b, ``displacement_draws`` draws averaged), next to LMMSE and OAMPNet
    on the same channels."""
    mob, const = cfg.mobility, cfg.constellation
    if mob is None or "perfect" not in cfg.training.csi:
        return {}
    out = {}
    for d in cfg.drops:
        if d in cfg.system.drop_files:  # users cannot be moved in a recorded drop
            continue
        hyper, _ = load_model(_bundle_dir(run, d, "perfect"), HYPERMIMO_CODEC)
        models = {"hypermimo": hyper, "oampnet": load_oampnet(run, d, cfg)}
        g = torch.Generator().manual_seed(mob.seed * 1000 + d)

        def ser_over(variants):
            counts = {m: [0, 0] for m in ("hypermimo", "oampnet", "mmse")}
            for args in variants:
                b = draw_batch(cfg.channel(d, **args), const, mob.channels, mob.vectors, mob.snr_db, g)
                for m in counts:
                    e, n = _ser_counts(_detect(m, models.get(m), b, const), b.idx)
                    counts[m][0] += e
                    counts[m][1] += n
            return {m: e / n for m, (e, n) in counts.items()}

        rot = [{"rotation_deg": a, **ser_over([{"rotation_deg": a}, {"rotation_deg": -a}] if a else [{}])}
               for a in tqdm(mob.rotations_deg, desc=f"drop {d} rotation", leave=False, disable=not progress)]
        disp = [{"displacement_m": r, **ser_over([{"displacement_m": r, "distance_m": mob.distance_m,
                                                   "displacement_seed": k} for k in range(mob.displacement_draws)]
                                                 if r else [{}])}
                for r in tqdm(mob.displacements_m, desc=f"drop {d} displacement", leave=False, disable=not progress)]
        out[d] = {"snr_db": mob.snr_db, "rotation": rot, "displacement": disp}
        write_json(run / "mobility" / f"drop{d}.json", out[d])
    return out


# ------------------------------------------------------------------------------ across drops
def step_across(cfg: HyperMIMOConfig, run: Path, progress: bool = True) -> dict:
    """Beyond the paper ([HM] Sec. IV-B: "training with randomly sampled user drops leads to
    sub-optimal results"): one HyperMIMO per width in ``training.across_hidden``, trained like the
    per-drop ones but on a new random drop for every channel (``redrop``), then evaluated on
    every drop of the config at the evaluation SNRs (perfect CSI) next to LMMSE and exact ML on
    the same data. A receiver does not know its users' angles, but every frame's channel is in
    ``R_A``: the question is whether the hypernetwork can read the drop from it."""
    tr, s, ev, const = cfg.training, cfg.system, cfg.evaluation, cfg.constellation
    if not tr.across_hidden:
        return {}
    bar = tqdm if progress else None
    spec = ChannelSpec("local-scattering", {"angle_std_deg": s.angle_std_deg, "spacing": s.spacing, "redrop": True})
    any_drop = make_channel(spec, s.nr, s.nu)
    variants = [(inputs, hidden) for inputs in tr.across_inputs for hidden in tr.across_hidden]
    folder = lambda inputs, hidden: run / "across" / _variant(inputs, hidden).replace(" ", "-").replace(",", "")  # noqa: E731
    for inputs, hidden in training.each_job(variants):  # spread over torchrun's processes
        g = torch.Generator().manual_seed(training.rank_seed(tr.seed * 1000 + 900 + hidden))
        torch.manual_seed(tr.seed * 1000 + 900 + hidden)
        model = HyperMIMO(s.nu, tr.layers, hidden, s.modulation, inputs)
        batch = training.local_batch(tr.batch)
        t0 = time.perf_counter()
        with training.checkpoint_stage(f"across/{_variant(inputs, hidden)}"):
            hist = train_hypermimo(model, lambda step: draw_batch(any_drop, const, batch, tr.vectors, tuple(tr.snr_db),
                                                                  g),
                                   steps=tr.steps, steps_per_epoch=tr.steps_per_epoch, lr=tuple(tr.lr), progress=bar,
                                   generators=(g,))
        seconds = time.perf_counter() - t0
        if not training.writer():
            continue
        model.eval()
        per_drop = {}
        for d in cfg.drops:
            gd = torch.Generator().manual_seed(ev.seed * 1000 + d)  # the evaluate step's perfect-CSI draws
            chan = cfg.channel(d)
            points = []
            for snr in ev.snr_db:
                b = draw_batch(chan, const, ev.channels, ev.vectors, float(snr), gd)
                counts = {"across": _ser_counts(_detect("hypermimo", model, b, const), b.idx),
                          "mmse": _ser_counts(_detect("mmse", None, b, const), b.idx)}
                points.append({"snr_db": float(snr), "ser": {m: _rate(c) for m, c in counts.items()}})
            per_drop[d] = points
        save_model(model, HYPERMIMO_CODEC, folder(inputs, hidden),
                   system={"nr": s.nr, "nt": s.nu, "modulation": s.modulation, "n_pilots": None,
                           "snr_convention": "hypermimo", "snr_db": list(tr.snr_db),
                           "channel": {"name": "local-scattering",
                                       "args": {"angle_std_deg": s.angle_std_deg, "spacing": s.spacing,
                                                "redrop": True}}},
                   training={"across_drops": True, "config": asdict(tr), "seconds": seconds, "history": hist})
        write_json(folder(inputs, hidden) / "results.json",
                   {"inputs": inputs, "hidden": hidden, "seconds": seconds, "history": hist, "drops": per_drop})
    training.barrier()
    out = {"variants": [_variant(i, h) for i, h in variants], "models": {}}
    if not training.is_main():
        return out
    for inputs, hidden in variants:
        rec = read_json(folder(inputs, hidden) / "results.json")
        rec["drops"] = {int(d): v for d, v in rec["drops"].items()}
        out["models"][_variant(inputs, hidden)] = rec
    write_json(run / "across" / "results.json", out)
    return out


def _variant(inputs: str, hidden: int) -> str:
    return f"{inputs}, hidden {hidden}"


PIPELINE = Pipeline("hypermimo", {
    "train": Step(step_train, "one HyperMIMO per drop and CSI kind (bundles), OAMPNet per drop", parallel=True),
    "evaluate": Step(step_evaluate, "SER vs SNR of HyperMIMO, MMNet per channel, OAMPNet, LMMSE, ZF, exact ML on the "
                                    "same data"),
    "mobility": Step(step_mobility, "SER under rotation (Fig. 6a) and 2-D displacement (Fig. 6b) of the users"),
    "across": Step(step_across, "beyond the paper: one HyperMIMO trained across random drops, evaluated on every "
                                "drop", parallel=True),
    "report": Step(step_report, "report.md: SNR at SER 1e-3 per drop and averaged, gains next to the paper's, plots"),
})
STEPS, STEP_HELP, run_pipeline = PIPELINE.step_functions, PIPELINE.help, PIPELINE.run


# ------------------------------------------------------------------------------ the families table's entries
def scale_training(length: int, seed: int, config: Path) -> tuple[torch.nn.Module, object]:
    """``(model, run)``: this family's training at the size of the pipeline config ``config``
    for ``length`` steps; ``run() -> (history, samples)``
    (:func:`neuralmimo.lab.scale.family_training`)."""
    cfg = HyperMIMOConfig.load(config)
    tr, s = cfg.training, cfg.system
    chan = cfg.channel(cfg.drops[0])
    torch.manual_seed(seed)
    model = HyperMIMO(s.nu, tr.layers, tr.hidden, s.modulation, start=tr.start)

    def run():
        g = torch.Generator().manual_seed(training.rank_seed(seed))
        batch = training.local_batch(tr.batch)
        hist = train_hypermimo(model, lambda step: draw_batch(chan, cfg.constellation, batch, tr.vectors,
                                                                      tuple(tr.snr_db), g),
                               steps=length, steps_per_epoch=max(1, length // 4), lr=tuple(tr.lr), generators=(g,))
        return hist, length * tr.batch * tr.vectors
    return model, run


def training_samples(config: Path) -> int:
    """Training samples (symbol vectors) the pipeline config ``config`` trains on, counted as
    :func:`scale_training` counts them (the paper-scale projections of ``bench training``)."""
    c = HyperMIMOConfig.load(config)
    tr = c.training
    models = len(c.drops) * len(tr.csi) + len(tr.across_hidden) * len(tr.across_inputs)
    return models * tr.steps * tr.batch * tr.vectors

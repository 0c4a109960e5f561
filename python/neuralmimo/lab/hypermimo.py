"""HyperMIMO against MMNet per channel, OAMPNet, LMMSE, ZF and exact ML, [HM] Sec. IV.

Run folder (``neuralmimo hypermimo run --config C --out RUN``)::

    RUN/config.yaml
    RUN/train/drop{d}-{csi}/        HyperMIMO bundle per user drop and CSI kind (what the block loads)
    RUN/train/drop{d}-oampnet.json  OAMPNet's 2T scalars per drop (plain numbers, no bundle needed)
    RUN/train/history.json          losses and training times
    RUN/evaluate/drop{d}.json       SER per SNR and method, per CSI kind; timing of weight
                                    generation vs per-channel MMNet training
    RUN/mobility/drop{d}.json       SER under rotation (Fig. 6a) and 2-D displacement (Fig. 6b)
    RUN/report.md, results.json     SNR at SER 1e-3 per drop and averaged, gains, paper side by side;
                                    ser_perfect.png, ser_ls.png, mobility_*.png

Channel: the local scattering model ([HM] eqs. (13)-(14)), ``Nr = 12`` antennas, ``Nu = 6`` QPSK
users, ``sigma_phi = 10 deg``, ``d = 0.5``; drop ``k`` is the channel argument ``seed = k`` and the
bundles record its angles. SNRs are in the ``hypermimo`` convention (``sigma^2 = 10^(-SNR/10)``,
unit-gain users; :mod:`neuralmimo.snr` says why). With ``csi: ls`` the receivers get the LS
estimate from ``n_pilots`` orthogonal pilots and the pilot-residual noise variance; with
``perfect``, the true ``H`` and ``sigma^2`` (the paper's assumption).

Every method of one (drop, CSI, SNR) point sees the same channels, symbols and noise. MMNet per
channel is the paper's upper baseline: trained for each channel at its SNR (``T = 10``), on a
subset of the channels (``mmnet_channels``) because it is expensive; its SER is reported next to
the other methods' SER *on the same subset*.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .. import training
from ..bundle import BundleError, load_model, read_manifest, save_model
from ..channels import ChannelSpec, make_channel
from ..constellation import Constellation
from ..detectors import ML_MAX_CANDIDATES, linear_detect, ml_detect
from ..detectors.mmnet.model import (HYPERMIMO_CODEC, HyperMIMO, OAMPNet, mmnet_original_parameters,
                                     ser_crossing)
from ..datasets import CSI_KINDS, draw_channel_batch as draw_batch
from ..site.drift import model_statistics
from ..detectors.mmnet.train import (detect_mmnet_per_channel, train_hypermimo,
                                     train_mmnet_per_channel, train_oampnet)
from .figures import plt, save_figure
from .runs import load_yaml, read_json, run_steps, section, write_json

PAPER = {"hypermimo_vs_lmmse_db": 2.85, "hypermimo_vs_oampnet_db": 1.85, "hypermimo_vs_mmnet_db": -0.65}
METHODS = ("hypermimo", "mmnet", "oampnet", "mmse", "zf", "ml")
LABEL = {"hypermimo": "HyperMIMO", "mmnet": "MMNet per channel (T=10)", "oampnet": "OAMPNet (10 it.)",
         "mmse": "LMMSE", "zf": "ZF", "ml": "exact ML"}
STYLE = {"hypermimo": ("tab:green", "^"), "mmnet": ("tab:purple", "D"), "oampnet": ("tab:orange", "s"),
         "mmse": ("tab:gray", "x"), "zf": ("tab:brown", "v"), "ml": ("black", "+")}
TARGET_SER = 1e-3


@dataclass
class SystemConfig:
    nr: int = 12
    nu: int = 6
    modulation: str = "qpsk"
    angle_std_deg: float = 10.0
    spacing: float = 0.5
    n_pilots: int = 16
    drop_files: dict = field(default_factory=dict)   # {drop: channel mapping file}: that drop's channels from a file


@dataclass
class TrainingConfig:
    layers: int = 5
    hidden: int = 75
    steps: int = 10000
    steps_per_epoch: int = 250
    batch: int = 500
    vectors: int = 1
    snr_db: list = field(default_factory=lambda: [0.0, 10.0])
    lr: list = field(default_factory=lambda: [1e-3, 1e-4])
    csi: list = field(default_factory=lambda: ["perfect", "ls"])
    oampnet_iterations: int = 10
    oampnet_steps: int = 500
    seed: int = 1
    # beyond the paper: one HyperMIMO for every drop, trained on a fresh random drop per channel
    # (``across`` step), once per hypernetwork width listed here (empty: skip) and per input set
    # in ``across_inputs`` ("r": the paper's R_A and sigma; "r+spatial": also each user's spatial
    # correlation, see detectors/mmnet/model.py)
    across_hidden: list = field(default_factory=list)
    across_inputs: list = field(default_factory=lambda: ["r"])


@dataclass
class EvaluationConfig:
    snr_db: list = field(default_factory=lambda: [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0])
    channels: int = 2000
    vectors: int = 50
    ml: bool = True
    mmnet_channels: int = 200
    mmnet_layers: int = 10
    mmnet_steps: int = 300
    mmnet_lr: float = 1e-2
    seed: int = 7


@dataclass
class MobilityConfig:
    snr_db: float = 8.0
    rotations_deg: list = field(default_factory=lambda: [0.0, 1.0, 2.0, 5.0, 10.0, 20.0])
    displacements_m: list = field(default_factory=lambda: [0.0, 5.0, 10.0, 25.0, 50.0, 100.0])
    distance_m: float = 250.0
    displacement_draws: int = 20
    channels: int = 500
    vectors: int = 20
    seed: int = 11


@dataclass
class HyperMIMOConfig:
    name: str = "hypermimo"
    drops: list = field(default_factory=lambda: list(range(10)))
    system: SystemConfig = field(default_factory=SystemConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    mobility: MobilityConfig | None = field(default_factory=MobilityConfig)
    threads: int = 2
    device: str = "cpu"   # cpu, cuda or cuda:N (docs/training.md); --device overrides

    @classmethod
    def from_dict(cls, d: dict) -> "HyperMIMOConfig":
        d = dict(d)
        known = {"name", "drops", "system", "training", "evaluation", "mobility", "threads", "device"}
        if set(d) - known:
            raise ValueError(f"unknown keys {sorted(set(d) - known)} in HyperMIMO config")
        cfg = cls(name=d.get("name", "hypermimo"), drops=list(d.get("drops", list(range(10)))),
                  threads=int(d.get("threads", 2)),
                  device=training.device_name(d.get("device", "cpu")), system=section(SystemConfig, d.get("system"), "system"),
                  training=section(TrainingConfig, d.get("training"), "training"),
                  evaluation=section(EvaluationConfig, d.get("evaluation"), "evaluation"),
                  mobility=None if d.get("mobility", {}) is None else section(MobilityConfig, d.get("mobility"),
                                                                              "mobility"))
        bad = [c for c in cfg.training.csi if c not in CSI_KINDS]
        if bad:
            raise ValueError(f"training.csi: {bad} not in {list(CSI_KINDS)}")
        if not all(isinstance(k, int) and k >= 0 for k in cfg.drops) or not cfg.drops:
            raise ValueError(f"drops must be a non-empty list of drop numbers >= 0, got {cfg.drops}")
        if cfg.system.n_pilots < cfg.system.nu:
            raise ValueError(f"system.n_pilots must be >= nu = {cfg.system.nu}")
        return cfg

    @classmethod
    def load(cls, path) -> "HyperMIMOConfig":
        return cls.from_dict(load_yaml(path))

    @property
    def constellation(self) -> Constellation:
        return Constellation(self.system.modulation)

    def channel_spec(self, drop: int, **mobility) -> ChannelSpec:
        s = self.system
        if drop in s.drop_files:  # a recorded/ray-traced drop (docs/external-channels.md)
            if mobility:
                raise ValueError(f"drop {drop} is read from {s.drop_files[drop]}: mobility needs a local-scattering drop")
            return ChannelSpec("file", {"mapping": str(s.drop_files[drop])})
        return ChannelSpec("local-scattering", {"angle_std_deg": s.angle_std_deg, "spacing": s.spacing, "seed": drop,
                                                **mobility})

    def channel(self, drop: int, **mobility):
        return make_channel(self.channel_spec(drop, **mobility), self.system.nr, self.system.nu)


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
        model = HyperMIMO(s.nu, tr.layers, tr.hidden, s.modulation)
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


def _rate(c) -> float:
    return c[0] / c[1] if c[1] else float("nan")


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
    from ..detectors.mmnet.model import qr_positive

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


# -------------------------------------------------------------------------------------- report
def plot_training(history: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, h in history.items():
        if "oampnet" in name:
            continue
        ax.plot([r["epoch"] for r in h["history"]], [r["mse"] for r in h["history"]], label=name, alpha=0.8)
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE of the last layer (eq. 12)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2)
    save_figure(fig, path)


def _average_curves(evals: list[dict], csi: str, subset: bool = False) -> dict[str, list[float]]:
    """SER per method and SNR averaged over drops (errors and symbols pooled)."""
    n_points = len(evals[0]["csi"][csi])
    out = {}
    for i in range(n_points):
        pooled = {}
        for e in evals:
            p = e["csi"][csi][i]
            counts = p["subset"]["counts"] if subset else p["counts"]
            for m, (err, n) in counts.items():
                acc = pooled.setdefault(m, [0, 0])
                acc[0] += err
                acc[1] += n
        for m, (err, n) in pooled.items():
            out.setdefault(m, []).append(err / n if n else float("nan"))
    return out


def plot_curves(snr: list[float], curves: dict, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for m in METHODS:
        if m not in curves:
            continue
        ys = curves[m]
        c, mk = STYLE[m]
        ax.plot([s for s, y in zip(snr, ys) if y > 0], [y for y in ys if y > 0], color=c, marker=mk, label=LABEL[m])
    ax.axhline(TARGET_SER, color="red", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("SNR [dB] (hypermimo convention: 1 / noise variance per complex dimension)")
    ax.set_ylabel("SER (per complex symbol)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def plot_mobility(mobs: list[dict], key: str, xkey: str, path: Path, xlabel: str) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    xs = [p[xkey] for p in mobs[0][key]]
    for m in ("hypermimo", "oampnet", "mmse"):
        ys = [sum(mb[key][i][m] for mb in mobs) / len(mobs) for i in range(len(xs))]
        c, mk = STYLE[m]
        ax.plot(xs, ys, color=c, marker=mk, label=LABEL[m])
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"SER at {mobs[0]['snr_db']:g} dB")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    save_figure(fig, path)


def _fmt_db(x) -> str:
    return "> sweep" if x is None else f"{x:.2f}"


def _gain(a, b):
    return None if a is None or b is None else a - b


def step_report(cfg: HyperMIMOConfig, run: Path, progress: bool = True) -> dict:
    evals = [read_json(run / "evaluate" / f"drop{d}.json") for d in cfg.drops]
    train = read_json(run / "train" / "history.json")
    snr = cfg.evaluation.snr_db
    s, tr = cfg.system, cfg.training
    n_hyper = HyperMIMO.paper_parameters(s.nu, tr.layers, tr.hidden)
    n_mmnet = mmnet_original_parameters(s.nu, s.nr, 10)
    lines = [f"# HyperMIMO [HM] -- `{cfg.name}`", "",
             f"Local scattering, Nr = {s.nr}, Nu = {s.nu} {s.modulation.upper()} users, sigma_phi = "
             f"{s.angle_std_deg:g} deg, d = {s.spacing:g}; drops {cfg.drops} (drop k = seed k). SNR in the `hypermimo` "
             "convention (sigma^2 = 10^(-SNR/10) per complex dimension, unit-gain users). HyperMIMO: T = "
             f"{tr.layers} MMNet layers, hypernetwork {HyperMIMO.n_inputs(s.nu)} -> {HyperMIMO.n_inputs(s.nu)} -> "
             f"{tr.hidden} -> {HyperMIMO.n_outputs(s.nu, tr.layers)}, **{n_hyper:,} parameters = "
             f"{n_hyper / n_mmnet:.1f}x MMNet's {n_mmnet:,}** (T = 10, A_t complex Nu x Nr and psi_t per layer; the "
             f"paper: 'only 10x more'). Trained {tr.steps} steps of {tr.batch} x {tr.vectors} vectors, SNR uniform in "
             f"{tr.snr_db} dB, Adam {tr.lr[0]:g} -> {tr.lr[1]:g}.", ""]
    results = {"drops": {}, "average": {}}
    for csi in cfg.training.csi:
        avg = _average_curves(evals, csi)
        plot_curves(snr, avg, run / f"ser_{csi}.png",
                    f"{'perfect CSI' if csi == 'perfect' else f'LS CSI ({s.n_pilots} pilots)'}, mean over "
                    f"{len(evals)} drop(s)")
        cross = {m: ser_crossing(snr, v, TARGET_SER) for m, v in avg.items()}
        results["average"][csi] = {"ser": avg, "snr_at_1e-3": cross}
        title = "perfect CSI (the paper's setting)" if csi == "perfect" else f"LS CSI from {s.n_pilots} pilots"
        has_subset = csi == "perfect" and "subset" in evals[0]["csi"][csi][0]
        cols = [m for m in METHODS if m in avg or (m == "mmnet" and has_subset)]
        lines += [f"## SNR [dB] needed for SER 1e-3, {title}", "",
                  "| drop | " + " | ".join(LABEL[m] for m in cols) + " | LMMSE - HyperMIMO [dB] |",
                  "|---|" + "---|" * (len(cols) + 1)]
        gains = []
        for e in evals:
            curves = {m: [p["ser"][m] for p in e["csi"][csi]] for m in e["csi"][csi][0]["ser"]}
            if has_subset:
                curves["mmnet"] = [_rate(p["subset"]["counts"]["mmnet"]) for p in e["csi"][csi]]
            c = {m: ser_crossing(snr, v, TARGET_SER) for m, v in curves.items()}
            results["drops"].setdefault(str(e["drop"]), {})[csi] = c
            g = _gain(c.get("mmse"), c.get("hypermimo"))
            if g is not None:
                gains.append(g)
            lines.append(f"| {e['drop']} | " + " | ".join(_fmt_db(c.get(m)) for m in cols) + f" | {_fmt_db(g)} |")
        cross_sub = {}
        if has_subset:
            sub = _average_curves(evals, csi, subset=True)
            cross_sub = {m: ser_crossing(snr, v, TARGET_SER) for m, v in sub.items()}
            cross["mmnet"] = cross_sub.get("mmnet")
            results["average"][csi]["mmnet_subset"] = {"ser": sub, "snr_at_1e-3": cross_sub}
            avg["mmnet"] = sub["mmnet"]
            plot_curves(snr, avg, run / f"ser_{csi}.png", f"perfect CSI, mean over {len(evals)} drop(s)")
        mean_gain = sum(gains) / len(gains) if gains else None
        results["average"][csi]["mean_per_drop_gain_db"] = mean_gain
        results["average"][csi]["drops_with_gain"] = len(gains)
        lines.append("| **mean curve** | " + " | ".join(_fmt_db(cross.get(m)) for m in cols)
                     + f" | **{_fmt_db(_gain(cross.get('mmse'), cross.get('hypermimo')))}** |")
        lines += ["", "'mean curve': the SER curves pooled over the drops (errors and symbols), then the crossing "
                  "(the paper averages over its 10 drops). Mean of the per-drop gains: "
                  f"**{_fmt_db(mean_gain)} dB** over the {len(gains)} of {len(evals)} drops where both cross 1e-3 in the "
                  "sweep." + (f" MMNet per channel runs on the first {cfg.evaluation.mmnet_channels} channels of each "
                              "point; its crossing is that subset's." if has_subset else ""), ""]
        if csi == "perfect":
            h, m, o, l, ml = (cross.get(k) for k in ("hypermimo", "mmnet", "oampnet", "mmse", "ml"))
            lines += ["| at SER 1e-3 (mean curve) | paper | ours |", "|---|---|---|",
                      f"| HyperMIMO gain over LMMSE | {PAPER['hypermimo_vs_lmmse_db']:.2f} dB | {_fmt_db(_gain(l, h))} dB |",
                      f"| HyperMIMO gain over OAMPNet | {PAPER['hypermimo_vs_oampnet_db']:.2f} dB | {_fmt_db(_gain(o, h))} dB |",
                      f"| HyperMIMO gain over MMNet per channel | {PAPER['hypermimo_vs_mmnet_db']:.2f} dB | "
                      f"{_fmt_db(_gain(m, h))} dB |",
                      f"| MMNet per channel: SNR above exact ML (same channels) | (near ML) | "
                      f"{_fmt_db(_gain(m, cross_sub.get('ml')))} dB |",
                      f"| LMMSE: SNR above exact ML | (several dB) | {_fmt_db(_gain(l, ml))} dB |", ""]
    times = [e["timing"] for e in evals]
    gen = sum(t["generate_seconds_per_channel"] for t in times) / len(times)
    lines += ["## Cost", "", f"Weight generation (QR + one hypernetwork pass): {gen * 1e6:.1f} us per channel."]
    if all("mmnet_train_seconds_per_channel" in t for t in times):
        mm = sum(t["mmnet_train_seconds_per_channel"] for t in times) / len(times)
        lines.append(f"MMNet trained per channel ({cfg.evaluation.mmnet_steps} Adam steps, batched over "
                     f"{cfg.evaluation.mmnet_channels} channels): {mm * 1e3:.2f} ms per channel, **{mm / gen:,.0f}x** the "
                     "weight generation.")
        results["speedup"] = mm / gen
    tsec = {k: v["seconds"] for k, v in train.items()}
    lines += [f"Training time per HyperMIMO: {', '.join(f'{k} {v:.0f} s' for k, v in tsec.items() if 'oampnet' not in k)}.", ""]
    mob_files = [run / "mobility" / f"drop{d}.json" for d in cfg.drops]
    if all(p.exists() for p in mob_files):
        mobs = [read_json(p) for p in mob_files]
        plot_mobility(mobs, "rotation", "rotation_deg", run / "mobility_rotation.png", "rotation of all users [deg]")
        plot_mobility(mobs, "displacement", "displacement_m", run / "mobility_displacement.png",
                      f"displacement [m] from {cfg.mobility.distance_m:g} m")
        lines += [f"## Mobility (SER at {mobs[0]['snr_db']:g} dB, mean over drops)", "",
                  "| rotation [deg] | HyperMIMO | OAMPNet | LMMSE | HyperMIMO <= LMMSE |", "|---|---|---|---|---|"]
        worse = 0
        for i, p in enumerate(mobs[0]["rotation"]):
            v = {m: sum(mb["rotation"][i][m] for mb in mobs) / len(mobs) for m in ("hypermimo", "oampnet", "mmse")}
            worse += v["hypermimo"] > v["mmse"]
            lines.append(f"| {p['rotation_deg']:g} | {v['hypermimo']:.2e} | {v['oampnet']:.2e} | {v['mmse']:.2e} | "
                         f"{'yes' if v['hypermimo'] <= v['mmse'] else '**no**'} |")
        lines += ["", "| displacement [m] | HyperMIMO | OAMPNet | LMMSE | HyperMIMO <= LMMSE |", "|---|---|---|---|---|"]
        for i, p in enumerate(mobs[0]["displacement"]):
            v = {m: sum(mb["displacement"][i][m] for mb in mobs) / len(mobs) for m in ("hypermimo", "oampnet", "mmse")}
            worse += v["hypermimo"] > v["mmse"]
            lines.append(f"| {p['displacement_m']:g} | {v['hypermimo']:.2e} | {v['oampnet']:.2e} | {v['mmse']:.2e} | "
                         f"{'yes' if v['hypermimo'] <= v['mmse'] else '**no**'} |")
        results["mobility_points_worse_than_lmmse"] = worse
        lines += ["", "Figures: `mobility_rotation.png`, `mobility_displacement.png`.", ""]
    across = run / "across" / "results.json"
    if across.exists():
        lines += _across_section(cfg, read_json(across), results, snr)
    lines += ["Figures: `ser_perfect.png`, `ser_ls.png`, `train/loss.png`.", ""] + DEVIATIONS
    (run / "report.md").write_text("\n".join(lines))
    write_json(run / "results.json", results)
    return results


DEVIATIONS = [
    "## Deviations and ambiguities", "",
    "* **SNR** ([HM] eq. (15) is ambiguous): the `hypermimo` convention, sigma^2 = 10^(-SNR/10) per complex "
    "dimension with unit-energy symbols and unit-average-gain users (`neuralmimo/snr.py`); under it the paper's 1e-3 "
    "crossings lie inside its 0-10 dB training range.",
    "* **Eq. (9)** uses `Nu sigma^2` where the paper writes `Nr sigma^2` (y* has Nu entries; derivation in "
    "`detectors/mmnet/model.py`).",
    "* **QR**: diag(R_A) made real and positive (R_A = the Cholesky factor of H^H H), which the paper leaves open.",
    "* **Drops**: ours are drawn from seeds 0..9 (users uniform in a 120 deg sector); the paper's Fig. 4 drops are not "
    "given numerically, so the LMMSE-to-ML gap differs drop by drop from theirs.",
    "* **Training length**: the paper gives batch 500 and the learning-rate decay 1e-3 -> 1e-4 but no number of steps; "
    "this config trains each model for `training.steps` steps (the loss is still falling slowly at the end, "
    "`train/loss.png`); `paper.yaml` trains 5x longer.",
    "* **MMNet per channel**: T = 10 in the QR form (Nu x Nu matrices, 780 parameters per channel), started at the "
    "LMMSE filter and trained by Adam (lr 1e-2, `evaluation.mmnet_steps` steps) on fresh symbols and noise of its "
    "channel; the paper does not give its schedule. OAMPNet: gamma_t, theta_t start at 1 (plain OAMP), trained on "
    "the drop with the same SNR range.",
    "* **LS CSI** (not in the paper): H and sigma^2 from 16 DFT pilots (LS estimate and its residual noise variance), "
    "for training and evaluation alike; ML and LMMSE use the same estimate.", ""]


def _across_section(cfg: HyperMIMOConfig, across: dict, results: dict, snr: list) -> list[str]:
    """Report lines: SNR at SER 1e-3 of the across-drops models against the per-drop one and LMMSE."""
    lines = ["## Beyond the paper: one HyperMIMO for every drop (perfect CSI)", "",
             "Trained like the per-drop models, but every training channel comes from a new random drop; "
             "evaluated on each drop (LMMSE on the same data).", "",
             "| drop | per-drop HyperMIMO | " + " | ".join(f"across drops: {v}" for v in across["variants"])
             + " | LMMSE |", "|---|---|" + "---|" * (len(across["variants"]) + 1)]
    summary = {}
    for d in cfg.drops:
        per_drop = results["drops"].get(str(d), {}).get("perfect", {}).get("hypermimo")
        cells, lmmse = [], None
        for h in across["variants"]:
            pts = across["models"][h]["drops"][str(d)]
            c = ser_crossing(snr, [p["ser"]["across"] for p in pts], TARGET_SER)
            lmmse = ser_crossing(snr, [p["ser"]["mmse"] for p in pts], TARGET_SER)
            summary.setdefault(h, []).append((c, lmmse, per_drop))
            cells.append(_fmt_db(c))
        lines.append(f"| {d} | {_fmt_db(per_drop)} | " + " | ".join(cells) + f" | {_fmt_db(lmmse)} |")
    lines.append("")
    for h, rows in summary.items():
        gains = [lm - c for c, lm, _ in rows if c is not None and lm is not None]
        losses = [c - pd for c, _, pd in rows if c is not None and pd is not None]
        if gains:
            lines.append(f"Across drops ({h}): mean gain over LMMSE {sum(gains) / len(gains):.2f} dB; mean loss "
                         f"to the per-drop model {sum(losses) / max(len(losses), 1):.2f} dB "
                         f"({len(gains)} of {len(rows)} drops cross 1e-3 in the sweep).")
    return lines + [""]


STEPS = {"train": step_train, "evaluate": step_evaluate, "mobility": step_mobility, "across": step_across,
         "report": step_report}
STEP_HELP = {"train": "one HyperMIMO per drop and CSI kind (bundles), OAMPNet per drop",
             "evaluate": "SER vs SNR of HyperMIMO, MMNet per channel, OAMPNet, LMMSE, ZF, exact ML on the same data",
             "mobility": "SER under rotation (Fig. 6a) and 2-D displacement (Fig. 6b) of the users",
             "across": "beyond the paper: one HyperMIMO trained across random drops, evaluated on every drop",
             "report": "report.md: SNR at SER 1e-3 per drop and averaged, gains next to the paper's, plots"}


PARALLEL_STEPS = {"train", "across"}  # run in every process under torchrun (docs/training.md)


def run_pipeline(cfg: HyperMIMOConfig, run: Path, steps=None, progress: bool = True, **options) -> None:
    """Run the pipeline's ``steps`` (default all) into ``run``; ``options``: ``resume``,
    ``checkpoint_every`` (:func:`~neuralmimo.lab.runs.run_steps`)."""
    run_steps("hypermimo", STEPS, cfg, run, steps, progress, parallel=PARALLEL_STEPS, **options)


# ------------------------------------------------------------------------------ the families table's entries
def scale_training(length: int, seed: int, config: Path) -> tuple[torch.nn.Module, object]:
    """``(model, run)``: this family's training at the size of the pipeline config ``config``
    for ``length`` steps; ``run() -> (history, samples)``
    (:func:`neuralmimo.lab.scale.family_training`)."""
    cfg = HyperMIMOConfig.load(config)
    tr, s = cfg.training, cfg.system
    chan = cfg.channel(cfg.drops[0])
    torch.manual_seed(seed)
    model = HyperMIMO(s.nu, tr.layers, tr.hidden, s.modulation)

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

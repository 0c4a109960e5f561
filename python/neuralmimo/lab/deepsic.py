"""Joint, online and modular-hypernetwork DeepSIC over a ``T``-block transmission, [MH] Sec. IV.

Run folder (``neuralmimo deepsic run --config C --out RUN``)::

    RUN/config.yaml                 the configuration used
    RUN/train/hypernetwork/         hypernetwork + embeddings bundle (what the neural block loads)
    RUN/train/joint/                joint DeepSIC bundle: one module set per K
    RUN/train/history.json          training losses, training time
    RUN/scenarios/NAME/             metrics.json (SER per block and method) and a PNG per scenario
    RUN/report.md, RUN/results.json the SER table, runtime table (Table I) and complexity ratios

Channels are channel specs (``{name, args}``, :mod:`neuralmimo.channels.registry`). The paper's
receiver (BPSK, ``Re y``) works on real channels: a real-valued model (``deepsic-sed``, [MH]
Sec. IV-A) is used as it is, a complex one is made real the way the [MH] authors made COST2100
real (:func:`~neuralmimo.channels.beamformed_gains`); the ``time-varying`` model stands in for
COST2100, which is not available here. SNRs are in the ``deepsic`` convention (noise variance
``10^(-SNR/10)`` per real dimension, unit-gain diagonal / unit mean user gain).

Training data: blocks of ``block_length`` symbols (``n_pilots`` of them pilots for the LS
estimate) for every ``K`` in ``2..K_max``, from the training channel's independent draws
(:meth:`~neuralmimo.channels.ChannelModel.sample`); the nominal SNR of each block is uniform in
``snr_db``.

Every scenario transmits ``T`` blocks of ``n_pilots + n_info`` symbols over the channel's block
process, with ``K[t]`` users (:func:`~neuralmimo.channels.user_counts`); all receivers see the
same blocks. MMSE and exact ML use the LS estimate and the pilot-residual noise estimate, like
DeepSIC.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .. import training
from ..bundle import load_model, save_model
from ..channels import ChannelSpec, beamformed_gains, make_channel, user_counts
from ..constellation import Constellation
from ..datasets import Frames, draw_frames
from ..detectors import ML_MAX_CANDIDATES, linear_detect, ml_detect
from ..detectors.deepsic.complex import COMPLEX_HYPERNET_CODEC, PhaseInvariantHypernetwork, SoftICModuleSpec
from ..detectors.deepsic.model import (HYPERNET_CODEC, JOINT_CODEC, JointModules, ModularHypernetwork, ModuleSpec,
                                       deepsic_detect, init_modules, resize_modules)
from ..detectors.deepsic.train import front_end, train_hypernetwork, train_joint, train_online
from ..site.drift import model_statistics
from ..metrics import snr_at
from ..snr import noise_variance
from .figures import plt, save_figure
from .runs import load_yaml, read_json, run_steps, section, write_json

METHODS = ("joint", "online", "hypernetwork", "mmse", "ml")
HYPERNET_CODECS = {"hypernet-deepsic": HYPERNET_CODEC, "hypernet-deepsic-complex": COMPLEX_HYPERNET_CODEC}
SNR_CONVENTIONS = ("deepsic", "hypermimo")


ARCHITECTURES = ("hypernet-deepsic", "hypernet-deepsic-complex")


@dataclass
class ReceiverConfig:
    architecture: str = "hypernet-deepsic"  # or hypernet-deepsic-complex (complex baseband, docs/deepsic/complex.md)
    n_rx: int = 12
    k_max: int = 12
    modulation: str = "bpsk"
    iterations: int = 3
    module_hidden: int = 16
    hyper_hidden: list = field(default_factory=lambda: [64, 32])
    real_channel: bool | None = None  # default: BPSK (the paper's receiver on real channels)

    def spec(self) -> ModuleSpec:
        """The modules of joint and online DeepSIC (and of the paper's hypernetwork)."""
        real = self.real_channel if self.real_channel is not None else self.modulation == "bpsk"
        return ModuleSpec(self.n_rx, self.modulation, real, self.module_hidden)

    def hypernetwork(self) -> ModularHypernetwork | PhaseInvariantHypernetwork:
        """A fresh hypernetwork of the configured architecture."""
        if self.architecture == "hypernet-deepsic-complex":
            return PhaseInvariantHypernetwork(SoftICModuleSpec(self.n_rx, self.modulation, hidden=self.module_hidden),
                                              self.k_max, tuple(self.hyper_hidden), self.iterations)
        return ModularHypernetwork(self.spec(), self.k_max, tuple(self.hyper_hidden), self.iterations)


@dataclass
class TrainingConfig:
    channel: dict = field(default_factory=lambda: {"name": "deepsic-sed", "args": {}})
    k_values: list | None = None       # default 2..k_max
    symbols_per_k: int = 100_000
    block_length: int = 1000
    n_pilots: int = 800
    snr_db: list = field(default_factory=lambda: [6.0, 14.0])
    hyper_epochs: int = 25
    hyper_lr: float = 5e-4
    hyper_batch_blocks: int = 32
    hyper_symbols_per_block: int = 250
    joint_epochs: int = 25
    joint_lr: float = 1e-3
    joint_batch: int = 1000
    seed: int = 100


@dataclass
class OnlineConfig:
    steps: int = 100
    lr: float = 1e-3


@dataclass
class ScenarioConfig:
    name: str = "fixed_k"
    title: str = ""
    channel: dict = field(default_factory=lambda: {"name": "deepsic-sed", "args": {}})
    k_min: int = 8
    k_max: int = 8
    change_prob: float = 0.2
    snr_db: float | list = 10.0
    n_pilots: int | list = 800
    n_info: int = 15_200
    blocks: int = 100
    ml: bool = True
    ml_symbols: int | None = None       # ML on the first this many information symbols of a block
    seed: int = 0

    @property
    def sweep(self) -> tuple[str, list] | None:
        if isinstance(self.snr_db, list):
            return "snr_db", self.snr_db
        if isinstance(self.n_pilots, list):
            return "n_pilots", self.n_pilots
        return None


@dataclass
class DeepSICConfig:
    name: str = "deepsic"
    receiver: ReceiverConfig = field(default_factory=ReceiverConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    online: OnlineConfig = field(default_factory=OnlineConfig)
    scenarios: list = field(default_factory=list)
    threads: int = 2
    device: str = "cpu"   # cpu, cuda or cuda:N (docs/training.md); --device overrides
    # deepsic: the paper's (noise 10^(-SNR/10) per real dimension); hypermimo: per-user SNR,
    # noise 10^(-SNR/10) per complex dimension, the same for every K (users join and leave)
    snr_convention: str = "deepsic"

    @classmethod
    def from_dict(cls, d: dict) -> "DeepSICConfig":
        d = dict(d)
        known = {"name", "receiver", "training", "online", "scenarios", "threads", "device", "snr_convention"}
        if set(d) - known:
            raise ValueError(f"unknown keys {sorted(set(d) - known)} in DeepSIC config")
        cfg = cls(name=d.get("name", "deepsic"), threads=int(d.get("threads", 2)),
                  device=training.device_name(d.get("device", "cpu")),
                  snr_convention=str(d.get("snr_convention", "deepsic")),
                  receiver=section(ReceiverConfig, d.get("receiver"), "receiver"),
                  training=section(TrainingConfig, d.get("training"), "training"),
                  online=section(OnlineConfig, d.get("online"), "online"),
                  scenarios=[section(ScenarioConfig, s, f"scenario {i}") for i, s in enumerate(d.get("scenarios") or [])])
        if cfg.receiver.architecture not in ARCHITECTURES:
            raise ValueError(f"receiver.architecture must be one of {ARCHITECTURES}, got {cfg.receiver.architecture!r}")
        if cfg.snr_convention not in SNR_CONVENTIONS:
            raise ValueError(f"snr_convention must be one of {SNR_CONVENTIONS}, got {cfg.snr_convention!r}")
        if cfg.receiver.architecture == "hypernet-deepsic-complex" and cfg.spec.real_channel:
            raise ValueError("the complex-baseband hypernetwork needs a complex receiver (real_channel false)")
        train_channel = ChannelSpec.parse(cfg.training.channel)
        make_channel(train_channel, cfg.receiver.n_rx, cfg.receiver.k_max)  # refuses bad names and arguments early
        for s in cfg.scenarios:
            sc_channel = ChannelSpec.parse(s.channel)
            if sc_channel.name != train_channel.name:
                raise ValueError(f"scenario {s.name} uses {sc_channel.name!r} but the receiver is trained on "
                                 f"{train_channel.name!r}")
            if not 1 <= s.k_min <= s.k_max <= cfg.receiver.k_max:
                raise ValueError(f"scenario {s.name}: need 1 <= k_min <= k_max <= receiver k_max")
            make_channel(sc_channel, cfg.receiver.n_rx, s.k_max)
        return cfg

    @classmethod
    def load(cls, path) -> "DeepSICConfig":
        return cls.from_dict(load_yaml(path))

    @property
    def k_values(self) -> list[int]:
        return list(self.training.k_values or range(2, self.receiver.k_max + 1))

    @property
    def spec(self) -> ModuleSpec:
        return self.receiver.spec()

    @property
    def constellation(self) -> Constellation:
        return Constellation(self.receiver.modulation)

    def noise_var(self, snr_db) -> torch.Tensor:
        """Complex noise variance per antenna for SNRs in the config's convention (float32 tensor)."""
        snr = torch.as_tensor(snr_db, dtype=torch.float64)
        p_ref = noise_variance(0.0, self.snr_convention, channel_energy=1.0, nr=1, nt=1)  # neither depends on H
        return (p_ref / 10.0 ** (snr / 10.0)).float()


# ----------------------------------------------------------------------------------------- data
def receiver_channel(model, spec: ModuleSpec):
    """``h -> h`` as the paper's receiver sees it: a real receiver on a complex model gets
    :func:`~neuralmimo.channels.beamformed_gains`, otherwise the channel is used as it is."""
    if spec.real_channel and not model.real_valued:
        return beamformed_gains
    return lambda h: h


def _pad_users(h: torch.Tensor, k_max: int) -> torch.Tensor:
    return torch.nn.functional.pad(h, (0, k_max - h.shape[-1]))


def training_blocks(cfg: DeepSICConfig) -> Frames:
    """Training blocks of every ``K`` (see the module docstring)."""
    tr, km = cfg.training, cfg.receiver.k_max
    g = torch.Generator().manual_seed(tr.seed)
    per_k = max(1, math.ceil(tr.symbols_per_k / tr.block_length))
    ks = torch.tensor([k for k in cfg.k_values for _ in range(per_k)])
    lo, hi = tr.snr_db
    snr = lo + (hi - lo) * torch.rand(len(ks), generator=g, dtype=torch.float64)
    model = make_channel(ChannelSpec.parse(tr.channel).with_defaults(seed=tr.seed), cfg.receiver.n_rx, km)
    h = receiver_channel(model, cfg.spec)(model.sample(len(ks), g))
    return draw_frames(h, cfg.constellation, tr.n_pilots, tr.block_length - tr.n_pilots, cfg.noise_var(snr), g,
                       pilots="random", n_users=ks)


class Transmission:
    """The ``T`` blocks of a scenario: ``K[t]`` and ``H[t]`` (``(N, K_max)``, absent users zero),
    from the scenario channel's block process seeded with the scenario's seed."""

    def __init__(self, cfg: DeepSICConfig, sc: ScenarioConfig):
        n, km = cfg.receiver.n_rx, cfg.receiver.k_max
        model = make_channel(ChannelSpec.parse(sc.channel).with_defaults(seed=sc.seed), n, sc.k_max)
        process = model.block_process(sc.seed)
        to_receiver = receiver_channel(model, cfg.spec)
        self.n_users = user_counts(sc.blocks, sc.k_min, sc.k_max, sc.change_prob, sc.seed + 1)
        self.h = _pad_users(to_receiver(torch.stack([process.next() for _ in range(sc.blocks)])), km)
        offsets = getattr(model, "snr_offset_db", None)  # per-user SNR profiles of the synthetic channel
        self.user_snr_offset_db = None if offsets is None else torch.stack([offsets(t) for t in range(sc.blocks)])
        self.h = self.h * (torch.arange(km)[None, None, :] < torch.tensor(self.n_users)[:, None, None])


# ------------------------------------------------------------------------------------ training
def _system(cfg: DeepSICConfig) -> dict:
    return {"nr": cfg.receiver.n_rx, "nt": cfg.receiver.k_max, "modulation": cfg.receiver.modulation,
            "n_pilots": cfg.training.n_pilots, "snr_convention": cfg.snr_convention, "snr_db": cfg.training.snr_db,
            "channel": ChannelSpec.parse(cfg.training.channel).to_dict()}


def step_train(cfg: DeepSICConfig, run: Path, progress: bool = True) -> dict:
    """Offline training of the hypernetwork (all K mixed) and of joint DeepSIC (one set per K)."""
    tr, spec = cfg.training, cfg.spec
    t0 = time.perf_counter()
    blocks = training_blocks(cfg)
    fe = front_end(blocks, spec)
    t_data = time.perf_counter() - t0
    torch.manual_seed(tr.seed)
    hyper = cfg.receiver.hypernetwork()
    bar = tqdm if progress else None
    t0 = time.perf_counter()
    with training.checkpoint_stage("train/hypernetwork"):  # data-parallel under torchrun
        h_hist = train_hypernetwork(hyper, fe, blocks, epochs=tr.hyper_epochs, lr=tr.hyper_lr,
                                    batch_blocks=tr.hyper_batch_blocks, symbols_per_block=tr.hyper_symbols_per_block,
                                    seed=tr.seed, progress=bar)
    t_hyper = time.perf_counter() - t0
    t0 = time.perf_counter()
    with training.checkpoint_stage("train/joint"):
        joint, j_hist = train_joint(spec, cfg.k_values, fe, blocks, iterations=cfg.receiver.iterations,
                                    epochs=tr.joint_epochs, lr=tr.joint_lr, batch_size=tr.joint_batch, seed=tr.seed,
                                    progress=bar)
    t_joint = time.perf_counter() - t0
    if not training.writer():  # data-parallel: rank 0 writes
        return {}
    provenance = {"config": asdict(cfg.training), "k_values": cfg.k_values, "blocks": len(blocks),
                  "symbols": int(blocks.labels.shape[0] * blocks.labels.shape[-1])}
    train_channel = make_channel(ChannelSpec.parse(tr.channel).with_defaults(seed=tr.seed), cfg.receiver.n_rx,
                                 cfg.receiver.k_max)
    save_model(hyper, HYPERNET_CODECS[cfg.receiver.architecture], run / "train" / "hypernetwork", system=_system(cfg),
               training={**provenance, "history": h_hist,
                         "channel_stats": model_statistics(train_channel)})  # for the block's drift monitor
    modules = JointModules(spec, list(joint), cfg.receiver.iterations)
    for k, theta in joint.items():
        getattr(modules, f"theta_k{k}").copy_(theta)
    save_model(modules, JOINT_CODEC, run / "train" / "joint", system=_system(cfg),
               training={**provenance, "history": j_hist})
    out = {"hyper_history": h_hist, "joint_history": j_hist, "seconds": {"data": t_data, "hypernetwork": t_hyper,
                                                                         "joint": t_joint}}
    write_json(run / "train" / "history.json", out)
    plot_training(out, run / "train" / "loss.png")
    return out


# ---------------------------------------------------------------------------------- evaluation
@dataclass
class Receivers:
    hyper: ModularHypernetwork | PhaseInvariantHypernetwork
    joint: dict[int, torch.Tensor]

    @property
    def iterations(self) -> int:
        return self.hyper.iterations


def load_receivers(cfg: DeepSICConfig, run: Path) -> Receivers:
    hyper, _ = load_model(run / "train" / "hypernetwork", HYPERNET_CODECS[cfg.receiver.architecture])
    joint, _ = load_model(run / "train" / "joint", JOINT_CODEC)
    return Receivers(hyper, joint.thetas())


def _ser(idx_hat: torch.Tensor, idx: torch.Tensor) -> float:
    return float((idx_hat != idx).double().mean())


def run_transmission(cfg: DeepSICConfig, sc: ScenarioConfig, rx: Receivers, snr_db: float, n_pilots: int,
                     methods=METHODS, progress: bool = False) -> dict:
    """All receivers over the scenario's ``T`` blocks (block by block, as deployed).

    ``methods`` may also name ``"zf"``. Returns per-method lists of per-block SER, ``K[t]`` and
    per-method wall-clock seconds (each including the LS front end).
    """
    const = cfg.constellation
    tx = Transmission(cfg, sc)
    g = torch.Generator().manual_seed(sc.seed * 7919 + int(round(snr_db * 100)) + 13 * n_pilots)
    nv = float(cfg.noise_var(snr_db))
    spec, q = cfg.spec, rx.iterations  # joint and online DeepSIC's modules
    ser = {m: [] for m in methods}
    seconds = {m: 0.0 for m in methods}
    online_theta = None
    gen_online = torch.Generator().manual_seed(sc.seed + 1)
    blocks_iter = tqdm(range(sc.blocks), desc=f"{sc.name} snr={snr_db:g} pilots={n_pilots}", leave=False,
                       disable=not progress)
    for t in blocks_iter:
        k = tx.n_users[t]
        b = draw_frames(tx.h[t:t + 1], const, n_pilots, sc.n_info, nv, g, pilots="random", n_users=k, estimate=False)
        labels = b.idx[0, :k]
        y_info = b.y_d[0]
        t0 = time.perf_counter()
        fe = front_end(b, spec)
        t_front = time.perf_counter() - t0
        feats_info = fe.feats[0, n_pilots:]
        if "hypernetwork" in methods:
            t0 = time.perf_counter()
            h_in, v_in = rx.hyper.inputs(fe)
            det = rx.hyper.detect(h_in[0, :k], fe.noise_var[0], v_in[0, n_pilots:])
            seconds["hypernetwork"] += time.perf_counter() - t0 + t_front
            ser["hypernetwork"].append(_ser(det, labels))
        if "joint" in methods:
            t0 = time.perf_counter()
            det = deepsic_detect(rx.joint[k], feats_info, spec, q) if k in rx.joint else None
            seconds["joint"] += time.perf_counter() - t0 + t_front
            ser["joint"].append(_ser(det, labels) if det is not None else float("nan"))
        if "online" in methods:
            t0 = time.perf_counter()
            if online_theta is None:
                online_theta = init_modules(k, spec, gen_online)
            elif online_theta.shape[0] != k:
                online_theta = resize_modules(online_theta, k, spec, gen_online)
            online_theta = train_online(online_theta, fe.feats[0, :n_pilots], b.pilot_idx[0, :k], spec,
                                        iterations=q, steps=cfg.online.steps, lr=cfg.online.lr)
            det = deepsic_detect(online_theta, feats_info, spec, q)
            seconds["online"] += time.perf_counter() - t0 + t_front
            ser["online"].append(_ser(det, labels))
        h_ls = fe.h_ls[0, :, :k]
        for lin in ("mmse", "zf"):
            if lin in methods:
                t0 = time.perf_counter()
                x, _ = linear_detect(y_info, h_ls, fe.noise_var[0], lin, const)
                ser[lin].append(_ser(const.hard_decision(x), labels))
                seconds[lin] += time.perf_counter() - t0 + t_front
        if "ml" in methods:
            if sc.ml and const.num_points ** k <= ML_MAX_CANDIDATES:
                n_ml = sc.n_info if sc.ml_symbols is None else min(sc.ml_symbols, sc.n_info)
                t0 = time.perf_counter()
                det = ml_detect(y_info[:, :n_ml], h_ls, const)
                seconds["ml"] += time.perf_counter() - t0 + t_front
                ser["ml"].append(_ser(det, labels[:, :n_ml]))
            else:
                ser["ml"].append(float("nan"))
    return {"ser": ser, "n_users": tx.n_users, "seconds": seconds, "snr_db": snr_db, "n_pilots": n_pilots,
            "user_snr_offset_db": None if tx.user_snr_offset_db is None else tx.user_snr_offset_db.tolist()}


def _nanmean(v: list[float]) -> float | None:
    vals = [x for x in v if not math.isnan(x)]
    return sum(vals) / len(vals) if vals else None


def step_evaluate(cfg: DeepSICConfig, run: Path, progress: bool = True) -> dict:
    rx = load_receivers(cfg, run)
    results = {}
    for sc in cfg.scenarios:
        out_dir = run / "scenarios" / sc.name
        sweep = sc.sweep
        if sweep is None:
            r = run_transmission(cfg, sc, rx, float(sc.snr_db), int(sc.n_pilots), progress=progress)
            r["mean_ser"] = {m: _nanmean(v) for m, v in r["ser"].items()}
            plot_ser_vs_block(r, out_dir / "ser_vs_block.png", sc.title or sc.name, method_labels(cfg))
        else:
            key, values = sweep
            points = []
            for v in values:
                snr = float(v) if key == "snr_db" else float(sc.snr_db)
                pilots = int(v) if key == "n_pilots" else int(sc.n_pilots)
                p = run_transmission(cfg, sc, rx, snr, pilots, progress=progress)
                p["mean_ser"] = {m: _nanmean(s) for m, s in p["ser"].items()}
                points.append(p)
            r = {"sweep": key, "values": values, "points": points}
            plot_sweep(r, out_dir / f"ser_vs_{key}.png", sc.title or sc.name, method_labels(cfg))
        r["scenario"] = asdict(sc)
        write_json(out_dir / "metrics.json", r)
        results[sc.name] = r
    return results


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


STEPS = {"train": step_train, "evaluate": step_evaluate, "report": step_report}
STEP_HELP = {"train": "offline training: the hypernetwork over all K mixed, joint DeepSIC per K; exports bundles",
             "evaluate": "every scenario: joint / online / hypernetwork / MMSE / ML on the same blocks",
             "report": "report.md with the SER, runtime and complexity tables"}


PARALLEL_STEPS = {"train"}  # run in every process under torchrun (docs/training.md)


def run_pipeline(cfg: DeepSICConfig, run: Path, steps=None, progress: bool = True, **options) -> None:
    """Run the pipeline's ``steps`` (default all) into ``run``; ``options``: ``resume``,
    ``checkpoint_every`` (:func:`~neuralmimo.lab.runs.run_steps`)."""
    run_steps("deepsic", STEPS, cfg, run, steps, progress, parallel=PARALLEL_STEPS, **options)


# ------------------------------------------------------------------------------ the families table's entries
def scale_training(length: int, seed: int, config: Path) -> tuple[torch.nn.Module, object]:
    """``(model, run)``: this family's training at the size of the pipeline config ``config``
    for ``length`` epochs; ``run() -> (history, samples)``
    (:func:`neuralmimo.lab.scale.family_training`)."""
    cfg = DeepSICConfig.load(config)
    tr = cfg.training
    blocks = training_blocks(cfg)
    fe = front_end(blocks, cfg.spec)
    torch.manual_seed(seed)
    model = cfg.receiver.hypernetwork()

    def run():
        hist = train_hypernetwork(model, fe, blocks, epochs=length, lr=tr.hyper_lr,
                                  batch_blocks=tr.hyper_batch_blocks,
                                  symbols_per_block=tr.hyper_symbols_per_block, seed=seed)
        chunks = max(1, blocks.labels.shape[-1] // tr.hyper_symbols_per_block) * tr.hyper_symbols_per_block
        return hist, length * blocks.labels.shape[0] * chunks
    return model, run


def training_samples(config: Path) -> int:
    """Training samples (symbol vectors) the pipeline config ``config`` trains on, counted as
    :func:`scale_training` counts them (the paper-scale projections of ``bench training``)."""
    c = DeepSICConfig.load(config)
    per_epoch = len(c.k_values) * c.training.symbols_per_k
    return c.training.hyper_epochs * per_epoch

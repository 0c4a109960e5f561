"""The DeepSIC [MH] pipeline's steps (training, evaluation), :data:`PIPELINE` and the
entries of the families table (``scale_training``, ``training_samples``)."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ... import training
from ...bundle import load_model, save_model
from ...channels import ChannelSpec, beamformed_gains, make_channel, user_counts
from ...datasets import Frames, draw_frames
from ...detectors import ML_MAX_CANDIDATES, linear_detect, ml_detect
from ...detectors.deepsic.complex import COMPLEX_HYPERNET_CODEC, PhaseInvariantHypernetwork
from ...detectors.deepsic.model import (HYPERNET_CODEC, JOINT_CODEC, JointModules, ModularHypernetwork, ModuleSpec,
                                        deepsic_detect, init_modules, resize_modules)
from ...detectors.deepsic.train import front_end, train_hypernetwork, train_joint, train_online
from ...site.drift import model_statistics
from ..runs import Pipeline, Step, write_json
from .config import DeepSICConfig, ScenarioConfig
from .report import METHODS, method_labels, plot_ser_vs_block, plot_sweep, plot_training, step_report

HYPERNET_CODECS = {"hypernet-deepsic": HYPERNET_CODEC, "hypernet-deepsic-complex": COMPLEX_HYPERNET_CODEC}


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
            steps = cfg.online.steps
            if online_theta is None or online_theta.shape[0] != k:  # no modules for this K yet
                steps = cfg.online.cold_steps
                if cfg.online.start == "joint" and k in rx.joint:
                    online_theta = rx.joint[k].clone()
                elif online_theta is None:
                    online_theta = init_modules(k, spec, gen_online)
                else:
                    online_theta = resize_modules(online_theta, k, spec, gen_online)
            online_theta = train_online(online_theta, fe.feats[0, :n_pilots], b.pilot_idx[0, :k], spec,
                                        iterations=q, steps=steps, lr=cfg.online.lr)
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


PIPELINE = Pipeline("deepsic", {
    "train": Step(step_train, "offline training: the hypernetwork over all K mixed, joint DeepSIC per K; exports "
                              "bundles", parallel=True),
    "evaluate": Step(step_evaluate, "every scenario: joint / online / hypernetwork / MMSE / ML on the same blocks"),
    "report": Step(step_report, "report.md with the SER, runtime and complexity tables"),
})
STEPS, STEP_HELP, run_pipeline = PIPELINE.step_functions, PIPELINE.help, PIPELINE.run


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

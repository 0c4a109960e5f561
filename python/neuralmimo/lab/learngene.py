"""The learngene pipeline of the learngene/SDNet paper (Sec. IV-V), as four lab steps.

Each step writes into one run folder (``--out``), next to the steps before it::

    RUN/config.yaml                     the configuration used (all steps)
    RUN/baselines/                      ZF/MMSE on the target tasks before any training (Table I)
    RUN/collective/                     Nconv=12 model trained over the tasks in sequence,
                                        rho per task and layer (eq. 20), its bundle
    RUN/extract/                        the selected learngene bundle + one bundle per segment
    RUN/individual/task_NNN/SCHEME/     one individual model per scheme: bundle + history
    RUN/compare/                        report.md, figures (PNG) and results.json

Schemes: ``scratch``, ``transfer`` (pre-trained on one random collective task, fine-tuned) and
the six expansion strategies ``embed-top`` ... ``inherit-bottom`` (``embed-bottom`` and
``inherit-bottom`` are the same model; it is trained once, stored as ``inherit-bottom``).
"""

from __future__ import annotations

import contextlib
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import training
from ..bundle import load_model, save_model
from ..channels.external import ChannelMapping, load_channels
from ..channels.umi import UMiConfig, load_task, normalise_channels
from ..constellation import Constellation
from ..detectors.sdnet.learngene import (STRATEGIES, GradientRecorder, LearngenePenalty, expand, layer_significance,
                                         learngene_tensors, load_learngene, save_learngene, segment_layers,
                                         select_segment, strategy_mapping)
from ..detectors.sdnet.model import SDNET_CODEC, SDNet, count_trainable, sdnet_flops
from ..detectors.sdnet.train import draw_batch, evaluate, linear_baselines, make_optimiser, train
from ..drift import channel_statistics
from .figures import plt, save_figure
from .runs import load_yaml, read_json, run_steps, section, write_json

# Table I of the paper (Nconv = 12, SNR 25 dB): ZF and MMSE SER on its target tasks B-F.
PAPER_TABLE_I = {"task": ["B", "C", "D", "E", "F"],
                 "zf": [1.26e-1, 9.64e-2, 1.21e-1, 1.25e-1, 6.48e-2],
                 "mmse": [9.82e-2, 7.82e-2, 1.17e-1, 9.92e-2, 5.02e-2],
                 "sdnet_same_task": [2.01e-2, 1.01e-4, 1.33e-2, 2.30e-2, 5.87e-4]}
EMBED_BOTTOM_ALIAS = {"embed-bottom": "inherit-bottom"}


@dataclass
class DataConfig:
    ues_per_task: int = 10_000
    umi_seed: int = 2024
    normalise: str = "ue"          # "ue": each channel to ||H||_F^2 = Nr Nt; "task": as cached
    collective_tasks: list = field(default_factory=lambda: list(range(50)))
    target_tasks: list = field(default_factory=lambda: list(range(50, 55)))
    snr_db: float = 25.0
    n_pilots: int = 16
    modulation: str = "qpsk"
    val_vectors_per_ue: int = 4
    test_vectors_per_ue: int = 50
    task_files: dict = field(default_factory=dict)  # {task id: channel mapping file} read instead of a UMi task


@dataclass
class CollectiveConfig:
    n_conv: int = 12
    epochs_per_task: int = 50
    lr: float = 1e-3
    batch_size: int = 500
    tau: float = 1e-4
    seed: int = 0


@dataclass
class IndividualConfig:
    n_conv: int = 8
    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 500
    lam: float = 1e-3
    schemes: list = field(default_factory=lambda: ["scratch", "transfer", *STRATEGIES])
    transfer_pretrain_epochs: int = 50
    seed: int = 1
    workers: int = 1                # parallel trainings (processes with 1 torch thread each)


@dataclass
class CompareConfig:
    snr_sweep: list = field(default_factory=lambda: [20.0, 22.5, 25.0, 27.5, 30.0])
    scalability_nt: int = 4         # Fig. 13: (Nt, Nr) = (4, 32) with the same learngene
    scalability_epochs: int = 100


@dataclass
class LearngeneConfig:
    name: str = "paper"
    data: DataConfig = field(default_factory=DataConfig)
    collective: CollectiveConfig = field(default_factory=CollectiveConfig)
    individual: IndividualConfig = field(default_factory=IndividualConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    cache_dir: str | None = None
    device: str = "cpu"   # cpu, cuda or cuda:N (docs/training.md); --device overrides

    @classmethod
    def from_dict(cls, d: dict) -> "LearngeneConfig":
        known = {"name", "data", "collective", "individual", "compare", "cache_dir", "device"}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown learngene config keys {sorted(unknown)}")
        parts = {key: section(typ, d.get(key), key)
                 for key, typ in (("data", DataConfig), ("collective", CollectiveConfig),
                                  ("individual", IndividualConfig), ("compare", CompareConfig))}
        return cls(name=d.get("name", "run"), cache_dir=d.get("cache_dir"),
                   device=training.device_name(d.get("device", "cpu")), **parts)

    @classmethod
    def load(cls, path) -> "LearngeneConfig":
        return cls.from_dict(load_yaml(path))

    def umi(self) -> UMiConfig:
        return UMiConfig(ues_per_task=self.data.ues_per_task, seed=self.data.umi_seed)


# ----------------------------------------------------------------------------------------- data

class TaskSplits:
    """A UMi task's train/val/test channels, normalised per :attr:`DataConfig.normalise`."""

    def __init__(self, cfg: LearngeneConfig, task_id: int, nt: int | None = None):
        if task_id in cfg.data.task_files:  # QuaDRiGa, ray tracer, measurements (docs/external-channels.md)
            d = load_channels(ChannelMapping.load(cfg.data.task_files[task_id]))
            h = d["h"]
            if tuple(h.shape[1:]) != (32, 8):
                raise ValueError(f"task {task_id} ({cfg.data.task_files[task_id]}): SDNet's tasks are 32x8 (Nr x Nt), "
                                 f"the file gives {h.shape[1]}x{h.shape[2]}: set antennas/users in the mapping")
        else:
            d = load_task(cfg.umi(), task_id, Path(cfg.cache_dir) if cfg.cache_dir else None)
            h = torch.from_numpy(d["h"])
        if nt is not None:  # a UE using only its first nt ports (scalability, Fig. 13)
            h = h[..., :nt].contiguous()
        h = normalise_channels(h, cfg.data.normalise)
        split = torch.from_numpy(d["split"])
        self.task_id = task_id
        self.train, self.val, self.test = (h[split == s].contiguous() for s in (0, 1, 2))

    def val_batch(self, cfg: LearngeneConfig, constellation: Constellation):
        g = torch.Generator().manual_seed(10_000 + self.task_id)
        return draw_batch(self.val, cfg.data.snr_db, constellation, cfg.data.n_pilots, g, cfg.data.val_vectors_per_ue)

    def test_batch(self, cfg: LearngeneConfig, constellation: Constellation, snr_db: float | None = None):
        snr = cfg.data.snr_db if snr_db is None else snr_db
        g = torch.Generator().manual_seed(20_000 + self.task_id + int(round(snr * 10)) * 1000)
        return draw_batch(self.test, snr, constellation, cfg.data.n_pilots, g, cfg.data.test_vectors_per_ue)


def _system(cfg: LearngeneConfig, task, nt: int = 8, nr: int = 32) -> dict:
    """The bundle system section: a model for ``task`` (a task id, or the collective model's list)."""
    channel = None
    if isinstance(task, int) and task in cfg.data.task_files:
        channel = {"name": "file", "args": {"mapping": str(cfg.data.task_files[task]), "split": "test"}}
    return {"nt": nt, "nr": nr, "modulation": cfg.data.modulation, "n_pilots": cfg.data.n_pilots,
            "snr_db": [cfg.data.snr_db], "snr_convention": "project",
            "channel": channel or {"name": "umi-task", "args": {"task_id": task, "normalise": cfg.data.normalise,
                                                     "ues_per_task": cfg.data.ues_per_task,
                                                     "seed": cfg.data.umi_seed}}}


# ------------------------------------------------------------------------------------ baselines

def step_baselines(cfg: LearngeneConfig, run: Path, progress: bool = True) -> list[dict]:
    """ZF and MMSE SER at the training SNR on each target task's test split (before training)."""
    const = Constellation(cfg.data.modulation)
    rows = []
    for t in cfg.data.target_tasks:
        data = TaskSplits(cfg, t).test_batch(cfg, const)
        res = linear_baselines(data, const)
        rows.append({"task": t, "snr_db": cfg.data.snr_db, "symbols": data.indices.numel(), **res})
    write_json(run / "baselines" / "metrics.json", {"rows": rows, "paper_table_i": PAPER_TABLE_I})
    (run / "baselines" / "table.md").write_text(format_baselines(rows))
    return rows


def format_baselines(rows: list[dict]) -> str:
    lines = ["| target task | ZF SER | MMSE SER | paper task | paper ZF | paper MMSE |", "|---|---|---|---|---|---|"]
    for i, r in enumerate(rows):
        p = i if i < 5 else None
        paper = (f"{PAPER_TABLE_I['task'][p]} | {PAPER_TABLE_I['zf'][p]:.2e} | {PAPER_TABLE_I['mmse'][p]:.2e}"
                 if p is not None else "- | - | -")
        lines.append(f"| {r['task']} | {r['zf']:.2e} | {r['mmse']:.2e} | {paper} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- collective

def step_collective(cfg: LearngeneConfig, run: Path, progress: bool = True) -> dict:
    """Train the Nconv=12 collective model over the collective tasks in sequence, recording the
    gradient significance of every significant layer at each task's last epoch."""
    c = cfg.collective
    const = Constellation(cfg.data.modulation)
    torch.manual_seed(c.seed)
    model = SDNet(8, 32, c.n_conv)
    opt = make_optimiser(model, c.lr)  # one optimiser across tasks, as repeated Keras fit() calls
    layers = model.significant_names()
    rho, history = [], []
    tasks = tqdm(cfg.data.collective_tasks, desc="collective tasks", unit="task", disable=not progress)
    for k, t in enumerate(tasks):
        splits = TaskSplits(cfg, t)
        named = dict(model.named_parameters())
        recorder = GradientRecorder({n: named[n] for names in layers.values() for n in names})
        with training.checkpoint_stage(f"collective/task-{k:03d}"):  # the k-th task of the sequence
            hist = train(model, opt, splits.train, epochs=c.epochs_per_task, snr_db=cfg.data.snr_db,
                         constellation=const, n_pilots=cfg.data.n_pilots, batch_size=c.batch_size,
                         seed=c.seed * 1000 + k, val=splits.val_batch(cfg, const), recorder=recorder,
                         record_last_epoch=True, progress=tqdm if progress else None, desc=f"task {t}")
        sig = layer_significance(recorder.magnitudes(), layers, c.tau)
        rho.append(sig)
        history.append({"task": t, "order": k, "epochs": hist, "rho": {str(l): v for l, v in sig.items()}})
        tasks.set_postfix(val_ser=f"{hist[-1]['val_ser']:.2e}")
    out = run / "collective"
    if not training.writer():  # data-parallel: rank 0 writes
        return {"rho": rho, "history": history}
    save_model(model, SDNET_CODEC, out / "bundle", system=_system(cfg, cfg.data.collective_tasks),
               training={"role": "collective", "tasks": cfg.data.collective_tasks, "config": asdict(c),
                         "final_val_ser": history[-1]["epochs"][-1]["val_ser"]})
    write_json(out / "metrics.json", {"tasks": cfg.data.collective_tasks, "history": history,
                                       "rho": [{str(l): v for l, v in r.items()} for r in rho]})
    plot_rho_heatmap(rho, cfg.data.collective_tasks, out / "gradient_significance.png")
    return {"rho": rho, "history": history}


def _load_rho(run: Path) -> tuple[list[dict[int, float]], list[int]]:
    m = read_json(run / "collective" / "metrics.json")
    return [{int(l): v for l, v in r.items()} for r in m["rho"]], m["tasks"]


# -------------------------------------------------------------------------------------- extract

def step_extract(cfg: LearngeneConfig, run: Path, progress: bool = True) -> dict:
    """Select the learngene segment from the rho trends and export it (and, for the inheriting
    ablation, every candidate segment) as learngene bundles."""
    rho, tasks = _load_rho(run)
    collective, bundle = load_model(run / "collective" / "bundle", SDNET_CODEC)
    selected, scores = select_segment(rho, collective.n_conv)
    out = run / "extract"
    provenance = {"collective_bundle": str(run / "collective" / "bundle"), "collective_sha256": bundle.sha256,
                  "collective_tasks": tasks, "tau": cfg.collective.tau,
                  "selection": [asdict(s) for s in scores], "training": bundle.manifest.get("training")}
    for seg in ("top", "middle", "bottom"):
        layers = segment_layers(collective.n_conv, seg)
        save_learngene(out / f"segment_{seg}", learngene_tensors(collective, layers), layers=layers, segment=seg,
                       selected=seg == selected, system=_system(cfg, tasks), provenance=provenance)
    layers = segment_layers(collective.n_conv, selected)
    save_learngene(out / "learngene", learngene_tensors(collective, layers), layers=layers, segment=selected,
                   selected=True, system=_system(cfg, tasks), provenance=provenance)
    summary = {"selected": selected, "layers": layers, "scores": [asdict(s) for s in scores]}
    write_json(out / "metrics.json", summary)
    return summary


# ----------------------------------------------------------------------------------- individual

def _scheme_list(cfg: LearngeneConfig) -> list[str]:
    out = []
    for s in cfg.individual.schemes:
        s = EMBED_BOTTOM_ALIAS.get(s, s)
        if s not in ("scratch", "transfer", *STRATEGIES):
            raise ValueError(f"unknown scheme {s!r}")
        if s not in out:
            out.append(s)
    return out


def _init_individual(cfg: LearngeneConfig, run: Path, scheme: str, seed: int, nt: int = 8):
    """A fresh individual model for ``scheme`` and its eq. (21) penalty (or None)."""
    ic = cfg.individual
    torch.manual_seed(seed)
    width = 16 if nt != 8 else None
    model = SDNet(nt, 32, ic.n_conv, input_width=width)
    if scheme == "scratch":
        return model, None, {}
    if scheme == "transfer":
        pre, _ = load_model(run / "individual" / "transfer_pretrained" / "bundle", SDNET_CODEC)
        model.load_state_dict(pre.state_dict())
        return model, None, {"pretrained": str(run / "individual" / "transfer_pretrained" / "bundle")}
    selected = read_json(run / "extract" / "metrics.json")["selected"]
    mapping = strategy_mapping(scheme, selected, cfg.collective.n_conv, ic.n_conv)
    sources = sorted(set(mapping.values()))
    seg = next(s for s in ("top", "middle", "bottom") if segment_layers(cfg.collective.n_conv, s) == sources)
    tensors, _, bundle = load_learngene(run / "extract" / f"segment_{seg}")
    anchors = expand(model, tensors, mapping)
    info = {"strategy": scheme, "learngene_bundle": str(bundle.path), "learngene_sha256": bundle.sha256,
            "mapping": {str(k): v for k, v in mapping.items()}, "lambda": ic.lam}
    return model, LearngenePenalty(anchors, ic.lam), info


def _pretrain_transfer(cfg: LearngeneConfig, run: Path, progress: bool = True) -> None:
    """Transfer-learning source model: Nconv=8 trained on one random collective task."""
    out = run / "individual" / "transfer_pretrained"
    if (out / "bundle" / "manifest.json").exists():
        return
    ic = cfg.individual
    source = random.Random(ic.seed).choice(cfg.data.collective_tasks)
    const = Constellation(cfg.data.modulation)
    splits = TaskSplits(cfg, source)
    torch.manual_seed(ic.seed)
    model = SDNet(8, 32, ic.n_conv)
    with training.checkpoint_stage("individual/transfer_pretrained"):
        hist = train(model, make_optimiser(model, ic.lr), splits.train, epochs=ic.transfer_pretrain_epochs,
                     snr_db=cfg.data.snr_db, constellation=const, n_pilots=cfg.data.n_pilots,
                     batch_size=ic.batch_size, seed=ic.seed + 7, val=splits.val_batch(cfg, const),
                     progress=tqdm if progress else None, desc=f"transfer pre-training on task {source}")
    if not training.writer():  # data-parallel: rank 0 writes
        return
    save_model(model, SDNET_CODEC, out / "bundle", system=_system(cfg, source),
               training={"role": "transfer-source", "task": source, "epochs": ic.transfer_pretrain_epochs})
    write_json(out / "metrics.json", {"source_task": source, "history": hist})


def individual_dir(run: Path, task: int, scheme: str, nt: int = 8) -> Path:
    """Run-folder place of one individual model (``task_NNN`` or ``task_NNN_ntK`` for K != 8 streams)."""
    return run / "individual" / (f"task_{task:03d}" if nt == 8 else f"task_{task:03d}_nt{nt}") / scheme


def train_individual(cfg: LearngeneConfig, run: Path, task: int, scheme: str, nt: int = 8,
                     epochs: int | None = None, show_progress: bool = True) -> dict:
    """Train one individual model on a target task and store bundle + metrics."""
    ic = cfg.individual
    const = Constellation(cfg.data.modulation)
    splits = TaskSplits(cfg, task, nt=None if nt == 8 else nt)
    model, penalty, info = _init_individual(cfg, run, scheme, seed=ic.seed * 100 + task, nt=nt)
    epochs = ic.epochs if epochs is None else epochs
    t0 = time.perf_counter()
    folder = individual_dir(run, task, scheme, nt)
    with training.checkpoint_stage(str(folder.relative_to(run))):
        hist = train(model, make_optimiser(model, ic.lr), splits.train, epochs=epochs, snr_db=cfg.data.snr_db,
                     constellation=const, n_pilots=cfg.data.n_pilots, batch_size=ic.batch_size,
                     seed=ic.seed * 7 + task, val=splits.val_batch(cfg, const), penalty=penalty,
                     progress=tqdm if show_progress else None,
                     desc=f"task {task} {scheme}" + (f" nt={nt}" if nt != 8 else ""))
    seconds = time.perf_counter() - t0
    test = evaluate(model, splits.test_batch(cfg, const), const)
    rec = {"task": task, "scheme": scheme, "nt": nt, "test": test, "history": hist, "seconds": seconds, "init": info}
    if not training.writer():  # data-parallel: rank 0 writes
        return rec
    save_model(model, SDNET_CODEC, folder / "bundle", system=_system(cfg, task, nt=nt),
               training={"role": "individual", "task": task, "scheme": scheme, "epochs": epochs,
                         "config": asdict(ic), "test": test, "seconds": seconds,
                         "channel_stats": channel_statistics(splits.train)},
               learngene=info if scheme not in ("scratch", "transfer") else None)
    write_json(folder / "metrics.json", rec)
    return rec


def _worker(args) -> dict:
    cfg_dict, run, task, scheme, policy, device = args
    torch.set_num_threads(1)
    # a spawned process starts without the parent's checkpoint policy and device: set them again
    checkpoints = training.checkpointing(**policy) if policy else contextlib.nullcontext()
    with checkpoints, training.use_device(device):
        return train_individual(LearngeneConfig.from_dict(cfg_dict), Path(run), task, scheme, show_progress=False)


def step_individual(cfg: LearngeneConfig, run: Path, progress: bool = True) -> list[dict]:
    """All schemes on all target tasks (in ``workers`` processes when > 1)."""
    schemes = _scheme_list(cfg)
    if "transfer" in schemes:
        _pretrain_transfer(cfg, run, progress)
        training.barrier()  # every process initialises transfer models from rank 0's bundle
    jobs = [(t, s) for t in cfg.data.target_tasks for s in schemes]
    if training.process_count() > 1:  # torchrun: the models are spread over the processes
        return [train_individual(cfg, run, t, s, show_progress=progress) for t, s in training.each_job(jobs)]
    if cfg.individual.workers <= 1:
        return [train_individual(cfg, run, t, s, show_progress=progress)
                for t, s in tqdm(jobs, desc="individual models", unit="model", disable=not progress)]
    import concurrent.futures as cf
    import multiprocessing as mp

    cfg_dict = asdict(cfg)
    results = []
    with cf.ProcessPoolExecutor(cfg.individual.workers, mp_context=mp.get_context("spawn")) as pool:
        policy = training.checkpoint_policy()
        policy = None if policy is None else {"root": str(policy.root), "every": policy.every, "resume": policy.resume}
        device = str(training.current_device())
        futures = [pool.submit(_worker, (cfg_dict, str(run), t, s, policy, device)) for t, s in jobs]
        for f in tqdm(cf.as_completed(futures), total=len(futures), desc="individual models", unit="model",
                      disable=not progress):
            results.append(f.result())
    return results


# -------------------------------------------------------------------------------------- compare

def _individual_metrics(run: Path, task: int, scheme: str, nt: int = 8) -> dict:
    return read_json(individual_dir(run, task, scheme, nt) / "metrics.json")


def first_epoch_reaching(history: list[dict], target: float) -> int | None:
    """First epoch whose validation SER is at or below ``target`` (None if never)."""
    for r in history:
        if r["val_ser"] <= target:
            return r["epoch"]
    return None


def step_compare(cfg: LearngeneConfig, run: Path, progress: bool = True) -> dict:
    """Figures 8-13, Table IV and the results table as PNG + report.md."""
    out = run / "compare"
    out.mkdir(parents=True, exist_ok=True)
    schemes = _scheme_list(cfg)
    const = Constellation(cfg.data.modulation)
    results = {"ser_25db": {}, "snr_sweep": {}, "reach_epoch": {}, "baselines": {}}
    for t in cfg.data.target_tasks:
        ms = {s: _individual_metrics(run, t, s) for s in schemes}
        first = next(iter(ms.values()))["test"]
        results["baselines"][t] = {"zf": first["zf"], "mmse": first["mmse"], "symbols": first["symbols"]}
        results["ser_25db"][t] = {s: m["test"]["sdnet"] for s, m in ms.items()}
        plot_strategy_bars(ms, first, out / f"fig9_strategies_task{t:03d}.png", t)
        lines = {"ZF": first["zf"], "MMSE": first["mmse"]}
        plot_convergence({s: ms[s]["history"] for s in ms if s.startswith("embed") or s in ("scratch", "inherit-bottom")},
                         out / f"fig10a_embedding_task{t:03d}.png", f"task {t}: embedding strategies",
                         rename={"inherit-bottom": "embed-bottom (= inherit-bottom)"}, baselines=lines)
        plot_convergence({s: ms[s]["history"] for s in ms if s.startswith("inherit") or s == "scratch"},
                         out / f"fig10b_inheriting_task{t:03d}.png", f"task {t}: inheriting strategies", baselines=lines)
        plot_convergence({s: ms[s]["history"] for s in ("scratch", "transfer", "inherit-bottom") if s in ms},
                         out / f"fig11_convergence_task{t:03d}.png", f"task {t}: scratch vs transfer vs learngene",
                         rename={"inherit-bottom": "learngene (bottom)"}, baselines=lines)
        if "scratch" in ms:
            final_scratch = ms["scratch"]["history"][-1]["val_ser"]
            results["reach_epoch"][t] = {s: first_epoch_reaching(m["history"], final_scratch)
                                         for s, m in ms.items() if s != "scratch"}
        # Fig. 12: SER vs SNR of the trained target models on the test split
        sweep = {}
        splits = TaskSplits(cfg, t)
        models = {s: load_model(individual_dir(run, t, s) / "bundle", SDNET_CODEC)[0]
                  for s in ("scratch", "transfer", "inherit-bottom") if s in ms}
        for snr in tqdm(cfg.compare.snr_sweep, desc=f"task {t} SNR sweep", unit="snr", leave=False,
                        disable=not progress):
            data = splits.test_batch(cfg, const, snr)
            row = linear_baselines(data, const)
            for s, m in models.items():
                row[s] = evaluate(m, data, const, baselines=False)["sdnet"]
            sweep[str(snr)] = row
        results["snr_sweep"][t] = sweep
        plot_snr_sweep(sweep, out / f"fig12_snr_task{t:03d}.png", t)
    # Fig. 13: scalability to Nt = 4 with the same learngene
    nt4 = cfg.compare.scalability_nt
    if nt4 and nt4 != 8 and cfg.compare.scalability_epochs > 0:
        t = cfg.data.target_tasks[0]
        scal = {}
        for s in ("scratch", "inherit-bottom"):
            path = individual_dir(run, t, s, nt4) / "metrics.json"
            rec = read_json(path) if path.exists() else train_individual(
                cfg, run, t, s, nt=nt4, epochs=cfg.compare.scalability_epochs, show_progress=progress)
            scal[s] = rec
        results["scalability"] = {s: {"test": r["test"]} for s, r in scal.items()}
        test4 = next(iter(scal.values()))["test"]
        plot_convergence({s: r["history"] for s, r in scal.items()}, out / "fig13_scalability.png",
                         f"task {t}: (Nt, Nr) = ({nt4}, 32), learngene from the 8x32 collective model",
                         rename={"inherit-bottom": "learngene (bottom)"},
                         baselines={"ZF": test4["zf"], "MMSE": test4["mmse"]})
    rho, tasks = _load_rho(run)
    plot_rho_heatmap(rho, tasks, out / "fig8_gradient_significance.png")
    results["complexity"] = complexity_table(cfg)
    results["baselines_table_i"] = read_json(run / "baselines" / "metrics.json")["rows"] \
        if (run / "baselines" / "metrics.json").exists() else []
    results["extract"] = read_json(run / "extract" / "metrics.json")
    write_json(out / "results.json", results)
    (out / "report.md").write_text(format_report(cfg, results, schemes))
    return results


def complexity_table(cfg: LearngeneConfig) -> list[dict]:
    """Table IV from the actual modules: trainable parameters, FLOPs, transferred ratio."""
    ni, nc = cfg.individual.n_conv, cfg.collective.n_conv
    ind, col = SDNet(8, 32, ni), SDNet(8, 32, nc)
    p_ind = count_trainable(ind)
    lg_layers = len(segment_layers(nc, "bottom"))
    p_lg = sum(p.numel() for l in range(1, lg_layers + 1) for p in col.significant_conv(l).parameters())
    f_lg = sdnet_flops(8, 32, lg_layers, layers="significant")
    return [
        {"scheme": "train-from-scratch", "layers": f"{ni + 2} Conv+BN, 1 FC", "params": p_ind,
         "flops": sdnet_flops(8, 32, ni), "transferred": 0.0},
        {"scheme": "transfer learning", "layers": f"{ni + 2} Conv+BN, 1 FC", "params": p_ind,
         "flops": sdnet_flops(8, 32, ni), "transferred": 1.0},
        {"scheme": "learngene: collective model", "layers": f"{nc + 2} Conv+BN, 1 FC", "params": count_trainable(col),
         "flops": sdnet_flops(8, 32, nc), "transferred": None},
        {"scheme": "learngene: learngene unit", "layers": f"{lg_layers} Conv", "params": p_lg, "flops": f_lg,
         "transferred": p_lg / p_ind},
        {"scheme": "learngene: individual model", "layers": f"{ni + 2} Conv+BN, 1 FC", "params": p_ind,
         "flops": sdnet_flops(8, 32, ni), "transferred": None},
    ]


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
    keys = [k for k in ("zf", "mmse", "scratch", "transfer", "inherit-bottom") if k in next(iter(sweep.values()))]
    for k in keys:
        label = {"inherit-bottom": "learngene", "zf": "ZF", "mmse": "MMSE"}.get(k, k)
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


STEPS = {"baselines": step_baselines, "collective": step_collective, "extract": step_extract,
         "individual": step_individual, "compare": step_compare}
STEP_HELP = {"baselines": "ZF/MMSE on the target tasks before training (Table I)",
             "collective": "train the collective model over the tasks in sequence, recording gradient significance",
             "extract": "select the learngene layers from the rho trends and export learngene bundles",
             "individual": "train individual models: scratch, transfer and the six expansion strategies",
             "compare": "figures 8-13, Table IV and report.md"}


PARALLEL_STEPS = {"collective", "individual"}  # run in every process under torchrun (docs/training.md)


def run_pipeline(cfg: LearngeneConfig, run: Path, steps=None, progress: bool = True, **options) -> None:
    """Run the pipeline's ``steps`` (default all) into ``run``; ``options``: ``resume``,
    ``checkpoint_every`` (:func:`~neuralmimo.lab.runs.run_steps`)."""
    run_steps("learngene", STEPS, cfg, run, steps, progress, parallel=PARALLEL_STEPS, **options)

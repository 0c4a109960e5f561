"""The SDNet + learngene [LG] pipeline's steps (training, evaluation), :data:`PIPELINE` and the
entries of the families table (``scale_training``, ``training_samples``)."""

from __future__ import annotations

import contextlib
import math
import random
import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
from tqdm import tqdm

from ... import training
from ...bundle import load_model, save_model
from ...channels.anchored import anchor_mix
from ...channels.external import channel_set
from ...channels.planewave import plane_wave_task
from ...channels.umi import load_task, normalise_channels
from ...constellation import Constellation
from ...detectors.sdnet.learngene import (STRATEGIES, GradientRecorder, LearngenePenalty, expand, layer_significance,
                                          learngene_tensors, load_learngene, save_learngene, segment_layers,
                                          select_segment, strategy_mapping)
from ...detectors.sdnet.model import SDNET_CODEC, SDNet, count_trainable, sdnet_flops
from ...detectors.sdnet.train import (baseline_decisions, draw_batch, evaluate, linear_baselines, make_optimiser,
                                      sdnet_decisions, train)
from ...metrics import error_rate_interval, wilson_interval
from ...site.drift import channel_statistics
from ..adapt import publish_bundle
from ..runs import Pipeline, Step, read_json, write_json
from .config import EMBED_BOTTOM_ALIAS, TASK_FAMILIES, LearngeneConfig
from .report import (PAPER_TABLE_I, format_baselines, format_diversity, format_report, format_site, plot_convergence,
                     plot_diversity, plot_diversity_learning, plot_rho_heatmap, plot_site, plot_snr_sweep,
                     plot_strategy_bars)

# ----------------------------------------------------------------------------------------- data

class TaskSplits:
    """A UMi task's train/val/test channels, normalised per :attr:`DataConfig.normalise`."""

    def __init__(self, cfg: LearngeneConfig, task_id: int, nt: int | None = None):
        if cfg.data.family not in TASK_FAMILIES:
            raise ValueError(f"data.family must be one of {TASK_FAMILIES}, got {cfg.data.family!r}")
        if task_id in cfg.data.task_files:  # QuaDRiGa, ray tracer, measurements, CSI logs (docs/external-channels.md)
            d = channel_set(cfg.data.task_files[task_id])
            h = d["h"]
            if tuple(h.shape[1:]) != (32, 8):
                raise ValueError(f"task {task_id} ({cfg.data.task_files[task_id]}): SDNet's tasks are 32x8 (Nr x Nt), "
                                 f"the file gives {h.shape[1]}x{h.shape[2]}: set antennas/users in the mapping")
        elif cfg.data.family == "plane-waves":
            d = plane_wave_task(task_id, cfg.data.ues_per_task, cfg.data.paths, seed=cfg.data.umi_seed)
            h = d["h"]
        else:
            d = load_task(cfg.umi(), task_id, Path(cfg.cache_dir) if cfg.cache_dir else None)
            h = torch.from_numpy(d["h"])
        if nt is not None:  # a UE using only its first nt ports (scalability, Fig. 13)
            h = h[..., :nt].contiguous()
        h = normalise_channels(h, cfg.data.normalise)
        split = torch.from_numpy(d["split"])
        self.task_id = task_id
        self.train, self.val, self.test = (h[split == s].contiguous() for s in (0, 1, 2))
        if cfg.data.rho is not None:  # the same anchor as the registry's `anchored` channel (its train split)
            h0 = self.train[cfg.data.anchor]
            self.train, self.val, self.test = (anchor_mix(x, h0, cfg.data.rho) for x in (self.train, self.val, self.test))

    def val_batch(self, cfg: LearngeneConfig, constellation: Constellation):
        g = torch.Generator().manual_seed(10_000 + self.task_id)
        return draw_batch(self.val, cfg.data.snr_db, constellation, cfg.data.n_pilots, g, cfg.data.val_vectors_per_ue)

    def test_batch(self, cfg: LearngeneConfig, constellation: Constellation, snr_db: float | None = None):
        snr = cfg.data.snr_db if snr_db is None else snr_db
        g = torch.Generator().manual_seed(20_000 + self.task_id + int(round(snr * 10)) * 1000)
        return draw_batch(self.test, snr, constellation, cfg.data.n_pilots, g, cfg.data.test_vectors_per_ue)


def task_channel(cfg: LearngeneConfig, task) -> dict:
    """The channel spec (``channels.registry``) of ``task``'s test split: what a loopback or
    ``neuralmimo sim`` draws to test a model of this task (the collective model's list of tasks
    is kept as it is: a record, not a channel)."""
    d = cfg.data
    if isinstance(task, int) and task in d.task_files:
        spec = {"name": "file", "args": {"mapping": str(d.task_files[task]), "split": "test"}}
    elif d.family == "plane-waves":
        spec = {"name": "plane-waves", "args": {"task_id": task, "paths": d.paths, "ues_per_task": d.ues_per_task,
                                                "seed": d.umi_seed, "split": "test"}}
    else:
        spec = {"name": "umi-task", "args": {"task_id": task, "normalise": d.normalise, "ues_per_task": d.ues_per_task,
                                             "seed": d.umi_seed, "spatial_consistency": d.spatial_consistency}}
    if d.rho is not None and isinstance(task, int):
        spec = {"name": "anchored", "args": {"rho": d.rho, "anchor": d.anchor, "base": spec}}
    return spec


def _system(cfg: LearngeneConfig, task, nt: int = 8, nr: int = 32) -> dict:
    """The bundle system section: a model for ``task`` (a task id, or the collective model's list)."""
    return {"nt": nt, "nr": nr, "modulation": cfg.data.modulation, "n_pilots": cfg.data.n_pilots,
            "snr_db": [cfg.data.snr_db], "snr_convention": "project", "channel": task_channel(cfg, task)}


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


# ------------------------------------------------------------------------------------------ site

SITE_TASK = 999  # the task id a site's channels take in the run (seeds its validation and test draws)


def train_site(cfg: LearngeneConfig, run: Path, site: Path, budget_s: float = 0.0, watch: Path | None = None,
               progress: bool = True) -> dict:
    """Learngene as per-site adaptation: a site is a task. Train an individual SDNet from scratch
    and one initialised from the run's learngene (``inherit-<selected segment>``) on the site's
    channels -- a CSI log folder (:mod:`neuralmimo.site.csilog`) or a channel mapping file -- each for
    ``individual.epochs`` epochs or until ``budget_s`` seconds (0: no budget), recording the wall
    time at which each first beats MMSE on the site's validation vectors (its 95 % upper bound
    below MMSE's SER). Bundles, metrics, a plot and ``report.md`` go to ``RUN/site/<site name>/``;
    with ``watch``, the learngene model's bundle is also put into a receiver's watch folder
    atomically (:func:`~neuralmimo.lab.adapt.publish_bundle`), where a *Neural MIMO Detector*
    swaps it in at a frame boundary."""
    extract = run / "extract" / "metrics.json"
    if not extract.exists():
        raise ValueError(f"{run}: no learngene to start from (extract/metrics.json): run `neuralmimo learngene run` "
                         f"(or its collective and extract steps) into this folder first")
    site = Path(site)
    scfg = replace(cfg, data=replace(cfg.data, task_files={**cfg.data.task_files, SITE_TASK: str(site)}, rho=None))
    ic = cfg.individual
    const = Constellation(cfg.data.modulation)
    splits = TaskSplits(scfg, SITE_TASK)
    val = splits.val_batch(scfg, const)
    mmse_val = linear_baselines(val, const)["mmse"]
    n_val = val.indices.numel()
    test_batch = splits.test_batch(scfg, const)
    out = run / "site" / site.name
    learngene = f"inherit-{read_json(extract)['selected']}"
    records = {}
    for scheme in ("scratch", learngene):
        model, penalty, info = _init_individual(scfg, run, scheme, seed=ic.seed * 100 + SITE_TASK)
        opt = make_optimiser(model, ic.lr)
        hist, t0, beat = [], time.perf_counter(), None
        for e in tqdm(range(ic.epochs), desc=f"site {site.name}: {scheme}", unit="epoch", disable=not progress):
            rec = train(model, opt, splits.train, epochs=1, epoch_offset=e, snr_db=cfg.data.snr_db, constellation=const,
                        n_pilots=cfg.data.n_pilots, batch_size=ic.batch_size, seed=ic.seed * 7 + SITE_TASK, val=val,
                        penalty=penalty)[0]
            rec["elapsed_s"] = time.perf_counter() - t0
            hist.append(rec)
            if beat is None and wilson_interval(round(rec["val_ser"] * n_val), n_val)[1] < mmse_val:
                beat = {"epoch": rec["epoch"], "seconds": rec["elapsed_s"]}
            if budget_s and rec["elapsed_s"] >= budget_s:
                break
        test = evaluate(model, test_batch, const)
        records[scheme] = {"scheme": scheme, "history": hist, "beats_mmse": beat, "test": test,
                           "epochs": len(hist), "seconds": hist[-1]["elapsed_s"], "init": info}
        save_model(model, SDNET_CODEC, out / scheme / "bundle", system=_system(scfg, SITE_TASK),
                   training={"role": "site", "site": str(site.resolve()), "scheme": scheme, "epochs": len(hist),
                             "budget_s": budget_s, "config": asdict(ic), "test": test, "beats_mmse": beat,
                             "channel_stats": channel_statistics(splits.train)},
                   learngene=info if scheme != "scratch" else None)
    summary = {"site": str(site.resolve()), "channels": [int(x.shape[0]) for x in (splits.train, splits.val, splits.test)],
               "mmse_val": mmse_val, "val_symbols": n_val, "budget_s": budget_s, "schemes": records}
    if watch is not None:
        summary["published"] = str(publish_bundle(lambda tmp: shutil.copytree(out / learngene / "bundle", tmp), watch,
                                                  f"sdnet-site-{site.name}-{time.strftime('%Y%m%d-%H%M%S')}"))
    write_json(out / "metrics.json", summary)
    plot_site(records, mmse_val, out / "convergence.png", site.name)
    (out / "report.md").write_text(format_site(cfg, summary))
    return summary


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
    results = {"ser_25db": {}, "snr_sweep": {}, "reach_epoch": {}, "beat_mmse_epoch": {}, "baselines": {}}
    learngene = f"inherit-{read_json(run / 'extract' / 'metrics.json')['selected']}"  # the selected segment
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
        plot_convergence({s: ms[s]["history"] for s in ("scratch", "transfer", learngene) if s in ms},
                         out / f"fig11_convergence_task{t:03d}.png", f"task {t}: scratch vs transfer vs learngene",
                         rename={learngene: f"learngene ({learngene})"}, baselines=lines)
        if "scratch" in ms:
            final_scratch = ms["scratch"]["history"][-1]["val_ser"]
            results["reach_epoch"][t] = {s: first_epoch_reaching(m["history"], final_scratch)
                                         for s, m in ms.items() if s != "scratch"}
        splits = TaskSplits(cfg, t)
        # the first epoch below MMSE on the very validation vectors the curves are measured on
        mmse_val = linear_baselines(splits.val_batch(cfg, const), const)["mmse"]
        results["beat_mmse_epoch"][t] = {"mmse_val": mmse_val, **{
            s: next((r["epoch"] for r in m["history"] if r["val_ser"] < mmse_val), None) for s, m in ms.items()}}
        # Fig. 12: SER vs SNR of the trained target models on the test split
        sweep = {}
        models = {s: load_model(individual_dir(run, t, s) / "bundle", SDNET_CODEC)[0]
                  for s in ("scratch", "transfer", learngene) if s in ms}
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


# ------------------------------------------------------------------------------------ diversity

def diversity_variants(cfg: LearngeneConfig) -> list[dict]:
    """The variants of ``learngene diversity``: the target task mixed into its anchor at each
    ``rho`` (``data.family``'s task), then plane-wave tasks with each number of paths."""
    dv = cfg.diversity
    out = [{"name": f"rho-{float(r):g}", "family": cfg.data.family, "rho": float(r), "paths": cfg.data.paths}
           for r in dv.rho]
    out += [{"name": f"plane-waves-{int(p)}", "family": "plane-waves", "rho": None, "paths": int(p)}
            for p in dv.plane_wave_paths]
    return out


def _variant_config(cfg: LearngeneConfig, v: dict) -> LearngeneConfig:
    return replace(cfg, data=replace(cfg.data, family=v["family"], rho=v["rho"], paths=v["paths"]))


def detector_errors(model: SDNet, data, const: Constellation, kbest_k: int) -> dict:
    """SDNet, ZF, MMSE and K-best on the same vectors: SER per complex symbol with a 95 %
    interval that accounts for the errors of one channel being dependent
    (:func:`~neuralmimo.metrics.error_rate_interval` over channels)."""
    decisions = {"sdnet": sdnet_decisions(model, data, const)}
    decisions.update({k: baseline_decisions(data, const, k, kbest_k) for k in ("zf", "mmse", "kbest")})
    channels = data.y.shape[0]
    per_channel_symbols = data.indices.numel() // channels
    out = {}
    for name, idx in decisions.items():
        errors = (idx != data.indices).reshape(channels, -1).sum(1)
        out[name] = {"ser": float(errors.sum()) / data.indices.numel(), "errors": int(errors.sum()),
                     "ci": list(error_rate_interval(errors, per_channel_symbols))}
    out["symbols"] = data.indices.numel()
    return out


def learning_trend(history: list[dict], window: float = 0.1) -> dict:
    """Whether a learning curve has flattened: the mean validation SER of the last ``window``
    of the epochs against the window before it; ``falling`` when it dropped by more than two
    standard errors of the difference (epoch-to-epoch spread within the windows)."""
    ser = torch.tensor([r["val_ser"] for r in history], dtype=torch.float64)
    w = max(2, int(round(window * len(ser))))
    if len(ser) < 2 * w:
        return {"last": float(ser[-1]), "before": float("nan"), "change": float("nan"), "falling": None}
    last, before = ser[-w:], ser[-2 * w:-w]
    se = math.sqrt(float(last.var() / w + before.var() / w))
    drop = float(before.mean() - last.mean())
    return {"last": float(last.mean()), "before": float(before.mean()), "change": -drop / float(before.mean() or 1.0),
            "falling": drop > 2 * se}


def train_diversity_variant(cfg: LearngeneConfig, run: Path, v: dict, show_progress: bool = True) -> dict:
    """Train one scratch SDNet on a variant's task, test it next to ZF, MMSE and K-best, store
    bundle + metrics in ``RUN/diversity/NAME``."""
    dv, ic = cfg.diversity, cfg.individual
    vcfg = _variant_config(cfg, v)
    const = Constellation(cfg.data.modulation)
    splits = TaskSplits(vcfg, dv.task)
    torch.manual_seed(dv.seed)
    model = SDNet(8, 32, ic.n_conv)
    t0 = time.perf_counter()
    with training.checkpoint_stage(f"diversity/{v['name']}"):
        hist = train(model, make_optimiser(model, ic.lr), splits.train, epochs=dv.epochs, snr_db=cfg.data.snr_db,
                     constellation=const, n_pilots=cfg.data.n_pilots, batch_size=ic.batch_size, seed=dv.seed * 7 + dv.task,
                     val=splits.val_batch(vcfg, const), progress=tqdm if show_progress else None, desc=v["name"])
    seconds = time.perf_counter() - t0
    test = detector_errors(model, splits.test_batch(vcfg, const), const, dv.kbest_k)
    rec = {"variant": v, "task": dv.task, "test": test, "trend": learning_trend(hist), "history": hist,
           "seconds": seconds}
    if training.writer():
        folder = run / "diversity" / v["name"]
        save_model(model, SDNET_CODEC, folder / "bundle", system=_system(vcfg, dv.task),
                   training={"role": "diversity", "task": dv.task, "variant": v, "epochs": dv.epochs,
                             "config": asdict(ic), "test": {k: test[k]["ser"] for k in ("sdnet", "zf", "mmse", "kbest")},
                             "seconds": seconds, "channel_stats": channel_statistics(splits.train)})
        write_json(folder / "metrics.json", rec)
    return rec


def step_diversity(cfg: LearngeneConfig, run: Path, progress: bool = True) -> list[dict]:
    """SDNet against ZF, MMSE and near-ML as a task's channels share less structure: one scratch
    model per variant (:func:`diversity_variants`), a table, the SER-vs-rho plot and the
    learning curves (``RUN/diversity/``)."""
    variants = diversity_variants(cfg)
    for v in training.each_job(variants):
        train_diversity_variant(cfg, run, v, show_progress=progress)
    training.barrier()
    if not training.is_main():
        return []
    out = run / "diversity"
    recs = [read_json(out / v["name"] / "metrics.json") for v in variants]
    write_json(out / "results.json", {"config": asdict(cfg.diversity), "variants": [
        {k: r[k] for k in ("variant", "test", "trend", "seconds")} for r in recs]})
    plot_diversity(recs, out / "ser_vs_rho.png", cfg)
    plot_diversity_learning(recs, out / "learning_curves.png")
    (out / "report.md").write_text(format_diversity(cfg, recs))
    return recs


PIPELINE = Pipeline("learngene", {
    "baselines": Step(step_baselines, "ZF/MMSE on the target tasks before training (Table I)"),
    "collective": Step(step_collective, "train the collective model over the tasks in sequence, recording gradient "
                                        "significance", parallel=True),
    "extract": Step(step_extract, "select the learngene layers from the rho trends and export learngene bundles"),
    "individual": Step(step_individual, "train individual models: scratch, transfer and the six expansion strategies",
                       parallel=True),
    "compare": Step(step_compare, "figures 8-13, Table IV and report.md"),
    "diversity": Step(step_diversity, "where SDNet wins: scratch SDNet vs ZF/MMSE/K-best as a task's channels share "
                                      "less structure (rho sweep, plane-wave paths); table, plot, learning curves",
                      parallel=True, in_run=False),  # a study of its own
})
STEPS, STEP_HELP, run_pipeline = PIPELINE.step_functions, PIPELINE.help, PIPELINE.run


# ------------------------------------------------------------------------------ the families table's entries
def scale_training(length: int, seed: int, config: Path) -> tuple[torch.nn.Module, object]:
    """``(model, run)``: this family's training at the size of the pipeline config ``config``
    for ``length`` epochs; ``run() -> (history, samples)``
    (:func:`neuralmimo.lab.scale.family_training`)."""
    from ...channels import make_channel

    cfg = LearngeneConfig.load(config)
    ic = cfg.individual
    n = int(cfg.data.ues_per_task * 0.81)
    h = make_channel("iid", 32, 8).sample(n, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = SDNet(8, 32, ic.n_conv)
    opt = make_optimiser(model, ic.lr)

    def run():
        hist = train(model, opt, h, epochs=length, snr_db=cfg.data.snr_db, constellation=Constellation("qpsk"),
                     n_pilots=cfg.data.n_pilots, batch_size=ic.batch_size, seed=seed)
        return hist, length * n
    return model, run


def training_samples(config: Path) -> int:
    """Training samples (symbol vectors) the pipeline config ``config`` trains on, counted as
    :func:`scale_training` counts them (the paper-scale projections of ``bench training``)."""
    c = LearngeneConfig.load(config)
    ues = int(c.data.ues_per_task * 0.81)
    epochs = len(c.data.collective_tasks) * c.collective.epochs_per_task + \
        len(c.data.target_tasks) * len(c.individual.schemes) * c.individual.epochs + \
        c.individual.transfer_pretrain_epochs
    return epochs * ues

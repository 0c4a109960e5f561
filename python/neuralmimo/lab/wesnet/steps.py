"""The DetNet and WeSNet [WS] pipeline's steps (training, evaluation), :data:`PIPELINE` and the
entries of the families table (``scale_training``, ``training_samples``)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from ... import training
from ...bundle import BundleError, load_model, read_manifest, save_model
from ...channels import ChannelSpec
from ...constellation import Constellation
from ...datasets import draw_channel_batch
from ...detectors import kbest_detect, linear_detect
from ...detectors.detnet.detector import DetNetDetector
from ...detectors.detnet.model import DetNet, codec_for, kept_units
from ...detectors.detnet.train import detect_indices, train_detnet
from ...site.drift import model_statistics
from ..runs import Pipeline, Step, write_json
from .config import ModelConfig, WeSNetConfig
from .report import plot_training, step_report


def _bundle_dir(run: Path, name: str) -> Path:
    return run / "train" / name


def _build(cfg: WeSNetConfig, m: ModelConfig) -> DetNet:
    s, tr = cfg.system, cfg.training
    return DetNet(s.nt, tr.layers, tr.hidden, s.modulation, m.profile, m.keep, m.learnable)


def _finished(directory: Path, settings: dict) -> dict | None:
    """A bundle already trained with exactly these settings (a resumed run), else ``None``."""
    try:
        _, manifest = read_manifest(directory)
    except BundleError:
        return None
    training = manifest.get("training") or {}
    if training.get("settings") != settings:
        return None
    return {k: training.get(k) for k in ("history", "seconds", "samples_per_second")}


# ------------------------------------------------------------------------------------ training
def step_train(cfg: WeSNetConfig, run: Path, progress: bool = True) -> dict:
    """Every variant of ``models``, each on its own seeded stream of fresh batches."""
    tr, s, const = cfg.training, cfg.system, cfg.constellation
    chan = cfg.channel()
    val = draw_channel_batch(chan, const, tr.validation_vectors, 1, tr.validation_snr_db,
                             torch.Generator().manual_seed(tr.seed * 1000 + 999), convention="detnet")
    mmse = const.hard_decision(linear_detect(val.y, val.h, val.noise_var, "mmse", const)[0])
    val_mmse = float((const.bits[mmse] != const.bits[val.idx]).float().mean())
    for i, m in training.each_job(list(enumerate(cfg.models))):  # spread over torchrun's processes
        settings = {"training": asdict(tr), "model": asdict(m), "system": asdict(s)}
        if _finished(_bundle_dir(run, m.name), settings) is not None:  # a rerun: trained by the same settings
            continue
        g = torch.Generator().manual_seed(training.rank_seed(tr.seed * 1000 + i))
        torch.manual_seed(tr.seed * 1000 + i)
        model = _build(cfg, m)
        model.reset_parameters(tr.init)
        batch = training.local_batch(tr.batch)
        t0 = time.perf_counter()
        steps = m.steps or tr.steps
        with training.checkpoint_stage(f"train/{m.name}"):
            hist = train_detnet(model, lambda step: draw_channel_batch(chan, const, batch, 1, tuple(tr.snr_db), g,
                                                                       convention="detnet"),
                                steps=steps, steps_per_epoch=tr.steps_per_epoch, lr=tr.lr, lr_end=tr.lr_end,
                                keep_best=tr.keep_best, reg_lambda=m.reg_lambda,
                                reg_start=tr.reg_start, validation=val, progress=tqdm if progress else None,
                                desc=m.name, generators=(g,))
        seconds = time.perf_counter() - t0
        rate = steps * tr.batch / seconds
        system = {"nr": s.nr, "nt": s.nt, "modulation": s.modulation, "n_pilots": None, "snr_convention": "detnet",
                  "snr_db": list(tr.snr_db), "channel": ChannelSpec.parse(s.channel).__dict__}
        if training.writer():
            save_model(model, codec_for(model), _bundle_dir(run, m.name), system=system,
                       training={"settings": settings, "seconds": seconds, "samples_per_second": rate,
                                 "history": hist, "channel_stats": model_statistics(chan)})
    training.barrier()
    if not training.is_main():
        return {}
    history = {m.name: _finished(_bundle_dir(run, m.name), {"training": asdict(tr), "model": asdict(m),
                                                            "system": asdict(s)}) for m in cfg.models}
    history["_validation"] = {"snr_db": tr.validation_snr_db, "vectors": tr.validation_vectors, "mmse_ber": val_mmse}
    write_json(run / "train" / "history.json", history)
    plot_training(history, run / "training.png")
    return history


def load_variant(run: Path, name: str) -> DetNet:
    _, manifest = read_manifest(_bundle_dir(run, name))
    from ...detectors.registry import codec_of

    model, _ = load_model(_bundle_dir(run, name), codec_of(manifest["architecture"]["name"]))
    return model.eval()


# ---------------------------------------------------------------------------------- evaluation
def _bit_errors(idx_hat: torch.Tensor, idx: torch.Tensor, const: Constellation) -> int:
    return int((const.bits[idx_hat] != const.bits[idx]).sum())


@torch.no_grad()
def _point(cfg: WeSNetConfig, chan, snr_db: float, g: torch.Generator, detectors: dict) -> dict:
    """Bit errors of every detector on the same ``vectors`` channel uses at ``snr_db``."""
    ev, const = cfg.evaluation, cfg.constellation
    errors = {name: 0 for name in detectors}
    bits = 0
    for a in range(0, ev.vectors, ev.chunk):
        n = min(ev.chunk, ev.vectors - a)
        b = draw_channel_batch(chan, const, n, 1, float(snr_db), g, convention="detnet")
        bits += b.idx.numel() * const.bits_per_symbol
        for name, fn in detectors.items():
            errors[name] += _bit_errors(fn(b), b.idx, const)
    return {"snr_db": float(snr_db), "bits": bits,
            "ber": {k: e / bits for k, e in errors.items()}, "errors": errors}


def _classical(cfg: WeSNetConfig) -> dict:
    const, ev = cfg.constellation, cfg.evaluation
    out = {"zf": lambda b: const.hard_decision(linear_detect(b.y, b.h, b.noise_var, "zf", const)[0]),
           "mmse": lambda b: const.hard_decision(linear_detect(b.y, b.h, b.noise_var, "mmse", const)[0])}
    if ev.kbest:
        out[f"kbest{ev.kbest}"] = lambda b: kbest_detect(b.y, b.h, const, ev.kbest)
    return out


def step_evaluate(cfg: WeSNetConfig, run: Path, progress: bool = True) -> dict:
    """BER vs SNR of every variant and the baselines (Fig. 4/8); the dial model at each kept
    fraction (Fig. 5) and the depth models at each depth (Fig. 6-7); time per vector at each
    kept fraction in the run-time detector."""
    ev, const = cfg.evaluation, cfg.constellation
    chan = cfg.channel()
    models = {m.name: load_variant(run, m.name) for m in cfg.models}
    dets = {name: (lambda b, mm=mm: detect_indices(mm, b.y, b.h, const)) for name, mm in models.items()}
    dets.update(_classical(cfg))
    g = torch.Generator().manual_seed(ev.seed)
    ber = [_point(cfg, chan, snr, g, dets) for snr in tqdm(ev.snr_db, desc="BER vs SNR", disable=not progress)]
    write_json(run / "evaluate" / "ber.json", ber)
    dial = {}
    if ev.dial_model:
        base = models[ev.dial_model]
        keeps = [k for k in ev.keeps if kept_units(k, base.hidden) <= base.units]
        variants = {f"keep={k:g}": (lambda b, mm=base.sliced(k): detect_indices(mm, b.y, b.h, const)) for k in keeps}
        variants["mmse"] = dets["mmse"]
        g = torch.Generator().manual_seed(ev.seed + 1)
        dial["keep"] = {"model": ev.dial_model, "keeps": keeps,
                        "points": [_point(cfg, chan, snr, g, variants)
                                   for snr in tqdm(ev.keep_snr_db, desc="BER vs kept", disable=not progress)]}
        dial["timing"] = _timing(cfg, base, keeps)
    depth = {}
    for name in ev.depth_models:
        mm = models[name]
        depths = [d for d in ev.depths if d <= mm.layers]
        variants = {f"L={d}": (lambda b, d=d, mm=mm: detect_indices(mm, b.y, b.h, const, d)) for d in depths}
        g = torch.Generator().manual_seed(ev.seed + 2)
        depth[name] = {"depths": depths, "points": [_point(cfg, chan, snr, g, variants) for snr in
                                                    tqdm(ev.depth_snr_db, desc=f"BER vs depth {name}",
                                                         disable=not progress)]}
    dial["depth"] = depth
    write_json(run / "evaluate" / "dial.json", dial)
    return {"ber": ber, "dial": dial}


@torch.no_grad()
def _timing(cfg: WeSNetConfig, model: DetNet, keeps: list[float], repeats: int = 3) -> list[dict]:
    """Seconds per vector of the run-time detector at each kept fraction on the same frames
    (``timing_frames`` x ``timing_vectors``), in this process, best of ``repeats``."""
    ev, s, const = cfg.evaluation, cfg.system, cfg.constellation
    g = torch.Generator().manual_seed(0)
    h = cfg.channel().sample(ev.timing_frames, g)
    y = h @ const.symbols(const.random_indices((ev.timing_frames, s.nt, ev.timing_vectors), g))
    nv = torch.ones(ev.timing_frames)
    det = DetNetDetector.from_model(model, s.nr)
    out = []
    for k in keeps:
        det.configure(keep=k)
        det.detect(y, h, nv)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            det.detect(y, h, nv)
            best = min(best, time.perf_counter() - t0)
        out.append({"keep": k, "seconds_per_vector": best / (ev.timing_frames * ev.timing_vectors),
                    "flops_per_vector": det.flops_per_vector(ev.timing_vectors)})
    return out


PIPELINE = Pipeline("wesnet", {
    "train": Step(step_train, "train every DetNet/WeSNet variant of the config (bundles)", parallel=True),
    "evaluate": Step(step_evaluate, "BER vs SNR with ZF, MMSE, K-best; the dial model per kept fraction; truncated "
                                    "depths"),
    "report": Step(step_report, "report.md: tables next to the paper's numbers, FLOPs and parameters, plots"),
})
STEPS, STEP_HELP, run_pipeline = PIPELINE.step_functions, PIPELINE.help, PIPELINE.run


# ------------------------------------------------------------------------------ the families table's entries
def scale_training(length: int, seed: int, config: Path) -> tuple[torch.nn.Module, object]:
    """``(model, run)``: this family's training at the size of the pipeline config ``config``
    for ``length`` steps; ``run() -> (history, samples)``
    (:func:`neuralmimo.lab.scale.family_training`)."""
    cfg = WeSNetConfig.load(config)
    tr, s = cfg.training, cfg.system
    m = next(m for m in cfg.models if m.name == cfg.evaluation.dial_model)
    chan = cfg.channel()
    torch.manual_seed(seed)
    model = DetNet(s.nt, tr.layers, tr.hidden, s.modulation, m.profile, m.keep, m.learnable)
    model.reset_parameters(tr.init)

    def run():
        g = torch.Generator().manual_seed(training.rank_seed(seed))
        batch = training.local_batch(tr.batch)
        hist = train_detnet(model, lambda step: draw_channel_batch(chan, cfg.constellation, batch, 1,
                                                                   tuple(tr.snr_db), g, convention="detnet"),
                            steps=length, steps_per_epoch=max(1, length // 4), lr=tr.lr, generators=(g,))
        return hist, length * tr.batch
    return model, run


def training_samples(config: Path) -> int:
    """Training samples (symbol vectors) the pipeline config ``config`` trains on, counted as
    :func:`scale_training` counts them (the paper-scale projections of ``bench training``)."""
    c = WeSNetConfig.load(config)
    return sum((m.steps or c.training.steps) for m in c.models) * c.training.batch

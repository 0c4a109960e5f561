"""Training at scale: each family's quick-config training as one function, run in one process or
data-parallel under ``torchrun`` (``docs/training.md``), and the measurements of
``neuralmimo bench training``.

:func:`family_training` builds the training of a family from its ``configs/<family>/quick.yaml``
(the model and data of the quick pipeline, the number of epochs or steps chosen by the caller)
and runs it through the family's own training function, so the shared loop's data parallelism is
exercised exactly as the pipelines use it. ``python -m neuralmimo.lab.scale --family F --out DIR``
is the worker ``torchrun`` starts: every process writes its final weights and history, so a test
can check that the processes hold identical weights and that the loss matches a single-process
run with the same global batch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from .. import training

FAMILIES = ("sdnet", "deepsic", "hypermimo", "wesnet")
CONFIGS = Path(__file__).resolve().parents[3] / "configs"


def _config_path(family: str) -> Path:
    folder = {"sdnet": "learngene"}.get(family, family)
    return CONFIGS / folder / "quick.yaml"


def family_training(family: str, length: int, seed: int = 0, config: Path | None = None
                    ) -> tuple[torch.nn.Module, object]:
    """``(model, run)`` where ``run()`` trains ``model`` for ``length`` epochs (SDNet, DeepSIC) or
    steps (HyperMIMO, WeSNet) of the family's configuration ``config`` (default: its quick one;
    SDNet: the learngene individual model on i.i.d. channels, as many as a task's training UEs)
    and returns
    ``(history, samples)``: the training function's records and the training samples it went
    through (symbol vectors; per process it is the global count)."""
    from ..constellation import Constellation

    if family == "sdnet":
        from ..channels import make_channel
        from ..detectors.sdnet.model import SDNet
        from ..detectors.sdnet.train import make_optimiser, train
        from .learngene import LearngeneConfig

        cfg = LearngeneConfig.load(config or _config_path(family))
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
    if family == "deepsic":
        from ..detectors.deepsic.train import front_end, train_hypernetwork
        from .deepsic import DeepSICConfig, training_blocks

        cfg = DeepSICConfig.load(config or _config_path(family))
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
    if family == "hypermimo":
        from ..datasets import draw_channel_batch
        from ..detectors.mmnet.model import HyperMIMO
        from ..detectors.mmnet.train import train_hypermimo
        from .hypermimo import HyperMIMOConfig

        cfg = HyperMIMOConfig.load(config or _config_path(family))
        tr, s = cfg.training, cfg.system
        chan = cfg.channel(cfg.drops[0])
        torch.manual_seed(seed)
        model = HyperMIMO(s.nu, tr.layers, tr.hidden, s.modulation)

        def run():
            g = torch.Generator().manual_seed(training.rank_seed(seed))
            batch = training.local_batch(tr.batch)
            hist = train_hypermimo(model, lambda step: draw_channel_batch(chan, cfg.constellation, batch, tr.vectors,
                                                                          tuple(tr.snr_db), g),
                                   steps=length, steps_per_epoch=max(1, length // 4), lr=tuple(tr.lr), generators=(g,))
            return hist, length * tr.batch * tr.vectors
        return model, run
    if family == "wesnet":
        from ..datasets import draw_channel_batch
        from ..detectors.detnet.model import DetNet
        from ..detectors.detnet.train import train_detnet
        from .wesnet import WeSNetConfig

        cfg = WeSNetConfig.load(config or _config_path(family))
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
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def config_samples(family: str, config: Path) -> int:
    """Training samples (symbol vectors) a pipeline configuration trains on, as counted by
    :func:`family_training`: the basis of the paper-scale projections of ``bench training``.
    Learngene counts the collective (Nconv = 12) samples like the individual ones (Nconv = 8),
    so it underestimates the collective part by about the depth ratio."""
    if family == "sdnet":
        from .learngene import LearngeneConfig

        c = LearngeneConfig.load(config)
        ues = int(c.data.ues_per_task * 0.81)
        epochs = len(c.data.collective_tasks) * c.collective.epochs_per_task + \
            len(c.data.target_tasks) * len(c.individual.schemes) * c.individual.epochs + \
            c.individual.transfer_pretrain_epochs
        return epochs * ues
    if family == "deepsic":
        from .deepsic import DeepSICConfig

        c = DeepSICConfig.load(config)
        per_epoch = len(c.k_values) * c.training.symbols_per_k
        return c.training.hyper_epochs * per_epoch
    if family == "hypermimo":
        from .hypermimo import HyperMIMOConfig

        c = HyperMIMOConfig.load(config)
        tr = c.training
        models = len(c.drops) * len(tr.csi) + len(tr.across_hidden) * len(tr.across_inputs)
        return models * tr.steps * tr.batch * tr.vectors
    from .wesnet import WeSNetConfig

    c = WeSNetConfig.load(config)
    return sum((m.steps or c.training.steps) for m in c.models) * c.training.batch


def bench_scaling(family: str, config: Path | None = None, length: int | None = None, processes: int = 2,
                  paper: Path | None = None) -> dict:
    """Training samples/s of ``family`` (its ``config``, default quick) in 1 process with 1 and
    with ``processes`` torch threads, and in ``processes`` data-parallel processes of 1 thread
    (torchrun, gloo); scaling efficiency = DDP rate / (processes x 1-thread rate); the training
    time of the ``paper`` configuration projected at each rate. Every rate is measured after
    a warm-up run of the same length."""
    import tempfile

    config = config or _config_path(family)
    length = length or {"sdnet": 1, "deepsic": 1, "hypermimo": 100, "wesnet": 60}[family]
    rates = {}
    for threads in (1, processes):
        torch.set_num_threads(threads)
        _, run = family_training(family, length, config=config)
        run()  # warm-up
        t0 = time.perf_counter()
        _, samples = run()
        rates[f"1x{threads}"] = samples / (time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as tmp:
        torchrun(["--family", family, "--length", str(length), "--out", tmp, "--config", str(config), "--warmup"],
                 processes=processes, threads=1)
        metas = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in range(processes)]
    rates[f"{processes}x1"] = metas[0]["samples"] / max(m["seconds"] for m in metas)
    out = {"family": family, "config": str(config), "length": length, "processes": processes, "rates": rates,
           "efficiency": rates[f"{processes}x1"] / (processes * rates["1x1"]),
           "ddp_vs_threads": rates[f"{processes}x1"] / rates[f"1x{processes}"]}
    if paper is not None:
        n = config_samples(family, paper)
        out["paper"] = {"config": str(paper), "samples": n, "hours": {k: n / v / 3600 for k, v in rates.items()}}
    return out


def format_bench_scaling(rows: list[dict]) -> str:
    p = rows[0]["processes"]
    lines = [f"training samples/s per family: 1 process x 1 thread, 1 process x {p} threads, {p} DDP processes "
             f"(torchrun, gloo) x 1 thread; efficiency = DDP / ({p} x 1 thread)",
             f"{'family':>10} {'1x1':>10} {f'1x{p}':>10} {f'{p}x1 DDP':>10} {'efficiency':>10} {'vs threads':>10}"
             f"  paper config projection (h): 1x1 / 1x{p} / DDP"]
    for r in rows:
        rt = r["rates"]
        proj = ""
        if "paper" in r:
            h = r["paper"]["hours"]
            proj = f"  {h['1x1']:.2f} / {h[f'1x{p}']:.2f} / {h[f'{p}x1']:.2f}  ({Path(r['paper']['config']).name}, " \
                   f"{r['paper']['samples']:.3g} samples)"
        lines.append(f"{r['family']:>10} {rt['1x1']:>10.0f} {rt[f'1x{p}']:>10.0f} {rt[f'{p}x1']:>10.0f} "
                     f"{r['efficiency']:>10.2f} {r['ddp_vs_threads']:>10.2f}{proj}")
    return "\n".join(lines)


def final_loss(history: list[dict]) -> tuple[float, float]:
    """The last record's loss and its standard error (whatever the family calls its loss)."""
    last = history[-1]
    key = next(k for k in last if k + "_se" in last)
    return last[key], last[key + "_se"]


def torchrun(args: list[str], processes: int = 2, threads: int = 1, timeout: float = 900) -> None:
    """Run ``python -m neuralmimo.lab.scale ARGS`` under ``torchrun --standalone`` with
    ``processes`` processes of ``threads`` torch threads each; raises with the output on failure."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "neuralmimo.lab.scale", "--threads", str(threads), *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"torchrun failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="one family's quick training in this torchrun process")
    p.add_argument("--family", choices=FAMILIES, required=True)
    p.add_argument("--length", type=int, required=True, help="epochs (sdnet, deepsic) or steps")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--config", type=Path, help="the family's pipeline config (default: its quick one)")
    p.add_argument("--warmup", action="store_true", help="train once before the timed run")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (each process: GPU LOCAL_RANK)")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = training.init_distributed(str(training.check_device(a.device)))
    model, run = family_training(a.family, a.length, a.seed, a.config)
    with training.use_device(device):
        if a.warmup:
            run()
        training.barrier()
        t0 = time.perf_counter()
        hist, samples = run()
        seconds = time.perf_counter() - t0
    rank = training.process_rank()
    a.out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(a.out / f"rank{rank}.safetensors"))
    (a.out / f"rank{rank}.json").write_text(json.dumps({"history": hist, "samples": samples, "seconds": seconds,
                                                         "processes": training.process_count()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

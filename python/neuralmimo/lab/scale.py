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
from . import families

FAMILIES = families.NAMES


def family_training(family: str, length: int, seed: int = 0, config: Path | None = None
                    ) -> tuple[torch.nn.Module, object]:
    """``(model, run)`` where ``run()`` trains ``model`` for ``length`` epochs (SDNet, DeepSIC) or
    steps (HyperMIMO, WeSNet) of the family's configuration ``config`` (default: its quick one;
    SDNet: the learngene individual model on i.i.d. channels, as many as a task's training UEs)
    and returns ``(history, samples)``: the training function's records and the training samples
    it went through (symbol vectors; per process it is the global count). The family's pipeline
    module does the work (``scale_training``, :mod:`neuralmimo.lab.families`)."""
    fam = families.family(family)
    return fam.module().scale_training(length, seed, config or fam.quick_config)


def config_samples(family: str, config: Path) -> int:
    """Training samples (symbol vectors) a pipeline configuration trains on, as counted by
    :func:`family_training`: the basis of the paper-scale projections of ``bench training``.
    Learngene counts the collective (Nconv = 12) samples like the individual ones (Nconv = 8),
    so it underestimates the collective part by about the depth ratio."""
    return families.family(family).module().training_samples(config)


def bench_scaling(family: str, config: Path | None = None, length: int | None = None, processes: int = 2,
                  paper: Path | None = None) -> dict:
    """Training samples/s of ``family`` (its ``config``, default quick) in 1 process with 1 and
    with ``processes`` torch threads, and in ``processes`` data-parallel processes of 1 thread
    (torchrun, gloo); scaling efficiency = DDP rate / (processes x 1-thread rate); the training
    time of the ``paper`` configuration projected at each rate. Every rate is measured after
    a warm-up run of the same length."""
    import tempfile

    fam = families.family(family)
    config = config or fam.quick_config
    length = length or fam.scale_length
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

"""Site adaptation: fine-tune a HyperMIMO bundle on a site's recorded channel estimates and hand
the new bundle to a running receiver (``neuralmimo adapt``).

The CSI log (written by the *CSI Logger* block, :mod:`neuralmimo.csilog`) or any channel file
(:mod:`neuralmimo.channels.external`) gives the site's channels; symbols and noise are drawn
synthetically on top of them at SNRs uniform in the base model's training range, exactly as the
HyperMIMO pipeline trains ([HM] Sec. IV-B, the paper's "re-trained in the background when the
channel statistics change significantly"). The process lowers its own priority, stops at its
time budget, and writes the bundle into ``--out`` atomically (a hidden temporary folder next to
it renamed into place), so a *Neural MIMO Detector* watching that folder swaps it in at a frame boundary
and never sees a half-written bundle.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..bundle import BundleError, load_model, save_model
from ..channels.external import FileChannel
from ..constellation import Constellation
from ..datasets import draw_channel_batch
from ..detectors.mmnet.model import HYPERMIMO_CODEC
from ..detectors.mmnet.train import train_hypermimo
from ..drift import channel_statistics


@dataclass
class AdaptResult:
    bundle: Path
    steps: int
    seconds: float
    frames: int
    history: list


def adapt_hypermimo(csi, base, out, *, steps: int = 2000, batch: int = 200, lr: tuple[float, float] = (3e-4, 3e-5),
                    budget_s: float = 0.0, seed: int = 0, name: str | None = None, nice: int = 10,
                    progress=None) -> AdaptResult:
    """Fine-tune the HyperMIMO bundle ``base`` on the channels of ``csi`` (a CSI log folder or a
    channel mapping file) for ``steps`` steps or until ``budget_s`` seconds (0: no budget) and
    write the result as ``out/name`` (default ``adapted-<time>``) atomically.

    The SNR range and CSI kind are the base bundle's; the learning rate decays from ``lr[0]`` to
    ``lr[1]`` (smaller than a training from scratch: the start is a trained model).
    """
    if nice:
        try:
            os.nice(int(nice))  # a background job: the flowgraph keeps the CPU it needs
        except OSError:
            pass
    model, bundle = load_model(base, HYPERMIMO_CODEC)  # BundleError for anything but a valid HyperMIMO bundle
    system = dict(bundle.system)
    snr = system.get("snr_db") or []
    if len(snr) != 2:
        raise BundleError(f"{base}: a HyperMIMO bundle records its training SNR range [lo, hi] in system.snr_db, "
                          f"got {snr!r}")
    chan = FileChannel(csi, split="train")
    if (chan.nr, chan.nt) != (system["nr"], system["nt"]):
        raise ValueError(f"{csi}: the channels are {chan.nr}x{chan.nt}, the model is for "
                         f"{system['nr']}x{system['nt']}")
    const = Constellation(system["modulation"])
    csi_kind = bundle.hyperparameters.get("csi", "perfect")
    g = torch.Generator().manual_seed(seed)
    deadline = time.monotonic() + budget_s if budget_s > 0 else None
    done = {"steps": 0}

    def sample(step):
        if deadline is not None and time.monotonic() > deadline:
            raise _OutOfTime
        done["steps"] = step + 1
        return draw_channel_batch(chan, const, batch, 1, tuple(snr), g, csi=csi_kind,
                                  n_pilots=system.get("n_pilots") or 16)

    t0 = time.perf_counter()
    model.train()
    try:
        history = train_hypermimo(model, sample, steps=steps, steps_per_epoch=max(1, min(100, steps)), lr=lr,
                                  progress=progress, generators=(g,))
    except _OutOfTime:
        history = [{"stopped": "time budget", "steps": done["steps"] - 1}]
    seconds = time.perf_counter() - t0
    model.eval()
    model.csi = csi_kind
    system["channel"] = {"name": "file", "args": {"mapping": str(Path(csi).resolve())}}
    final = publish_bundle(lambda tmp: save_model(
        model, HYPERMIMO_CODEC, tmp, system=system,
        training={"adapted_from": {"path": str(bundle.path), "sha256": bundle.sha256},
                  "csi": str(Path(csi).resolve()), "channels": int(chan.h.shape[0]), "steps": done["steps"],
                  "batch": batch, "lr": list(lr), "seconds": seconds, "history": history,
                  "channel_stats": channel_statistics(chan.h)}), out, name or time.strftime("adapted-%Y%m%d-%H%M%S"))
    return AdaptResult(final, done["steps"], seconds, int(chan.h.shape[0]), history)


def publish_bundle(write, watch, name: str) -> Path:
    """Put a bundle into a receiver's watch folder ``watch/name`` atomically: ``write(folder)``
    writes it next to the watch folder, not in it (a watcher would see it half-written), and the
    folder is then renamed in. ``ValueError`` if ``watch/name`` exists."""
    watch = Path(watch)
    watch.mkdir(parents=True, exist_ok=True)
    final, tmp = watch / name, watch.resolve().parent / f".{watch.name}-{name}.tmp"
    if final.exists():
        raise ValueError(f"{final} exists: choose another --name")
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    os.replace(tmp, final)  # the watch folder sees the whole bundle at once
    return final


class _OutOfTime(Exception):
    """Raised from the sampler when the time budget is spent (ends the training loop)."""

"""Site adaptation: fine-tune a HyperMIMO or hypernetwork-DeepSIC bundle on a site's recorded
channel estimates and hand the new bundle to a running receiver (``neuralmimo adapt``).

The CSI log (written by the *CSI Logger* block, :mod:`neuralmimo.site.csilog`) or any channel file
(:mod:`neuralmimo.channels.external`) gives the site's channels; symbols and noise are drawn
synthetically on top of them at SNRs uniform in the base model's training range, exactly as the
HyperMIMO pipeline trains ([HM] Sec. IV-B, the paper's "re-trained in the background when the
channel statistics change significantly"); a hypernetwork-DeepSIC gets blocks of every ``K`` in
``2..K_max`` with random pilots, as the DeepSIC pipeline trains ([MH] Sec. III-A3). The process lowers its own priority, stops at its
time budget, and writes the bundle into ``--out`` atomically (a hidden temporary folder next to
it renamed into place), so a *Neural MIMO Detector* watching that folder swaps it in at a frame boundary
and never sees a half-written bundle.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..bundle import BundleError, load_model, read_manifest, save_model
from ..params import safe_name
from ..channels.external import FileChannel
from ..constellation import Constellation
from ..datasets import draw_channel_batch, draw_frames
from ..detectors.deepsic.complex import COMPLEX_HYPERNET_CODEC
from ..detectors.deepsic.model import HYPERNET_CODEC, ModuleSpec
from ..detectors.deepsic.train import front_end, train_hypernetwork
from ..detectors.mmnet.model import HYPERMIMO_CODEC
from ..detectors.mmnet.train import train_hypermimo
from ..site.drift import REAL_CHANNEL_TOLERANCE, channel_statistics, imaginary_fraction
from ..snr import noise_variance
from . import families


@dataclass
class AdaptResult:
    bundle: Path
    steps: int
    seconds: float
    frames: int
    history: list


def adapt_hypermimo(csi, base, out, *, steps: int = 2000, batch: int = 200, lr: tuple[float, float] = (3e-4, 3e-5),
                    budget_s: float = 0.0, seed: int = 0, name: str | None = None, nice: int = 10,
                    progress=None, since_frame: int | None = None) -> AdaptResult:
    """Fine-tune the HyperMIMO bundle ``base`` on the channels of ``csi`` (a CSI log folder or a
    channel mapping file) for ``steps`` steps or until ``budget_s`` seconds (0: no budget) and
    write the result as ``out/name`` (default ``adapted-<time>``) atomically.

    The SNR range and CSI kind are the base bundle's; the learning rate decays from ``lr[0]`` to
    ``lr[1]`` (smaller than a training from scratch: the start is a trained model).
    ``since_frame``: train on the CSI log's frames from this number on only.
    """
    _lower_priority(nice)
    model, bundle = load_model(base, HYPERMIMO_CODEC)  # BundleError for anything but a valid HyperMIMO bundle
    system = dict(bundle.system)
    snr = system.get("snr_db") or []
    if len(snr) != 2:
        raise BundleError(f"{base}: a HyperMIMO bundle records its training SNR range [lo, hi] in system.snr_db, "
                          f"got {snr!r}")
    chan = _site_channels(csi, since_frame)
    if (chan.nr, chan.nt) != (system["nr"], system["nt"]):
        raise ValueError(f"{csi}: the channels are {chan.nr}x{chan.nt}, the model is for "
                         f"{system['nr']}x{system['nt']}")
    _check_site_channels(chan, csi, since_frame)
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
    system["channel"] = _log_channel(csi, since_frame)
    final = publish_bundle(lambda tmp: save_model(
        model, HYPERMIMO_CODEC, tmp, system=system,
        training={"adapted_from": {"path": str(bundle.path), "sha256": bundle.sha256},
                  "csi": str(Path(csi).resolve()), "channels": int(chan.h.shape[0]), "steps": done["steps"],
                  "batch": batch, "lr": list(lr), "seconds": seconds, "history": history,
                  "channel_stats": channel_statistics(chan.h)}), out, name or time.strftime("adapted-%Y%m%d-%H%M%S"),
        check=lambda tmp: check_adapted(tmp, bundle.path, chan, seed))
    return AdaptResult(final, done["steps"], seconds, int(chan.h.shape[0]), history)


DEEPSIC_CODECS = {"hypernet-deepsic": HYPERNET_CODEC, "hypernet-deepsic-complex": COMPLEX_HYPERNET_CODEC}
ADAPTABLE = families.adaptable_architectures()


def adapt_bundle(csi, base, out, **options) -> AdaptResult:
    """The family's adapt entry (:mod:`neuralmimo.lab.families`: :func:`adapt_hypermimo`,
    :func:`adapt_deepsic`) by the base bundle's architecture."""
    _, manifest = read_manifest(base)
    arch = manifest["architecture"]["name"]
    fam = families.by_architecture(arch)
    if fam is None or arch not in fam.adaptable:
        raise BundleError(f"{base}: a {arch} bundle cannot be adapted; adapt takes {', '.join(ADAPTABLE)}")
    return fam.entry("adapt")(csi, base, out, **options)


def adapt_deepsic(csi, base, out, *, steps: int = 2000, batch: int = 32, lr: float = 3e-4, budget_s: float = 0.0,
                  seed: int = 0, name: str | None = None, nice: int = 10, progress=None,
                  block_length: int = 232, since_frame: int | None = None) -> AdaptResult:
    """Fine-tune the hypernetwork-DeepSIC bundle ``base`` (either architecture) on the channels of
    ``csi`` for ``steps`` mini-batches of ``batch`` blocks or until ``budget_s`` seconds, and write
    the result as ``out/name`` atomically.

    Training blocks: ``block_length`` symbols with the bundle's ``n_pilots`` random pilots, every
    ``K`` in ``2..K_max`` equally often, channels drawn from the log, SNR uniform in the bundle's
    training range in its SNR convention. A model of the paper's real receiver refuses a log of
    complex channels (it reads ``Re y`` only).
    """
    _lower_priority(nice)
    _, manifest = read_manifest(base)
    codec = DEEPSIC_CODECS.get(manifest["architecture"]["name"])
    if codec is None:
        raise BundleError(f"{base}: not a hypernetwork-DeepSIC bundle")
    model, bundle = load_model(base, codec)
    system = dict(bundle.system)
    snr, convention = system.get("snr_db") or [], system.get("snr_convention") or "deepsic"
    if len(snr) != 2:
        raise BundleError(f"{base}: the bundle records no training SNR range [lo, hi] in system.snr_db ({snr!r})")
    chan = _site_channels(csi, since_frame)
    k_max, n_pilots = int(system["nt"]), int(system.get("n_pilots") or 32)
    if (chan.nr, chan.nt) != (system["nr"], k_max):
        raise ValueError(f"{csi}: the channels are {chan.nr}x{chan.nt}, the model is for {system['nr']}x{k_max}")
    _check_site_channels(chan, csi, since_frame)
    real = bool(bundle.hyperparameters.get("real_channel", False))
    if real and imaginary_fraction(chan.h) > REAL_CHANNEL_TOLERANCE:
        raise ValueError(f"{csi}: the logged channels are complex and {base} reads Re y only (the paper's real "
                         "receiver): adapt a hypernet-deepsic-complex model")
    if block_length <= n_pilots:
        raise ValueError(f"block_length {block_length} must exceed the {n_pilots} pilots")
    g = torch.Generator().manual_seed(seed)
    k_values = list(range(2, k_max + 1))
    per_k = max(1, -(-steps * batch // len(k_values)))  # enough blocks for `steps` mini-batches in one epoch
    ks = torch.tensor([k for k in k_values for _ in range(min(per_k, 500))])  # memory: ~80 MB at 12x8
    snr_db = snr[0] + (snr[1] - snr[0]) * torch.rand(len(ks), generator=g, dtype=torch.float64)
    p_ref = noise_variance(0.0, convention, channel_energy=1.0, nr=1, nt=1)
    blocks = draw_frames(chan.sample(len(ks), g), Constellation(system["modulation"]), n_pilots,
                         block_length - n_pilots, (p_ref / 10 ** (snr_db / 10)).float(), g, pilots="random", n_users=ks)
    fe = front_end(blocks, ModuleSpec(int(system["nr"]), system["modulation"], real))
    deadline = time.monotonic() + budget_s if budget_s > 0 else None
    done = {"steps": 0}

    def tick():
        if (deadline is not None and time.monotonic() > deadline) or done["steps"] >= steps:
            raise _OutOfTime
        done["steps"] += 1

    t0 = time.perf_counter()
    model.train()
    try:
        history = train_hypernetwork(model, fe, blocks, epochs=max(1, -(-steps * batch // len(ks))), lr=lr,
                                     batch_blocks=batch, symbols_per_block=block_length, seed=seed, progress=progress,
                                     before_batch=tick)
    except _OutOfTime:
        history = [{"stopped": "time budget" if done["steps"] < steps else "steps", "steps": done["steps"]}]
    seconds = time.perf_counter() - t0
    model.eval()
    system["channel"] = _log_channel(csi, since_frame)
    final = publish_bundle(lambda tmp: save_model(
        model, codec, tmp, system=system,
        training={"adapted_from": {"path": str(bundle.path), "sha256": bundle.sha256},
                  "csi": str(Path(csi).resolve()), "channels": int(chan.h.shape[0]), "steps": done["steps"],
                  "batch_blocks": batch, "block_length": block_length, "lr": lr, "seconds": seconds,
                  "history": history, "channel_stats": channel_statistics(chan.h)}),
        out, name or time.strftime("adapted-%Y%m%d-%H%M%S"), check=lambda tmp: check_adapted(tmp, bundle.path, chan, seed))
    return AdaptResult(final, done["steps"], seconds, int(chan.h.shape[0]), history)


def _site_channels(csi, since_frame) -> FileChannel:
    return FileChannel(csi, split="train", since_frame=since_frame)


def _check_site_channels(chan, csi, since_frame) -> None:
    """``ValueError`` when the log's training channels are too few to be statistics or not all
    finite (a NaN channel would train NaN weights)."""
    if chan.h.shape[0] < MIN_ADAPT_FRAMES:
        raise ValueError(f"{csi}: {chan.h.shape[0]} channels{' since frame ' + str(since_frame) if since_frame else ''} "
                         f"in the training split; adapt needs at least {MIN_ADAPT_FRAMES} (fewer are no statistics, "
                         "and the bundle's drift reference would be noise)")
    if not bool(torch.isfinite(torch.view_as_real(chan.h)).all()):
        raise ValueError(f"{csi}: the channels hold NaN/Inf values")


def _lower_priority(nice: int) -> None:
    """A background job: the flowgraph keeps the CPU it needs (no-op where not permitted)."""
    if nice:
        try:
            os.nice(int(nice))
        except OSError:
            pass


def _log_channel(csi, since_frame: int | None) -> dict:
    """The ``file`` channel spec of the recorded channels a bundle was adapted on."""
    args = {"mapping": str(Path(csi).resolve())}
    if since_frame is not None:
        args["since_frame"] = int(since_frame)
    return {"name": "file", "args": args}


def publish_bundle(write, watch, name: str, check=None) -> Path:
    """Put a bundle into a receiver's watch folder ``watch/name`` atomically: ``write(folder)``
    writes it next to the watch folder, not in it (a watcher would see it half-written), and the
    folder is then renamed in. ``check(folder)`` may refuse it first (raises; nothing is
    published). ``ValueError`` if ``watch/name`` exists or ``name`` is not a plain folder name
    (``../x`` would write outside ``watch``)."""
    name = safe_name(name, "bundle name (--name)")
    watch = Path(watch)
    try:
        watch.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ValueError(f"{watch}: exists and is not a folder") from None
    final, tmp = watch / name, watch.resolve().parent / f".{watch.name}-{name}.tmp"
    if final.exists():
        raise ValueError(f"{final} exists: choose another --name")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        if check is not None:
            check(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    os.replace(tmp, final)  # the watch folder sees the whole bundle at once
    return final


class AdaptRefused(ValueError):
    """The adapted model is not published: why, in one line."""


MIN_ADAPT_FRAMES = 64  # channels a log must hold: fewer are no statistics (and no drift reference)
VALIDATION_FRAMES = 256  # frames of the validation comparison with the base model
VALIDATION_DATA = 64  # data vectors per validation frame
WORSE_SIGMAS = 3.0  # the adapted model is refused when this many standard errors worse than its base


def check_adapted(candidate: Path, base: Path, chan, seed: int) -> dict:
    """Refuse (:class:`AdaptRefused`) an adapted bundle whose weights are not all finite, or that
    detects worse than the ``base`` it started from on the same validation frames: ``chan``'s
    channels, symbols and noise drawn with ``seed`` at SNRs uniform in the base's training range
    (its SNR convention), LS channel estimates from the pilots, SER per complex symbol. Worse
    means more errors than the base by more than ``WORSE_SIGMAS`` standard errors of the
    difference (``sqrt(e_new + e_base)``, the paired count's Poisson bound). Returns both SERs."""
    from ..detectors.registry import load_detector

    try:
        new = load_detector(candidate)
    except BundleError as exc:  # the codec refuses NaN/Inf tensors itself
        raise AdaptRefused(f"training diverged ({str(exc).rsplit(': ', 1)[-1]}: a learning rate too high?); nothing "
                           "published, the model in force stays") from None
    old = load_detector(base)
    for name, t in new.model.state_dict().items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise AdaptRefused(f"training diverged: weight {name} holds NaN/Inf (a learning rate too high, or "
                               "non-finite channels in the log?); nothing published, the model in force stays")
    system = old.bundle.system
    snr = system.get("snr_db") or [10.0, 10.0]
    convention = system.get("snr_convention") or "project"
    g = torch.Generator().manual_seed(int(seed) + 7919)
    h = chan.sample(VALIDATION_FRAMES, g)
    nr, nt = int(h.shape[1]), int(h.shape[2])
    snr_db = snr[0] + (snr[-1] - snr[0]) * torch.rand(VALIDATION_FRAMES, generator=g, dtype=torch.float64)
    energy = float((h.abs() ** 2).sum() / VALIDATION_FRAMES)
    p_ref = noise_variance(0.0, convention, channel_energy=energy, nr=nr, nt=nt)
    const = Constellation(system["modulation"])
    n_pilots = max(int(system.get("n_pilots") or nt), nt)
    frames = draw_frames(h, const, n_pilots, VALIDATION_DATA, (p_ref / 10 ** (snr_db / 10)).float(), g)
    y = frames.y[..., n_pilots:]
    errors = {}
    with torch.inference_mode():
        for label, det in (("adapted", new), ("base", old)):
            x = det.detect(y, frames.h_ls, frames.noise_var_hat)
            if not bool(torch.isfinite(torch.view_as_real(x)).all()):
                if label == "adapted":
                    raise AdaptRefused("the adapted model outputs NaN/Inf on the validation frames; nothing published")
            errors[label] = int((const.hard_decision(x) != frames.idx).sum())
    total = int(frames.idx.numel())
    ser = {k: v / total for k, v in errors.items()}
    if errors["adapted"] - errors["base"] > WORSE_SIGMAS * math.sqrt(errors["adapted"] + errors["base"] + 1):
        raise AdaptRefused(f"the adapted model detects worse than its base on {VALIDATION_FRAMES} validation frames of "
                           f"the log (SER {ser['adapted']:.3g} vs {ser['base']:.3g}); nothing published, the model in "
                           "force stays")
    return {"validation_ser": ser, "validation_symbols": total}


class _OutOfTime(Exception):
    """Raised from the sampler when the time budget is spent (ends the training loop)."""

"""Monte-Carlo error-rate sweep: LS estimation + classical detectors + any trained bundle.

Each frame has its own channel realisation (block fading): ``Np`` orthogonal pilots followed by
``frame_data`` data vectors (:func:`~neuralmimo.datasets.draw_frames`). Every detector sees the
same frames (paired comparison): the classical ones (``zf``, ``mmse``, ``ml``, ``kbest``) and
bundles given as ``PATH[@key=value...]`` (an entry containing ``/``), which run through the same
:class:`~neuralmimo.detectors.FrameDetector` as the neural detector block. SER is per complex
symbol, BER per bit. The SER interval ``ci`` accounts for the errors of one frame sharing a
channel (:func:`~neuralmimo.metrics.error_rate_interval`); ``ber_ci`` is the binomial one.

With ``mmse`` among the detectors, every other detector's record carries ``vs_mmse``: the paired
SER difference on the same frames and its 95 % interval, and ``worse`` when the detector is worse
than MMSE at 95 % confidence (:func:`~neuralmimo.envelope.paired_difference`). A bundle with an
operating envelope detects the frames outside it with MMSE (``PATH@fallback=false`` turns that
off); its records carry ``fallback_frames``, the fraction of frames MMSE detected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from ..channels import ChannelSpec, make_channel
from ..constellation import Constellation
from ..datasets import draw_frames
from ..detectors import SystemSpec, kbest_detect, linear_detect, load_detector, ml_detect, parse_bundle_entry
from ..envelope import paired_difference
from ..metrics import ErrorRate, bit_errors, error_rate_interval, symbol_errors
from ..snr import noise_variance

CLASSICAL = ("zf", "mmse", "ml", "kbest")


def is_bundle_entry(entry: str) -> bool:
    """A detector entry naming a bundle folder (it contains a path separator)."""
    return "/" in entry


@dataclass
class SimConfig:
    """One SER/BER-vs-SNR sweep. ``pilots=None`` means perfect CSI (and the true noise variance).

    ``channel``: a channel spec (``"iid"`` or ``{name, args}``, see
    :class:`~neuralmimo.channels.ChannelSpec`); ``detectors``: classical names and bundle entries.
    """

    channel: object = "iid"
    nt: int = 4
    nr: int = 8
    modulation: str = "qpsk"
    snr_db: list = field(default_factory=lambda: [0.0, 5.0, 10.0])
    snr_convention: str = "project"
    pilots: int | None = 16
    detectors: list = field(default_factory=lambda: ["zf", "mmse"])
    symbols: int = 100_000  # complex symbols per SNR point (rounded up to whole frames)
    frame_data: int = 16  # data vectors per frame (per channel realisation)
    kbest_k: int = 16
    mmse_noise: str = "estimated"  # or "true"; with perfect CSI the true variance is always used
    seed: int = 0
    batch_frames: int = 256

    @property
    def channel_spec(self) -> ChannelSpec:
        return ChannelSpec.parse(self.channel)


def _detector_functions(cfg: SimConfig, const: Constellation) -> dict:
    """``{entry: (detect(y_d, h_hat, nv_hat) -> (point indices, frames MMSE detected (S,) bool or
    None), record fields)}`` in the config's order."""
    out = {}
    system = SystemSpec(cfg.nr, cfg.nt, cfg.modulation)
    for d in cfg.detectors:
        if d in ("zf", "mmse", "kbest") and cfg.nt > cfg.nr:
            raise ValueError(f"{d} needs Nt <= Nr (a tall channel), got Nt = {cfg.nt} > Nr = {cfg.nr}")
        if d in ("zf", "mmse"):
            out[d] = (lambda y, h, nv, kind=d: (const.hard_decision(linear_detect(y, h, nv, kind, const)[0]), None), {})
        elif d == "ml":
            out[d] = (lambda y, h, nv: (ml_detect(y, h, const), None), {})
        elif d == "kbest":
            out[d] = (lambda y, h, nv: (kbest_detect(y, h, const, cfg.kbest_k), None), {})
        elif is_bundle_entry(d):
            path, options = parse_bundle_entry(d)
            det = load_detector(path, system)
            det.configure(**options)
            label = path.name + "".join(f"@{k}={v}" for k, v in options.items())
            out[d] = (lambda y, h, nv, det=det: _detect_bundle(det, y, h, nv),
                      {"label": label, "architecture": det.architecture, "sha256": det.sha256, "bundle": str(path),
                       "options": dict(det.option_values), "flops_per_vector": det.flops_per_vector(cfg.frame_data),
                       "envelope": det.describe()["envelope"]})
        else:
            raise ValueError(f"unknown detector {d!r}; choose from {CLASSICAL} or give a bundle folder (a path with /)")
    return out


def _detect_bundle(det, y, h, nv):
    if det.fallback:
        x, _, outside = det.detect_with_fallback(y, h, nv, llr=False)
        return det.constellation.hard_decision(x), outside
    return det.constellation.hard_decision(det.detect(y, h, nv)), None


def simulate(cfg: SimConfig, progress: bool = True) -> list[dict]:
    """Run the sweep; returns one record per (SNR, detector)."""
    if not cfg.snr_db or not all(math.isfinite(float(v)) for v in cfg.snr_db):
        raise ValueError(f"the SNR sweep must hold finite values, got {cfg.snr_db!r}")
    for name in ("nt", "nr", "symbols", "frame_data", "kbest_k", "batch_frames"):
        if int(getattr(cfg, name)) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}")
    if not cfg.detectors:
        raise ValueError("no detector given")
    const = Constellation(cfg.modulation)
    spec = cfg.channel_spec
    channel = make_channel(spec, cfg.nr, cfg.nt)
    detectors = _detector_functions(cfg, const)
    n_pilots = cfg.pilots if cfg.pilots else cfg.nt
    if n_pilots < cfg.nt:
        raise ValueError(f"need n_pilots >= nt for orthogonal pilots, got nt={cfg.nt}, n_pilots={n_pilots}")
    n_frames = math.ceil(cfg.symbols / (cfg.nt * cfg.frame_data))
    csi = f"LS, Np={cfg.pilots}" if cfg.pilots else "perfect"
    records = []
    points = list(enumerate(cfg.snr_db))
    for i_snr, snr_db in tqdm(points, desc="SNR points", unit="snr", disable=not progress):
        g = torch.Generator().manual_seed(cfg.seed * 7919 + i_snr)
        nv = noise_variance(snr_db, cfg.snr_convention, channel_energy=channel.mean_energy, nr=cfg.nr, nt=cfg.nt)
        ser = {d: ErrorRate(0, 0, "complex symbol") for d in detectors}
        ber = {d: ErrorRate(0, 0, "bit") for d in detectors}
        frame_errors = {d: [] for d in detectors}
        fallback = {d: [] for d in detectors}
        done = 0
        while done < n_frames:
            b = min(cfg.batch_frames, n_frames - done)
            f = draw_frames(channel.sample(b, g), const, n_pilots, cfg.frame_data, nv, g)
            if cfg.pilots:
                h_hat, nv_hat = f.h_ls, f.noise_var_hat
                if cfg.mmse_noise == "true" or torch.isnan(nv_hat).any():
                    nv_hat = torch.full((b,), nv)
            else:
                h_hat, nv_hat = f.h, torch.full((b,), nv)
            bits = const.indices_to_bits(f.idx)
            for d, (detect, _) in detectors.items():
                dec, outside = detect(f.y_d, h_hat, nv_hat)
                if outside is not None:
                    fallback[d].append(outside)
                ser[d] = ser[d] + symbol_errors(dec, f.idx)
                frame_errors[d].append((dec != f.idx).sum((-2, -1)))
                ber[d] = ber[d] + bit_errors(const.indices_to_bits(dec), bits)
            done += b
        errors = {d: torch.cat(frame_errors[d]) for d in detectors}
        for d, (_, extra) in detectors.items():
            vs = {}
            if "mmse" in detectors and d != "mmse":
                vs["vs_mmse"] = paired_difference(errors[d], errors["mmse"], cfg.nt * cfg.frame_data)
            if fallback[d]:
                vs["fallback_frames"] = float(torch.cat(fallback[d]).double().mean())
            records.append({
                "snr_db": float(snr_db), "snr_convention": cfg.snr_convention, "detector": d,
                "ser": ser[d].rate, "ci": list(error_rate_interval(errors[d], cfg.nt * cfg.frame_data)),
                "n_symbols": ser[d].trials, "ser_unit": "per complex symbol",
                "ber": ber[d].rate, "ber_ci": list(ber[d].ci), "n_bits": ber[d].trials, "ber_unit": "per bit",
                "channel": spec.to_dict(), "nt": cfg.nt, "nr": cfg.nr, "modulation": cfg.modulation, "csi": csi,
                **extra, **vs,
            })
    return records


def format_table(records: list[dict]) -> str:
    """Plain-text table, one row per SNR, SER (per complex symbol) per detector."""
    dets = list(dict.fromkeys(r["detector"] for r in records))
    labels = {r["detector"]: r.get("label", r["detector"]) for r in records}
    width = max([24] + [len(labels[d]) + 4 for d in dets])
    snrs = list(dict.fromkeys(r["snr_db"] for r in records))
    by = {(r["snr_db"], r["detector"]): r for r in records}
    conv = records[0]["snr_convention"] if records else "project"
    head = f"{'SNR [dB, ' + conv + ']':>20} | " + " | ".join(f"{'SER ' + labels[d]:>{width}}" for d in dets)
    lines = [head, "-" * len(head)]
    for s in snrs:
        cells = []
        for d in dets:
            r = by[(s, d)]
            cell = f"{r['ser']:.3e} ±{(r['ci'][1] - r['ci'][0]) / 2:.1e}" if r["ser"] > 0 else \
                f"< {r['ci'][1]:.1e} (0 errors)"  # an upper bound, not a value
            cell += _marks(r)
            cells.append(cell.rjust(width))
        lines.append(f"{s:>20.2f} | " + " | ".join(cells))
    lines.append(f"SER per complex symbol, 95% CI half-width (Wilson or over frames, whichever is wider); "
                 f"{records[0]['n_symbols'] if records else 0} symbols per point")
    if any(r.get("vs_mmse", {}).get("worse") for r in records):
        lines.append("W: worse than MMSE at 95% confidence (paired over the same frames)")
    if any(r.get("fallback_frames") for r in records):
        lines.append("F<p>: MMSE fallback on <p> of the frames (outside the bundle's operating envelope; "
                     "PATH@fallback=false turns it off)")
    for d in dets:
        r = by[(snrs[0], d)]
        if "architecture" in r:
            flops = r.get("flops_per_vector")
            lines.append(f"{labels[d]}: {r['architecture']} bundle {r['bundle']}, sha256 {r['sha256'][:16]}..., "
                         f"options {r['options']}" + ("" if flops is None else f", {flops:,.0f} FLOPs per vector")
                         + f"; envelope: {r['envelope'] or 'none recorded'}")
    return "\n".join(lines)


def _marks(r: dict) -> str:
    """The table's marks of a cell: ``W`` worse than MMSE, ``F<p>`` MMSE fallback on a fraction."""
    out = " W" if r.get("vs_mmse", {}).get("worse") else ""
    if r.get("fallback_frames"):
        out += f" F{r['fallback_frames']:.0%}"
    return out

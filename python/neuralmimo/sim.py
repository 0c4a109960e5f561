"""Monte-Carlo error-rate sweep of the classical receiver (LS estimation + ZF/MMSE/ML/K-best).

Each frame has its own channel realisation (block fading): ``Np`` orthogonal pilots followed by
``frame_data`` data vectors. Every detector sees the same frames (paired comparison). SER is per
complex symbol, BER per bit. The SER interval ``ci`` accounts for the errors of one frame
sharing a channel (:func:`metrics.error_rate_interval`); ``ber_ci`` is the binomial one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from . import channels as ch
from .constellation import Constellation
from .detectors import kbest_detect, linear_detect, ml_detect
from .estimation import LSChannelEstimator
from .frames import FrameLayout
from .metrics import ErrorRate, bit_errors, error_rate_interval, symbol_errors
from .snr import noise_variance

DETECTORS = ("zf", "mmse", "ml", "kbest")
CHANNELS = ("iid", "kronecker", "local-scattering", "deepsic-sed", "time-varying", "umi-task")


@dataclass
class SimConfig:
    """One SER/BER-vs-SNR sweep. ``pilots=None`` means perfect CSI (and the true noise variance)."""

    channel: str = "iid"
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
    channel_kwargs: dict = field(default_factory=dict)


def build_channel(cfg: SimConfig):
    return ch.make_channel(cfg.channel, cfg.nr, cfg.nt, **cfg.channel_kwargs)


def simulate(cfg: SimConfig, progress: bool = True) -> list[dict]:
    """Run the sweep; returns one record per (SNR, detector)."""
    for d in cfg.detectors:
        if d not in DETECTORS:
            raise ValueError(f"unknown detector {d!r}; choose from {DETECTORS}")
    const = Constellation(cfg.modulation)
    channel = build_channel(cfg)
    layout = FrameLayout(cfg.nt, cfg.pilots if cfg.pilots else cfg.nt, cfg.frame_data)
    estimate = LSChannelEstimator(layout.pilots())
    n_frames = math.ceil(cfg.symbols / (cfg.nt * cfg.frame_data))
    csi = f"LS, Np={cfg.pilots}" if cfg.pilots else "perfect"
    records = []
    iterator = list(enumerate(cfg.snr_db))
    if progress:
        from tqdm import tqdm
        iterator = tqdm(iterator, desc="SNR points", unit="snr")
    for i_snr, snr_db in iterator:
        g = torch.Generator().manual_seed(cfg.seed * 7919 + i_snr)
        nv = noise_variance(snr_db, cfg.snr_convention, channel_energy=channel.mean_energy, nr=cfg.nr, nt=cfg.nt)
        ser = {d: ErrorRate(0, 0, "complex symbol") for d in cfg.detectors}
        ber = {d: ErrorRate(0, 0, "bit") for d in cfg.detectors}
        frame_errors = {d: [] for d in cfg.detectors}
        done = 0
        while done < n_frames:
            b = min(cfg.batch_frames, n_frames - done)
            h = channel.sample(b, g)
            idx = const.random_indices((b, cfg.nt, cfg.frame_data), g)
            frame = layout.assemble(const.symbols(idx))
            y = ch.transmit(h, frame, nv, g)
            y_p, y_d = layout.split(y)
            if cfg.pilots:
                h_hat, nv_hat = estimate(y_p)
                if cfg.mmse_noise == "true" or torch.isnan(nv_hat).any():
                    nv_hat = torch.full((b,), nv)
            else:
                h_hat, nv_hat = h, torch.full((b,), nv)
            bits = const.indices_to_bits(idx)
            for d in cfg.detectors:
                if d in ("zf", "mmse"):
                    x_hat, _ = linear_detect(y_d, h_hat, nv_hat, d, const)
                    dec = const.hard_decision(x_hat)
                elif d == "ml":
                    dec = ml_detect(y_d, h_hat, const)
                else:
                    dec = kbest_detect(y_d, h_hat, const, cfg.kbest_k)
                ser[d] = ser[d] + symbol_errors(dec, idx)
                frame_errors[d].append((dec != idx).sum((-2, -1)))
                ber[d] = ber[d] + bit_errors(const.indices_to_bits(dec), bits)
            done += b
        for d in cfg.detectors:
            records.append({
                "snr_db": float(snr_db), "snr_convention": cfg.snr_convention, "detector": d,
                "ser": ser[d].rate,
                "ci": list(error_rate_interval(torch.cat(frame_errors[d]), cfg.nt * cfg.frame_data)), "n_symbols": ser[d].trials, "ser_unit": "per complex symbol",
                "ber": ber[d].rate, "ber_ci": list(ber[d].ci), "n_bits": ber[d].trials, "ber_unit": "per bit",
                "channel": cfg.channel, "nt": cfg.nt, "nr": cfg.nr, "modulation": cfg.modulation, "csi": csi,
            })
    return records


def format_table(records: list[dict]) -> str:
    """Plain-text table, one row per SNR, SER (per complex symbol) per detector."""
    dets = list(dict.fromkeys(r["detector"] for r in records))
    snrs = list(dict.fromkeys(r["snr_db"] for r in records))
    by = {(r["snr_db"], r["detector"]): r for r in records}
    conv = records[0]["snr_convention"] if records else "project"
    head = f"{'SNR [dB, ' + conv + ']':>20} | " + " | ".join(f"{'SER ' + d:>24}" for d in dets)
    lines = [head, "-" * len(head)]
    for s in snrs:
        cells = []
        for d in dets:
            r = by[(s, d)]
            cells.append(f"{r['ser']:.3e} ±{(r['ci'][1] - r['ci'][0]) / 2:.1e}".rjust(24))
        lines.append(f"{s:>20.2f} | " + " | ".join(cells))
    lines.append(f"SER per complex symbol, 95% CI half-width (Wilson or over frames, whichever is wider); "
                 f"{records[0]['n_symbols'] if records else 0} symbols per point")
    return "\n".join(lines)


def plot_ser(records: list[dict], path, title: str = "") -> None:
    """SER-vs-SNR PNG with 95 % intervals (see :func:`metrics.error_rate_interval`) as error bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    styles = ["-", "--", "-.", ":"]
    for i, d in enumerate(dict.fromkeys(r["detector"] for r in records)):
        rs = [r for r in records if r["detector"] == d]
        x = [r["snr_db"] for r in rs]
        y = [max(r["ser"], 1e-9) for r in rs]
        lo = [max(r["ser"] - r["ci"][0], 0) for r in rs]
        hi = [r["ci"][1] - r["ser"] for r in rs]
        # distinct line styles and markers: detectors with identical decisions (ML, K-best with a
        # large K) stay visible on top of each other
        ax.errorbar(x, y, yerr=[lo, hi], marker="osv^D"[i % 5], linestyle=styles[i % 4], capsize=3,
                    markersize=max(3, 7 - i), label=d.upper())
    ax.set_yscale("log")
    conv = records[0]["snr_convention"] if records else "project"
    ax.set_xlabel(f"SNR [dB] ({conv} convention)")
    ax.set_ylabel("SER (per complex symbol)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

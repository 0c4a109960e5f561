"""Over-the-air link in the core (no GNU Radio): pulse-shaped frames with preambles through a
block-fading MIMO channel and every radio impairment, received by the frame synchroniser, the
LS estimator and MMSE -- next to a genie-synchronised receiver of the same frames.

What the ``frame_sync`` targets are measured with (tests/lab/qa_ota_link.py, ``neuralmimo bench
sync``); the GNU Radio loopback (``examples/loopback_ota.grc``) runs the same parts as blocks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from neuralmimo.channels import make_channel
from neuralmimo.channels.impairments import RadioImpairments
from neuralmimo.constellation import Constellation
from neuralmimo.detectors.classical import linear_detect
from neuralmimo.receiver.estimation import LSChannelEstimator
from neuralmimo.receiver.frames import FrameLayout, frame_data_indices
from neuralmimo.metrics import snr_at
from neuralmimo.receiver.framesync import FrameSynchronizer
from neuralmimo.receiver.preamble import Preamble, cfo_crb
from neuralmimo.receiver.pulse import INTERP_HALF, matched_filter, rrc_taps, shape
from neuralmimo.receiver.tracking import air_length, insert_tracking, user_rotation
from neuralmimo.snr import complex_noise, noise_variance


@dataclass(frozen=True)
class LinkSettings:
    """A pulse-shaped link: system, waveform and impairments (``cfo`` and ``user_cfo`` in cycles per
    symbol, ``timing_offset`` in samples (integer + fractional), ``phase_noise`` rad^2 per sample)."""

    nr: int = 8
    nt: int = 4
    n_pilots: int = 16
    n_data: int = 256
    modulation: str = "qpsk"
    period: int = 16
    coarse_period: int = 0  # version-2 preamble (neuralmimo.receiver.preamble): 0 = version 1
    pilot_spacing: int = 0  # a tracking pilot after every this many data vectors (neuralmimo.receiver.tracking)
    sps: int = 4
    rolloff: float = 0.35
    span: int = 8
    channel: str = "iid"
    pfa: float = 1e-4
    timing_offset: float = 0.0
    cfo: float = 0.0
    user_cfo: tuple = ()
    sro_ppm: float = 0.0
    phase_noise: float = 0.0
    lo_phase: bool = False
    gain_imbalance_db: float = 0.0
    drop_rate: float = 0.0
    drop_length: tuple = (1, 4096)
    track_phase: bool = True
    user_tracking: bool = True  # remove each user's residual rotation after detection
    chunk: int = 4096  # samples pushed to the synchroniser at a time

    @property
    def layout(self) -> FrameLayout:
        return FrameLayout(self.nt, self.n_pilots, self.n_data)

    @property
    def preamble(self) -> Preamble:
        return Preamble(self.nt, self.period, coarse_period=self.coarse_period)

    @property
    def frame_samples(self) -> int:
        return (self.preamble.length + air_length(self.layout, self.pilot_spacing)) * self.sps


IMPAIRED = dict(cfo=0.02, sro_ppm=20.0, phase_noise=1e-5, lo_phase=True, gain_imbalance_db=1.0)


@dataclass
class LinkResult:
    """Frames sent, frames handed out (numbers), their SER (MMSE after sync) and the genie's SER on
    the same frames, symbol errors / symbols of each, the synchroniser's counts and detections."""

    sent: int
    received: list[int]
    errors: int
    symbols: int
    genie_errors: int
    genie_symbols: int
    counts: dict
    cfo_estimates: list[float] = field(default_factory=list)
    user_cfo_estimates: list[np.ndarray] = field(default_factory=list)
    misnumbered: int = 0
    gaps: list[int] = field(default_factory=list)
    frame_ser: list[float] = field(default_factory=list)
    cfo_crb: list[float] = field(default_factory=list)
    gap_ends: list[int] = field(default_factory=list)
    origin: float = 0.0

    @property
    def ser(self) -> float:
        return self.errors / max(self.symbols, 1)

    @property
    def genie_ser(self) -> float:
        return self.genie_errors / max(self.genie_symbols, 1)


def transmit_symbols(s: LinkSettings, frames: int, idx: torch.Tensor) -> np.ndarray:
    """Symbol streams ``(Nt, symbols)`` of ``frames`` frames (preamble, pilots, data indices ``idx
    (F, Nt, Nd)``) plus a closing preamble."""
    const = Constellation(s.modulation)
    body = s.layout.assemble(const.symbols(idx)).numpy()  # (F, Nt, L)
    body = np.concatenate([body[..., :s.n_pilots], insert_tracking(body[..., s.n_pilots:], s.layout, s.pilot_spacing)], -1)
    pre = s.preamble.symbols().astype(np.complex64)
    parts = []
    for f in range(frames):
        parts += [pre, body[f]]
    parts.append(pre)
    return np.concatenate(parts, axis=1)


def receive_waveform(s: LinkSettings, snr_db: float, frames: int, seed: int = 0) -> tuple[np.ndarray, list, torch.Tensor,
                                                                                        torch.Tensor, float]:
    """What the receiver's ADCs give for ``frames`` frames: ``(samples (Nr, n) before the matched
    filter, overflows [(index, lost)], data indices (F, Nt, Nd), channels (F + 1, Nr, Nt), noise
    variance)`` -- the transmitter, channel and radio of :func:`run_link`."""
    taps = rrc_taps(s.sps, s.rolloff, s.span)
    idx = frame_data_indices(Constellation(s.modulation), s.layout, seed, list(range(frames)))
    model = make_channel(s.channel, s.nr, s.nt)
    g = torch.Generator().manual_seed(seed + 7)
    h = model.sample(frames + 1, g)  # one channel per frame (and the closing preamble)
    nv = noise_variance(snr_db, "project", channel_energy=model.mean_energy, nr=s.nr, nt=s.nt)
    sym = transmit_symbols(s, frames, idx)  # (Nt, symbols)
    if s.user_cfo:  # separate user oscillators: before the channel, in cycles per symbol
        tx = RadioImpairments(s.nt, seed=seed + 11, stream_cfo=np.asarray(s.user_cfo))
        sym, _ = tx.process(np.concatenate([sym, np.zeros((s.nt, INTERP_HALF + 2), np.complex64)], 1))
    # block fading per frame, applied per symbol (before pulse shaping: a channel constant over each
    # symbol's pulse; switching it at a sample boundary would cut the last symbols' pulses)
    n_sym = s.preamble.length + air_length(s.layout, s.pilot_spacing)
    y = np.empty((s.nr, sym.shape[1]), dtype=np.complex64)
    for f in range(frames + 1):
        a, b = f * n_sym, (f + 1) * n_sym if f < frames else sym.shape[1]
        y[:, a:b] = (h[f] @ torch.from_numpy(np.ascontiguousarray(sym[:, a:b]))).numpy()
    # the receiver starts ``timing_offset`` samples before frame 0 (noise only until then)
    lead = int(s.timing_offset)
    # ... and goes on receiving (noise) for a frame after the closing preamble
    tail = np.zeros((s.nr, s.frame_samples), np.complex64)
    y = np.concatenate([np.zeros((s.nr, lead), np.complex64), shape(y, taps, s.sps), tail], 1)
    rx = RadioImpairments(s.nr, seed=seed + 19, delay=s.timing_offset - lead, sro_ppm=s.sro_ppm, cfo=s.cfo / s.sps,
                          phase_noise=s.phase_noise, lo_phase=s.lo_phase, gain_imbalance_db=s.gain_imbalance_db,
                          drop_rate=s.drop_rate, drop_length=s.drop_length, noise_var=nv)
    z, gaps = rx.process(y)
    return z, gaps, idx, h, nv


def run_link(s: LinkSettings, snr_db: float, frames: int, seed: int = 0) -> LinkResult:
    """Send ``frames`` frames at ``snr_db`` (project convention, per symbol after the matched
    filter) through the channel and impairments, synchronise, estimate and detect with MMSE;
    the genie receiver sees the same frames, channels and symbols at one sample per symbol with
    its own noise and no impairment."""
    taps = rrc_taps(s.sps, s.rolloff, s.span)
    const = Constellation(s.modulation)
    z, gaps, idx, h, nv = receive_waveform(s, snr_db, frames, seed)
    z = matched_filter(z, taps)
    origin = s.timing_offset + len(taps) - 1  # where frame 0's first preamble symbol peaks
    sync = FrameSynchronizer(s.nr, s.layout, s.preamble, s.sps, taps, pfa=s.pfa, origin=origin,
                             constellation=const if s.track_phase else None, pilot_spacing=s.pilot_spacing)
    out = []
    cuts = sorted({0, z.shape[1], *range(0, z.shape[1], s.chunk), *(o for o, _ in gaps)})
    lost_at = {}
    for o, n in gaps:
        lost_at[o] = lost_at.get(o, 0) + n
    for a, b in zip(cuts[:-1], cuts[1:]):
        if a in lost_at:
            out += sync.gap(lost_at[a])
        out += sync.push(z[:, a:b])
    est = LSChannelEstimator(s.layout.pilots())
    res = LinkResult(frames, [], 0, 0, 0, 0, dict(sync.counts), gaps=[n for _, n in gaps])
    device = 0
    for o, n in gaps:  # the device sample after each overflow (kept index + samples lost so far)
        device += n
        res.gap_ends.append(o + device)
    res.origin = origin
    good = [f for f in out if 0 <= f.number < frames]
    res.misnumbered = len(out) - len(good)
    if good:
        ys = torch.from_numpy(np.stack([f.symbols for f in good]))
        hh, nvh = est(ys[..., :s.n_pilots])
        xh, _ = linear_detect(ys[..., s.n_pilots:], hh, nvh.to(torch.float32), "mmse", const)
        if s.track_phase and s.user_tracking:  # each user's residual rotation (exact for linear detection)
            rot = user_rotation(np.stack([f.user_rate for f in good]), s.layout)
            xh = xh * torch.from_numpy(rot).conj()
        dec = const.hard_decision(xh)
        ref = idx[[f.number for f in good]]
        res.errors, res.symbols = int((dec != ref).sum()), int(ref.numel())
        res.received = [f.number for f in good]
        res.cfo_estimates = [f.cfo for f in good]
        pre = torch.from_numpy(s.preamble.symbols().astype(np.complex64))
        times = np.arange(s.preamble.length) * s.sps
        res.cfo_crb = [cfo_crb((h[f.number] @ pre).numpy(), nv, times) for f in good]
        res.user_cfo_estimates = [f.user_cfo for f in good]
        # a frame handed out with data that are not its own would show as SER ~0.75 (QPSK)
        per_frame = (dec != ref).float().mean((-2, -1))
        res.frame_ser = per_frame.tolist()
    # genie: the same frames, channels and symbols at one sample per symbol, perfectly synchronised
    body = s.layout.assemble(const.symbols(idx))
    yg = h[:frames] @ body + complex_noise((frames, s.nr, s.layout.length), nv, torch.Generator().manual_seed(seed + 23))
    hg, nvg = est(yg[..., :s.n_pilots])
    xg, _ = linear_detect(yg[..., s.n_pilots:], hg, nvg.to(torch.float32), "mmse", const)
    res.genie_errors = int((const.hard_decision(xg) != idx).sum())
    res.genie_symbols = int(idx.numel())
    return res


def impaired(s: LinkSettings, **extra) -> LinkSettings:
    """``s`` with the standard impairments (:data:`IMPAIRED`) and ``extra`` on top."""
    return replace(s, **{**IMPAIRED, **extra})


def false_starts(s: LinkSettings, frame_lengths: int, pfa: float, seed: int = 0) -> tuple[int, int]:
    """Frame starts the synchroniser acquires in ``frame_lengths`` frame lengths of noise only
    (white receiver noise through the matched filter), with false-alarm probability ``pfa`` per
    frame length: ``(acquisitions, frame lengths)``."""
    taps = rrc_taps(s.sps, s.rolloff, s.span)
    sync = FrameSynchronizer(s.nr, s.layout, s.preamble, s.sps, taps, pfa=pfa)
    rng = np.random.default_rng(seed)
    block = 64 * s.frame_samples
    done, tail = 0, np.zeros((s.nr, len(taps) - 1), np.complex64)
    while done < frame_lengths:
        n = min(block, (frame_lengths - done) * s.frame_samples)
        w = ((rng.standard_normal((s.nr, n)) + 1j * rng.standard_normal((s.nr, n))) * np.sqrt(0.5)).astype(np.complex64)
        z = matched_filter(np.concatenate([tail, w], 1), taps)[:, tail.shape[1]:]
        tail = w[:, -(len(taps) - 1):]
        sync.push(z)
        done += n // s.frame_samples
    return sync.counts.get("acquired", 0), frame_lengths


# ------------------------------------------------------------------------------------ the report
def _ser_record(label: str, snr: float, errors: int, symbols: int, frames: int) -> dict:
    from neuralmimo.metrics import wilson_interval

    lo, hi = wilson_interval(errors, symbols)
    return {"detector": label, "label": label, "snr_db": snr, "ser": errors / max(symbols, 1), "ci": [lo, hi], "frames": frames,
            "snr_convention": "project"}


def ota_report(out: Path, frames: int = 200, false_start_lengths: int = 40000, progress=None, map_frames: int = 100,
               map_axes=None) -> dict:
    """Measure the frame synchroniser on the core link and write ``out/report.md``, PNGs and
    ``results.json``: MMSE after sync (with and without phase tracking, version-1 and version-2
    frames) vs the genie receiver, detection, CFO error vs its Cramer-Rao bound, false starts on
    noise, re-acquisition after overflows, per-user CFO, the frame-length limit vs the residual
    CFO, and the robustness map (:func:`robustness_map`, ``map_frames`` per point)."""
    import json

    import matplotlib.pyplot as plt

    from .figures import plot_ser, save_figure

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    step = progress or (lambda text: None)
    res: dict = {"settings": {k: v for k, v in RADIO_REPORT.__dict__.items()}}
    # 1. SER vs SNR
    curves, rows = [], []
    for snr in (2.0, 4.0, 6.0, 8.0, 10.0, 12.0):
        step(f"SER at {snr} dB")
        r = run_link(RADIO_REPORT, snr, frames, seed=5)
        nt = run_link(replace(RADIO_REPORT, track_phase=False), snr, frames, seed=5)
        v2 = run_link(replace(RADIO_REPORT, **MAP_FORMAT), snr, frames, seed=5)
        curves += [_ser_record("MMSE after frame sync", snr, r.errors, r.symbols, len(r.received)),
                   _ser_record("MMSE after frame sync, no phase tracking", snr, nt.errors, nt.symbols, len(nt.received)),
                   _ser_record("MMSE after frame sync, version-2 frames", snr, v2.errors, v2.symbols, len(v2.received)),
                   _ser_record("MMSE genie sync", snr, r.genie_errors, r.genie_symbols, frames)]
        rows.append({"snr_db": snr, "received": len(r.received), "sent": frames, "ser": r.ser, "ser_no_tracking": nt.ser,
                     "ser_v2": v2.ser, "received_v2": len(v2.received),
                     "genie_ser": r.genie_ser, "events": {k: v for k, v in r.counts.items() if k != "frames"}})
    plot_ser(curves, out / "ser_sync_vs_genie.png", title="4x8 QPSK over a simulated radio (2 % CFO, 20 ppm, ...)")
    sync = [c["ser"] for c in curves if c["detector"] == "MMSE after frame sync"]
    genie = [c["ser"] for c in curves if c["detector"] == "MMSE genie sync"]
    snrs = [row["snr_db"] for row in rows]
    res["ser"] = rows
    res["loss_db_at_1e-2"] = snr_at(1e-2, snrs, sync) - snr_at(1e-2, snrs, genie)
    # 2. CFO error vs CRB
    step("CFO vs CRB")
    crb_rows = []
    for snr in (0.0, 5.0, 10.0, 15.0, 20.0):
        r = run_link(impaired(BASE_REPORT, cfo=0.01, sro_ppm=0.0, phase_noise=0.0), snr, 3 * frames // 2, seed=6)
        err = np.asarray(r.cfo_estimates) - 0.01 / BASE_REPORT.sps
        crb_rows.append({"snr_db": snr, "rms": float(np.sqrt(np.mean(err ** 2))), "crb_rms": float(np.sqrt(np.mean(r.cfo_crb))),
                         "frames": len(err)})
    res["cfo"] = crb_rows
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    ax.semilogy([c["snr_db"] for c in crb_rows], [c["rms"] * BASE_REPORT.sps for c in crb_rows], "o-", label="RMS error (measured)")
    ax.semilogy([c["snr_db"] for c in crb_rows], [c["crb_rms"] * BASE_REPORT.sps for c in crb_rows], "k--",
                label="Cramer-Rao bound")
    ax.set_xlabel("SNR [dB] (project convention)")
    ax.set_ylabel("CFO error [cycles per symbol]")
    ax.set_title("CFO estimate from the preamble (2 x 16 symbols, 8 antennas)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(fig, out / "cfo_vs_crb.png")
    # 3. false starts on noise at the design probability
    step("false starts on noise")
    count, lengths = false_starts(BASE_REPORT, false_start_lengths, BASE_REPORT.pfa, seed=1)
    res["false_starts"] = {"pfa": BASE_REPORT.pfa, "frame_lengths": lengths, "starts": count}
    # 4. re-acquisition after ~100 overflows
    step("overflows")
    n_ov = 2 * frames  # ~100 overflows over the run whatever its length
    s = impaired(BASE_REPORT, timing_offset=17.6, drop_rate=140 / (n_ov * BASE_REPORT.frame_samples), drop_length=(1, 3000))
    r = run_link(s, 12.0, n_ov, seed=4)
    res["overflows"] = {"overflows": len(r.gaps), "received": len(r.received), "sent": n_ov, "misnumbered": r.misnumbered,
                        "worst_frame_ser": max(r.frame_ser, default=0.0), "ser": r.ser, "genie_ser": r.genie_ser,
                        "events": {k: v for k, v in r.counts.items() if k != "frames"}}
    # 5. per-user CFO (separate user oscillators): measured from the preambles, tracked and removed
    step("per-user CFO")
    users = []
    for spread in (0.0, 5e-4, 1e-3, 2e-3, 4e-3):
        user = tuple(spread * np.array([1.0, -1.0, 0.5, -0.5]))
        s5 = impaired(BASE_REPORT, cfo=0.01, user_cfo=user, phase_noise=0.0, **MAP_FORMAT)
        r = run_link(s5, 10.0, max(10, frames // 2), seed=8)
        off = run_link(replace(s5, user_tracking=False), 10.0, max(10, frames // 2), seed=8)
        est = np.mean(r.user_cfo_estimates, axis=0) * BASE_REPORT.sps - 0.01
        users.append({"spread": spread, "user_cfo": list(user), "estimated": est.tolist(), "ser": r.ser,
                      "ser_not_removed": off.ser, "genie_ser": r.genie_ser})
    res["user_cfo"] = users
    # 6. the robustness map
    res["map"] = robustness_map(map_frames, axes=map_axes, progress=step)
    plot_robustness_map(res["map"], out / "robustness_map.png")
    res["map_envelope"] = map_envelope(res["map"])
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    (out / "report.md").write_text(format_ota_report(res))
    return res


def _upper_bound(events: int, trials: int) -> float:
    from neuralmimo.metrics import wilson_interval

    return wilson_interval(events, trials)[1] if events else 3.0 / trials  # the rule of three for zero events


BASE_REPORT = LinkSettings()
RADIO_REPORT = impaired(BASE_REPORT, timing_offset=517.37, phase_noise=1e-4)


def format_ota_report(res: dict) -> str:
    lines = ["# Frame synchronisation: measured on the core link", "",
             "Written by `neuralmimo ota-report` (`neuralmimo.lab.ota`). Link: 4 users x 8 antennas, QPSK, frames of "
             "2 x 16 preamble + 16 pilot + 256 data symbols, RRC roll-off 0.35 at 4 samples per symbol, i.i.d. Rayleigh "
             "block fading per frame, white receiver noise; the radio adds a random start (517.37 samples), a CFO of 2 % of "
             "the symbol rate, +20 ppm sample-rate offset, Wiener phase noise of 1e-4 rad^2 per sample (16 Hz at 1 MS/s), "
             "a random LO phase and +-1 dB gain per receive channel. The genie receiver sees the same frames, channels "
             "and symbols at one sample per symbol with no impairment.", "",
             "## MMSE after Frame Sync vs the genie receiver", "", "![SER](ser_sync_vs_genie.png)", "",
             "| SNR [dB] | frames | MMSE after sync | without phase tracking | version-2 frames | genie | sync events |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["ser"]:
        lines.append(f"| {r['snr_db']:g} | {r['received']}/{r['sent']} | {r['ser']:.3e} | {r['ser_no_tracking']:.3e} | "
                     f"{r['ser_v2']:.3e} ({r['received_v2']}) | {r['genie_ser']:.3e} | {r['events'] or '-'} |")
    lines += ["", f"Loss at SER 1e-2 (log-linear interpolation): **{res['loss_db_at_1e-2']:.2f} dB** (target <= 0.5 dB).",
              "Without the phase tracker the residual CFO (the estimate's error, ~CRB) and the phase noise turn the "
              "constellation within the 256 data symbols.", "", "## CFO estimate vs its Cramer-Rao bound", "",
              "![CFO](cfo_vs_crb.png)", "", "| SNR [dB] | RMS error [cycles/symbol] | CRB [cycles/symbol] | ratio |",
              "| --- | --- | --- | --- |"]
    sps = BASE_REPORT.sps
    for c in res["cfo"]:
        lines.append(f"| {c['snr_db']:g} | {c['rms'] * sps:.2e} | {c['crb_rms'] * sps:.2e} | {c['rms'] / c['crb_rms']:.2f} |")
    fs = res["false_starts"]
    ov = res["overflows"]
    lines += ["", "The bound (`neuralmimo.receiver.preamble.cfo_crb`) is for the symbol-spaced matched-filter samples of the "
              "received preamble with an unknown complex gain per antenna (target: RMS within 2x).", "",
              "## Frame-length limit vs residual CFO", "",
              "Without tracking, a residual CFO `df` (cycles per symbol) turns the phase by `2 pi df Nd` over the data; "
              "LS-based detection of QPSK loses ~0.5 dB at ~6 degrees RMS phase error, so `Nd < 1 / (60 df)`:", "",
              "| residual CFO [cycles/symbol] | Nd limit without tracking |", "| --- | --- |"]
    for c in res["cfo"]:
        df = c["rms"] * sps
        lines.append(f"| {df:.1e} (RMS at {c['snr_db']:g} dB) | {1 / (60 * df):.0f} |")
    lines += ["", "The decision-directed tracker (16-vector chunks) removes this limit for the common phase: the "
              "frames above (Nd = 256) show no loss at 6-12 dB.", "",
              "## False starts and re-acquisition", "",
              f"* Noise only: **{fs['starts']} frame starts in {fs['frame_lengths']:,} frame lengths** at the design "
              f"false-alarm probability {fs['pfa']:g} per frame length (95 % upper bound of the rate: "
              f"{_upper_bound(fs['starts'], fs['frame_lengths']):.1e}; the thresholds use a union bound, so the rate is "
              "below the design).",
              f"* {ov['overflows']} overflows of 1..3000 samples in {ov['sent']} frames at 12 dB (rx_time gaps): {ov['received']} "
              f"frames handed out, {ov['misnumbered']} misnumbered, worst frame SER {ov['worst_frame_ser']:.3f} (a "
              f"misaligned frame would show ~0.75), SER {ov['ser']:.2e} vs genie {ov['genie_ser']:.2e}; events "
              f"{ov['events']}.", "", "## Per-user CFO (separate user oscillators)", "",
              "Each user's CFO is measured from its own preamble (the phase between the two periods of its cyclic "
              "shift) and tagged (`user_cfo`); only the common CFO can be removed from the antennas' samples. Each "
              "user's residual rotation along the frame is tracked (from the tracking pilots, averaged over frames; "
              "`neuralmimo.receiver.tracking`) and removed after detection (`user_phase` tag). Users' offsets "
              "`+-s, +-s/2` around a 1 % common CFO, 10 dB, version-2 frames:", "",
              "| spread s [cycles/symbol] | measured offsets | SER | SER, rotation not removed | genie SER |",
              "| --- | --- | --- | --- | --- |"]
    for u in res["user_cfo"]:
        est = ", ".join(f"{v:+.1e}" for v in u["estimated"])
        lines.append(f"| {u['spread']:g} | {est} | {u['ser']:.3e} | {u['ser_not_removed']:.3e} | {u['genie_ser']:.3e} |")
    lines += [""] + format_robustness_map(res["map"])
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ the robustness map
# each impairment swept on its own around the report's radio, in the version-2 frame format (a coarse
# preamble part, a tracking pilot every 16 data vectors); values in the units of LinkSettings
# (cfo and the users' spread in cycles per symbol, phase noise in rad^2 per sample)
MAP_FORMAT = dict(coarse_period=4, pilot_spacing=16)
MAP_SNRS = (6.0, 8.0, 10.0, 12.0, 14.0, 16.0)
MAP_AXES = {
    "cfo": {"label": "CFO [% of the symbol rate]", "scale": 100.0,
            "values": (-0.10, -0.07, -0.04, -0.02, 0.0, 0.02, 0.04, 0.07, 0.10)},
    "phase_noise": {"label": "phase noise [rad^2/sample]", "scale": 1.0, "values": (0.0, 1e-4, 3e-4, 1e-3, 2e-3, 3e-3)},
    "sro_ppm": {"label": "sample-rate offset [ppm]", "scale": 1.0, "values": (-100.0, -50.0, -20.0, 0.0, 20.0, 50.0, 100.0)},
    "user_spread": {"label": "users' CFO spread [cycles/symbol]", "scale": 1.0, "values": (0.0, 1e-4, 2.5e-4, 5e-4, 1e-3)},
    "drop_rate": {"label": "overflows [per sample]", "scale": 1.0, "values": (0.0, 1e-5, 3e-5, 1e-4)},
}


def _map_settings(base: LinkSettings, axis: str, value: float) -> LinkSettings:
    if axis == "user_spread":
        return replace(base, user_cfo=tuple(value * np.array([1.0, -1.0, 0.5, -0.5])[:base.nt]) if value else ())
    if axis == "drop_rate":
        return replace(base, drop_rate=value, drop_length=(1, 3000))
    return replace(base, **{axis: value})


def robustness_map(frames: int = 100, snrs=MAP_SNRS, axes=None, seed: int = 11, progress=None,
                   base: LinkSettings | None = None) -> dict:
    """The sync chain against each impairment (:data:`MAP_AXES`, one at a time around ``base``, by
    default the report's radio in the version-2 frame format) at each SNR: MMSE after Frame Sync
    vs the genie receiver of the same frames (:func:`run_link`). Returns ``{axis: {"values",
    "snrs", "ser", "genie", "delivered" (fractions), "loss_db" (at SER 1e-2 per value; NaN where
    a curve does not cross it), "floor" (whether the SER stays above twice the genie's at the
    highest SNR and above 1e-3)}}``."""
    base = base or replace(RADIO_REPORT, **MAP_FORMAT)
    step = progress or (lambda text: None)
    out = {}
    for axis in axes or MAP_AXES:
        values = MAP_AXES[axis]["values"]
        ser = np.full((len(values), len(snrs)), np.nan)
        genie, delivered = np.full_like(ser, np.nan), np.full_like(ser, np.nan)
        for i, v in enumerate(values):
            step(f"map: {axis} = {v:g}")
            s = _map_settings(base, axis, v)
            for j, snr in enumerate(snrs):
                r = run_link(s, snr, frames, seed=seed + j)
                ser[i, j], genie[i, j] = r.ser if r.symbols else 1.0, r.genie_ser
                delivered[i, j] = len(r.received) / frames
        loss = [snr_at(1e-2, list(snrs), list(ser[i])) - snr_at(1e-2, list(snrs), list(genie[i])) for i in range(len(values))]
        floor = [bool(ser[i, -1] > max(2 * genie[i, -1], 1e-3)) for i in range(len(values))]
        out[axis] = {"values": list(values), "snrs": list(snrs), "ser": ser.tolist(), "genie": genie.tolist(),
                     "delivered": delivered.tolist(), "loss_db": loss, "floor": floor, "frames": frames}
    return out


def plot_robustness_map(res: dict, path: Path) -> None:
    """Heat maps, one column per impairment: the SER ratio to the genie receiver (log colour, top)
    and the fraction of frames delivered (bottom), impairment value against SNR."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    axes = list(res)
    fig, grid = plt.subplots(2, len(axes), figsize=(3.6 * len(axes), 6.6), squeeze=False)
    for c, axis in enumerate(axes):
        r = res[axis]
        vals = np.asarray(r["values"]) * MAP_AXES[axis]["scale"]
        ratio = np.asarray(r["ser"]) / np.maximum(np.asarray(r["genie"]), 1e-6)
        im = grid[0, c].imshow(np.clip(ratio, 0.5, 100).T, origin="lower", aspect="auto", cmap="viridis_r",
                               norm=LogNorm(0.5, 100))
        im2 = grid[1, c].imshow(np.asarray(r["delivered"]).T, origin="lower", aspect="auto", cmap="magma", vmin=0, vmax=1)
        for row, data, fmt in ((0, ratio, "{:.1f}"), (1, np.asarray(r["delivered"]), "{:.2f}")):
            ax = grid[row, c]
            for i in range(len(vals)):
                for j in range(len(r["snrs"])):
                    ax.text(i, j, fmt.format(data[i, j]), ha="center", va="center", fontsize=6,
                            color="white" if (row == 0 and data[i, j] > 4) or (row == 1 and data[i, j] < 0.6) else "black")
            ax.set_xticks(range(len(vals)), [f"{v:g}" for v in vals], rotation=45, fontsize=7)
            ax.set_yticks(range(len(r["snrs"])), [f"{s:g}" for s in r["snrs"]], fontsize=7)
            ax.set_xlabel(MAP_AXES[axis]["label"], fontsize=8)
            if c == 0:
                ax.set_ylabel("SNR [dB]")
        grid[0, c].set_title("SER / genie SER", fontsize=9)
        grid[1, c].set_title("frames delivered", fontsize=9)
    fig.suptitle("Frame Sync robustness map: 4x8 QPSK over a simulated radio, version-2 frames (one impairment at a time)")
    fig.subplots_adjust(left=0.05, right=0.93, bottom=0.13, top=0.9, wspace=0.3, hspace=0.55)
    fig.colorbar(im, cax=fig.add_axes([0.945, 0.56, 0.008, 0.34]))
    fig.colorbar(im2, cax=fig.add_axes([0.945, 0.13, 0.008, 0.31]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)  # not save_figure: tight_layout would move the colour bars' own axes
    plt.close(fig)


def map_envelope(res: dict, max_loss_db: float = 1.0) -> dict:
    """Per impairment, the values where MMSE after sync is within ``max_loss_db`` of the genie at
    SER 1e-2, every frame delivered (>= 99.9 % where the SER is at most 1e-1; not for overflows,
    which cost the frames they hit by design) and no error floor: ``{axis: [values]}``."""
    env = {}
    for axis, r in res.items():
        ok = []
        for i, v in enumerate(r["values"]):
            loss = r["loss_db"][i]
            usable = [d for d, g in zip(r["delivered"][i], r["genie"][i]) if g <= 1e-1]
            delivered = axis == "drop_rate" or min(usable, default=0) >= 0.999
            if math.isfinite(loss) and loss <= max_loss_db and delivered and not r["floor"][i]:
                ok.append(v)
        env[axis] = ok
    return env


def format_robustness_map(res: dict) -> list[str]:
    env = map_envelope(res)
    lines = ["## Robustness map", "",
             "Each impairment alone around the radio above (2 % CFO, 20 ppm, 1e-4 rad^2 phase noise, LO phases, "
             "+-1 dB gains; swept: the one named), in the version-2 frame format (coarse preamble part of 4 x 4 "
             f"symbols, a tracking pilot every 16 data vectors), {res[next(iter(res))]['frames']} frames per point. "
             "Top: the SER of MMSE after Frame Sync over the genie's on the same frames; bottom: the fraction of frames "
             "delivered.", "", "![map](robustness_map.png)", "",
             "| impairment | value | loss at SER 1e-2 [dB] | frames delivered (lowest) | SER at 16 dB (genie) |",
             "| --- | --- | --- | --- | --- |"]
    for axis, r in res.items():
        for i, v in enumerate(r["values"]):
            loss = r["loss_db"][i]
            lines.append(f"| {axis} | {v:g} | {'-' if not math.isfinite(loss) else format(loss, '.2f')} | "
                         f"{min(r['delivered'][i]):.3f} | {r['ser'][i][-1]:.2e} ({r['genie'][i][-1]:.2e}) |")
    lines += ["", "Within 1 dB of the genie at SER 1e-2, every frame delivered (overflows aside: each costs the frame it "
              "hits and the next one, which must be confirmed again) and no error floor (the envelope):", ""]
    for axis, vals in env.items():
        lines.append(f"* {MAP_AXES[axis]['label']}: {', '.join(format(v * MAP_AXES[axis]['scale'], 'g') for v in vals) or 'none'}")
    lines.append("")
    return lines

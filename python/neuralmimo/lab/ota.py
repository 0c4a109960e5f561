"""Over-the-air link in the core (no GNU Radio): pulse-shaped frames with preambles through a
block-fading MIMO channel and every radio impairment, received by the frame synchroniser, the
LS estimator and MMSE -- next to a genie-synchronised receiver of the same frames.

What the ``frame_sync`` targets are measured with (tests/lab/qa_ota_link.py, ``neuralmimo bench
sync``); the GNU Radio loopback (``examples/loopback_ota.grc``) runs the same parts as blocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch

from neuralmimo.channels import make_channel
from neuralmimo.channels.impairments import RadioImpairments
from neuralmimo.constellation import Constellation
from neuralmimo.detectors.classical import linear_detect
from neuralmimo.estimation import LSChannelEstimator
from neuralmimo.frames import FrameLayout, frame_data_indices
from neuralmimo.framesync import FrameSynchronizer
from neuralmimo.preamble import Preamble, cfo_crb
from neuralmimo.pulse import INTERP_HALF, matched_filter, rrc_taps, shape
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
    chunk: int = 4096  # samples pushed to the synchroniser at a time

    @property
    def layout(self) -> FrameLayout:
        return FrameLayout(self.nt, self.n_pilots, self.n_data)

    @property
    def preamble(self) -> Preamble:
        return Preamble(self.nt, self.period)

    @property
    def frame_samples(self) -> int:
        return (self.preamble.length + self.layout.length) * self.sps


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
    n_sym = s.preamble.length + s.layout.length
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
                             constellation=const if s.track_phase else None)
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


def snr_at(ser_target: float, snrs, sers) -> float:
    """SNR (dB) where a measured SER curve crosses ``ser_target``, by linear interpolation of
    ``log10(SER)`` between the two points around it (``nan`` if it does not cross)."""
    snrs, sers = np.asarray(snrs, float), np.log10(np.maximum(np.asarray(sers, float), 1e-12))
    t = np.log10(ser_target)
    for i in range(len(snrs) - 1):
        if (sers[i] - t) * (sers[i + 1] - t) <= 0 and sers[i] != sers[i + 1]:
            return float(snrs[i] + (t - sers[i]) * (snrs[i + 1] - snrs[i]) / (sers[i + 1] - sers[i]))
    return float("nan")


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

"""Radio impairments applied to sample streams: a carrier frequency offset (:func:`apply_cfo`) and
the seeded streaming process of everything a radio adds (:class:`RadioImpairments`)."""

from __future__ import annotations

import math

import numpy as np
import torch

from ..params import Param, ParamError, check_all
from ..receiver.pulse import INTERP_HALF, interpolate


def apply_cfo(y: torch.Tensor, cfo: float, first_sample: int) -> torch.Tensor:
    """Carrier frequency offset: multiply sample ``m`` by ``exp(j 2 pi cfo m)``.

    Parameters
    ----------
    y : ``(..., N)`` complex, samples ``first_sample .. first_sample + N - 1`` of a stream
    cfo : offset in cycles per sample
    first_sample : absolute index of ``y[..., 0]``; the phase is computed in float64 from the
        absolute index, so it stays continuous across buffers

    Returns
    -------
    same shape and dtype as ``y``
    """
    if cfo == 0.0:
        return y
    m = torch.arange(first_sample, first_sample + y.shape[-1], dtype=torch.float64)
    frac = torch.remainder(cfo * m, 1.0)  # keep the angle small before the float32 cast
    return y * torch.polar(torch.ones_like(frac), 2 * math.pi * frac).to(y.dtype)


DROP_BLOCK = 4096  # phase-noise increments are drawn per block of this many output samples


def check_stream_cfo(value, streams: int) -> np.ndarray:
    """Per-stream CFOs ``(streams,)`` float64 from one value or one per stream (``PARAMS['stream_cfo']``
    each); ``ValueError`` otherwise."""
    try:
        v = np.atleast_1d(np.asarray(value, dtype=np.float64))
    except (TypeError, ValueError):
        raise ParamError(f"stream_cfo = {value!r}: expected one number or one per stream ({streams})") from None
    if v.size == 1:
        v = np.full(streams, float(v.reshape(-1)[0]))
    if v.shape != (streams,):
        raise ParamError(f"stream_cfo = {value!r}: expected one number or one per stream ({streams})")
    for x in v:
        PARAMS["stream_cfo"].check(float(x), "stream_cfo")
    return v


def check_drop_length(value) -> tuple[int, int]:
    """``(min, max)`` run length of an overflow, ``1 <= min <= max`` (``PARAMS['drop_length']``)."""
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ParamError(f"drop_length = {value!r}: expected (min, max)") from None
    lo, hi = PARAMS["drop_length"].check(lo, "drop_length min"), PARAMS["drop_length"].check(hi, "drop_length max")
    if lo > hi:
        raise ParamError(f"drop_length = {value!r}: min exceeds max")
    return lo, hi


# The values a radio can have (one declaration for the class, the block's constructor and
# callbacks, and the loopback's command-line options; neuralmimo.params).
PARAMS = {
    "delay": Param(float, 0, 1e9, unit="samples"),
    "sro_ppm": Param(float, -1000, 1000, unit="ppm", doc="crystal oscillators: +-0.1 to +-100 ppm"),
    "cfo": Param(float, -0.5, 0.5, lo_open=True, hi_open=True, unit="cycles per sample"),
    "stream_cfo": Param(float, -0.5, 0.5, lo_open=True, hi_open=True, unit="cycles per sample"),
    "phase_noise": Param(float, 0, 1, unit="rad^2 per sample"),
    "gain_imbalance_db": Param(float, 0, 40, unit="dB"),
    "noise_var": Param(float, 0, 1e30),
    "drop_rate": Param(float, 0, 1, hi_open=True, unit="overflows per sample"),
    "drop_length": Param(int, 1, 10_000_000, unit="samples"),
}


class RadioImpairments:
    """What a radio adds to ``S`` sample streams, in one seeded, streaming process (numpy).

    Output sample ``m`` (the device's own sample counter, before drops) is the input read at time
    ``tau_m = m (1 - sro_ppm 1e-6) - delay`` (a Hann-windowed-sinc interpolation,
    :func:`neuralmimo.receiver.pulse.interpolate`; zeros before the first input sample), then

        out_s[m] = g_s exp(j (2 pi (cfo + stream_cfo_s) m + phi[m] + lo_s)) in_s(tau_m)

    with ``phi`` a Wiener phase noise common to the streams (one LO; increments ``N(0,
    phase_noise)`` rad^2 per sample: linewidth ``phase_noise f_s / (2 pi)`` Hz), ``lo_s`` a constant
    random phase per stream (a USRP channel's LO phase after a tune, when ``lo_phase``) and ``g_s``
    a gain drawn uniformly in ``+-gain_imbalance_db`` dB per stream; then white receiver noise of
    complex variance ``noise_var`` per sample is added (thermal noise at the ADC: white at the
    sample rate, as the frame synchroniser's thresholds assume). Overflows: runs of output
    samples are lost (``drop_rate`` per sample, lengths uniform in ``drop_length``); each is
    reported as ``(output offset of the first sample after it, samples lost)`` -- where a USRP
    source puts an ``rx_time`` tag.

    ``delay`` (samples, fractional), ``sro_ppm``, ``cfo`` and ``stream_cfo`` (cycles per sample),
    ``phase_noise``, ``noise_var``, ``gain_imbalance_db``, ``lo_phase``, ``drop_rate`` and ``drop_length`` are
    attributes (settable between calls; a new delay or rate moves the read time from the next
    sample on). Everything random comes from ``seed`` and the sample counter, not from how the
    stream is cut into pieces.
    """

    def __init__(self, streams: int, seed: int = 0, delay: float = 0.0, sro_ppm: float = 0.0, cfo: float = 0.0,
                 stream_cfo=None, phase_noise: float = 0.0, lo_phase: bool = False,
                 gain_imbalance_db: float = 0.0, drop_rate: float = 0.0, drop_length=(1, 4096),
                 noise_var: float = 0.0):
        self.streams, self.seed = int(streams), int(seed)
        if self.streams < 1:
            raise ValueError(f"need streams >= 1, got {streams}")
        v = check_all(PARAMS, dict(delay=delay, sro_ppm=sro_ppm, cfo=cfo, phase_noise=phase_noise,
                                   gain_imbalance_db=gain_imbalance_db, drop_rate=drop_rate, noise_var=noise_var))
        self.delay, self.sro_ppm, self.cfo = v["delay"], v["sro_ppm"], v["cfo"]
        self.stream_cfo = np.zeros(self.streams) if stream_cfo is None else check_stream_cfo(stream_cfo, self.streams)
        self.phase_noise, self.lo_phase = v["phase_noise"], bool(lo_phase)
        self.gain_imbalance_db, self.drop_rate, self.noise_var = v["gain_imbalance_db"], v["drop_rate"], v["noise_var"]
        self.drop_length = check_drop_length(drop_length)
        rng = np.random.default_rng([self.seed, 1])
        self._lo = rng.uniform(0, 2 * np.pi, self.streams)
        self._gain_u = rng.uniform(-1, 1, self.streams)
        self._drops = np.random.default_rng([self.seed, 2])
        self._next_drop: tuple[int, int] | None = None  # (first, end) of the next lost run
        self._run_end = 0
        pad = INTERP_HALF + 2
        self._in = np.zeros((self.streams, pad), dtype=np.complex64)  # input history, zeros before sample 0
        self._in_base = -pad
        self._m = 0  # next output sample (device counter)
        self._pn_block, self._pn = -1, np.zeros(0)
        self._pn_last = 0.0  # phase noise at the end of the previous block
        self.lost = 0

    def gains(self) -> np.ndarray:
        return 10 ** (self.gain_imbalance_db * self._gain_u / 20)

    def lo_phases(self) -> np.ndarray:
        return self._lo if self.lo_phase else np.zeros(self.streams)

    def _noise(self, m0: int, n: int) -> np.ndarray:
        """``CN(0, 1)`` receiver noise at output samples ``m0 .. m0 + n - 1``, ``(S, n)``, drawn per
        block of ``DROP_BLOCK`` samples from ``(seed, block)``."""
        out = np.empty((self.streams, n), dtype=np.complex64)
        pos = 0
        while pos < n:
            block, within = divmod(m0 + pos, DROP_BLOCK)
            take = min(n - pos, DROP_BLOCK - within)
            w = np.random.default_rng([self.seed, 4, block]).standard_normal((2, self.streams, DROP_BLOCK))
            out[:, pos:pos + take] = ((w[0] + 1j * w[1]) * math.sqrt(0.5))[:, within:within + take]
            pos += take
        return out

    def _phase_noise(self, m0: int, n: int) -> np.ndarray:
        """Wiener phase noise at output samples ``m0 .. m0 + n - 1`` (processed in order)."""
        out = np.empty(n)
        pos = 0
        while pos < n:
            m = m0 + pos
            block, within = divmod(m, DROP_BLOCK)
            if block != self._pn_block:
                inc = np.random.default_rng([self.seed, 3, block]).standard_normal(DROP_BLOCK)
                self._pn = self._pn_last + np.cumsum(inc * math.sqrt(self.phase_noise))
                self._pn_last, self._pn_block = float(self._pn[-1]), block
            take = min(n - pos, DROP_BLOCK - within)
            out[pos:pos + take] = self._pn[within:within + take]
            pos += take
        return out

    def process(self, x: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Input ``(S, n)`` -> (output ``(S, m)`` complex64, overflows ``[(output index, lost)]``,
        indices relative to this call's output)."""
        x = np.asarray(x, dtype=np.complex64)
        if x.ndim != 2 or x.shape[0] != self.streams:
            raise ValueError(f"expected input of shape ({self.streams}, n), got {x.shape}")
        self._in = np.concatenate([self._in, x], axis=1)
        last = self._in_base + self._in.shape[1] - 1  # last input sample available
        rate = 1.0 - self.sro_ppm * 1e-6
        # outputs whose interpolation window lies inside the input held
        n_out = int(math.floor((last - INTERP_HALF + self.delay) / rate)) - self._m + 1
        if n_out <= 0:
            return np.zeros((self.streams, 0), dtype=np.complex64), []
        m = self._m + np.arange(n_out)
        tau = m * rate - self.delay
        y = np.zeros((self.streams, n_out), dtype=np.complex64)
        ok = tau >= self._in_base + INTERP_HALF - 1
        if ok.any():
            y[:, ok] = interpolate(self._in, tau[ok] - self._in_base)
        total = self.cfo + self.stream_cfo[:, None]
        phase = 2 * np.pi * np.remainder(total * m[None, :], 1.0) + self.lo_phases()[:, None]
        if self.phase_noise > 0:
            phase = phase + self._phase_noise(self._m, n_out)[None, :]
        y *= (self.gains()[:, None] * np.exp(1j * phase)).astype(np.complex64)
        if self.noise_var > 0:
            y += self._noise(self._m, n_out) * np.float32(math.sqrt(self.noise_var))
        keep, gaps = self._apply_drops(n_out)
        self._m += n_out
        # keep the input still needed by the next output's window
        next_tau = self._m * rate - self.delay
        drop_in = int(math.floor(next_tau)) - INTERP_HALF - 2 - self._in_base
        if drop_in > 0:
            self._in, self._in_base = self._in[:, drop_in:], self._in_base + drop_in
        return y[:, keep], gaps

    def _apply_drops(self, n_out: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """Which of the next ``n_out`` outputs survive, and the overflows that end among them."""
        keep = np.ones(n_out, dtype=bool)
        gaps = []
        if self.drop_rate <= 0 and self._next_drop is None:
            return keep, gaps
        m0, m1 = self._m, self._m + n_out
        while True:
            if self._next_drop is None:
                if self.drop_rate <= 0:
                    break
                start = self._run_end + int(self._drops.geometric(self.drop_rate))
                length = int(self._drops.integers(self.drop_length[0], self.drop_length[1] + 1))
                self._next_drop = (start, start + length)
            start, end = self._next_drop
            if start >= m1:
                break
            keep[max(start, m0) - m0:min(end, m1) - m0] = False
            if end > m1:  # the run goes on in the next call
                break
            gaps.append((int(keep[:end - m0].sum()), end - start))
            self.lost += end - start
            self._run_end, self._next_drop = end, None
        return keep, gaps

"""Frame synchroniser: ``Nr`` matched-filtered sample streams in, ``Nr`` symbol-rate frame streams out."""

from __future__ import annotations

from collections import deque

import numpy as np
import pmt
from gnuradio import gr

from neuralmimo.constellation import Constellation
from neuralmimo.receiver.frames import FrameLayout
from neuralmimo.params import check_all
from neuralmimo.receiver.framesync import PARAMS, FrameSynchronizer
from neuralmimo.receiver.preamble import Preamble
from neuralmimo.receiver.alignment import timeline_position

from ._common import FailureLog, big_buffers, guarded_work, tags_by_key
from .tags import CFO, FRAME_START, RX_TIME, SYNC_METRIC, TIMING, USER_CFO, rx_time_value
from .pulse_shaping import rrc_taps

SYNC_PORT = "sync"
PENDING_FRAMES = 64
HISTORY = 100_000  # sync dicts kept for history()
USER_CFO_FRAMES = 32  # frames averaged before judging the spread of the users' CFOs  # frames held for output before input is no longer taken (backpressure)

_EVENTS = {  # synchroniser counts that are logged (once per kind) and what they mean
    "slip": "samples were lost or inserted inside a frame (its successor's preamble moved): the frame was dropped "
            "and framing follows the new preamble",
    "lock-miss": "a preamble was not found where the frame length puts it: searching again",
    "unconfirmed": "no preamble followed a frame within 4 frame lengths: the frame was dropped",
    "misnumbered": "a frame's number was not above the last one handed out: dropped",
    "gap-dropped": "samples were lost (rx_time) inside a frame: the frame was dropped and the search starts again",
    "pilot-residual": "a frame's pilots did not fit its channel estimate (mistimed or corrupted): the frame was dropped",
    "verify-capped": "the input passed the preamble test almost everywhere (a DC offset, a tone, saturation?): "
                     "preamble verifications are capped per frame length, some candidates were not verified",
}


class frame_sync(gr.basic_block):
    """Finds frames sent with a preamble (``mimo_frame_source(preamble_period=N)``) in ``Nr``
    matched-filtered streams at ``sps`` samples per symbol (``rrc_matched_filter`` upstream) and
    outputs each frame's ``Np + Nd`` pilot and data vectors at one sample per symbol, timed,
    CFO-corrected and phase-tracked, with the tags the LS estimator frames by
    (``ls_channel_estimator(framing="tags")``). Everything is the core's
    ``neuralmimo.receiver.framesync.FrameSynchronizer`` (its docstring has the method):

    * detection by the preamble's autocorrelation summed over all antennas, with a threshold set by
      ``pfa`` (false frame starts per frame length of noise), verified by the correlation with the
      known preambles; fine (fractional) timing; the common CFO estimated per frame and removed;
    * ``track_phase``: a decision-directed tracker follows the residual phase (CFO error, phase
      noise) through the data;
    * a frame is handed out only once the next preamble is found where the frame length puts it
      (one frame of latency); lost or inserted samples make it a ``slip``: dropped, never cut wrongly;
    * ``rx_time`` tags (``uhd_usrp_source``: start, and after every overflow) tell how many samples
      were lost: the frame around the gap is dropped, the search starts again, and frames keep the
      numbers of the timeline (frame ``n`` starts ``n`` frame lengths after ``origin``, the sample
      where frame 0 starts; default ``span * sps``, the filters' delay, for a transmitter that starts
      with the receiver);
    * per-user CFO (separate user oscillators) is measured from each user's preamble and tagged
      (``user_cfo``), not removed: only the common CFO can be derotated on the receive streams; the
      tracker follows the common phase, so users' CFO differences ``df`` (cycles/symbol) are
      tolerable while ``2 pi df (Np + Nd)`` stays small; a spread beyond that and beyond the
      estimates' noise is logged once (``user-cfo-spread``; see examples/README.md).

    Tags at each frame's first output vector (on every output): ``frame_start`` (number), ``cfo``
    (Hz at ``samp_rate``), ``timing`` (fractional input sample of the preamble start),
    ``sync_metric`` and ``user_cfo`` (Hz, one per user). Problems are logged once per kind and
    counted (:meth:`problems`); :meth:`state` is ``searching``, ``found`` or ``locked``. Message
    port ``sync``: one dict per frame (frame, timing, cfo_hz, metric, correlation, user_cfo_hz).
    """

    def __init__(self, nr: int = 4, nt: int = 2, n_pilots: int = 16, n_data: int = 256, modulation: str = "qpsk",
                 preamble_period: int = 16, sps: int = 4, rolloff: float = 0.35, span: int = 8, pfa: float = 1e-4,
                 track_phase: bool = True, samp_rate: float = 1e6, origin: float = -1.0):
        self.layout = FrameLayout(int(nt), int(n_pilots), int(n_data))
        check_all(PARAMS, dict(nr=nr, sps=sps, pfa=pfa, preamble_period=preamble_period, span=span, rolloff=rolloff,
                               samp_rate=samp_rate, **({} if origin < 0 else {"origin": origin})))
        taps = np.asarray(rrc_taps(sps, rolloff, span))
        self.preamble = Preamble(int(nt), int(preamble_period))
        self.constellation = Constellation(modulation)
        self.samp_rate, self.nr = float(samp_rate), int(nr)
        self.sync = FrameSynchronizer(self.nr, self.layout, self.preamble, int(sps), taps, pfa=pfa,
                                      origin=float(span * sps) if origin < 0 else float(origin),
                                      constellation=self.constellation if track_phase else None)
        gr.basic_block.__init__(self, name="frame_sync", in_sig=[np.complex64] * self.nr,
                                out_sig=[np.complex64] * self.nr)
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.set_output_multiple(self.layout.length)
        self._port = pmt.intern(SYNC_PORT)
        self.message_port_register_out(self._port)
        self._keys = tuple(pmt.intern(k) for k in (FRAME_START, CFO, TIMING, SYNC_METRIC, USER_CFO))
        self.failures = FailureLog(self.logger)
        self._queue: list = []  # frames waiting for output space
        self._time_ref = None  # (stream offset + lost, rx_time) of the first rx_time tag
        self._time_done = -1
        self._reported: dict[str, int] = {}
        self._history: deque = deque(maxlen=HISTORY)
        self._user_cfo: deque = deque(maxlen=USER_CFO_FRAMES)  # per-user CFO of the last frames, cycles/sample
        self._user_cfo_sum, self._user_cfo_sq = np.zeros(int(nt)), np.zeros(int(nt))
        # users' CFOs may differ by this much (cycles/sample) before a frame's channel estimate goes
        # stale within it: 6 degrees over the frame (see the README), with a factor 2 for the estimates' noise
        self._user_cfo_limit = 2.0 / (60.0 * self.layout.length * int(sps))
        big_buffers(self, 4 * self.layout.length)

    def history(self) -> list[dict]:
        """The sync dicts of the last frames handed out (at most ``HISTORY``), as on the ``sync`` port."""
        return list(self._history)

    def state(self) -> str:
        return self.sync.state

    def problems(self) -> dict[str, int]:
        """Occurrences of each kind of problem, and the frames handed out (``frames``)."""
        return {**self.sync.counts, **self.failures.counts}

    def forecast(self, noutput_items, ninputs):
        return [0 if len(self._queue) >= PENDING_FRAMES else 1] * ninputs

    def _gaps(self, n: int) -> list[tuple[int, int]]:
        """``[(relative offset, samples lost)]`` from ``rx_time`` tags among the next ``n`` inputs."""
        r0, out = self.nitems_read(0), []
        lost_so_far = self.sync.lost
        for t in tags_by_key(self, 0, n, RX_TIME):
            if t.offset <= self._time_done:
                continue
            self._time_done = t.offset
            stamp = rx_time_value(t.value)
            if stamp is None:
                self.failures.report("bad-rx-time", f"{self.name()}: rx_time tag {t.value} at sample {t.offset} is "
                                     "not (uint64 seconds, double fraction): ignored")
                continue
            if self._time_ref is None:
                self._time_ref = (t.offset + lost_so_far, stamp)
                continue
            lost = timeline_position(*self._time_ref, stamp, self.samp_rate) - t.offset - lost_so_far
            if lost > 0:
                out.append((t.offset - r0, lost))
                lost_so_far += lost
            elif lost < 0:
                self.failures.report("rx-time-back", f"{self.name()}: rx_time at sample {t.offset} is {-lost} samples "
                                     "behind the timeline (a restarted stream?): ignored")
        return out

    @guarded_work("consume")
    def general_work(self, input_items, output_items):
        n_in = min(len(x) for x in input_items)
        if n_in and len(self._queue) < PENDING_FRAMES:
            pos = 0
            for rel, lost in self._gaps(n_in) + [(n_in, 0)]:
                if rel > pos:
                    self._queue += self.sync.push(np.stack([np.asarray(a[pos:rel]) for a in input_items]))
                    pos = rel
                if lost:
                    self._queue += self.sync.gap(lost)
            for i in range(self.nr):
                self.consume(i, n_in)
            self._report()
        L = self.layout.length
        n = min(len(self._queue), len(output_items[0]) // L)
        if n == 0:
            return 0
        w0 = self.nitems_written(0)
        frames = self._queue[:n]
        block = np.stack([f.symbols for f in frames], axis=1).reshape(self.nr, n * L)  # one write per output
        for k, out in enumerate(output_items):
            out[:n * L] = block[k]
        keys, port = self._keys, self._port
        for i, f in enumerate(frames):
            values = (pmt.from_long(f.number), pmt.from_double(f.cfo * self.samp_rate), pmt.from_double(f.start),
                      pmt.from_double(f.metric),
                      pmt.init_f32vector(len(f.user_cfo), (f.user_cfo * self.samp_rate).tolist()))
            offset = w0 + i * L
            for k in range(self.nr):
                for key, value in zip(keys, values):
                    self.add_item_tag(k, offset, key, value)
            d = {"frame": int(f.number), "timing": float(f.start), "cfo_hz": float(f.cfo * self.samp_rate),
                 "metric": float(f.metric), "correlation": float(f.correlation),
                 "user_cfo_hz": [float(v) for v in f.user_cfo * self.samp_rate]}
            self._history.append(d)
            self._check_user_cfo(f.user_cfo)
            self.message_port_pub(port, pmt.to_pmt(d))
        self._queue = self._queue[n:]
        return n * L

    def _check_user_cfo(self, user_cfo: np.ndarray) -> None:
        """Warn (once) when the users' CFOs, averaged over the last frames, differ by more than a
        frame tolerates *and* by more than the estimates' noise explains (5 standard errors: the
        per-frame estimates are noisy, ~1e-4 cycles per symbol at 10 dB, more than a long frame
        tolerates). Only the common CFO is removed, so the others turn each user's symbols within
        the frame while the detectors use one channel estimate for the whole frame."""
        u = np.asarray(user_cfo, dtype=np.float64)
        if len(self._user_cfo) == USER_CFO_FRAMES:
            old = self._user_cfo[0]
            self._user_cfo_sum -= old
            self._user_cfo_sq -= old * old
        self._user_cfo.append(u)
        self._user_cfo_sum += u
        self._user_cfo_sq += u * u
        n = len(self._user_cfo)
        if n < USER_CFO_FRAMES:
            return
        mean = self._user_cfo_sum / n
        var = np.maximum(self._user_cfo_sq / n - mean * mean, 0.0) * n / (n - 1)
        hi, lo = int(np.argmax(mean)), int(np.argmin(mean))
        spread = float(mean[hi] - mean[lo])
        noise = 5.0 * float(np.sqrt((var[hi] + var[lo]) / n))
        if spread > max(self._user_cfo_limit, noise):
            self.failures.report("user-cfo-spread", f"{self.name()}: the users' CFOs differ by {spread * self.samp_rate:.0f} "
                                 f"Hz (tolerable for this frame length: {self._user_cfo_limit * self.samp_rate:.0f} Hz): "
                                 "only the common CFO is removed; expect errors growing along each frame (lock the "
                                 "users' oscillators to a common reference or shorten the frames)")

    def _report(self) -> None:
        if self.sync.diagnosis is not None and "no-preamble" not in self._reported:
            self._reported["no-preamble"] = 1
            self.logger.warn(f"{self.name()}: {self.sync.diagnosis}")
        for kind, text in _EVENTS.items():
            count = self.sync.counts.get(kind, 0)
            if count > self._reported.get(kind, 0):
                if kind not in self._reported:
                    self.logger.warn(f"{self.name()}: {text} (logged once; counted in problems())")
                self._reported[kind] = count

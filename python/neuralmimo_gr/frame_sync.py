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
from .tags import CFO, FRAME_START, RX_TIME, SYNC_METRIC, TIMING, USER_CFO, USER_PHASE, rx_time_value, user_phase_to_pmt
from .pulse_shaping import rrc_taps

SYNC_PORT = "sync"
PENDING_FRAMES = 64  # frames held for output before input is no longer taken (backpressure)
HISTORY = 100_000  # sync dicts kept for history()

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
    "cycle-slip": "the phase tracker had slipped by a quarter turn or more between two tracking pilots (strong phase "
                  "noise or a residual CFO): the pilots re-anchored it; only the vectors between them may carry errors",
    "cfo-branch": "the coarse CFO estimate picked the wrong branch of the fine one; the known preamble's correlation "
                  "corrected it",
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
    * ``coarse_period > 0`` (the transmitter's version-2 preamble, ``neuralmimo.receiver.preamble``):
      CFOs up to ``1 / (2 coarse_period)`` of the symbol rate (12.5 % for 4) instead of
      ``1 / (2 preamble_period)``;
    * ``track_phase``: a decision-directed tracker follows the residual phase (CFO error, phase
      noise) through the data, per vector; ``pilot_spacing > 0`` (the transmitter's tracking pilots,
      ``neuralmimo.receiver.tracking``): anchored at a known vector every ``pilot_spacing`` data
      vectors, so a cycle slip is caught and undone (``cycle-slip``); the tracking pilots are removed;
    * a frame is handed out only once the next preamble is found where the frame length puts it
      (one frame of latency); lost or inserted samples make it a ``slip``: dropped, never cut wrongly;
    * ``rx_time`` tags (``uhd_usrp_source``: start, and after every overflow) tell how many samples
      were lost: the frame around the gap is dropped, the search starts again, and frames keep the
      numbers of the timeline (frame ``n`` starts ``n`` frame lengths after ``origin``, the sample
      where frame 0 starts; default ``span * sps``, the filters' delay, for a transmitter that starts
      with the receiver);
    * per-user CFO (separate user oscillators) is measured from each user's preamble (``user_cfo``)
      and, along the frame, by the tracker: only the common CFO can be derotated on the receive
      streams, so each user's residual rotation, averaged over frames and applied once significant,
      is tagged (``user_phase``) and removed by the linear and neural detectors downstream.

    Tags at each frame's first output vector (on every output): ``frame_start`` (number), ``cfo``
    (Hz at ``samp_rate``), ``timing`` (fractional input sample of the preamble start),
    ``sync_metric``, ``user_cfo`` (Hz, one per user) and, when nonzero, ``user_phase``. Problems are
    logged once per kind and counted (:meth:`problems`); :meth:`state` is ``searching``, ``found``
    or ``locked``. Message port ``sync``: one dict per frame (frame, timing, cfo_hz, metric,
    correlation, user_cfo_hz, slips, user_rate: rad per data vector, phase_noise: rad^2 per vector).
    """

    def __init__(self, nr: int = 4, nt: int = 2, n_pilots: int = 16, n_data: int = 256, modulation: str = "qpsk",
                 preamble_period: int = 16, sps: int = 4, rolloff: float = 0.35, span: int = 8, pfa: float = 1e-4,
                 track_phase: bool = True, samp_rate: float = 1e6, origin: float = -1.0, coarse_period: int = 0,
                 pilot_spacing: int = 0):
        self.layout = FrameLayout(int(nt), int(n_pilots), int(n_data))
        check_all(PARAMS, dict(nr=nr, sps=sps, pfa=pfa, preamble_period=preamble_period, span=span, rolloff=rolloff,
                               samp_rate=samp_rate, coarse_period=coarse_period, pilot_spacing=pilot_spacing,
                               **({} if origin < 0 else {"origin": origin})))
        taps = np.asarray(rrc_taps(sps, rolloff, span))
        self.preamble = Preamble(int(nt), int(preamble_period), coarse_period=int(coarse_period))
        self.constellation = Constellation(modulation)
        self.samp_rate, self.nr = float(samp_rate), int(nr)
        self.sync = FrameSynchronizer(self.nr, self.layout, self.preamble, int(sps), taps, pfa=pfa,
                                      origin=float(span * sps) if origin < 0 else float(origin),
                                      constellation=self.constellation if track_phase else None,
                                      pilot_spacing=int(pilot_spacing))
        gr.basic_block.__init__(self, name="frame_sync", in_sig=[np.complex64] * self.nr,
                                out_sig=[np.complex64] * self.nr)
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.set_output_multiple(self.layout.length)
        self._port = pmt.intern(SYNC_PORT)
        self.message_port_register_out(self._port)
        self._keys = tuple(pmt.intern(k) for k in (FRAME_START, CFO, TIMING, SYNC_METRIC, USER_CFO))
        self._user_phase_key = pmt.intern(USER_PHASE)
        self.failures = FailureLog(self.logger)
        self._queue: list = []  # frames waiting for output space
        self._time_ref = None  # (stream offset + lost, rx_time) of the first rx_time tag
        self._time_done = -1
        self._reported: dict[str, int] = {}
        self._history: deque = deque(maxlen=HISTORY)
        self._user_phase_noted = False
        self._sps = int(sps)
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
            rate = np.asarray(f.user_rate, dtype=np.float64)
            tags = list(zip(keys, values))
            if rate.size and rate.any():  # user k of data vector d turned by r_k (Np + d - (Np - 1) / 2)
                tags.append((self._user_phase_key, user_phase_to_pmt(rate * (self.layout.n_pilots + 1) / 2, rate)))
            for k in range(self.nr):
                for key, value in tags:
                    self.add_item_tag(k, offset, key, value)
            d = {"frame": int(f.number), "timing": float(f.start), "cfo_hz": float(f.cfo * self.samp_rate),
                 "metric": float(f.metric), "correlation": float(f.correlation),
                 "user_cfo_hz": [float(v) for v in f.user_cfo * self.samp_rate], "slips": int(f.slips),
                 "user_rate": [float(v) for v in rate], "phase_noise": self.sync.phase_noise}
            self._history.append(d)
            self._note_user_phase(rate)
            self.message_port_pub(port, pmt.to_pmt(d))
        self._queue = self._queue[n:]
        return n * L

    def _note_user_phase(self, rate: np.ndarray) -> None:
        """Say once that the users' rotations are tracked apart (separate user oscillators)."""
        if rate.size and rate.any() and not self._user_phase_noted:
            self._user_phase_noted = True
            spread = float(rate.max() - rate.min()) / (2 * np.pi) * self.samp_rate / self._sps
            self.logger.info(f"{self.name()}: the users' rotations differ by {spread:.0f} Hz (separate oscillators): "
                             "each user's is tracked and tagged (user_phase); the linear and neural detectors remove it")

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

"""Neural MIMO detector with hot-swappable model bundles: ``Nr`` streams in, ``Nt`` symbol streams out.

The block is ports, tags, status messages and streaming; the model life cycle (loading, swaps at
frame boundaries, probation, reverts, the complexity dial, the watch folder) is
:class:`neuralmimo.detectors.hotswap.ModelSwitch`, the drift monitor and channel-family check
:class:`neuralmimo.site.drift.DriftWatch`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pmt
import torch
from gnuradio import gr

from neuralmimo.constellation import Constellation
from neuralmimo.detectors import SystemSpec
from neuralmimo.detectors.hotswap import ModelSwitch, check_complexity
from neuralmimo.detectors.hotswap import model_candidates as _candidates
from neuralmimo.detectors.hotswap import resolve_model_path as _resolve
from neuralmimo.site.drift import DriftWatch

from ._common import EstimateTags, FailureLog, UserPhase, big_buffers, detect_groups, frame_segments, guarded_work
from ._common import mark_stale, write_streams
from ._paths import MODELS_DIR
from .tags import DETECTOR, FRAME_START, MODEL, N_USERS, tag_int

USER_PHASE_CHUNK = 16  # vectors per channel rotation when users turn apart (0.05 rad at 3e-3 rad per vector)

_PORT_MODEL = pmt.intern("model")
_PORT_STATUS = pmt.intern("status")
INITIAL_LOAD_TIMEOUT_S = 30.0


def model_candidates(path: str) -> list[Path]:
    """Where a model path is looked for (:func:`neuralmimo.detectors.hotswap.model_candidates`),
    ending in the installed models folder ``<prefix>/share/gr-neuralmimo/models``."""
    return _candidates(path, MODELS_DIR)


def resolve_model_path(path: str) -> Path | None:
    """The folder of the bundle ``path`` names (:func:`model_candidates`), or ``None``."""
    return _resolve(path, MODELS_DIR)


class neural_detector(gr.sync_block):
    """Detect each frame with a neural model loaded from a bundle (``neuralmimo.detectors``).

    Inputs: ``nr`` complex streams of data vectors with the :class:`ls_channel_estimator`'s
    ``frame_start``/``csi``/``noise_var`` tags at each frame's first data vector, and optionally
    an ``n_users`` tag there (frames with fewer active users, hypernetwork-DeepSIC). Outputs:
    ``nt`` complex streams of symbol estimates (absent users 0); with ``llr_output`` a float
    stream of ``nt * bits_per_symbol``-vectors of bit LLRs (user-major, positive favours bit 1).
    Every input tag is passed to every output. ``torch_threads`` (default 1) sets torch's thread
    count in the block's streaming thread.

    Models (anything in ``neuralmimo.detectors.REGISTRY``): ``model`` at construction (waited for
    in ``start()``, so in force from the first frame; a relative path is looked for in the
    working directory, next to the flowgraph, then among the installed models), ``set_model``
    (GRC callback), the ``model`` message port (a path, or a dict with ``path`` and ``sha256``)
    and new bundle folders in ``watch_dir``. Each is loaded and validated off the streaming
    thread and swapped in at the next frame boundary, marked by a ``model`` tag (architecture,
    sha256, path, options). The ``status`` port reports ``loaded``, ``swapped`` (``offset``,
    ``frame``), ``refused`` (``reason``), ``superseded``, ``reverted`` (a new model failing
    within its first frames, or ``max_slowdown`` times slower), ``drift``/``drift-back``/
    ``drift-monitor`` (``drift_window``, ``drift_threshold``: :class:`~neuralmimo.site.drift.DriftWatch`)
    and ``channel-family``. Rules and events: :mod:`neuralmimo.detectors.hotswap`.

    Operating envelope: a bundle whose manifest carries one (``neuralmimo bundle envelope``) is
    used only inside it; each frame whose operating point -- SNR estimated from its ``csi`` and
    ``noise_var``, and its ``n_users`` (:mod:`neuralmimo.envelope`) -- lies outside is detected
    with MMSE (``fallback``, default on; :meth:`set_fallback`). A change between the model and
    MMSE is tagged ``detector`` (``mmse``, or the model's architecture when it takes over again)
    at the frame's first vector and reported once on ``status`` (``fallback`` / ``fallback-end``
    with the frame, the estimated SNR and the user count); :attr:`fallback_frames` counts the
    frames MMSE detected.

    Complexity dial (DetNet/WeSNet [WS]): ``keep`` in ``(0, 1]`` and ``layers`` (0: all) at
    construction and through :meth:`set_complexity`; put in force at a frame boundary like a swap.

    Separate user oscillators: with a ``user_phase`` tag (``frame_sync``, through the estimator)
    the model sees the column-rotated channel ``H diag(exp(j (p_k + r_k d)))`` per chunk of
    ``USER_PHASE_CHUNK`` vectors (``d`` the chunk's middle): a nonlinear detector cannot be handed
    derotated streams, the users' symbols are mixed at the antennas.

    Bad input as in the linear detector: malformed or degenerate ``csi``/``noise_var`` keep the
    last good values (``csi_stale``), NaN/Inf vectors are zeroed, vectors before the first
    estimate or model come out 0; a frame on which the model raises is retried alone and output
    as 0 (``frame-failed``, :attr:`failed_frames`); each logged once and counted in :meth:`problems`.
    """

    def __init__(self, nr: int = 12, nt: int = 8, modulation: str = "bpsk", model: str = "", watch_dir: str = "",
                 watch_interval_s: float = 1.0, torch_threads: int = 1, llr_output: bool = False,
                 max_slowdown: float = 50.0, keep: float = 1.0, layers: int = 0, drift_window: int = 256,
                 drift_threshold: float = 0.2, fallback: bool = True):
        if nr < 1 or nt < 1 or nt > nr:
            raise ValueError(f"neural detection needs 1 <= nt <= nr, got nr={nr}, nt={nt}")
        if torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {torch_threads}")
        self.torch_threads = int(torch_threads)  # of this block's streaming thread (see _common.guarded_work)
        self.nr, self.nt, self.llr_output = int(nr), int(nt), bool(llr_output)
        self.system = SystemSpec(self.nr, self.nt, modulation)
        self.bits_per_symbol = Constellation(modulation).bits_per_symbol
        out_sig = [np.complex64] * self.nt
        if self.llr_output:
            out_sig.append((np.float32, self.nt * self.bits_per_symbol))
        gr.sync_block.__init__(self, name="neural_detector", in_sig=[np.complex64] * nr, out_sig=out_sig)
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)
        self._started = False
        self._early_status: list[dict] = []
        self.drift_watch = DriftWatch(self.nt, drift_window, drift_threshold, emit=self._status,
                                warn=lambda text: self.logger.warn(f"{self.name()}: {text}"),
                                problem=lambda kind, text: self.failures.report(kind, f"{self.name()}: {text}"))
        self.switch = ModelSwitch(self.system, models_dir=MODELS_DIR, complexity=check_complexity(keep, layers),
                                  max_slowdown=max_slowdown, watch_dir=watch_dir, watch_interval_s=watch_interval_s,
                                  emit=self._status, log=lambda level, text: getattr(self.logger, level)(text))
        self.failed_frames: list[int | None] = []  # numbers of the frames a model failed on (output 0)
        self._estimate = EstimateTags(self, self.nr, self.nt, noise_floor=0.0)  # DeepSIC divides by sqrt(nv)
        self._user_phase = UserPhase(self, self.nt)
        self._n_users: int | None = None
        self._frame_number: int | None = None
        self._fallback_enabled = bool(fallback)
        self._on_mmse = False  # the frame in progress is detected by the MMSE fallback
        self.fallback_frames = 0
        self.fallback_events: list[dict] = []
        big_buffers(self)
        self.message_port_register_in(_PORT_MODEL)
        self.message_port_register_out(_PORT_STATUS)
        self.set_msg_handler(_PORT_MODEL, self._on_model_message)
        if watch_dir and not Path(watch_dir).is_dir():
            self.logger.warn(f"watch_dir {watch_dir} does not exist (yet): new bundle folders are picked up once "
                             "it does")
        self.switch.start()  # loading the initial model overlaps the rest of the flowgraph's set-up
        self._initial_model = str(model or "")
        if model:
            self.set_model(model)

    # ----------------------------------------------------------------- runtime control
    def set_model(self, path: str, sha256: str | None = None) -> None:
        """Request a bundle (loaded off the streaming thread, applied at the next frame boundary)."""
        self.switch.request(path, sha256)

    def set_complexity(self, keep: float, layers: int = 0) -> None:
        """Request a kept fraction and a depth; in force from the next frame boundary. A bad value
        is logged and refused (``refused`` on ``status``); the running setting stays."""
        self.switch.set_complexity(keep, layers)

    def set_fallback(self, enabled: bool) -> None:
        """Turn the MMSE fallback outside a bundle's operating envelope on or off (from the next
        frame boundary; GRC callback)."""
        self._fallback_enabled = bool(enabled)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until every requested bundle has been loaded or refused (for scripts and tests)."""
        return self.switch.wait_idle(timeout_s)

    def model_info(self) -> dict | None:
        """What is in force: architecture, sha256, path, nr, nt, modulation (None before the first)."""
        det = self.switch.active
        return None if det is None else det.describe()

    def drift(self) -> dict | None:
        """The drift monitor's state, or ``None`` when the model in force carries no statistics."""
        return self.drift_watch.state()

    @property
    def drift_events(self) -> list[dict]:
        return self.drift_watch.events

    @property
    def swaps(self) -> list[dict]:
        return self.switch.swaps

    @property
    def refusals(self) -> list[dict]:
        return self.switch.refusals

    @property
    def reverts(self) -> list[dict]:
        return self.switch.reverts

    def problems(self) -> dict[str, int]:
        """Every counted problem: the streaming thread's (per kind) and the loader's and watcher's
        internal errors (``thread-error:<thread>: <type>``; the threads go on)."""
        return {**self.failures.counts, **{f"thread-error:{k}": v for k, v in self.switch.thread_errors.items()}}

    def _on_model_message(self, msg) -> None:
        try:
            if pmt.is_symbol(msg):
                self.set_model(pmt.symbol_to_string(msg))
                return
            value = pmt.to_python(msg)
            if isinstance(value, (str, bytes)):
                self.set_model(value.decode() if isinstance(value, bytes) else value)
            elif isinstance(value, dict) and isinstance(value.get("path"), str):
                sha = value.get("sha256")
                if sha is not None and not isinstance(sha, str):
                    raise ValueError(f"sha256 must be a string of 64 hex digits, got {sha!r}")
                self.set_model(value["path"], sha)
            else:
                raise ValueError(f"expected a path or a dict with 'path' (and 'sha256'), got {value!r}")
        except Exception as exc:  # noqa: BLE001 - a bad message must not reach the scheduler
            self.switch.refuse("", f"bad model message: {exc}")

    def _status(self, info: dict) -> None:
        if not self._started:  # a message published before start() reaches nobody
            self._early_status.append(info)
            return
        self.message_port_pub(_PORT_STATUS, pmt.to_pmt(info))

    def start(self):
        self.switch.start()  # a stopped flowgraph may be started again
        if self._initial_model and not self.wait_idle(INITIAL_LOAD_TIMEOUT_S):
            self.logger.error(f"the initial model {self._initial_model} did not load within "
                              f"{INITIAL_LOAD_TIMEOUT_S:.0f} s; frames before it output 0")
        self._started = True
        for info in self._early_status:
            self.message_port_pub(_PORT_STATUS, pmt.to_pmt(info))
        self._early_status.clear()
        return True

    def stop(self):
        """The flowgraph stops (GRC never calls :meth:`close`): end the loader and watcher
        threads; requests made while stopped are served when it starts again."""
        self.switch.stop()
        self._started = False
        return True

    def close(self) -> None:
        """End the loader and watcher threads (scripts that never run the flowgraph)."""
        self.switch.stop()

    # ----------------------------------------------------------------- streaming
    def _tag_model(self, offset: int, det) -> None:
        d = det.describe()
        value = pmt.to_pmt({"architecture": d["architecture"], "sha256": d["sha256"], "path": d["path"],
                            "options": d["options"]})
        for k in range(self.nt + self.llr_output):
            self.add_item_tag(k, offset, pmt.intern(MODEL), value)

    def _frame_boundary(self, tags: list, offset: int) -> None:
        """State changes at a frame's first vector: pending model, CSI, noise variance, users."""
        self._n_users = None
        h_before = self._estimate.h
        mark_stale(self, tags, self._estimate.apply(tags), offset, self.nt + self.llr_output)
        self._user_phase.boundary(tags)
        for t in tags:
            key = pmt.symbol_to_string(t.key)
            if key == FRAME_START:
                self._frame_number = tag_int(t.value)
            elif key == N_USERS:
                k = tag_int(t.value)
                if k is None or not 1 <= k <= self.nt:
                    self.failures.report("bad-n-users", f"{self.name()}: n_users tag {t.value} outside 1..{self.nt}; "
                                         f"using all {self.nt} streams")
                else:
                    self._n_users = k
        swapped = self.switch.boundary(offset=int(offset), frame=self._frame_number)
        if swapped is not None:
            self._tag_model(offset, swapped)
            self.drift_watch.new_model(swapped)
        if self._estimate.h is not h_before:  # this frame's estimate was accepted
            self.drift_watch.frame(self._estimate.h, frame=self._frame_number, offset=int(offset))
        self._choose_detector(offset)

    def _choose_detector(self, offset: int) -> None:
        """The model or the MMSE fallback for the frame starting at ``offset`` (its operating point
        against the envelope of the model in force); a change is tagged and reported once."""
        det, est = self.switch.active, self._estimate
        if det is None or est.h is None:
            return
        snr, k = float("nan"), self._n_users or self.nt
        on_mmse = False
        if self._fallback_enabled and det.fallback:
            on_mmse, snr = det.outside_envelope_one(est.h, est.noise_var, k)
        if on_mmse != self._on_mmse:
            self._on_mmse = on_mmse
            name = "mmse" if on_mmse else det.architecture
            for port in range(self.nt + self.llr_output):
                self.add_item_tag(port, offset, pmt.intern(DETECTOR), pmt.intern(name))
            info = {"event": "fallback" if on_mmse else "fallback-end", "frame": self._frame_number,
                    "offset": int(offset), "snr_db": round(snr, 2) if snr == snr else None, "n_users": k,
                    "path": det.describe()["path"], "envelope": det.envelope.describe() if det.envelope else None}
            self.fallback_events.append(info)
            self.logger.info(f"{self.name()}: frame {self._frame_number}: " + (
                f"SNR {snr:.1f} dB with {k} users is outside the model's envelope: MMSE detects"
                if on_mmse else "back inside the model's envelope: the model detects"))
            self._status(info)
        self.fallback_frames += on_mmse

    @guarded_work("zeros")
    def work(self, input_items, output_items):
        n = len(output_items[0])
        y_all, segments = frame_segments(self, input_items, len(output_items))
        # segments between frame boundaries; equal-length segments of one model run batched
        groups: dict[tuple[int, int], list] = {}
        numbers: dict[int, int | None] = {}  # first column of a segment -> its frame number
        est = self._estimate
        for a, b, offset, boundary_tags in segments:
            if boundary_tags:
                self._frame_boundary(boundary_tags, offset)
            active = self.switch.active
            if active is None:
                self.failures.report("no-model", f"{self.name()}: no model loaded yet: output is 0")
                continue
            rotation = self._user_phase.segment(b - a)
            if est.h is None:
                self.failures.report("no-csi", f"{self.name()}: no channel estimate yet (no csi tag): output is 0")
                continue
            key = "mmse" if self._on_mmse else id(active)
            k = self._n_users or self.nt
            if rotation is None:
                groups.setdefault((b - a, key), []).append((a, (active, est.h, est.noise_var, k)))
            else:
                # separate user oscillators: a nonlinear detector sees the column-rotated channel H D,
                # per chunk of USER_PHASE_CHUNK vectors (D at the chunk's middle)
                for c in range(a, b, USER_PHASE_CHUNK):
                    e = min(c + USER_PHASE_CHUNK, b)
                    d = torch.from_numpy(np.exp(1j * rotation[:, (c + e - 1) // 2 - a]).astype(np.complex64))
                    groups.setdefault((e - c, key), []).append((c, (active, est.h * d[None, :], est.noise_var, k)))
                    numbers[c] = self._frame_number
            numbers[a] = self._frame_number

        def detect(y, states, key):
            h = torch.stack([st[1] for st in states])
            nv = torch.tensor([st[2] for st in states], dtype=torch.float32)
            if key == "mmse":  # outside the envelope (not timed as the model's work)
                return states[0][0].detect_mmse(y, h, nv.double(), [st[3] for st in states], self.llr_output)
            return self.switch.detect(states[0][0], y, h, nv, [st[3] for st in states], self.llr_output)

        llr_width = self.nt * self.bits_per_symbol if self.llr_output else 0
        x_all, llr_all, failed = detect_groups(self, y_all, groups, detect, self.nt, llr_width)

        def redetect(redo):
            x_re, llr_re, failed_re = detect_groups(self, y_all, redo, detect, self.nt, llr_width)
            for (length, _), segs in redo.items():
                for a, _ in segs:
                    x_all[:, a:a + length] = x_re[:, a:a + length]
                    if llr_all is not None:
                        llr_all[a:a + length] = llr_re[a:a + length]
            return failed_re

        failed, model_tags = self.switch.end_of_call(groups, failed, redetect)
        for column, det in model_tags:
            self._tag_model(self.nitems_written(0) + column, det)
        self.failed_frames.extend(numbers.get(a) for _, _, a in failed)
        write_streams(output_items[: self.nt], x_all)
        if llr_all is not None:
            output_items[self.nt][:n] = llr_all.numpy()
        return n

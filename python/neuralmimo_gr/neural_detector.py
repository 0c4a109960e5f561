"""Neural MIMO detector with hot-swappable model bundles: ``Nr`` streams in, ``Nt`` symbol streams out."""

from __future__ import annotations

import datetime as _dt
import queue
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pmt
import torch
from gnuradio import gr

from neuralmimo.bundle import MANIFEST, BundleError
from neuralmimo.constellation import Constellation
from neuralmimo.detectors import SystemSpec, load_detector
from neuralmimo.site.drift import REAL_CHANNEL_TOLERANCE, DriftMonitor, imaginary_fraction, parse_statistics

from ._common import (EstimateTags, FailureLog, big_buffers, detect_groups, frame_segments, guarded_work, mark_stale,
                      write_streams)
from .tags import FRAME_START, MODEL, N_USERS, tag_int
from ._paths import MODELS_DIR

_PORT_MODEL = pmt.intern("model")
INITIAL_LOAD_TIMEOUT_S = 30.0
MIN_WATCH_INTERVAL_S = 0.05  # the watcher polls the folder; 0 would be a busy loop
PROBATION_FRAMES = 16  # a new model that fails within its first frames is reverted
_PORT_STATUS = pmt.intern("status")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def model_candidates(path: str) -> list[Path]:
    """Where a model path is looked for, in order: an absolute path as it is; a relative one in
    the working directory, next to the running flowgraph (the script GRC generated, which GRC
    runs from the flowgraph's folder) and in the installed models folder
    (``<prefix>/share/gr-neuralmimo/models``, where ``cmake --install`` puts the shipped bundles)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return [p]
    out = [Path.cwd() / p]
    script = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None
    if script is not None and script != Path.cwd():
        out.append(script / p)
    out.append(MODELS_DIR / p)
    return out


def resolve_model_path(path: str) -> Path | None:
    """The first of :func:`model_candidates` that holds a bundle, as an absolute path, or ``None``."""
    for c in model_candidates(path):
        folder = c.parent if c.name == MANIFEST else c
        if (folder / MANIFEST).is_file():
            return folder.resolve()
    return None


class neural_detector(gr.sync_block):
    """Detect each frame with a neural model loaded from a bundle (``neuralmimo.detectors``).

    Inputs: ``nr`` complex streams of data vectors with the :class:`ls_channel_estimator`'s
    ``frame_start``/``csi``/``noise_var`` tags at each frame's first data vector, and optionally
    an ``n_users`` tag there (frames with fewer active users, hypernetwork-DeepSIC). Outputs:
    ``nt`` complex streams of symbol estimates (SDNet: its refined estimate; DeepSIC: the MAP
    constellation point; absent users 0). Every input tag is passed to every output.

    Models (SDNet, hypernetwork-DeepSIC, anything in ``neuralmimo.detectors.REGISTRY``):

    * ``model`` (constructor / GRC parameter): bundle loaded at start. A relative path is looked
      for in the working directory, next to the running flowgraph, then in the installed models
      folder (:func:`model_candidates`; a shipped bundle can be named by its folder name, e.g.
      ``hypernet-deepsic-sed-n12``); the ``loaded`` status and the log give the full path used;
    * ``set_model(path)`` (GRC callback), the ``model`` message port (a path as symbol/string,
      or a dict with ``path`` and optionally ``sha256``) and, if ``watch_dir`` is set, any new
      bundle folder appearing there request a new model.

    A request is loaded, validated and run on one dummy frame by a background thread (never the
    streaming thread; a model given at construction is waited for in ``start()``, so it is in force
    from the first frame) and
    applied at the next frame boundary, so a frame is never split between models and no vector
    is dropped or repeated; a ``model`` tag (dict: architecture, sha256, path) marks the first
    vector each new model produced. The ``status`` port reports each event as a dict: ``loaded``
    (validated, waiting for a frame boundary), ``swapped`` (in force from ``offset``, frame
    ``frame``) and ``refused`` (``reason``: unknown architecture, shape/system mismatch, sha256,
    truncated or non-safetensors weights, NaN/Inf...). A refused bundle leaves the running model
    in place.

    ``llr_output`` adds a float stream of ``nt * bits_per_symbol``-vectors of bit LLRs (user-major,
    positive favours bit 1): DeepSIC's exact posterior LLRs; for SDNet max-log LLRs around its
    estimate with ZF's effective noise variance (an approximation). ``torch_threads`` (default 1)
    sets torch's thread count in the block's streaming thread.

    Bad input as in the linear detector: malformed or degenerate ``csi``/``noise_var`` keep the
    last good values (the frame is tagged ``csi_stale`` and counted), NaN/Inf vectors are
    zeroed, vectors before the first estimate or model come out 0; each logged once and counted
    in :meth:`problems`. A frame on which the model raises is retried alone and output as 0
    (``frame-failed``; its number in :attr:`failed_frames`). A new model that raises within its
    first ``PROBATION_FRAMES`` frames is reverted at once, and the frames it failed on are
    detected again by the model it replaced; one more than ``max_slowdown`` times slower per
    vector is reverted at the next frame boundary (``reverted`` on ``status``, :attr:`reverts`).

    Complexity dial (models with one: DetNet/WeSNet [WS]): ``keep`` (kept fraction of each
    layer's hidden units, ``(0, 1]``; above the fraction a model was trained with it runs at
    that one) and ``layers`` (layers run; 0: all) -- constructor/GRC parameters and
    :meth:`set_complexity` (GRC callback). A change is prepared off the streaming thread (the
    weights are sliced to the kept units, so fewer units cost fewer FLOPs) and put in force at
    the next frame boundary exactly like a model swap: ``swapped`` on ``status`` and a ``model``
    tag, both with the ``options`` in force. It also applies to every model loaded later.

    Drift monitor (site adaptation, :mod:`neuralmimo.site.drift`): when the model in force carries the
    channel statistics it was trained on (``training.channel_stats``, written by the lab's
    pipelines), every accepted frame estimate updates running statistics over ``drift_window``
    frames, compared with them. :meth:`drift` gives the correlation matrix distance of the receive
    covariance and the largest per-user power change; ``drift`` on ``status`` (and one warning in
    the log) when either crosses ``drift_threshold`` / 6 dB, ``drift-back`` when both return below.
    A model without statistics (or with malformed ones: ``drift-monitor`` ``off`` on ``status``
    with the reason) runs without the monitor.
    """

    def __init__(self, nr: int = 12, nt: int = 8, modulation: str = "bpsk", model: str = "", watch_dir: str = "",
                 watch_interval_s: float = 1.0, torch_threads: int = 1, llr_output: bool = False,
                 max_slowdown: float = 50.0, keep: float = 1.0, layers: int = 0, drift_window: int = 256,
                 drift_threshold: float = 0.2):
        if nr < 1 or nt < 1 or nt > nr:
            raise ValueError(f"neural detection needs 1 <= nt <= nr, got nr={nr}, nt={nt}")
        if torch_threads < 1:
            raise ValueError(f"torch_threads must be >= 1, got {torch_threads}")
        if not max_slowdown > 1:
            raise ValueError(f"max_slowdown must be > 1, got {max_slowdown}")
        if drift_window < 1 or not 0 < drift_threshold < 1:
            raise ValueError(f"drift_window must be >= 1 and 0 < drift_threshold < 1, got {drift_window}, "
                             f"{drift_threshold}")
        self.drift_window, self.drift_threshold = int(drift_window), float(drift_threshold)
        self._monitor: DriftMonitor | None = None
        self._family_unchecked = False  # set at every swap: a real-channel model is checked once
        self.drift_events: list[dict] = []
        self.torch_threads = int(torch_threads)  # of this block's streaming thread (see _common.guarded_work)
        self.nr, self.nt, self.llr_output = int(nr), int(nt), bool(llr_output)
        self.system = SystemSpec(self.nr, self.nt, modulation)
        self.bits_per_symbol = Constellation(modulation).bits_per_symbol
        out_sig = [np.complex64] * self.nt
        if self.llr_output:
            out_sig.append((np.float32, self.nt * self.bits_per_symbol))
        gr.sync_block.__init__(self, name="neural_detector", in_sig=[np.complex64] * nr, out_sig=out_sig)
        self._lock = threading.Lock()
        self._active = None       # FrameDetector in force (streaming thread only)
        self._previous = None     # the one it replaced: what a failing new model reverts to
        self._predecessor: dict[int, object] = {}  # id(model) -> the model it replaced, for this call's models
        self._pending = None      # validated FrameDetector waiting for a frame boundary
        self._pending_revert = False  # the pending one is a revert (it does not become "previous")
        self._timing: dict[int, list] = {}  # id(detector) -> [frames, vectors, seconds]
        self._slowdown_checked: set[int] = set()  # models whose slowdown window is past
        self.max_slowdown = float(max_slowdown)
        self.reverts: list[dict] = []
        self.failed_frames: list[int | None] = []  # numbers of the frames a model failed on (output 0)
        self._estimate = EstimateTags(self, self.nr, self.nt, noise_floor=0.0)  # DeepSIC divides by sqrt(nv)
        self._n_users: int | None = None
        self._frame_number: int | None = None
        self.swaps: list[dict] = []
        self.refusals: list[dict] = []
        self._requests: queue.Queue = queue.Queue()
        self._threads_stop: threading.Event | None = None
        self._loader: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._early_status: list[dict] = []
        self._started = False
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)
        big_buffers(self)
        self.message_port_register_in(_PORT_MODEL)
        self.message_port_register_out(_PORT_STATUS)
        self.set_msg_handler(_PORT_MODEL, self._on_model_message)
        self.watch_dir = str(watch_dir or "")
        self.watch_interval_s = max(float(watch_interval_s), MIN_WATCH_INTERVAL_S)
        if self.watch_dir and not Path(self.watch_dir).is_dir():
            self.logger.warn(f"watch_dir {self.watch_dir} does not exist (yet): new bundle folders are picked up once "
                             "it does")
        self._start_threads()  # loading the initial model overlaps the rest of the flowgraph's set-up
        self._initial_model = str(model or "")
        self._complexity = self._check_complexity(keep, layers)
        if model:
            self.set_model(model)

    # ----------------------------------------------------------------- runtime control
    def set_model(self, path: str, sha256: str | None = None) -> None:
        """Request a bundle (loaded off the streaming thread, applied at the next frame boundary)."""
        if path:
            self._requests.put((str(path), sha256))

    @staticmethod
    def _check_complexity(keep, layers) -> tuple[float, int]:
        keep, layers = float(keep), int(layers)
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep must lie in (0, 1], got {keep}")
        if layers < 0:
            raise ValueError(f"layers must be >= 0 (0: all), got {layers}")
        return keep, layers

    def set_complexity(self, keep: float, layers: int = 0) -> None:
        """Request a kept fraction and a depth (class docstring); in force from the next frame
        boundary. A bad value is logged and refused (``refused`` on ``status``); the running
        setting stays."""
        try:
            request = self._check_complexity(keep, layers)
        except (TypeError, ValueError) as exc:
            self._refuse("", f"bad complexity setting: {exc}")
            return
        self._requests.put(("complexity", request))

    def _configured(self, det, setting: tuple[float, int]):
        """``det`` at ``setting`` (a new detector), or ``det`` itself if it has no dial;
        ``ValueError`` if the model cannot run at it (more layers than it has)."""
        keep, layers = setting
        if not hasattr(det, "configured"):
            return det
        trained = float(det.hyperparameters.get("keep", 1.0))
        return det.configured(keep=min(keep, trained), layers=layers)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until every requested bundle has been loaded or refused (for scripts and tests)."""
        self._start_threads()  # requests made while stopped are served now
        done = threading.Event()
        self._requests.put(done)
        return done.wait(timeout_s)

    def model_info(self) -> dict | None:
        """What is in force: architecture, sha256, path, nr, nt, modulation (None before the first)."""
        det = self._active
        return None if det is None else det.describe()

    def drift(self) -> dict | None:
        """The drift monitor's state (frames, distance, power change, drifting), or ``None``
        when the model in force carries no channel statistics."""
        m = self._monitor
        return None if m is None else m.state()

    def _check_family(self, offset: int) -> None:
        """Warn once per model (log + ``channel-family`` on ``status``) when a model trained for
        real-valued channels sees a complex channel estimate."""
        det = self._active
        if not det.real_channels_only:
            self._family_unchecked = False
            return
        frac = imaginary_fraction(self._estimate.h)
        if frac <= REAL_CHANNEL_TOLERANCE:
            return
        self._family_unchecked = False
        d = det.describe()
        channel = ((det.bundle.system.get("channel") or {}).get("name") if det.bundle is not None else None) or "?"
        msg = (f"{self.name()}: model {d['path'] or d['architecture']} was trained for real-valued channels "
               f"({channel}) and reads Re y only, but this channel estimate is complex ({100 * frac:.0f} % of its "
               "energy imaginary): expect an SER near 0.5; use a hypernet-deepsic-complex model")
        self.logger.warn(msg)
        self._status({"event": "channel-family", "trained_for": "real", "imaginary_fraction": frac,
                      "frame": self._frame_number, "offset": int(offset), "message": msg, "time": _now()})

    def _new_monitor(self, det) -> None:
        """A monitor against ``det``'s training statistics (streaming thread, at a swap)."""
        self._family_unchecked = True
        self._monitor = None
        bundle = getattr(det, "bundle", None)
        stats = ((bundle.manifest.get("training") or {}).get("channel_stats") if bundle is not None else None)
        if stats is None:
            return
        try:
            r, p = parse_statistics(stats, det.nr, det.nt)
            # a hypernetwork's nt is its K_max: the flowgraph's streams are its first self.nt users
            self._monitor = DriftMonitor((r, p[:self.nt]), self.drift_window, self.drift_threshold)
        except ValueError as exc:
            self.failures.report("bad-channel-stats", f"{self.name()}: {det.describe()['path']}: {exc}: the drift "
                                 "monitor is off for this model")
            self._status({"event": "drift-monitor", "state": "off", "reason": str(exc), "time": _now()})

    def _watch_drift(self, offset: int) -> None:
        try:
            event = self._monitor.update(self._estimate.h)
        except Exception as exc:  # noqa: BLE001 - the monitor must never cost a frame its detection
            self.failures.report("drift-monitor-failed", f"{self.name()}: the drift monitor failed "
                                 f"({type(exc).__name__}: {exc}); it is off for this model")
            self._status({"event": "drift-monitor", "state": "off", "reason": str(exc), "time": _now()})
            self._monitor = None
            return
        if event is None:
            return
        info = {"event": "drift" if event == "drift" else "drift-back", **self._monitor.state(),
                "frame": self._frame_number, "offset": int(offset), "time": _now()}
        self.drift_events.append(info)
        if event == "drift":
            self.logger.warn(f"{self.name()}: the channels drifted from the model's training statistics "
                             f"(covariance distance {info['distance']:.3f}, user power change "
                             f"{info['power_change_db']:.1f} dB over {self.drift_window} frames): consider "
                             "re-training on this site's channels")
        self._status(info)

    def problems(self) -> dict[str, int]:
        return dict(self.failures.counts)

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
            self._refuse("", f"bad model message: {exc}")

    # ----------------------------------------------------------------- background threads
    def _start_threads(self) -> None:
        """Start the loader (and the watcher) unless they run."""
        if self._loader is not None and self._loader.is_alive():
            return
        self._threads_stop = stop = threading.Event()
        self._loader = threading.Thread(target=self._load_loop, args=(stop,), name="neural_detector-loader",
                                        daemon=True)
        self._loader.start()
        if self.watch_dir:
            self._watcher = threading.Thread(target=self._watch_loop, args=(stop,), name="neural_detector-watch",
                                             daemon=True)
            self._watcher.start()

    def _stop_threads(self, timeout_s: float = 10.0) -> None:
        """End the loader (after the requests queued before this call) and the watcher."""
        if self._loader is None:
            return
        self._threads_stop.set()
        self._requests.put(None)
        for th in (self._loader, self._watcher):
            if th is not None:
                th.join(timeout_s)
        self._loader = self._watcher = None

    def _load_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            req = self._requests.get()
            if req is None:
                return
            if isinstance(req, threading.Event):
                req.set()
                continue
            if req[0] == "complexity":
                self._apply_complexity(req[1])
                continue
            path, sha = req
            resolved = resolve_model_path(path)
            if resolved is None:
                tried = ", ".join(str(c) for c in model_candidates(path))
                self._refuse(path, f"{path}: no such bundle (looked in {tried})")
                continue
            try:
                with torch.inference_mode():
                    det = load_detector(resolved, self.system, sha)
            except BundleError as exc:
                self._refuse(path, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - any failure to build is a refusal
                self._refuse(path, f"{path}: could not build the detector ({type(exc).__name__}: {exc})")
                continue
            try:
                det = self._configured(det, self._complexity)
            except ValueError as exc:
                self.logger.warn(f"{resolved}: the complexity setting {self._complexity} does not fit this model "
                                 f"({exc}); it runs at its trained setting")
            with self._lock:
                superseded, self._pending = self._pending, det
                was_revert, self._pending_revert = self._pending_revert, False
            if superseded is not None and not was_revert:  # loaded but never in force: a newer request came first
                self._status({"event": "superseded", **superseded.describe(), "by": str(resolved), "time": _now()})
            self.logger.info(f"loaded {det.architecture} model {resolved} (requested as {path})")
            self._status({"event": "loaded", **det.describe(), "time": _now()})

    def _apply_complexity(self, setting: tuple[float, int]) -> None:
        """Loader thread: the model that will be in force, re-sliced to ``setting``, becomes the
        pending one (a model waiting for its frame boundary is replaced by itself at the new
        setting, so the latest request wins). The setting also applies to models loaded later."""
        with self._lock:
            base = self._pending if self._pending is not None and not self._pending_revert else self._active
        if base is None:  # no model yet: applied when one loads
            self._complexity = setting
            return
        if not hasattr(base, "configured"):
            self._complexity = setting
            if setting != (1.0, 0):
                self.logger.warn(f"model {base.describe()['path']} ({base.architecture}) has no complexity dial: "
                                 f"keep={setting[0]:g}, layers={setting[1]} apply to dial models loaded later")
            return
        try:
            det = self._configured(base, setting)
        except ValueError as exc:
            self._refuse(str(base.describe()["path"]), f"complexity refused: {exc}")
            return
        self._complexity = setting
        with self._lock:
            self._pending, self._pending_revert = det, False
        self.logger.info(f"complexity {det.describe()['options']} prepared for {det.describe()['path']}")
        self._status({"event": "loaded", **det.describe(), "time": _now()})

    @staticmethod
    def _folder_state(folder: Path) -> tuple:
        """What changes when any file of a bundle folder changes (name, size, mtime of each)."""
        out = []
        for f in sorted(folder.iterdir()):
            try:
                st = f.stat()
            except OSError:
                continue
            out.append((f.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _watch_loop(self, stop: threading.Event) -> None:
        """Request a bundle folder of ``watch_dir`` whenever any of its files changes: a bundle
        copied in non-atomically (the manifest before the weights) is refused once, then requested
        again when its weights arrive."""
        seen: dict[str, tuple] = {}
        first = True
        while not stop.wait(0 if first else self.watch_interval_s):
            root = Path(self.watch_dir)
            found = {}
            for manifest in root.glob(f"*/{MANIFEST}") if root.is_dir() else []:
                try:
                    found[str(manifest.parent)] = self._folder_state(manifest.parent)
                except OSError:
                    continue
            changed = [p for p, st in found.items() if seen.get(p) != st]
            if changed and not first:  # bundles present at start are not swapped in by themselves
                newest = max(changed, key=lambda p: max((m for _, _, m in found[p]), default=0))
                self.set_model(newest)
            seen, first = found, False

    def _refuse(self, path: str, reason: str) -> None:
        self.logger.error(f"model refused, keeping the current one: {reason}")
        info = {"event": "refused", "path": path, "reason": reason, "time": _now()}
        self.refusals.append(info)
        self._status(info)

    def _status(self, info: dict) -> None:
        if not self._started:
            self._early_status.append(info)
            return
        self.message_port_pub(_PORT_STATUS, pmt.to_pmt(info))

    def start(self):
        self._start_threads()  # a stopped flowgraph may be started again
        # a model given at construction is in force from the first frame: wait (bounded) for its
        # loader to finish before the flowgraph streams; later requests are swapped in asynchronously
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
        self._stop_threads()
        self._started = False
        return True

    def close(self) -> None:
        """End the loader and watcher threads (scripts that never run the flowgraph)."""
        self._stop_threads()

    # ----------------------------------------------------------------- run-time failures
    def _check_slowdown(self) -> None:
        """A new model running more than ``max_slowdown`` times slower per vector than the model
        it replaced is replaced by that model from the next frame boundary on (``reverted``)."""
        det, previous = self._active, self._previous
        if det is None or previous is None:
            return
        frames, vectors, seconds = self._timing.get(id(det), (0, 0, 0.0))
        prev = self._timing.get(id(previous))
        if id(det) in self._slowdown_checked or not (prev and prev[1] and vectors and frames >= 4):
            return
        # checked after every call until its first 4 x PROBATION_FRAMES frames are past (one
        # call may jump past them all when a slow model lets the input pile up)
        if frames >= PROBATION_FRAMES * 4:
            self._slowdown_checked.add(id(det))
        slowdown = (seconds / vectors) / max(prev[2] / prev[1], 1e-12)
        if slowdown <= self.max_slowdown:
            return
        self._previous = None
        with self._lock:  # in force from the next frame boundary, unless a newer request is waiting
            if self._pending is None:
                self._pending, self._pending_revert = previous, True
        self._report_revert(det, previous, f"it runs {slowdown:.0f}x slower per vector than the model it replaced")

    def _report_revert(self, det, to, reason: str) -> None:
        d = det.describe()
        info = {"event": "reverted", "path": d["path"], "sha256": d["sha256"], "reason": reason,
                "to": to.describe()["path"], "time": _now()}
        self.logger.error(f"model {d['path']} reverted to {info['to']}: {reason}")
        self.reverts.append(info)
        self._status(info)

    def _revert_failed(self, groups: dict, failed: list, redetect) -> list:
        """A model in force for fewer than ``PROBATION_FRAMES`` frames that failed on a frame is
        replaced at once by the model it replaced, which detects again every frame the failing
        model had in this call from its first failure on (so none is lost; a ``model`` tag marks
        where); ``reverted`` on ``status``. ``redetect(groups)`` detects; returns the failures
        that remain (later failures of a model past probation are contained to their frames)."""
        for key in dict.fromkeys(k for k, _, _ in failed):
            errors = [exc for k, exc, _ in failed if k == key]
            pred = self._predecessor.get(key)
            if pred is None or self._timing.get(key, (0,))[0] >= PROBATION_FRAMES + len(errors):
                continue
            first = min(a for k, _, a in failed if k == key)
            redo: dict[tuple[int, int], list] = {}
            model = None
            for (length, k), segs in groups.items():
                for a, st in segs:
                    if k == key and a >= first:
                        model = st[0]
                        redo.setdefault((length, id(pred)), []).append((a, (pred, *st[1:])))
            failed = [f for f in failed if f[0] != key] + redetect(redo)
            self._tag_model(self.nitems_written(0) + first, pred)
            for k, before in list(self._predecessor.items()):  # a later model replaced the failing one
                if before is model:
                    self._predecessor[k] = pred
            if self._active is model:
                self._active, self._previous = pred, None
            elif self._previous is model:
                self._previous = pred
            self._report_revert(model, pred, f"it failed on a frame ({type(errors[0]).__name__}: {errors[0]})")
        return failed

    def _tag_model(self, offset: int, det) -> None:
        d = det.describe()
        value = pmt.to_pmt({"architecture": d["architecture"], "sha256": d["sha256"], "path": d["path"],
                            "options": d["options"]})
        for k in range(self.nt + self.llr_output):
            self.add_item_tag(k, offset, pmt.intern(MODEL), value)

    # ----------------------------------------------------------------- streaming
    def _frame_boundary(self, tags: list, offset: int) -> None:
        """State changes at a frame's first vector: pending model, CSI, noise variance, users."""
        self._n_users = None
        h_before = self._estimate.h
        mark_stale(self, tags, self._estimate.apply(tags), offset, self.nt + self.llr_output)
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
        with self._lock:
            pending, self._pending = self._pending, None
            revert, self._pending_revert = self._pending_revert, False
        if pending is not None:
            self._previous, self._active = (None if revert else self._active), pending
            if self._previous is not None:
                self._predecessor[id(pending)] = self._previous
            self._timing[id(pending)] = [0, 0, 0.0]  # its own probation (an id may be reused after a model is freed)
            self._slowdown_checked.discard(id(pending))
            self._tag_model(offset, pending)
            d = pending.describe()
            info = {"event": "swapped", **d, "offset": int(offset), "frame": self._frame_number, "time": _now()}
            self.swaps.append(info)
            self._status(info)
            self._new_monitor(pending)
        if self._estimate.h is not h_before:  # this frame's estimate was accepted
            if self._monitor is not None:
                self._watch_drift(offset)
            if self._family_unchecked and self._active is not None:
                try:
                    self._check_family(offset)
                except Exception as exc:  # noqa: BLE001 - a check must never cost a frame its detection
                    self._family_unchecked = False
                    self.failures.report("family-check-failed", f"{self.name()}: the channel-family check failed "
                                         f"({type(exc).__name__}: {exc})")

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
            if self._active is None:
                self.failures.report("no-model", f"{self.name()}: no model loaded yet: output is 0")
                continue
            if est.h is None:
                self.failures.report("no-csi", f"{self.name()}: no channel estimate yet (no csi tag): output is 0")
                continue
            groups.setdefault((b - a, id(self._active)), []).append(
                (a, (self._active, est.h, est.noise_var, self._n_users or self.nt)))
            numbers[a] = self._frame_number

        def detect(y, states, key):
            det = states[0][0]
            h = torch.stack([st[1] for st in states])
            nv = torch.tensor([st[2] for st in states], dtype=torch.float32)
            t0 = time.perf_counter()
            x, llr = det.detect_with_llr(y, h, nv, [st[3] for st in states], llr=self.llr_output)
            timing = self._timing.setdefault(key, [0, 0, 0.0])
            timing[0] += y.shape[0]
            timing[1] += y.shape[0] * y.shape[2]
            timing[2] += time.perf_counter() - t0
            return x, llr  # x: (S, Nt, length), llr: (S, length, Nt, B) user-major

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

        if failed:
            failed = self._revert_failed(groups, failed, redetect)
        self._check_slowdown()
        # only this call's models, the one in force and the one it replaced need their records
        # later (ids of freed models may be reused)
        live = {k for _, k in groups} | {id(self._active), id(self._previous)}
        self._predecessor = {k: v for k, v in self._predecessor.items() if k in live}
        self._timing = {k: v for k, v in self._timing.items() if k in live}
        self._slowdown_checked &= live
        self.failed_frames.extend(numbers.get(a) for _, _, a in failed)
        write_streams(output_items[: self.nt], x_all)
        if llr_all is not None:
            output_items[self.nt][:n] = llr_all.numpy()
        return n

"""Hot-swapping detection models at frame boundaries: :class:`ModelSwitch` (no GNU Radio).

The neural detector block is a thin adapter over this class (``gnuradio.neuralmimo.neural_detector``:
ports, tags, status messages, streaming); the model life cycle lives here, where it is tested
with fake detectors and a fake clock (``tests/core/detectors/qa_hotswap.py``):

* **Requests** (any thread): :meth:`ModelSwitch.request` (a bundle path, optionally its sha256),
  :meth:`ModelSwitch.set_complexity` (the complexity dial of DetNet/WeSNet [WS]) and, with a watch
  folder, every bundle folder whose files change there. A queue serves them in order; each is
  resolved (:func:`model_candidates`), loaded, validated and run on one dummy frame by the loader
  thread (``load``, by default :func:`~neuralmimo.detectors.registry.load_detector`), never by the
  streaming thread. A failure of any kind is a ``refused`` event; the thread lives on.
* **Pending -> active** at a frame boundary only (:meth:`ModelSwitch.boundary`): a frame is never
  split between models, no vector is dropped or repeated. A newer request replaces a pending
  model that never came into force (``superseded``): only the last of a burst wins.
* **Probation and revert**: a new model that fails on a frame within its first
  ``probation_frames`` frames is replaced at once by the model it replaced, which detects those
  frames again (:meth:`ModelSwitch.end_of_call`); one more than ``max_slowdown`` times slower per
  vector than its predecessor (timed with ``clock``) is reverted at the next frame boundary.
* **Events** go to ``emit(dict)`` (``loaded``, ``swapped``, ``refused``, ``superseded``,
  ``reverted``; each with ``time``), lines to ``log(level, text)`` with level ``info``, ``warn``
  or ``error``; :attr:`swaps`, :attr:`refusals` and :attr:`reverts` keep them for getters.
* :meth:`ModelSwitch.stop` joins every thread; requests made while stopped are served at the
  next :meth:`ModelSwitch.start`.

Threads: the loader and the watcher write only ``pending`` (under the lock); everything else is
the streaming thread's (``active``, ``previous``, timings), so :meth:`boundary`, :meth:`detect`
and :meth:`end_of_call` must be called from one thread.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import queue
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Callable

import torch

from ..bundle import MANIFEST, BundleError
from ..supervise import STOP, SupervisedThread

PROBATION_FRAMES = 16  # a new model that fails within its first frames is reverted
MIN_WATCH_INTERVAL_S = 0.05  # the watcher polls the folder; 0 would be a busy loop
SLOWDOWN_MIN_FRAMES = 4  # frames of a new model timed before its slowdown is judged


def now_iso() -> str:
    """The UTC time of an event, ISO 8601 with milliseconds."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def check_complexity(keep, layers) -> tuple[float, int]:
    """``(keep, layers)`` of the complexity dial [WS] as ``(float, int)``; ``ValueError`` unless
    ``0 < keep <= 1`` and ``layers >= 0`` (0: all layers)."""
    keep, layers = float(keep), int(layers)
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep must lie in (0, 1], got {keep}")
    if layers < 0:
        raise ValueError(f"layers must be >= 0 (0: all), got {layers}")
    return keep, layers


def model_candidates(path: str, models_dir: Path | None = None) -> list[Path]:
    """Where a model path is looked for, in order: an absolute path as it is; a relative one in
    the working directory, next to the running script (the one GRC generated, which GRC runs
    from the flowgraph's folder) and in ``models_dir`` (the installed models folder,
    ``<prefix>/share/gr-neuralmimo/models``, where ``cmake --install`` puts the shipped bundles)."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return [p]
    out = [Path.cwd() / p]
    script = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None
    if script is not None and script != Path.cwd():
        out.append(script / p)
    if models_dir is not None:
        out.append(Path(models_dir) / p)
    return out


def resolve_model_path(path: str, models_dir: Path | None = None) -> Path | None:
    """The first of :func:`model_candidates` that holds a bundle, as an absolute path, or ``None``.
    A candidate that cannot be examined (a name too long, a folder without permission) is
    skipped like a missing one."""
    for c in model_candidates(path, models_dir):
        try:
            folder = c.parent if c.name == MANIFEST else c
            if (folder / MANIFEST).is_file():
                return folder.resolve()
        except (OSError, ValueError):
            continue
    return None


def folder_state(folder: Path) -> tuple:
    """What changes when any file of a bundle folder changes: (name, size, mtime) of each."""
    out = []
    for f in sorted(folder.iterdir()):
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((f.name, st.st_size, st.st_mtime_ns))
    return tuple(out)


_RUNNING: "weakref.WeakSet[ModelSwitch]" = weakref.WeakSet()


@atexit.register
def _stop_all() -> None:
    """At interpreter exit, join the threads of every switch still running (a flowgraph whose
    construction failed half-way is never stopped): no thread outlives the objects it uses."""
    for switch in list(_RUNNING):
        switch.stop(timeout_s=2.0)


def _default_log(level: str, text: str) -> None:
    print(f"[{level}] {text}", file=sys.stderr)


class ModelSwitch:
    """Pending, active and previous models of one receiver, swapped at frame boundaries
    (module docstring).

    Parameters
    ----------
    system : :class:`~neuralmimo.detectors.base.SystemSpec` the receiver serves (passed to the
        default ``load``)
    load : ``(path: Path, sha256: str | None) -> FrameDetector``; raises
        :class:`~neuralmimo.bundle.BundleError` (or anything) to refuse. Default:
        :func:`~neuralmimo.detectors.registry.load_detector` under ``torch.inference_mode``
    models_dir : the installed models folder (last place a relative path is looked for)
    complexity : initial ``(keep, layers)`` (:func:`check_complexity`)
    max_slowdown : a new model this many times slower per vector than its predecessor is reverted
    watch_dir, watch_interval_s : a folder whose new or changed bundle folders are requested
    emit, log : where events (dicts) and log lines go
    clock : seconds (``time.perf_counter``; tests pass a fake one)
    probation_frames : frames in which a failing new model is reverted at once
    """

    def __init__(self, system, *, load: Callable | None = None, models_dir: Path | None = None,
                 complexity: tuple[float, int] = (1.0, 0), max_slowdown: float = 50.0, watch_dir: str = "",
                 watch_interval_s: float = 1.0, emit: Callable[[dict], None] | None = None,
                 log: Callable[[str, str], None] | None = None, clock: Callable[[], float] = time.perf_counter,
                 probation_frames: int = PROBATION_FRAMES):
        if not max_slowdown > 1:
            raise ValueError(f"max_slowdown must be > 1, got {max_slowdown}")
        self.system = system
        self._load = load or self._load_registered
        self.models_dir = models_dir
        self.complexity = check_complexity(*complexity)
        self.max_slowdown = float(max_slowdown)
        self.watch_dir = str(watch_dir or "")
        self.watch_interval_s = max(float(watch_interval_s), MIN_WATCH_INTERVAL_S)
        self._emit = emit or (lambda info: None)
        self._log = log or _default_log
        self.clock = clock
        self.probation_frames = int(probation_frames)
        self._lock = threading.Lock()
        self.active = None        # FrameDetector in force (streaming thread only)
        self.previous = None      # the one it replaced: what a failing new model reverts to
        self._predecessor: dict[int, object] = {}  # id(model) -> the model it replaced, for this call's models
        self._pending = None      # validated FrameDetector waiting for a frame boundary
        self._pending_revert = False  # the pending one is a revert (it does not become "previous")
        self._timing: dict[int, list] = {}  # id(detector) -> [frames, vectors, seconds]
        self._slowdown_checked: set[int] = set()  # models whose slowdown window is past
        self.swaps: list[dict] = []
        self.refusals: list[dict] = []
        self.reverts: list[dict] = []
        self._requests: queue.Queue = queue.Queue()
        self._stop_event: threading.Event | None = None
        self._loader: SupervisedThread | None = None
        self._watcher: SupervisedThread | None = None
        self.thread_errors: dict[str, int] = {}  # "thread: exception type" -> count (supervised threads)
        self._watch_seen: dict[str, tuple] = {}
        self._watch_first = True
        self._watch_failing = False

    # ----------------------------------------------------------------- requests (any thread)
    def request(self, path: str, sha256: str | None = None) -> None:
        """Request the bundle at ``path`` (loaded off the streaming thread, in force from the
        next frame boundary after it loaded)."""
        if path:
            self._requests.put((str(path), sha256))

    def set_complexity(self, keep, layers=0) -> None:
        """Request a kept fraction and a depth of the complexity dial; a bad value is refused
        (``refused``) and the running setting stays."""
        try:
            setting = check_complexity(keep, layers)
        except (TypeError, ValueError) as exc:
            self.refuse("", f"bad complexity setting: {exc}")
            return
        self._requests.put(("complexity", setting))

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until every request made so far has been served (loaded or refused)."""
        self.start()  # requests made while stopped are served now
        done = threading.Event()
        self._requests.put(done)
        return done.wait(timeout_s)

    @property
    def pending(self):
        """The validated model waiting for the next frame boundary (``None`` if none)."""
        with self._lock:
            return self._pending

    def refuse(self, path: str, reason: str) -> None:
        """Report a refused request (``refused``); the running model stays."""
        self._log("error", f"model refused, keeping the current one: {reason}")
        info = {"event": "refused", "path": path, "reason": reason, "time": now_iso()}
        self.refusals.append(info)
        self._emit(info)

    # ----------------------------------------------------------------- threads
    def start(self) -> None:
        """Start the loader (and the watcher) unless they run; both are supervised
        (:class:`~neuralmimo.supervise.SupervisedThread`): an error is reported and they go on."""
        if self._loader is not None and self._loader.is_alive():
            return
        self._stop_event = stop = threading.Event()
        self._loader = SupervisedThread("model-switch-loader", self._load_step, stop, self._thread_error)
        self._loader.start()
        _RUNNING.add(self)
        if self.watch_dir:
            self._watch_first = True
            self._watcher = SupervisedThread("model-switch-watch", self._watch_step, stop, self._thread_error)
            self._watcher.start()

    def _thread_error(self, name: str, exc: BaseException) -> None:
        """A supervised thread's step raised: log once per kind, count, ``thread-error`` event."""
        kind = f"{name}: {type(exc).__name__}"
        first = kind not in self.thread_errors
        self.thread_errors[kind] = self.thread_errors.get(kind, 0) + 1
        if first:
            self._log("error", f"{name}: internal error {type(exc).__name__}: {exc}; the thread goes on "
                               "(logged once; further occurrences are counted)")
        self._emit({"event": "thread-error", "thread": name, "reason": f"{type(exc).__name__}: {exc}",
                    "time": now_iso()})

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the loader (after the requests queued before this call) and the watcher; join both."""
        if self._loader is None:
            return
        self._stop_event.set()
        self._requests.put(None)
        for th in (self._loader, self._watcher):
            if th is not None:
                th.join(timeout_s)
        self._loader = self._watcher = None
        _RUNNING.discard(self)

    def threads_alive(self) -> list[str]:
        """Names of this switch's threads that are running."""
        return [th.name for th in (self._loader, self._watcher) if th is not None and th.is_alive()]

    def _load_step(self):
        """The loader's unit of work: serve one request (:data:`STOP` on the stop sentinel)."""
        req = self._requests.get()
        if req is None:
            return STOP
        if isinstance(req, threading.Event):
            req.set()
            return None
        try:
            if req[0] == "complexity":
                self._apply_complexity(req[1])
            else:
                self._serve(*req)
        except Exception as exc:  # noqa: BLE001 - a failing request is that request's refusal
            self.refuse(str(req[0]), f"{req[0]}: {type(exc).__name__}: {exc}")
        return None

    def _load_registered(self, path: Path, sha256: str | None):
        from .registry import load_detector  # the registry imports every family: only when loading

        with torch.inference_mode():
            return load_detector(path, self.system, sha256)

    def _serve(self, path: str, sha: str | None) -> None:
        resolved = resolve_model_path(path, self.models_dir)
        if resolved is None:
            tried = ", ".join(str(c) for c in model_candidates(path, self.models_dir))
            self.refuse(path, f"{path}: no such bundle (looked in {tried})")
            return
        try:
            det = self._load(resolved, sha)
        except BundleError as exc:
            self.refuse(path, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - any failure to build is a refusal
            self.refuse(path, f"{path}: could not build the detector ({type(exc).__name__}: {exc})")
            return
        try:
            det = self.configured(det, self.complexity)
        except ValueError as exc:
            self._log("warn", f"{resolved}: the complexity setting {self.complexity} does not fit this model "
                              f"({exc}); it runs at its trained setting")
        with self._lock:
            superseded, self._pending = self._pending, det
            was_revert, self._pending_revert = self._pending_revert, False
        if superseded is not None and not was_revert:  # loaded but never in force: a newer request came first
            self._emit({"event": "superseded", **superseded.describe(), "by": str(resolved), "time": now_iso()})
        self._log("info", f"loaded {det.architecture} model {resolved} (requested as {path})")
        self._emit({"event": "loaded", **det.describe(), "time": now_iso()})

    @staticmethod
    def configured(det, setting: tuple[float, int]):
        """``det`` at the dial ``setting`` (a new detector), or ``det`` itself if it has no dial;
        above the fraction a model was trained with it runs at that one. ``ValueError`` if it
        cannot run at it (more layers than it has)."""
        keep, layers = setting
        if not hasattr(det, "configured"):
            return det
        trained = float(det.hyperparameters.get("keep", 1.0))
        return det.configured(keep=min(keep, trained), layers=layers)

    def _apply_complexity(self, setting: tuple[float, int]) -> None:
        """Loader thread: the model that will be in force, re-sliced to ``setting``, becomes the
        pending one (a model waiting for its frame boundary is replaced by itself at the new
        setting, so the latest request wins). The setting also applies to models loaded later."""
        with self._lock:
            base = self._pending if self._pending is not None and not self._pending_revert else self.active
        if base is None:  # no model yet: applied when one loads
            self.complexity = setting
            return
        if not hasattr(base, "configured"):
            self.complexity = setting
            if setting != (1.0, 0):
                self._log("warn", f"model {base.describe()['path']} ({base.architecture}) has no complexity dial: "
                                  f"keep={setting[0]:g}, layers={setting[1]} apply to dial models loaded later")
            return
        try:
            det = self.configured(base, setting)
        except ValueError as exc:
            self.refuse(str(base.describe()["path"]), f"complexity refused: {exc}")
            return
        self.complexity = setting
        with self._lock:
            self._pending, self._pending_revert = det, False
        self._log("info", f"complexity {det.describe()['options']} prepared for {det.describe()['path']}")
        self._emit({"event": "loaded", **det.describe(), "time": now_iso()})

    def _watch_step(self):
        """The watcher's unit of work: wait one interval (none the first time), then request a
        bundle folder of ``watch_dir`` whose files changed: a bundle copied in non-atomically
        (the manifest before the weights) is refused once, then requested again when its
        weights arrive. Bundles present at start are not swapped in by themselves."""
        if self._stop_event.wait(0 if self._watch_first else self.watch_interval_s):
            return STOP
        try:
            found = self._scan()
        except OSError as exc:  # the folder vanished or cannot be read: look again next time
            if not self._watch_failing:
                self._log("error", f"watch_dir {self.watch_dir} cannot be read ({exc}); retrying")
            self._watch_failing = True
            return None
        self._watch_failing = False
        changed = [p for p, st in found.items() if self._watch_seen.get(p) != st]
        if changed and not self._watch_first:
            newest = max(changed, key=lambda p: max((m for _, _, m in found[p]), default=0))
            self.request(newest)
        self._watch_seen, self._watch_first = found, False
        return None

    def _scan(self) -> dict[str, tuple]:
        root = Path(self.watch_dir)
        found = {}
        for manifest in root.glob(f"*/{MANIFEST}") if root.is_dir() else []:
            try:
                found[str(manifest.parent)] = folder_state(manifest.parent)
            except OSError:
                continue
        return found

    # ----------------------------------------------------------------- streaming thread
    def boundary(self, **where):
        """At a frame's first vector: put the pending model in force. Returns it (the caller tags
        the stream there) or ``None``; ``swapped`` carries ``where`` (e.g. offset and frame)."""
        with self._lock:
            pending, self._pending = self._pending, None
            revert, self._pending_revert = self._pending_revert, False
        if pending is None:
            return None
        self.previous, self.active = (None if revert else self.active), pending
        if self.previous is not None:
            self._predecessor[id(pending)] = self.previous
        self._timing[id(pending)] = [0, 0, 0.0]  # its own probation (an id may be reused after a model is freed)
        self._slowdown_checked.discard(id(pending))
        info = {"event": "swapped", **pending.describe(), **where, "time": now_iso()}
        self.swaps.append(info)
        self._emit(info)
        return pending

    def detect(self, det, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor, users: list[int], llr: bool):
        """``det.detect_with_llr`` on ``y (S, Nr, L)``, timed against ``det``'s record (frames,
        vectors, seconds) for the slowdown check."""
        t0 = self.clock()
        out = det.detect_with_llr(y, h, noise_var, users, llr=llr)
        timing = self._timing.setdefault(id(det), [0, 0, 0.0])
        timing[0] += y.shape[0]
        timing[1] += y.shape[0] * y.shape[2]
        timing[2] += self.clock() - t0
        return out

    def detection_seconds(self) -> float:
        """Seconds spent in :meth:`detect` by the models whose records are kept."""
        return sum(t[2] for t in self._timing.values())

    def end_of_call(self, groups: dict, failed: list, redetect: Callable[[dict], list]) -> tuple[list, list]:
        """After a ``work()`` call's detection: revert new models that failed within probation
        (their frames detected again by ``redetect``), check the slowdown of the model in force,
        forget the records of models no longer in use.

        ``groups``: ``{(length, id(model)): [(first column, (model, h, noise_var, users)), ...]}``;
        ``failed``: ``[(id(model), exception, first column), ...]``; ``redetect(groups)`` detects
        such groups again and returns their failures. Returns ``(failures that remain,
        [(first column, model) where a model tag belongs])``.
        """
        tags: list = []
        if failed:
            failed = self._revert_failed(groups, failed, redetect, tags)
        self._check_slowdown()
        # only this call's models, the one in force and the one it replaced need their records
        # later (ids of freed models may be reused)
        live = {k for _, k in groups} | {id(self.active), id(self.previous)}
        self._predecessor = {k: v for k, v in self._predecessor.items() if k in live}
        self._timing = {k: v for k, v in self._timing.items() if k in live}
        self._slowdown_checked &= live
        return failed, tags

    def _revert_failed(self, groups: dict, failed: list, redetect, tags: list) -> list:
        for key in dict.fromkeys(k for k, _, _ in failed):
            errors = [exc for k, exc, _ in failed if k == key]
            pred = self._predecessor.get(key)
            if pred is None or self._timing.get(key, (0,))[0] >= self.probation_frames + len(errors):
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
            tags.append((first, pred))
            for k, before in list(self._predecessor.items()):  # a later model replaced the failing one
                if before is model:
                    self._predecessor[k] = pred
            if self.active is model:
                self.active, self.previous = pred, None
            elif self.previous is model:
                self.previous = pred
            self._report_revert(model, pred, f"it failed on a frame ({type(errors[0]).__name__}: {errors[0]})")
        return failed

    def _check_slowdown(self) -> None:
        """A new model running more than ``max_slowdown`` times slower per vector than the model
        it replaced is replaced by that model from the next frame boundary on (``reverted``)."""
        det, previous = self.active, self.previous
        if det is None or previous is None:
            return
        frames, vectors, seconds = self._timing.get(id(det), (0, 0, 0.0))
        prev = self._timing.get(id(previous))
        if id(det) in self._slowdown_checked or not (prev and prev[1] and vectors and frames >= SLOWDOWN_MIN_FRAMES):
            return
        # checked after every call until its first 4 x probation frames are past (one call may
        # jump past them all when a slow model lets the input pile up)
        if frames >= self.probation_frames * 4:
            self._slowdown_checked.add(id(det))
        slowdown = (seconds / vectors) / max(prev[2] / prev[1], 1e-12)
        if slowdown <= self.max_slowdown:
            return
        self.previous = None
        with self._lock:  # in force from the next frame boundary, unless a newer request is waiting
            if self._pending is None:
                self._pending, self._pending_revert = previous, True
        self._report_revert(det, previous, f"it runs {slowdown:.0f}x slower per vector than the model it replaced")

    def _report_revert(self, det, to, reason: str) -> None:
        d = det.describe()
        info = {"event": "reverted", "path": d["path"], "sha256": d["sha256"], "reason": reason,
                "to": to.describe()["path"], "time": now_iso()}
        self._log("error", f"model {d['path']} reverted to {info['to']}: {reason}")
        self.reverts.append(info)
        self._emit(info)

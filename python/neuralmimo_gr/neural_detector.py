"""Neural MIMO detector with hot-swappable model bundles: ``Nr`` streams in, ``Nt`` symbol streams out."""

from __future__ import annotations

import datetime as _dt
import queue
import sys
import threading
from pathlib import Path

import numpy as np
import pmt
import torch
from gnuradio import gr

from neuralmimo.bundle import MANIFEST, BundleError
from neuralmimo.constellation import Constellation
from neuralmimo.detectors import SystemSpec, load_detector

from ._common import (FRAME_START, MODEL, N_USERS, EstimateTags, FailureLog, big_buffers, frame_segments,
                      gather_segments, guarded_work, tag_int, write_streams)
from ._paths import MODELS_DIR

_PORT_MODEL = pmt.intern("model")
INITIAL_LOAD_TIMEOUT_S = 30.0
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

    Bad input as in the linear detector: malformed ``csi``/``noise_var`` keep the last good
    values, NaN/Inf vectors are zeroed, vectors before the first estimate or model come out 0;
    each logged once and counted in :meth:`problems`.
    """

    def __init__(self, nr: int = 12, nt: int = 8, modulation: str = "bpsk", model: str = "", watch_dir: str = "",
                 watch_interval_s: float = 1.0, torch_threads: int = 1, llr_output: bool = False):
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
        self._lock = threading.Lock()
        self._active = None       # FrameDetector in force (streaming thread only)
        self._pending = None      # validated FrameDetector waiting for a frame boundary
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
        self.watch_dir, self.watch_interval_s = str(watch_dir or ""), float(watch_interval_s)
        self._start_threads()  # loading the initial model overlaps the rest of the flowgraph's set-up
        self._initial_model = str(model or "")
        if model:
            self.set_model(model)

    # ----------------------------------------------------------------- runtime control
    def set_model(self, path: str, sha256: str | None = None) -> None:
        """Request a bundle (loaded off the streaming thread, applied at the next frame boundary)."""
        if path:
            self._requests.put((str(path), sha256))

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
            with self._lock:
                self._pending = det
            self.logger.info(f"loaded {det.architecture} model {resolved} (requested as {path})")
            self._status({"event": "loaded", **det.describe(), "time": _now()})

    def _watch_loop(self, stop: threading.Event) -> None:
        seen: dict[str, float] = {}
        first = True
        while not stop.wait(0 if first else self.watch_interval_s):
            root = Path(self.watch_dir)
            found = {}
            for manifest in root.glob(f"*/{MANIFEST}") if root.is_dir() else []:
                try:
                    found[str(manifest.parent)] = manifest.stat().st_mtime
                except OSError:
                    continue
            new = [p for p, t in found.items() if seen.get(p) != t]
            if new and not first:  # bundles present at start are not swapped in by themselves
                self.set_model(max(new, key=lambda p: found[p]))
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

    # ----------------------------------------------------------------- streaming
    def _frame_boundary(self, tags: list, offset: int) -> None:
        """State changes at a frame's first vector: pending model, CSI, noise variance, users."""
        self._n_users = None
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
            else:
                self._estimate.update(t)
        with self._lock:
            pending, self._pending = self._pending, None
        if pending is not None:
            self._active = pending
            d = pending.describe()
            value = pmt.to_pmt({"architecture": d["architecture"], "sha256": d["sha256"], "path": d["path"]})
            for k in range(self.nt + self.llr_output):
                self.add_item_tag(k, offset, pmt.intern(MODEL), value)
            info = {"event": "swapped", **d, "offset": int(offset), "frame": self._frame_number, "time": _now()}
            self.swaps.append(info)
            self._status(info)

    @guarded_work("zeros")
    def work(self, input_items, output_items):
        n = len(output_items[0])
        y_all, segments = frame_segments(self, input_items, len(output_items))
        # segments between frame boundaries; equal-length segments of one model run batched
        groups: dict[tuple[int, int], list] = {}
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
            groups.setdefault((b - a, id(self._active)), []).append((a, self._active, est.h, est.noise_var,
                                                                     self._n_users or self.nt))
        x_all = torch.zeros(self.nt, n, dtype=torch.complex64)
        llr_all = torch.zeros(n, self.nt * self.bits_per_symbol) if self.llr_output else None
        for (length, _), segs in groups.items():
            cols, y = gather_segments(y_all, [s[0] for s in segs], length)  # (S, Nr, length)
            h = torch.stack([s[2] for s in segs])
            nv = torch.tensor([s[3] for s in segs], dtype=torch.float32)
            x, llr = segs[0][1].detect_with_llr(y, h, nv, [s[4] for s in segs], llr=self.llr_output)
            x_all[:, cols] = x.transpose(0, 1).reshape(self.nt, -1).to(torch.complex64)  # x: (S, Nt, length)
            if llr_all is not None:
                llr_all[cols] = llr.reshape(-1, llr_all.shape[1]).float()  # (S, length, Nt, B), user-major
        write_streams(output_items[: self.nt], x_all)
        if llr_all is not None:
            output_items[self.nt][:n] = llr_all.numpy()
        return n

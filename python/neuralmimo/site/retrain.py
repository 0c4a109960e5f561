"""Background re-training: from a detector's drift event to a new bundle in its watch folder.

The site-adaptation loop of [HM] ("re-trained in the background when the channel statistics
change significantly") with the parts this project already has: the *Neural MIMO Detector*'s
drift monitor reports ``drift`` on ``status`` (:mod:`neuralmimo.site.drift`), the *CSI Logger* records
every frame's estimate (:mod:`neuralmimo.site.csilog`), ``neuralmimo adapt`` fine-tunes a bundle on a
log and publishes it atomically into a folder the detector watches, and the detector swaps it
in at a frame boundary. :class:`BackgroundRetrainer` is the state machine that joins them::

    idle --drift at frame D--> collecting --log holds min_frames frames >= D--> training
    training --adapt exits 0--> idle (event retrain-done; the detector swaps the bundle in)
    training --adapt fails / runs past budget + grace--> idle (retrain-failed, the old model stays)

It trains on the frames logged *after* the drift event only (``adapt --since-frame D``): what
the receiver sees at the new positions. The base is the model in force at the drift event (the
last ``swapped`` event's path). The re-trainer is a separate process with a lowered priority and
a time budget, so the flowgraph never waits for it; a drift event while collecting or training
is ignored (one re-training at a time), and a ``drift-back`` while collecting cancels it.

Pure Python (subprocess, no GNU Radio): the *Background Re-trainer* block feeds it the
detector's status messages and polls it from a thread.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..params import Param, ParamError, check_all
from .csilog import frames_since

# The re-trainer's settings (one declaration: the dataclass, the block's constructor, GRC).
PARAMS = {
    "min_frames": Param(int, 1, 10_000_000),
    "budget_s": Param(float, 0, 86_400, lo_open=True, unit="s"),
    "steps": Param(int, 1, 10_000_000),
    "threads": Param(int, 1, 256),
    "nice": Param(int, 0, 19, doc="os.nice: a background job only lowers its priority"),
    "grace_s": Param(float, 0, 3_600, unit="s"),
}
# ``adapt`` options a user may add (``extra_args``); the others are the re-trainer's to set.
EXTRA_ARGS = {
    "--lr": Param(float, 0, 1, lo_open=True),
    "--batch": Param(int, 1, 100_000),
    "--seed": Param(int, 0, 2**31 - 1),
}


def check_extra_args(args) -> tuple[str, ...]:
    """``extra_args`` as ``("--lr", "1e-4", ...)``: pairs of an option of :data:`EXTRA_ARGS` and its
    value; :class:`~neuralmimo.params.ParamError` otherwise (checked when the block is built, not
    when a drift event finally starts ``adapt`` hours later)."""
    tokens = tuple(str(a) for a in args)
    if len(tokens) % 2:
        raise ParamError(f"extra_args {' '.join(tokens)!r}: expected pairs of option and value")
    for opt, value in zip(tokens[::2], tokens[1::2]):
        if opt not in EXTRA_ARGS:
            raise ParamError(f"extra_args: {opt!r} is not an adapt option the re-trainer passes on (allowed: "
                             f"{', '.join(EXTRA_ARGS)})")
        try:
            EXTRA_ARGS[opt].arg(f"extra_args {opt}")(value)  # the same parse as the command line's
        except argparse.ArgumentTypeError as exc:
            raise ParamError(str(exc)) from None
    return tokens


def drift_frame(event: dict) -> int:
    """The frame number of a ``drift`` event: a whole number >= 0, or 0 when the detector did not
    know it (``None``: train on the whole log); ``ParamError`` otherwise (a string, NaN, a list
    or a negative number is not a frame)."""
    frame = event.get("frame")
    return 0 if frame is None else Param(int, 0, 2**62).check(frame, "drift event frame")


@dataclass
class RetrainSettings:
    """csi_log : the CSI Logger's folder; watch_dir : the detector's watch folder
    min_frames : frames logged after the drift event before training starts
    budget_s, steps, threads, nice : passed to ``neuralmimo adapt`` (``--budget-s``, ...)
    grace_s : how long past its budget the process may run (writing the bundle) before it is killed
    command : how to start the lab's command line (default: this interpreter, ``-m neuralmimo.lab.cli``)
    extra_args : more ``adapt`` arguments (``--lr 1e-4``)
    """

    csi_log: Path
    watch_dir: Path
    min_frames: int = 1000
    budget_s: float = 120.0
    steps: int = 2000
    threads: int = 1
    nice: int = 10
    grace_s: float = 60.0
    command: tuple = ()
    extra_args: tuple = ()
    log_file: Path | None = None  # the adapt process's output (default: next to the watch folder)

    def __post_init__(self):
        for name, value in check_all(PARAMS, {k: getattr(self, k) for k in PARAMS}, "re-trainer ").items():
            setattr(self, name, value)
        self.extra_args = check_extra_args(self.extra_args)
        self.csi_log, self.watch_dir = Path(self.csi_log), Path(self.watch_dir)


@dataclass
class BackgroundRetrainer:
    """See the module docstring. Feed :meth:`on_status` every status event of the detector and
    call :meth:`poll` regularly; both return the events that happened (dicts with ``event``:
    ``retrain-collecting``, ``retrain-started``, ``retrain-done``, ``retrain-failed``,
    ``retrain-cancelled``, ``retrain-ignored``)."""

    settings: RetrainSettings
    base: str | None = None  # the model in force (updated from swapped events)
    state: str = "idle"
    drift_frame: int | None = None
    runs: int = 0
    history: list = field(default_factory=list)
    _proc: subprocess.Popen | None = None
    _started: float = 0.0
    _name: str = ""

    def on_status(self, event: dict) -> list[dict]:
        kind = event.get("event")
        if kind == "swapped" and isinstance(event.get("path"), str) and event["path"]:
            self.base = event["path"]
            return []
        if kind == "drift-back" and self.state == "collecting":
            self.state, self.drift_frame = "idle", None
            return self._emit({"event": "retrain-cancelled", "reason": "the channels came back before training began"})
        if kind != "drift":
            return []
        try:
            frame = drift_frame(event)
        except ParamError as exc:
            return self._emit({"event": "retrain-ignored", "reason": f"malformed drift event: {exc}"})
        if self.state != "idle":
            return self._emit({"event": "retrain-ignored", "reason": f"a re-training is already {self.state}",
                               "frame": frame})
        if self.base is None:
            return self._emit({"event": "retrain-failed", "reason": "no model in force is known (no swapped event "
                               "seen): connect the detector's status before the flowgraph starts"})
        self.state, self.drift_frame = "collecting", frame
        return self._emit({"event": "retrain-collecting", "since_frame": self.drift_frame,
                           "min_frames": self.settings.min_frames, "base": self.base})

    def poll(self) -> list[dict]:
        if self.state == "collecting":
            have = frames_since(self.settings.csi_log, self.drift_frame)
            if have >= self.settings.min_frames:
                return self._start(have)
        elif self.state == "training":
            code = self._proc.poll()
            elapsed = time.monotonic() - self._started
            if code is None and elapsed > self.settings.budget_s + self.settings.grace_s:
                self.stop()
                self.state = "idle"
                return self._emit({"event": "retrain-failed", "reason": f"adapt ran past its budget by "
                                   f"{self.settings.grace_s:.0f} s and was stopped", "seconds": elapsed})
            if code is not None:
                self.state, self._proc = "idle", None
                bundle = self.settings.watch_dir / self._name
                if code == 0 and bundle.is_dir():
                    return self._emit({"event": "retrain-done", "bundle": str(bundle), "seconds": elapsed,
                                       "since_frame": self.drift_frame})
                return self._emit({"event": "retrain-failed", "reason": f"adapt exited with {code} (see "
                                   f"{self._log_path()})", "seconds": elapsed})
        return []

    def stop(self) -> None:
        """End a running re-training (the flowgraph stops)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def _log_path(self) -> Path:
        s = self.settings
        return s.log_file or s.watch_dir.resolve().parent / f"{s.watch_dir.name}-retrain.log"

    def _start(self, frames: int) -> list[dict]:
        s = self.settings
        self.runs += 1
        self._name = f"adapted-{time.strftime('%Y%m%d-%H%M%S')}-{self.runs}"
        cmd = [*(s.command or (sys.executable, "-m", "neuralmimo.lab.cli")), "adapt", "--csi", str(s.csi_log),
               "--base", str(self.base), "--out", str(s.watch_dir), "--name", self._name,
               "--since-frame", str(self.drift_frame), "--steps", str(s.steps), "--budget-s", str(s.budget_s),
               "--threads", str(s.threads), "--nice", str(s.nice), *map(str, s.extra_args)]
        log = self._log_path()
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as out:
                out.write(" ".join(cmd) + "\n")
                out.flush()
                self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        except OSError as exc:  # the log's folder cannot be created or written, the command cannot start
            self.state, self.drift_frame = "idle", None
            return self._emit({"event": "retrain-failed", "reason": f"cannot start adapt ({exc})"})
        self._started = time.monotonic()
        self.state = "training"
        return self._emit({"event": "retrain-started", "frames": frames, "since_frame": self.drift_frame,
                           "base": self.base, "bundle_name": self._name, "command": cmd})

    def _emit(self, event: dict) -> list[dict]:
        event = {**event, "time": time.time()}
        self.history.append(event)
        return [event]

"""Background re-trainer: a detector's drift event starts ``neuralmimo adapt`` on the CSI log,
and the new bundle lands in the detector's watch folder (:mod:`neuralmimo.site.retrain`)."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import pmt
from gnuradio import gr

from neuralmimo.site.retrain import BackgroundRetrainer, RetrainSettings
from neuralmimo.supervise import SupervisedThread

from ._common import FailureLog, guarded_stop

_PORT_IN, _PORT_OUT = pmt.intern("status"), pmt.intern("status")


class background_retrainer(gr.basic_block):
    """Message block between a *Neural MIMO Detector* and the lab's re-trainer.

    Connect the detector's ``status`` output to this block's ``status`` input. On a ``drift``
    event it waits until the *CSI Logger* writing ``csi_log`` holds ``min_frames`` frames from
    the drift's frame on, then runs ``neuralmimo adapt`` on those frames (base: the model in force,
    from the detector's ``swapped`` events) as a separate low-priority process with a time budget,
    writing into ``watch_dir`` -- the detector's watch folder, so it swaps the new bundle in at a
    frame boundary. Every step is an event on this block's ``status`` output
    (``retrain-collecting``, ``-started``, ``-done``, ``-failed``, ``-cancelled``, ``-ignored``)
    and in :meth:`events`; a failure is logged and the old model stays. A running re-training is
    stopped with the flowgraph. Without both folders the block is off (a drift is answered with
    ``retrain-failed``).
    """

    def __init__(self, csi_log: str = "", watch_dir: str = "", min_frames: int = 1000, budget_s: float = 120.0,
                 steps: int = 2000, threads: int = 1, nice: int = 10, extra_args: str = ""):
        gr.basic_block.__init__(self, name="background_retrainer", in_sig=None, out_sig=None)
        self.failures = FailureLog(self.logger)
        # every setting checked here (ValueError), against neuralmimo.site.retrain.PARAMS
        self.settings = RetrainSettings(Path(csi_log or "."), Path(watch_dir or "."), min_frames, budget_s,
                                        steps, threads, nice, extra_args=tuple(str(extra_args).split()))
        # without both folders the block is off: a drift event is answered with retrain-failed
        self.retrainer = BackgroundRetrainer(self.settings) if csi_log and watch_dir else None
        self._inbox: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._events: list[dict] = []
        self._thread: SupervisedThread | None = None
        self._stop = threading.Event()
        self.message_port_register_in(_PORT_IN)
        self.message_port_register_out(_PORT_OUT)
        self.set_msg_handler(_PORT_IN, self._on_status)

    def events(self) -> list[dict]:
        """Every re-training event so far (copies)."""
        with self._lock:
            return [dict(e) for e in self._events]

    def problems(self) -> dict[str, int]:
        """Counted problems, including the thread's internal errors (``thread-error``: it goes on)."""
        return dict(self.failures.counts)

    def _on_status(self, msg) -> None:
        try:
            event = pmt.to_python(msg)
        except Exception:  # noqa: BLE001 - a foreign message on the port is not ours to handle
            return
        if isinstance(event, dict):
            self._inbox.put(event)

    @guarded_stop
    def start(self):
        self._stop.clear()
        self._thread = SupervisedThread("background_retrainer", self._step, self._stop, self._thread_error)
        self._thread.start()
        return True

    def _thread_error(self, name: str, exc: BaseException) -> None:
        self.failures.report("thread-error", f"{self.name()}: internal error {type(exc).__name__}: {exc}; the "
                             "re-trainer goes on with the next event")
        self._publish({"event": "retrain-error", "reason": f"{type(exc).__name__}: {exc}", "time": time.time()})

    @guarded_stop
    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.retrainer is not None:
            self.retrainer.stop()
        return True

    def _step(self) -> None:
        """The supervised thread's unit of work: one status event (or 0.2 s without), then a poll."""
        try:
            event = self._inbox.get(timeout=0.2)
        except queue.Empty:
            event = None
        if self.retrainer is None:
            out = [] if event is None or event.get("event") != "drift" else [{
                "event": "retrain-failed", "reason": "no CSI log folder or watch folder configured", "time": time.time()}]
        else:
            out = ([] if event is None else self.retrainer.on_status(event)) + self.retrainer.poll()
        for e in out:
            self._publish(e)

    def _publish(self, event: dict) -> None:
        with self._lock:
            self._events.append(event)
        kind = event["event"]
        if kind in ("retrain-failed", "retrain-ignored") and "malformed" in str(event.get("reason", "")):
            self.failures.report("bad-drift-event", f"{self.name()}: {event['reason']}: ignored")
        elif kind == "retrain-failed":
            self.logger.error(f"{self.name()}: re-training failed: {event['reason']}; the model in force stays")
        elif kind in ("retrain-started", "retrain-done"):
            what = event.get("bundle") or event.get("bundle_name")
            self.logger.info(f"{self.name()}: {kind} ({what})")
        info = {k: v for k, v in event.items() if k != "command"}
        self.message_port_pub(_PORT_OUT, pmt.to_pmt(info))

"""Supervised threads: every background thread of the module runs under :class:`SupervisedThread`.

A receiver's helper threads (the model loader and watch-folder watcher of
:class:`~neuralmimo.detectors.hotswap.ModelSwitch`, the *Background Re-trainer*'s poller) serve
requests one at a time. A request that raises must cost that request only: a thread that dies
leaves its block deaf (every later ``set_model``, message or drift event silently ignored),
which is worse than any single failure. So a supervised thread runs ``step()`` over and over
until its stop event is set or ``step`` returns :data:`STOP`; an exception from ``step`` is
counted (:attr:`SupervisedThread.errors`), handed to ``report(thread_name, exception)`` (log once
per kind, count, status event: the owner decides) and the thread goes on with the next step.

``report`` itself is guarded too: if it raises, the error is only counted. ``BaseException``
(``KeyboardInterrupt``, ``SystemExit``) still ends the thread, as it should.
"""

from __future__ import annotations

import sys
import threading
from typing import Callable

STOP = object()  # returned by a step: the thread ends normally


def _print_report(name: str, exc: BaseException) -> None:
    print(f"[error] thread {name}: {type(exc).__name__}: {exc}; it goes on", file=sys.stderr)


class SupervisedThread(threading.Thread):
    """A daemon thread calling ``step()`` until ``stop`` is set or ``step`` returns :data:`STOP`.

    Parameters
    ----------
    name : thread name (in reports and :meth:`threading.enumerate`)
    step : one unit of work; it should block for at most a short time (a queue ``get`` with a
        timeout, ``stop.wait(interval)``) so that the stop event is seen
    stop : the event that ends the loop
    report : ``(name, exception)``, called for every exception ``step`` raises
    """

    def __init__(self, name: str, step: Callable[[], object], stop: threading.Event,
                 report: Callable[[str, BaseException], None] | None = None):
        super().__init__(name=name, daemon=True)
        self._step, self.stop_event, self._report = step, stop, report or _print_report
        self.errors = 0
        self.last_error: str | None = None

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                if self._step() is STOP:
                    return
            except Exception as exc:  # noqa: BLE001 - the point: one failing step never ends the thread
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                try:
                    self._report(self.name, exc)
                except Exception:  # noqa: BLE001 - a failing reporter must not end the thread either
                    pass

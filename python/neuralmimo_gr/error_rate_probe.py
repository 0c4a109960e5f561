"""Error-rate probe: SER/BER of detected symbols against what the frame source sent."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pmt
import torch
from gnuradio import gr

from neuralmimo.constellation import Constellation
from neuralmimo.receiver.frames import FrameLayout, frame_data_indices
from neuralmimo.metrics import ErrorRate, error_rate_interval

from ._common import FailureLog, guarded_work, stack_streams, tags_by_key
from .tags import FRAME_START, tag_int

MATCH_SEARCH = 8  # frame numbers tried either side of an unmatched frame's own


def consistent_with_chance(errors: int, symbols: int, num_points: int) -> bool:
    """Whether ``errors`` symbol errors in ``symbols`` are what random decisions would give:
    not below the chance rate ``p = 1 - 1/M`` by 3 standard deviations of the binomial count.
    A frame compared with the wrong reference (a misnumbered frame) looks exactly like this; so
    does a frame nobody could detect (no signal at all)."""
    p = 1.0 - 1.0 / num_points
    return errors >= symbols * p - 3.0 * np.sqrt(symbols * p * (1 - p))


_PRINT_LOCK = threading.Lock()  # one summary line at a time across probes


class error_rate_probe(gr.sync_block):
    """Symbol and bit error rates of ``nt`` detected streams.

    The reference is regenerated from the ``frame_start`` tags: a :class:`mimo_frame_source`
    with random data and the same ``seed`` sent, in frame ``n``, symbols that depend only on
    ``(seed, n)``. So the probe needs no connection to the transmitter and is not confused by
    dropped frames or delays (loopback or over the air). Vectors before the first tag are not
    counted.

    SER is per complex symbol, BER per bit (hard decisions on the detected symbols). Getters:
    :meth:`ser`, :meth:`ber`, :meth:`ser_interval` (95 %, frame-clustered), :meth:`frame_ser` (last
    completed frame), :meth:`symbols`, :meth:`frames`. The ``stats`` message port publishes a
    dict for every completed frame: frame, symbols, symbol_errors, bit_errors, ser, ber and the
    cumulative cum_ser, cum_ber, and ``matched``.

    A complete frame whose errors are consistent with random decisions
    (:func:`consistent_with_chance`) is *unmatched*: compared with the wrong reference (a frame
    numbered wrongly on its way) or undetectable. The probe then compares it with the references
    of the ``MATCH_SEARCH`` frame numbers either side; :meth:`unmatched_frames` lists ``(frame,
    number it matches or None)``, each is logged once per kind and counted in :meth:`problems`
    (``unmatched-frame``, ``misnumbered-frame``). Its errors still count in the SER. With
    ``report_on_stop`` a one-line summary is printed when the flowgraph stops.
    """

    def __init__(self, nt: int = 2, n_data: int = 256, modulation: str = "qpsk", seed: int = 0, label: str = "",
                 report_on_stop: bool = False):
        self.layout = FrameLayout(int(nt), int(nt), int(n_data))  # pilots do not reach the probe
        self.constellation = Constellation(modulation)
        gr.sync_block.__init__(self, name="error_rate_probe", in_sig=[np.complex64] * self.layout.nt, out_sig=None)
        self.seed, self.label, self.report_on_stop = int(seed), label, bool(report_on_stop)
        self._lock = threading.Lock()
        self._ser = ErrorRate(0, 0, "complex symbol")
        self._ber = ErrorRate(0, 0, "bit")
        self._frame_counts: list[tuple[int, int]] = []  # (symbol errors, symbols) per completed frame
        self._frame_numbers: list[int] = []  # their frame numbers
        self._frame: int | None = None  # number of the frame being received
        self._pos = 0  # data vectors of it seen so far
        self._ref: torch.Tensor | None = None
        self._acc = [0, 0, 0, 0]  # symbols, symbol errors, bits, bit errors of the current frame
        self._decisions: list[torch.Tensor] = []  # of the current frame, for the unmatched-frame search
        self._unmatched: list[tuple[int, int | None]] = []
        self.message_port_register_out(pmt.intern("stats"))
        self.failures = FailureLog(self.logger)

    # ----------------------------------------------------------------- getters
    def ser(self) -> float:
        with self._lock:
            return self._ser.rate

    def ber(self) -> float:
        with self._lock:
            return self._ber.rate

    def ser_interval(self) -> tuple[float, float]:
        """95 % interval of the SER: Wilson or over frames, whichever is wider (errors within a
        frame share its channel, see :func:`neuralmimo.metrics.error_rate_interval`)."""
        with self._lock:
            counts = list(self._frame_counts)
        if not counts:
            return (0.0, 1.0)
        errors, symbols = zip(*counts)
        return error_rate_interval(list(errors), list(symbols))

    def frame_errors(self) -> list[tuple[int, int]]:
        """``(symbol errors, symbols)`` of every completed frame, in order."""
        with self._lock:
            return list(self._frame_counts)

    def frame_records(self) -> list[tuple[int, int, int]]:
        """``(frame number, symbol errors, symbols)`` of every completed frame, in order."""
        with self._lock:
            return [(n, e, s) for n, (e, s) in zip(self._frame_numbers, self._frame_counts)]

    def unmatched_frames(self) -> list[tuple[int, int | None]]:
        """``(frame number, the number its data match or None)`` of every complete frame whose
        errors were consistent with chance against its own reference."""
        with self._lock:
            return list(self._unmatched)

    def problems(self) -> dict[str, int]:
        return dict(self.failures.counts)

    def frame_ser(self) -> float:
        with self._lock:
            if not self._frame_counts:
                return float("nan")
            errors, symbols = self._frame_counts[-1]
        return errors / symbols

    def symbols(self) -> int:
        return self._ser.trials

    def frames(self) -> int:
        return len(self._frame_counts)

    def summary(self) -> str:
        lo, hi = self.ser_interval()
        return (f"{self.label or self.name()}: SER {self.ser():.4e} [{lo:.2e}, {hi:.2e}] "
                f"BER {self.ber():.4e} over {self.symbols()} symbols in {self.frames()} frames")

    def stop(self) -> bool:
        self._finish_frame()
        if self.report_on_stop:
            # probes stop in parallel threads; print() writes text and newline separately, so two
            # probes' lines could merge ("MMSE: SER ...ZF: SER ...", seen in CI): one write, locked
            with _PRINT_LOCK:
                sys.stdout.write(self.summary() + "\n")
                sys.stdout.flush()
        return True

    # ----------------------------------------------------------------- streaming
    def _finish_frame(self) -> None:
        if self._frame is None or self._acc[0] == 0:
            return
        sym, se, bits, be = self._acc
        matched = True
        if self._pos == self.layout.n_data and consistent_with_chance(se, sym, self.constellation.num_points):
            matched = False
            self._report_unmatched(torch.cat(self._decisions, 1), se, sym)
        with self._lock:
            self._ser = self._ser + ErrorRate(se, sym, "complex symbol")
            self._ber = self._ber + ErrorRate(be, bits, "bit")
            self._frame_counts.append((se, sym))
            self._frame_numbers.append(self._frame)
            cum_ser, cum_ber = self._ser.rate, self._ber.rate
        msg = {"frame": self._frame, "symbols": sym, "symbol_errors": se, "bit_errors": be, "ser": se / sym,
               "ber": be / bits, "cum_ser": cum_ser, "cum_ber": cum_ber, "matched": matched}
        self.message_port_pub(pmt.intern("stats"), pmt.to_pmt(msg))
        self._acc = [0, 0, 0, 0]
        self._decisions = []

    def _report_unmatched(self, decisions: torch.Tensor, errors: int, symbols: int) -> None:
        n, m = self._frame, self.constellation.num_points
        candidates = [c for c in range(n - MATCH_SEARCH, n + MATCH_SEARCH + 1) if c != n and c >= 0]
        refs = frame_data_indices(self.constellation, self.layout, self.seed, candidates)  # (C, Nt, Nd)
        errs = (refs != decisions[None]).flatten(1).sum(1)
        best = int(errs.argmin())
        match = None
        if not consistent_with_chance(int(errs[best]), symbols, m) and int(errs[best]) < errors / 2:
            match = candidates[best]
        with self._lock:
            self._unmatched.append((n, match))
        if match is None:
            self.failures.report("unmatched-frame", f"{self.name()}: frame {n}: {errors}/{symbols} symbol errors, "
                                 "what random decisions give: it matches no frame number near its own (wrong "
                                 "reference or no signal)")
        else:
            self.failures.report("misnumbered-frame", f"{self.name()}: frame {n}: {errors}/{symbols} symbol errors "
                                 f"against its own reference, {int(errs[best])} against frame {match}'s: it was "
                                 "numbered wrongly upstream")

    def _start_frame(self, number: int) -> None:
        self._finish_frame()
        self._frame, self._pos, self._decisions = number, 0, []
        self._ref = frame_data_indices(self.constellation, self.layout, self.seed, [number])[0]

    def _count(self, decisions: torch.Tensor) -> None:
        """Compare ``decisions (Nt, N)`` with the next ``N`` reference vectors of the frame."""
        if self._ref is None:
            return
        take = min(decisions.shape[1], self.layout.n_data - self._pos)
        if take < decisions.shape[1]:
            self.failures.report("overlong-frame", f"{self.name()}: frame {self._frame} has more than "
                                 f"{self.layout.n_data} data vectors; the extra vectors are not counted")
        ref = self._ref[:, self._pos:self._pos + take]
        dec = decisions[:, :take]
        self._decisions.append(dec)
        bits_ref, bits_dec = self.constellation.indices_to_bits(ref), self.constellation.indices_to_bits(dec)
        self._acc[0] += ref.numel()
        self._acc[1] += int((dec != ref).sum())
        self._acc[2] += bits_ref.numel()
        self._acc[3] += int((bits_dec != bits_ref).sum())
        self._pos += take
        if self._pos == self.layout.n_data:
            self._finish_frame()

    @guarded_work("sink")
    def work(self, input_items, output_items):
        n = len(input_items[0])
        r0 = self.nitems_read(0)
        z = stack_streams(input_items, n)
        decisions = self.constellation.hard_decision(torch.nan_to_num(z))
        pos = 0
        for t in tags_by_key(self, 0, n, FRAME_START):
            a = t.offset - r0
            self._count(decisions[:, pos:a])
            number = tag_int(t.value)
            if number is None:
                self.failures.report("bad-frame-tag", f"{self.name()}: frame_start tag without an integer frame number")
                self._finish_frame()
                self._ref = None
            else:
                self._start_frame(number)
            pos = a
        self._count(decisions[:, pos:n])
        return n

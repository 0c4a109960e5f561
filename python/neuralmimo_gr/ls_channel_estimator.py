"""Pilot-based least-squares channel estimator: ``Nr`` antenna streams in, data vectors out."""

from __future__ import annotations

import numpy as np
import pmt
import torch
from gnuradio import gr

from neuralmimo.receiver.estimation import LSChannelEstimator, estimate_problems
from neuralmimo.receiver.frames import FrameLayout
from neuralmimo.receiver.alignment import PilotAligner, timeline_position, unexplained_fraction

from ._common import FailureLog, big_buffers, guarded_work, tags_by_key
from .tags import CSI, CSI_STALE, FRAME_START, NOISE_VAR, RX_TIME, USER_PHASE, csi_to_pmt, rx_time_value, tag_int

FRAMING_MODES = ("tags", "count")


class ls_channel_estimator(gr.basic_block):
    """LS channel estimation from each frame's pilots ([LG] eq. (5), ``neuralmimo.receiver.estimation``).

    Inputs: ``nr`` complex streams, one per receive antenna (what ``uhd_usrp_source`` with
    ``nchan = Nr`` gives; a stream of ``Nr``-vectors goes through ``blocks.vector_to_streams``).
    Outputs: ``nr`` streams carrying only the ``n_data`` data vectors of each frame; at the first
    data vector of each frame, every output gets the tags ``frame_start`` (frame number),
    ``csi`` (``H_LS``, ``Nr x Nt`` row-major c32vector) and ``noise_var`` (the pilot-residual
    estimate, or ``fallback_noise_var`` when ``Np == Nt`` leaves no residual).

    Framing: ``"tags"`` takes frame starts from ``tag_key`` tags on input 0 (their integer value
    is the frame number); ``"count"`` assumes a frame every ``Np + Nd`` samples from the first
    sample (frame numbers from 0), e.g. for a USRP receiver started in time with the
    transmitter. Count framing re-acquires after samples are lost or inserted
    (:mod:`neuralmimo.receiver.alignment`): a frame whose pilot residual (its noise variance or the fraction
    of the pilot energy the LS fit leaves) rises clearly above its running median has its pilots
    searched again within half a frame of where they were expected, and framing
    moves to a start that fits clearly better (``reacquired``; needs ``Np > Nt``). With ``samp_rate`` > 0 it
    also follows ``rx_time`` tags (what ``uhd_usrp_source`` emits at the start and after each
    overflow): lost samples are counted from the timestamps and the next frame is found, and
    numbered, by the timeline (``rx-time-gap``). Each re-alignment is recorded in
    :attr:`reacquisitions` (``source``: pilots or rx_time, ``offset``, ``shift`` in samples,
    ``frame``). A frame received twice (bit-identical samples, a retransmitted stretch) keeps
    its number (``frame-repeat``).

    Bad input never stops the stream:

    * samples before the first frame tag are dropped;
    * a frame tag missing where the previous frame says the next one starts: the frame is
      taken by timing (flywheel) and numbered on from the previous one;
    * a frame tag inside a frame (misplaced): the partial frame is dropped and framing follows
      the new tag;
    * a frame tag where the next frame is expected but with another number than the one
      expected (``frame-gap``: frames lost upstream; ``frame-repeat``: a frame sent twice or a
      restarted transmitter): the frame gets the tag's number;
    * NaN/Inf pilots or a rank-deficient estimate (e.g. a burst of zero samples): the frame's
      data go out with the last good estimate and a ``csi_stale`` tag (value: the reason).

    Each kind of problem is logged once and counted in :meth:`problems`.
    """

    def __init__(self, nr: int = 4, nt: int = 2, n_pilots: int = 16, n_data: int = 256, framing: str = "tags",
                 tag_key: str = FRAME_START, fallback_noise_var: float = 0.01, rcond: float = 1e-6,
                 samp_rate: float = 0.0):
        self.layout = FrameLayout(int(nt), int(n_pilots), int(n_data))
        if nr < 1:
            raise ValueError(f"need nr >= 1, got {nr}")
        if framing not in FRAMING_MODES:
            raise ValueError(f"framing must be one of {FRAMING_MODES}, got {framing!r}")
        if not 0 <= fallback_noise_var < float("inf"):
            raise ValueError(f"fallback_noise_var must be finite and >= 0, got {fallback_noise_var}")
        if not 0 <= rcond < 1:
            raise ValueError(f"rcond (smallest usable singular value / largest) must be in [0, 1), got {rcond}")
        if not 0 <= samp_rate < float("inf"):
            raise ValueError(f"samp_rate must be finite and >= 0 (0: ignore rx_time tags), got {samp_rate}")
        gr.basic_block.__init__(self, name="ls_channel_estimator", in_sig=[np.complex64] * nr,
                                out_sig=[np.complex64] * nr)
        self.nr, self.framing, self.tag_key = int(nr), framing, tag_key
        self.fallback_noise_var, self.rcond = float(fallback_noise_var), float(rcond)
        self._estimate = LSChannelEstimator(self.layout.pilots(), self.rcond)
        self._next_start = 0 if framing == "count" else None  # absolute input offset of the next frame
        self._next_number = 0
        self._last_good: tuple[torch.Tensor, float] | None = None
        self.dropped_samples = 0
        # count framing: slips found from the pilot residual (needs Np > Nt) and from rx_time tags
        L = self.layout.length
        self._aligner = (PilotAligner(self._estimate, (L - 1) // 2)
                         if framing == "count" and self.layout.n_pilots > self.layout.nt else None)
        self._lookback = self._aligner.span if self._aligner is not None else 0
        self.samp_rate = float(samp_rate)
        self._time_ref: tuple[int, tuple[int, float]] | None = None  # (timeline position, rx_time) of a sample
        self._time_done = -1  # absolute offset of the last rx_time tag followed
        self._lost = 0  # samples lost upstream so far (timeline position - stream offset)
        self.reacquisitions: list[dict] = []
        self._previous_pilots: tuple[int, torch.Tensor] | None = None  # (number, pilots) of the last frame
        self.set_output_multiple(self.layout.n_data)
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)
        big_buffers(self, 4 * self.layout.n_data)

    def problems(self) -> dict[str, int]:
        """Occurrences of each kind of problem seen so far."""
        return dict(self.failures.counts)

    def forecast(self, noutput_items, ninputs):
        return [(noutput_items // self.layout.n_data) * self.layout.length + self._lookback] * ninputs

    def _find_frames(self, n_in: int, max_frames: int) -> tuple[list[tuple[int, int]], int]:
        """Frame starts (relative offset, frame number) among the ``n_in`` input samples and how
        many samples to consume. Updates the framing state."""
        L = self.layout.length
        r0 = self.nitems_read(0)
        tags = [] if self.framing == "count" else tags_by_key(self, 0, n_in, self.tag_key)
        tag_at = {t.offset - r0: tag_int(t.value) for t in tags}
        times = self._rx_times(n_in, r0) if self.samp_rate > 0 else []
        if self._next_start is not None and self._next_start < r0:
            # input was dropped behind our back (after an internal error): re-acquire framing
            if self.framing == "tags":
                self._next_start = None
            else:
                skipped = -(-(r0 - self._next_start) // L)
                self._next_start += skipped * L
                self._next_number += skipped
        frames, pos = [], 0
        while len(frames) < max_frames:
            if self._next_start is None:  # not synchronised: wait for a frame tag
                later = sorted(o for o in tag_at if o >= pos)
                if not later:
                    self._drop(n_in - pos, "before-first-tag", "no frame tag yet: dropping samples until the first one")
                    return frames, n_in
                self._drop(later[0] - pos, "before-first-tag", "no frame tag yet: dropping samples until the first one")
                pos = later[0]
                self._start_at(r0 + pos, tag_at[pos])
            start = self._next_start - r0
            if times and self._follow_time(times, r0, start + L):
                continue  # an rx_time tag up to the end of this frame moved the alignment
            if start + L > n_in:
                break
            inside = sorted(o for o in tag_at if start < o < start + L)
            if inside:
                self._drop(inside[0] - start, "misplaced-tag",
                           f"frame tag at sample {r0 + inside[0]} lies inside the frame that started at "
                           f"{r0 + start}: dropping the partial frame and following the new tag")
                pos = inside[0]
                self._start_at(r0 + pos, tag_at[pos])
                continue
            if self.framing == "tags":
                if start not in tag_at:
                    self.failures.report("missing-tag", f"{self.name()}: no frame tag at sample {r0 + start} where "
                                         "the previous frame ends: continuing on frame timing")
                else:
                    self._follow_number(r0 + start, tag_at[start])
            frames.append((start, self._next_number))
            self._next_number += 1
            self._next_start += L
            pos = start + L
        return frames, pos

    def _rx_times(self, n_in: int, r0: int) -> list[tuple[int, tuple[int, float]]]:
        """The ``rx_time`` tags not yet followed among the next ``n_in`` samples: ``[(absolute
        offset, (whole s, fractional s))]``; a malformed one is reported and skipped."""
        out = []
        for t in tags_by_key(self, 0, n_in, RX_TIME):
            if t.offset <= self._time_done:
                continue
            stamp = rx_time_value(t.value)
            if stamp is not None:
                out.append((t.offset, stamp))
            else:
                self._time_done = t.offset
                self.failures.report("bad-rx-time", f"{self.name()}: rx_time tag {t.value} at sample {t.offset} is "
                                     "not (uint64 seconds, double fraction): ignored")
        return out

    def _follow_time(self, times: list, r0: int, end: int) -> bool:
        """Follow the first unfollowed ``rx_time`` tag before relative offset ``end``: the first
        one fixes the timeline; a later one that shows samples lost (a USRP overflow) moves the
        next frame to where the timeline puts it, numbered by the timeline, and drops the partial
        frame. Returns whether the alignment moved."""
        L = self.layout.length
        for offset, stamp in times:
            if offset <= self._time_done or offset - r0 >= end:
                continue
            self._time_done = offset
            if self._time_ref is None:
                self._time_ref = (offset + self._lost, stamp)  # timeline position of this sample
                continue
            position = timeline_position(*self._time_ref, stamp, self.samp_rate)
            lost = position - offset
            if lost == self._lost:
                continue
            number = -(-position // L)  # the first frame that starts at or after this sample
            start = number * L - lost
            self._drop(max(0, start - self._next_start), "rx-time-gap",
                       f"rx_time at sample {offset}: {lost - self._lost} samples lost upstream (overflow); "
                       f"re-aligned to frame {number} by the timeline")
            self.reacquisitions.append({"source": "rx_time", "offset": int(offset), "shift": int(self._lost - lost),
                                        "frame": int(number)})
            self._lost = lost
            self._next_start, self._next_number = start, number
            return True
        return False

    def _check_alignment(self, frames: list, fraction: torch.Tensor, nv: torch.Tensor, input_items, r0: int,
                         n_in: int) -> int:
        """Count framing: how many of ``frames`` are aligned, given each frame's unexplained
        pilot fraction and residual noise variance. At the first suspect frame
        (:class:`neuralmimo.receiver.alignment.PilotAligner`) the pilots are searched again around it; if
        another start fits clearly better, framing moves there (logged, counted as
        ``reacquired``, recorded in :attr:`reacquisitions`) and the frames from it on are cut, to
        be cut again from the new start. A suspect frame too close to the buffer's end to search
        waits for more input."""
        al = self._aligner
        for i, (start, number) in enumerate(frames):
            f, v = float(fraction[i]), float(nv[i])
            if not al.suspect(f, v):
                al.accept(f, v)
                continue
            if start + al.span + self.layout.n_pilots > n_in:
                self._next_start, self._next_number = r0 + start, number
                return i
            found = al.search(input_items, r0 + start, r0, f)
            rise = f"pilot residual rose ({f:.3g} of the pilot energy unexplained, running median {al.median():.3g})"
            if found is None:  # no start fits clearly better: not a slip
                al.accept(f, v)
                self.failures.report("pilot-residual-jump", f"{self.name()}: frame {number}: {rise}, but no start "
                                     "nearby fits better (interference or an SNR change): alignment kept")
                continue
            self.failures.report("reacquired", f"{self.name()}: frame {number}: {rise}: samples slipped; pilots "
                                 f"found again {found.shift:+d} samples from the expected start (re-acquired)")
            if found.shift > 0:
                self.dropped_samples += found.shift
            self._lost -= found.shift
            self.reacquisitions.append({"source": "pilots", "offset": int(found.start), "shift": int(found.shift),
                                        "frame": int(number)})
            self._next_start, self._next_number = found.start, number
            return i
        return len(frames)

    def _number_repeats(self, frames: list, y_p: torch.Tensor) -> list:
        """Count framing: a frame whose received pilots are bit-identical to the previous frame's
        is that frame again (a transport that retransmitted a stretch; a radio never receives
        the same noise twice): it keeps the previous number (``frame-repeat``) and the frames
        after it are numbered on from there."""
        out, shift = [], 0
        for i, (start, number) in enumerate(frames):
            pilots = y_p[i]
            number -= shift
            if self._previous_pilots is not None and bool(pilots.abs().amax() > 0) and \
                    torch.equal(pilots, self._previous_pilots[1]):
                number = self._previous_pilots[0]
                shift += 1
                self._lost -= self.layout.length
                self.failures.report("frame-repeat", f"{self.name()}: frame {number} received twice (bit-identical "
                                     "samples: a retransmitted stretch); the copy keeps its number")
            self._previous_pilots = (number, pilots.clone())
            out.append((start, number))
        self._next_number -= shift
        return out

    def _follow_number(self, offset: int, number: int | None) -> None:
        """A frame tag where the next frame is expected: its value is the frame number. A jump
        (frames lost upstream) or a step back (a repeated frame, a restarted transmitter) is
        followed, logged and counted, so that every frame keeps the number it was sent with."""
        expected = self._next_number
        if number is None:
            self.failures.report("bad-frame-tag", f"{self.name()}: frame tag at sample {offset} has no integer frame "
                                 f"number: numbering it {expected}")
        elif number > expected:
            self.failures.report("frame-gap", f"{self.name()}: frame tag at sample {offset} says frame {number}, "
                                 f"expected {expected}: {number - expected} frame(s) lost upstream; following the tag")
            self._next_number = number
        elif number < expected:
            self.failures.report("frame-repeat", f"{self.name()}: frame tag at sample {offset} says frame {number}, "
                                 f"expected {expected} (a repeated frame or a restarted transmitter); following the "
                                 "tag")
            self._next_number = number

    def _start_at(self, offset: int, number: int | None) -> None:
        self._next_start = offset
        if number is not None:
            self._next_number = number

    def _drop(self, count: int, kind: str, message: str) -> None:
        if count > 0:
            self.dropped_samples += count
            self.failures.report(kind, f"{self.name()}: {message}")

    @guarded_work("consume")
    def general_work(self, input_items, output_items):
        lay = self.layout
        n_in = min(len(x) for x in input_items)
        frames, consumed = self._find_frames(n_in, len(output_items[0]) // lay.n_data)
        if frames:
            # (F, L) windows of every stream: a reshaped view when the frames are back to back
            # (the normal case), a gather when a dropped partial frame lies between them.
            first, count, L, n_p = frames[0][0], len(frames), lay.length, lay.n_pilots
            if frames[-1][0] - first == (count - 1) * L:
                windows = [a[first:first + count * L].reshape(count, L) for a in input_items]
            else:
                idx = np.array([s for s, _ in frames])[:, None] + np.arange(L)
                windows = [a[idx] for a in input_items]
            # only the pilots go to torch; the data go straight from input to output buffers
            y_p = torch.from_numpy(np.stack([w[:, :n_p] for w in windows], axis=1))  # (F, Nr, Np)
            h, nv = self._estimate(y_p)
            if lay.n_pilots == lay.nt:
                nv = torch.full_like(nv, self.fallback_noise_var)
            if self._aligner is not None:
                fraction = unexplained_fraction(y_p, nv, lay.nt)
                count = self._check_alignment(frames, fraction, nv, input_items, self.nitems_read(0), n_in)
                frames, h, nv = frames[:count], h[:count], nv[:count]
            if self.framing == "count":
                frames = self._number_repeats(frames, y_p)
            for w, out in zip(windows, output_items):
                out[: len(frames) * lay.n_data].reshape(len(frames), lay.n_data)[:] = w[: len(frames), n_p:]
            problems = estimate_problems(h, self.rcond)
            key_f, key_c, key_n, key_s = (pmt.intern(k) for k in (FRAME_START, CSI, NOISE_VAR, CSI_STALE))
            w0, r0 = self.nitems_written(0), self.nitems_read(0)
            # each user's rotation along the frame (frame_sync, at the frame's first sample): to the first data vector
            user_phase = {t.offset - r0: t.value for t in tags_by_key(self, 0, n_in, USER_PHASE)}
            for i, (problem, (_, number)) in enumerate(zip(problems, frames)):
                if problem is None and not bool(torch.isfinite(nv[i])):
                    problem = "non-finite noise variance estimate"
                offset = w0 + i * lay.n_data
                tags = [(key_f, pmt.from_long(number))]
                if problem is None:
                    self._last_good = (h[i], float(nv[i]))
                else:
                    self.failures.report(problem.split(" (")[0], f"{self.name()}: frame {number}: {problem}; its "
                                         "data keep the last good channel estimate and are tagged csi_stale")
                    reason = problem if self._last_good is not None else f"{problem} (no good estimate yet)"
                    tags.append((key_s, pmt.string_to_symbol(reason)))
                if self._last_good is not None:
                    tags += [(key_c, csi_to_pmt(self._last_good[0])), (key_n, pmt.from_double(self._last_good[1]))]
                if frames[i][0] in user_phase:
                    tags.append((pmt.intern(USER_PHASE), user_phase[frames[i][0]]))
                for k in range(self.nr):
                    for key, value in tags:
                        self.add_item_tag(k, offset, key, value)
        if self.framing == "count":
            consumed = min(n_in, max(0, self._next_start - self.nitems_read(0) - self._lookback))
        for i in range(self.nr):
            self.consume(i, consumed)
        return len(frames) * lay.n_data

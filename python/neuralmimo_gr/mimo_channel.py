"""MIMO channel for loopback simulation: ``Nt`` streams in, ``Nr`` streams out."""

from __future__ import annotations

import threading

import numpy as np
import torch
from gnuradio import gr

from neuralmimo.channels import ChannelSpec, apply_cfo, make_channel, transmit
from neuralmimo.receiver.frames import frame_seed
from neuralmimo.snr import CONVENTIONS, complex_noise, noise_variance

from ._common import FailureLog, big_buffers, guarded_work, stack_streams, write_streams, zero_nonfinite


class mimo_channel(gr.sync_block):
    """Flat block-fading MIMO channel ``y = H x + n`` (GNU Radio 3.10 has no multi-antenna
    channel block).

    A new ``H`` (``Nr x Nt``) is drawn from the channel model every ``block_length`` input
    samples, counted from the first sample, so with ``block_length = Np + Nd`` and a
    :class:`mimo_frame_source` upstream every frame has its own channel (the papers' block
    fading). ``channel`` is a channel spec, the same spelling as everywhere in the project: a
    model name or ``{name: ..., args: {...}}`` as a mapping or YAML/JSON text, e.g.
    ``{"name": "kronecker", "args": {"rho_rx": 0.5}}``; the models and their arguments are
    ``neuralmimo.channels.CHANNELS`` (``deepsic-sed`` keeps all ``Nt`` users active; ``umi-task``
    needs the task in the cache, generated in the lab environment with ``neuralmimo umi generate``).

    Noise: complex AWGN at ``snr_db`` in ``snr_convention`` (default ``project``: SNR =
    E||Hx||^2 / E||n||^2 per receive antenna with unit-energy symbols; ``deepsic``, ``detnet``:
    the papers' conventions, ``neuralmimo.snr``). ``delay`` (integer samples, fixed) prepends
    zeros and shifts every tag by the same amount; ``cfo`` (cycles/sample) rotates all receive
    streams like a common LO offset. ``snr_db``, ``cfo`` and the channel are settable while
    running; a new channel takes effect at the next fading block; a non-finite SNR or CFO is
    refused (ValueError in the constructor, logged and ignored by the setters).

    Tags on input 0 are forwarded (delayed) to every output.
    """

    def __init__(self, nt: int = 2, nr: int = 4, channel="iid", snr_db: float = 10.0, block_length: int = 272,
                 delay: int = 0, cfo: float = 0.0, seed: int = 0, snr_convention: str = "project"):
        if nt < 1 or nr < 1:
            raise ValueError(f"need nt >= 1 and nr >= 1, got nt={nt}, nr={nr}")
        if block_length < 1:
            raise ValueError(f"block_length must be >= 1, got {block_length}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0 samples, got {delay}")
        for name, value in (("snr_db", snr_db), ("cfo", cfo)):
            if not np.isfinite(float(value)):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if snr_convention not in CONVENTIONS:
            raise ValueError(f"snr_convention must be one of {CONVENTIONS}, got {snr_convention!r}")
        gr.sync_block.__init__(self, name="mimo_channel", in_sig=[np.complex64] * nt, out_sig=[np.complex64] * nr)
        self.nt, self.nr, self.block_length, self.delay = int(nt), int(nr), int(block_length), int(delay)
        self._lock = threading.Lock()
        self.channel = ChannelSpec.parse(channel)
        self._process = self._build_model(self.channel).block_process(seed)
        self.snr_convention = snr_convention
        self._pending_model = None
        self.channel_changes: list[tuple[int, ChannelSpec]] = []  # (first fading block, spec) of each set_channel
        self._noise_seed = int(seed) + 1
        self._noise_block: tuple[int, torch.Tensor] | None = None
        self._h = None
        self._snr_db, self._cfo = float(snr_db), float(cfo)
        self._history = torch.zeros(self.nt, self.delay, dtype=torch.complex64)
        self._pending_tags: list[tuple[int, object, object]] = []
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)
        big_buffers(self, 4 * self.block_length)

    def _build_model(self, spec: ChannelSpec):
        return make_channel(spec, self.nr, self.nt)  # ValueError: unknown name or argument, wrong size

    # ----------------------------------------------------------------- runtime control (GRC callbacks)
    def _finite(self, name: str, value) -> float | None:
        """``value`` as a float, or ``None`` (logged) when it is not a finite number: a GUI
        callback must not take the flowgraph down, nor turn the noise into NaN."""
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = float("nan")
        if not np.isfinite(v):
            self.logger.error(f"set_{name}({value!r}) refused: not a finite number; keeping the current value")
            return None
        return v

    def set_snr_db(self, snr_db: float) -> None:
        v = self._finite("snr_db", snr_db)
        if v is not None:
            with self._lock:
                self._snr_db = v

    def snr_db(self) -> float:
        return self._snr_db

    def set_cfo(self, cfo: float) -> None:
        v = self._finite("cfo", cfo)
        if v is not None:
            with self._lock:
                self._cfo = v

    def set_channel(self, channel) -> None:
        """Switch the channel (a spec, as in the constructor) at the next fading block. An invalid
        one is logged and the running one kept (a GUI callback must not take the flowgraph down)."""
        try:
            spec = ChannelSpec.parse(channel)
            new = self._build_model(spec)
        except (ValueError, TypeError) as exc:
            self.logger.error(f"set_channel({channel!r}) refused: {exc}; keeping {self.channel}")
            return
        with self._lock:
            self._pending_model = new
            self.channel = spec

    def noise_var(self) -> float:
        m = self._process.model
        return noise_variance(self._snr_db, self.snr_convention, channel_energy=m.mean_energy, nr=self.nr, nt=self.nt)

    # ----------------------------------------------------------------- streaming
    def _next_h(self, block: int) -> torch.Tensor:
        if self._pending_model is not None:
            self._process = self._pending_model.block_process(self._process.generator.initial_seed())
            self._pending_model = None
            self.channel_changes.append((int(block), self.channel))
        return self._process.next()

    def _unit_noise(self, block: int, length: int) -> torch.Tensor:
        """``CN(0, 1)`` noise of fading block ``block`` (``-1``: the delay prefix), ``(Nr, length)``.
        Seeded per block, so the output does not depend on how the scheduler cuts buffers."""
        if self._noise_block is None or self._noise_block[0] != block:
            g = torch.Generator().manual_seed(frame_seed(self._noise_seed, block + 1))
            self._noise_block = (block, complex_noise((self.nr, length), 1.0, g))
        return self._noise_block[1]

    @guarded_work("zeros")
    def work(self, input_items, output_items):
        n = len(output_items[0])
        x_new = stack_streams(input_items, n)
        if zero_nonfinite(x_new):
            self.failures.report("nonfinite", f"{self.name()}: NaN/Inf input samples replaced by 0")
        if self.delay:
            x_all = torch.cat([self._history, x_new], 1)
            x, self._history = x_all[:, :n], x_all[:, n:]
        else:
            x = x_new
        first_out = self.nitems_written(0)
        first_in = first_out - self.delay  # input index of output sample 0 (negative: leading zeros)
        y = torch.empty(self.nr, n, dtype=torch.complex64)
        with self._lock:
            nv = self.noise_var()
            cfo = self._cfo
            pos = 0
            if first_in < 0:  # the delay's leading zeros: noise only
                pos = min(n, -first_in)
                zeros = torch.zeros(self.nr, self.nt, dtype=torch.complex64)
                y[:, :pos] = transmit(zeros, x[:, :pos], nv, unit_noise=self._unit_noise(-1, self.delay)[:, first_out:first_out + pos])
            while pos < n:
                j = first_in + pos
                block, within = divmod(j, self.block_length)
                if within == 0 or self._h is None:
                    self._h = self._next_h(block)
                end = min(n, pos + self.block_length - within)
                noise = self._unit_noise(block, self.block_length)[:, within:within + end - pos]
                y[:, pos:end] = transmit(self._h, x[:, pos:end], nv, unit_noise=noise)
                pos = end
        y = apply_cfo(y, cfo, first_out)
        write_streams(output_items, y)
        self._forward_tags(n, first_out)
        return n

    def _forward_tags(self, n: int, first_out: int) -> None:
        for t in self.get_tags_in_window(0, 0, n):
            self._pending_tags.append((t.offset + self.delay, t.key, t.value))
        keep = []
        for offset, key, value in self._pending_tags:
            if offset < first_out + n:
                for k in range(self.nr):
                    self.add_item_tag(k, offset, key, value)
            else:
                keep.append((offset, key, value))
        self._pending_tags = keep


"""MIMO channel for loopback simulation: ``Nt`` streams in, ``Nr`` streams out."""

from __future__ import annotations

import threading

import numpy as np
import torch
from gnuradio import gr

from neuralmimo.channels import BlockFadingProcess, apply_cfo, make_channel, transmit
from neuralmimo.frames import frame_seed
from neuralmimo.snr import complex_noise, noise_variance

from ._common import FailureLog, big_buffers, guarded_work, stack_streams, write_streams, zero_nonfinite

CHANNEL_MODELS = ("iid", "kronecker", "local-scattering", "deepsic-sed", "time-varying", "umi-task")


class mimo_channel(gr.sync_block):
    """Flat block-fading MIMO channel ``y = H x + n`` (GNU Radio 3.10 has no multi-antenna
    channel block).

    A new ``H`` (``Nr x Nt``) is drawn from the core channel model every ``block_length`` input
    samples, counted from the first sample, so with ``block_length = Np + Nd`` and a
    :class:`mimo_frame_source` upstream every frame has its own channel (the papers' block
    fading). Models: ``iid``, ``kronecker``, ``local-scattering``, ``deepsic-sed`` (all
    ``k_max = Nt`` users active), ``time-varying`` and ``umi-task`` (a cached 3GPP UMi task,
    32x8: ``{"task_id": 50, "normalise": "ue"}``; a task that is not cached yet is generated in
    the lab environment with ``neuralmimo umi generate``); ``model_args`` are the model's keyword
    arguments (e.g. ``{"rho_rx": 0.5}``).

    Noise: complex AWGN at ``snr_db`` in the project convention, SNR = E||Hx||^2 / E||n||^2 per
    receive antenna with unit-energy symbols. ``delay`` (integer samples, fixed) prepends zeros
    and shifts every tag by the same amount; ``cfo`` (cycles/sample) rotates all receive streams
    like a common LO offset. ``snr_db``, ``cfo`` and the model are settable while running; a new
    model takes effect at the next fading block.

    Tags on input 0 are forwarded (delayed) to every output.
    """

    def __init__(self, nt: int = 2, nr: int = 4, model: str = "iid", model_args: dict | None = None,
                 snr_db: float = 10.0, block_length: int = 272, delay: int = 0, cfo: float = 0.0, seed: int = 0):
        if nt < 1 or nr < 1:
            raise ValueError(f"need nt >= 1 and nr >= 1, got nt={nt}, nr={nr}")
        if block_length < 1:
            raise ValueError(f"block_length must be >= 1, got {block_length}")
        if delay < 0:
            raise ValueError(f"delay must be >= 0 samples, got {delay}")
        gr.sync_block.__init__(self, name="mimo_channel", in_sig=[np.complex64] * nt, out_sig=[np.complex64] * nr)
        self.nt, self.nr, self.block_length, self.delay = int(nt), int(nr), int(block_length), int(delay)
        self._lock = threading.Lock()
        self._process = BlockFadingProcess(self._build_model(model, model_args), seed)
        self.model_name, self.model_args = model, dict(model_args or {})
        self._pending_model = None
        self._noise_seed = int(seed) + 1
        self._noise_block: tuple[int, torch.Tensor] | None = None
        self._h = None
        self._snr_db, self._cfo = float(snr_db), float(cfo)
        self._history = torch.zeros(self.nt, self.delay, dtype=torch.complex64)
        self._pending_tags: list[tuple[int, object, object]] = []
        self.set_tag_propagation_policy(gr.TPP_DONT)
        self.failures = FailureLog(self.logger)
        big_buffers(self, 4 * self.block_length)

    def _build_model(self, model: str, model_args: dict | None):
        if model not in CHANNEL_MODELS:
            raise ValueError(f"unknown channel model {model!r}; choose one of {CHANNEL_MODELS}")
        m = make_channel(model, self.nr, self.nt, **dict(model_args or {}))
        if (m.nr, m.nt) != (self.nr, self.nt):
            raise ValueError(f"model {model!r} is {m.nr}x{m.nt}, the block is {self.nr}x{self.nt}")
        return m

    # ----------------------------------------------------------------- runtime control (GRC callbacks)
    def set_snr_db(self, snr_db: float) -> None:
        with self._lock:
            self._snr_db = float(snr_db)

    def snr_db(self) -> float:
        return self._snr_db

    def set_cfo(self, cfo: float) -> None:
        with self._lock:
            self._cfo = float(cfo)

    def set_model(self, model: str, model_args: dict | None = None) -> None:
        """Switch the channel model at the next fading block. An invalid model is logged and
        the running one kept (a GUI callback must not take the flowgraph down)."""
        try:
            new = self._build_model(model, model_args)
        except (ValueError, TypeError) as exc:
            self.logger.error(f"set_model({model!r}, {model_args!r}) refused: {exc}; keeping the current model")
            return
        with self._lock:
            self._pending_model = new
            self.model_name, self.model_args = model, dict(model_args or {})

    def noise_var(self) -> float:
        m = self._process.model
        return noise_variance(self._snr_db, "project", channel_energy=m.mean_energy, nr=self.nr, nt=self.nt)

    # ----------------------------------------------------------------- streaming
    def _next_h(self) -> torch.Tensor:
        if self._pending_model is not None:
            self._process = BlockFadingProcess(self._pending_model, self._process.generator.initial_seed())
            self._pending_model = None
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
                    self._h = self._next_h()
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


"""The whole tag contract between the gr-neuralmimo blocks: every key and its PMT conversions,
defined here and nowhere else (``docs/architecture.md``, "The receiver contract").

Tag contract (every block reads tags from its input 0 and writes them on every output); every
key is defined here and nowhere else:

``frame_start`` (long)   first sample of a frame; value: the frame number.
``csi`` (c32vector)      the ``Nr x Nt`` channel estimate, row-major, at the first data vector.
``noise_var`` (double)   complex noise variance per receive antenna, at the first data vector.
``csi_stale`` (string)   at a frame's first vector when its own channel estimate (or the ``csi``/
                         ``noise_var`` tag a detector received) was unusable, so the frame is
                         processed with the last good one; value: the reason. Added by the
                         estimator and by the detectors, passed on by every block.
``rx_time`` (tuple)      UHD's receive timestamp (uint64 whole s, double fraction), at the first
                         sample and after each overflow; the estimator follows it with count
                         framing when given ``samp_rate``.
``cfo`` (double)         at a frame's first sample after ``frame_sync``: the common carrier frequency
                         offset it estimated and removed, Hz.
``timing`` (double)      ... the frame's fractional start (first preamble symbol) in the sample
                         stream ``frame_sync`` received, samples.
``sync_metric`` (double) ... the preamble's autocorrelation metric (0..1).
``user_cfo`` (f32vector) ... each user's CFO from its own preamble, Hz (measured; see ``user_phase``).
``user_phase`` (f32vector) each user's residual rotation along the frame (separate user
                         oscillators; ``neuralmimo.receiver.tracking``): ``2 Nt`` values, the
                         rotation of user k at the frame's first data vector (rad) then its rate
                         (rad per data vector); user k of data vector d turned by ``p_k + r_k d``
                         against the channel estimate. Put by ``frame_sync`` at the frame's first
                         sample (only when nonzero), moved by the estimator to the first data
                         vector; the linear and neural detectors remove it (absent: zero).
``n_users`` (long)       optional, at a frame's first data vector: active users (streams 0..K-1).
``detector`` (symbol)    the detection algorithm in force from this vector on (linear detector).
``model`` (dict)         the model in force from this vector on (neural detector): architecture,
                         sha256, path.
"""

from __future__ import annotations

import math

import numpy as np
import pmt
import torch

FRAME_START = "frame_start"
CSI = "csi"
NOISE_VAR = "noise_var"
CSI_STALE = "csi_stale"
RX_TIME = "rx_time"  # UHD's key
CFO = "cfo"
TIMING = "timing"
SYNC_METRIC = "sync_metric"
USER_CFO = "user_cfo"
USER_PHASE = "user_phase"
N_USERS = "n_users"
DETECTOR = "detector"
MODEL = "model"


def csi_to_pmt(h: torch.Tensor) -> pmt.pmt_t:
    """``(Nr, Nt)`` complex tensor -> row-major c32vector."""
    flat = h.resolve_conj().reshape(-1).to(torch.complex64).numpy()
    return pmt.init_c32vector(flat.size, flat.tolist())


def pmt_to_csi(value, nr: int, nt: int) -> torch.Tensor:
    """Row-major c32vector -> ``(Nr, Nt)`` complex64 tensor; ``ValueError`` with the reason."""
    if not pmt.is_c32vector(value):
        raise ValueError("csi tag is not a c32vector")
    data = np.asarray(pmt.c32vector_elements(value), dtype=np.complex64)
    if data.size != nr * nt:
        raise ValueError(f"csi tag has {data.size} entries, expected Nr*Nt = {nr}*{nt} = {nr * nt}")
    h = torch.from_numpy(data.reshape(nr, nt))
    if not bool(torch.isfinite(h).all()):
        raise ValueError("csi tag contains NaN/Inf")
    return h


def tag_int(value) -> int | None:
    """Integer value of a tag, or None."""
    if pmt.is_integer(value):
        return int(pmt.to_long(value))
    if pmt.is_uint64(value):
        return int(pmt.to_uint64(value))
    return None


def tag_float(value) -> float | None:
    if pmt.is_real(value) or pmt.is_integer(value):
        return float(pmt.to_double(value))
    return None


def rx_time_pmt(seconds: float) -> pmt.pmt_t:
    """UHD's ``rx_time`` value for a time in seconds: ``(uint64 whole s, double fraction)``."""
    whole = int(seconds)
    return pmt.make_tuple(pmt.from_uint64(whole), pmt.from_double(seconds - whole))


def rx_time_value(value) -> tuple[int, float] | None:
    """``(whole s, fractional s)`` of an ``rx_time`` tag value, or ``None`` when it is malformed:
    not a pair, a negative whole part, or a fraction that is not a finite number in ``[0, 1)``
    (UHD never sends one; a NaN would poison every timeline position computed from it)."""
    if pmt.is_tuple(value) and pmt.length(value) == 2:
        whole, frac = tag_int(pmt.tuple_ref(value, 0)), tag_float(pmt.tuple_ref(value, 1))
        if whole is not None and frac is not None and whole >= 0 and math.isfinite(frac) and 0.0 <= frac < 1.0:
            return whole, frac
    return None


def user_phase_to_pmt(first: np.ndarray, rate: np.ndarray) -> pmt.pmt_t:
    """``user_phase`` value: each user's rotation at the first data vector, then its rate."""
    values = np.concatenate([np.asarray(first, np.float64), np.asarray(rate, np.float64)]).astype(np.float32)
    return pmt.init_f32vector(values.size, values.tolist())


def pmt_to_user_phase(value, nt: int) -> tuple[np.ndarray, np.ndarray]:
    """``(first (Nt,), rate (Nt,))`` float64 of a ``user_phase`` value; ``ValueError`` with the
    reason (not an f32vector of ``2 Nt`` finite values, or a rate that turns a user by more than
    half a turn per vector: no residual CFO does)."""
    if not pmt.is_f32vector(value):
        raise ValueError("user_phase tag is not an f32vector")
    v = np.asarray(pmt.f32vector_elements(value), dtype=np.float64)
    if v.size != 2 * nt:
        raise ValueError(f"user_phase tag has {v.size} values, expected 2 Nt = {2 * nt}")
    if not np.isfinite(v).all() or np.abs(v[nt:]).max() > math.pi:
        raise ValueError("user_phase tag holds NaN/Inf or a rate beyond pi rad per vector")
    return v[:nt], v[nt:]

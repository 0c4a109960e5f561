"""Operating envelopes: where a bundle's model was measured not worse than MMSE.

A learned detector is trained over a range of operating points (SNR, user count); outside it,
it may lose to the linear MMSE receiver (HyperMIMO trained at 0-10 dB develops an error floor
above 14 dB). ``neuralmimo bundle envelope`` sweeps a bundle against MMSE on the system its
manifest records and writes the region where it is *not worse* into the manifest's ``envelope``
section (weights untouched)::

    "envelope": {"version": 1, "reference": "mmse", "confidence": 0.95,
                 "snr_convention": "hypermimo", "csi": "LS, Np=16",
                 "users": [{"n_users": 6, "project_offset_db": -7.7815,
                            "snr_db": [[-5.0, 25.0]],
                            "sweep": [{"snr_db": -5.0, "ser": .., "ser_mmse": .., "diff": ..,
                                       "diff_ci": [lo, hi], "worse": false, "n_symbols": ..}, ...]}],
                 "measured": {"date": .., "symbols": .., "seed": .., "command": ..}}

The sweep bins its frames by the same per-frame SNR estimate the receiver uses at run time
(below), so the envelope holds for the decision the receiver makes, also at its edges. In each
bin, the 95 % interval of the paired per-frame SER difference (model - MMSE, on the same frames;
:func:`paired_difference`) decides: *worse* where it lies above zero; *not worse* where it does
not, and the measured difference is not positive or the whole interval lies below 10 % of
MMSE's SER (non-inferiority). ``snr_db`` per user count are
the closed intervals spanned by runs of consecutive bins where the model is not worse
(:func:`intervals_from_sweep`): the envelope is what was measured, never extrapolated beyond the
sweep.

At run time a frame's operating point is estimated from its side information alone (the channel
estimate ``H`` and noise variance ``sigma^2`` the receiver already has, and its active users
``K``), in the bundle's SNR convention (:mod:`neuralmimo.snr`)::

    SNR_project = (||H[:, :K]||_F^2 - Nr K sigma^2 / Np) / (Nr sigma^2),
    SNR_conv = SNR_project + project_offset_db[K],

where ``Nr K sigma^2 / Np`` removes the LS estimate's noise energy (``Np`` pilots, the bundle's
``n_pilots``; nothing with perfect CSI) -- without it a 0 dB frame reads 1 dB high with
``K / Np = 1/4`` -- and ``project_offset_db[K] = 10 log10(P_ref,conv / P_ref,project)`` for the training channel's
mean energy with ``K`` users, written at sweep time: the estimate is invariant to the receiver's
gain (it uses the ratio of channel to noise power), and the envelope needs no channel model at
run time. The estimate scatters around the nominal SNR by the frame's channel energy (about
``1/sqrt(Nr K)`` relative) and the noise-variance estimate's error; near an edge, frames fall on
either side, each detected by the detector its own estimate selects.
"""

from __future__ import annotations

import math

import torch

ENVELOPE_VERSION = 1
Z95 = 1.959964  # two-sided 95 % normal quantile
MAX_USER_COUNTS = 4096
MAX_INTERVALS = 64
MAX_SWEEP_POINTS = 512


class EnvelopeError(ValueError):
    """A malformed envelope section; the message names the field, in one line."""


NON_INFERIORITY_MARGIN = 0.1  # of the reference's SER


def paired_difference(errors_model: torch.Tensor, errors_ref: torch.Tensor, symbols_per_frame: int) -> dict:
    """SER difference model - reference on the same frames, with its 95 % interval.

    ``errors_*``: per-frame symbol-error counts ``(F,)`` of the two detectors on the same frames
    (paired: the channel, noise and symbols of a frame are shared, so the frame-to-frame variance
    of the channel largely cancels). The interval is ``mean +- 1.96 s / sqrt(F)`` of the per-frame
    differences (a normal approximation over frames, which the errors of one frame sharing a
    channel make the right unit). ``worse``: the whole interval lies above zero -- the model is
    worse than the reference at 95 % confidence. ``not_worse`` (what the envelope needs) asks
    more: not ``worse``, and either no measured excess (``diff <= 0``) or the whole interval
    below :data:`NON_INFERIORITY_MARGIN` times the reference's SER (non-inferiority). Where the
    reference makes no errors and the model a few, the interval still reaches 0 -- not *worse*
    at 95 % -- but the model is not as good (HyperMIMO's error floor at 29 dB: 1.1e-4 against 0);
    where both make almost none, the model without an excess is not excluded for lack of
    errors to show it. No frame differing gives ``diff = 0``: not worse, and not_worse.
    """
    d = (errors_model.double() - errors_ref.double()) / float(symbols_per_frame)
    f = d.numel()
    if f == 0:
        raise ValueError("no frames to compare")
    mean = float(d.mean())
    sd = float(d.std(unbiased=True)) if f > 1 else 0.0
    half = Z95 * sd / math.sqrt(f)
    ref_ser = float(errors_ref.double().sum()) / (f * symbols_per_frame)
    worse = bool(mean - half > 0.0)
    not_worse = not worse and (mean <= 0.0 or mean + half <= NON_INFERIORITY_MARGIN * ref_ser)
    return {"diff": mean, "diff_ci": [mean - half, mean + half], "worse": worse, "not_worse": not_worse,
            "frames": f}


EDGE_MARGIN_DB = 3.0  # good bins this close to a worse one are left out (the frames' estimates scatter ~1 dB)


def intervals_from_sweep(points: list[dict]) -> list[list[float]]:
    """The closed SNR intervals of the envelope from a sweep's points (one per SNR bin): runs of
    consecutive points where the model is shown not worse (``not_worse``; a point without it:
    ``not worse``), without the points next to, or within :data:`EDGE_MARGIN_DB` of, a point
    where the model *is* worse (``worse`` true and not ``undecided``). Such an edge bin holds the
    crossing of the two SER curves, and the frames that reach it from the worse side -- their
    estimates read high, e.g. an under-estimated noise variance, which the model suffers from more
    than MMSE -- are worse for the model even when the bin as a whole is not. A run left with one
    point (an interval of width 0) is dropped, unless the sweep is that one point."""
    pts = sorted(points, key=lambda p: p["snr_db"])
    n = len(pts)
    worse_at = [p["snr_db"] for p in pts if p["worse"] and not p.get("undecided")]
    good = [bool(p.get("not_worse", not p["worse"])) for p in pts]
    for i, p in enumerate(pts):
        next_to_worse = any(0 <= j < n and pts[j]["worse"] and not pts[j].get("undecided") for j in (i - 1, i + 1))
        if next_to_worse or any(abs(p["snr_db"] - w) <= EDGE_MARGIN_DB for w in worse_at):
            good[i] = False if n > 1 else good[i]
    out: list[list[float]] = []
    i = 0
    while i < n:
        if not good[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and good[j + 1]:
            j += 1
        if j > i or n == 1:
            out.append([float(pts[i]["snr_db"]), float(pts[j]["snr_db"])])
        i = j + 1
    return out


def estimate_snr_db(h: torch.Tensor, noise_var: torch.Tensor, n_users: list[int], offset_db,
                    n_pilots: int | None) -> torch.Tensor:
    """Each frame's SNR in dB from its side information (module docstring): ``h (S, Nr, Nt)``
    channel estimates, ``noise_var (S,)``, the active users (the first ``n_users[s]`` columns),
    ``offset_db`` (scalar or ``(S,)``: ``project_offset_db`` of the convention), ``n_pilots``
    (the LS estimate's pilots; ``None``: perfect CSI, nothing removed). ``NaN`` where the
    estimate is not a positive finite number (the noise dominates the estimate's energy)."""
    s, nr, _ = h.shape
    energy = h.abs().double().square().sum(1)  # (S, Nt): per-column channel energy
    k = torch.as_tensor(n_users, dtype=torch.long)
    keep = torch.arange(h.shape[2])[None, :] < k[:, None]
    nv = noise_var.double().reshape(s)
    signal = (energy * keep).sum(1)
    if n_pilots:
        signal = signal - nr * k.double() * nv / n_pilots
    out = 10.0 * torch.log10(signal / (nr * nv)) + torch.as_tensor(offset_db, dtype=torch.float64)
    return torch.where(torch.isfinite(out), out, torch.full_like(out, math.nan))


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_envelope(section, *, nt: int, snr_convention: str, where: str = "envelope") -> dict:
    """The validated envelope section of a manifest whose system has ``nt`` streams (a
    hypernetwork's ``K_max``) and SNR convention ``snr_convention``; :class:`EnvelopeError`
    names the first malformed field."""
    if not isinstance(section, dict):
        raise EnvelopeError(f"{where} must be a JSON object, got {type(section).__name__}")
    if section.get("version") != ENVELOPE_VERSION:
        raise EnvelopeError(f"{where}: version must be {ENVELOPE_VERSION}, got {section.get('version')!r}")
    if section.get("reference") != "mmse":
        raise EnvelopeError(f"{where}: reference must be 'mmse', got {section.get('reference')!r}")
    conf = section.get("confidence")
    if not _finite(conf) or not 0.5 <= conf < 1.0:
        raise EnvelopeError(f"{where}: confidence must be a number in [0.5, 1), got {conf!r}")
    if section.get("snr_convention") != snr_convention:
        raise EnvelopeError(f"{where}: snr_convention {section.get('snr_convention')!r} is not the system's "
                            f"{snr_convention!r}")
    users = section.get("users")
    if not isinstance(users, list) or not 1 <= len(users) <= MAX_USER_COUNTS:
        raise EnvelopeError(f"{where}: users must be a list of 1..{MAX_USER_COUNTS} entries, got {users!r:.80}")
    seen = set()
    clean_users = []
    for i, u in enumerate(users):
        w = f"{where}: users[{i}]"
        if not isinstance(u, dict):
            raise EnvelopeError(f"{w} must be a JSON object")
        k = u.get("n_users")
        if not (isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= nt):
            raise EnvelopeError(f"{w}: n_users must be an integer in 1..{nt}, got {k!r}")
        if k in seen:
            raise EnvelopeError(f"{w}: n_users {k} appears twice")
        seen.add(k)
        off = u.get("project_offset_db")
        if not _finite(off) or abs(off) > 100.0:
            raise EnvelopeError(f"{w}: project_offset_db must be a finite number in [-100, 100], got {off!r}")
        iv = u.get("snr_db")
        if not isinstance(iv, list) or len(iv) > MAX_INTERVALS:
            raise EnvelopeError(f"{w}: snr_db must be a list of at most {MAX_INTERVALS} [low, high] intervals")
        last = -math.inf
        for j, pair in enumerate(iv):
            if not (isinstance(pair, list) and len(pair) == 2 and all(_finite(v) for v in pair)
                    and pair[0] <= pair[1] and pair[0] > last):
                raise EnvelopeError(f"{w}: snr_db[{j}] must be [low, high] finite with low <= high, after the "
                                    f"previous interval, got {pair!r}")
            last = pair[1]
        sweep = u.get("sweep", [])
        if not isinstance(sweep, list) or len(sweep) > MAX_SWEEP_POINTS or not all(
                isinstance(p, dict) and _finite(p.get("snr_db")) and isinstance(p.get("worse"), bool)
                and isinstance(p.get("not_worse", True), bool) for p in sweep):
            raise EnvelopeError(f"{w}: sweep must be a list of at most {MAX_SWEEP_POINTS} points "
                                "{snr_db: number, worse: bool, not_worse: bool, ...}")
        clean_users.append({**u, "n_users": k, "project_offset_db": float(off),
                            "snr_db": [[float(a), float(b)] for a, b in iv]})
    out = dict(section)
    out["users"] = clean_users
    return out


class OperatingEnvelope:
    """The run-time view of a validated envelope section (:func:`check_envelope`); ``n_pilots``:
    the pilots of the LS estimates it will see (the bundle's ``system.n_pilots``; ``None``:
    perfect CSI)."""

    def __init__(self, section: dict, n_pilots: int | None = None):
        self.section = section
        self.n_pilots = n_pilots
        self.convention = section["snr_convention"]
        self._by_users = {u["n_users"]: (u["project_offset_db"], u["snr_db"]) for u in section["users"]}

    @property
    def user_counts(self) -> list[int]:
        return sorted(self._by_users)

    def intervals(self, n_users: int) -> list[list[float]]:
        """The measured SNR intervals of a user count (empty if it was not measured)."""
        return self._by_users.get(int(n_users), (None, []))[1]

    def offset_db(self, n_users: int) -> float:
        """``project_offset_db`` of a user count (``NaN`` if it was not measured)."""
        return self._by_users.get(int(n_users), (math.nan, None))[0]

    def frame_snr_db(self, h: torch.Tensor, noise_var: torch.Tensor, n_users: list[int]) -> torch.Tensor:
        """Each frame's SNR (dB, the bundle's convention) by :func:`estimate_snr_db` with the offset
        of its user count; ``NaN`` where the user count has no entry."""
        offset = torch.tensor([self.offset_db(v) for v in n_users], dtype=torch.float64)
        return estimate_snr_db(h, noise_var, n_users, offset, self.n_pilots)

    def check_one(self, energy: float, nr: int, noise_var: float, n_users: int) -> tuple[bool, float]:
        """:meth:`check` for one frame in plain floats (the block decides once per frame, where a
        few tensor operations would cost more than the decision): ``energy`` is
        ``||H[:, :K]||_F^2``. Returns ``(inside, snr_db)``."""
        entry = self._by_users.get(int(n_users))
        signal = energy - (nr * n_users * noise_var / self.n_pilots if self.n_pilots else 0.0)
        if entry is None or not (signal > 0 and noise_var > 0 and math.isfinite(signal)):
            return False, math.nan
        snr = 10.0 * math.log10(signal / (nr * noise_var)) + entry[0]
        return any(lo <= snr <= hi for lo, hi in entry[1]), snr

    def contains(self, snr_db: torch.Tensor, n_users: list[int]) -> torch.Tensor:
        """Boolean ``(S,)``: the frame's operating point lies in a measured interval of its user count."""
        inside = torch.zeros(snr_db.shape[0], dtype=torch.bool)
        for i, (v, k) in enumerate(zip(snr_db.tolist(), n_users)):
            entry = self._by_users.get(int(k))
            if entry is not None and math.isfinite(v):
                inside[i] = any(lo <= v <= hi for lo, hi in entry[1])
        return inside

    def check(self, h: torch.Tensor, noise_var: torch.Tensor, n_users: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inside (S,) bool, snr_db (S,))`` of each frame (:meth:`frame_snr_db`, :meth:`contains`)."""
        snr = self.frame_snr_db(h, noise_var, n_users)
        return self.contains(snr, n_users), snr

    def describe(self) -> str:
        """One line: the intervals per user count, e.g. ``K=6: -5..25 dB (hypermimo)``."""
        parts = []
        for k in self.user_counts:
            iv = self._by_users[k][1]
            parts.append(f"K={k}: " + (", ".join(f"{lo:g}..{hi:g}" for lo, hi in iv) or "none"))
        return "; ".join(parts) + f" dB ({self.convention}, not worse than MMSE at " \
                                  f"{self.section['confidence']:.0%})"

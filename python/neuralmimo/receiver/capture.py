"""Multi-channel captures as SigMF Collections (``sigmf`` package): record what a receiver's
antennas gave, play it back into the same receiver.

A capture is a folder holding one SigMF Recording per receive channel (``<name>-ch<r>.sigmf-data``
``cf32_le`` + ``.sigmf-meta``) and ``<name>.sigmf-collection`` listing them. Each Recording has
one ``core:captures`` segment per stretch of contiguous samples: ``core:global_index`` is the
device's sample counter at the segment's first sample (a jump = samples lost in an overflow) and
``core:datetime`` its time (from UHD's ``rx_time``: seconds since the device's epoch, which is
1970 when the device clock was set to Unix time). Annotations mark the frames a ``frame_sync``
found (label ``frame N``; CFO, metrics).

The project's own fields live in the ``neuralmimo`` extension namespace (documented in
``docs/sigmf-neuralmimo.md``), in every Recording's global object:

=============================  ===============================================================
``neuralmimo:channel``         this Recording's receive channel (0 .. ``n_rx`` - 1)
``neuralmimo:n_rx``            receive channels in the collection
``neuralmimo:nt``, ``n_pilots``, ``n_data``, ``modulation``, ``preamble_period``: the frame layout
``neuralmimo:seed``            the transmitter's data seed (frame n's symbols from (seed, n))
``neuralmimo:sps``, ``rolloff``, ``span``: the RRC pulse
``neuralmimo:snr_convention``  SNR convention of ``snr_db`` (``neuralmimo.snr``)
``neuralmimo:snr_db``          the SNR set in a loopback (absent over the air)
``neuralmimo:coarse_period``   the preamble's coarse part (version 2; absent or 0: version 1)
``neuralmimo:pilot_spacing``   a tracking pilot after every this many data vectors (absent or 0: none)
=============================  ===============================================================

Annotation fields: ``neuralmimo:frame`` (number), ``neuralmimo:cfo_hz``,
``neuralmimo:sync_metric``, ``neuralmimo:correlation``.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sigmf
from sigmf import SigMFCollection, SigMFFile

from ..params import safe_name

NAMESPACE = "neuralmimo"
EXTENSION = {"name": NAMESPACE, "version": "1.1.0", "optional": True}  # 1.1: coarse_period, pilot_spacing
LAYOUT_FIELDS = {  # field: (type, check)
    "nt": (int, lambda v: v >= 1), "n_pilots": (int, lambda v: v >= 1), "n_data": (int, lambda v: v >= 1),
    "modulation": (str, lambda v: v in ("bpsk", "qpsk", "16qam")), "preamble_period": (int, lambda v: v >= 2),
    "seed": (int, lambda v: v >= 0), "sps": (int, lambda v: v >= 2), "rolloff": (float, lambda v: 0 < v <= 1),
    "span": (int, lambda v: v >= 2 and v % 2 == 0), "snr_convention": (str, lambda v: len(v) < 32),
}
# optional: absent in version-1.0 captures, where they are 0 (a version-1 preamble, no tracking pilots)
OPTIONAL_FIELDS = {"snr_db": (float, math.isfinite), "coarse_period": (int, lambda v: v == 0 or 2 <= v <= 512),
                   "pilot_spacing": (int, lambda v: 0 <= v <= 65536)}


class CaptureError(ValueError):
    """A capture that cannot be read: the reason, in one line."""


def _iso(seconds: float) -> str:
    t = _dt.datetime.fromtimestamp(0, _dt.timezone.utc) + _dt.timedelta(seconds=float(seconds))
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class CaptureWriter:
    """Writes ``n_rx`` channels into ``folder/name*`` as they come (bounded by ``max_samples`` per
    channel: what comes after is not written, :attr:`truncated` says so); metadata at :meth:`close`.

    ``info``: the ``neuralmimo`` fields (:data:`LAYOUT_FIELDS`, optionally ``snr_db``);
    ``samp_rate`` Hz; ``center_freq`` Hz (0 in a loopback)."""

    def __init__(self, folder: Path, name: str, n_rx: int, samp_rate: float, info: dict, center_freq: float = 0.0,
                 max_samples: int = 0, description: str = ""):
        self.folder, self.name, self.n_rx = Path(folder), safe_name(name, "capture name"), int(n_rx)
        if self.n_rx < 1 or not 0 < float(samp_rate) < float("inf") or int(max_samples) < 0:
            raise CaptureError(f"capture: n_rx >= 1, samp_rate > 0 and max_samples >= 0 needed, got {n_rx}, "
                               f"{samp_rate}, {max_samples}")
        self.samp_rate, self.center_freq, self.max_samples = float(samp_rate), float(center_freq), int(max_samples)
        self.info = validate_info(info)
        self.description = description
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CaptureError(f"{self.folder}: exists and is not a folder") from None
        try:
            self._files = [open(self._data_path(r), "wb") for r in range(self.n_rx)]
        except OSError as exc:
            raise CaptureError(f"{self.folder}: cannot write the capture ({exc.strerror or exc})") from None
        self.written = 0
        self.truncated = False
        self._captures: list[tuple[int, int, float | None]] = []  # (sample_start, global_index, seconds)
        self._annotations: list[tuple[int, int, dict]] = []
        self.closed = False

    def _data_path(self, r: int) -> Path:
        return self.folder / f"{self.name}-ch{r}.sigmf-data"

    def segment(self, global_index: int, seconds: float | None = None) -> None:
        """The next samples start a new contiguous stretch at device sample ``global_index`` (time
        ``seconds`` since the device's epoch, if known)."""
        if self._captures and self._captures[-1][0] == self.written:
            self._captures[-1] = (self.written, int(global_index), seconds)
        else:
            self._captures.append((self.written, int(global_index), seconds))

    def write(self, samples: np.ndarray) -> int:
        """Append ``samples (n_rx, n)``; returns how many were written (fewer past ``max_samples``)."""
        if self.closed:
            return 0
        if not self._captures:
            self.segment(0)
        n = samples.shape[1]
        if self.max_samples:
            n = max(0, min(n, self.max_samples - self.written))
            self.truncated |= n < samples.shape[1]
        for r, f in enumerate(self._files):
            f.write(np.ascontiguousarray(samples[r, :n], dtype="<c8").tobytes())
        self.written += n
        return n

    def annotate(self, sample_start: int, length: int, label: str, fields: dict) -> None:
        """An annotation from ``sample_start`` (a file index; it may lie ahead of what was written so
        far: annotations outside the recording are dropped at :meth:`close`)."""
        if sample_start >= 0:
            self._annotations.append((int(sample_start), int(length), {"core:label": label, **fields}))

    def close(self) -> Path:
        """Close the data files and write the Recordings' metadata and the collection; returns the
        collection's path. Called again (e.g. after late annotations) it rewrites the metadata."""
        if not self.closed:
            self.closed = True
            for f in self._files:
                f.close()
        metas = []
        for r in range(self.n_rx):
            glob = {"core:datatype": "cf32_le", "core:sample_rate": self.samp_rate,
                    "core:version": sigmf.__specification__, "core:recorder": "gr-neuralmimo frame_recorder",
                    "core:description": self.description or f"receive channel {r} of {self.n_rx}",
                    "core:extensions": [EXTENSION], f"{NAMESPACE}:channel": r, f"{NAMESPACE}:n_rx": self.n_rx,
                    **{f"{NAMESPACE}:{k}": v for k, v in self.info.items()}}
            # an empty data file cannot be memory-mapped (a recorder switched off the whole run):
            # its metadata are written without a checksum
            data = self._data_path(r) if self.written else None
            meta = SigMFFile(data_file=data, global_info=glob, skip_checksum=data is None)
            for start, gidx, secs in self._captures:
                cap = {"core:frequency": self.center_freq, "core:global_index": gidx}
                if secs is not None:
                    cap["core:datetime"] = _iso(secs)
                meta.add_capture(start, metadata=cap)
            for start, length, fields in sorted(self._annotations, key=lambda a: a[0]):
                if start < self.written:
                    meta.add_annotation(start, min(length, self.written - start), metadata=fields)
            path = self.folder / f"{self.name}-ch{r}"
            meta.tofile(path, overwrite=True)
            metas.append(path.with_suffix(".sigmf-meta").name)
        coll = SigMFCollection(metafiles=metas, metadata={"collection": {
            "core:version": sigmf.__specification__, "core:extensions": [EXTENSION],
            "core:description": self.description or f"{self.n_rx}-channel gr-neuralmimo capture"}},
            base_path=str(self.folder))
        out = self.folder / f"{self.name}.sigmf-collection"
        coll.tofile(str(out), overwrite=True)
        return out


def validate_info(info: dict) -> dict:
    """The ``neuralmimo`` fields, type-checked; ``CaptureError`` names the first bad one."""
    out = {}
    for key, (typ, check) in {**LAYOUT_FIELDS, **OPTIONAL_FIELDS}.items():
        if key not in info:
            if key in LAYOUT_FIELDS:
                raise CaptureError(f"capture metadata lacks {NAMESPACE}:{key}")
            continue
        v = info[key]
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, typ) or isinstance(v, bool) or not check(v):
            raise CaptureError(f"capture metadata {NAMESPACE}:{key} = {v!r} is not a valid {typ.__name__}")
        out[key] = v
    return out


@dataclass
class Capture:
    """A capture read back: ``samples (n_rx, n)`` complex64 (memory-mapped), ``segments`` ``[(sample
    start, global index, seconds or None)]``, the ``neuralmimo`` ``info``, ``samp_rate``, the
    annotations of channel 0 and the collection's path."""

    samples: np.ndarray
    segments: list
    info: dict
    samp_rate: float
    annotations: list
    path: Path

    @property
    def n_rx(self) -> int:
        return self.samples.shape[0]


def read_capture(path: Path) -> Capture:
    """Read a capture from its ``.sigmf-collection`` (or the folder holding exactly one).
    Every field used is validated; ``CaptureError`` with the reason otherwise (never a traceback
    from deep inside)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.sigmf-collection"))
        if len(found) != 1:
            raise CaptureError(f"{path}: expected one .sigmf-collection, found {len(found)}")
        path = found[0]
    if not path.is_file():
        raise CaptureError(f"{path}: no such capture")
    try:
        coll = json.loads(path.read_text())["collection"]
        streams = coll["core:streams"]
        names = [s["name"] for s in streams]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CaptureError(f"{path}: not a SigMF collection ({exc})") from None
    if not names or not all(isinstance(n, str) and n for n in names):
        raise CaptureError(f"{path}: the collection lists no recording, or a stream without a name")
    if len(set(names)) != len(names):
        raise CaptureError(f"{path}: the collection lists one recording more than once ({sorted(names)}): each "
                           "receive channel is its own recording")
    chans, ref = [], None
    for name in names:
        meta_path = path.parent / f"{Path(name).name}.sigmf-meta"
        try:
            meta = sigmf.sigmffile.fromfile(str(meta_path))
        except Exception as exc:  # the sigmf package raises its own error types and OSError
            raise CaptureError(f"{meta_path}: cannot read ({type(exc).__name__}: {exc})") from None
        g = meta.get_global_info()
        if g.get("core:datatype") != "cf32_le":
            raise CaptureError(f"{meta_path}: datatype {g.get('core:datatype')!r}, expected cf32_le")
        info = validate_info({k.split(":", 1)[1]: v for k, v in g.items() if k.startswith(f"{NAMESPACE}:")})
        rate = g.get("core:sample_rate")
        if not isinstance(rate, (int, float)) or not 0 < rate < float("inf"):
            raise CaptureError(f"{meta_path}: core:sample_rate {rate!r} is not a positive number")
        if ref is None:
            ref = (info, float(rate), meta)
        elif (info, float(rate)) != ref[:2]:
            raise CaptureError(f"{meta_path}: its frame layout or sample rate differs from the first channel's")
        data = path.parent / f"{Path(name).name}.sigmf-data"
        try:
            chans.append(np.memmap(data, dtype="<c8", mode="r"))
        except (OSError, ValueError) as exc:
            raise CaptureError(f"{data}: cannot map the samples ({exc})") from None
    n = min(len(c) for c in chans)
    if any(len(c) != n for c in chans):
        raise CaptureError(f"{path}: the channels hold different numbers of samples")
    info, rate, meta = ref
    segments = []
    for cap in meta.get_captures():
        start, gidx = cap.get("core:sample_start", 0), cap.get("core:global_index", None)
        if not isinstance(start, int) or not isinstance(gidx, int) or start < 0 or gidx < 0:
            raise CaptureError(f"{path}: a capture segment lacks a valid core:sample_start/core:global_index")
        secs = None
        if "core:datetime" in cap:
            try:
                t = _dt.datetime.strptime(cap["core:datetime"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=_dt.timezone.utc)
            except (TypeError, ValueError):
                raise CaptureError(f"{path}: core:datetime {cap['core:datetime']!r} is not an ISO 8601 UTC time "
                                   "(YYYY-MM-DDTHH:MM:SS.ffffffZ)") from None
            secs = (t - _dt.datetime.fromtimestamp(0, _dt.timezone.utc)).total_seconds()
        segments.append((start, gidx, secs))
    if [s for s, _, _ in segments] != sorted(s for s, _, _ in segments):
        raise CaptureError(f"{path}: capture segments out of order")
    samples = np.stack([np.asarray(c[:n]) for c in chans]).astype(np.complex64, copy=False)
    return Capture(samples, segments, info, rate, meta.get_annotations(), path)

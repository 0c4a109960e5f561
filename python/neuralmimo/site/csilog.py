"""CSI logs: the channel and noise-variance estimates a receiver saw, frame by frame.

A site's channel statistics are what a detector is trained for, and the receiver estimates
them on every frame anyway (the ``csi``/``noise_var`` tags). A CSI log keeps those estimates on
disk, for re-training on the site's own channels (the ``file`` channel model reads a log folder,
:mod:`neuralmimo.channels.external`) and for watching them drift.

A log is a folder::

    manifest.json          format, version, Nr, Nt, the receiver's description, the chunks
    csi-000001.npz ...     h (n, Nr, Nt) complex64, noise_var (n,) float64, frame (n,) int64

Chunks of ``chunk_frames`` frames are written whole (``.npz`` through a temporary name, then the
manifest is replaced), so a log read at any moment is consistent. With ``max_bytes`` the oldest
chunks are deleted to stay within the bound: a site log keeps the most recent statistics.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FORMAT = "neuralmimo-csi-log"
VERSION = 1
MANIFEST = "manifest.json"
MAX_HELD_CHUNKS = 4  # chunks of frames held in memory while the folder cannot be written


class CSILogError(ValueError):
    """A CSI log cannot be written or read; the message says why, in one line."""


def is_csi_log(path) -> bool:
    """``path`` is a folder holding a CSI log manifest."""
    p = Path(path)
    if not (p / MANIFEST).is_file():
        return False
    try:
        return json.loads((p / MANIFEST).read_text()).get("format") == FORMAT
    except (OSError, ValueError):
        return False


class CSILogWriter:
    """Appends frames' estimates to a CSI log folder (created; an existing log of the same
    ``Nr x Nt`` is continued, a different one refused).

    ``chunk_frames``: frames per chunk file; ``max_bytes``: bound on the chunks' total size (0:
    none); ``info``: JSON-able description stored in the manifest (system, channel, flowgraph).
    """

    def __init__(self, folder, nr: int, nt: int, chunk_frames: int = 1024, max_bytes: int = 0, info: dict | None = None):
        if nr < 1 or nt < 1 or chunk_frames < 1 or max_bytes < 0:
            raise CSILogError(f"CSI log: nr, nt and chunk_frames must be >= 1 and max_bytes >= 0, got {nr}, {nt}, "
                              f"{chunk_frames}, {max_bytes}")
        self.folder, self.nr, self.nt = Path(folder), int(nr), int(nt)
        self.chunk_frames, self.max_bytes = int(chunk_frames), int(max_bytes)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise CSILogError(f"{self.folder}: exists and is not a folder") from None
        except OSError as e:
            raise CSILogError(f"{self.folder}: cannot create the log folder ({e.strerror or e})") from None
        if (self.folder / MANIFEST).exists():
            m = _read_manifest(self.folder)
            if (m["nr"], m["nt"]) != (self.nr, self.nt):
                raise CSILogError(f"{self.folder}: holds a {m['nr']}x{m['nt']} CSI log, not {self.nr}x{self.nt}: "
                                  "choose another folder")
            self.manifest = m
        else:
            self.manifest = {"format": FORMAT, "version": VERSION, "nr": self.nr, "nt": self.nt, "info": info or {},
                             "chunks": [], "frames_written": 0, "frames_dropped": 0, "next_chunk": 1}
        self._h, self._nv, self._frame = [], [], []
        self.frames_lost = 0  # frames dropped while the folder could not be written

    def add(self, frame: int, h, noise_var: float) -> None:
        """One frame's ``(Nr, Nt)`` estimate and noise variance; a chunk is written when full."""
        h = np.asarray(h.numpy() if isinstance(h, torch.Tensor) else h, dtype=np.complex64)
        if h.shape != (self.nr, self.nt):
            raise CSILogError(f"CSI log: an estimate of shape {h.shape}, expected {(self.nr, self.nt)}")
        self._h.append(h)
        self._nv.append(float(noise_var))
        self._frame.append(int(frame))
        if len(self._h) % self.chunk_frames == 0:  # after a failed write: tried again one chunk later
            self.flush()

    def flush(self) -> None:
        """Write the frames held so far as a chunk (no-op when none). If the folder cannot be
        written (removed, read-only, full) the ``OSError`` propagates and the frames stay held,
        to be written with the next chunk (a folder restored meanwhile loses nothing); at most
        ``MAX_HELD_CHUNKS`` chunks are held, older frames are then dropped (:attr:`frames_lost`)."""
        if not self._h:
            return
        name = f"csi-{self.manifest['next_chunk']:06d}.npz"
        tmp = self.folder / (name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, h=np.stack(self._h), noise_var=np.asarray(self._nv),
                         frame=np.asarray(self._frame, np.int64))
            os.replace(tmp, self.folder / name)
        except OSError:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            excess = len(self._h) - MAX_HELD_CHUNKS * self.chunk_frames
            if excess > 0:
                del self._h[:excess], self._nv[:excess], self._frame[:excess]
                self.frames_lost += excess
            raise
        self.manifest["chunks"].append({"file": name, "frames": len(self._h), "first_frame": self._frame[0],
                                        "last_frame": self._frame[-1], "bytes": (self.folder / name).stat().st_size})
        self.manifest["frames_written"] += len(self._h)
        self.manifest["next_chunk"] += 1
        self._h, self._nv, self._frame = [], [], []
        dropped = []
        while self.max_bytes and len(self.manifest["chunks"]) > 1 and self.bytes() > self.max_bytes:
            dropped.append(self.manifest["chunks"].pop(0))  # the oldest statistics go first
            self.manifest["frames_dropped"] += dropped[-1]["frames"]
        self._write_manifest()
        for c in dropped:  # after the manifest no longer names them
            (self.folder / c["file"]).unlink(missing_ok=True)

    def held(self) -> int:
        """Frames added but not written yet."""
        return len(self._h)

    def bytes(self) -> int:
        return sum(c["bytes"] for c in self.manifest["chunks"])

    def frames(self) -> int:
        """Frames in the log (written and still kept) plus those not yet flushed."""
        return sum(c["frames"] for c in self.manifest["chunks"]) + len(self._h)

    def close(self) -> None:
        self.flush()

    def _write_manifest(self) -> None:
        tmp = self.folder / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=1))
        os.replace(tmp, self.folder / MANIFEST)


def _read_manifest(folder: Path) -> dict:
    try:
        m = json.loads((folder / MANIFEST).read_text())
    except OSError as e:
        raise CSILogError(f"{folder}: not a CSI log ({e.strerror})") from None
    except ValueError:
        raise CSILogError(f"{folder}: {MANIFEST} is not valid JSON") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise CSILogError(f"{folder}: not a CSI log (format {m.get('format') if isinstance(m, dict) else None!r})")
    if m.get("version") != VERSION:
        raise CSILogError(f"{folder}: CSI log version {m.get('version')!r}, this reader knows {VERSION}")
    for key in ("nr", "nt"):
        if not isinstance(m.get(key), int) or m[key] < 1:
            raise CSILogError(f"{folder}: manifest field {key} must be a positive integer")
    if not isinstance(m.get("chunks"), list):
        raise CSILogError(f"{folder}: manifest field chunks must be a list")
    return m


def frames_since(folder, frame: int) -> int:
    """Frames numbered ``frame`` or later in a log's written chunks, from its manifest alone (a
    chunk that straddles ``frame`` counts its frames from ``frame`` to its last); 0 while the
    log does not exist yet."""
    try:
        m = _read_manifest(Path(folder))
    except CSILogError:
        return 0
    n = 0
    for c in m["chunks"]:
        first, last, count = c.get("first_frame"), c.get("last_frame"), c.get("frames", 0)
        if not isinstance(first, int) or not isinstance(last, int):
            continue
        if first >= frame:
            n += count
        elif last >= frame:
            n += min(count, last - frame + 1)
    return n


@dataclass
class CSILog:
    """A CSI log read back: ``h (n, Nr, Nt)`` complex64, ``noise_var (n,)``, ``frame (n,)``."""

    h: torch.Tensor
    noise_var: np.ndarray
    frame: np.ndarray
    info: dict
    frames_dropped: int


def read_csi_log(folder) -> CSILog:
    """Every kept chunk of a log, in order; :class:`CSILogError` (one line) for a missing or
    inconsistent file."""
    folder = Path(folder)
    m = _read_manifest(folder)
    hs, nvs, frames = [], [], []
    for c in m["chunks"]:
        name = c.get("file") if isinstance(c, dict) else None
        if not isinstance(name, str) or "/" in name or not name.endswith(".npz"):
            raise CSILogError(f"{folder}: manifest names a bad chunk {c!r}")
        try:
            with np.load(folder / name, allow_pickle=False) as z:
                h, nv, fr = z["h"], z["noise_var"], z["frame"]
        except (OSError, KeyError, ValueError) as e:
            raise CSILogError(f"{folder}: chunk {name} cannot be read ({e})") from None
        if h.shape[1:] != (m["nr"], m["nt"]) or not (len(h) == len(nv) == len(fr) == c.get("frames")):
            raise CSILogError(f"{folder}: chunk {name} does not match the manifest ({h.shape}, {len(nv)} noise "
                              f"variances, {len(fr)} frame numbers, manifest {c.get('frames')} frames)")
        hs.append(h)
        nvs.append(nv)
        frames.append(fr)
    if not hs:
        raise CSILogError(f"{folder}: the CSI log holds no frames yet")
    return CSILog(torch.from_numpy(np.concatenate(hs)).to(torch.complex64), np.concatenate(nvs),
                  np.concatenate(frames), m.get("info") or {}, int(m.get("frames_dropped", 0)))

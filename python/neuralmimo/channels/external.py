"""Channels from files: QuaDRiGa, ray tracers and measurements (``docs/external-channels.md``).

A small **mapping file** (YAML or JSON) says how to read a channel array from a MATLAB ``.mat``
(v5 through scipy, v7.3 through h5py), HDF5 or ``.npz`` file::

    file: task050.mat        # relative to the mapping file
    h: H                     # the complex array (a variable, an HDF5 dataset path or an .npz key)
    axes: [tx, rx, sample]   # its axes as the file's own tool shows them (MATLAB's order for .mat)
    users: 8                 # keep the first 8 transmit streams (default: all)
    antennas: 32             # keep the first 32 receive antennas (default: all)
    normalise: ue            # none | set (unit mean power per entry over the file) | ue (||H||_F^2 = Nr Nt each)
    split: [0.81, 0.09, 0.10]  # train/val/test fractions (seeded shuffle), or the name of an array of 0/1/2

``axes`` names every axis: ``rx`` (receive antennas), ``tx`` (transmit streams: users or their
ports) and one or more ``sample`` axes (UEs, snapshots, subcarriers...), flattened in order into
the channel index. ``real``/``imag`` name two real arrays instead of ``h``; ``complex: false``
declares real-valued channels (DetNet's, DeepSIC's synthetic one), so that a complex array in a
real mapping -- or a real array in a complex one -- is an error instead of a silent conversion.

A receiver's CSI log folder (:mod:`neuralmimo.site.csilog`) is read the same way, without a mapping.

The result is a ``(n, Nr, Nt)`` complex64 tensor with a train/val/test split, used by the
``file`` channel model (:class:`FileChannel`: every config, CLI option and GRC block that takes a
channel), by learngene tasks (``data.task_files``), DeepSIC scenarios (a scenario's channel) and
HyperMIMO drops (``system.drop_files``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..site.csilog import is_csi_log, read_csi_log
from .base import StoredChannels

AXES = ("rx", "tx", "sample")
FORMATS = ("mat", "hdf5", "npz")
NORMALISATIONS = ("none", "set", "ue")
_EXTENSIONS = {".mat": "mat", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5", ".npz": "npz"}
_MAT73 = b"MATLAB 7.3 MAT-file"


class ChannelFileError(ValueError):
    """A channel file or its mapping cannot be used; the message says why, in one line."""


@dataclass(frozen=True)
class ChannelMapping:
    """How to read channels from a file (the fields of a mapping file, validated)."""

    file: Path
    axes: tuple[str, ...]
    h: str | None = None
    real: str | None = None
    imag: str | None = None
    format: str | None = None
    complex: bool = True
    users: int | None = None
    antennas: int | None = None
    normalise: str = "none"
    split: list | str = field(default_factory=lambda: [0.81, 0.09, 0.10])
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict, base: Path = Path(".")) -> "ChannelMapping":
        """Validate every field; paths relative to ``base`` (the mapping file's folder)."""
        where = str(base)
        if not isinstance(data, dict):
            raise ChannelFileError(f"{where}: a channel mapping is a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ChannelFileError(f"{where}: unknown mapping keys {unknown}; known: {sorted(known)}")
        if not isinstance(data.get("file"), str):
            raise ChannelFileError(f"{where}: 'file' (the channel file) is required")
        axes = data.get("axes")
        if not isinstance(axes, list) or not all(isinstance(a, str) for a in axes):
            raise ChannelFileError(f"{where}: 'axes' must list the array's axes, each one of {AXES}")
        bad = [a for a in axes if a not in AXES]
        if bad or axes.count("rx") != 1 or axes.count("tx") != 1:
            raise ChannelFileError(f"{where}: axes {axes} must hold 'rx' and 'tx' once each and otherwise 'sample' "
                                   f"(bad: {bad})")
        h, re_, im = data.get("h"), data.get("real"), data.get("imag")
        if (h is None) == (re_ is None and im is None) or (h is None and (re_ is None or im is None)):
            raise ChannelFileError(f"{where}: name the channel array with 'h', or two real arrays with 'real' "
                                   "and 'imag'")
        fmt = data.get("format") or _EXTENSIONS.get(Path(data["file"]).suffix.lower())
        if fmt not in FORMATS:
            raise ChannelFileError(f"{where}: format {fmt!r} of {data['file']} is not one of {FORMATS} "
                                   "(set 'format')")
        for key in ("users", "antennas", "seed"):
            v = data.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < (0 if key == "seed" else 1)):
                raise ChannelFileError(f"{where}: {key} must be a {'non-negative' if key == 'seed' else 'positive'} "
                                       f"integer, got {v!r}")
        if not isinstance(data.get("complex", True), bool):
            raise ChannelFileError(f"{where}: complex must be true or false")
        if data.get("normalise", "none") not in NORMALISATIONS:
            raise ChannelFileError(f"{where}: normalise must be one of {NORMALISATIONS}, got {data.get('normalise')!r}")
        split = data.get("split", [0.81, 0.09, 0.10])
        if isinstance(split, list):
            if len(split) != 3 or not all(isinstance(x, (int, float)) and x >= 0 for x in split) \
                    or not math.isclose(sum(split), 1.0, abs_tol=1e-6):
                raise ChannelFileError(f"{where}: split must be three train/val/test fractions summing to 1, "
                                       f"or the name of an array of 0/1/2; got {split!r}")
        elif not isinstance(split, str):
            raise ChannelFileError(f"{where}: split must be fractions or an array name, got {split!r}")
        return cls(**{**data, "file": (base / data["file"]).resolve(), "axes": tuple(axes), "format": fmt,
                      "split": split})

    @classmethod
    def load(cls, path) -> "ChannelMapping":
        """A mapping from its YAML/JSON file."""
        import yaml  # lazily: only the lab imports yaml at module level

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as e:
            raise ChannelFileError(f"{path}: cannot read the channel mapping ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ChannelFileError(f"{path}: not valid YAML/JSON ({str(e).splitlines()[0]})") from None
        return cls.from_dict(data, path.parent)


# ------------------------------------------------------------------------------------ reading
def _is_mat73(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(len(_MAT73)) == _MAT73


def _from_hdf5(path: Path, name: str, matlab: bool) -> np.ndarray:
    try:
        import h5py
    except ImportError:
        raise ChannelFileError(f"{path}: reading HDF5 / MATLAB v7.3 files needs h5py (installed in the lab "
                               "environment: use .venv/lab/bin/neuralmimo)") from None
    with h5py.File(path, "r") as f:
        if name not in f:
            raise ChannelFileError(f"{path}: no dataset {name!r}; it holds {sorted(f.keys())}")
        a = f[name][()]
    if a.dtype.names is not None:  # complex stored as a compound (MATLAB v7.3, h5py's own default)
        keys = {k.lower(): k for k in a.dtype.names}
        if {"real", "imag"} <= set(keys):
            a = a[keys["real"]] + 1j * a[keys["imag"]]
        elif {"r", "i"} <= set(keys):
            a = a[keys["r"]] + 1j * a[keys["i"]]
        else:
            raise ChannelFileError(f"{path}: {name} is a compound of {a.dtype.names}, not a complex number")
    # MATLAB writes column-major arrays: h5py shows their axes reversed
    return np.ascontiguousarray(a.T) if matlab else np.asarray(a)


def read_array(path: Path, name: str, fmt: str) -> np.ndarray:
    """Array ``name`` from a ``mat``, ``hdf5`` or ``npz`` file, with its axes as MATLAB (for
    ``.mat``, both versions) or numpy/h5py show them."""
    if not path.is_file():
        raise ChannelFileError(f"{path}: no such channel file")
    if fmt == "npz":
        with np.load(path, allow_pickle=False) as z:
            if name not in z.files:
                raise ChannelFileError(f"{path}: no array {name!r}; it holds {sorted(z.files)}")
            return z[name]
    if fmt == "hdf5":
        return _from_hdf5(path, name, matlab=_is_mat73(path))
    if _is_mat73(path):
        return _from_hdf5(path, name, matlab=True)
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path), variable_names=[name])
    except (ValueError, OSError) as e:
        raise ChannelFileError(f"{path}: not a readable MATLAB file ({e})") from None
    if name not in data:
        names = [n for n, *_ in scipy.io.whosmat(str(path))]
        raise ChannelFileError(f"{path}: no variable {name!r}; it holds {sorted(names)}")
    return data[name]


def _split(mapping: ChannelMapping, n: int) -> np.ndarray:
    if isinstance(mapping.split, str):
        s = np.asarray(read_array(mapping.file, mapping.split, mapping.format)).reshape(-1)
        if s.shape[0] != n or not np.isin(s, (0, 1, 2)).all():
            raise ChannelFileError(f"{mapping.file}: split array {mapping.split!r} must hold {n} values in 0/1/2 "
                                   f"(train/val/test), got {s.shape[0]} values")
        return s.astype(np.int8)
    return split_by_fractions(n, mapping.split, mapping.seed)


def split_by_fractions(n: int, fractions, seed: int = 0) -> np.ndarray:
    """0/1/2 (train/val/test) for ``n`` channels: ``floor(fraction x n)`` to val and test, the
    rest to train, by a permutation seeded with ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    counts = np.floor(np.asarray(fractions) * n).astype(int)
    counts[0] = n - counts[1] - counts[2]
    s = np.zeros(n, np.int8)
    s[order[counts[0]:counts[0] + counts[1]]] = 1
    s[order[counts[0] + counts[1]:]] = 2
    return s


def load_channels(mapping: ChannelMapping) -> dict:
    """``{"h": (n, Nr, Nt) complex64 tensor, "split": (n,) int8 array (0 train, 1 val, 2 test)}``
    from a mapping; :class:`ChannelFileError` (one line) for a wrong shape, a complex/real
    mismatch, missing arrays, too few users/antennas or non-finite values."""
    f = mapping.file
    if mapping.h is not None:
        a = np.asarray(read_array(f, mapping.h, mapping.format))
        name = mapping.h
        if np.iscomplexobj(a) != mapping.complex:
            what = "complex" if np.iscomplexobj(a) else f"real ({a.dtype})"
            fix = ("set complex: true" if np.iscomplexobj(a) else
                   "set complex: false for real-valued channels, or map a complex array")
            raise ChannelFileError(f"{f}: {name} is {what} but the mapping says "
                                   f"{'complex' if mapping.complex else 'real'}: {fix}")
    else:
        re_, im = (np.asarray(read_array(f, n, mapping.format)) for n in (mapping.real, mapping.imag))
        name = f"{mapping.real}/{mapping.imag}"
        if np.iscomplexobj(re_) or np.iscomplexobj(im):
            raise ChannelFileError(f"{f}: real/imag arrays {name} must be real-valued")
        if re_.shape != im.shape:
            raise ChannelFileError(f"{f}: {mapping.real} {re_.shape} and {mapping.imag} {im.shape} differ in shape")
        if not mapping.complex:
            raise ChannelFileError(f"{f}: real and imag arrays map complex channels: remove complex: false")
        a = re_ + 1j * im
    if not np.issubdtype(a.dtype, np.number):
        raise ChannelFileError(f"{f}: {name} holds {a.dtype}, not numbers")
    if a.ndim != len(mapping.axes):
        raise ChannelFileError(f"{f}: {name} has {a.ndim} axes {a.shape} but the mapping names {len(mapping.axes)} "
                               f"{list(mapping.axes)}")
    rx, tx = mapping.axes.index("rx"), mapping.axes.index("tx")
    samples = [i for i, ax in enumerate(mapping.axes) if ax == "sample"]
    a = np.transpose(a, samples + [rx, tx]).reshape(-1, a.shape[rx], a.shape[tx])
    for key, axis, what in (("antennas", 1, "receive antennas"), ("users", 2, "transmit streams")):
        want = getattr(mapping, key)
        if want is not None:
            if want > a.shape[axis]:
                raise ChannelFileError(f"{f}: {name} has {a.shape[axis]} {what}, the mapping asks for {key} = {want}")
            a = a[:, :want] if axis == 1 else a[:, :, :want]
    if a.shape[0] == 0:
        raise ChannelFileError(f"{f}: {name} holds no channels")
    if not np.isfinite(a).all():
        raise ChannelFileError(f"{f}: {name} holds {int((~np.isfinite(a)).sum())} non-finite values")
    h = torch.from_numpy(np.ascontiguousarray(a)).to(torch.complex64)
    if mapping.normalise == "set":
        h = h / h.abs().square().mean().sqrt()
    elif mapping.normalise == "ue":
        power = h.abs().square().mean((-2, -1), keepdim=True)
        if bool((power == 0).any()):
            raise ChannelFileError(f"{f}: {name} has all-zero channels: 'ue' normalisation is undefined")
        h = h / power.sqrt()
    return {"h": h, "split": _split(mapping, h.shape[0])}


# ------------------------------------------------------------------------------ channel model
class FileChannel(StoredChannels):
    """Channels drawn (with replacement) from a file's ``split`` (``train``, ``val``, ``test``
    or ``all``) through a :class:`ChannelMapping`; the ``file`` channel model."""

    def __init__(self, mapping, split: str = "all", since_frame: int | None = None):
        if split != "all" and split not in self.SPLITS:  # before reading a file
            raise ChannelFileError(f"split must be train, val, test or all, got {split!r}")
        data = channel_set(mapping, since_frame)
        self.mapping = data["mapping"]
        self.h = self.split_of(data["h"], data["split"], split, data["source"])
        self.nr, self.nt = int(self.h.shape[1]), int(self.h.shape[2])
        self.real_valued = self.mapping is not None and not self.mapping.complex


def channel_set(source, since_frame: int | None = None) -> dict:
    """The channels of a mapping file (or :class:`ChannelMapping`) or of a receiver's CSI log
    folder (split 81/9/10 % by a seeded shuffle): :func:`load_channels`' ``{"h", "split"}`` plus
    ``"mapping"`` (``None`` for a CSI log) and ``"source"`` (the file or folder read).
    ``since_frame``: of a CSI log, only the frames numbered from it on (what the receiver saw
    after its users moved)."""
    if not isinstance(source, ChannelMapping) and is_csi_log(source):  # a receiver's own CSI log
        log = read_csi_log(source)
        h = log.h
        if since_frame is not None:
            h = h[torch.from_numpy(log.frame >= int(since_frame))]
            if h.shape[0] == 0:
                raise ChannelFileError(f"{source}: the CSI log holds no frame numbered {since_frame} or later "
                                       f"(its last is {int(log.frame.max())})")
        return {"h": h, "split": split_by_fractions(h.shape[0], (0.81, 0.09, 0.10)), "mapping": None,
                "source": Path(source)}
    if since_frame is not None:
        raise ChannelFileError(f"{source}: since_frame selects frames of a CSI log, not of a channel file")
    mapping = source if isinstance(source, ChannelMapping) else ChannelMapping.load(source)
    return {**load_channels(mapping), "mapping": mapping, "source": mapping.file}



def make_file_channel(nr: int, nt: int, mapping: str, split: str = "all", since_frame: int | None = None) -> FileChannel:
    """The ``file`` channel by name (``channels.make_channel``): ``mapping`` is a mapping file, or
    a CSI log folder (:mod:`neuralmimo.site.csilog`, split 81/9/10 % by a seeded shuffle; with
    ``since_frame`` only its frames from that number on)."""
    return FileChannel(mapping, split, since_frame)

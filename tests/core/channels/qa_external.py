"""Channels from files (``channels/external.py``): the same channels come back from MATLAB v5
(scipy), MATLAB v7.3 and HDF5 (h5py, written as MATLAB and h5py write them) and .npz through a
mapping file, in any axis order; every mistake in a mapping is a one-line ChannelFileError; the
``file`` channel model draws from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from neuralmimo.channels import ChannelFileError, ChannelMapping, load_channels, make_channel

UES, NR, NT = 40, 6, 3


@pytest.fixture
def h():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((UES, NR, NT)) + 1j * rng.standard_normal((UES, NR, NT))).astype(np.complex64)


def _mapping(tmp_path, name="m.json", **fields):
    (tmp_path / name).write_text(json.dumps(fields))
    return tmp_path / name


def _write_mat73(path, name, matlab_array):
    """As MATLAB -v7.3 writes: HDF5 with a 512-byte user block naming the format, column-major
    (h5py sees the axes reversed), complex as a {real, imag} compound."""
    h5py = pytest.importorskip("h5py")
    a = np.ascontiguousarray(matlab_array.T)
    compound = np.empty(a.shape, dtype=[("real", "<f8"), ("imag", "<f8")])
    compound["real"], compound["imag"] = a.real, a.imag
    with h5py.File(path, "w", userblock_size=512) as f:
        f.create_dataset(name, data=compound)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Wed Dec  2 2026 HDF5 schema 1.00 .")


def test_every_format_and_axis_order_gives_the_same_channels(tmp_path, h):
    import scipy.io

    np.savez(tmp_path / "c.npz", H=h)
    scipy.io.savemat(tmp_path / "v5.mat", {"H": h.transpose(2, 1, 0)})  # MATLAB order (tx, rx, ue)
    cases = [("c.npz", ["sample", "rx", "tx"]), ("v5.mat", ["tx", "rx", "sample"])]
    try:
        _write_mat73(tmp_path / "v73.mat", "H", h.transpose(1, 2, 0))  # (rx, tx, ue) as MATLAB shows it
        import h5py

        with h5py.File(tmp_path / "c.h5", "w") as f:
            f.create_dataset("chan/H", data=h.reshape(4, 10, NR, NT))  # two sample axes
        cases += [("v73.mat", ["rx", "tx", "sample"]), ("c.h5", ["sample", "sample", "rx", "tx"])]
    except pytest.skip.Exception:
        pass  # no h5py in this environment (rx): v5 and .npz only
    for i, (file, axes) in enumerate(cases):
        name = "chan/H" if file == "c.h5" else "H"
        m = ChannelMapping.load(_mapping(tmp_path, f"m{i}.json", file=file, h=name, axes=axes))
        got = load_channels(m)
        assert got["h"].dtype == torch.complex64 and torch.allclose(got["h"], torch.from_numpy(h)), file
        assert list(np.bincount(got["split"])) == [33, 3, 4]  # floor(9 %, 10 % of 40) to val/test, seeded


def test_real_and_imag_arrays_selection_normalisation_and_split_array(tmp_path, h):
    split = np.repeat([0, 1, 2], [20, 10, 10])
    np.savez(tmp_path / "c.npz", re=h.real, im=h.imag, s=split)
    m = ChannelMapping.load(_mapping(tmp_path, file="c.npz", real="re", imag="im", axes=["sample", "rx", "tx"],
                                     users=2, antennas=4, normalise="ue", split="s"))
    got = load_channels(m)
    assert got["h"].shape == (UES, 4, 2) and np.array_equal(got["split"], split)
    assert torch.allclose(got["h"].abs().square().mean((-2, -1)), torch.ones(UES))
    ch = make_channel({"name": "file", "args": {"mapping": str(tmp_path / "m.json"), "split": "val"}}, 4, 2)
    assert ch.h.shape == (10, 4, 2) and ch.sample(7, torch.Generator().manual_seed(0)).shape == (7, 4, 2)
    with pytest.raises(ValueError, match="is 4x2"):
        make_channel({"name": "file", "args": {"mapping": str(tmp_path / "m.json")}}, 8, 2)


@pytest.mark.parametrize("fields, message", [
    ({"h": "R", "axes": ["sample", "rx", "tx"]}, "R is real .* mapping says complex: set complex: false"),
    ({"h": "H", "axes": ["sample", "rx", "tx"], "complex": False}, "H is complex but the mapping says real"),
    ({"h": "H", "axes": ["rx", "tx"]}, "H has 3 axes .* names 2"),
    ({"h": "H", "axes": ["sample", "rx", "rx"]}, "must hold 'rx' and 'tx' once each"),
    ({"h": "H", "axes": ["sample", "rx", "tx"], "users": 8}, "has 3 transmit streams, the mapping asks for users = 8"),
    ({"h": "G", "axes": ["sample", "rx", "tx"]}, "no array 'G'; it holds"),
    ({"h": "N", "axes": ["sample", "rx", "tx"]}, "non-finite"),
    ({"h": "H", "axes": ["sample", "rx", "tx"], "split": "bad"}, "split array 'bad' must hold 40 values in 0/1/2"),
    ({"h": "H", "axes": ["sample", "rx", "tx"], "split": [0.5, 0.5, 0.5]}, "fractions summing to 1"),
    ({"h": "H", "axes": ["sample", "rx", "tx"], "normalise": "max"}, "normalise must be one of"),
    ({"h": "H", "real": "R", "axes": ["sample", "rx", "tx"]}, "name the channel array with 'h'"),
    ({"h": "H", "axes": ["sample", "rx", "tx"], "colour": 1}, "unknown mapping keys \\['colour'\\]"),
])
def test_mistakes_are_one_line_errors(tmp_path, h, fields, message):
    bad = h.copy()
    bad[3, 0, 0] = np.nan
    np.savez(tmp_path / "c.npz", H=h, R=h.real, N=bad, bad=np.full(40, 7))
    with pytest.raises(ChannelFileError, match=message) as e:
        load_channels(ChannelMapping.load(_mapping(tmp_path, file="c.npz", **fields)))
    assert "\n" not in str(e.value)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(ChannelFileError, match="no such channel file"):
        load_channels(ChannelMapping.load(_mapping(tmp_path, file="none.npz", h="H", axes=["sample", "rx", "tx"])))
    with pytest.raises(ChannelFileError, match="is not one of"):
        ChannelMapping.load(_mapping(tmp_path, file="c.csv", h="H", axes=["sample", "rx", "tx"]))


def test_csi_log_since_frame_keeps_the_later_frames(tmp_path, h):
    """``since_frame`` keeps a CSI log's frames numbered from it on (what a receiver saw after its
    users moved); none left, or a channel file, is a one-line error."""
    from neuralmimo.site.csilog import CSILogWriter

    w = CSILogWriter(tmp_path / "log", NR, NT, chunk_frames=7)
    for f in range(20):
        w.add(100 + f, h[f], 0.1)
    w.close()
    log = str(tmp_path / "log")
    chan = make_channel({"name": "file", "args": {"mapping": log, "since_frame": 110}}, NR, NT)
    kept = {tuple(x.flatten().tolist()) for x in chan.h}
    assert kept == {tuple(torch.from_numpy(x).flatten().tolist()) for x in h[10:20]}
    with pytest.raises(ChannelFileError, match="no frame numbered 200 or later"):
        make_channel({"name": "file", "args": {"mapping": log, "since_frame": 200}}, NR, NT)
    m = _mapping(tmp_path, file="x.npz", h="H", axes=["sample", "rx", "tx"])
    with pytest.raises(ChannelFileError, match="not of a channel file"):
        make_channel({"name": "file", "args": {"mapping": str(m), "since_frame": 1}}, NR, NT)

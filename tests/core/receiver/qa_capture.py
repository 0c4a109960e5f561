"""SigMF captures: what is written is read back; a bad capture is refused with the reason."""

import json

import numpy as np
import pytest

from neuralmimo.receiver.capture import CaptureError, CaptureWriter, read_capture

INFO = dict(nt=2, n_pilots=8, n_data=64, modulation="qpsk", preamble_period=16, seed=3, sps=4, rolloff=0.35, span=8,
            snr_convention="project")


def _write(folder, **extra):
    w = CaptureWriter(folder, "cap", 3, 2e6, {**INFO, **extra}, max_samples=150)
    x = (np.arange(3 * 200).reshape(3, 200) * (1 + 1j)).astype(np.complex64)
    w.segment(0, 1.7e9)
    w.write(x[:, :100])
    w.segment(500, 1.7e9 + 500 / 2e6)  # 400 samples lost
    w.write(x[:, 100:])
    w.annotate(10, 50, "frame 4", {"neuralmimo:frame": 4})
    w.annotate(400, 50, "frame 9", {"neuralmimo:frame": 9})  # beyond the recording: dropped
    return w, x


def test_round_trip(tmp_path):
    w, x = _write(tmp_path, snr_db=7)
    assert w.truncated and w.written == 150
    w.close()
    c = read_capture(tmp_path)
    assert c.n_rx == 3 and c.samp_rate == 2e6 and np.array_equal(c.samples, x[:, :150])
    assert [(s, g) for s, g, _ in c.segments] == [(0, 0), (100, 500)]
    assert c.segments[1][2] == pytest.approx(1.7e9 + 500 / 2e6, abs=1e-6)
    assert c.info == {**INFO, "snr_db": 7.0}
    assert [a["neuralmimo:frame"] for a in c.annotations] == [4]
    meta = json.loads((tmp_path / "cap-ch1.sigmf-meta").read_text())
    assert meta["global"]["neuralmimo:channel"] == 1 and meta["global"]["core:extensions"][0]["name"] == "neuralmimo"


def test_bad_captures_are_refused_with_the_reason(tmp_path):
    with pytest.raises(CaptureError, match="no such capture"):
        read_capture(tmp_path / "nothing.sigmf-collection")
    with pytest.raises(CaptureError, match="modulation"):
        CaptureWriter(tmp_path, "x", 1, 1e6, {**INFO, "modulation": "8psk"})
    w, _ = _write(tmp_path)
    w.close()
    meta = tmp_path / "cap-ch2.sigmf-meta"
    m = json.loads(meta.read_text())
    m["global"]["neuralmimo:n_data"] = -1
    meta.write_text(json.dumps(m))
    with pytest.raises(CaptureError, match="n_data"):
        read_capture(tmp_path / "cap.sigmf-collection")
    (tmp_path / "cap.sigmf-collection").write_text("{not json")
    with pytest.raises(CaptureError, match="not a SigMF collection"):
        read_capture(tmp_path / "cap.sigmf-collection")


def test_a_collection_listing_one_recording_twice_is_refused(tmp_path):
    """Issue 29, class 8: a collection naming channel 0's recording twice used to read back as a
    two-channel capture of one channel."""
    _write(tmp_path)[0].close()
    path = next(tmp_path.glob("*.sigmf-collection"))
    m = json.loads(path.read_text())
    streams = m["collection"]["core:streams"]
    streams[1] = dict(streams[0])
    path.write_text(json.dumps(m))
    with pytest.raises(CaptureError, match="more than once"):
        read_capture(tmp_path)


def test_writers_refuse_a_file_where_their_folder_should_be_and_names_outside_it(tmp_path):
    from neuralmimo.site.csilog import CSILogError, CSILogWriter

    (tmp_path / "file").write_text("x")
    with pytest.raises(CSILogError, match="not a folder"):
        CSILogWriter(tmp_path / "file", 2, 2)
    with pytest.raises(CaptureError, match="not a folder"):
        _write(tmp_path / "file")
    for name in ("../escape", "a/b", ".hidden", ""):
        with pytest.raises(ValueError, match="name"):
            CaptureWriter(tmp_path / "cap", name, 1, 1e6, INFO)

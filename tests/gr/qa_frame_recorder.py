"""Frame Recorder and SigMF Capture Source in flowgraphs; the shipped capture replays to the live
run's decisions exactly (neuralmimo replay)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gnuradio import gr
from gnuradio.neuralmimo import frame_recorder, radio_impairments, sigmf_source
from gnuradio.neuralmimo.apps.loopback import replay_capture
from neuralmimo.receiver.capture import read_capture

from conftest import run, sinks, sources, tags

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
CAPTURE = ROOT / "tests" / "data" / "ota_capture"


def test_shipped_capture_replays_to_the_live_decisions(tmp_path):
    """The capture was recorded by `neuralmimo loopback --grc examples/loopback_ota.grc --snr 10
    --frames 16 --drop-rate 5e-5 --record tests/data/ota_capture` (live results in live.json):
    the replay gives the same frames and the same symbol errors in each."""
    result = replay_capture(CAPTURE, ROOT / "examples" / "replay_ota.grc", tmp_path)
    assert result["reproduces_live"] == {"probe_zf": True, "probe_mmse": True}
    assert result["probes"]["probe_mmse"]["frames"] >= 10
    cap = read_capture(CAPTURE)
    assert len(cap.segments) >= 2  # it holds an overflow
    assert len(cap.annotations) == result["probes"]["probe_mmse"]["frames"]


def test_recorder_writes_what_it_receives_and_the_source_plays_it_back(tmp_path):
    x = (np.random.default_rng(0).standard_normal((2, 30000)) * (1 + 1j)).astype(np.complex64)
    tb = gr.top_block()
    src = sources(tb, x)
    radio = radio_impairments(2, 1e6, drop_rate=1e-4, drop_length=(100, 900), seed=4)
    rec = frame_recorder(2, str(tmp_path), "rec", 1e6, 0.0, 2, 8, 64, "qpsk", 16, 3)
    live = sinks(tb, 2)
    for k in range(2):
        tb.connect(src[k], (radio, k), (rec, k))
        tb.connect((radio, k), live[k])
    run(tb)
    cap = read_capture(tmp_path)
    got = np.array(live[1].data())
    assert np.array_equal(cap.samples[1], got)
    stamps = tags(live[0], "rx_time")
    assert [s for s, _, _ in cap.segments] == [o for o, _ in stamps]
    assert [g for _, g, _ in cap.segments] == [round((w + f) * 1e6) for _, (w, f) in stamps]
    # played back: the same samples and rx_time tags
    tb2 = gr.top_block()
    play = sigmf_source(str(tmp_path), 2)
    out = sinks(tb2, 2)
    for k in range(2):
        tb2.connect((play, k), out[k])
    run(tb2)
    assert np.array_equal(np.array(out[1].data()), got)
    assert [o for o, _ in tags(out[0], "rx_time")] == [o for o, _ in stamps]
    with pytest.raises(ValueError, match="channels"):
        sigmf_source(str(tmp_path), 3)


def test_replay_command_refuses_a_missing_capture_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "neuralmimo.lab.cli", "replay", str(tmp_path / "none")],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such capture" in r.stderr


_RECORDER_SCRIPT = """
import sys, numpy as np, pmt
from gnuradio import blocks, gr
from gnuradio.neuralmimo import frame_recorder
folder, case = sys.argv[1], sys.argv[2]
tb = gr.top_block()
x = np.ones(5000, np.complex64)
rec = frame_recorder(2, folder, "rec", 1e6, recording=case != "off")
stamp = pmt.make_tuple(pmt.from_uint64(5), pmt.from_double(float("nan")))
tags = [gr.tag_utils.python_to_tag((1000, pmt.intern("rx_time"), stamp))] if case == "nan-time" else []
srcs = [blocks.vector_source_c(x.tolist(), False, 1, tags) for _ in range(2)]
for k in range(2):
    tb.connect(srcs[k], (rec, k))
tb.run()
print("problems", rec.problems())
"""


@pytest.mark.parametrize("case", ["off", "nan-time", "disk-full"])
def test_recorder_never_ends_the_process(tmp_path, case):
    """Issue 29, class 1: a recorder switched off the whole run, an rx_time tag with a NaN
    fraction, a full disk (the data files are /dev/full): the flowgraph ends normally (it used
    to end with SIGABRT, exit 134, at stop or never end), each problem logged and counted. In a
    child process: an abort would otherwise take the test run down."""
    folder = tmp_path / "cap"
    if case == "disk-full":
        folder.mkdir()
        for r in range(2):
            (folder / f"rec-ch{r}.sigmf-data").symlink_to("/dev/full")  # every write: ENOSPC
    script = tmp_path / "rec.py"
    script.write_text(_RECORDER_SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(folder), case], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    if case == "nan-time":
        assert "'bad-rx-time': 1" in out.stdout
        assert read_capture(folder).samples.shape == (2, 5000)
    if case == "off":
        assert (folder / "rec.sigmf-collection").is_file()
    if case == "disk-full":
        assert "'write-failed'" in out.stdout


def test_a_version_2_capture_records_its_format_and_replays_to_the_live_decisions(tmp_path):
    """examples/loopback_ota.grc sends the version-2 format (coarse preamble part, tracking pilots):
    the capture says so (neuralmimo:coarse_period, neuralmimo:pilot_spacing; extension 1.1.0), and
    the replay receiver built from it reproduces the live decisions."""
    from gnuradio.neuralmimo.apps.loopback import ota_loopback_demo

    ota_loopback_demo(ROOT / "examples" / "loopback_ota.grc", [10.0], 8, 3, tmp_path / "live", {}, progress=False,
                      record_to=tmp_path / "cap")
    info = read_capture(tmp_path / "cap").info
    assert info["coarse_period"] == 4 and info["pilot_spacing"] == 16
    result = replay_capture(tmp_path / "cap", ROOT / "examples" / "replay_ota.grc", tmp_path / "replay")
    assert result["reproduces_live"] == {"probe_zf": True, "probe_mmse": True}
    assert result["probes"]["probe_mmse"]["frames"] >= 6

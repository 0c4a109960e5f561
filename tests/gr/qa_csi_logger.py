"""CSI Logger in flowgraphs: what the LS estimator tags is what the log holds (frame numbers,
estimates, noise variances), the disk bound keeps the newest chunks, refused estimates are not
logged, and the lab reads the log folder as a channel."""

import numpy as np
import pmt
import pytest
import torch
from gnuradio import gr
from gnuradio.neuralmimo import csi_logger, ls_channel_estimator
from neuralmimo.channels import make_channel
from neuralmimo.site.csilog import read_csi_log
from neuralmimo.receiver.frames import FrameLayout

from conftest import run, sinks, sources, tag, tags

pytestmark = pytest.mark.timeout(120)
NT, NR, NP, ND = 2, 4, 4, 6
L = NP + ND


def _stream(n_frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    lay = FrameLayout(NT, NP, ND)
    h = torch.randn(n_frames, NR, NT, dtype=torch.complex64, generator=g)
    x = lay.assemble(torch.randn(n_frames, NT, ND, dtype=torch.complex64, generator=g))
    y = h @ x + 0.05 * torch.randn(n_frames, NR, L, dtype=torch.complex64, generator=g)
    return np.concatenate(list(y.numpy()), axis=1)


def _log(tmp_path, n_frames, extra_tags=(), prepare=None, **kw):
    """Estimator -> CSI Logger over ``n_frames`` frames; ``prepare()`` runs after the blocks are
    built, before the flowgraph starts."""
    tb = gr.top_block()
    src = sources(tb, _stream(n_frames), [tag(i * L, "frame_start", pmt.from_long(100 + i)) for i in range(n_frames)])
    est = ls_channel_estimator(NR, NT, NP, ND)
    logger = csi_logger(NR, NT, str(tmp_path / "log"), **kw)
    snk = sinks(tb, 1)
    for r in range(NR):
        tb.connect(src[r], (est, r), (logger, r))
    tb.connect((est, 0), snk[0])
    tb._keep += [est, logger]
    if prepare is not None:
        prepare()
    run(tb)
    return snk[0], logger


def test_the_log_holds_every_frame_as_tagged(tmp_path):
    snk, logger = _log(tmp_path, 25, chunk_frames=10)
    log = read_csi_log(tmp_path / "log")
    csi = [np.asarray(v, np.complex64).reshape(NR, NT) for _, v in tags(snk, "csi")]
    nv = [v for _, v in tags(snk, "noise_var")]
    assert len(csi) == 25 and log.h.shape == (25, NR, NT)
    assert np.array_equal(log.h.numpy(), np.stack(csi)) and np.array_equal(log.noise_var, nv)
    assert list(log.frame) == list(range(100, 125))  # numbered by the frame_start tags
    assert logger.status()["frames_logged"] == 25 and logger.problems() == {}
    assert sorted(p.name for p in (tmp_path / "log").glob("csi-*.npz")) == [f"csi-00000{i}.npz" for i in (1, 2, 3)]
    chan = make_channel({"name": "file", "args": {"mapping": str(tmp_path / "log")}}, NR, NT)  # the lab's view
    assert chan.h.shape == (25, NR, NT)


def test_the_disk_bound_keeps_the_newest_frames(tmp_path):
    _, logger = _log(tmp_path, 60, chunk_frames=10, max_bytes=2500)  # a 10-frame chunk is ~1.2 kB
    log = read_csi_log(tmp_path / "log")
    status = logger.status()
    assert status["bytes"] <= 2500 and status["frames_dropped"] == 60 - len(log.frame) > 0
    assert list(log.frame) == list(range(160 - len(log.frame), 160))  # the newest statistics are kept
    assert len(list((tmp_path / "log").glob("csi-*.npz"))) == len(log.frame) // 10


def test_refused_estimates_are_not_logged(tmp_path):
    tb = gr.top_block()
    n = 4
    stream = np.ones((NR, n * ND), np.complex64)
    good = pmt.init_c32vector(NR * NT, [1 + 0j] * (NR * NT))
    tag_list = []
    for i in range(n):
        tag_list += [tag(i * ND, "frame_start", pmt.from_long(i)), tag(i * ND, "noise_var", pmt.from_double(0.1))]
    tag_list += [tag(0, "csi", good), tag(ND, "csi", pmt.init_c32vector(3, [1j] * 3)),  # wrong size
                 tag(2 * ND, "csi", pmt.init_c32vector(NR * NT, [0j] * (NR * NT))),  # all zero
                 tag(3 * ND, "csi", good), tag(3 * ND, "csi_stale", pmt.intern("bad pilots"))]
    src = sources(tb, stream, tag_list)
    logger = csi_logger(NR, NT, str(tmp_path / "log"))
    for r in range(NR):
        tb.connect(src[r], (logger, r))
    tb._keep += [logger]
    run(tb)
    log = read_csi_log(tmp_path / "log")
    assert list(log.frame) == [0]
    assert logger.problems() == {"bad-estimate": 2, "stale": 1}


def test_record_site_example_logs_every_frame(tmp_path):
    """examples/record_site_csi.py: frame source -> channel -> LS -> CSI Logger, read back as a site."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "record_site_csi.py"
    spec = importlib.util.spec_from_file_location("record_site_csi", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    logger = mod.main([str(tmp_path / "site"), "--frames", "30", "--channel", "iid", "--nr", "8", "--nt", "4"])
    assert logger.status()["frames_logged"] == 30 and logger.problems() == {}
    log = read_csi_log(tmp_path / "site")
    assert log.h.shape == (30, 8, 4) and list(log.frame) == list(range(30))
    assert log.info == {"description": "iid"}


def test_a_log_folder_that_cannot_be_written_costs_no_frame_of_the_stream(tmp_path):
    """Issue 29, class 1: the log folder disappears before the run (and comes back as a plain
    file, so it cannot even be re-created): the flowgraph streams exactly what it streams with a
    good folder, the failure is logged once and counted, stop() does not abort the process."""
    import shutil

    def break_folder():
        shutil.rmtree(tmp_path / "log")
        (tmp_path / "log").write_text("not a folder")

    good_snk, _ = _log(tmp_path / "good", 25, chunk_frames=10)
    snk, logger = _log(tmp_path, 25, prepare=break_folder, chunk_frames=10)
    assert snk.data() == good_snk.data() and len(tags(snk, "csi")) == 25
    assert logger.problems()["write-failed"] == 3  # chunks at 10 and 20 frames, and the last at stop()
    status = logger.status()
    assert status["frames_logged"] == 25 and not status["writing"] and status["write_failures"] == 3

"""The neural detector block with a WeSNet bundle and its complexity dial: the output equals the
core detector's at every kept fraction and depth; ``set_complexity`` while streaming takes effect
exactly at frame boundaries (``swapped`` status and ``model`` tag carry the options) with no
vector lost; bad settings are refused and the running one stays."""

import threading
import time

import numpy as np
import pmt
import pytest
import torch
from gnuradio.neuralmimo import neural_detector
from neuralmimo.bundle import save_model
from neuralmimo.channels import make_channel
from neuralmimo.detectors import SystemSpec, load_detector
from neuralmimo.detectors.detnet import DetNet, codec_for

from conftest import data, detector_flowgraph_with_status, run, tags

pytestmark = pytest.mark.timeout(180)
NR, NT, ND = 16, 8, 32
SYSTEM = SystemSpec(NR, NT, "bpsk")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    m = DetNet(NT, 12, 64, "bpsk", "half-exp")
    return save_model(m, codec_for(m), tmp_path_factory.mktemp("wes") / "wesnet", system={
        "nr": NR, "nt": NT, "modulation": "bpsk", "snr_convention": "detnet", "snr_db": [4.0, 12.0],
        "channel": {"name": "iid-real", "args": {}}})


def _frames(n_frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = make_channel("iid-real", NR, NT).sample(n_frames, g)
    x = (2 * torch.randint(0, 2, (n_frames, NT, ND), generator=g) - 1).to(torch.complex64)
    nv = 1.0 + 2.0 * torch.rand(n_frames, generator=g)
    y = h @ x + (nv[:, None, None] / 2).sqrt() * torch.randn(n_frames, NR, ND, dtype=torch.complex64, generator=g)
    return h, y, nv


def _flow(y, h, nv, det, throttle=None):
    return detector_flowgraph_with_status(y, h, nv, det, NT, throttle)


def _out(snk, n_frames):
    return np.stack([data(s) for s in snk]).reshape(NT, n_frames, ND).transpose(1, 0, 2)


@pytest.mark.parametrize("keep,layers", [(1.0, 0), (0.5, 0), (0.2, 0), (0.5, 6)])
def test_block_output_equals_the_core_detector_at_each_setting(bundle, keep, layers):
    h, y, nv = _frames(6)
    det = neural_detector(NR, NT, "bpsk", str(bundle), keep=keep, layers=layers)
    assert det.wait_idle()
    tb, snk, _ = _flow(y, h, nv, det)
    run(tb)
    assert det.model_info()["options"] == {"keep": keep, "layers": layers or 12}
    core = load_detector(bundle, SYSTEM)
    core.configure(keep=keep, layers=layers)
    assert np.array_equal(_out(snk, 6), core.detect(y, h, nv).numpy())
    det.close()


def test_set_complexity_while_streaming_lands_on_frame_boundaries(bundle):
    n_frames = 160
    h, y, nv = _frames(n_frames, seed=1)
    det = neural_detector(NR, NT, "bpsk", str(bundle))
    assert det.wait_idle()
    tb, snk, status = _flow(y, h, nv, det, throttle=ND * 160)
    settings = [0.25, 1.0, 0.5, 0.1, 0.75, 0.5]

    def turner():
        for k in settings:
            time.sleep(0.08)
            det.set_complexity(k)

    th = threading.Thread(target=turner)
    th.start()
    run(tb)
    th.join()
    out = _out(snk, n_frames)  # every vector came out (the reshape needs all of them)
    events = [pmt.to_python(status.get_message(i)) for i in range(status.num_messages())]
    swaps = [e for e in events if e["event"] == "swapped"]
    assert len(swaps) >= 3 and all(s["offset"] % ND == 0 for s in swaps)
    model_tags = tags(snk[0], "model")
    assert [o for o, _ in model_tags] == [s["offset"] for s in swaps]
    assert [v["options"]["keep"] for _, v in model_tags] == [s["options"]["keep"] for s in swaps]
    # every frame is the core detector's output at the setting in force there
    core = load_detector(bundle, SYSTEM)
    bounds = [(s["offset"] // ND, s["options"]["keep"]) for s in swaps] + [(n_frames, None)]
    for (f0, k), (f1, _) in zip(bounds, bounds[1:]):
        core.configure(keep=k)
        assert np.array_equal(out[f0:f1], core.detect(y[f0:f1], h[f0:f1], nv[f0:f1]).numpy()), (f0, f1, k)
    det.close()


def test_bad_settings_are_refused_and_the_running_one_stays(bundle, tmp_path):
    det = neural_detector(NR, NT, "bpsk", str(bundle), keep=0.5)
    assert det.wait_idle()
    det.set_complexity(0.0)
    det.set_complexity(0.5, 99)  # more layers than the model has
    assert det.wait_idle()
    reasons = [r["reason"] for r in det.refusals]
    assert any("keep must lie in (0, 1]" in r for r in reasons) and any("layers 99" in r for r in reasons)
    h, y, nv = _frames(2)
    tb, snk, _ = _flow(y, h, nv, det)
    run(tb)
    assert det.model_info()["options"] == {"keep": 0.5, "layers": 12}
    det.close()

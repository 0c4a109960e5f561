"""The neural detector's drift monitor: a HyperMIMO bundle carrying its training drop's channel
statistics runs silent on channels of that drop, reports ``drift`` (status message, drift())
when the users move to another drop, ``drift-back`` when they return; a bundle without statistics
runs without the monitor and one with malformed statistics says so."""

import json

import pmt
import pytest
import torch
from gnuradio.neuralmimo import neural_detector
from neuralmimo.bundle import MANIFEST, save_model
from neuralmimo.channels import make_channel
from neuralmimo.detectors.mmnet import HYPERMIMO_CODEC, HyperMIMO
from neuralmimo.site.drift import model_statistics

from conftest import detector_flowgraph_with_status, run

pytestmark = pytest.mark.timeout(180)
NR, NT, ND, WINDOW = 12, 6, 8, 64


def _channel(drop):
    return make_channel({"name": "local-scattering", "args": {"seed": drop}}, NR, NT)


def _bundle(path, stats):
    torch.manual_seed(0)
    return save_model(HyperMIMO(NT, 5, 75, "qpsk"), HYPERMIMO_CODEC, path, system={
        "nr": NR, "nt": NT, "modulation": "qpsk", "snr_convention": "hypermimo", "snr_db": [0.0, 10.0],
        "channel": {"name": "local-scattering", "args": {"seed": 0}}},
        training=None if stats is None else {"channel_stats": stats})


def _frames(drops, seed=1):
    """Frames whose channels come from ``drops`` (one drop index per frame)."""
    g = torch.Generator().manual_seed(seed)
    h = torch.cat([_channel(d).sample(1, g) for d in drops])
    n = len(drops)
    x = torch.randint(0, 4, (n, NT, ND), generator=g)
    pts = torch.tensor([1 + 1j, -1 + 1j, 1 - 1j, -1 - 1j], dtype=torch.complex64) / 2 ** 0.5
    nv = torch.full((n,), 0.1)
    y = h @ pts[x] + (nv[:, None, None] / 2).sqrt() * torch.randn(n, NR, ND, dtype=torch.complex64, generator=g)
    return h, y, nv


def _run(bundle, drops):
    h, y, nv = _frames(drops)
    det = neural_detector(NR, NT, "qpsk", str(bundle), drift_window=WINDOW, drift_threshold=0.2)
    assert det.wait_idle()
    tb, _, status = detector_flowgraph_with_status(y, h, nv, det, NT)
    run(tb)
    events = [pmt.to_python(status.get_message(i)) for i in range(status.num_messages())]
    det.close()
    return det, [e for e in events if e["event"] in ("drift", "drift-back", "drift-monitor")]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return _bundle(tmp_path_factory.mktemp("drift") / "drop0", model_statistics(_channel(0)))


def test_silent_on_the_training_drop(bundle):
    det, events = _run(bundle, [0] * 200)
    assert events == [] and det.drift_events == []
    state = det.drift()
    assert state["frames"] == 200 and state["distance"] < 0.1 and not state["drifting"]


def test_drift_when_the_users_move_and_back_when_they_return(bundle):
    drops = [0] * 100 + [5] * 200 + [0] * 300
    det, events = _run(bundle, drops)
    kinds = [e["event"] for e in events]
    assert kinds == ["drift", "drift-back"], events
    moved = events[0]
    assert 100 <= moved["frame"] < 100 + 2 * WINDOW and moved["distance"] > 0.2  # found within two windows
    assert events[1]["frame"] > 300 and events[1]["distance"] < 0.16


def test_models_without_or_with_bad_statistics(tmp_path):
    det, events = _run(_bundle(tmp_path / "none", None), [5] * 80)
    assert det.drift() is None and events == []
    bad = _bundle(tmp_path / "bad", model_statistics(_channel(0)))
    m = json.loads((bad / MANIFEST).read_text())
    m["training"]["channel_stats"]["user_power"] = [1.0] * (NT + 1)
    (bad / MANIFEST).write_text(json.dumps(m))
    det, events = _run(bad, [0] * 10)
    assert det.drift() is None and events[0]["event"] == "drift-monitor" and "do not fit" in events[0]["reason"]
    assert det.problems().get("bad-channel-stats") == 1

"""The neural detector block's MMSE fallback outside a bundle's operating envelope (issue 30): an
SNR ramp streamed through the block leaves the envelope and comes back; the switch lands on the
first frame outside (and the first back inside), is tagged ``detector`` and reported once per
change on ``status``, every fallback frame is counted, and each frame's output is exactly the
model's or MMSE's."""

import json
import shutil

import numpy as np
import pmt
import pytest
import torch
from gnuradio.neuralmimo import neural_detector
from neuralmimo.bundle import MANIFEST
from neuralmimo.channels import make_channel
from neuralmimo.detectors import SystemSpec, load_detector
from neuralmimo.snr import convert_snr_db

from conftest import ROOT_MODELS, data, detector_flowgraph_with_status, run, tags

pytestmark = pytest.mark.timeout(180)
NR, NT, ND, NP = 12, 6, 32, 16
EDGE_DB = 12.0
RAMP = [4, 6, 8, 10, 11, 11.9, 12.1, 13, 16, 20, 25, 20, 16, 13, 12.1, 11.9, 10, 8, 6, 4]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The shipped HyperMIMO drop-0 bundle with an envelope of 0..12 dB (hypermimo convention)."""
    path = tmp_path_factory.mktemp("fb") / "hm"
    shutil.copytree(ROOT_MODELS / "hypermimo-ls12x6-drop0", path)
    m = json.loads((path / MANIFEST).read_text())
    m.pop("envelope", None)
    energy = make_channel(m["system"]["channel"], NR, NT).mean_energy
    off = convert_snr_db(0.0, "project", "hypermimo", channel_energy=float(energy), nr=NR, nt=NT)
    m["system"]["n_pilots"] = NP
    m["envelope"] = {"version": 1, "reference": "mmse", "confidence": 0.95, "snr_convention": "hypermimo",
                     "users": [{"n_users": NT, "project_offset_db": off, "snr_db": [[0.0, EDGE_DB]]}]}
    (path / MANIFEST).write_text(json.dumps(m))
    return path, off, m["system"]["channel"]


def _ramp(off, channel, seed=0):
    """Frames whose estimates (h, nv) put them exactly at the ramp's SNRs (hypermimo convention,
    as the envelope reads them: LS noise energy removed with Np pilots)."""
    g = torch.Generator().manual_seed(seed)
    f = len(RAMP)
    h = make_channel(channel, NR, NT).sample(f, g).to(torch.complex64)
    energy = h.abs().double().square().sum((1, 2))
    r = 10 ** ((torch.tensor(RAMP, dtype=torch.float64) - off) / 10)
    nv = energy / (NR * (r + NT / NP))
    pts = torch.tensor([1 + 1j, -1 + 1j, 1 - 1j, -1 - 1j], dtype=torch.complex64) / 2 ** 0.5
    x = pts[torch.randint(0, 4, (f, NT, ND), generator=g)]
    y = h @ x + (nv[:, None, None].float() / 2).sqrt() * torch.randn(f, NR, ND, dtype=torch.complex64, generator=g)
    return h, y, nv


def _events(status):
    return [pmt.to_python(status.get_message(i)) for i in range(status.num_messages())]


def test_an_snr_ramp_falls_back_to_mmse_outside_the_envelope_and_returns(bundle):
    path, off, channel = bundle
    h, y, nv = _ramp(off, channel)
    det = neural_detector(NR, NT, "qpsk", str(path))
    assert det.wait_idle()
    tb, snk, status = detector_flowgraph_with_status(y, h, nv, det, NT)
    run(tb)
    assert det.model_info()["envelope"].startswith("K=6: 0..12 dB")
    outside = [s > EDGE_DB for s in RAMP]
    first_out, first_back = outside.index(True), len(RAMP) - 1 - outside[::-1].index(True) + 1
    # the switch lands on the first frame outside and the first frame back: within one frame
    assert tags(snk[0], "detector") == [(first_out * ND, "mmse"), (first_back * ND, "hypermimo")]
    assert det.fallback_frames == sum(outside)
    events = [e for e in _events(status) if e["event"].startswith("fallback")]
    assert [(e["event"], e["frame"], e["offset"]) for e in events] == [
        ("fallback", first_out, first_out * ND), ("fallback-end", first_back, first_back * ND)]
    assert events[0]["snr_db"] == pytest.approx(RAMP[first_out], abs=0.01) and events[0]["n_users"] == NT
    out = torch.from_numpy(np.stack([data(s) for s in snk]).reshape(NT, len(RAMP), ND).transpose(1, 0, 2).copy())
    core = load_detector(path, SystemSpec(NR, NT, "qpsk"))
    model = core.detect(y, h, nv.float())
    mmse, _ = core.detect_mmse(y, h, nv, llr=False)
    mask = torch.tensor(outside)
    assert torch.equal(out[~mask], model[~mask])
    assert torch.allclose(out[mask], mmse[mask], atol=1e-5)
    assert not torch.allclose(model[mask], mmse[mask], atol=1e-3)  # the two are distinguishable
    det.close()


def test_with_the_fallback_off_the_model_detects_every_frame(bundle):
    path, off, channel = bundle
    h, y, nv = _ramp(off, channel, seed=1)
    det = neural_detector(NR, NT, "qpsk", str(path), fallback=False)
    assert det.wait_idle()
    tb, snk, status = detector_flowgraph_with_status(y, h, nv, det, NT)
    run(tb)
    assert tags(snk[0], "detector") == [] and det.fallback_frames == 0
    assert not [e for e in _events(status) if e["event"].startswith("fallback")]
    out = torch.from_numpy(np.stack([data(s) for s in snk]).reshape(NT, len(RAMP), ND).transpose(1, 0, 2).copy())
    assert torch.equal(out, load_detector(path, SystemSpec(NR, NT, "qpsk")).detect(y, h, nv.float()))
    det.close()


def test_a_bundle_without_an_envelope_never_falls_back(bundle, tmp_path):
    path, off, channel = bundle
    bare = tmp_path / "bare"
    shutil.copytree(path, bare)
    m = json.loads((bare / MANIFEST).read_text())
    del m["envelope"]
    (bare / MANIFEST).write_text(json.dumps(m))
    det = neural_detector(NR, NT, "qpsk", str(bare))
    assert det.wait_idle()
    h, y, nv = _ramp(off, channel, seed=2)
    tb, snk, _ = detector_flowgraph_with_status(y, h, nv, det, NT)
    run(tb)
    assert det.model_info()["envelope"] is None
    assert det.fallback_frames == 0 and tags(snk[0], "detector") == []
    det.close()

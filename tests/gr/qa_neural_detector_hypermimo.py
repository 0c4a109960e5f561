"""The neural detector block with HyperMIMO bundles: output and LLRs equal the core detector's,
hot-swap between two drops' bundles lands on frame boundaries while streaming, a bundle for
another system is refused."""

import json
import threading
import time

import numpy as np
import pmt
import pytest
import torch
from gnuradio import blocks
from gnuradio.neuralmimo import neural_detector
from neuralmimo.bundle import MANIFEST, save_model
from neuralmimo.channels import make_channel
from neuralmimo.detectors import SystemSpec, load_detector
from neuralmimo.detectors.mmnet import HYPERMIMO_CODEC, HyperMIMO

from conftest import data, detector_flowgraph_with_status, run, sinks

pytestmark = pytest.mark.timeout(180)
NR, NT, ND = 12, 6, 24


def _bundle(path, seed, nr=NR, nt=NT, modulation="qpsk"):
    torch.manual_seed(seed)
    m = HyperMIMO(nt, 5, 75, modulation)
    return save_model(m, HYPERMIMO_CODEC, path, system={
        "nr": nr, "nt": nt, "modulation": modulation, "snr_convention": "hypermimo", "snr_db": [0.0, 10.0],
        "channel": {"name": "local-scattering", "args": {"seed": seed}}})


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("hm")
    return {"a": _bundle(root / "drop0", 0), "b": _bundle(root / "drop1", 1),
            "other": _bundle(root / "nr8", 2, nr=8)}


def _frames(n_frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = make_channel({"name": "local-scattering", "args": {"seed": 0}}, NR, NT).sample(n_frames, g)
    x = torch.randint(0, 4, (n_frames, NT, ND), generator=g)
    pts = torch.tensor([1 + 1j, -1 + 1j, 1 - 1j, -1 - 1j], dtype=torch.complex64) / 2 ** 0.5
    nv = 0.05 + 0.2 * torch.rand(n_frames, generator=g)
    y = h @ pts[x] + (nv[:, None, None] / 2).sqrt() * torch.randn(n_frames, NR, ND, dtype=torch.complex64, generator=g)
    return h, y, nv


def _flow(y, h, nv, det, throttle=None):
    return detector_flowgraph_with_status(y, h, nv, det, NT, throttle)


def test_block_output_and_llrs_equal_the_core_detector(bundles):
    h, y, nv = _frames(10)
    det = neural_detector(NR, NT, "qpsk", str(bundles["a"]), llr_output=True)
    assert det.wait_idle()
    tb, snk, _ = _flow(y, h, nv, det)
    llr_snk = sinks(tb, 1, NT * 2, blocks.vector_sink_f)[0]
    tb.connect((det, NT), llr_snk)
    run(tb)
    out = np.stack([data(s) for s in snk]).reshape(NT, 10, ND).transpose(1, 0, 2)
    ref, llr_ref = load_detector(bundles["a"], SystemSpec(NR, NT, "qpsk")).detect_with_llr(y, h, nv)
    assert np.array_equal(out, ref.numpy())
    assert np.allclose(data(llr_snk).reshape(10, ND, NT, 2), llr_ref.numpy(), rtol=1e-4, atol=1e-4)
    det.close()


def test_each_users_rotation_turns_the_channel_columns_per_chunk(bundles):
    """Separate user oscillators (issue 31): with a user_phase tag (user k of data vector d turned by
    p_k + r_k d) the model sees H diag(exp(j (p + r d_c))) for each chunk of USER_PHASE_CHUNK
    vectors, d_c the chunk's middle; a frame without the tag sees H."""
    from gnuradio.neuralmimo.neural_detector import USER_PHASE_CHUNK
    from gnuradio.neuralmimo.tags import user_phase_to_pmt

    from conftest import estimate_tags, tag, detector_flowgraph

    h, y, nv = _frames(2)
    first, rate = np.linspace(-0.3, 0.3, NT), np.linspace(0.01, -0.01, NT)
    det = neural_detector(NR, NT, "qpsk", str(bundles["a"]))
    assert det.wait_idle()
    tag_list = estimate_tags(h, nv, ND) + [tag(0, "user_phase", user_phase_to_pmt(first, rate))]
    tb, snk = detector_flowgraph(y.transpose(0, 1).reshape(NR, -1).numpy(), tag_list, det, NT)
    run(tb)
    out = np.stack([data(s) for s in snk]).reshape(NT, 2, ND).transpose(1, 0, 2)
    core = load_detector(bundles["a"], SystemSpec(NR, NT, "qpsk"))
    for a in range(0, ND, USER_PHASE_CHUNK):
        b = min(a + USER_PHASE_CHUNK, ND)
        d = torch.from_numpy(np.exp(1j * (first + rate * ((a + b - 1) // 2))).astype(np.complex64))
        ref = core.detect(y[:1, :, a:b], h[:1] * d, nv[:1])
        assert np.array_equal(out[0, :, a:b], ref[0].numpy())
    assert np.array_equal(out[1], core.detect(y[1:], h[1:], nv[1:])[0].numpy())
    det.close()


def test_hot_swap_between_two_drops_while_streaming(bundles):
    n_frames = 150
    h, y, nv = _frames(n_frames, seed=1)
    det = neural_detector(NR, NT, "qpsk", str(bundles["a"]))
    assert det.wait_idle()
    tb, snk, status = _flow(y, h, nv, det, throttle=ND * 150)

    def swapper():
        for i in range(12):
            time.sleep(0.05)
            det.set_model(str(bundles["b" if i % 2 == 0 else "a"]))

    th = threading.Thread(target=swapper)
    th.start()
    run(tb)
    th.join()
    out = np.stack([data(s) for s in snk]).reshape(NT, n_frames, ND).transpose(1, 0, 2)
    assert out.shape[1:] == (NT, ND)  # nothing lost
    swaps = [e for e in (pmt.to_python(status.get_message(i)) for i in range(status.num_messages()))
             if e["event"] == "swapped"]
    assert len(swaps) >= 3 and all(s["offset"] % ND == 0 for s in swaps)
    # every frame is exactly one of the two models' output
    refs = {k: load_detector(bundles[k], SystemSpec(NR, NT, "qpsk")).detect(y, h, nv).numpy() for k in ("a", "b")}
    sha = {json.loads((bundles[k] / MANIFEST).read_text())["weights_sha256"]: k for k in ("a", "b")}
    bounds = [(s["offset"] // ND, sha[s["sha256"]]) for s in swaps] + [(n_frames, None)]
    for (f0, k), (f1, _) in zip(bounds, bounds[1:]):
        assert np.array_equal(out[f0:f1], refs[k][f0:f1]), (f0, f1, k)
    det.close()


def test_bundle_for_another_system_is_refused(bundles):
    det = neural_detector(NR, NT, "qpsk", str(bundles["a"]))
    assert det.wait_idle()
    det.set_model(str(bundles["other"]))
    assert det.wait_idle()
    assert det.refusals and "Nr = 8" in det.refusals[-1]["reason"]
    h, y, nv = _frames(2)
    tb, _, _ = _flow(y, h, nv, det)
    run(tb)
    assert det.model_info()["path"] == str(bundles["a"].resolve())  # the running model stayed
    det.close()

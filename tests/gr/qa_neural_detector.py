"""Neural detector block: equality with the core models, hot-swap at frame boundaries while
streaming, every refusal case while streaming, the pickle-renamed-safetensors refusal."""

import json
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pmt
import pytest
import torch
from gnuradio import blocks, gr
from gnuradio.neuralmimo import neural_detector
from gnuradio.neuralmimo.tags import csi_to_pmt
from neuralmimo.bundle import MANIFEST, WEIGHTS, file_sha256, save_bundle, save_model
from neuralmimo.detectors import SystemSpec, load_detector
from neuralmimo.detectors.deepsic.complex import COMPLEX_HYPERNET_CODEC, PhaseInvariantHypernetwork, SoftICModuleSpec
from neuralmimo.detectors.deepsic.model import HYPERNET_CODEC, ModularHypernetwork, ModuleSpec
from neuralmimo.detectors.sdnet.model import SDNET_CODEC, SDNet

from conftest import data, detector_flowgraph, estimate_tags, run, sinks, sources, tag, tags

pytestmark = pytest.mark.timeout(180)
NT, NR, ND = 2, 4, 16
SYSTEM = {"nt": NT, "nr": NR, "modulation": "qpsk", "n_pilots": 4}


def _sdnet(seed):
    torch.manual_seed(seed)
    m = SDNet(NT, NR, 2)
    for bn in m.norms:  # non-trivial batch-norm statistics, as after training
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 2.0)
    return m.eval()


def _rewrite_sha(bundle: Path) -> None:
    m = json.loads((bundle / MANIFEST).read_text())
    m["weights_sha256"] = file_sha256(bundle / WEIGHTS)
    (bundle / MANIFEST).write_text(json.dumps(m))


def _edit_manifest(bundle: Path, fn) -> None:
    m = json.loads((bundle / MANIFEST).read_text())
    fn(m)
    (bundle / MANIFEST).write_text(json.dumps(m))


class _Exploit:
    """Unpickling this writes a marker file: proof that a pickle was (or was not) executed."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    b = {"a": save_model(_sdnet(1), SDNET_CODEC, root / "a", system=SYSTEM),
         "b": save_model(_sdnet(2), SDNET_CODEC, root / "b", system=SYSTEM)}
    b["wrong_system"] = save_model(SDNet(NT, NR + 2, 2).eval(), SDNET_CODEC, root / "wrong_system",
                                   system={**SYSTEM, "nr": NR + 2})
    b["unknown_arch"] = save_bundle(root / "unknown_arch", _sdnet(3).state_dict(), architecture="transformer-9000",
                                    hyperparameters={}, system=SYSTEM)
    b["shape_manifest"] = save_model(_sdnet(4), SDNET_CODEC, root / "shape_manifest", system=SYSTEM)
    _edit_manifest(b["shape_manifest"], lambda m: m["tensors"]["fc.weight"].update(shape=[3, 3]))
    b["shape_hparams"] = save_model(_sdnet(5), SDNET_CODEC, root / "shape_hparams", system=SYSTEM)
    _edit_manifest(b["shape_hparams"], lambda m: m["architecture"]["hyperparameters"].update(n_conv=3))
    b["sha"] = save_model(_sdnet(6), SDNET_CODEC, root / "sha", system=SYSTEM)
    raw = bytearray((b["sha"] / WEIGHTS).read_bytes())
    raw[-5] ^= 0xFF
    (b["sha"] / WEIGHTS).write_bytes(bytes(raw))
    b["truncated"] = save_model(_sdnet(7), SDNET_CODEC, root / "truncated", system=SYSTEM)
    raw = (b["truncated"] / WEIGHTS).read_bytes()
    (b["truncated"] / WEIGHTS).write_bytes(raw[: len(raw) // 2])
    _rewrite_sha(b["truncated"])
    nan_model = _sdnet(8)
    with torch.no_grad():
        nan_model.fc.weight[0, 0] = float("nan")
    b["nan"] = save_model(nan_model, SDNET_CODEC, root / "nan", system=SYSTEM, allow_nonfinite=True)
    b["pickle"] = save_model(_sdnet(9), SDNET_CODEC, root / "pickle", system=SYSTEM)
    marker = root / "unpickled.txt"
    (b["pickle"] / WEIGHTS).write_bytes(pickle.dumps(_Exploit(marker)))
    _rewrite_sha(b["pickle"])
    b["marker"] = marker
    return b


def _frames(n_frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n_frames, NR, NT, dtype=torch.complex64, generator=g)
    y = torch.randn(n_frames, NR, ND, dtype=torch.complex64, generator=g)
    nv = 0.05 + torch.rand(n_frames, generator=g)
    return h, y, nv


def _tags(h, nv):
    return estimate_tags(h, nv, ND)


def _flowgraph(y, tag_list, det, throttle=None):
    # small chunks when throttled: requests arrive between frames
    tb, snk = detector_flowgraph(y.transpose(0, 1).reshape(NR, -1).numpy(), tag_list, det, NT, throttle, chunk=ND)
    if det.llr_output:
        tb.llr = sinks(tb, 1, NT * det.bits_per_symbol, blocks.vector_sink_f)[0]
        tb.connect((det, NT), tb.llr)
    status = blocks.message_debug()
    tb.msg_connect((det, "status"), (status, "store"))
    tb._keep += [det, status]
    return tb, snk, status


def _status(dbg) -> list[dict]:
    return [pmt.to_python(dbg.get_message(i)) for i in range(dbg.num_messages())]


def _reference(path, y, h, nv):
    return load_detector(path, SystemSpec(NR, NT, "qpsk")).detect(y, h, nv)  # (F, Nt, ND)


def test_output_equals_core_model(bundles):
    h, y, nv = _frames(8)
    det = neural_detector(NR, NT, "qpsk", str(bundles["a"]), llr_output=True)
    assert det.wait_idle()
    tb, snk, status = _flowgraph(y, _tags(h, nv), det)
    run(tb)
    out = np.stack([data(s) for s in snk])  # (Nt, F*ND)
    x_ref, llr_ref = load_detector(bundles["a"], SystemSpec(NR, NT, "qpsk")).detect_with_llr(y, h, nv)
    ref = x_ref.transpose(0, 1).reshape(NT, -1).numpy()
    assert out.shape == ref.shape
    assert np.allclose(out, ref, atol=1e-5)
    llr = data(tb.llr).reshape(8 * ND, NT, 2)
    assert np.allclose(llr, llr_ref.reshape(-1, NT, 2).numpy(), rtol=1e-4, atol=1e-4)
    ev = _status(status)
    assert [e["event"] for e in ev] == ["loaded", "swapped"]
    assert ev[1]["offset"] == 0 and ev[1]["sha256"] == json.loads((bundles["a"] / MANIFEST).read_text())["weights_sha256"]
    for s in snk:
        assert [o for o, _ in tags(s, "csi")] == [f * ND for f in range(8)]  # tags passed through
        assert [o for o, _ in tags(s, "model")] == [0]


def test_hypernetwork_deepsic_block_equals_core_with_varying_users(tmp_path):
    torch.manual_seed(3)
    hyper = ModularHypernetwork(ModuleSpec(NR), 3)
    path = save_model(hyper, HYPERNET_CODEC, tmp_path / "h", system={"nr": NR, "nt": 3, "modulation": "bpsk"})
    g = torch.Generator().manual_seed(4)
    n_frames, nt = 6, 3
    h = torch.randn(n_frames, NR, nt, generator=g).to(torch.complex64)
    y = torch.randn(n_frames, NR, ND, dtype=torch.complex64, generator=g)
    nv = 0.05 + torch.rand(n_frames, generator=g)
    users = [3, 2, 2, 1, 3, 2]
    tag_list = []
    for f in range(n_frames):
        tag_list += [tag(f * ND, "frame_start", pmt.from_long(f)), tag(f * ND, "csi", csi_to_pmt(h[f])),
                     tag(f * ND, "noise_var", pmt.from_double(float(nv[f]))), tag(f * ND, "n_users", pmt.from_long(users[f]))]
    det = neural_detector(NR, nt, "bpsk", str(path), llr_output=True)
    assert det.wait_idle()
    tb = gr.top_block()
    src = sources(tb, y.transpose(0, 1).reshape(NR, -1).numpy(), tag_list)
    snk = sinks(tb, nt)
    llr_snk = sinks(tb, 1, nt, blocks.vector_sink_f)[0]
    for r in range(NR):
        tb.connect(src[r], (det, r))
    for k in range(nt):
        tb.connect((det, k), snk[k])
    tb.connect((det, nt), llr_snk)
    tb._keep.append(det)
    run(tb)
    out = np.stack([data(s) for s in snk]).reshape(nt, n_frames, ND).transpose(1, 0, 2)
    x_ref, llr_ref = load_detector(path, SystemSpec(NR, nt, "bpsk")).detect_with_llr(y, h, nv, users)
    assert np.array_equal(out, x_ref.numpy())
    llr = data(llr_snk).reshape(n_frames, ND, nt)
    assert np.allclose(llr, llr_ref[..., 0].numpy(), rtol=1e-4, atol=1e-4)
    for f, k in enumerate(users):
        assert np.all(out[f, k:] == 0) and np.all(np.abs(out[f, :k]) == 1)
        assert np.all(llr[f, :, k:] == 0)
        # exact posterior LLRs: their sign is the MAP decision (BPSK point index 1 = +1 = bit 1)
        assert np.array_equal(llr[f, :, :k] > 0, out[f, :k].real.T > 0)


def test_complex_hypernetwork_block_equals_core_with_varying_users(tmp_path):
    """hypernet-deepsic-complex in the block: the core's decisions for every frame's K, absent
    users zero, and no channel-family warning on a complex channel (it is made for one)."""
    torch.manual_seed(5)
    path = save_model(PhaseInvariantHypernetwork(SoftICModuleSpec(NR, "qpsk"), 3), COMPLEX_HYPERNET_CODEC,
                      tmp_path / "c", system={"nr": NR, "nt": 3, "modulation": "qpsk"})
    g = torch.Generator().manual_seed(6)
    n_frames, nt = 6, 3
    h = torch.randn(n_frames, NR, nt, dtype=torch.complex64, generator=g)
    x = torch.exp(0.5j * torch.pi * (torch.randint(0, 4, (n_frames, nt, ND), generator=g) + 0.5)).to(torch.complex64)
    y = h @ x + 0.1 * torch.randn(n_frames, NR, ND, dtype=torch.complex64, generator=g)
    nv = torch.full((n_frames,), 0.01)
    users = [3, 2, 2, 1, 3, 2]
    tag_list = []
    for f in range(n_frames):
        tag_list += [tag(f * ND, "frame_start", pmt.from_long(f)), tag(f * ND, "csi", csi_to_pmt(h[f])),
                     tag(f * ND, "noise_var", pmt.from_double(float(nv[f]))), tag(f * ND, "n_users", pmt.from_long(users[f]))]
    det = neural_detector(NR, nt, "qpsk", str(path))
    assert det.wait_idle()
    tb = gr.top_block()
    src = sources(tb, y.transpose(0, 1).reshape(NR, -1).numpy(), tag_list)
    snk = sinks(tb, nt)
    for r in range(NR):
        tb.connect(src[r], (det, r))
    for k in range(nt):
        tb.connect((det, k), snk[k])
    status = blocks.message_debug()
    tb.msg_connect((det, "status"), (status, "store"))
    tb._keep += [det, status]
    run(tb)
    out = np.stack([data(s) for s in snk]).reshape(nt, n_frames, ND).transpose(1, 0, 2)
    x_ref = load_detector(path, SystemSpec(NR, nt, "qpsk")).detect(y, h, nv, users)
    assert np.array_equal(out, x_ref.numpy())
    for f, k in enumerate(users):
        assert np.all(out[f, k:] == 0) and np.all(np.abs(out[f, :k]) > 0.99)
    assert not [e for e in _status(status) if e.get("event") == "channel-family"]


def test_hypernetwork_with_statistics_serves_fewer_streams_than_k_max(tmp_path):
    """A hypernetwork's channel statistics are for K_max users; in a flowgraph with fewer streams
    the drift monitor compares those streams, and detection is the core's (the monitor never
    costs a frame)."""
    from neuralmimo.site.drift import channel_statistics

    torch.manual_seed(3)
    g = torch.Generator().manual_seed(8)
    stats = channel_statistics(torch.randn(500, NR, 3, generator=g).to(torch.complex64))
    path = save_model(ModularHypernetwork(ModuleSpec(NR), 3), HYPERNET_CODEC, tmp_path / "h",
                      system={"nr": NR, "nt": 3, "modulation": "bpsk"}, training={"channel_stats": stats})
    h, y, nv = _frames(10, seed=9)
    h = h.real.to(torch.complex64)
    det = neural_detector(NR, NT, "bpsk", str(path), drift_window=4)
    assert det.wait_idle()
    tb, snk, status = _flowgraph(y, _tags(h, nv), det)
    run(tb)
    out = np.stack([data(s) for s in snk]).reshape(NT, 10, ND).transpose(1, 0, 2)
    assert np.array_equal(out, load_detector(path, SystemSpec(NR, NT, "bpsk")).detect(y, h, nv).numpy())
    assert det.problems() == {} and det.drift()["frames"] == 10


def test_real_channel_model_on_complex_channel_warns_once(tmp_path):
    """The paper's receiver (Re y only) on complex estimates: one channel-family event naming the
    share of imaginary energy, however many frames follow; on real estimates none."""
    torch.manual_seed(3)
    path = save_model(ModularHypernetwork(ModuleSpec(NR), NT), HYPERNET_CODEC, tmp_path / "h",
                      system={"nr": NR, "nt": NT, "modulation": "bpsk", "channel": {"name": "deepsic-sed", "args": {}}})
    for complex_channel in (True, False):
        h, y, nv = _frames(12, seed=7)
        if not complex_channel:
            h = h.real.to(torch.complex64)
        det = neural_detector(NR, NT, "bpsk", str(path))
        assert det.wait_idle()
        tb, snk, status = _flowgraph(y, _tags(h, nv), det)
        run(tb)
        events = [e for e in _status(status) if e.get("event") == "channel-family"]
        if complex_channel:
            assert len(events) == 1 and events[0]["trained_for"] == "real"
            assert 0.3 < events[0]["imaginary_fraction"] < 0.7 and "deepsic-sed" in events[0]["message"]
        else:
            assert events == []
        assert len(data(snk[0])) == 12 * ND  # nothing lost


def test_hot_swap_many_times_lands_on_frame_boundaries(bundles):
    """A thread sends valid (a/b, some as dicts with sha256) and invalid models while a throttled
    stream runs: items in = items out, every frame comes from exactly one model, each swap is at
    a frame boundary and every refusal is reported."""
    n_frames = 240
    h, y, nv = _frames(n_frames, seed=1)
    det = neural_detector(NR, NT, "qpsk", str(bundles["a"]))
    assert det.wait_idle()
    tb, snk, status = _flowgraph(y, _tags(h, nv), det, throttle=ND * 200)
    sha_b = json.loads((bundles["b"] / MANIFEST).read_text())["weights_sha256"]
    sent = {"valid": 0, "invalid": 0}

    def swapper():
        time.sleep(0.02)
        for i in range(60):
            if i % 3 == 2:
                det.to_basic_block()._post(pmt.intern("model"), pmt.intern(str(bundles["sha"])))
                sent["invalid"] += 1
            elif i % 2:
                msg = pmt.to_pmt({"path": str(bundles["b"]), "sha256": sha_b})
                det.to_basic_block()._post(pmt.intern("model"), msg)
                sent["valid"] += 1
            else:
                det.set_model(str(bundles["a"]))
                sent["valid"] += 1
            time.sleep(0.01)

    th = threading.Thread(target=swapper)
    th.start()
    run(tb)
    th.join()
    out = np.stack([data(s) for s in snk]).reshape(NT, n_frames, ND).transpose(1, 0, 2)
    assert out.shape == (n_frames, NT, ND)  # items in = items out
    ref = {k: _reference(bundles[k], y, h, nv).numpy() for k in ("a", "b")}
    which = []
    for f in range(n_frames):
        match = [k for k in ("a", "b") if np.allclose(out[f], ref[k][f], atol=1e-5)]
        assert len(match) == 1, f"frame {f} equals neither model (or both)"
        which.append(match[0])
    model_tags = tags(snk[0], "model")
    assert all(off % ND == 0 for off, _ in model_tags)  # swaps only at frame boundaries
    # the model of each frame is the one tagged last at or before its first vector
    shas = {json.loads((bundles[k] / MANIFEST).read_text())["weights_sha256"]: k for k in ("a", "b")}
    tagged = {off // ND: shas[v["sha256"]] for off, v in model_tags}
    current = None
    for f in range(n_frames):
        current = tagged.get(f, current)
        assert which[f] == current, f"frame {f}"
    ev = _status(status)
    swapped = [e for e in ev if e["event"] == "swapped"]
    assert len(swapped) == len(model_tags) and len(swapped) > 10  # many swaps happened mid-stream
    assert [e["offset"] for e in swapped] == [off for off, _ in model_tags]
    assert all(e["frame"] == e["offset"] // ND for e in swapped)
    assert det.wait_idle()
    refused = [e for e in ev if e["event"] == "refused"]  # those published while running
    # a message still queued when the stream ended is never handled (GNU Radio stops the block)
    assert 0 < len(refused) <= len(det.refusals) <= sent["invalid"]
    assert all("sha256" in e["reason"] for e in det.refusals)


REFUSALS = [("unknown_arch", "unknown architecture 'transformer-9000'"),
            ("shape_manifest", "has shape"),
            ("shape_hparams", "an SDNet with"),
            ("wrong_system", "Nr = 6"),
            ("sha", "does not match the manifest"),
            ("truncated", "not a readable safetensors file"),
            ("nan", "NaN or Inf"),
            ("pickle", "not a readable safetensors file")]


@pytest.mark.parametrize("case,reason", REFUSALS)
def test_refusal_while_streaming_keeps_old_model(bundles, case, reason):
    n_frames = 60
    h, y, nv = _frames(n_frames, seed=2)
    det = neural_detector(NR, NT, "qpsk", str(bundles["a"]))
    assert det.wait_idle()
    tb, snk, status = _flowgraph(y, _tags(h, nv), det, throttle=ND * 300)

    def send():
        time.sleep(0.05)
        det.to_basic_block()._post(pmt.intern("model"), pmt.intern(str(bundles[case])))

    th = threading.Thread(target=send)
    th.start()
    run(tb)
    th.join()
    assert det.wait_idle()
    ev = _status(status)
    refused = [e for e in ev if e["event"] == "refused"]
    assert len(refused) == 1 and reason in refused[0]["reason"], refused
    assert [e["event"] for e in ev if e["event"] != "refused"] == ["loaded", "swapped"]
    out = np.stack([data(s) for s in snk])
    ref = _reference(bundles["a"], y, h, nv).transpose(0, 1).reshape(NT, -1).numpy()
    assert np.allclose(out, ref, atol=1e-5)  # the old model kept producing correct output
    assert not bundles["marker"].exists()  # nothing was unpickled


def test_expected_sha_mismatch_and_bad_message_refused(bundles):
    h, y, nv = _frames(40, seed=3)
    det = neural_detector(NR, NT, "qpsk", str(bundles["a"]))
    det.to_basic_block()._post(pmt.intern("model"), pmt.to_pmt({"path": str(bundles["b"]), "sha256": "00" * 32}))
    det.to_basic_block()._post(pmt.intern("model"), pmt.from_long(5))
    # throttled (~0.4 s): the refusals are published while the flowgraph still runs
    tb, snk, status = _flowgraph(y, _tags(h, nv), det, throttle=ND * 100)
    run(tb)
    assert det.wait_idle()
    reasons = [e["reason"] for e in _status(status) if e["event"] == "refused"]
    assert any("is not the requested 000000000000" in r for r in reasons)
    assert any("bad model message" in r for r in reasons)
    out = np.stack([data(s) for s in snk])
    assert np.allclose(out, _reference(bundles["a"], y, h, nv).transpose(0, 1).reshape(NT, -1).numpy(), atol=1e-5)


def test_watch_directory_picks_up_new_bundle(bundles, tmp_path):
    import shutil

    watch = tmp_path / "watch"
    watch.mkdir()
    shutil.copytree(bundles["a"], watch / "a")
    det = neural_detector(NR, NT, "qpsk", str(watch / "a"), str(watch), 0.05)
    assert det.wait_idle()
    time.sleep(0.2)
    shutil.copytree(bundles["b"], watch / "b")
    deadline = time.time() + 10
    while time.time() < deadline and not any(e.get("path", "").endswith("/b") for e in det.refusals + [
            {"path": str(det.switch.pending.bundle.path)} if det.switch.pending is not None else {}]):
        time.sleep(0.05)
    assert det.wait_idle()
    h, y, nv = _frames(4, seed=4)
    tb, snk, status = _flowgraph(y, _tags(h, nv), det)
    run(tb)
    assert det.model_info()["path"].endswith("/b")
    out = np.stack([data(s) for s in snk])
    assert np.allclose(out, _reference(bundles["b"], y, h, nv).transpose(0, 1).reshape(NT, -1).numpy(), atol=1e-5)


def test_bad_input_keeps_streaming(bundles):
    h, y, nv = _frames(6, seed=5)
    y[2, :, 3] = float("nan")
    tag_list = _tags(h, nv)
    tag_list[3 * 3 + 1] = tag(3 * ND, "csi", pmt.init_c32vector(3, [1, 2, 3]))  # wrong size at frame 3
    det = neural_detector(NR, NT, "qpsk", str(bundles["a"]))
    assert det.wait_idle()
    tb, snk, _ = _flowgraph(y, tag_list, det)
    run(tb)
    out = np.stack([data(s) for s in snk])
    assert out.shape == (NT, 6 * ND) and np.isfinite(out).all()
    probs = det.problems()
    assert probs.get("nonfinite") == 1 and probs.get("bad-csi") == 1
    # frame 3 was detected with frame 2's estimate (the last good one)
    h_used = h.clone()
    h_used[3] = h[2]
    y_clean = y.clone()
    y_clean[2, :, 3] = 0
    ref = _reference(bundles["a"], y_clean, h_used, nv).transpose(0, 1).reshape(NT, -1).numpy()
    assert np.allclose(out, ref, atol=1e-5)


def test_threads_end_with_the_flowgraph(bundles):
    """GRC never calls close(): 40 flowgraphs created, run and dropped leave no loader or watcher
    thread behind; a stopped flowgraph started again still swaps models."""
    import gc

    def alive():
        return [t for t in threading.enumerate() if t.name.startswith("neural_detector")]

    before = len(alive())
    h, y, nv = _frames(2, seed=7)
    for i in range(40):
        det = neural_detector(NR, NT, "qpsk", str(bundles["a"]), watch_dir=str(bundles["a"].parent))
        tb, _ = detector_flowgraph(y.transpose(0, 1).reshape(NR, -1).numpy(), _tags(h, nv), det, NT)
        run(tb)
        del tb, det
    gc.collect()
    deadline = time.time() + 10
    while len(alive()) > before and time.time() < deadline:
        time.sleep(0.05)
    assert len(alive()) == before, [t.name for t in alive()]
    # a stopped block serves requests again when it starts again
    det = neural_detector(NR, NT, "qpsk", str(bundles["a"]))
    for _ in range(2):
        tb, _ = detector_flowgraph(y.transpose(0, 1).reshape(NR, -1).numpy(), _tags(h, nv), det, NT)
        det.set_model(str(bundles["b"]))
        run(tb)
        assert det.wait_idle()
    assert len(det.swaps) >= 1 and det.model_info()["path"] in (str(bundles["a"]), str(bundles["b"]))
    det.close()

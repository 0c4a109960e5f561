"""Helpers for the flowgraph tests: run with a timeout, build and read tags."""

from pathlib import Path

import numpy as np
import pmt
import pytest
import torch
from gnuradio import blocks
from gnuradio.neuralmimo.apps.harness import gr_tag, run_flowgraph

FLOWGRAPH_TIMEOUT_S = 60
ROOT_MODELS = Path(__file__).resolve().parents[2] / "models"  # the shipped bundles


def run(tb, timeout_s: float = FLOWGRAPH_TIMEOUT_S) -> float:
    """Run ``tb`` to completion or fail the test (GR 3.10 hangs if a Python work() raises)."""
    try:
        return run_flowgraph(tb, timeout_s)
    except TimeoutError as e:
        pytest.fail(str(e))


tag = gr_tag  # a stream tag (offset, key, pmt value)


def tags(sink, key: str) -> list[tuple[int, object]]:
    """``(offset, python value)`` of the tags with ``key`` a vector sink received, by offset."""
    out = [(t.offset, pmt.to_python(t.value)) for t in sink.tags() if pmt.symbol_to_string(t.key) == key]
    return sorted(out, key=lambda x: x[0])


def random_frames(n_frames: int, nr: int, nt: int, n_data: int, seed: int = 0):
    """``(h (F, Nr, Nt), y (F, Nr, Nd), noise_var (F,))``: random channels, received vectors and
    noise variances in [0.05, 1.05) (float64), for detector tests that need any frames at all."""
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n_frames, nr, nt, dtype=torch.complex64, generator=g)
    y = torch.randn(n_frames, nr, n_data, dtype=torch.complex64, generator=g)
    nv = 0.05 + torch.rand(n_frames, generator=g, dtype=torch.float64)
    return h, y, nv


def sources(tb, streams: np.ndarray, tag_list=()) -> list:
    """One complex vector source per row of ``streams``; ``tag_list`` goes on stream 0."""
    srcs = [blocks.vector_source_c(row.astype(np.complex64).tolist(), False, 1, list(tag_list) if i == 0 else [])
            for i, row in enumerate(streams)]
    tb._keep = getattr(tb, "_keep", []) + srcs  # Python blocks must outlive the run
    return srcs


def sinks(tb, count: int, vlen: int = 1, kind=blocks.vector_sink_c) -> list:
    snks = [kind(vlen) for _ in range(count)]
    tb._keep = getattr(tb, "_keep", []) + snks
    return snks


def data(sink) -> np.ndarray:
    """Items of a vector sink as complex64 / float32 (the streams' own precision)."""
    arr = np.asarray(sink.data())
    return arr.astype(np.complex64 if np.iscomplexobj(arr) else np.float32)


def estimate_tags(h, nv, frame_data: int) -> list:
    """The LS estimator's tags for frames of ``frame_data`` vectors: ``frame_start``, ``csi`` and
    ``noise_var`` at each frame's first vector (``h (F, Nr, Nt)``, ``nv (F,)``)."""
    from gnuradio.neuralmimo.tags import csi_to_pmt

    out = []
    for f in range(h.shape[0]):
        out += [tag(f * frame_data, "frame_start", pmt.from_long(f)), tag(f * frame_data, "csi", csi_to_pmt(h[f])),
                tag(f * frame_data, "noise_var", pmt.from_double(float(nv[f])))]
    return out


def detector_flowgraph(streams: np.ndarray, tag_list, det, n_out: int, throttle=None, chunk: int = 1):
    """Vector sources (one per row of ``streams``, tags on stream 0) -> ``det`` -> one vector sink
    per symbol output. With ``throttle`` (items/s) stream 0 is throttled and delivered in chunks of
    at most ``chunk`` items, so that runtime requests land between frames. Returns ``(tb, sinks)``."""
    from gnuradio import gr

    tb = gr.top_block()
    src = sources(tb, streams, tag_list)
    snk = sinks(tb, n_out)
    for r, s in enumerate(src):
        if throttle and r == 0:
            th = blocks.throttle(gr.sizeof_gr_complex, throttle)
            th.set_max_noutput_items(chunk)
            tb.connect(s, th, (det, r))
            tb._keep.append(th)
        else:
            tb.connect(s, (det, r))
    for k in range(n_out):
        tb.connect((det, k), snk[k])
    return tb, snk


def detector_flowgraph_with_status(y, h, nv, det, n_out: int, throttle=None):
    """:func:`detector_flowgraph` for frames ``y (F, Nr, Nd)`` with their estimates ``h``, ``nv``
    (the estimator's tags), delivered a frame at a time when throttled, and a message debug on
    the detector's ``status`` port. Returns ``(tb, sinks, status)``."""
    frame_data = y.shape[2]
    tb, snk = detector_flowgraph(y.transpose(0, 1).reshape(y.shape[1], -1).numpy(), estimate_tags(h, nv, frame_data),
                                 det, n_out, throttle, chunk=frame_data)
    status = blocks.message_debug()
    tb.msg_connect((det, "status"), (status, "store"))
    tb._keep += [det, status]
    return tb, snk, status

"""Property-based fuzzing of the blocks' work() (issue 29): random sample streams (NaN, Inf,
huge, zero stretches) with random tags of the contract's keys and random PMT values, through a
real flowgraph per example. Every flowgraph ends (no hang, no abort), no helper thread dies, and
every non-finite output is counted (``nonfinite``), never silent."""

from __future__ import annotations

import numpy as np
import pmt
import pytest
from gnuradio import gr
from gnuradio.neuralmimo import (csi_logger, frame_recorder, frame_sync, linear_detector, ls_channel_estimator,
                                 neural_detector)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT_MODELS, run, sinks, sources, tag

pytestmark = pytest.mark.timeout(600)
NR, NT, NP, ND = 4, 2, 4, 12
KEYS = ["frame_start", "csi", "noise_var", "csi_stale", "rx_time", "n_users", "model", "junk"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                      HealthCheck.too_slow])

FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, 1e30, -1e30, 1e-30]))
PMTS = st.one_of(
    st.integers(-2**40, 2**40).map(pmt.from_long),
    FLOATS.map(pmt.from_double),
    st.text(max_size=6).map(pmt.intern),
    st.lists(st.complex_numbers(allow_nan=True, allow_infinity=True), max_size=NR * NT + 2)
    .map(lambda v: pmt.init_c32vector(len(v), v)),
    st.tuples(st.integers(0, 2**40), FLOATS).map(lambda t: pmt.make_tuple(pmt.from_uint64(t[0]), pmt.from_double(t[1]))),
    st.just(pmt.PMT_NIL),
)
TAGS = st.lists(st.tuples(st.integers(0, 399), st.sampled_from(KEYS), PMTS), max_size=30)
SAMPLES = st.sampled_from(["noise", "nan-burst", "inf", "huge", "zeros"])


def _streams(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((NR, n)) + 1j * rng.standard_normal((NR, n))).astype(np.complex64)
    a = int(rng.integers(0, n - 20))
    if kind == "nan-burst":
        x[:, a:a + 17] = np.nan
    elif kind == "inf":
        x[1, a] = np.inf
    elif kind == "huge":
        x *= np.float32(1e30)
    elif kind == "zeros":
        x[:, a:] = 0
    return x


def _run(block, n_out: int, streams: np.ndarray, tag_list):
    tb = gr.top_block()
    srcs = sources(tb, streams, [tag(o, k, v) for o, k, v in tag_list])
    snks = sinks(tb, n_out)
    for i, src in enumerate(srcs):
        tb.connect(src, (block, i))
    for k, snk in enumerate(snks):
        tb.connect((block, k), snk)
    tb._keep.append(block)
    run(tb)
    return snks


def _counted_if_nonfinite(block, snks):
    out = np.concatenate([np.asarray(s.data()) for s in snks]) if snks else np.zeros(0)
    if not np.isfinite(out).all():
        assert block.problems(), "non-finite output without a counted problem"


@FUZZ
@given(kind=SAMPLES, tags_=TAGS, seed=st.integers(0, 1000), mmse=st.booleans())
def test_linear_detector(kind, tags_, seed, mmse):
    det = linear_detector(NR, NT, "qpsk", "mmse" if mmse else "zf")
    _counted_if_nonfinite(det, _run(det, NT, _streams(kind, 400, seed), tags_))


@FUZZ
@given(kind=SAMPLES, tags_=TAGS, seed=st.integers(0, 1000))
def test_ls_channel_estimator(kind, tags_, seed):
    est = ls_channel_estimator(NR, NT, NP, ND, samp_rate=1e6)
    _counted_if_nonfinite(est, _run(est, NR, _streams(kind, 400, seed), tags_))


@FUZZ
@given(kind=SAMPLES, tags_=TAGS, seed=st.integers(0, 1000))
def test_neural_detector(kind, tags_, seed):
    det = neural_detector(12, 8, "bpsk", str(ROOT_MODELS / "hypernet-deepsic-sed-n12"))
    streams = np.concatenate([_streams(kind, 400, seed)] * 3)
    _counted_if_nonfinite(det, _run(det, 8, streams, tags_))
    assert det.switch.thread_errors == {}
    det.close()


@FUZZ
@given(kind=SAMPLES, tags_=TAGS, seed=st.integers(0, 1000))
def test_frame_sync(kind, tags_, seed):
    sync = frame_sync(NR, NT, NP, ND, "qpsk", 8, 4, 0.35, 8)
    _counted_if_nonfinite(sync, _run(sync, NR, _streams(kind, 400, seed), tags_))


@FUZZ
@given(kind=SAMPLES, tags_=TAGS, seed=st.integers(0, 1000))
def test_writers(tmp_path_factory, kind, tags_, seed):
    folder = tmp_path_factory.mktemp("w")
    streams = _streams(kind, 400, seed)
    _run(csi_logger(NR, NT, str(folder / "log"), chunk_frames=2), 0, streams, tags_)
    rec = frame_recorder(NR, str(folder / "cap"), "c", 1e6)
    _run(rec, 0, streams, tags_)
    assert rec.problems().get("write-failed", 0) == 0

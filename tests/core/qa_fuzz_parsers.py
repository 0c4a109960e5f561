"""Property-based fuzzing of every parser of the module's inputs (issue 29): channel mapping
files, CSI log manifests, SigMF capture metadata and pipeline configs. Whatever the content, a
parser either returns something valid or raises its own ValueError subclass with one line --
never another exception, never a traceback from deep inside. (Bundle manifests:
tests/core/detectors/qa_fingerprint.py; tag values: tests/gr/qa_tags.py.)"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuralmimo.channels.external import ChannelFileError, ChannelMapping, FileChannel
from neuralmimo.receiver.capture import CaptureError, CaptureWriter, read_capture
from neuralmimo.site.csilog import CSILogError, CSILogWriter, read_csi_log

SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                    st.text(max_size=12))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                    max_leaves=10)
ROOT = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _one_line(exc: BaseException) -> None:
    assert str(exc) and "\n" not in str(exc).strip()


MAPPING_KEYS = ["file", "axes", "h", "real", "imag", "format", "complex", "users", "antennas", "normalise", "split",
                "seed", "other"]


@FUZZ
@given(data=st.dictionaries(st.sampled_from(MAPPING_KEYS), JSON, max_size=8))
def test_channel_mappings(tmp_path, data):
    np.save(tmp_path / "h.npy", (np.ones((5, 4, 2)) + 1j).astype(np.complex64))
    try:
        m = ChannelMapping.from_dict(data, tmp_path)
    except ChannelFileError as exc:
        _one_line(exc)
        return
    try:
        FileChannel(m)
    except ChannelFileError as exc:
        _one_line(exc)


@pytest.fixture(scope="module")
def csi_log(tmp_path_factory):
    folder = tmp_path_factory.mktemp("csi") / "log"
    w = CSILogWriter(folder, 3, 2, chunk_frames=4)
    for i in range(10):
        w.add(i, torch.ones(3, 2) * (i + 1), 0.1)
    w.close()
    return folder


@FUZZ
@given(key=st.sampled_from(["format", "version", "nr", "nt", "chunks", "frames_written", "info"]), value=JSON,
       chunk_field=st.sampled_from([None, "file", "frames", "first_frame", "last_frame"]))
def test_csi_log_manifests(tmp_path_factory, csi_log, key, value, chunk_field):
    folder = tmp_path_factory.mktemp("csi-fuzz") / "log"
    shutil.copytree(csi_log, folder)
    m = json.loads((folder / "manifest.json").read_text())
    if chunk_field is None:
        m[key] = value
    else:
        m["chunks"][0][chunk_field] = value
    (folder / "manifest.json").write_text(json.dumps(m))
    try:
        log = read_csi_log(folder)
    except CSILogError as exc:
        _one_line(exc)
        return
    assert log.h.shape[1:] == (3, 2) and bool(torch.isfinite(torch.view_as_real(log.h)).all())


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cap")
    info = dict(nt=2, n_pilots=8, n_data=32, modulation="qpsk", preamble_period=16, seed=0, sps=4, rolloff=0.35,
                span=8, snr_convention="project")
    w = CaptureWriter(folder, "c", 2, 1e6, info)
    w.write(np.ones((2, 100), np.complex64))
    w.segment(150)
    w.write(np.ones((2, 50), np.complex64))
    w.close()
    return folder


@FUZZ
@given(where=st.sampled_from(["global", "captures", "collection", "annotations"]),
       key=st.sampled_from(["core:datatype", "core:sample_rate", "neuralmimo:nt", "neuralmimo:sps", "neuralmimo:span",
                            "neuralmimo:modulation", "neuralmimo:rolloff", "core:sample_start", "core:global_index",
                            "core:datetime", "core:streams"]),
       value=JSON)
def test_sigmf_metadata(tmp_path_factory, capture, where, key, value):
    folder = tmp_path_factory.mktemp("cap-fuzz") / "c"
    shutil.copytree(capture, folder)
    if where == "collection":
        path = folder / "c.sigmf-collection"
        m = json.loads(path.read_text())
        m["collection"][key] = value
    else:
        path = folder / "c-ch0.sigmf-meta"
        m = json.loads(path.read_text())
        if where == "global":
            m["global"][key] = value
        else:
            (m[where] or [{}])[0][key] = value
            if not m[where]:
                m[where] = [{key: value}]
    path.write_text(json.dumps(m, allow_nan=True))
    try:
        cap = read_capture(folder)
    except CaptureError as exc:
        _one_line(exc)
        return
    assert cap.samples.shape[0] == 2 and math.isfinite(cap.samp_rate) and cap.samp_rate > 0


@FUZZ
@given(section=st.sampled_from(["training", "system", "evaluation", None]),
       key=st.sampled_from(["steps", "epochs", "lr", "batch", "snr_db", "nr", "nt", "modulation", "threads", "seed",
                            "steps_per_epoch", "frames", "unknown_key"]),
       value=JSON)
def test_pipeline_configs(section, key, value):
    from neuralmimo.lab.families import FAMILIES
    from neuralmimo.lab.runs import load_yaml

    for fam in FAMILIES:
        data = load_yaml(ROOT / "configs" / fam.pipeline / "quick.yaml")
        target = data if section is None else data.setdefault(section, {})
        if not isinstance(target, dict):
            continue
        target[key] = value
        try:
            fam.config_type().from_dict(data)
        except ValueError as exc:
            _one_line(exc)

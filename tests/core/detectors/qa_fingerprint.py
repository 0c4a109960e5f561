"""Behavioural fingerprints (issue 29, class 7): a bundle's manifest cannot claim
hyper-parameters that change what its weights do. save_model writes the detector's output on a
fixed probe; load_detector recomputes it and refuses a manifest that lies. Fuzzed manifests give a
BundleError, never anything else."""

import json
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neuralmimo.bundle import MANIFEST, BundleError, save_model
from neuralmimo.detectors import load_detector
from neuralmimo.detectors.detnet.model import WESNET_CODEC, DetNet

SYSTEM = {"nt": 3, "nr": 6, "modulation": "bpsk"}


@pytest.fixture(scope="module")
def wesnet(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("fp") / "wes"
    return save_model(DetNet(3, 4, 24, "bpsk", "half-exp"), WESNET_CODEC, path, system=SYSTEM)


def _edit(src, dst, change):
    shutil.copytree(src, dst)
    m = json.loads((dst / MANIFEST).read_text())
    change(m)
    (dst / MANIFEST).write_text(json.dumps(m))
    return dst


def test_a_saved_bundle_carries_its_fingerprint_and_loads_checked(wesnet):
    m = json.loads((wesnet / MANIFEST).read_text())
    assert m["fingerprint"]["version"] == 1 and len(m["fingerprint"]["output"]) == 2 * 3 * 8 * 2
    assert load_detector(wesnet).describe()["fingerprint"] == "checked"


@pytest.mark.parametrize("field, value", [("profile", "linear"), ("alpha", 0.5), ("alpha", 0.95)])
def test_a_manifest_claiming_other_hyperparameters_is_refused(tmp_path, wesnet, field, value):
    lying = _edit(wesnet, tmp_path / "lying", lambda m: m["architecture"]["hyperparameters"].__setitem__(field, value))
    with pytest.raises(BundleError, match="fingerprint"):
        load_detector(lying)


def test_a_bundle_saved_before_fingerprints_loads_marked_absent(tmp_path, wesnet):
    old = _edit(wesnet, tmp_path / "old", lambda m: m.pop("fingerprint"))
    assert load_detector(old).describe()["fingerprint"] == "absent"


@pytest.mark.parametrize("fp", [{"version": 1, "output": [float("nan")]}, {"version": 2, "output": [1.0]},
                                {"version": 1, "output": "x"}, [], {"version": 1, "output": []}])
def test_a_malformed_fingerprint_is_refused(tmp_path, wesnet, fp):
    bad = _edit(wesnet, tmp_path / "bad", lambda m: m.__setitem__("fingerprint", fp))
    with pytest.raises(BundleError, match="fingerprint"):
        load_detector(bad)


JSON = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=False),
                              st.text(max_size=8)),
                    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner,
                                                                                         max_size=4)), max_leaves=12)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.lists(st.sampled_from(["architecture", "hyperparameters", "system", "tensors", "fingerprint", "nt",
                                      "nr", "modulation", "hidden", "layers", "profile", "alpha", "output",
                                      "weights_sha256", "schema_version", "keep"]), min_size=1, max_size=3),
       value=JSON)
def test_fuzzed_manifests_are_refused_with_a_bundle_error_or_load(tmp_path_factory, wesnet, path, value):
    """Any field replaced by any JSON value: load_detector either loads a detector that behaves as
    the fingerprint says or raises BundleError (never another exception)."""
    target = tmp_path_factory.mktemp("fuzz") / "b"

    def change(m):
        node = m
        for key in path[:-1]:
            if not isinstance(node, dict):
                return
            node = node.setdefault(key, {})
        if isinstance(node, dict):
            node[path[-1]] = value

    _edit(wesnet, target, change)
    try:
        det = load_detector(target)
    except BundleError:
        return
    assert det.describe()["fingerprint"] in ("checked", "absent")

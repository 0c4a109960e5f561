"""The one bundle codec: system schema, bounded hyper-parameters, shapes derived before anything
is allocated, dtypes, sha256 requests, the version-1 reader, the dummy frame, the shipped bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from neuralmimo.bundle import (
    MANIFEST,
    SCHEMA_VERSION,
    WEIGHTS,
    BundleError,
    file_sha256,
    load_bundle,
    load_model,
    read_manifest,
    save_bundle,
    save_model,
    system_section,
)
from neuralmimo.detectors import SystemSpec, load_detector, verify_bundle
from neuralmimo.detectors.deepsic import HYPERNET_CODEC, JOINT_CODEC, JointModules, ModularHypernetwork, ModuleSpec
from neuralmimo.detectors.sdnet import SDNET_CODEC, SDNet

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.parent for p in (ROOT / "models").glob(f"*/{MANIFEST}"))
SYSTEM = {"nt": 2, "nr": 4, "modulation": "qpsk"}


def _edit(path: Path, fn) -> None:
    m = json.loads((path / MANIFEST).read_text())
    fn(m)
    (path / MANIFEST).write_text(json.dumps(m))


@pytest.fixture
def sdnet(tmp_path):
    torch.manual_seed(0)
    return save_model(SDNet(2, 4, 2).eval(), SDNET_CODEC, tmp_path / "sd", system=SYSTEM)


def test_system_section_always_holds_the_seven_keys():
    s = system_section({"nr": 12, "nt": 8, "modulation": "BPSK"})
    assert list(s) == ["nr", "nt", "modulation", "n_pilots", "snr_convention", "snr_db", "channel"]
    assert (s["modulation"], s["n_pilots"], s["snr_convention"], s["snr_db"], s["channel"]) == \
        ("bpsk", None, "project", [], None)
    assert system_section({**SYSTEM, "snr_db": 25})["snr_db"] == [25.0]
    for bad, why in (({"nr": 4, "nt": 2}, "no 'modulation'"), ({**SYSTEM, "n_rx": 4}, "unknown keys"),
                     ({**SYSTEM, "nr": 0}, "nr must be"), ({**SYSTEM, "snr_convention": "ebn0"}, "snr_convention"),
                     ({**SYSTEM, "channel": "umi"}, "channel must be"), ({**SYSTEM, "snr_db": [1, "x"]}, "snr_db")):
        with pytest.raises(BundleError, match=why):
            system_section(bad)


def test_save_refuses_a_model_that_contradicts_its_system(tmp_path):
    with pytest.raises(BundleError, match="does not fit the system"):
        save_model(SDNet(2, 4, 1), SDNET_CODEC, tmp_path / "x", system={**SYSTEM, "nr": 6})
    assert not (tmp_path / "x").exists()  # nothing written


def test_round_trip_every_codec(tmp_path, sdnet):
    model, bundle = load_model(sdnet, SDNET_CODEC)
    assert bundle.manifest["schema_version"] == SCHEMA_VERSION and isinstance(model, SDNet)
    torch.manual_seed(1)
    hyper = ModularHypernetwork(ModuleSpec(6), 4, iterations=2)
    p = save_model(hyper, HYPERNET_CODEC, tmp_path / "h", system={"nr": 6, "nt": 4, "modulation": "bpsk"})
    back, b = load_model(p, HYPERNET_CODEC)
    assert back.iterations == 2 and b.hyperparameters["iterations"] == 2
    h = torch.randn(3, 6)
    torch.testing.assert_close(back.generate(h), hyper.generate(h))
    joint = JointModules(ModuleSpec(6), [2, 3])
    joint.theta_k3.normal_()
    p = save_model(joint, JOINT_CODEC, tmp_path / "j", system={"nr": 6, "nt": 3, "modulation": "bpsk"})
    torch.testing.assert_close(load_model(p, JOINT_CODEC)[0].thetas()[3], joint.theta_k3)


@pytest.mark.parametrize("change,system,why", [
    ({"n_conv": 10**6}, {}, "n_conv must lie in"),
    ({"n_conv": 2.5}, {}, "n_conv must be int"),
    ({"extra": 1}, {}, "unknown sdnet hyper-parameters"),
    ({"nr": None}, {}, "nr is required"),
    # every value in bounds, together a 2.1e9-element FC layer (8.6 GB): refused before allocation
    ({"nt": 256, "nr": 1024, "input_width": 2048}, {"nt": 256, "nr": 1024}, "tensor elements"),
])
def test_bad_hyperparameters_refused_before_anything_is_built(sdnet, change, system, why):
    _edit(sdnet, lambda m: (m["architecture"]["hyperparameters"].update(change), m["system"].update(system)))
    with pytest.raises(BundleError, match=why):
        load_detector(sdnet)


def test_hypernetwork_iterations_bounded(tmp_path):
    torch.manual_seed(2)
    p = save_model(ModularHypernetwork(ModuleSpec(4), 2), HYPERNET_CODEC, tmp_path / "h",
                   system={"nr": 4, "nt": 2, "modulation": "bpsk"})
    for bad in (0, 1000):
        _edit(p, lambda m: m["architecture"]["hyperparameters"].update(iterations=bad))
        with pytest.raises(BundleError, match="iterations must lie in"):
            load_detector(p)


def test_tensors_must_have_the_declared_floating_dtype(sdnet):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(sdnet / WEIGHTS))
    tensors["fc.bias"] = tensors["fc.bias"].double()
    save_file(tensors, str(sdnet / WEIGHTS))
    _edit(sdnet, lambda m: m.update(weights_sha256=file_sha256(sdnet / WEIGHTS)))
    with pytest.raises(BundleError, match="'fc.bias' is float64, manifest says float32"):
        load_bundle(sdnet)
    _edit(sdnet, lambda m: m["tensors"]["fc.bias"].update(dtype="float64"))
    with pytest.raises(BundleError, match="'fc.bias' is declared float64, the model needs float32"):
        load_detector(sdnet)


def test_requested_sha256_must_be_64_hex_digits(sdnet):
    sha = json.loads((sdnet / MANIFEST).read_text())["weights_sha256"]
    assert load_detector(sdnet, sha256=sha.upper()).sha256 == sha
    for bad in ("", "abc", sha[:-1] + "g", sha + "0"):
        with pytest.raises(BundleError, match="not 64 hex digits"):
            load_detector(sdnet, sha256=bad)


def test_malformed_manifests_are_refused_with_the_field(sdnet):
    for fn, why in ((lambda m: m.update(schema_version=3), "schema_version 3"),
                    (lambda m: m.update(architecture="sdnet"), "architecture must be"),
                    (lambda m: m.update(tensors=[]), "tensors must be"),
                    (lambda m: m["tensors"]["fc.bias"].update(shape=[-1]), "tensor 'fc.bias' must be"),
                    (lambda m: m.update(weights_sha256="xyz"), "weights_sha256 must be"),
                    (lambda m: m.update(training=[1]), "training must be")):
        good = json.loads((sdnet / MANIFEST).read_text())
        _edit(sdnet, fn)
        with pytest.raises(BundleError, match=why):
            read_manifest(sdnet)
        (sdnet / MANIFEST).write_text(json.dumps(good))
    (sdnet / MANIFEST).write_text("[1, 2")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(sdnet)


def test_version_1_manifests_are_read(sdnet):
    def to_v1(m):
        s = m["system"]
        m["schema_version"] = 1
        m["system"] = {"n_rx": s["nr"], "k_max": s["nt"], "modulation": s["modulation"], "channel": "sed",
                       "normalise": "ue"}
    _edit(sdnet, to_v1)
    _, m = read_manifest(sdnet)
    assert m["schema_version"] == SCHEMA_VERSION
    assert m["system"]["nr"] == 4 and m["system"]["nt"] == 2
    assert m["system"]["channel"] == {"name": "deepsic-sed", "args": {"normalise": "ue"}}
    assert load_detector(sdnet, SystemSpec(4, 2, "qpsk")).nt == 2


def test_a_model_that_fails_on_a_dummy_frame_is_refused(tmp_path):
    torch.manual_seed(3)
    hyper = ModularHypernetwork(ModuleSpec(4), 2)
    with torch.no_grad():
        hyper.net[-1].bias.fill_(3e38)  # finite weights, infinite module parameters
    p = save_model(hyper, HYPERNET_CODEC, tmp_path / "h", system={"nr": 4, "nt": 2, "modulation": "bpsk"})
    load_bundle(p)  # valid data ...
    with pytest.raises(BundleError, match="dummy frame"):
        load_detector(p)  # ... but not a working detector


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_bundle_verifies_in_the_current_schema(path):
    assert json.loads((path / MANIFEST).read_text())["schema_version"] == SCHEMA_VERSION
    assert verify_bundle(path).startswith("ok: ")


def test_shipped_bundles_cover_detectors_and_data():
    assert {p.name for p in SHIPPED} >= {"hypernet-deepsic-sed-n12", "sdnet-learngene-umi50", "learngene-umi-bottom"}
    assert "not a detector" in verify_bundle(ROOT / "models" / "learngene-umi-bottom")


def test_save_bundle_refuses_a_system_without_the_schema(tmp_path):
    with pytest.raises(BundleError, match="no 'modulation'"):
        save_bundle(tmp_path / "x", {"w": torch.zeros(1)}, architecture="x", hyperparameters={},
                    system={"nr": 1, "nt": 1})
    shutil.rmtree(tmp_path / "x", ignore_errors=True)


def test_a_diverged_model_is_not_saved(tmp_path):
    """Issue 29, class 5: no pipeline publishes NaN/Inf weights (save_model refuses them)."""
    from neuralmimo.detectors.detnet.model import WESNET_CODEC, DetNet

    m = DetNet(3, 2, 8, "bpsk", "half-exp")
    with torch.no_grad():
        next(iter(m.parameters())).view(-1)[0] = float("inf")
    with pytest.raises(BundleError, match="NaN/Inf"):
        save_model(m, WESNET_CODEC, tmp_path / "b", system={"nt": 3, "nr": 6, "modulation": "bpsk"})
    assert not (tmp_path / "b").exists()

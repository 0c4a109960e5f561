"""The detector registry: load_detector builds detectors from bundles, checks the receiver's system and refuses."""

import json

import pytest
import torch
from neuralmimo.bundle import MANIFEST, BundleError, save_bundle, save_model
from neuralmimo.constellation import Constellation
from neuralmimo.detectors import (
    REGISTRY,
    SystemSpec,
    inspect_bundle,
    load_detector,
)
from neuralmimo.detectors.deepsic import HyperDeepSICDetector
from neuralmimo.detectors.deepsic.model import (
    HYPERNET_CODEC,
    ModularHypernetwork,
    ModuleSpec,
    channel_features,
    deepsic_detect,
    noise_std_per_dim,
    rx_features,
)
from neuralmimo.detectors.sdnet.model import SDNET_CODEC

QPSK = Constellation("qpsk")


@pytest.fixture
def sdnet_bundle(tmp_path, trained_like_sdnet):
    return save_model(trained_like_sdnet(2, 4, 2), SDNET_CODEC, tmp_path / "sd",
                      system={"nt": 2, "nr": 4, "modulation": "qpsk"})


def test_registry_knows_both_families():
    assert {"sdnet", "hypernet-deepsic"} <= set(REGISTRY)


def test_load_detector_checks_system(sdnet_bundle):
    det = load_detector(sdnet_bundle, SystemSpec(4, 2, "qpsk"))
    assert det.architecture == "sdnet" and det.describe()["nt"] == 2
    with pytest.raises(BundleError, match="Nr = 4 receive streams, the flowgraph has 6"):
        load_detector(sdnet_bundle, SystemSpec(6, 2, "qpsk"))
    with pytest.raises(BundleError, match="Nt = 2 streams, the flowgraph has 1"):
        load_detector(sdnet_bundle, SystemSpec(4, 1, "qpsk"))
    with pytest.raises(BundleError, match="model is for qpsk, the flowgraph uses 16qam"):
        load_detector(sdnet_bundle, SystemSpec(4, 2, "16qam"))
    with pytest.raises(BundleError, match="is not the requested"):
        load_detector(sdnet_bundle, sha256="ab" * 32)


def test_unknown_architecture_and_missing_path(tmp_path):
    p = save_bundle(tmp_path / "x", {"w": torch.zeros(2)}, architecture="mystery-net", hyperparameters={},
                    system={"nr": 2, "nt": 1, "modulation": "bpsk"})
    with pytest.raises(BundleError, match="unknown architecture 'mystery-net'"):
        load_detector(p)
    with pytest.raises(BundleError, match="no such bundle"):
        load_detector(tmp_path / "nowhere")
    info = inspect_bundle(p)
    assert info["architecture"] == "mystery-net" and not info["registered"]


def test_sdnet_without_modulation_refused(tmp_path, trained_like_sdnet):
    p = save_model(trained_like_sdnet(2, 4, 1), SDNET_CODEC, tmp_path / "s",
                   system={"nt": 2, "nr": 4, "modulation": "qpsk"})
    m = json.loads((p / MANIFEST).read_text())
    del m["system"]["modulation"]  # a hand-edited manifest: the codec never writes one
    (p / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="no 'modulation'"):
        load_detector(p)


def test_hypernetwork_detector_matches_pipeline_receiver(tmp_path):
    """The run-time detector equals the lab receiver (hypernetwork modules + deepsic_detect) and
    honours a per-frame number of users."""
    torch.manual_seed(5)
    spec = ModuleSpec(6)
    hyper = ModularHypernetwork(spec, 4)
    path = save_model(hyper, HYPERNET_CODEC, tmp_path / "h", system={"nr": 6, "nt": 4, "modulation": "bpsk"})
    det = load_detector(path, SystemSpec(6, 4, "bpsk"))
    assert isinstance(det, HyperDeepSICDetector)
    g = torch.Generator().manual_seed(6)
    h = torch.randn(3, 6, 4, generator=g).to(torch.complex64)
    y = torch.randn(3, 6, 50, dtype=torch.complex64, generator=g)
    nv = torch.tensor([0.1, 0.2, 0.3])
    users = [4, 2, 3]
    out = det.detect(y, h, nv, users)
    std = noise_std_per_dim(nv)
    for f, k in enumerate(users):
        theta = hyper.generate(channel_features(h[f, :, :k], spec, std[f]))
        idx = deepsic_detect(theta, rx_features(y[f], spec, std[f]), spec, 3)
        torch.testing.assert_close(out[f, :k], (2.0 * idx - 1).to(torch.complex64))
        assert bool((out[f, k:] == 0).all())
    with pytest.raises(BundleError, match="K_max = 4 users, the flowgraph has Nt = 5"):
        load_detector(path, SystemSpec(6, 5, "bpsk"))


def test_manifest_tensor_shape_mismatch_refused(sdnet_bundle):
    m = json.loads((sdnet_bundle / MANIFEST).read_text())
    m["tensors"]["fc.bias"]["shape"] = [7]
    (sdnet_bundle / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="tensor 'fc.bias' has shape"):
        load_detector(sdnet_bundle)

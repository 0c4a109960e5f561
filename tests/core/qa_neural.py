"""Run-time neural detectors: SDNet fast path equals the plain module, the registry and its refusals."""

import json

import pytest
import torch

from neuralmimo.bundle import MANIFEST, BundleError, save_bundle
from neuralmimo.constellation import Constellation
from neuralmimo.deepsic import (ModularHypernetwork, ModuleSpec, channel_features, deepsic_detect, noise_std_per_dim,
                                rx_features, save_hypernetwork)
from neuralmimo.neural import REGISTRY, HyperDeepSICDetector, SystemSpec, inspect_bundle, load_detector
from neuralmimo.sdnet import SDNet, save_sdnet, sdnet_detect
from neuralmimo.sdnet_fast import SDNetKernel, sdnet_fast_detect

QPSK = Constellation("qpsk")


def _trained_like(nt, nr, n_conv, input_width=None, seed=0):
    torch.manual_seed(seed)
    m = SDNet(nt, nr, n_conv, input_width)
    for bn in m.norms:  # batch-norm statistics away from the identity, as after training
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.3, 3.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    return m.eval()


@pytest.mark.parametrize("nt,nr,n_conv,width", [(8, 32, 8, None), (8, 32, 12, None), (4, 32, 3, 16),
                                                (2, 2, 8, None), (3, 4, 1, None)])
def test_fast_path_equals_plain_module(nt, nr, n_conv, width):
    """(2, 2, 8): the ZF row's influence reaches the last image row, exercising the edge padding."""
    m = _trained_like(nt, nr, n_conv, width)
    g = torch.Generator().manual_seed(1)
    h = torch.randn(3, nr, nt, dtype=torch.complex64, generator=g)
    y = torch.randn(3, nr, 200, dtype=torch.complex64, generator=g)
    ref = sdnet_detect(m, y, h, QPSK)
    out = sdnet_fast_detect(SDNetKernel(m), y, h, QPSK)
    assert out.shape == ref.shape == (3, nt, 200)
    assert float((out - ref).abs().max()) < 1e-5


def test_fast_path_flops_table_iv():
    k = SDNetKernel(_trained_like(8, 32, 8))
    f = k.flops_per_vector()
    assert f["plain"] == 9_917_440  # Table IV
    # layers l = 1..10 compute l + 1 of 65 rows; the FC multiplies 11 of 65 rows
    assert f["fast"] == sum(2 * (l + 1) * 16 * w.shape[0] * w.shape[1] * 9 for l, w in enumerate(k.weights, 1)) \
        + 2 * 11 * 16 * 16
    assert f["ratio"] > 9.9


def test_batchnorm_folded_into_convolutions():
    m = _trained_like(2, 4, 1)
    k = SDNetKernel(m)
    x = torch.randn(5, 1, 9, 4)
    conv, bn = m.convs[0], m.norms[0]
    ref = bn(conv(x))
    out = torch.nn.functional.conv2d(x, k.weights[0], k.biases[0], padding=1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.fixture
def sdnet_bundle(tmp_path):
    return save_sdnet(_trained_like(2, 4, 2), tmp_path / "sd", system={"nt": 2, "nr": 4, "modulation": "qpsk"})


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
    p = save_bundle(tmp_path / "x", {"w": torch.zeros(2)}, architecture="mystery-net", hyperparameters={}, system={})
    with pytest.raises(BundleError, match="unknown architecture 'mystery-net'"):
        load_detector(p)
    with pytest.raises(BundleError, match="no such bundle"):
        load_detector(tmp_path / "nowhere")
    info = inspect_bundle(p)
    assert info["architecture"] == "mystery-net" and not info["registered"]


def test_sdnet_without_modulation_refused(tmp_path):
    p = save_sdnet(_trained_like(2, 4, 1), tmp_path / "s", system={"nt": 2, "nr": 4})
    with pytest.raises(BundleError, match="no 'modulation'"):
        load_detector(p)


def test_hypernetwork_detector_matches_pipeline_receiver(tmp_path):
    """The run-time detector equals the lab receiver (hypernetwork modules + deepsic_detect) and
    honours a per-frame number of users."""
    torch.manual_seed(5)
    spec = ModuleSpec(6)
    hyper = ModularHypernetwork(spec, 4)
    path = save_hypernetwork(hyper, tmp_path / "h", iterations=3, system={"n_rx": 6, "k_max": 4, "modulation": "bpsk"})
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

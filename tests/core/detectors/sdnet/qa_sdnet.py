"""SDNet [LG]: Table IV counts, the input layout, bundles (round trip, sha256, no unpickling), frame detection."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from neuralmimo.bundle import BundleError, load_bundle, load_model, save_model
from neuralmimo.constellation import Constellation
from neuralmimo.detectors.sdnet.learngene import (
    learngene_tensors,
    segment_layers,
)
from neuralmimo.detectors.sdnet.model import (
    SDNET_CODEC,
    SDNet,
    count_trainable,
    sdnet_detect,
    sdnet_flops,
    sdnet_input,
)
from neuralmimo.realvalued import mat_to_real, vec_to_real


def test_table_iv_parameter_and_flop_counts():
    ind, col = SDNet(8, 32, 8), SDNet(8, 32, 12)
    assert count_trainable(ind) == 21_627
    assert count_trainable(col) == 24_027
    lg = learngene_tensors(col, segment_layers(12, "bottom"))
    n_lg = sum(t.numel() for t in lg.values())
    assert n_lg == 2_336
    assert round(100 * n_lg / count_trainable(ind), 1) == 10.8
    assert sdnet_flops(8, 32, 8) == 9_917_440
    assert sdnet_flops(8, 32, 12) == 14_709_760
    assert sdnet_flops(8, 32, 4, layers="significant") == 4_792_320


def test_input_layout_and_output_shape():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 4, 2, dtype=torch.complex64, generator=g)
    x = torch.randn(5, 2, dtype=torch.complex64, generator=g)
    img = sdnet_input(x, h)
    assert img.shape == (5, 1, 9, 4) and img.dtype == torch.float32
    assert torch.equal(img[:, 0, 0], vec_to_real(x))
    assert torch.equal(img[:, 0, 1:], mat_to_real(h))
    out = SDNet(2, 4, 2)(img)
    assert out.shape == (5, 4) and bool((out.abs() < 1).all())


def test_upsampled_model_for_fewer_streams():
    m = SDNet(4, 32, 2, input_width=16)
    assert m.fc.in_features == 65 * 16 and m.fc.out_features == 8
    assert m(torch.zeros(3, 1, 65, 8)).shape == (3, 8)












def test_sdnet_bundle_round_trip_and_refusals(tmp_path):
    torch.manual_seed(0)
    model = SDNet(2, 4, 2).eval()
    model.norms[0].running_mean.fill_(0.25)
    path = save_model(model, SDNET_CODEC, tmp_path / "b", system={"nt": 2, "nr": 4, "modulation": "qpsk", "n_pilots": 4})
    loaded, bundle = load_model(path, SDNET_CODEC)
    x = torch.randn(7, 1, 9, 4)
    assert torch.equal(loaded(x), model(x))
    assert bundle.manifest["architecture"]["hyperparameters"]["n_conv"] == 2
    # a modified weights file is refused by its sha256
    w = path / "weights.safetensors"
    raw = bytearray(w.read_bytes())
    raw[-1] ^= 0xFF
    w.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(path)


def test_pickle_renamed_safetensors_is_refused_without_unpickling(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("open(%r, 'w').write('ran')" % str(tmp_path / "executed"),))

    model = SDNet(2, 4, 2)
    path = save_model(model, SDNET_CODEC, tmp_path / "b", system={"nt": 2, "nr": 4, "modulation": "qpsk"})
    w = path / "weights.safetensors"
    w.write_bytes(pickle.dumps(Boom()))
    m = json.loads((path / "manifest.json").read_text())
    import hashlib

    m["weights_sha256"] = hashlib.sha256(w.read_bytes()).hexdigest()  # even with a matching sha
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="safetensors"):
        load_bundle(path)
    assert not (tmp_path / "executed").exists()




def test_sdnet_detect_matches_forward():
    torch.manual_seed(0)
    c = Constellation("qpsk")
    model = SDNet(2, 4, 2).eval()
    h = torch.randn(3, 4, 2, dtype=torch.complex64)
    y = torch.randn(3, 4, 5, dtype=torch.complex64)
    out = sdnet_detect(model, y, h, c)
    assert out.shape == (3, 2, 5)
    from neuralmimo.detectors import linear_detect

    zf, _ = linear_detect(y, h, 0.0, "zf", c)
    direct = model(sdnet_input(zf[1, :, 3], h[1]).unsqueeze(0))
    assert torch.allclose(vec_to_real(out[1, :, 3]), direct[0], atol=1e-6)

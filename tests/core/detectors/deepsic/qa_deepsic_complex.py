"""Hypernetwork-DeepSIC on complex baseband (``hypernet-deepsic-complex``): invariances, the
nested layout, the soft-IC MMSE start, the filter against its closed form, the bundle."""

import pytest
import torch
from neuralmimo.bundle import save_model
from neuralmimo.constellation import Constellation
from neuralmimo.detectors import SystemSpec, load_detector
from neuralmimo.detectors.deepsic.complex import (
    COMPLEX_HYPERNET_CODEC,
    PhaseInvariantHypernetwork,
    SoftICModuleSpec,
    context_features,
    soft_ic_deepsic_logits,
    soft_ic_mmse,
)

QPSK = Constellation("qpsk")
N, KMAX = 8, 4


def _frame(k, seed=0, b=64, snr=0.05):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(N, k, dtype=torch.complex64, generator=g)
    idx = QPSK.random_indices((k, b), g)
    y = (h @ QPSK.symbols(idx) + snr ** 0.5 * torch.randn(N, b, dtype=torch.complex64, generator=g)).mT
    return h.mT.contiguous(), y.contiguous(), torch.tensor(snr), idx


def _trained_like(seed=1):
    """A hypernetwork whose modules' corrections are not zero (as after training)."""
    torch.manual_seed(seed)
    hyper = PhaseInvariantHypernetwork(SoftICModuleSpec(N, "qpsk"), KMAX)
    with torch.no_grad():
        for p in hyper.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return hyper


def test_filter_is_the_unbiased_mmse_of_the_other_users_covariance():
    """w_k from one solve of C equals C_k^{-1} h_k / (h_k^H C_k^{-1} h_k) with C_k without user k."""
    h, y, nv, _ = _frame(3)
    m = torch.zeros(3, y.shape[0], dtype=torch.complex64)
    v = torch.rand(3, y.shape[0]) + 0.1
    z, r, share = soft_ic_mmse(h, nv, y, m, v)
    vbar = v.mean(-1)
    for k in range(3):
        others = [l for l in range(3) if l != k]
        hk = h[k].to(torch.complex128)
        c = sum(float(vbar[l]) * torch.outer(h[l], h[l].conj()).to(torch.complex128) for l in others) + float(nv) * torch.eye(N)
        g = torch.linalg.solve(c, hk)
        w = g / (hk.conj() @ g)
        assert torch.allclose(z[k].to(torch.complex128), y.to(torch.complex128) @ w.conj(), atol=1e-4)
        res = sum((w.conj() @ h[l].to(torch.complex128)).abs() ** 2 * v[l] for l in others) + nv * (w.abs() ** 2).sum()
        assert torch.allclose(r[k].double(), res.double(), rtol=1e-4)
        assert float(share[k, k].abs().max()) == 0.0


def test_receive_rotation_and_user_phases_do_not_change_the_decisions():
    """A unitary U on the receive side changes nothing; a user's channel turned by j^m makes its
    decisions turn by j^-m (its QPSK symbol seen in its own frame), the others' stay."""
    hyper = _trained_like()
    h, y, nv, _ = _frame(KMAX)
    base = hyper.detect(h, nv, y)
    u = torch.linalg.qr(torch.randn(N, N, dtype=torch.complex64, generator=torch.Generator().manual_seed(3)))[0]
    assert torch.equal(hyper.detect(h @ u.mT, nv, y @ u.mT), base)
    turn = torch.tensor([1, 1j, -1, -1j], dtype=torch.complex64)  # user k's channel times j^k
    pts = QPSK.points
    x_turned = pts[base] * turn.conj()[:, None]  # what each user sent, in its turned frame
    dec = hyper.detect(h * turn[:, None], nv, y)
    assert torch.equal(pts[dec], QPSK.symbols(QPSK.hard_decision(x_turned)))
    slot, glob = context_features(h * turn[:, None], nv, torch.ones(KMAX, dtype=torch.bool))
    ref = context_features(h, nv, torch.ones(KMAX, dtype=torch.bool))
    assert torch.allclose(slot, ref[0], atol=1e-5) and torch.allclose(glob, ref[1], atol=1e-5)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_user_receiver_equals_padded_k_max_receiver(k):
    """Nested layout: the first |theta^(K)| outputs run on K users give the K_max receiver's
    logits with absent users masked out (how training batches mixed K)."""
    hyper = _trained_like()
    h, y, nv, _ = _frame(k)
    direct = hyper.frame_logits(h, nv, y)
    hp = torch.cat([h, torch.zeros(KMAX - k, N, dtype=h.dtype)])
    active = torch.arange(KMAX) < k
    with torch.no_grad():
        theta = hyper(hp, nv, active)
        padded = soft_ic_deepsic_logits(theta, hp, nv, y, hyper.spec, hyper.iterations, active)[-1][:k]
    assert torch.allclose(direct, padded, atol=1e-4)


def test_untrained_receiver_is_soft_ic_mmse():
    """The output layer starts with zero correction weights: the logits are the Gaussian ones."""
    torch.manual_seed(0)
    hyper = PhaseInvariantHypernetwork(SoftICModuleSpec(N, "qpsk"), KMAX)
    h, y, nv, _ = _frame(KMAX)
    with torch.no_grad():
        theta = hyper.generate(h, nv)
    s = hyper.spec
    assert float(theta[..., s.hidden:s.head_size].abs().max()) == 0.0  # W2, b2
    assert float(theta[..., s.head_size:].abs().max()) > 0  # W1 live: gradients reach W2


def test_bundle_round_trip_and_registry():
    hyper = _trained_like()
    h, y, nv, _ = _frame(3, b=16)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(hyper, COMPLEX_HYPERNET_CODEC, Path(tmp) / "c", system={"nr": N, "nt": KMAX, "modulation": "qpsk"})
        det = load_detector(path, SystemSpec(N, 3, "qpsk"))
        assert det.architecture == "hypernet-deepsic-complex" and not det.real_channels_only
        x = det.detect(y.mT[None], h.mT[None], nv[None], [3])
        assert torch.equal(x[0], QPSK.points[hyper.detect(h, nv, y)])
        assert det.flops_per_vector(16) > 0

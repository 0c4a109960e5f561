"""Modular-hypernetwork DeepSIC as run-time :class:`~neuralmimo.detectors.base.FrameDetector` s: the
paper's receiver (``hypernet-deepsic``) and the complex-baseband one (``hypernet-deepsic-complex``)."""

from __future__ import annotations

import torch

from ...bundle import Param
from ..base import FrameDetector, SystemSpec
from .complex import COMPLEX_HYPERNET_CODEC, PhaseInvariantHypernetwork, soft_ic_flops_per_vector
from .model import HYPERNET_CODEC, ModularHypernetwork, channel_features, deepsic_logits, noise_std_per_dim, rx_features


class HyperDeepSICDetector(FrameDetector):
    """Modular-hypernetwork DeepSIC [MH]: per frame the hypernetwork writes the modules of the
    frame's ``K`` users from the (noise-normalised) channel estimate (Algorithm 1); all data
    vectors of the frame then run the ``Q`` iterations in one batched pass. ``K`` may change from
    frame to frame (``n_users``, default: every stream of the estimate); absent users' outputs
    are 0. Outputs are the MAP constellation points of the last iteration; LLRs are the exact
    per-bit LLRs of its posterior.

    Run-time option ``iterations``: ``Q`` (default: the trained value; fewer cost less).
    """

    codec = HYPERNET_CODEC
    serves_fewer_users = True
    options = {"iterations": Param("int", 1, 32)}

    @classmethod
    def from_model(cls, hyper: ModularHypernetwork) -> "HyperDeepSICDetector":
        """A detector around an in-memory hypernetwork (benchmarks, lab code); no bundle."""
        hp = cls.codec.hyperparameters(hyper)
        return cls(hyper, hp, SystemSpec(hyper.spec.n_rx, hyper.k_max, hyper.spec.modulation))

    @torch.no_grad()
    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        hyper, spec, q = self.model, self.model.spec, self.option_values["iterations"]
        s, _, n = y.shape
        nt = h.shape[-1]
        ks = [nt] * s if n_users is None else [int(k) for k in n_users]
        out = torch.zeros(s, nt, n, dtype=torch.complex64)
        llrs = torch.zeros(s, n, nt, self.constellation.bits_per_symbol) if llr else None
        std = noise_std_per_dim(torch.as_tensor(noise_var, dtype=torch.float32).reshape(s))
        pts = self.constellation.points
        for k in sorted(set(ks)):
            if not 1 <= k <= min(nt, hyper.k_max):
                raise ValueError(f"{k} active users: this receiver serves 1..{min(nt, hyper.k_max)}")
            sel = torch.tensor([i for i, kk in enumerate(ks) if kk == k])
            theta = hyper.generate(channel_features(h[sel][..., :k], spec, std[sel]))
            feats = rx_features(y[sel], spec, std[sel])
            logits = deepsic_logits(theta, feats, spec, q)[-1]  # (S_k, K, n, |S|)
            out[sel, :k] = pts[logits.argmax(-1)]
            if llrs is not None:
                bit_llr = self.constellation.llr_from_log_probs(torch.log_softmax(logits, -1))  # (S_k, K, n, B)
                llrs[sel, :, :k] = bit_llr.transpose(1, 2)
        return out, llrs

    def flops_per_vector(self, vectors_per_frame: int, n_users: int | None = None) -> float:
        """``2 Q K (D H + H |S|)`` per vector with ``D = F + (K-1)(|S|-1)`` module inputs, plus the
        hypernetwork's ``2 K |phi_hyper|`` per frame shared over its vectors."""
        spec, q = self.model.spec, self.option_values["iterations"]
        k = self.nt if n_users is None else n_users
        per_vector = 2 * q * k * (spec.n_inputs(k) * spec.hidden + spec.hidden * spec.num_classes)
        return per_vector + 2 * k * self.model.n_hyper_params() / vectors_per_frame


class ComplexHyperDeepSICDetector(FrameDetector):
    """Hypernetwork-DeepSIC on complex baseband (:mod:`.complex`): per frame the phase-invariant
    hypernetwork writes the modules of the frame's ``K`` users from the channel estimate and the
    noise variance; the frame's vectors then run ``Q`` soft-IC MMSE iterations with the modules'
    corrections in one batched pass. ``K`` may change from frame to frame; absent users' outputs
    are 0. Outputs are the MAP points of the last iteration; LLRs are the exact per-bit LLRs of
    its posterior.

    Run-time option ``iterations``: ``Q`` (default: the trained value).
    """

    codec = COMPLEX_HYPERNET_CODEC
    serves_fewer_users = True
    options = {"iterations": Param("int", 1, 32)}

    @classmethod
    def from_model(cls, hyper: PhaseInvariantHypernetwork) -> "ComplexHyperDeepSICDetector":
        """A detector around an in-memory hypernetwork (benchmarks, lab code); no bundle."""
        hp = cls.codec.hyperparameters(hyper)
        return cls(hyper, hp, SystemSpec(hyper.spec.n_rx, hyper.k_max, hyper.spec.modulation))

    @torch.no_grad()
    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        hyper, q = self.model, self.option_values["iterations"]
        s, _, n = y.shape
        nt = h.shape[-1]
        ks = [nt] * s if n_users is None else [int(k) for k in n_users]
        out = torch.zeros(s, nt, n, dtype=torch.complex64)
        llrs = torch.zeros(s, n, nt, self.constellation.bits_per_symbol) if llr else None
        nv = torch.as_tensor(noise_var, dtype=torch.float32).reshape(s)
        pts = self.constellation.points
        for k in sorted(set(ks)):
            if not 1 <= k <= min(nt, hyper.k_max):
                raise ValueError(f"{k} active users: this receiver serves 1..{min(nt, hyper.k_max)}")
            sel = torch.tensor([i for i, kk in enumerate(ks) if kk == k])
            logits = hyper.frame_logits(h[sel][..., :k].mT.to(torch.complex64), nv[sel],
                                        y[sel].mT.to(torch.complex64), q)  # (S_k, K, n, |S|)
            out[sel, :k] = pts[logits.argmax(-1)]
            if llrs is not None:
                bit_llr = self.constellation.llr_from_log_probs(torch.log_softmax(logits, -1))
                llrs[sel, :, :k] = bit_llr.transpose(1, 2)
        return out, llrs

    def flops_per_vector(self, vectors_per_frame: int, n_users: int | None = None) -> float:
        """:func:`~.complex.soft_ic_flops_per_vector`, plus per frame the hypernetwork's
        ``2 K |phi_hyper|`` and ``Q`` solves of ``C`` for ``K`` right-hand sides (``~ 8 N^3 / 3 + 8 N^2 K``
        each) shared over its vectors."""
        spec, q = self.model.spec, self.option_values["iterations"]
        k = self.nt if n_users is None else n_users
        n = spec.n_rx
        per_frame = 2 * k * self.model.n_hyper_params() + q * (8 * n ** 3 / 3 + 8 * n * n * k)
        return soft_ic_flops_per_vector(spec.n_rx, k, spec, q) + per_frame / vectors_per_frame

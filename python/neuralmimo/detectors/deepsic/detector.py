"""Modular-hypernetwork DeepSIC as run-time :class:`~neuralmimo.detectors.base.FrameDetector` s: the
paper's receiver (``hypernet-deepsic``) and the complex-baseband one (``hypernet-deepsic-complex``)."""

from __future__ import annotations

import torch

from ...bundle import Param
from ..base import FrameDetector, SystemSpec
from .complex import COMPLEX_HYPERNET_CODEC, PhaseInvariantHypernetwork, soft_ic_flops_per_vector
from .model import HYPERNET_CODEC, ModularHypernetwork, channel_features, deepsic_logits, noise_std_per_dim, rx_features


class _FrameHypernetworkDetector(FrameDetector):
    """What both hypernetwork-DeepSIC detectors share: frames grouped by their number of active
    users, one batched pass per group through :meth:`_logits`, MAP points and exact per-bit LLRs
    of the last iteration's posterior, absent users 0."""

    serves_fewer_users = True
    options = {"iterations": Param("int", 1, 32)}

    @classmethod
    def from_model(cls, hyper: ModularHypernetwork | PhaseInvariantHypernetwork) -> "_FrameHypernetworkDetector":
        """A detector around an in-memory hypernetwork (benchmarks, lab code); no bundle."""
        hp = cls.codec.hyperparameters(hyper)
        return cls(hyper, hp, SystemSpec(hyper.spec.n_rx, hyper.k_max, hyper.spec.modulation))

    def _logits(self, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor, q: int) -> torch.Tensor:
        """``y (S, Nr, n)``, ``h (S, Nr, K)``, ``noise_var (S,)`` -> last-iteration logits ``(S, K, n, |S|)``."""
        raise NotImplementedError

    @torch.no_grad()
    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        q = self.option_values["iterations"]
        s, _, n = y.shape
        nt = h.shape[-1]
        k_max = self.model.k_max
        ks = [nt] * s if n_users is None else [int(k) for k in n_users]
        out = torch.zeros(s, nt, n, dtype=torch.complex64)
        llrs = torch.zeros(s, n, nt, self.constellation.bits_per_symbol) if llr else None
        nv = torch.as_tensor(noise_var, dtype=torch.float32).reshape(s)
        pts = self.constellation.points
        for k in sorted(set(ks)):
            if not 1 <= k <= min(nt, k_max):
                raise ValueError(f"{k} active users: this receiver serves 1..{min(nt, k_max)}")
            sel = torch.tensor([i for i, kk in enumerate(ks) if kk == k])
            logits = self._logits(y[sel], h[sel][..., :k], nv[sel], q)  # (S_k, K, n, |S|)
            out[sel, :k] = pts[logits.argmax(-1)]
            if llrs is not None:
                bit_llr = self.constellation.llr_from_log_probs(torch.log_softmax(logits, -1))  # (S_k, K, n, B)
                llrs[sel, :, :k] = bit_llr.transpose(1, 2)
        return out, llrs


class HyperDeepSICDetector(_FrameHypernetworkDetector):
    """Modular-hypernetwork DeepSIC [MH]: per frame the hypernetwork writes the modules of the
    frame's ``K`` users from the (noise-normalised) channel estimate (Algorithm 1); all data
    vectors of the frame then run the ``Q`` iterations in one batched pass. ``K`` may change from
    frame to frame (``n_users``, default: every stream of the estimate); absent users' outputs
    are 0. Outputs are the MAP constellation points of the last iteration; LLRs are the exact
    per-bit LLRs of its posterior.

    Run-time option ``iterations``: ``Q`` (default: the trained value; fewer cost less).
    """

    codec = HYPERNET_CODEC

    def _logits(self, y, h, noise_var, q):
        spec = self.model.spec
        std = noise_std_per_dim(noise_var)
        theta = self.model.generate(channel_features(h, spec, std))
        return deepsic_logits(theta, rx_features(y, spec, std), spec, q)[-1]

    def flops_per_vector(self, vectors_per_frame: int, n_users: int | None = None) -> float:
        """``2 Q K (D H + H |S|)`` per vector with ``D = F + (K-1)(|S|-1)`` module inputs, plus the
        hypernetwork's ``2 K |phi_hyper|`` per frame shared over its vectors."""
        spec, q = self.model.spec, self.option_values["iterations"]
        k = self.nt if n_users is None else n_users
        per_vector = 2 * q * k * (spec.n_inputs(k) * spec.hidden + spec.hidden * spec.num_classes)
        return per_vector + 2 * k * self.model.n_hyper_params() / vectors_per_frame


class ComplexHyperDeepSICDetector(_FrameHypernetworkDetector):
    """Hypernetwork-DeepSIC on complex baseband (:mod:`.complex`): per frame the phase-invariant
    hypernetwork writes the modules of the frame's ``K`` users from the channel estimate and the
    noise variance; the frame's vectors then run ``Q`` soft-IC MMSE iterations with the modules'
    corrections in one batched pass. ``K`` may change from frame to frame; absent users' outputs
    are 0. Outputs are the MAP points of the last iteration; LLRs are the exact per-bit LLRs of
    its posterior.

    Run-time option ``iterations``: ``Q`` (default: the trained value).
    """

    codec = COMPLEX_HYPERNET_CODEC

    def _logits(self, y, h, noise_var, q):
        return self.model.frame_logits(h.mT.to(torch.complex64), noise_var, y.mT.to(torch.complex64), q)

    def flops_per_vector(self, vectors_per_frame: int, n_users: int | None = None) -> float:
        """:func:`~.complex.soft_ic_flops_per_vector`, plus per frame the hypernetwork's
        ``2 K |phi_hyper|`` and ``Q`` solves of ``C`` for ``K`` right-hand sides (``~ 8 N^3 / 3 + 8 N^2 K``
        each) shared over its vectors."""
        spec, q = self.model.spec, self.option_values["iterations"]
        k = self.nt if n_users is None else n_users
        n = spec.n_rx
        per_frame = 2 * k * self.model.n_hyper_params() + q * (8 * n ** 3 / 3 + 8 * n * n * k)
        return soft_ic_flops_per_vector(spec.n_rx, k, spec, q) + per_frame / vectors_per_frame

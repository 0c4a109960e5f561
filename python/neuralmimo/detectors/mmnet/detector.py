"""HyperMIMO as a run-time :class:`~neuralmimo.detectors.base.FrameDetector`."""

from __future__ import annotations

import torch

from ..base import FrameDetector, SystemSpec
from .model import HYPERMIMO_CODEC, HyperMIMO, qr_positive


class HyperMIMODetector(FrameDetector):
    """HyperMIMO [HM]: per frame the QR of the channel estimate (:func:`~.model.qr_positive`)
    and one hypernetwork pass write MMNet's weights; all the frame's vectors then go through
    the ``T`` MMNet layers in one batch. Outputs the last layer's posterior mean rounded to the
    nearest point (hard decision); LLRs are the exact per-bit LLRs of the last layer's
    posterior over the points. Needs ``Nr >= Nt``. Inputs at the scale it was trained on
    (unit average gain per user, noise variance in the same units): the hypernetwork reads
    ``R_A`` and ``sigma`` as numbers."""

    codec = HYPERMIMO_CODEC

    @classmethod
    def from_model(cls, model: HyperMIMO, nr: int) -> "HyperMIMODetector":
        """A detector around an in-memory HyperMIMO (benchmarks, lab code); no bundle."""
        hp = cls.codec.hyperparameters(model)
        return cls(model, hp, SystemSpec(nr, model.nu, model.modulation))

    @torch.no_grad()
    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        if n_users is not None and any(int(k) != self.nt for k in n_users):
            raise ValueError(f"HyperMIMO detects all {self.nt} users of every frame")
        nv = torch.as_tensor(noise_var, dtype=torch.float32).reshape(-1).expand(y.shape[0])
        x, log_p = self.model(y.to(torch.complex64), h.to(torch.complex64), nv)
        const = self.constellation
        idx = log_p.argmax(-1)  # MAP point of the last posterior (= nearest to its mean for QPSK)
        out = const.points[idx]
        llrs = const.llr_from_log_probs(log_p).transpose(1, 2) if llr else None  # (S, n, Nt, B)
        return out, llrs

    def flops_per_vector(self, vectors_per_frame: int, n_users: int | None = None) -> float:
        """Per vector: ``y* = Q_A^H y`` (``8 Nr Nu``) and per layer the residual and ``Theta_t``
        products (``2 x 8 Nu^2``), the residual energy (``4 Nu``) and the denoiser (``~ 8 Nu M``).
        Per frame, shared over its vectors: the QR (``~ 8 Nr Nu^2``), the hypernetwork (2 per
        weight) and the layer constants of eq. (9) (``~ 2 x 8 Nu^3`` per layer). The LMMSE start
        adds ``8 Nu^2`` per vector and ``~ 3 x 8 Nu^3`` per frame (Gram matrix and solve)."""
        nu, nr, t, m = self.nt, self.nr, self.model.layers, self.constellation.num_points
        lmmse = self.model.start == "lmmse"
        per_vector = 8 * nr * nu + t * (16 * nu * nu + 4 * nu + 8 * nu * m) + lmmse * 8 * nu * nu
        per_frame = (8 * nr * nu * nu + 2 * sum(p.numel() for p in self.model.parameters()) + t * 16 * nu ** 3
                     + lmmse * 24 * nu ** 3)
        return per_vector + per_frame / vectors_per_frame


__all__ = ["HyperMIMODetector", "qr_positive"]

"""SDNet as a run-time :class:`~neuralmimo.detectors.base.FrameDetector`."""

from __future__ import annotations

from ..base import FrameDetector
from .fast import SDNetKernel, sdnet_fast_detect
from .model import SDNET_CODEC


class SDNetDetector(FrameDetector):
    """SDNet [LG] through the frame-amortised kernel (:mod:`.fast`): ZF per frame, constant rows
    per frame, variable rows per vector. ``Nt`` must equal the model's.

    LLRs are max-log around SDNet's estimate with ZF's effective noise variance per stream (an
    approximation: SDNet's own error statistics are neither Gaussian nor known per frame).
    """

    codec = SDNET_CODEC

    def __init__(self, model, hyperparameters, system, bundle=None):
        super().__init__(model, hyperparameters, system, bundle)
        self.kernel = SDNetKernel(model)

    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        if not llr:
            return sdnet_fast_detect(self.kernel, y, h, self.constellation), None
        x, zf_var = sdnet_fast_detect(self.kernel, y, h, self.constellation, noise_var, with_zf_var=True)
        return x, self.constellation.llr_maxlog(x.transpose(1, 2), zf_var.clamp(min=1e-12)[:, None, :])

    def flops_per_vector(self, vectors_per_frame: int, n_users: int | None = None) -> float:
        """[LG] Table IV counting: the fast kernel's per-vector FLOPs plus the per-frame pass of the
        whole network (the constant rows) shared over the frame's vectors."""
        f = self.kernel.flops_per_vector()
        return f["fast"] + f["plain"] / vectors_per_frame

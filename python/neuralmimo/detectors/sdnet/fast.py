"""Frame-amortised SDNet inference (docs/architecture.md: per-frame work amortised over the frame).

SDNet's image stacks the ZF row (row 0, one per data vector) on the ``2Nr`` rows of the channel
estimate (one per frame). A 3x3 convolution makes output row ``r`` depend on input rows
``r-1 .. r+1``, so after layer ``l`` only rows ``0 .. l`` can depend on the ZF row
(``v_l = min(l + 1, 2Nr + 1)`` rows); every other row of every layer is a per-frame constant.

Per frame (:meth:`SDNetKernel.frame`): one pass of the whole network on the frame's image (any
ZF row) keeps, for each layer, the constant input rows the variable rows need (at most two), and
the FC's contribution of the constant rows of the last layer. Per data vector
(:meth:`SDNetKernel.detect`): layer ``l`` computes only its ``v_l`` variable rows from the ``v_{l-1}``
variable rows below it and the cached constant rows; the FC multiplies only the variable rows.
Batch-norm is folded into the convolutions (eval mode: ``y = g (Wx + b - mu) / sqrt(var + eps) + beta``).

FLOPs per vector ([LG] Table IV counting, ``2 x MACs``) drop from ``sum_l H`` rows to ``sum_l v_l`` rows:
see :meth:`SDNetKernel.flops_per_vector`. Outputs equal the plain module's to float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...constellation import Constellation
from ..classical import linear_detect
from ...realvalued import mat_to_real, vec_to_complex, vec_to_real
from .model import KERNEL, SDNet


@dataclass
class FrameState:
    """Per-frame constants of a batch of ``S`` frames (see :class:`SDNetKernel`)."""

    const_rows: list  # per layer: (S, C_in, n_const, W) constant input rows below the variable ones
    fc_const: torch.Tensor  # (S, 2Nt) FC bias + contribution of the last layer's constant rows


class SDNetKernel:
    """Eval-mode SDNet with folded batch-norm and receptive-field caching.

    Built from a trained :class:`~neuralmimo.detectors.sdnet.model.SDNet` (its running statistics are used);
    the kernel holds plain tensors, so it is cheap to keep two (hot-swap) and needs no autograd.
    """

    def __init__(self, model: SDNet):
        model = model.eval()
        self.nt, self.nr, self.width = model.nt, model.nr, model.input_width
        self.rows = model.rows
        self.weights, self.biases = [], []
        with torch.no_grad():
            for conv, bn in zip(model.convs, model.norms):
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                self.weights.append((conv.weight * scale[:, None, None, None]).contiguous())
                self.biases.append(((conv.bias - bn.running_mean) * scale + bn.bias).contiguous())
            self.fc_w = model.fc.weight.detach().reshape(2 * self.nt, self.rows, self.width).clone()
            self.fc_b = model.fc.bias.detach().clone()
        self.depth = len(self.weights)
        # variable rows after each layer (index 0: the input image)
        self.var_rows = [min(l + 1, self.rows) for l in range(self.depth + 1)]
        v_last = self.var_rows[-1]
        self.fc_w_var = self.fc_w[:, :v_last, :].reshape(2 * self.nt, -1).T.contiguous()  # (v*W, 2Nt)

    # ------------------------------------------------------------------ per frame
    def _image(self, h: torch.Tensor) -> torch.Tensor:
        """``h (S, Nr, Nt)`` -> ``(S, 1, 2Nr + 1, W)`` with a zero ZF row, upsampled to the width."""
        img = torch.cat([torch.zeros(h.shape[0], 1, 2 * self.nt), mat_to_real(h).float()], 1).unsqueeze(1)
        return img.repeat_interleave(self.width // (2 * self.nt), dim=-1) if img.shape[-1] != self.width else img

    @torch.no_grad()
    def frame(self, h: torch.Tensor) -> FrameState:
        """Constants of ``S`` frames with channel estimates ``h (S, Nr, Nt)``."""
        a = self._image(h)
        const = []
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            v_in, v_out = self.var_rows[l], self.var_rows[l + 1]
            const.append(a[:, :, v_in:min(v_out, self.rows - 1) + 1].contiguous())
            a = torch.tanh(F.conv2d(a, w, b, padding=KERNEL // 2))
        v = self.var_rows[-1]
        fc_const = self.fc_b + torch.einsum("orw,srw->so", self.fc_w[:, v:, :], a[:, 0, v:, :])
        return FrameState(const, fc_const)

    # ------------------------------------------------------------------ per vector
    @torch.no_grad()
    def detect(self, state: FrameState, x_zf: torch.Tensor, frame: int = 0) -> torch.Tensor:
        """Real-valued SDNet outputs ``(B, 2Nt)`` for the ZF estimates ``x_zf (B, 2Nt)``
        (real-valued, ``[Re; Im]``) of frame ``frame`` of ``state``. The frame's constant rows
        are broadcast, not copied, over its vectors."""
        n = x_zf.shape[0]
        a = x_zf.float()[:, None, None, :]
        if a.shape[-1] != self.width:
            a = a.repeat_interleave(self.width // (2 * self.nt), dim=-1)
        for l, (w, b) in enumerate(zip(self.weights, self.biases)):
            const = state.const_rows[l][frame:frame + 1]
            inp = torch.cat([a, const.expand(n, -1, -1, -1)], 2) if const.shape[2] else a
            bottom = 1 if self.var_rows[l + 1] == self.rows else 0  # the variable rows reached the image's edge
            a = torch.tanh(F.conv2d(F.pad(inp, (1, 1, 1, bottom)), w, b))
        return torch.tanh(a.flatten(1) @ self.fc_w_var + state.fc_const[frame])

    def flops_per_vector(self) -> dict:
        """Table IV-style FLOPs (2 x kernel MACs) per data vector: plain vs this kernel."""
        def conv_flops(rows):
            return sum(2 * r * self.width * w.shape[0] * w.shape[1] * KERNEL * KERNEL
                       for r, w in zip(rows, self.weights))

        fc_plain = 2 * self.rows * self.width * 2 * self.nt
        fc_fast = 2 * self.var_rows[-1] * self.width * 2 * self.nt
        plain = conv_flops([self.rows] * self.depth) + fc_plain
        fast = conv_flops(self.var_rows[1:]) + fc_fast
        return {"plain": plain, "fast": fast, "ratio": plain / fast}


def sdnet_fast_detect(kernel: SDNetKernel, y: torch.Tensor, h: torch.Tensor, constellation: Constellation,
                      noise_var=0.0, with_zf_var: bool = False):
    """Frames ``y (S, Nr, n)`` with estimates ``h (S, Nr, Nt)`` -> complex estimates ``(S, Nt, n)``
    (the same as :func:`neuralmimo.detectors.sdnet.model.sdnet_detect`, via the frame-amortised kernel).

    ``with_zf_var``: also return ZF's effective noise variance per stream ``(S, Nt)`` for the
    complex noise variance ``noise_var`` (float or ``(S,)``)."""
    s, _, n = y.shape
    x_zf, zf_var = linear_detect(y, h, noise_var, "zf", constellation)  # (S, Nt, n), (S, Nt)
    zf = vec_to_real(x_zf.transpose(1, 2))  # (S, n, 2Nt)
    state = kernel.frame(h)  # every frame's constants in one pass
    out = torch.stack([kernel.detect(state, zf[f], f) for f in range(s)])  # (S, n, 2Nt)
    x = vec_to_complex(out).transpose(1, 2).to(y.dtype)
    return (x, zf_var) if with_zf_var else x

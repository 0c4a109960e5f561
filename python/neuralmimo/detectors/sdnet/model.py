"""SDNet, the CNN detector of [LG] Sec. III-B, Fig. 2.

Input: the real-valued ZF estimate ``x_ZF`` (``2Nt``, [LG] eq. (9)) stacked on top of the real-valued
LS channel estimate ``H_LS`` (``2Nr x 2Nt``, [LG] eq. (2)), one image ``(2Nr + 1) x 2Nt`` with one
channel; row 0 is the ZF row.

Network: ``Nconv + 2`` 3x3 convolutions ('same' padding, stride 1), the first ``Nconv + 1``
with 8 output channels and the last with 1, each followed by batch-norm and tanh; flatten;
FC ``(2Nr + 1) 2Nt -> 2Nt`` and tanh. Trained with the MSE of [LG] eq. (13) against the real-valued
transmitted symbols.

Layer numbering follows [LG] Sec. V-B: the *significant* layers ``1 .. Nconv`` are the 8->8
convolutions ``convs[1] .. convs[Nconv]``; the first and last convolutions and the FC have
other shapes and cannot be exchanged between models, so they are never part of a learngene.

Parameter count (trainable): ``80 + 584 Nconv + 73`` for the convolutions, ``16 (Nconv + 1) + 2``
for batch-norm (scale and shift) and ``(2Nr + 1) 2Nt 2Nt + 2Nt`` for the FC: 21,627 at
``Nconv = 8`` and 24,027 at ``Nconv = 12`` for ``Nt = 8, Nr = 32`` ([LG] Table IV).

Scalability ([LG] Fig. 13): a model for ``Nt`` streams can reuse 8->8 convolutions trained at a
reference width ``2 Nt_ref`` through ``input_width=2 Nt_ref``: the input image is upsampled
(nearest) along its width by ``Nt_ref / Nt`` so every convolution sees the same geometry as in
the collective model; the FC then maps ``(2Nr + 1) 2Nt_ref -> 2Nt``.
"""

from __future__ import annotations

import torch
from torch import nn

from ...bundle import ModelCodec, Param
from ...constellation import Constellation
from ..classical import linear_detect
from ...realvalued import mat_to_real, vec_to_complex, vec_to_real

CONV_CHANNELS = 8
KERNEL = 3


class SDNet(nn.Module):
    """SDNet detector as a callable module.

    Parameters
    ----------
    nt, nr : complex transmit streams and receive antennas
    n_conv : depth ``Nconv`` (number of significant 8->8 convolutions)
    input_width : width of the image the convolutions see; ``None`` -> ``2 nt``. Must be a
        multiple of ``2 nt`` (nearest upsampling along the width).

    Call: ``x (B, 1, 2Nr + 1, 2Nt)`` float32 (see :func:`sdnet_input`) -> ``(B, 2Nt)`` in
    ``(-1, 1)``, the refined real-valued symbol estimate ``[Re x; Im x]``.
    """

    def __init__(self, nt: int, nr: int, n_conv: int, input_width: int | None = None):
        super().__init__()
        if n_conv < 1:
            raise ValueError(f"n_conv must be >= 1, got {n_conv}")
        self.nt, self.nr, self.n_conv = nt, nr, n_conv
        self.input_width = input_width or 2 * nt
        if self.input_width % (2 * nt):
            raise ValueError(f"input_width {self.input_width} is not a multiple of 2*nt = {2 * nt}")
        chans = [1] + [CONV_CHANNELS] * (n_conv + 1) + [1]
        self.convs = nn.ModuleList(nn.Conv2d(chans[i], chans[i + 1], KERNEL, padding=KERNEL // 2)
                                   for i in range(n_conv + 2))
        self.norms = nn.ModuleList(nn.BatchNorm2d(chans[i + 1]) for i in range(n_conv + 2))
        self.fc = nn.Linear((2 * nr + 1) * self.input_width, 2 * nt)

    @property
    def rows(self) -> int:
        return 2 * self.nr + 1

    def significant_conv(self, layer: int) -> nn.Conv2d:
        """The 8->8 convolution of significant layer ``layer`` (1-based, Sec. V-B numbering)."""
        if not 1 <= layer <= self.n_conv:
            raise ValueError(f"significant layers are 1..{self.n_conv}, got {layer}")
        return self.convs[layer]

    def significant_names(self) -> dict[int, list[str]]:
        """Parameter names (weight, bias) of each significant layer."""
        return {layer: [f"convs.{layer}.weight", f"convs.{layer}.bias"] for layer in range(1, self.n_conv + 1)}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.input_width:
            x = x.repeat_interleave(self.input_width // x.shape[-1], dim=-1)
        for conv, norm in zip(self.convs, self.norms):
            x = torch.tanh(norm(conv(x)))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.fc(self.features(x).flatten(1)))


def sdnet_input(x_zf: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Stack a complex ZF estimate ``(..., Nt)`` and channel estimate ``(..., Nr, Nt)`` into the
    real-valued SDNet image ``(..., 1, 2Nr + 1, 2Nt)`` float32 (row 0: ``[Re x; Im x]^T``)."""
    rows = torch.cat([vec_to_real(x_zf).unsqueeze(-2), mat_to_real(h)], dim=-2)
    return rows.unsqueeze(-3).to(torch.float32)


def predict(model: SDNet, inputs: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    """Eval-mode forward pass (batch-norm with running statistics) in chunks of ``batch``
    images -> ``(n, 2Nt)`` on ``inputs``' device (computed on the model's); the model's training
    flag is restored afterwards."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    with torch.no_grad():
        out = torch.cat([model(inputs[s:s + batch].to(dev)).to(inputs.device)
                         for s in range(0, inputs.shape[0], batch)])
    model.train(was)
    return out


def sdnet_detect(model: SDNet, y: torch.Tensor, h: torch.Tensor, constellation: Constellation,
                 batch: int = 4096) -> torch.Tensor:
    """Detect a frame with SDNet: ``y (..., Nr, N)`` complex received vectors sharing the
    channel estimate ``h (..., Nr, Nt)`` -> complex symbol estimates ``(..., Nt, N)``.

    The ZF estimate (eq. 9) is computed here; the model runs through :func:`predict`.
    """
    x_zf, _ = linear_detect(y, h, 0.0, "zf", constellation)
    lead = x_zf.shape[:-2]
    n = x_zf.shape[-1]
    zf = x_zf.transpose(-1, -2).reshape(-1, model.nt)
    hh = h.unsqueeze(-3).expand(*lead, n, *h.shape[-2:]).reshape(-1, *h.shape[-2:])
    x = vec_to_complex(predict(model, sdnet_input(zf, hh), batch)).to(y.dtype)
    return x.reshape(*lead, n, model.nt).transpose(-1, -2)


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def sdnet_flops(nt: int, nr: int, n_conv: int, layers: str = "all") -> int:
    """FLOPs per input vector counted as in Table IV: ``2 x`` multiply-accumulates of the
    convolution kernels and the FC weights (biases, batch-norm and tanh not counted).

    ``layers``: ``"all"`` (convs + FC) or ``"significant"`` (only the 8->8 convolutions, e.g.
    the learngene's 4 layers are ``4/Nconv`` of that). 9,917,440 at ``Nconv = 8``.
    """
    pixels = (2 * nr + 1) * 2 * nt
    per_conv = lambda cin, cout: 2 * pixels * cout * cin * KERNEL * KERNEL  # noqa: E731
    significant = n_conv * per_conv(CONV_CHANNELS, CONV_CHANNELS)
    if layers == "significant":
        return significant
    return per_conv(1, CONV_CHANNELS) + significant + per_conv(CONV_CHANNELS, 1) + 2 * pixels * 2 * nt




def _sdnet_hyperparameters(model: SDNet) -> dict:
    return {"nt": model.nt, "nr": model.nr, "n_conv": model.n_conv, "input_width": model.input_width}


def _sdnet_build(hp: dict) -> SDNet:
    return SDNet(hp["nt"], hp["nr"], hp["n_conv"], hp["input_width"])


def _sdnet_check_system(hp: dict, system: dict) -> None:
    if (hp["nr"], hp["nt"]) != (system["nr"], system["nt"]):
        raise ValueError(f"an SDNet for Nr x Nt = {hp['nr']} x {hp['nt']} does not fit the system "
                         f"{system['nr']} x {system['nt']}")


# SDNet bundles: the state dict, batch-norm running statistics included
SDNET_CODEC = ModelCodec(
    architecture="sdnet", label="an SDNet",
    schema={"nt": Param("int", 1, 256), "nr": Param("int", 1, 1024), "n_conv": Param("int", 1, 64),
            "input_width": Param("int", 2, 2048)},
    hyperparameters=_sdnet_hyperparameters, build=_sdnet_build, check_system=_sdnet_check_system)

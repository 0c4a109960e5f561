"""Learngene for SDNet: gradient significance, extraction and expansion, [LG] Sec. IV-D/E.

Gradient significance ([LG] eqs. (19)-(20)). At the last epoch of task ``k`` the collective model's
gradient magnitude per parameter is ``g_i = |mean_b dL_b/dtheta_i|``, the average over that
epoch's mini-batches ``b`` of the gradient of the mini-batch loss (``L`` is Keras' MSE, the mean
over the ``2Nt`` outputs and the batch, which is how the paper's threshold ``tau = 1e-4`` was
set). The significance of layer ``l`` is the fraction of its parameters with ``g_i > tau``:

    rho_k^l = (1 / |theta^l|) sum_i 1(g_{i,k}^l > tau).

Only the significant 8->8 convolutions (weights and biases) are scored: batch-norm, the first
and last convolutions and the FC are excluded as in Sec. V-B.

Extraction. The candidate segments are the top/middle/bottom thirds of the collective model's
significant layers (``1-4``, ``5-8``, ``9-12`` at ``Nconv = 12``). A layer is a learngene
candidate when its ``rho`` trend over the tasks decreases consistently (negative least-squares
slope) and ends low; :func:`select_segment` picks the segment with the lowest significance over
the last tasks among the segments whose every layer decreases (all segments if none does).

Expansion ([LG] Fig. 5). Individual-model positions (``Nconv = 8``): top ``1-4``, middle ``3-6``,
bottom ``5-8``. *Embedding* puts the learngene (the selected segment) at the top, middle or
bottom position; *inheriting* puts the collective model's top, middle or bottom segment at the
bottom position. Bottom embedding and bottom inheriting are the same model (the paper says so).
Only convolution weights and biases are copied; batch-norm stays freshly initialised.

Regularisation ([LG] eq. (21)): ``L_ind = L + lambda/2 sum_m ||theta'_m - theta_m||^2`` over the
inherited layers, pulling them toward the learngene.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ...bundle import ModelCodec, Param, load_model, save_model
from .model import CONV_CHANNELS, KERNEL, SDNet

SEGMENTS = ("top", "middle", "bottom")
STRATEGIES = tuple(f"{kind}-{seg}" for kind in ("embed", "inherit") for seg in SEGMENTS)


class GradientRecorder:
    """Accumulates the mean mini-batch gradient of chosen parameters over an epoch.

    Call :meth:`add` after each ``backward()`` (before the optimiser step clears nothing: only
    reads ``.grad``); :meth:`magnitudes` returns ``|mean_b grad_b|`` per parameter name.
    """

    def __init__(self, named_params: dict[str, nn.Parameter]):
        self.params = named_params
        self.sums = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in named_params.items()}
        self.batches = 0

    def add(self) -> None:
        for n, p in self.params.items():
            if p.grad is not None:
                self.sums[n] += p.grad.detach().to(self.sums[n].device, torch.float64)
        self.batches += 1

    def state_dict(self) -> dict:
        return {"sums": self.sums, "batches": self.batches}

    def load_state_dict(self, d: dict) -> None:
        for n, v in d["sums"].items():
            self.sums[n].copy_(v)
        self.batches = d["batches"]

    def magnitudes(self) -> dict[str, torch.Tensor]:
        if self.batches == 0:
            raise RuntimeError("no gradient recorded")
        return {n: (s / self.batches).abs() for n, s in self.sums.items()}


def layer_significance(magnitudes: dict[str, torch.Tensor], layers: dict[int, list[str]], tau: float) -> dict[int, float]:
    """``rho^l`` (eq. 20) of each layer: fraction of its parameters (all tensors listed for the
    layer, e.g. weight and bias) whose gradient magnitude exceeds ``tau``."""
    out = {}
    for layer, names in layers.items():
        g = torch.cat([magnitudes[n].flatten() for n in names])
        out[layer] = float((g > tau).double().mean())
    return out


def segment_layers(n_conv: int, segment: str) -> list[int]:
    """Collective-model segment: the significant layers split into three equal thirds."""
    if n_conv % 3:
        raise ValueError(f"collective Nconv must split into three equal segments, got {n_conv}")
    size = n_conv // 3
    start = SEGMENTS.index(segment) * size
    return list(range(start + 1, start + size + 1))


def individual_positions(n_conv: int, size: int, position: str) -> list[int]:
    """Individual-model position of a ``size``-layer learngene: top ``1..size``, bottom
    ``n_conv-size+1..n_conv``, middle centred between them (3-6 for 4 of 8, as in Sec. V-A)."""
    if size > n_conv:
        raise ValueError(f"a {size}-layer learngene does not fit a model with Nconv = {n_conv}")
    first = {"top": 1, "middle": (n_conv - size) // 2 + 1, "bottom": n_conv - size + 1}[position]
    return list(range(first, first + size))


def trend_slope(values: list[float]) -> float:
    """Least-squares slope of a sequence against its index (0 for fewer than two values)."""
    n = len(values)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(values) / n
    num = sum((i - mx) * (v - my) for i, v in enumerate(values))
    den = sum((i - mx) ** 2 for i in range(n))
    return num / den


@dataclass
class SegmentScore:
    segment: str
    layers: list[int]
    slopes: list[float]
    late_rho: float
    decreasing: bool


def score_segments(rho: list[dict[int, float]], n_conv: int, late_fraction: float = 1 / 3) -> list[SegmentScore]:
    """Score each collective segment from ``rho[k][l]`` (task ``k``, layer ``l``)."""
    late = max(1, math.ceil(len(rho) * late_fraction))
    scores = []
    for seg in SEGMENTS:
        layers = segment_layers(n_conv, seg)
        slopes = [trend_slope([r[l] for r in rho]) for l in layers]
        late_rho = sum(r[l] for r in rho[-late:] for l in layers) / (late * len(layers))
        scores.append(SegmentScore(seg, layers, slopes, late_rho, all(s < 0 for s in slopes)))
    return scores


def select_segment(rho: list[dict[int, float]], n_conv: int) -> tuple[str, list[SegmentScore]]:
    """The learngene segment: lowest late significance among consistently decreasing segments
    (among all segments if none decreases); ties go to the deeper segment."""
    scores = score_segments(rho, n_conv)
    pool = [s for s in scores if s.decreasing] or scores
    best = min(reversed(pool), key=lambda s: s.late_rho)
    return best.segment, scores


def strategy_mapping(strategy: str, selected: str, n_col: int, n_ind: int) -> dict[int, int]:
    """``{individual layer: collective layer}`` for an expansion strategy (``embed-top`` ...)."""
    kind, _, where = strategy.partition("-")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown expansion strategy {strategy!r}; choose one of {STRATEGIES}")
    if kind == "embed":
        source = segment_layers(n_col, selected)
        target = individual_positions(n_ind, len(source), where)
    else:
        source = segment_layers(n_col, where)
        target = individual_positions(n_ind, len(source), "bottom")
    return dict(zip(target, source))


def learngene_tensors(collective: SDNet, layers: list[int]) -> dict[str, torch.Tensor]:
    """Conv weights and biases of collective layers, keyed ``layer{l}.weight`` / ``.bias``."""
    out = {}
    for l in layers:
        conv = collective.significant_conv(l)
        out[f"layer{l}.weight"] = conv.weight.detach().clone()
        out[f"layer{l}.bias"] = conv.bias.detach().clone()
    return out


def expand(individual: SDNet, tensors: dict[str, torch.Tensor], mapping: dict[int, int]) -> dict[str, torch.Tensor]:
    """Copy learngene layers into ``individual`` per ``mapping`` (individual -> collective layer).

    Only the convolutions change; returns the anchors for :class:`LearngenePenalty` keyed by the
    individual model's parameter names.
    """
    anchors = {}
    with torch.no_grad():
        for ind_layer, col_layer in mapping.items():
            conv = individual.significant_conv(ind_layer)
            for part in ("weight", "bias"):
                src = tensors[f"layer{col_layer}.{part}"]
                dst = getattr(conv, part)
                if src.shape != dst.shape:
                    raise ValueError(f"learngene layer {col_layer} {part} has shape {tuple(src.shape)}, "
                                     f"individual layer {ind_layer} needs {tuple(dst.shape)}")
                dst.copy_(src)
                anchors[f"convs.{ind_layer}.{part}"] = src.detach().clone()
    return anchors


class LearngenePenalty(nn.Module):
    """The eq. (21) term ``lambda/2 sum ||theta' - theta_lg||^2`` over the inherited tensors.

    ``anchors``: ``{parameter name: learngene tensor}`` as returned by :func:`expand`.
    Call with the individual model; returns a scalar (0 when ``lam == 0`` or no anchors).
    """

    def __init__(self, anchors: dict[str, torch.Tensor], lam: float):
        super().__init__()
        self.lam = float(lam)
        self.names = list(anchors)
        for i, n in enumerate(self.names):
            self.register_buffer(f"anchor{i}", anchors[n])

    def forward(self, model: nn.Module) -> torch.Tensor:
        params = dict(model.named_parameters())
        total = torch.zeros((), dtype=torch.float32, device=next(iter(params.values())).device)
        if self.lam == 0.0 or not self.names:
            return total
        for i, n in enumerate(self.names):
            total = total + (params[n] - getattr(self, f"anchor{i}").to(params[n].device)).square().sum()
        return 0.5 * self.lam * total




class LearngeneLayers(nn.Module):
    """A learngene as data: the significant convolutions ``layer{l}`` (weights and biases only,
    batch-norm excluded) of a collective model; ``layers`` are their collective-model ids."""

    def __init__(self, layers: list[int], segment: str, channels: int = CONV_CHANNELS, kernel: int = KERNEL):
        super().__init__()
        self.layers, self.segment = list(layers), segment
        for l in self.layers:
            self.add_module(f"layer{l}", nn.Conv2d(channels, channels, kernel, padding=kernel // 2))


def _learngene_build(hp: dict) -> LearngeneLayers:
    return LearngeneLayers(hp["layers"], hp["segment"], hp["channels"], hp["kernel"])


# learngene bundles are data for the expansion strategies, not detectors
LEARNGENE_CODEC = ModelCodec(
    architecture="sdnet-learngene", label="a learngene",
    schema={"layers": Param("int_list", 1, 64, max_len=64), "segment": Param("str", choices=SEGMENTS),
            "channels": Param("int", 1, 64), "kernel": Param("int", 1, 7)},
    hyperparameters=lambda m: {"layers": m.layers, "segment": m.segment, "channels": CONV_CHANNELS, "kernel": KERNEL},
    build=_learngene_build)


def save_learngene(directory, tensors: dict[str, torch.Tensor], *, layers: list[int], segment: str, selected: bool,
                   system: dict, provenance: dict):
    """Export learngene layers (``layer{l}.weight|bias`` tensors of :func:`learngene_tensors`) as a bundle."""
    module = LearngeneLayers(layers, segment)
    module.load_state_dict(tensors, strict=True)
    lg = {"source": provenance, "layers": layers, "segment": segment, "selected": selected}
    return save_model(module, LEARNGENE_CODEC, directory, system=system, training=provenance.get("training"),
                      learngene=lg)


def load_learngene(path) -> tuple[dict[str, torch.Tensor], list[int], "Bundle"]:  # noqa: F821
    """A learngene bundle -> (tensors keyed ``layer{l}.weight|bias``, layer ids, bundle)."""
    module, bundle = load_model(path, LEARNGENE_CODEC)
    return {k: v.detach() for k, v in module.state_dict().items()}, list(module.layers), bundle

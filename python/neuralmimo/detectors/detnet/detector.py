"""DetNet / WeSNet as a run-time :class:`~neuralmimo.detectors.base.FrameDetector` with a
complexity dial."""

from __future__ import annotations

import torch

from ...bundle import Param
from ..base import FrameDetector, SystemSpec
from ..classical import linear_detect
from .model import DETNET_CODEC, WESNET_CODEC, DetNet, detnet_elementwise_flops, detnet_matmul_flops, kept_units
from .train import to_points


class DetNetDetector(FrameDetector):
    """DetNet [DN] / WeSNet [WS]: per frame ``H^T H`` of the channel estimate; all the frame's
    vectors go through the layers in one batch. Output: the last layer's soft estimate in the
    constellation's scale (its nearest point is the hard decision); LLRs max-log around it with
    ZF's effective noise variance per stream (an approximation, as for SDNet).

    Run-time options (the complexity dial, [WS] Sec. III and VI-E): ``keep`` -- fraction of each
    layer's hidden units in use (the first ``round(keep * hidden)``; at most the trained one) --
    and ``layers`` -- how many layers run (layer truncation; 0 or absent: all). The weight
    matrices are *sliced* to the kept units and layers (:meth:`~.model.DetNet.sliced`), so a
    smaller setting does proportionally less work; masking would save nothing.
    """

    codec = DETNET_CODEC
    options = {"keep": Param("float", 1e-6, 1.0), "layers": Param("int", 0, 512)}

    def __init__(self, model: DetNet, hyperparameters, system, bundle=None):
        super().__init__(model, hyperparameters, system, bundle)
        self.option_values = {"keep": model.keep, "layers": 0, "fallback": True}
        self._run = model.sliced()

    @classmethod
    def from_model(cls, model: DetNet, nr: int) -> "DetNetDetector":
        """A detector around an in-memory network (lab code, benchmarks); no bundle."""
        kind = WeSNetDetector if model.profile != "none" else DetNetDetector
        return kind(model, kind.codec.hyperparameters(model), SystemSpec(nr, model.nt, model.modulation))

    def configure(self, **options) -> None:
        """Set ``keep`` and/or ``layers``; ``ValueError`` for a kept fraction above the trained one
        or more layers than the network has (nothing changes then)."""
        values = dict(self.option_values)
        for name, value in options.items():
            if name == "fallback":
                values[name] = self.FALLBACK_OPTION.check(name, value)
                continue
            if name not in self.options:
                raise ValueError(f"{self.architecture} has no run-time option {name!r}; it has "
                                 f"{sorted([*self.options, 'fallback'])}")
            values[name] = self.options[name].check(name, value)
        m = self.model
        if kept_units(values["keep"], m.hidden) > m.units:
            raise ValueError(f"keep {values['keep']:g} is above the fraction this model was trained with "
                             f"({m.keep:g})")
        if values["layers"] > m.layers:
            raise ValueError(f"layers {values['layers']} is more than the model's {m.layers}")
        self._run = m.sliced(values["keep"], values["layers"] or None)
        self.option_values = values

    def configured(self, **options) -> "DetNetDetector":
        """A new detector on the same model with these options (the block swaps it in at a frame
        boundary); this one is unchanged."""
        det = self.__class__.__new__(self.__class__)
        det.__dict__.update(self.__dict__)
        det.option_values = dict(self.option_values)
        det.configure(**options)
        return det

    @property
    def units(self) -> int:
        return self._run.units

    @property
    def depth(self) -> int:
        return self._run.layers

    @torch.no_grad()
    def detect_with_llr(self, y, h, noise_var, n_users=None, llr=True):
        if n_users is not None and any(int(k) != self.nt for k in n_users):
            raise ValueError(f"DetNet detects all {self.nt} streams of every frame")
        run = self._run
        hty, hth = run.real_inputs(y, h)
        x = to_points(run(hty, hth), run)
        if not llr:
            return x, None
        _, zf_var = linear_detect(y, h, torch.as_tensor(noise_var, dtype=torch.float32).reshape(-1), "zf",
                                  self.constellation)
        return x, self.constellation.llr_maxlog(x.transpose(1, 2), zf_var.clamp(min=1e-12)[:, None, :])

    def flops_per_vector(self, vectors_per_frame: int, n_users: int | None = None) -> float:
        """Matrix products (:func:`~.model.detnet_matmul_flops`, equal to a count on the sliced
        tensors) plus the element-wise operations, at the current ``keep`` and ``layers``."""
        r = self._run
        return (detnet_matmul_flops(r.k, self.nr, r.layers, r.units, r.aux, vectors_per_frame)
                + detnet_elementwise_flops(r.k, r.layers, r.units, r.aux))

    def describe(self) -> dict:
        d = super().describe()
        d["options"] = {"keep": self.option_values["keep"], "layers": self.depth}
        return d


class WeSNetDetector(DetNetDetector):
    """A WeSNet / L-WeSNet / R-WeSNet bundle (a network trained with a weight-scaling profile)."""

    codec = WESNET_CODEC

"""Radio impairments applied to received streams."""

from __future__ import annotations

import math

import torch


def apply_cfo(y: torch.Tensor, cfo: float, first_sample: int) -> torch.Tensor:
    """Carrier frequency offset: multiply sample ``m`` by ``exp(j 2 pi cfo m)``.

    Parameters
    ----------
    y : ``(..., N)`` complex, samples ``first_sample .. first_sample + N - 1`` of a stream
    cfo : offset in cycles per sample
    first_sample : absolute index of ``y[..., 0]``; the phase is computed in float64 from the
        absolute index, so it stays continuous across buffers

    Returns
    -------
    same shape and dtype as ``y``
    """
    if cfo == 0.0:
        return y
    m = torch.arange(first_sample, first_sample + y.shape[-1], dtype=torch.float64)
    frac = torch.remainder(cfo * m, 1.0)  # keep the angle small before the float32 cast
    return y * torch.polar(torch.ones_like(frac), 2 * math.pi * frac).to(y.dtype)

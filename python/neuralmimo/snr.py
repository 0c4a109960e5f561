"""SNR conventions and noise generation.

Every SNR in this project is in one of three named conventions. Each convention fixes a
*reference power* ``P_ref`` such that the complex noise variance per receive antenna is

    sigma^2 = P_ref / 10^(SNR_dB / 10).

``project`` (the default everywhere unless a function says otherwise)
    SNR = E||Hx||^2 / E||n||^2 (equivalently per receive antenna), symbols of unit energy:
    ``P_ref = E||H||_F^2 / Nr``.
``deepsic`` (modular-hypernetwork / DeepSIC papers)
    noise variance ``10^(-SNR/10)`` *per real dimension* of the paper's real-valued BPSK model,
    with the channel's diagonal at unit gain; so the SNR is the per-user SNR on its strongest
    antenna: ``P_ref = 2 * g_diag`` with ``g_diag = 1``.
``detnet`` (DetNet / WeSNet)
    mean column energy of H over the per-real-dimension noise variance:
    ``P_ref = 2 * E||H||_F^2 / Nt``.
``hypermimo`` (HyperMIMO [HM] eq. (15))
    ``sigma^2 = 10^(-SNR/10)`` per complex dimension, with unit-energy symbols and users of
    unit average gain per antenna: ``P_ref = 1``, the SNR of one user at one antenna. [HM]
    eq. (15) writes ``SNR = E[||y||^2 / Nr] / sigma^2 = 1 / sigma^2``, which would need a total
    received power of 1 per antenna, i.e. users of gain ``1 / Nu`` -- contradicting its
    "average gain of one" per user. We read it as the per-user SNR: under it the paper's SER
    curves cross 1e-3 inside its 0-10 dB training range, under the total-power reading they
    would lie ``10 log10 Nu`` (7.8 dB for ``Nu = 6``) further right. For a channel with
    ``E||H||_F^2 = Nr Nu`` it is the ``project`` SNR minus ``10 log10 Nu``.
"""

from __future__ import annotations

import math

import torch

CONVENTIONS = ("project", "deepsic", "detnet", "hypermimo")


def reference_power(convention: str, *, channel_energy: float, nr: int, nt: int) -> float:
    """``P_ref`` of a convention for a channel with ``E||H||_F^2 = channel_energy``."""
    if convention == "project":
        return channel_energy / nr
    if convention == "deepsic":
        return 2.0
    if convention == "detnet":
        return 2.0 * channel_energy / nt
    if convention == "hypermimo":
        return 1.0
    raise ValueError(f"unknown SNR convention {convention!r}; choose one of {CONVENTIONS}")


def noise_variance(snr_db: float, convention: str = "project", *, channel_energy: float, nr: int, nt: int) -> float:
    """Complex noise variance per receive antenna for ``snr_db`` in ``convention``."""
    return reference_power(convention, channel_energy=channel_energy, nr=nr, nt=nt) / 10.0 ** (snr_db / 10.0)


def convert_snr_db(snr_db: float, from_convention: str, to_convention: str, *, channel_energy: float, nr: int, nt: int) -> float:
    """The same noise level expressed in another convention (dB)."""
    kw = dict(channel_energy=channel_energy, nr=nr, nt=nt)
    return snr_db + 10.0 * math.log10(reference_power(to_convention, **kw) / reference_power(from_convention, **kw))


def complex_noise(shape, noise_var, generator: torch.Generator | None = None, dtype=torch.complex64) -> torch.Tensor:
    """i.i.d. ``CN(0, noise_var)`` samples; ``noise_var`` is a float or broadcastable tensor."""
    real_dtype = torch.float64 if dtype == torch.complex128 else torch.float32
    re = torch.randn(tuple(shape), generator=generator, dtype=real_dtype)
    im = torch.randn(tuple(shape), generator=generator, dtype=real_dtype)
    scale = torch.sqrt(torch.as_tensor(noise_var, dtype=real_dtype) / 2.0)
    return torch.complex(re, im) * scale

"""The one table of channel-model names, and the one spelling of a channel everywhere.

A channel is ``{name: NAME, args: {...}}``: in every YAML config, as JSON/YAML text on the
command line (``--channel '{name: kronecker, args: {rho_rx: 0.7}}'``, or just ``--channel
kronecker``), in the GRC ``mimo_channel`` block and in a bundle's ``system.channel``.
:func:`make_channel` builds the model; misspelt arguments are refused with the model's accepted
names.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field, fields
from typing import Callable

import torch

from .anchored import AnchoredChannel
from .base import ChannelModel, StoredChannels
from .deepsic_sed import DeepSICSynthetic
from .external import make_file_channel
from .fading import IIDRayleigh, IIDRealGaussian, Kronecker, LocalScattering, TimeVaryingCorrelated
from .planewave import PlaneWaveTaskChannel
from .umi import UMiConfig, make_umi_channel


@dataclass(frozen=True)
class ChannelEntry:
    """A named channel model: ``factory(nr, nt, **args)`` and a one-line summary."""

    factory: Callable[..., ChannelModel]
    summary: str
    extra_args: tuple[str, ...] = ()  # accepted through the factory's **kwargs

    def accepted_args(self) -> list[str]:
        params = list(inspect.signature(self.factory).parameters.values())[2:]  # after nr, nt
        named = [p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
        return sorted(set(named) | set(self.extra_args))


def make_anchored_channel(nr: int, nt: int, base, rho: float, anchor: int = 0) -> AnchoredChannel:
    """The ``anchored`` channel by name (:func:`make_channel`; here, beside the table it looks names up in, so that
    ``anchored`` imports nothing of the registry): ``base`` is a channel spec
    (``{name, args}``); a stored base's anchor comes from its ``train`` split when the base takes
    a ``split`` argument, so that the train and test channels of one task share their anchor."""
    spec = ChannelSpec.parse(base)
    model = make_channel(spec, nr, nt)
    if isinstance(model, StoredChannels):
        source = model
        if "split" in CHANNELS[spec.name].accepted_args():
            source = make_channel(ChannelSpec(spec.name, {**spec.args, "split": "train"}), nr, nt)
        if not 0 <= int(anchor) < source.h.shape[0]:
            raise ValueError(f"anchor {anchor} is not a channel of {spec} ({source.h.shape[0]} channels)")
        h0 = source.h[int(anchor)]
    else:
        h0 = model.sample(1, torch.Generator().manual_seed(int(anchor)))[0]
    return AnchoredChannel(model, rho, h0)


CHANNELS: dict[str, ChannelEntry] = {
    "iid": ChannelEntry(IIDRayleigh, "i.i.d. Rayleigh"),
    "iid-real": ChannelEntry(IIDRealGaussian, "real i.i.d. N(0, 1), DetNet's 30x60 BPSK channel [DN] [WS]"),
    "kronecker": ChannelEntry(Kronecker, "Kronecker, exponential correlation at both ends"),
    "local-scattering": ChannelEntry(LocalScattering, "local scattering around each user, ULA [HM] eq. (13)-(14)"),
    "deepsic-sed": ChannelEntry(DeepSICSynthetic, "DeepSIC synthetic exp(-|n-k|) with per-user SNR profiles [MH]"),
    "time-varying": ChannelEntry(TimeVaryingCorrelated, "correlated Gauss-Markov fading with shadowing (COST2100 "
                                 "stand-in)"),
    "umi-task": ChannelEntry(make_umi_channel, "a cached 3GPP 38.901 UMi NLoS task, 32x8 [LG]",
                             tuple(f.name for f in fields(UMiConfig))),
    "plane-waves": ChannelEntry(PlaneWaveTaskChannel, "a fixed-geometry plane-wave task: fixed angles and powers, "
                                "i.i.d. gains per channel (a site whose scatterers stay put) [LG]"),
    "anchored": ChannelEntry(make_anchored_channel, "a base channel's channels mixed into one fixed channel of it: "
                             "rho*H0 + sqrt(1-rho^2)*H (within-task diversity)"),
    "file": ChannelEntry(make_file_channel, "channels read from a .mat/HDF5/.npz file through a mapping file "
                         "(QuaDRiGa, ray tracers, measurements; docs/external-channels.md)"),
}

_BARE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class ChannelSpec:
    """A channel model by name with its keyword arguments: ``{name: ..., args: {...}}``."""

    name: str
    args: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, value) -> "ChannelSpec":
        """A spec from a :class:`ChannelSpec`, a mapping ``{name, args}``, or its text (JSON or
        YAML flow mapping; a bare name means no arguments). ``ValueError`` says what is wrong."""
        if isinstance(value, ChannelSpec):
            return value
        if isinstance(value, str):
            text = value.strip()
            if _BARE_NAME.match(text):
                return cls(text, {})
            import yaml  # lazily: only the lab imports yaml at module level

            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ValueError(f"channel {text!r} is neither a model name nor a YAML/JSON mapping "
                                 f"{{name: ..., args: {{...}}}} ({e})") from None
        if not isinstance(value, dict):
            raise ValueError(f"a channel is a mapping {{name: ..., args: {{...}}}}, got {value!r}")
        unknown = set(value) - {"name", "args"}
        if unknown:
            raise ValueError(f"a channel has the keys 'name' and 'args', not {sorted(unknown)}")
        name, args = value.get("name"), value.get("args") or {}
        if not isinstance(name, str) or not name:
            raise ValueError(f"channel name must be a non-empty string, got {name!r}")
        if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
            raise ValueError(f"channel args must be a mapping of names to values, got {args!r}")
        return cls(name, dict(args))

    def to_dict(self) -> dict:
        return {"name": self.name, "args": dict(self.args)}

    def __str__(self) -> str:
        if not self.args:
            return self.name
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.args.items()) + ")"

    def with_defaults(self, **defaults) -> "ChannelSpec":
        """This spec with ``defaults`` added for the arguments it does not set and its model accepts."""
        accepted = set(_entry(self.name).accepted_args())
        extra = {k: v for k, v in defaults.items() if k in accepted and k not in self.args}
        return ChannelSpec(self.name, {**self.args, **extra})


def _entry(name: str) -> ChannelEntry:
    entry = CHANNELS.get(name)
    if entry is None:
        raise ValueError(f"unknown channel model {name!r}; choose one of {list(CHANNELS)}")
    return entry


def make_channel(spec, nr: int, nt: int) -> ChannelModel:
    """The channel model of ``spec`` (anything :meth:`ChannelSpec.parse` takes) for ``nr``
    receive antennas and ``nt`` transmit streams.

    Raises ``ValueError`` for an unknown name, an argument the model does not accept (the
    message lists the accepted ones) or a model whose size differs from ``nr x nt``.
    """
    spec = ChannelSpec.parse(spec)
    entry = _entry(spec.name)
    accepted = entry.accepted_args()
    bad = sorted(set(spec.args) - set(accepted))
    if bad:
        raise ValueError(f"channel {spec.name!r} has no argument {', '.join(map(repr, bad))}; it accepts "
                         f"{', '.join(accepted) or 'none'}")
    try:
        model = entry.factory(nr, nt, **spec.args)
    except TypeError as e:
        raise ValueError(f"channel {spec}: {e}") from None
    if (model.nr, model.nt) != (nr, nt):
        raise ValueError(f"channel {spec.name!r} is {model.nr}x{model.nt} (Nr x Nt), not {nr}x{nt}")
    return model


def describe_channels() -> str:
    """One line per model: name, summary and accepted arguments (for help texts)."""
    return "\n".join(f"{name}: {e.summary}; args: {', '.join(e.accepted_args()) or 'none'}"
                     for name, e in CHANNELS.items())

"""DeepSIC and the modular hypernetwork, [MH] Sec. II-C and III.

DeepSIC ([MH] eq. (4)) runs ``Q`` soft-interference-cancellation iterations. In iteration ``q`` the
module of user ``k`` maps the received vector and the previous soft estimates of the *other*
users to a distribution over the constellation::

    p^(k,q) = softmax( W2 relu(W1 [y ; p^(l,q-1) for l != k] + b1) + b2 )          (4)

with ``W1: 16 x (N + K - 1)`` and ``W2: |S| x 16`` for BPSK, so a module has
``|theta| = 16 (N + K + 1) + 18`` parameters ([MH] Sec. IV-A). The first iteration starts from uniform
soft estimates; the detector's output is the arg-max of the last iteration.

**One module per user, shared by the Q iterations.** The paper's hypernetwork writes one
``theta^(k)`` per user ([MH] eq. (11)) and its complexity analysis (Prop. 1) counts ``K`` modules of
``|theta|`` parameters per receiver; the joint and online baselines use the same receiver so that
the three differ only in how ``theta`` is obtained. Training unrolls the Q iterations and
averages the cross-entropy ([MH] eq. (6)) of every iteration's output, so that a module is a good
posterior both on uniform priors (iteration 1) and on refined ones.

Inputs (all real): for BPSK over a real channel (the paper's synthetic channel) a module sees
``Re y`` only (``N`` features, the imaginary part is pure noise); otherwise ``[Re y ; Im y]``
(``2N``). Each interfering user contributes its ``|S| - 1`` probabilities of points ``1..|S|-1``
(for BPSK: ``P(s = +1)``). Received vectors and channel estimates are divided by the noise
standard deviation per real dimension estimated from the pilots, so the receiver sees the
paper's model ``y = H s + w`` with unit-variance noise and ``H`` carrying the per-user SNR.

Parameter layout (one flat vector per module, :meth:`ModuleSpec.n_params`)::

    [ b1 (16) | W2 (|S| x 16) | b2 (|S|) | W1 columns of y (F x 16) | W1 columns of interferer 1 | ... ]

The parameters that depend on ``K`` come last, one interferer slot after the other, so the
``K``-user module is exactly the first ``|theta^(K)|`` entries of the ``K_max``-user module: every
hypernetwork output has one meaning for every ``K`` ("we take the first |theta^(K)| outputs",
Sec. III-A2). It also means a ``K``-user module equals the ``K_max``-user module fed with zeros in
the absent interferer slots (:func:`deepsic_logits` with ``active``), which lets training batch
blocks with different ``K`` together.

Modular hypernetwork ([MH] eqs. (8)-(11), Algorithm 1): from the LS estimate ``H_hat`` the context of
user ``k`` concatenates, for ``l = 1..K_max``, ``H_hat[:, l]`` (another active user), ``e_self``
(``l = k``) or ``e_pad`` (``l > K``); an MLP ``N K_max -> 64 -> 32 -> |theta^(K_max)|`` maps it to
the module of user ``k``, of which the first ``|theta^(K)|`` outputs are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ...bundle import ModelCodec, Param
from ...constellation import MODULATIONS, Constellation


@dataclass(frozen=True)
class ModuleSpec:
    """Shape of one DeepSIC module.

    n_rx : receive antennas ``N``
    modulation : ``bpsk``, ``qpsk`` or ``16qam``
    real_channel : BPSK over a real-valued channel: use ``Re y`` only (the paper's setting)
    hidden : hidden width (16 in the paper)
    """

    n_rx: int
    modulation: str = "bpsk"
    real_channel: bool = True
    hidden: int = 16

    def __post_init__(self):
        if self.real_channel and self.modulation != "bpsk":
            raise ValueError("real_channel (Re y only) is for BPSK; complex constellations need Re y and Im y")

    @property
    def num_classes(self) -> int:
        return Constellation(self.modulation).num_points

    @property
    def soft_per_user(self) -> int:
        """Soft inputs per interfering user: probabilities of points ``1..|S|-1``."""
        return self.num_classes - 1

    @property
    def rx_features(self) -> int:
        """Real features of a received vector (and of one channel column): ``N`` or ``2N``."""
        return self.n_rx if self.real_channel else 2 * self.n_rx

    def n_inputs(self, n_users: int) -> int:
        return self.rx_features + (n_users - 1) * self.soft_per_user

    @property
    def head_size(self) -> int:
        """Parameters that do not depend on ``K``: ``b1``, ``W2``, ``b2``."""
        return self.hidden + self.num_classes * self.hidden + self.num_classes

    def n_params(self, n_users: int) -> int:
        """``|theta^(K)|``; for BPSK with a real channel ``16 (N + K + 1) + 18``."""
        return self.head_size + self.hidden * self.n_inputs(n_users)

    def unpack(self, theta: torch.Tensor):
        """``theta (..., P)`` -> ``w1t (..., D, H), b1 (..., H), w2 (..., C, H), b2 (..., C)``,
        ``D = (P - head) / H`` inputs."""
        h, c = self.hidden, self.num_classes
        d = (theta.shape[-1] - self.head_size) // h
        if self.head_size + h * d != theta.shape[-1]:
            raise ValueError(f"{theta.shape[-1]} parameters is not a module size for {self}")
        b1 = theta[..., :h]
        w2 = theta[..., h:h + c * h].unflatten(-1, (c, h))
        b2 = theta[..., h + c * h:self.head_size]
        w1t = theta[..., self.head_size:].unflatten(-1, (d, h))
        return w1t, b1, w2, b2


def module_logits(x: torch.Tensor, theta: torch.Tensor, spec: ModuleSpec) -> torch.Tensor:
    """One module per leading index: ``x (..., B, D)``, ``theta (..., P)`` -> logits ``(..., B, C)``."""
    w1t, b1, w2, b2 = spec.unpack(theta)
    hidden = torch.relu(x @ w1t + b1.unsqueeze(-2))
    return hidden @ w2.mT + b2.unsqueeze(-2)


def interference_index(n_users: int) -> torch.Tensor:
    """``(K, K-1)``: row ``k`` lists the other users in ascending order (interferer slots)."""
    idx = torch.arange(n_users)
    return torch.stack([torch.cat([idx[:k], idx[k + 1:]]) for k in range(n_users)]) if n_users > 1 \
        else torch.zeros(1, 0, dtype=torch.long)


def deepsic_logits(theta: torch.Tensor, feats: torch.Tensor, spec: ModuleSpec, iterations: int,
                   active: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Unrolled DeepSIC ([MH] eq. (4)) with one module per user shared by the iterations.

    theta : ``(..., K, P)`` modules (``P >= |theta^(K)|``; with ``P = |theta^(K_max)|`` and
        ``active`` the absent users' soft inputs are zero, which equals the ``K``-user module)
    feats : ``(..., B, F)`` received vectors (:func:`rx_features`)
    active : optional ``(..., K)`` bool, users present in each block
    Returns the logits ``(..., K, B, C)`` of every iteration.
    """
    n_users, n_vec, c = theta.shape[-2], feats.shape[-2], spec.num_classes
    lead = theta.shape[:-2]
    idx = interference_index(n_users).to(theta.device)
    probs = torch.full((*lead, n_users, n_vec, c), 1.0 / c, dtype=feats.dtype, device=feats.device)
    y_in = feats.unsqueeze(-3).expand(*lead, n_users, n_vec, feats.shape[-1])
    mask = None if active is None else active.to(feats.dtype)[..., :, None, None]
    outs = []
    for _ in range(iterations):
        soft = probs[..., 1:]
        if mask is not None:
            soft = soft * mask
        others = soft[..., idx, :, :]  # (..., K, K-1, B, C-1)
        others = others.movedim(-3, -2).flatten(-2)  # (..., K, B, (K-1)(C-1))
        logits = module_logits(torch.cat([y_in, others], -1), theta, spec)
        probs = torch.softmax(logits, -1)
        outs.append(logits)
    return outs


def unrolled_loss(logits: list[torch.Tensor], labels: torch.Tensor, active: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy ([MH] eq. (6)) over the iterations' outputs: ``labels (..., K, B)`` point
    indices; ``active (..., K)`` masks absent users out of the mean."""
    total = 0.0
    for lg in logits:
        ce = nn.functional.cross_entropy(lg.flatten(0, -2), labels.flatten(), reduction="none").view(labels.shape)
        if active is None:
            total = total + ce.mean()
        else:
            w = active.to(ce.dtype).unsqueeze(-1).expand_as(ce)
            total = total + (ce * w).sum() / w.sum()
    return total / len(logits)


@torch.no_grad()
def deepsic_detect(theta: torch.Tensor, feats: torch.Tensor, spec: ModuleSpec, iterations: int,
                   chunk: int = 4096) -> torch.Tensor:
    """Hard decisions ``(..., K, B)`` (point indices) of the last iteration, in chunks of ``chunk`` vectors."""
    out = [deepsic_logits(theta, feats[..., i:i + chunk, :], spec, iterations)[-1].argmax(-1)
           for i in range(0, feats.shape[-2], chunk)]
    return torch.cat(out, -1)


def init_modules(n_users: int, spec: ModuleSpec, generator: torch.Generator | None = None,
                 n_users_layout: int | None = None) -> torch.Tensor:
    """Fresh modules ``(K, |theta^(K)|)`` initialised like ``nn.Linear`` (uniform +-1/sqrt(fan_in)).

    ``n_users_layout`` (>= K) gives modules of that larger layout instead (absent slots included).
    """
    k_layout = n_users_layout or n_users
    d, h, c = spec.n_inputs(k_layout), spec.hidden, spec.num_classes

    def u(shape, fan_in):
        return (torch.rand(shape, generator=generator) * 2 - 1) / math.sqrt(fan_in)

    parts = [u((n_users, h), d), u((n_users, c * h), h), u((n_users, c), h), u((n_users, d * h), d)]
    return torch.cat(parts, -1)


def resize_modules(theta: torch.Tensor, n_users: int, spec: ModuleSpec,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Modules for ``n_users`` from ``theta (K_old, P_old)``: users and interferer slots both kept
    carry their parameters over (the nested layout makes this a prefix copy); new ones are fresh."""
    fresh = init_modules(n_users, spec, generator)
    k, p = min(n_users, theta.shape[0]), min(fresh.shape[1], theta.shape[1])
    fresh[:k, :p] = theta[:k, :p]
    return fresh


# --------------------------------------------------------------------------- features
def noise_std_per_dim(noise_var: torch.Tensor) -> torch.Tensor:
    """Noise standard deviation per real dimension from the complex variance per antenna."""
    return (noise_var / 2).clamp(min=1e-12).sqrt()


def rx_features(y: torch.Tensor, spec: ModuleSpec, noise_std: torch.Tensor) -> torch.Tensor:
    """``y (..., N, B)`` complex -> ``(..., B, F)`` real, divided by ``noise_std (...)``."""
    parts = [y.real] if spec.real_channel else [y.real, y.imag]
    return (torch.cat(parts, -2) / noise_std[..., None, None]).mT.float()


def channel_features(h: torch.Tensor, spec: ModuleSpec, noise_std: torch.Tensor) -> torch.Tensor:
    """Channel columns ``h (..., N, K)`` complex -> ``(..., K, F)`` real, divided by ``noise_std``."""
    return rx_features(h, spec, noise_std)


# --------------------------------------------------------------------------- hypernetwork
def pad_users(cols: torch.Tensor, k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``K`` users' columns ``cols (..., K, F)`` padded with zero slots to ``K_max``, and the
    ``(..., K_max)`` mask of the present ones (the first ``K``); ``ValueError`` unless
    ``1 <= K <= K_max``."""
    k = cols.shape[-2]
    if not 1 <= k <= k_max:
        raise ValueError(f"{k} users, this hypernetwork serves 1..{k_max}")
    pad = cols.new_zeros(*cols.shape[:-2], k_max - k, cols.shape[-1])
    active = torch.zeros(*cols.shape[:-2], k_max, dtype=torch.bool, device=cols.device)
    active[..., :k] = True
    return torch.cat([cols, pad], -2), active


class ModularHypernetwork(nn.Module):
    """Modular hypernetwork ``G_phi`` with its user embeddings, [MH] eqs. (9)-(11).

    ``forward(h_cols (..., K_max, F), active (..., K_max) bool) -> theta (..., K_max, |theta^(K_max)|)``:
    the module of every slot (absent slots' modules are computed but unused). Use
    :meth:`generate` for the modules of exactly ``K`` users.

    ``|phi_hyper| = 64 (F K_max + 1) + 32 * 65 + 33 |theta^(K_max)|`` (Sec. IV-A, ``F = N`` for the
    paper's real BPSK model), plus ``2F`` for ``e_self`` and ``e_pad``.

    The context never holds the user's own channel estimate (``e_self`` takes its slot), so a
    module must know its user's channel up to what the others' estimates imply: fine for the
    paper's real channels with a known per-user shape, not for complex fading with a random
    phase per user (docs/deepsic/README.md).
    """

    def __init__(self, spec: ModuleSpec, k_max: int, hidden: tuple[int, ...] = (64, 32), iterations: int = 3):
        super().__init__()
        if not 2 <= k_max:
            raise ValueError(f"k_max must be >= 2, got {k_max}")
        self.spec, self.k_max, self.hidden = spec, k_max, tuple(hidden)
        self.iterations = int(iterations)  # Q of the receiver the modules were trained for
        f = spec.rx_features
        self.e_self = nn.Parameter(torch.randn(f))
        self.e_pad = nn.Parameter(torch.randn(f))
        layers, width = [], f * k_max
        for w in self.hidden:
            layers += [nn.Linear(width, w), nn.ReLU()]
            width = w
        layers.append(nn.Linear(width, spec.n_params(k_max)))
        self.net = nn.Sequential(*layers)

    def contexts(self, h_cols: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Context vectors ``u_k^user`` ([MH] eqs. (9)-(10)): ``(..., K_max, F)``, ``(..., K_max)`` ->
        ``(..., K_max, K_max F)`` (row ``k``: slot ``l`` holds ``H_hat_l``, ``e_self`` or ``e_pad``)."""
        km = self.k_max
        cols = torch.where(active.unsqueeze(-1), h_cols, self.e_pad)
        ctx = cols.unsqueeze(-3).expand(*cols.shape[:-2], km, km, cols.shape[-1])
        eye = torch.eye(km, dtype=torch.bool, device=cols.device).unsqueeze(-1)
        return torch.where(eye, self.e_self, ctx).flatten(-2)

    def forward(self, h_cols: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        return self.net(self.contexts(h_cols, active))

    def generate(self, h_cols: torch.Tensor) -> torch.Tensor:
        """Modules of the ``K`` users whose channel columns are ``h_cols (..., K, F)`` ([MH] Algorithm 1):
        ``(..., K, |theta^(K)|)``, the first ``|theta^(K)|`` outputs of each user's hypernetwork run."""
        k = h_cols.shape[-2]
        padded, active = pad_users(h_cols, self.k_max)
        theta = self(padded, active)
        return theta[..., :k, :self.spec.n_params(k)]

    def inputs(self, fe):
        """What this hypernetwork reads of a :class:`~.train.FrontEnd`: the noise-normalised real
        columns and vectors."""
        return fe.h_cols, fe.feats

    def unrolled_logits(self, h_cols: torch.Tensor, noise_var: torch.Tensor, feats: torch.Tensor,
                        active: torch.Tensor) -> list[torch.Tensor]:
        """Training: every iteration's logits for padded blocks (``noise_var`` is already in the features)."""
        return deepsic_logits(self(h_cols, active), feats, self.spec, self.iterations, active)

    def detect(self, h_cols: torch.Tensor, noise_var: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        """Hard decisions ``(K, B)`` of one frame (``h_cols (K, F)``, ``feats (B, F)``)."""
        with torch.no_grad():
            theta = self.generate(h_cols)
        return deepsic_detect(theta, feats, self.spec, self.iterations)

    def n_hyper_params(self) -> int:
        """``|phi_hyper|``: the MLP's weights and biases (embeddings not included)."""
        return sum(p.numel() for p in self.net.parameters())


def paper_hyper_params(n_rx: int, k_max: int) -> int:
    """``|phi_hyper|`` as written in [MH] Sec. IV-A."""
    return 64 * (n_rx * k_max + 1) + 32 * 65 + 33 * (16 * (n_rx + k_max + 1) + 18)


# --------------------------------------------------------------------------- bundles
def _spec_of(hp: dict) -> ModuleSpec:
    return ModuleSpec(hp["n_rx"], hp["modulation"], hp["real_channel"], hp["module_hidden"])


def _receiver_check_system(hp: dict, system: dict) -> None:
    if hp["modulation"] != system["modulation"]:
        raise ValueError(f"modules for {hp['modulation']} do not fit the system's {system['modulation']}")
    if hp["n_rx"] != system["nr"]:
        raise ValueError(f"modules for N = {hp['n_rx']} antennas do not fit the system's Nr = {system['nr']}")


def _hyper_hyperparameters(model: ModularHypernetwork) -> dict:
    s = model.spec
    return {"n_rx": s.n_rx, "k_max": model.k_max, "modulation": s.modulation, "real_channel": s.real_channel,
            "module_hidden": s.hidden, "hyper_hidden": list(model.hidden), "iterations": model.iterations,
            "noise_normalised": True, "module_params_k_max": s.n_params(model.k_max)}


def _hyper_build(hp: dict) -> ModularHypernetwork:
    spec = _spec_of(hp)
    if hp["module_params_k_max"] != spec.n_params(hp["k_max"]):
        raise ValueError(f"module_params_k_max {hp['module_params_k_max']} != |theta^(K_max)| = "
                         f"{spec.n_params(hp['k_max'])}")
    return ModularHypernetwork(spec, hp["k_max"], tuple(hp["hyper_hidden"]), hp["iterations"])


def _hyper_check_system(hp: dict, system: dict) -> None:
    _receiver_check_system(hp, system)
    if hp["k_max"] != system["nt"]:
        raise ValueError(f"a hypernetwork for K_max = {hp['k_max']} users does not fit the system's Nt = {system['nt']}")


_RECEIVER_SCHEMA = {"n_rx": Param("int", 1, 1024), "modulation": Param("str", choices=MODULATIONS),
                    "real_channel": Param("bool"), "module_hidden": Param("int", 1, 1024),
                    "iterations": Param("int", 1, 32)}

# hypernetwork-DeepSIC bundles: the hypernetwork G_phi with e_self and e_pad; the receiver runs
# `iterations` DeepSIC iterations with the modules it writes (received vectors and channel
# estimates divided by the pilot-estimated noise standard deviation: noise_normalised)
HYPERNET_CODEC = ModelCodec(
    architecture="hypernet-deepsic", label="a hypernetwork",
    schema={**_RECEIVER_SCHEMA, "k_max": Param("int", 2, 256), "hyper_hidden": Param("int_list", 1, 4096, max_len=8),
            "noise_normalised": Param("bool", choices=(True,)), "module_params_k_max": Param("int", 1, 10**8)},
    hyperparameters=_hyper_hyperparameters, build=_hyper_build, check_system=_hyper_check_system)


class JointModules(nn.Module):
    """Joint DeepSIC [MH] eq. (5) as data: one trained module set ``theta_k{K} (K, |theta^(K)|)``
    per number of users ``K``."""

    def __init__(self, spec: ModuleSpec, k_values: list[int], iterations: int = 3):
        super().__init__()
        self.spec, self.k_values, self.iterations = spec, sorted(k_values), int(iterations)
        for k in self.k_values:
            self.register_buffer(f"theta_k{k}", torch.zeros(k, spec.n_params(k)))

    def thetas(self) -> dict[int, torch.Tensor]:
        return {k: getattr(self, f"theta_k{k}") for k in self.k_values}


# joint DeepSIC bundles (a lab baseline, not a run-time detector)
JOINT_CODEC = ModelCodec(
    architecture="deepsic-joint", label="joint DeepSIC modules",
    schema={**_RECEIVER_SCHEMA, "k_values": Param("int_list", 1, 256, max_len=256)},
    hyperparameters=lambda m: {"n_rx": m.spec.n_rx, "modulation": m.spec.modulation,
                               "real_channel": m.spec.real_channel, "module_hidden": m.spec.hidden,
                               "iterations": m.iterations, "k_values": list(m.k_values)},
    build=lambda hp: JointModules(_spec_of(hp), hp["k_values"], hp["iterations"]), check_system=_receiver_check_system)

"""Hypernetwork-DeepSIC on complex baseband: soft-IC MMSE modules whose learned part is written per
frame by a phase-invariant hypernetwork (architecture ``hypernet-deepsic-complex``).

Why a second architecture. The paper's modules ([MH] eq. (4)) read ``[Re y ; Im y]`` and the
hypernetwork's context of user ``k`` ([MH] eqs. (9)-(10)) holds every channel column *but* user
``k``'s own. On the paper's real channels that is enough; on complex fading every user's channel
carries a random phase the module cannot know, and the paper's receiver stays at SER ~0.5
(``docs/deepsic/complex.md``). This variant keeps the paper's properties -- a module per user,
generated per frame from the pilot estimate; ``Q`` soft-interference-cancellation iterations with
the module shared by the iterations; any ``K <= K_max`` without re-training; the nested parameter
layout of :class:`~.model.ModuleSpec` -- and changes what a module sees so that nothing it sees
depends on the users' phases:

* **Module inputs in the user's own frame.** Iteration ``q`` of user ``k`` cancels the other
  users' soft estimates and filters what is left with an unbiased MMSE filter::

      C_k  = sum_{l != k} vbar_l h_l h_l^H + sigma^2 I        vbar_l = mean_b v_l(b)  (per frame)
      w_k  = C_k^{-1} h_k / (h_k^H C_k^{-1} h_k)
      z_k(b) = w_k^H ( y(b) - sum_{l != k} h_l m_l(b) )        m_l, v_l: soft mean / variance of user l
      r_k(b) = sum_{l != k} |w_k^H h_l|^2 v_l(b) + sigma^2 ||w_k||^2

  (soft interference cancellation with an MMSE filter, the model-based receiver DeepSIC learns
  from: Choi, Cioffi et al., *Iterative soft interference cancellation for multiple antenna
  systems*, 2000; [MH] ref. [8]). ``z_k`` estimates ``s_k`` itself, so it does not rotate with any
  user's channel phase, and neither do ``r_k`` nor the interferer shares
  ``a_kl(b) = |w_k^H h_l|^2 v_l(b) / r_k(b)``.
* **Module** ``k`` maps ``x_k(b) = [Re z/sqrt r, Im z/sqrt r, ln r, a_k1(b) .. a_k,K-1(b)]``
  (interferer slots last: the nested layout) through ``D -> H -> |S|`` (ReLU) to a *correction*
  of the Gaussian log-likelihood::

      logits_k(b, s) = -|z_k(b) - s|^2 / r_k(b) + module_k(x_k(b))_s

  the posterior of iteration ``q`` gives ``m_k, v_k`` for iteration ``q + 1``; the detector's
  output is the arg-max of the last iteration. With a zero correction this is classical soft-IC
  MMSE; training teaches the modules what the Gaussian approximation of the residual gets wrong
  (discrete interferers, LS estimation error, a wrong noise estimate).
* **Context with the own channel, phase-free.** The hypernetwork ``G_phi`` writes module ``k`` from
  the estimate's Gram matrix magnitudes: slot ``l`` of user ``k``'s context holds
  ``[ln(||h_l||^2 / sigma^2) / 10, |h_k^H h_l| / (||h_k|| ||h_l||), [l = k]]`` -- the own channel
  is back, as its SNR and the marker -- absent users hold the learned ``e_pad``; two more entries
  carry user ``k``'s linear-MMSE SINR (``ln``) and ``K / K_max``. Unitary receive rotations and
  per-user phases leave all of it unchanged.

Shapes: channel estimates as columns ``h (..., K, N)`` complex64, received vectors
``y (..., B, N)`` complex64, complex noise variance per antenna ``noise_var (...)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ...bundle import ModelCodec, Param
from ...constellation import MODULATIONS, Constellation
from .model import ModuleSpec, interference_index, module_logits, pad_users

CONTEXT_PER_SLOT = 3  # [ln SNR / 10, |correlation|, is-self]
CONTEXT_GLOBAL = 2    # [ln linear-MMSE SINR / 10, K / K_max]
VARIANCE_FLOOR = 1e-4


@dataclass(frozen=True)
class SoftICModuleSpec(ModuleSpec):
    """Shape of one soft-IC module: ``3 + (K - 1)`` inputs (``Re z/sqrt r``, ``Im z/sqrt r``,
    ``ln r``, one interferer share per other user), ``hidden`` units, ``|S|`` correction logits;
    the same nested flat layout as :class:`~.model.ModuleSpec`."""

    real_channel: bool = False

    def __post_init__(self):
        if self.real_channel:
            raise ValueError("the soft-IC module works on complex baseband (real_channel is False)")

    @property
    def soft_per_user(self) -> int:
        return 1

    @property
    def rx_features(self) -> int:
        return 3


def _eye_like(n: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.eye(n, dtype=ref.dtype, device=ref.device)


def soft_ic_mmse(h: torch.Tensor, noise_var: torch.Tensor, y: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
                 active: torch.Tensor | None = None):
    """One soft-IC MMSE step for every user (the module docstring's ``z``, ``r`` and shares).

    h : ``(..., K, N)`` complex channel columns (absent users zero)
    noise_var : ``(...)`` complex noise variance per antenna
    y : ``(..., B, N)`` complex received vectors
    m, v : ``(..., K, B)`` soft mean (complex) and variance (real) of every user's symbol
    active : ``(..., K)`` bool or ``None``

    Returns ``z (..., K, B)`` complex, ``r (..., K, B)`` real, ``share (..., K, K, B)`` real
    (``share[k, l] = |w_k^H h_l|^2 v_l / r_k``, zero on the diagonal and for absent users).
    """
    k, n = h.shape[-2], h.shape[-1]
    rdt = v.dtype
    if active is not None:
        v = v * active.to(rdt)[..., None]
        m = m * active.to(m.dtype)[..., None]
    vbar = v.mean(-1)  # (..., K)
    hc = h.conj()
    # C = sum_l vbar_l h_l h_l^H + sigma^2 I. C_k = C - vbar_k h_k h_k^H differs by a rank-one
    # term along h_k, so C_k^{-1} h_k is parallel to C^{-1} h_k (Sherman-Morrison): after the
    # unbiasing normalisation both give the same w_k, and one solve serves every user.
    c_all = (h.mT * vbar[..., None, :].to(h.dtype)) @ hc + noise_var[..., None, None].to(h.dtype) * _eye_like(n, h)
    g = torch.linalg.solve(c_all, h.mT).mT  # (..., K, N): C^{-1} h_k
    mu = (hc * g).sum(-1).real.clamp(min=1e-12)  # h_k^H C^{-1} h_k
    w = g / mu[..., None].to(g.dtype)  # unbiased filter, w_k^H h_k = 1
    resid = y - m.mT @ h  # (..., B, N): y - sum_l h_l m_l
    z = resid @ w.conj().mT  # (..., B, K): w_k^H resid
    z = z.mT + m  # add back the user's own term (w_k^H h_k = 1)
    gain = (w.conj() @ h.mT).abs().square().to(rdt)  # (..., K, K): |w_k^H h_l|^2
    gain = gain * (1 - torch.eye(k, dtype=rdt, device=gain.device))
    contrib = gain[..., :, :, None] * v[..., None, :, :]  # (..., K, K, B)
    noise = (noise_var[..., None].to(rdt) * w.abs().square().sum(-1).to(rdt))  # (..., K)
    r = (contrib.sum(-2) + noise[..., None]).clamp(min=1e-12)
    return z, r, contrib / r[..., None, :]


def soft_ic_features(z: torch.Tensor, r: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Module inputs ``(..., K, B, 3 + K - 1)`` from :func:`soft_ic_mmse` (interferer slots in
    ascending user order, :func:`~.model.interference_index`)."""
    k = z.shape[-2]
    sr = r.sqrt()
    base = torch.stack([z.real.to(r.dtype) / sr, z.imag.to(r.dtype) / sr, r.log()], -1)
    idx = interference_index(k).to(z.device)  # (K, K-1)
    others = torch.gather(share, -2, idx[..., None].expand(*share.shape[:-3], k, idx.shape[-1], share.shape[-1]))
    return torch.cat([base, others.movedim(-2, -1)], -1)


def gaussian_logits(z: torch.Tensor, r: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``-|z - s|^2 / r`` for every point: ``(..., K, B)`` -> ``(..., K, B, |S|)``."""
    return -(z[..., None] - points).abs().square().to(r.dtype) / r[..., None]


def soft_ic_deepsic_logits(theta: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor, y: torch.Tensor,
                           spec: SoftICModuleSpec, iterations: int,
                           active: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Unrolled soft-IC DeepSIC (module docstring): ``theta (..., K, P)`` modules, ``h (..., K, N)``,
    ``noise_var (...)``, ``y (..., B, N)``, ``active (..., K)`` -> the logits ``(..., K, B, |S|)``
    of every iteration."""
    points = Constellation(spec.modulation).points.to(y.device)
    energy = points.abs().square().real.float()
    lead, k, b = h.shape[:-2], h.shape[-2], y.shape[-2]
    m = torch.zeros(*lead, k, b, dtype=y.dtype, device=y.device)
    v = torch.ones(*lead, k, b, dtype=torch.float32, device=y.device)
    outs = []
    for _ in range(iterations):
        z, r, share = soft_ic_mmse(h, noise_var, y, m, v, active)
        logits = gaussian_logits(z, r, points) + module_logits(soft_ic_features(z, r, share), theta, spec)
        p = torch.softmax(logits, -1)
        m = (p.to(points.dtype) * points).sum(-1)
        v = ((p * energy).sum(-1) - m.abs().square()).clamp(min=VARIANCE_FLOOR)
        outs.append(logits)
    return outs


def context_features(h: torch.Tensor, noise_var: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Phase-invariant channel features: ``h (..., K_max, N)``, ``noise_var (...)``, ``active
    (..., K_max)`` -> per-slot ``(..., K_max, K_max, 3)`` (row ``k``, slot ``l``: ``ln SNR_l / 10``,
    ``|h_k^H h_l| / (||h_k|| ||h_l||)``, ``[l = k]``) and global ``(..., K_max, 2)``
    (``ln SINR_k^MMSE / 10``, ``K / K_max``)."""
    km = h.shape[-2]
    nv = noise_var.to(torch.float32).clamp(min=1e-12)
    power = h.abs().square().sum(-1).float()  # (..., K_max)
    snr = (power / nv[..., None]).clamp(min=1e-6)
    norm = power.clamp(min=1e-12).sqrt()
    gram = h.conj() @ h.mT  # (..., K_max, K_max)
    corr = gram.abs().float() / (norm[..., :, None] * norm[..., None, :])
    eye = torch.eye(km, device=h.device)
    slot = torch.stack([(snr.log() / 10)[..., None, :].expand(corr.shape), corr,
                        eye.expand(corr.shape)], -1)
    # linear-MMSE SINR of each active user: 1 / [ (H^H H / sigma^2 + I)^{-1} ]_kk - 1
    act = active.to(gram.dtype)
    a = gram * act[..., :, None] * act[..., None, :] / nv[..., None, None].to(gram.dtype) + \
        torch.eye(km, dtype=gram.dtype, device=h.device)
    diag = torch.diagonal(torch.linalg.inv(a), dim1=-2, dim2=-1).real.float().clamp(min=1e-9, max=1.0)
    sinr = (1 / diag - 1).clamp(min=1e-6)
    k_frac = active.float().sum(-1, keepdim=True) / km
    glob = torch.stack([sinr.log() / 10, k_frac.expand(sinr.shape)], -1)
    return slot, glob


class PhaseInvariantHypernetwork(nn.Module):
    """The hypernetwork ``G_phi`` of ``hypernet-deepsic-complex`` (module docstring): per user the
    context ``K_max * 3 + 2`` -> ``hidden`` (ReLU) -> ``|theta^(K_max)|`` of a
    :class:`SoftICModuleSpec`; absent slots hold the learned ``e_pad (3)``.

    The output layer starts at a fresh module's initialisation for ``W1``/``b1`` and zero for the
    output weights ``W2``/``b2``: an untrained receiver is classical soft-IC MMSE, and training
    starts from it.
    """

    def __init__(self, spec: SoftICModuleSpec, k_max: int, hidden: tuple[int, ...] = (64, 32), iterations: int = 3):
        super().__init__()
        if k_max < 2:
            raise ValueError(f"k_max must be >= 2, got {k_max}")
        self.spec, self.k_max, self.hidden, self.iterations = spec, k_max, tuple(hidden), int(iterations)
        self.e_pad = nn.Parameter(torch.zeros(CONTEXT_PER_SLOT))
        layers, width = [], CONTEXT_PER_SLOT * k_max + CONTEXT_GLOBAL
        for w in self.hidden:
            layers += [nn.Linear(width, w), nn.ReLU()]
            width = w
        out = nn.Linear(width, spec.n_params(k_max))
        self._init_output(out)
        layers.append(out)
        self.net = nn.Sequential(*layers)

    def _init_output(self, out: nn.Linear) -> None:
        s, h, c = self.spec, self.spec.hidden, self.spec.num_classes
        d = s.n_inputs(self.k_max)
        with torch.no_grad():
            out.weight.mul_(0.1)
            out.bias.zero_()
            out.bias[:h].uniform_(-1 / math.sqrt(d), 1 / math.sqrt(d))  # b1
            out.bias[s.head_size:].uniform_(-1 / math.sqrt(d), 1 / math.sqrt(d))  # W1
            out.weight[h:s.head_size].zero_()  # W2, b2: the correction starts at zero

    def forward(self, h: torch.Tensor, noise_var: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """``h (..., K_max, N)``, ``noise_var (...)``, ``active (..., K_max)`` -> modules ``(..., K_max, P)``."""
        slot, glob = context_features(h, noise_var, active)
        slot = torch.where(active[..., None, :, None], slot, self.e_pad)
        return self.net(torch.cat([slot.flatten(-2), glob], -1))

    def generate(self, h: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
        """Modules ``(..., K, |theta^(K)|)`` of the ``K`` users whose columns are ``h (..., K, N)``."""
        k = h.shape[-2]
        hp, active = pad_users(h, self.k_max)
        return self(hp, noise_var, active)[..., :k, :self.spec.n_params(k)]

    def inputs(self, fe):
        """What this hypernetwork reads of a :class:`~.train.FrontEnd`: the complex columns and vectors."""
        return fe.h_vec, fe.y_vec

    def unrolled_logits(self, h: torch.Tensor, noise_var: torch.Tensor, y: torch.Tensor,
                        active: torch.Tensor) -> list[torch.Tensor]:
        """Training: every iteration's logits for padded blocks (``h (..., K_max, N)``)."""
        theta = self(h, noise_var, active)
        return soft_ic_deepsic_logits(theta, h, noise_var, y, self.spec, self.iterations, active)

    @torch.no_grad()
    def frame_logits(self, h: torch.Tensor, noise_var: torch.Tensor, y: torch.Tensor,
                     iterations: int | None = None) -> torch.Tensor:
        """Run time: the last iteration's logits ``(..., K, B, |S|)`` of the ``K`` users in
        ``h (..., K, N)``."""
        theta = self.generate(h, noise_var)
        return soft_ic_deepsic_logits(theta, h, noise_var, y, self.spec, iterations or self.iterations)[-1]

    @torch.no_grad()
    def detect(self, h: torch.Tensor, noise_var: torch.Tensor, y: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Hard decisions ``(..., K, B)`` (point indices) of one frame's ``y (..., B, N)``."""
        out = [self.frame_logits(h, noise_var, y[..., i:i + chunk, :]).argmax(-1)
               for i in range(0, y.shape[-2], chunk)]
        return torch.cat(out, -1)

    def n_hyper_params(self) -> int:
        return sum(p.numel() for p in self.net.parameters())


def soft_ic_flops_per_vector(n_rx: int, n_users: int, spec: SoftICModuleSpec, iterations: int) -> float:
    """Per vector and iteration: cancellation ``8 N K``, filtering ``8 N K``, residual variances
    ``2 K^2``, Gaussian logits ``8 K |S|``, the modules ``2 K (D H + H |S|)``."""
    k, c = n_users, spec.num_classes
    per_iter = 16 * n_rx * k + 2 * k * k + 8 * k * c + 2 * k * (spec.n_inputs(k) * spec.hidden + spec.hidden * c)
    return float(iterations * per_iter)


# --------------------------------------------------------------------------- bundles
def _hyperparameters(model: PhaseInvariantHypernetwork) -> dict:
    s = model.spec
    return {"n_rx": s.n_rx, "k_max": model.k_max, "modulation": s.modulation, "module_hidden": s.hidden,
            "hyper_hidden": list(model.hidden), "iterations": model.iterations,
            "module_params_k_max": s.n_params(model.k_max)}


def _build(hp: dict) -> PhaseInvariantHypernetwork:
    spec = SoftICModuleSpec(hp["n_rx"], hp["modulation"], hidden=hp["module_hidden"])
    if hp["module_params_k_max"] != spec.n_params(hp["k_max"]):
        raise ValueError(f"module_params_k_max {hp['module_params_k_max']} != |theta^(K_max)| = "
                         f"{spec.n_params(hp['k_max'])}")
    return PhaseInvariantHypernetwork(spec, hp["k_max"], tuple(hp["hyper_hidden"]), hp["iterations"])


def _check_system(hp: dict, system: dict) -> None:
    if hp["modulation"] != system["modulation"]:
        raise ValueError(f"modules for {hp['modulation']} do not fit the system's {system['modulation']}")
    if hp["n_rx"] != system["nr"]:
        raise ValueError(f"modules for N = {hp['n_rx']} antennas do not fit the system's Nr = {system['nr']}")
    if hp["k_max"] != system["nt"]:
        raise ValueError(f"a hypernetwork for K_max = {hp['k_max']} users does not fit the system's Nt = {system['nt']}")


# hypernet-deepsic-complex bundles: the phase-invariant hypernetwork with e_pad; the receiver runs
# `iterations` soft-IC MMSE iterations with the modules' corrections
COMPLEX_HYPERNET_CODEC = ModelCodec(
    architecture="hypernet-deepsic-complex", label="a complex-baseband DeepSIC hypernetwork",
    schema={"n_rx": Param("int", 1, 1024), "k_max": Param("int", 2, 256), "modulation": Param("str", choices=MODULATIONS),
            "module_hidden": Param("int", 1, 1024), "hyper_hidden": Param("int_list", 1, 4096, max_len=8),
            "iterations": Param("int", 1, 32), "module_params_k_max": Param("int", 1, 10**8)},
    hyperparameters=_hyperparameters, build=_build, check_system=_check_system)

"""DetNet [DN] and its weight-scaled versions WeSNet, R-WeSNet and L-WeSNet [WS] (citation keys:
``docs/architecture.md``).

Real-valued model ([WS] eqs. (2)-(3)): ``y = H s + n`` with ``y`` ``(2 Nr)``, ``H`` ``(2 Nr, K)``,
``s`` ``(K)``: for BPSK ``K = Nt`` and ``H = [Re H_bar; Im H_bar]`` (on a real channel the
imaginary rows are zero and change nothing), for QPSK ``K = 2 Nt`` and eq. (2). The network works
on symbols in ``[-1, 1]`` per real dimension: the constellation's per-dimension amplitude ``A``
(1 for BPSK, ``1/sqrt 2`` for unit-energy QPSK) is folded into the channel, ``H_eff = A H``.

Layer ``r = 1..L`` ([WS] eqs. (8)-(11), DetNet's published code for the details)::

    x_r     = [H^T y, H^T H s_r, s_r, a_r]                      (5K inputs, aux a_r has 2K)
    u_r     = beta * ReLU(W1_r x_r + b1_r)                      (hidden, 8K units)
    s_{r+1} = (1 - alpha) psi_t(W2_r u_r + b2_r) + alpha s_r    (K, soft sign)
    a_{r+1} = (1 - alpha) (W3_r u_r + b3_r) + alpha a_r          (2K, auxiliary)
    psi_t(z) = -1 + ReLU(z + t) / |t| - ReLU(z - t) / |t|        (t learned per layer)

``s_1 = a_1 = 0``; ``alpha = 0.9`` is DetNet's residual averaging. DetNet is ``beta = 1``.

**Where the profile acts (an ambiguity of [WS] resolved).** [WS] eq. (18) writes the profile
``beta`` over the *inputs* of the first sublayer and eq. (19) over the hidden units that feed the
auxiliary sublayer. Read literally with eq. (9)'s input order, keeping 20 % of the first
sublayer's inputs would leave it ``H^T y`` alone (no ``H^T H s_r``, no iterate): no detector,
while Fig. 4-5 report WeSNet-HF-20 % as good as DetNet; and Table II's cost
``beta N_t (128 N_t + 5) L`` is *linear* in ``beta`` with the full ``128 N_t^2`` per layer
scaled, which is exactly what keeping the first ``beta`` of the ``8K`` hidden units costs in all
three sublayers (``2 * 8K * (5K + K + 2K) = 128 K^2``). So the profile multiplies the hidden
units ``u_r`` (eq. (19)'s ``beta_j u_j``), which feed both the detection and the auxiliary
sublayer; "keeping x %" keeps the first ``round(x * 8K)`` hidden units of every layer, so the
dropped units are never computed (:meth:`DetNet.sliced` cuts the weight matrices).

Profiles ([WS] eqs. (16)-(17), ``i = 1..N``): linear ``beta_i = 1 - i/N``; half-exponential
``beta_i = 1`` for ``i <= N/2``, else ``exp(N/2 - i - 1)``. Learnable (L-WeSNet, eq. (24)):
per layer ``beta = exp(-cumsum(softplus(rho)))``, initialised to the fixed profile; every step
of the cumulative sum is positive, so ``beta`` stays in ``(0, 1]`` and non-increasing whatever
the optimiser does -- [WS] says only that monotonicity is "maintained by the shape of the
functions"; this parameterisation makes it hold by construction.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from ...bundle import ModelCodec, Param

PROFILES = ("none", "linear", "half-exp")
ALPHA = 0.9           # DetNet's residual averaging of s and a
PSI_T_INIT = 0.5      # soft-sign width at initialisation
BETA_FLOOR = 1e-8     # the linear profile's last coefficient is 0; its learnable form starts here
MODULATIONS = ("bpsk", "qpsk")
INITS = ("detnet", "xavier")


def profile_coefficients(kind: str, n: int) -> torch.Tensor:
    """``beta (n,)`` float32 of a profile: ``none`` (all 1), ``linear`` (eq. (16)),
    ``half-exp`` (eq. (17)); index ``i = 1..n`` as in [WS]."""
    i = torch.arange(1, n + 1, dtype=torch.float64)
    if kind == "none":
        beta = torch.ones(n, dtype=torch.float64)
    elif kind == "linear":
        beta = 1.0 - i / n
    elif kind == "half-exp":
        beta = torch.where(i <= n / 2, torch.ones_like(i), torch.exp(n / 2 - i - 1))
    else:
        raise ValueError(f"unknown profile {kind!r}; choose one of {PROFILES}")
    return beta.float()


def kept_units(fraction: float, n: int) -> int:
    """How many of ``n`` profile coefficients "WeSNet-x %" keeps: ``round(x n)``, at least 1."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"kept fraction must lie in (0, 1], got {fraction}")
    return max(1, min(n, int(math.floor(fraction * n + 0.5))))


def keep_mask(fraction: float, n: int) -> torch.Tensor:
    """``(n,)`` bool: the first :func:`kept_units` coefficients."""
    m = torch.zeros(n, dtype=torch.bool)
    m[: kept_units(fraction, n)] = True
    return m


def _softplus_inverse(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 20, x, torch.log(torch.expm1(x.clamp(min=1e-12))))


def learnable_init(beta: torch.Tensor) -> torch.Tensor:
    """``rho`` with ``exp(-cumsum(softplus(rho))) = beta`` (clamped to ``[BETA_FLOOR, 1]``;
    zero steps become ``1e-6``)."""
    logb = torch.log(beta.double().clamp(BETA_FLOOR, 1.0))
    steps = -torch.diff(logb, prepend=torch.zeros(1, dtype=torch.float64))
    return _softplus_inverse(steps.clamp(min=1e-6)).float()


def soft_sign(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """DetNet's piecewise-linear sign ``psi_t`` (module docstring); ``t`` broadcasts."""
    at = t.abs().clamp(min=1e-6)
    return -1.0 + F.relu(z + t) / at - F.relu(z - t) / at


class DetNet(nn.Module):
    """DetNet / WeSNet on the real-valued model (module docstring).

    Parameters
    ----------
    nt : transmit streams; ``K = nt`` (BPSK) or ``2 nt`` (QPSK) real dimensions
    layers : ``L``
    hidden : hidden units per layer of the *full* network (``8K`` in [DN]/[WS])
    keep : kept fraction of the profile coefficients (the model holds ``round(keep hidden)`` units)
    profile : one of :data:`PROFILES`; ``learnable`` makes it an L-WeSNet (eq. (24))
    aux : auxiliary units (``2K``)

    Tensors are stacked over layers: ``w1 (L, k, 5K)``, ``w2 (L, K, k)``, ``w3 (L, aux, k)`` and
    their biases, ``t (L,)``, and ``rho (L, k)`` (learnable profile) -- so a shorter or narrower
    network is a slice (:meth:`sliced`).
    """

    def __init__(self, nt: int, layers: int, hidden: int, modulation: str = "bpsk", profile: str = "none",
                 keep: float = 1.0, learnable: bool = False, aux: int | None = None, alpha: float = ALPHA):
        super().__init__()
        if modulation not in MODULATIONS:
            raise ValueError(f"DetNet here detects {MODULATIONS}, got {modulation!r}")
        if profile not in PROFILES:
            raise ValueError(f"unknown profile {profile!r}; choose one of {PROFILES}")
        if learnable and profile == "none":
            raise ValueError("a learnable profile starts from a fixed one: choose linear or half-exp")
        self.nt, self.layers, self.hidden, self.modulation = int(nt), int(layers), int(hidden), modulation
        self.profile, self.keep, self.learnable, self.alpha = profile, float(keep), bool(learnable), float(alpha)
        self.k = self.nt * (1 if modulation == "bpsk" else 2)
        self.aux = int(aux) if aux is not None else 2 * self.k
        self.units = kept_units(self.keep, self.hidden)
        k, u, a, n_in, L = self.k, self.units, self.aux, 3 * self.k + self.aux, self.layers
        self.w1 = nn.Parameter(torch.empty(L, u, n_in))
        self.b1 = nn.Parameter(torch.zeros(L, u))
        self.w2 = nn.Parameter(torch.empty(L, k, u))
        self.b2 = nn.Parameter(torch.zeros(L, k))
        self.w3 = nn.Parameter(torch.empty(L, a, u))
        self.b3 = nn.Parameter(torch.zeros(L, a))
        self.t = nn.Parameter(torch.full((L,), PSI_T_INIT))
        beta = profile_coefficients(profile, self.hidden)[:u]
        if self.learnable:
            self.rho = nn.Parameter(learnable_init(beta).repeat(L, 1))
        else:
            self.register_buffer("beta_fixed", beta.repeat(L, 1), persistent=False)
        self.reset_parameters()

    def reset_parameters(self, scheme: str = "detnet") -> None:
        """Initial weights: ``detnet`` (default) -- ``N(0, 0.01^2)`` weights and biases as DetNet's
        published code; ``xavier`` -- Xavier-uniform weights, zero biases, as [WS] Table III
        states. On these unnormalised inputs (``H^T H`` has diagonal ~``Nr``) Xavier starts with
        pre-activations of tens, the soft sign saturates and its gradient vanishes: on 30x60 BPSK
        after 400 steps of 500 samples Xavier reached loss 259 and BER 8.2e-2 at 11 dB, DetNet's
        init loss 74 and BER 5.2e-3 (MMSE 5.3e-3) -- so the default is DetNet's."""
        if self.w1.is_meta:
            return
        if scheme not in INITS:
            raise ValueError(f"unknown initialisation {scheme!r}; choose one of {INITS}")
        with torch.no_grad():
            for w, b in ((self.w1, self.b1), (self.w2, self.b2), (self.w3, self.b3)):
                if scheme == "detnet":
                    w.normal_(0.0, 0.01)
                    b.normal_(0.0, 0.01)
                else:
                    bound = math.sqrt(6.0 / (w.shape[1] + w.shape[2]))
                    w.uniform_(-bound, bound)
                    b.zero_()

    @property
    def amplitude(self) -> float:
        """Per-real-dimension symbol amplitude of the unit-energy constellation."""
        return 1.0 if self.modulation == "bpsk" else 1.0 / math.sqrt(2.0)

    def beta(self) -> torch.Tensor:
        """``(L, k)`` profile coefficients of the kept units."""
        if self.learnable:
            return torch.exp(-torch.cumsum(F.softplus(self.rho), -1))
        return self.beta_fixed

    # ------------------------------------------------------------------ the real-valued inputs
    def real_inputs(self, y: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Complex ``y (B, Nr, n)``, ``h (B, Nr, Nt)`` -> ``H^T y (B, n, K)``, ``H^T H (B, K, K)``
        of the real-valued model with the amplitude folded in (module docstring)."""
        if self.modulation == "bpsk":
            hr = torch.cat([h.real, h.imag], -2)
            yr = torch.cat([y.real, y.imag], -2)
        else:
            hr = torch.cat([torch.cat([h.real, -h.imag], -1), torch.cat([h.imag, h.real], -1)], -2)
            yr = torch.cat([y.real, y.imag], -2)
        hr = hr.float() * self.amplitude
        return (yr.float().transpose(-1, -2) @ hr), hr.transpose(-1, -2) @ hr

    def forward(self, hty: torch.Tensor, hth: torch.Tensor, depth: int | None = None,
                keep_all: bool = False):
        """``hty (B, n, K)``, ``hth (B, K, K)`` -> ``s_hat (B, n, K)`` in ``[-1, 1]`` after
        ``depth`` layers (default all), or the list of every layer's ``s_hat`` (``keep_all``)."""
        depth = self.layers if depth is None else int(depth)
        if not 1 <= depth <= self.layers:
            raise ValueError(f"depth must lie in 1..{self.layers}, got {depth}")
        b, n, k = hty.shape
        s = hty.new_zeros(b, n, k)
        a = hty.new_zeros(b, n, self.aux)
        # unbind once: indexing a stacked parameter per layer would make every layer's backward
        # write a full-size zero gradient (L times the work); unbind's backward stacks them once
        w1, b1, w2, b2, w3, b3, t = (p.unbind(0) for p in (self.w1, self.b1, self.w2, self.b2, self.w3, self.b3,
                                                           self.t))
        beta = self.beta().unbind(0)
        c = 1.0 - self.alpha
        outs = []
        for r in range(depth):
            x = torch.cat([hty, s @ hth, s, a], -1)
            u = F.relu(F.linear(x, w1[r], b1[r])) * beta[r]
            s = c * soft_sign(F.linear(u, w2[r], b2[r]), t[r]) + self.alpha * s
            a = c * F.linear(u, w3[r], b3[r]) + self.alpha * a
            if keep_all:
                outs.append(s)
        return outs if keep_all else s

    # ------------------------------------------------------------------ the complexity dial
    def sliced(self, keep: float | None = None, depth: int | None = None) -> "DetNet":
        """A new network (sharing no storage) with the first ``round(keep * hidden)`` hidden
        units and the first ``depth`` layers; the profile is folded into ``w2``/``w3`` (a fixed
        profile for inference: ``profile='none'``). ``keep`` may not exceed the trained one."""
        keep = self.keep if keep is None else float(keep)
        depth = self.layers if depth is None else int(depth)
        u = kept_units(keep, self.hidden)
        if u > self.units:
            raise ValueError(f"this network was trained with {self.units} of {self.hidden} units "
                             f"(keep {self.keep:g}); it cannot keep {keep:g}")
        if not 1 <= depth <= self.layers:
            raise ValueError(f"depth must lie in 1..{self.layers}, got {depth}")
        out = DetNet(self.nt, depth, self.hidden, self.modulation, "none", keep, False, self.aux, self.alpha)
        with torch.no_grad():
            beta = self.beta()[:depth, :u]
            out.w1.copy_(self.w1[:depth, :u])
            out.b1.copy_(self.b1[:depth, :u])
            out.w2.copy_(self.w2[:depth, :, :u] * beta[:, None, :])
            out.b2.copy_(self.b2[:depth])
            out.w3.copy_(self.w3[:depth, :, :u] * beta[:, None, :])
            out.b3.copy_(self.b3[:depth])
            out.t.copy_(self.t[:depth])
        return out.eval()

    # ------------------------------------------------------------------ regulariser, eq. (22)-(23)
    def log_l1(self, start_layer: int) -> torch.Tensor:
        """[WS] eq. (22)-(23): ``sum_{r=l}^{L} log(1 + (r - 1) |beta_r W_r|)`` with
        ``|beta_r W_r| = sum_k ||beta W_{k,r}||_1`` over the three sublayers (``beta`` scales the
        columns of ``W2``/``W3`` that read the hidden units, and the rows of ``W1`` that make them)."""
        if not 1 <= start_layer <= self.layers:
            raise ValueError(f"start_layer must lie in 1..{self.layers}, got {start_layer}")
        beta = self.beta()
        sl = slice(start_layer - 1, self.layers)
        b = beta[sl]
        norm = ((self.w1[sl].abs() * b[:, :, None]).sum((1, 2)) + (self.w2[sl].abs() * b[:, None, :]).sum((1, 2))
                + (self.w3[sl].abs() * b[:, None, :]).sum((1, 2)))
        r = torch.arange(start_layer, self.layers + 1, dtype=norm.dtype)
        return torch.log1p((r - 1) * norm).sum()


def detnet_loss(outs: list[torch.Tensor], s: torch.Tensor, s_zf: torch.Tensor) -> torch.Tensor:
    """[WS] eq. (20) / [DN]: ``sum_r log(r) ||s - s_r||^2 / ||s - s_zf||^2`` (per vector, then the
    batch mean, as DetNet's code). ``outs``: every layer's ``(B, n, K)``; ``s``, ``s_zf`` likewise."""
    den = (s - s_zf).square().sum(-1).clamp(min=1e-6 * s.shape[-1])
    total = s.new_zeros(())
    for r, sr in enumerate(outs, start=1):
        if r > 1:
            total = total + math.log(r) * ((s - sr).square().sum(-1) / den).mean()
    return total


# ------------------------------------------------------------------------------ complexity
def detnet_matmul_flops(k: int, nr: int, layers: int, units: int, aux: int, vectors_per_frame: int) -> float:
    """Multiply-accumulate FLOPs (2 per MAC, [WS] Table I's ``2MN`` for ``Ab`` plus the bias add)
    per detected vector of the real-valued network with ``units`` hidden units:

    * per vector: ``H^T y`` (``2 * 2Nr * K``), and per layer ``H^T H s`` (``2 K^2``), the
      first sublayer (``2 * units * 5K``... i.e. ``(3K + aux)`` inputs), the detection and
      auxiliary sublayers (``2 * units * (K + aux)``);
    * per frame, shared by its vectors: ``H^T H`` (``2 * 2Nr * K^2``).

    Equals :func:`count_matmul_flops` on the actual tensors."""
    per_vector = 2 * (2 * nr) * k + layers * (2 * k * k + 2 * units * (3 * k + aux) + 2 * units * (k + aux))
    per_frame = 2 * (2 * nr) * k * k
    return per_vector + per_frame / vectors_per_frame


def detnet_elementwise_flops(k: int, layers: int, units: int, aux: int) -> int:
    """The other operations per vector and layer: ReLU (``units``), soft sign (``6K``: two shifts,
    two ReLUs, a difference, scale and offset), residual averaging of ``s`` and ``a``
    (``3 (K + aux)``); the profile is folded into the weights at inference (0)."""
    return layers * (units + 6 * k + 3 * (k + aux))


def count_matmul_flops(model: DetNet, nr: int, vectors_per_frame: int) -> float:
    """FLOPs of the matrix products of one frame, counted by ``torch.utils.flop_counter`` on the
    model's actual tensors, per vector (the check of :func:`detnet_matmul_flops`)."""
    from torch.utils.flop_counter import FlopCounterMode

    g = torch.Generator().manual_seed(0)
    h = torch.randn(1, nr, model.nt, dtype=torch.complex64, generator=g)
    y = torch.randn(1, nr, vectors_per_frame, dtype=torch.complex64, generator=g)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        hty, hth = model.real_inputs(y, h)
        model(hty, hth)
    return counter.get_total_flops() / vectors_per_frame


def table2_flops(detector: str, nt: int, layers: int = 0, beta: float = 1.0, modulation_points: int = 2,
                 sdr_iterations: int = 0) -> float:
    """[WS] Table II as printed (per symbol slot time): ZF, MMSE, ML, SDR, WeSNet, DetNet."""
    if detector == "zf":
        return 56 / 3 * nt ** 3 + 38 * nt ** 2 + 28 / 3 * nt
    if detector == "mmse":
        return 56 / 3 * nt ** 3 + 40 * nt ** 2 + 34 / 3 * nt + 1
    if detector == "ml":
        return math.sqrt(modulation_points ** nt * (8 * nt ** 2 + 8 * nt - 2))
    if detector == "sdr":
        return (13 * nt ** 3 + 25 * nt ** 2 + 17 * nt + 4) * sdr_iterations
    if detector == "wesnet":
        return (beta * nt * (128 * nt + 5) + 9 * nt) * layers
    if detector == "detnet":
        return nt * (128 * nt - 2) * layers
    raise ValueError(f"Table II has no detector {detector!r}")


# ------------------------------------------------------------------------------ bundle codec
def _check_system(hp: dict, system: dict) -> None:
    if hp["modulation"] != system["modulation"]:
        raise ValueError(f"a DetNet for {hp['modulation']} does not fit the system's {system['modulation']}")
    if hp["nt"] != system["nt"]:
        raise ValueError(f"a DetNet for Nt = {hp['nt']} does not fit the system's Nt = {system['nt']}")


def _hyperparameters(m: DetNet) -> dict:
    return {"nt": m.nt, "layers": m.layers, "hidden": m.hidden, "aux": m.aux, "modulation": m.modulation,
            "profile": m.profile, "keep": m.keep, "learnable": m.learnable, "alpha": m.alpha}


def _build(hp: dict) -> DetNet:
    return DetNet(hp["nt"], hp["layers"], hp["hidden"], hp["modulation"], hp["profile"], hp["keep"], hp["learnable"],
                  hp["aux"], hp["alpha"])


# DetNet/WeSNet bundles: the stacked per-layer tensors of the network as trained (``keep`` units
# of ``hidden``; a learnable profile's ``rho``). The receiver slices it to a kept fraction and a
# depth at run time (the detector's options ``keep`` and ``layers``). Two architecture names,
# one schema: ``detnet`` (no profile) and ``wesnet`` (a fixed or learnable profile).
_SCHEMA = {"nt": Param("int", 1, 256), "layers": Param("int", 1, 512), "hidden": Param("int", 1, 8192),
           "aux": Param("int", 1, 4096), "modulation": Param("str", choices=MODULATIONS),
           "profile": Param("str", choices=PROFILES), "keep": Param("float", 1e-6, 1.0),
           "learnable": Param("bool"), "alpha": Param("float", 0.0, 0.999)}


def _check_detnet(hp: dict, system: dict) -> None:
    if hp["profile"] != "none":
        raise ValueError(f"a detnet bundle has no weight-scaling profile, this one has {hp['profile']!r}")
    _check_system(hp, system)


def _check_wesnet(hp: dict, system: dict) -> None:
    if hp["profile"] == "none":
        raise ValueError("a wesnet bundle needs a weight-scaling profile (linear or half-exp); without one it is "
                         "a detnet")
    _check_system(hp, system)


DETNET_CODEC = ModelCodec(architecture="detnet", label="a DetNet", schema=_SCHEMA,
                          hyperparameters=_hyperparameters, build=_build, check_system=_check_detnet)
WESNET_CODEC = ModelCodec(architecture="wesnet", label="a WeSNet", schema=_SCHEMA,
                          hyperparameters=_hyperparameters, build=_build, check_system=_check_wesnet)


def codec_for(model: DetNet) -> ModelCodec:
    """The codec a network is saved with: ``wesnet`` with a profile, ``detnet`` without."""
    return DETNET_CODEC if model.profile == "none" else WESNET_CODEC

"""MMNet in its QR form, the HyperMIMO hypernetwork that writes its weights per channel, and
OAMPNet, [HM] Sec. II-III (citation keys: ``docs/architecture.md``).

Shapes: ``B`` channels (frames), ``Nu`` users, ``Nr`` antennas, ``n`` received vectors per
channel, ``T`` layers, ``M`` constellation points. Complex tensors are ``complex64`` unless
stated; noise variances are complex (per complex dimension, per antenna), as everywhere in the
project.

QR convention (:func:`qr_positive`): ``H = Q_A R_A`` with ``Q_A`` ``(Nr, Nu)`` orthonormal columns
and ``R_A`` upper triangular with a *real, positive* diagonal. ``torch.linalg.qr`` leaves the
phase of each diagonal entry free (LAPACK makes it real but of either sign, and a complex phase is
not canonical across libraries); fixing it makes ``R_A`` a function of ``H``'s column space and
norms alone, so the hypernetwork sees one representation per channel, and the imaginary parts of
the diagonal it is fed are exactly zero.

MMNet layer ``t`` ([HM] eqs. (8)-(10)), per received vector, with ``y* = Q_A^H y``:

    z       = x^ + Theta_t (y* - R_A x^)
    tau     = psi_t / Nu * ( ||I - Theta_t R_A||_F^2 / ||R_A||_F^2 * [||y* - R_A x^||^2 - Nu sigma^2]_+
                             + ||Theta_t||_F^2 sigma^2 )
    x^      = eta(z, tau) = sum_x x exp(-|z - x|^2 / tau) / Z           (element-wise, per user)

``x^`` starts at 0 ([HM]), or with ``start="lmmse"`` (beyond the paper) at the LMMSE estimate
``(R_A^H R_A + sigma^2 I)^-1 R_A^H y*`` (:func:`lmmse_matrix`): the hypernetwork then writes
refinements of an estimate that is already MMSE's, instead of an approximate inverse of ``R_A``
from its entries, which an MLP of 75 units gets wrong on ill-conditioned channels -- there the
zero start left an error floor (HyperMIMO 3e-5..1e-4 where MMSE makes no errors above 19 dB;
docs/operating-envelopes.md). [HM] eq. (9) writes ``Nr sigma^2`` inside ``[.]_+``; but ``y*`` has ``Nu``
entries and ``n* = Q_A^H n ~ CN(0, sigma^2 I_Nu)``, so the OAMP estimate of the error energy
([HM] ref. [4]: ``E||y* - R x^||^2 = ||R (x - x^)||^2 + Nu sigma^2``, solved for the error) needs
``Nu sigma^2``; ``Nr sigma^2`` is MMNet's original form on ``y`` (``Nr`` entries). We use
``Nu``; :func:`tau` takes ``noise_dims`` to state it.

HyperMIMO ([HM] Sec. III-B, Fig. 2): input the ``Nu (Nu + 1) / 2`` upper-triangular entries of
``R_A`` (real and imaginary parts, row-major) and ``sigma``; dense layers of ``inputs``, 75 and
``outputs`` units with ELU, ELU, linear; outputs ``Theta`` (complex ``Nu x Nu``), ``theta_t``
(``T x Nu``, eq. (11): ``Theta_t = Theta (I + diag(theta_t))``, a per-column scaling) and
``psi_t = |.| + PSI_FLOOR`` (``T x Nu``).

Beyond the paper, ``inputs="r+spatial"`` also feeds, per user, the direction of the lag-1
spatial correlation of its channel column, ``c_k = sum_n h[n+1, k] conj(h[n, k]) / |.|`` (real
and imaginary parts, ``2 Nu`` more inputs). ``R_A`` is invariant to any unitary rotation of the
receive space, so it cannot tell where the users are; on a uniform linear array ``c_k`` is
about ``exp(j 2 pi d sin phi_k)`` for a user seen around angle ``phi_k``, i.e. the drop that a
per-drop HyperMIMO learns implicitly. The receiver has the frame's channel, so this costs nothing.

OAMPNet ([HM] ref. [7], He et al. 2018), complex form, ``T`` iterations with two trainable
scalars each (``gamma_t`` scales the linear step, ``theta_t`` the noise in the error model)::

    v2   = max((||y - H x^||^2 - Nr sigma^2) / tr(H^H H), eps)
    W^   = (H^H H + sigma^2 / v2 I)^-1 H^H           (= v2 H^H (v2 H H^H + sigma^2 I)^-1)
    W    = Nu / tr(W^ H) W^
    r    = x^ + gamma_t W (y - H x^)
    B    = I - theta_t W H
    tau  = tr(B B^H) v2 / Nu + theta_t^2 sigma^2 tr(W W^H) / Nu
    x^   = eta(r, tau)
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ...bundle import ModelCodec, Param
from ...constellation import MODULATIONS, Constellation

PSI_FLOOR = 1e-3  # the "small constant" added to |psi| ([HM] Sec. III-B)
TAU_FLOOR = 1e-9  # keeps exp(-|z - x|^2 / tau) finite when the estimated error vanishes
PAPER_HIDDEN = 75
HYPERMIMO_INPUTS = ("r", "r+spatial")  # what the hypernetwork reads (HyperMIMO docstring)
HYPERMIMO_STARTS = ("zero", "lmmse")  # MMNet's first estimate (module docstring)


# ------------------------------------------------------------------------------------ QR, eq. (7)
def qr_positive(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``H = Q_A R_A`` with ``diag(R_A)`` real and positive (module docstring).

    ``h (..., Nr, Nu)`` complex, ``Nr >= Nu`` -> ``q_a (..., Nr, Nu)``, ``r_a (..., Nu, Nu)``.
    """
    q, r = torch.linalg.qr(h, mode="reduced")
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    phase = torch.where(d.abs() > 0, d / d.abs().clamp(min=1e-30), torch.ones_like(d))
    # H = (Q D)(D^* R) with D = diag(phase): columns of Q and rows of R rotated oppositely
    return q * phase[..., None, :], r * phase.conj()[..., :, None]


def spatial_features(h: torch.Tensor) -> torch.Tensor:
    """Per user, the unit-modulus lag-1 spatial correlation of its column (module docstring):
    ``h (..., Nr, Nu)`` -> ``(..., 2 Nu)`` real (real parts, then imaginary parts)."""
    c = (h[..., 1:, :] * h[..., :-1, :].conj()).sum(-2)
    c = c / c.abs().clamp(min=1e-30)
    return torch.cat([c.real, c.imag], -1)


def upper_entries(r_a: torch.Tensor) -> torch.Tensor:
    """The ``Nu (Nu + 1) / 2`` upper-triangular entries of ``r_a (..., Nu, Nu)``, row-major."""
    nu = r_a.shape[-1]
    i, j = torch.triu_indices(nu, nu)
    return r_a[..., i, j]


# ------------------------------------------------------------------------------- eqs. (9), (10)
def denoise(z: torch.Tensor, tau: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[HM] eq. (10): posterior mean of ``x`` in ``points`` given ``z = x + CN(0, tau)``.

    ``z`` complex, ``tau`` real, broadcastable to ``z``. Returns ``(x^, log_probs (..., M))``."""
    d = (z[..., None] - points).abs().square()
    log_p = torch.log_softmax(-d / tau.clamp(min=TAU_FLOOR)[..., None], -1)
    x = (log_p.exp() * points).sum(-1)
    return x, log_p


def denoise_qpsk(z: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """:func:`denoise`'s posterior mean for Gray QPSK ``(+-1 +- j) / sqrt(2)``, in closed form:
    the posterior factorises over the real and imaginary parts, each a two-point mean
    ``tanh(sqrt(2) Re z / tau) / sqrt(2)`` (no ``M``-point softmax: the layers before the last,
    whose posterior over the points nobody reads, cost a fraction)."""
    s = math.sqrt(2.0) / tau.clamp(min=TAU_FLOOR)
    return torch.complex(torch.tanh(s * z.real), torch.tanh(s * z.imag)) / math.sqrt(2.0)


def _is_qpsk(points: torch.Tensor) -> bool:
    q = torch.tensor([complex(a, b) for a in (-1, 1) for b in (-1, 1)], dtype=points.dtype) / math.sqrt(2.0)
    return points.numel() == 4 and bool(torch.isclose(points[:, None], q[None, :], atol=1e-6).any(0).all())


def tau(r_a: torch.Tensor, theta_t: torch.Tensor, psi_t: torch.Tensor, residual_energy: torch.Tensor,
        noise_var: torch.Tensor, noise_dims: int) -> torch.Tensor:
    """[HM] eq. (9): per-user error variance at the denoiser's input.

    r_a, theta_t : ``(B, Nu, Nu)``; psi_t : ``(B, Nu)``
    residual_energy : ``||y* - R_A x^||^2`` per vector, ``(B, n)``
    noise_var : ``(B,)``; noise_dims : entries of the residual (``Nu`` for ``y*``, see the module docstring)

    Returns ``(B, Nu, n)``.
    """
    nu = r_a.shape[-1]
    eye = torch.eye(nu, dtype=r_a.dtype)
    ratio = torch.linalg.matrix_norm(eye - theta_t @ r_a).square() / torch.linalg.matrix_norm(r_a).square()  # (B,)
    err = (residual_energy - noise_dims * noise_var[:, None]).clamp(min=0)  # (B, n)
    theta_energy = torch.linalg.matrix_norm(theta_t).square() * noise_var  # (B,)
    per_vector = ratio[:, None] * err + theta_energy[:, None]  # (B, n)
    return psi_t[..., None] / nu * per_vector[:, None, :]


def mmnet(y_star: torch.Tensor, r_a: torch.Tensor, noise_var: torch.Tensor, thetas: torch.Tensor, psi: torch.Tensor,
          points: torch.Tensor, keep_all: bool = False, x0: torch.Tensor | None = None):
    """MMNet on ``y* = R_A x + n*`` ([HM] eq. (8)) with per-channel layer weights.

    y_star : ``(B, Nu, n)``; r_a : ``(B, Nu, Nu)``; noise_var : ``(B,)``
    thetas : ``(B, T, Nu, Nu)`` complex (``Theta_t``); psi : ``(B, T, Nu)`` positive
    x0 : ``(B, Nu, n)`` the first estimate (default 0, [HM])
    Returns ``(x_T (B, Nu, n), log_probs (B, Nu, n, M))`` of the last layer (its posterior over
    the points, for LLRs), or with ``keep_all`` the list of every layer's ``x^``.
    """
    b, nu, n = y_star.shape
    x = torch.zeros_like(y_star) if x0 is None else x0
    layers = []
    log_p = None
    qpsk = _is_qpsk(points)
    n_layers = thetas.shape[1]
    for t in range(n_layers):
        resid = y_star - r_a @ x
        z = x + thetas[:, t] @ resid
        tv = tau(r_a, thetas[:, t], psi[:, t], resid.abs().square().sum(1), noise_var, nu)
        if qpsk and t < n_layers - 1:  # same x^ as denoise(), without the posterior over the points
            x = denoise_qpsk(z, tv)
        else:
            x, log_p = denoise(z, tv, points)
        layers.append(x)
    return (layers, log_p) if keep_all else (x, log_p)


# -------------------------------------------------------------------------------- HyperMIMO
class HyperMIMO(nn.Module):
    """The hypernetwork of [HM] Fig. 2 and the MMNet it drives (module docstring).

    Parameters
    ----------
    nu : users ``Nu``; layers : MMNet layers ``T`` (paper 5); hidden : width of the second
    dense layer (paper 75); modulation : the constellation the denoiser uses; inputs : ``"r"``
    (the paper's) or ``"r+spatial"`` (also :func:`spatial_features`; beyond the paper); start :
    MMNet's first estimate, ``"zero"`` (the paper's) or ``"lmmse"`` (module docstring; beyond
    the paper).
    """

    def __init__(self, nu: int, layers: int = 5, hidden: int = PAPER_HIDDEN, modulation: str = "qpsk",
                 inputs: str = "r", start: str = "zero"):
        super().__init__()
        if inputs not in HYPERMIMO_INPUTS:
            raise ValueError(f"inputs must be one of {list(HYPERMIMO_INPUTS)}, got {inputs!r}")
        if start not in HYPERMIMO_STARTS:
            raise ValueError(f"start must be one of {list(HYPERMIMO_STARTS)}, got {start!r}")
        self.nu, self.layers, self.hidden, self.modulation = int(nu), int(layers), int(hidden), modulation
        self.inputs, self.start = inputs, start
        self.constellation = Constellation(modulation)
        n_in = self.n_inputs(nu, inputs)
        self.net = nn.Sequential(nn.Linear(n_in, n_in), nn.ELU(), nn.Linear(n_in, hidden), nn.ELU(),
                                 nn.Linear(hidden, self.n_outputs(nu, layers)))

    @staticmethod
    def n_inputs(nu: int, inputs: str = "r") -> int:
        """Real and imaginary parts of the ``Nu (Nu + 1) / 2`` entries of ``R_A``, and ``sigma``
        (and ``2 Nu`` spatial features with ``inputs="r+spatial"``)."""
        return nu * (nu + 1) + 1 + (2 * nu if inputs == "r+spatial" else 0)

    @staticmethod
    def n_outputs(nu: int, layers: int) -> int:
        """``Theta`` (``2 Nu^2`` reals), ``theta_t`` and ``psi_t`` (``T Nu`` each)."""
        return 2 * nu * nu + 2 * layers * nu

    @staticmethod
    def paper_parameters(nu: int, layers: int, hidden: int = PAPER_HIDDEN) -> int:
        """Weights and biases of the three dense layers: ``(i + 1) i + (i + 1) h + (h + 1) o``."""
        i, o = HyperMIMO.n_inputs(nu), HyperMIMO.n_outputs(nu, layers)
        return (i + 1) * i + (i + 1) * hidden + (hidden + 1) * o

    def generate(self, r_a: torch.Tensor, noise_var: torch.Tensor, h: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """MMNet's weights for each channel: ``r_a (B, Nu, Nu)`` (from :func:`qr_positive`),
        ``noise_var (B,)`` (and the channels ``h (B, Nr, Nu)`` with ``inputs="r+spatial"``) ->
        ``thetas (B, T, Nu, Nu)`` complex (eq. (11)), ``psi (B, T, Nu)``."""
        nu, t = self.nu, self.layers
        u = upper_entries(r_a)
        sigma = noise_var.to(torch.float32).clamp(min=0).sqrt()[:, None]
        features = [u.real, u.imag, sigma]
        if self.inputs == "r+spatial":
            if h is None:
                raise ValueError("a HyperMIMO with spatial inputs needs the channels h")
            features.append(spatial_features(h))
        out = self.net(torch.cat(features, -1).float())
        theta = torch.complex(out[:, :nu * nu], out[:, nu * nu:2 * nu * nu]).reshape(-1, nu, nu)
        scale = out[:, 2 * nu * nu:2 * nu * nu + t * nu].reshape(-1, t, 1, nu)  # theta_t, per column
        psi = out[:, 2 * nu * nu + t * nu:].reshape(-1, t, nu).abs() + PSI_FLOOR
        return theta[:, None] * (1 + scale), psi

    def forward(self, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor, keep_all: bool = False):
        """Detect ``y (B, Nr, n)`` over ``h (B, Nr, Nu)`` with ``noise_var (B,)``: QR, one
        hypernetwork pass per channel, MMNet on all ``n`` vectors; see :func:`mmnet`."""
        q_a, r_a = qr_positive(h)
        thetas, psi = self.generate(r_a, noise_var, h)
        y_star = q_a.mH @ y
        nv = noise_var.to(torch.float32)
        x0 = lmmse_matrix(r_a, nv) @ y_star if self.start == "lmmse" else None
        return mmnet(y_star, r_a, nv, thetas, psi, self.constellation.points.to(y.device), keep_all, x0)


# ------------------------------------------------------------------------- MMNet per channel
def lmmse_matrix(r_a: torch.Tensor, noise_var: torch.Tensor) -> torch.Tensor:
    """``(R^H R + sigma^2 I)^-1 R^H`` per channel: the LMMSE filter on ``y*``, MMNet's start."""
    nu = r_a.shape[-1]
    gram = r_a.mH @ r_a + noise_var.to(r_a.real.dtype)[:, None, None] * torch.eye(nu, dtype=r_a.dtype)
    return torch.linalg.solve(gram, r_a.mH)


class MMNetPerChannel(nn.Module):
    """MMNet with its own ``Theta_t``, ``psi_t`` for each of ``B`` channels, all held in one
    tensor, so many channels train at once (Adam is element-wise: each channel's parameters see
    only their own channel's loss). ``Theta_t`` start at the LMMSE filter on ``y*``, ``psi_t``
    at 1 (our choice; [HM] does not say how its per-channel MMNet is initialised)."""

    def __init__(self, r_a: torch.Tensor, noise_var: torch.Tensor, layers: int = 10):
        super().__init__()
        b, nu, _ = r_a.shape
        start = lmmse_matrix(r_a, noise_var)[:, None].expand(b, layers, nu, nu)
        self.theta_re = nn.Parameter(start.real.clone().float())
        self.theta_im = nn.Parameter(start.imag.clone().float())
        self.psi_raw = nn.Parameter(torch.ones(b, layers, nu))

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.complex(self.theta_re, self.theta_im), self.psi_raw.abs() + PSI_FLOOR

    @staticmethod
    def parameters_per_channel(nu: int, layers: int) -> int:
        return layers * (2 * nu * nu + nu)


def mmnet_original_parameters(nu: int, nr: int, layers: int) -> int:
    """Parameters of MMNet as in [HM] ref. [8] for one channel: ``A_t`` (complex ``Nu x Nr``)
    and ``psi_t`` (``Nu``) per layer."""
    return layers * (2 * nu * nr + nu)


# ---------------------------------------------------------------------------------- OAMPNet
class OAMPNet(nn.Module):
    """OAMPNet ([HM] ref. [7]): ``T`` OAMP iterations with trainable ``gamma_t`` and
    ``theta_t`` (module docstring), both starting at 1 (plain OAMP)."""

    def __init__(self, iterations: int = 10, modulation: str = "qpsk"):
        super().__init__()
        self.iterations = int(iterations)
        self.constellation = Constellation(modulation)
        self.gamma = nn.Parameter(torch.ones(self.iterations))
        self.theta = nn.Parameter(torch.ones(self.iterations))

    def forward(self, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor, keep_all: bool = False):
        """``y (B, Nr, n)``, ``h (B, Nr, Nu)``, ``noise_var (B,)`` -> ``(x^ (B, Nu, n), log_probs)``."""
        b, nr, nu = h.shape
        points = self.constellation.points.to(y.device)
        nv = noise_var.to(torch.float32)[:, None]  # (B, 1): per vector below
        gram = h.mH @ h  # (B, Nu, Nu)
        tr_gram = torch.diagonal(gram, dim1=-2, dim2=-1).real.sum(-1)[:, None]  # (B, 1)
        hh = h.mH  # (B, Nu, Nr)
        eye = torch.eye(nu, dtype=h.dtype)
        x = torch.zeros(b, nu, y.shape[-1], dtype=y.dtype)
        layers, log_p = [], None
        for t in range(self.iterations):
            resid = y - h @ x  # (B, Nr, n)
            v2 = ((resid.abs().square().sum(1) - nr * nv) / tr_gram).clamp(min=1e-9)  # (B, n)
            # per vector: W^ = (H^H H + sigma^2 / v2 I)^-1 H^H, batched as (B, n, Nu, Nu)
            reg = (nv / v2)[..., None, None] * eye  # (B, n, Nu, Nu)
            w_hat = torch.linalg.solve(gram[:, None] + reg, hh[:, None].expand(b, y.shape[-1], nu, nr))
            tr_wh = torch.diagonal(w_hat @ h[:, None], dim1=-2, dim2=-1).sum(-1)  # (B, n)
            w = (nu / tr_wh)[..., None, None] * w_hat  # (B, n, Nu, Nr)
            r = x + self.gamma[t] * (w @ resid.transpose(1, 2)[..., None]).squeeze(-1).transpose(1, 2)
            bmat = eye - self.theta[t] * (w @ h[:, None])
            tau_t = (torch.linalg.matrix_norm(bmat).square() * v2
                     + self.theta[t] ** 2 * nv * torch.linalg.matrix_norm(w).square()) / nu  # (B, n)
            x, log_p = denoise(r, tau_t[:, None, :].expand(b, nu, -1), points)
            layers.append(x)
        return (layers, log_p) if keep_all else (x, log_p)


def mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[HM] eq. (12): ``E ||x~_T - x||^2`` (mean over channels and vectors, summed over users)."""
    return (x_hat - x).abs().square().sum(-2).mean()


def ser_crossing(snr_db: list[float], ser: list[float], target: float = 1e-3) -> float | None:
    """The SNR at which an SER curve crosses ``target``, interpolating ``log10 SER`` linearly
    between the two points around it; ``None`` if it does not cross inside the sweep."""
    pts = [(s, e) for s, e in zip(snr_db, ser) if e is not None and e > 0]
    for (s0, e0), (s1, e1) in zip(pts, pts[1:]):
        if e0 >= target >= e1 and e0 > e1:
            f = (math.log10(e0) - math.log10(target)) / (math.log10(e0) - math.log10(e1))
            return s0 + f * (s1 - s0)
    return None


# --------------------------------------------------------------------------------- bundles
def _hyper_check_system(hp: dict, system: dict) -> None:
    if hp["modulation"] != system["modulation"]:
        raise ValueError(f"a HyperMIMO for {hp['modulation']} does not fit the system's {system['modulation']}")
    if hp["nu"] != system["nt"]:
        raise ValueError(f"a HyperMIMO for Nu = {hp['nu']} users does not fit the system's Nt = {system['nt']}")
    if system["nr"] < hp["nu"]:
        raise ValueError(f"HyperMIMO needs Nr >= Nu, the system has Nr = {system['nr']}")


# HyperMIMO bundles: the hypernetwork's three dense layers; the receiver runs `layers` MMNet
# layers on y* = Q_A^H y with the weights it writes per frame. `csi` records what it was trained
# on (perfect H and sigma, or the LS estimate and the pilot-residual noise variance).
def _make_codec() -> ModelCodec:
    return ModelCodec(
        architecture="hypermimo", label="a HyperMIMO",
        schema={"nu": Param("int", 1, 64), "layers": Param("int", 1, 64), "hidden": Param("int", 1, 4096),
                "modulation": Param("str", choices=MODULATIONS), "csi": Param("str", choices=("perfect", "ls")),
                "inputs": Param("str", choices=HYPERMIMO_INPUTS, optional=True),  # absent: "r" (schema before it)
                "start": Param("str", choices=HYPERMIMO_STARTS, optional=True)},  # absent: "zero" (schema before it)
        hyperparameters=lambda m: {"nu": m.nu, "layers": m.layers, "hidden": m.hidden, "modulation": m.modulation,
                                   "csi": getattr(m, "csi", "perfect"), "inputs": m.inputs, "start": m.start},
        build=lambda hp: HyperMIMO(hp["nu"], hp["layers"], hp["hidden"], hp["modulation"], hp.get("inputs") or "r",
                                   hp.get("start") or "zero"),
        check_system=_hyper_check_system)


HYPERMIMO_CODEC = _make_codec()

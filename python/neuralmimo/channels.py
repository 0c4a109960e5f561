"""Flat block-fading MIMO channel models, batched in torch.

Every model draws channel matrices ``H`` of shape ``(batch, Nr, Nt)`` (complex64) and knows its
analytic statistics: ``mean_energy`` is ``E||H||_F^2`` and ``covariance()`` the covariance of
``vec(H)`` (columns stacked: index ``k * Nr + n`` for entry ``H[n, k]``). The 3GPP UMi task model
needs Sionna and lives in :mod:`neuralmimo.umi`.

Models
------
* :class:`IIDRayleigh` -- ``H[n,k] ~ CN(0,1)`` i.i.d.
* :class:`Kronecker` -- ``H = R_r^{1/2} G R_t^{1/2}``, exponential correlation ``R[i,j] = rho^|i-j|``.
* :class:`LocalScattering` -- HyperMIMO Sec. IV-A, eqs. (13)-(14): users dropped in a 120 deg
  sector, Gaussian angular spread around each user's nominal angle, ULA at the BS.
* :class:`DeepSICSynthetic` -- modular-hypernetwork paper Sec. IV-A:
  ``H[n,k] = sqrt(g_k[t]) exp(-|n-k|)`` with per-user gains that vary by block and a number of
  users ``K[t]`` that changes as users join and leave.
* :class:`TimeVaryingCorrelated` -- Kronecker spatial correlation with Gauss-Markov (Jakes
  lag-one) evolution across blocks and slowly drifting per-user shadowing. It stands in where
  the papers used COST2100, which is not available here; it reproduces spatial correlation and
  block-to-block variability, not COST2100's geometry (clusters, visibility regions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .snr import complex_noise


def _crandn(shape, generator, dtype=torch.complex64) -> torch.Tensor:
    """``CN(0, 1)`` samples."""
    real = torch.float64 if dtype == torch.complex128 else torch.float32
    return torch.complex(torch.randn(shape, generator=generator, dtype=real),
                         torch.randn(shape, generator=generator, dtype=real)) / math.sqrt(2.0)


def exponential_correlation(n: int, rho: float) -> torch.Tensor:
    """``R[i, j] = rho^|i - j|`` (real, float64), ``0 <= rho < 1``."""
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"correlation coefficient must be in [0, 1), got {rho}")
    idx = torch.arange(n, dtype=torch.float64)
    return rho ** (idx[:, None] - idx[None, :]).abs()


def _hermitian_sqrt(c: torch.Tensor) -> torch.Tensor:
    """``U D^{1/2} U^H`` of a Hermitian PSD matrix (negative round-off eigenvalues clamped)."""
    w, u = torch.linalg.eigh(c)
    return (u * w.clamp(min=0).sqrt().to(u.dtype).unsqueeze(-2)) @ u.mH


def vec_columns(h: torch.Tensor) -> torch.Tensor:
    """``(..., Nr, Nt)`` -> ``(..., Nr*Nt)`` with columns stacked (index ``k*Nr + n``)."""
    return h.transpose(-1, -2).reshape(*h.shape[:-2], -1)


class ChannelModel:
    """Base class: ``sample(batch, generator) -> (batch, Nr, Nt) complex64``."""

    nr: int
    nt: int

    def sample(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    @property
    def mean_energy(self) -> float:
        """``E||H||_F^2``."""
        return float(torch.diagonal(self.covariance()).real.sum())

    def covariance(self) -> torch.Tensor:
        """Covariance ``E[vec(H) vec(H)^H]`` (complex128, ``(Nr*Nt, Nr*Nt)``)."""
        raise NotImplementedError


class IIDRayleigh(ChannelModel):
    """i.i.d. Rayleigh fading: ``H[n, k] ~ CN(0, 1)``."""

    def __init__(self, nr: int, nt: int):
        self.nr, self.nt = nr, nt

    def sample(self, batch, generator=None):
        return _crandn((batch, self.nr, self.nt), generator)

    @property
    def mean_energy(self) -> float:
        return float(self.nr * self.nt)

    def covariance(self):
        return torch.eye(self.nr * self.nt, dtype=torch.complex128)


class Kronecker(ChannelModel):
    """Kronecker model ``H = R_r^{1/2} G R_t^{1/2}``, ``G`` i.i.d. ``CN(0,1)``.

    ``R_r[i,j] = rho_rx^|i-j|``, ``R_t[i,j] = rho_tx^|i-j|``; ``cov(vec H) = R_t^T kron R_r``.
    """

    def __init__(self, nr: int, nt: int, rho_rx: float = 0.5, rho_tx: float = 0.0):
        self.nr, self.nt = nr, nt
        self.rho_rx, self.rho_tx = rho_rx, rho_tx
        self.r_rx = exponential_correlation(nr, rho_rx).to(torch.complex128)
        self.r_tx = exponential_correlation(nt, rho_tx).to(torch.complex128)
        self._sqrt_rx = _hermitian_sqrt(self.r_rx).to(torch.complex64)
        self._sqrt_tx = _hermitian_sqrt(self.r_tx).to(torch.complex64)

    def sample(self, batch, generator=None):
        g = _crandn((batch, self.nr, self.nt), generator)
        return self._sqrt_rx @ g @ self._sqrt_tx

    def covariance(self):
        return torch.kron(self.r_tx.T.contiguous(), self.r_rx)


def local_scattering_covariance(nr: int, angle_rad: float, angle_std_rad: float, spacing: float = 0.5) -> torch.Tensor:
    """HyperMIMO eq. (13): Gaussian local scattering covariance of a ULA (complex128, ``(Nr, Nr)``).

    ``[C]_{m,n} = exp(2 pi j d (m-n) sin(phi)) * exp(-sigma_phi^2/2 * (2 pi d (m-n) cos(phi))^2)``.
    """
    dm = torch.arange(nr, dtype=torch.float64)
    dm = dm[:, None] - dm[None, :]
    phase = 2 * math.pi * spacing * dm * math.sin(angle_rad)
    amp = torch.exp(-0.5 * angle_std_rad**2 * (2 * math.pi * spacing * dm * math.cos(angle_rad)) ** 2)
    return torch.polar(amp, phase)


class LocalScattering(ChannelModel):
    """Local scattering model of HyperMIMO Sec. IV-A (Bjornson et al., Ch. 2.6).

    A ULA of ``nr`` antennas (spacing ``spacing`` wavelengths) at the centre of a
    ``sector_deg`` sector; ``nt`` single-antenna users dropped at nominal angles uniform in the
    sector, each seen through Gaussian angular spread ``angle_std_deg``. Perfect power control:
    every user has unit average gain per antenna. ``h_u = U_u D_u^{1/2} U_u^H e`` (eq. 14).

    ``angles_deg`` fixes the drop (HyperMIMO trains per drop); otherwise it is drawn from
    ``seed``. ``redrop=True`` draws new user angles for every sample instead.
    """

    def __init__(self, nr: int, nt: int, angle_std_deg: float = 10.0, spacing: float = 0.5,
                 sector_deg: float = 120.0, angles_deg=None, seed: int = 0, redrop: bool = False):
        self.nr, self.nt = nr, nt
        self.angle_std = math.radians(angle_std_deg)
        self.spacing, self.sector = spacing, math.radians(sector_deg)
        self.redrop = redrop
        if angles_deg is None:
            g = torch.Generator().manual_seed(seed)
            angles = self.drop(g)
        else:
            if len(angles_deg) != nt:
                raise ValueError(f"need {nt} user angles, got {len(angles_deg)}")
            angles = torch.tensor([math.radians(a) for a in angles_deg], dtype=torch.float64)
        self.set_drop(angles)

    def drop(self, generator=None) -> torch.Tensor:
        """Nominal user angles (rad, float64), uniform in ``[-sector/2, sector/2]``."""
        return (torch.rand(self.nt, generator=generator, dtype=torch.float64) - 0.5) * self.sector

    def set_drop(self, angles_rad: torch.Tensor) -> None:
        self.angles = angles_rad
        self.user_covariances = torch.stack(
            [local_scattering_covariance(self.nr, float(a), self.angle_std, self.spacing) for a in angles_rad])
        self._sqrt = _hermitian_sqrt(self.user_covariances).to(torch.complex64)  # (Nt, Nr, Nr)

    def sample(self, batch, generator=None):
        e = _crandn((batch, self.nt, self.nr, 1), generator)
        if self.redrop:
            ang = (torch.rand(batch, self.nt, generator=generator, dtype=torch.float64) - 0.5) * self.sector
            covs = torch.stack([torch.stack([local_scattering_covariance(self.nr, float(a), self.angle_std, self.spacing)
                                             for a in row]) for row in ang])
            sq = _hermitian_sqrt(covs).to(torch.complex64)
        else:
            sq = self._sqrt
        h = (sq @ e).squeeze(-1)  # (batch, Nt, Nr)
        return h.transpose(-1, -2).contiguous()

    def covariance(self):
        if self.redrop:
            raise NotImplementedError("covariance of a fixed drop only; redrop=True mixes drops")
        return torch.block_diag(*self.user_covariances)


# --------------------------------------------------------------------------- DeepSIC synthetic
def user_counts(n_blocks: int, k_min: int, k_max: int, change_prob: float, seed: int,
                k_initial: int | None = None) -> list[int]:
    """Users joining and leaving: ``K[t]`` starts at ``k_initial`` (default ``k_max``) and, at each
    block with probability ``change_prob``, moves one step up or down inside ``[k_min, k_max]``."""
    g = torch.Generator().manual_seed(seed)
    ks, k = [], k_max if k_initial is None else k_initial
    for _ in range(n_blocks):
        ks.append(k)
        if k_min < k_max and float(torch.rand(1, generator=g)) < change_prob:
            step = 1 if float(torch.rand(1, generator=g)) < 0.5 else -1
            if not k_min <= k + step <= k_max:
                step = -step
            k += step
    return ks


def sed_matrix(n_rx: int, n_users: int) -> torch.Tensor:
    """The DeepSIC spatial exponential decay matrix ``exp(-|n - k|)`` (float64, ``(N, K)``)."""
    n = torch.arange(n_rx, dtype=torch.float64)[:, None]
    k = torch.arange(n_users, dtype=torch.float64)[None, :]
    return torch.exp(-(n - k).abs())


@dataclass
class SEDBlock:
    """One block of the DeepSIC synthetic channel."""

    index: int
    n_users: int
    h: torch.Tensor  # (N, K[t]) complex64, real-valued entries
    user_snr_offset_db: torch.Tensor  # (K[t],) per-user SNR relative to the nominal SNR


class DeepSICSynthetic:
    """DeepSIC synthetic (SED) channel with block-varying per-user SNR profiles.

    ``H[t][n, k] = sqrt(g_k[t]) * exp(-|n - k|)`` for ``n < N`` and ``k < K[t]``, with
    ``g_k[t] = 10^(delta_k[t] / 10)`` and the per-user profile

        delta_k[t] = profile_amplitude_db * cos(2 pi t / P_k + phi_k)   [dB].

    Combined with noise in the ``deepsic`` SNR convention (unit-gain diagonal), user ``k``'s SNR
    on its strongest antenna in block ``t`` is ``SNR + delta_k[t]``. The paper shows the profiles
    only as a figure (Fig. 2): smooth per-user oscillations over the block index. Periods
    ``P_k`` (uniform in ``period_range`` blocks) and phases ``phi_k`` are drawn from ``seed``.

    Users join and leave: ``K[t]`` starts at ``k_initial`` (default: the largest allowed) and, at
    each block with probability ``change_prob``, moves one step up or down inside
    ``[k_min, k_max]``. Active users are always indices ``0..K[t]-1``. ``k_min == k_max`` gives
    a fixed number of users.
    """

    def __init__(self, n_rx: int, k_max: int, k_min: int | None = None, profile_amplitude_db: float = 4.0,
                 period_range=(20.0, 80.0), change_prob: float = 0.2, k_initial: int | None = None, seed: int = 0):
        k_min = k_max if k_min is None else k_min
        if not 1 <= k_min <= k_max <= n_rx:
            raise ValueError(f"need 1 <= k_min <= k_max <= n_rx, got k_min={k_min}, k_max={k_max}, n_rx={n_rx}")
        self.n_rx, self.k_min, self.k_max = n_rx, k_min, k_max
        self.profile_amplitude_db = profile_amplitude_db
        self.change_prob = change_prob
        g = torch.Generator().manual_seed(seed)
        lo, hi = period_range
        self.periods = lo + (hi - lo) * torch.rand(k_max, generator=g, dtype=torch.float64)
        self.phases = 2 * math.pi * torch.rand(k_max, generator=g, dtype=torch.float64)
        self._seed = seed
        self.k_initial = k_max if k_initial is None else k_initial
        self.base = sed_matrix(n_rx, k_max)

    # Users' SNR offsets are a deterministic function of the block index.
    def snr_offset_db(self, t: int) -> torch.Tensor:
        """Per-user SNR offsets ``delta_k[t]`` in dB, shape ``(k_max,)``."""
        return self.profile_amplitude_db * torch.cos(2 * math.pi * t / self.periods + self.phases)

    def user_counts(self, n_blocks: int) -> list[int]:
        """``K[t]`` for ``t = 0..n_blocks-1`` (reproducible from the seed)."""
        return user_counts(n_blocks, self.k_min, self.k_max, self.change_prob, self._seed + 1, self.k_initial)

    def channel(self, t: int, n_users: int) -> torch.Tensor:
        """``H[t]`` for the first ``n_users`` users, ``(N, n_users)`` complex64."""
        gains = 10.0 ** (self.snr_offset_db(t)[:n_users] / 10.0)
        return (self.base[:, :n_users] * gains.sqrt()).to(torch.complex64)

    def blocks(self, n_blocks: int):
        """Iterate the ``n_blocks`` blocks of a transmission as :class:`SEDBlock`."""
        for t, k in enumerate(self.user_counts(n_blocks)):
            yield SEDBlock(t, k, self.channel(t, k), self.snr_offset_db(t)[:k])

    def sample(self, batch: int, generator=None, n_blocks: int = 100) -> torch.Tensor:
        """Channels of ``batch`` blocks drawn uniformly from ``0..n_blocks-1`` with ``K = k_max``
        users, ``(batch, N, k_max)``: lets the SED channel run through the same sweep code as the
        fading models (an average over a T-block transmission)."""
        ts = torch.randint(0, n_blocks, (batch,), generator=generator)
        return torch.stack([self.channel(int(t), self.k_max) for t in ts])

    @property
    def mean_energy(self) -> float:
        """``||exp(-|n-k|)||_F^2`` with all ``k_max`` users at nominal gain (profile offsets 0 dB)."""
        return float(self.base.square().sum())

    @property
    def nr(self):
        return self.n_rx

    @property
    def nt(self):
        return self.k_max


class TimeVaryingCorrelated(ChannelModel):
    """Spatially correlated channel evolving across blocks (stand-in for COST2100).

    ``H[t] = diag(1) R_r^{1/2} G[t] R_t^{1/2} diag(sqrt(s_k[t]))`` with

    * ``G[t] = rho_time G[t-1] + sqrt(1 - rho_time^2) W[t]`` (Gauss-Markov small-scale fading,
      ``rho_time = J0(2 pi f_D T_block)``, see :func:`jakes_rho`);
    * per-user shadowing ``10 log10 s_k[t]``: an AR(1) process in dB with standard deviation
      ``shadowing_std_db`` and lag-one correlation ``shadowing_rho``, normalised so that
      ``E[s_k] = 1`` (the marginal covariance of ``vec H`` stays ``R_t^T kron R_r``).

    ``sample`` draws independent blocks from the stationary distribution; ``sequence`` draws a
    correlated run of blocks.
    """

    def __init__(self, nr: int, nt: int, rho_rx: float = 0.7, rho_tx: float = 0.3, rho_time: float = 0.95,
                 shadowing_std_db: float = 3.0, shadowing_rho: float = 0.98):
        if not 0.0 <= rho_time <= 1.0 or not 0.0 <= shadowing_rho <= 1.0:
            raise ValueError("rho_time and shadowing_rho must be in [0, 1]")
        self.spatial = Kronecker(nr, nt, rho_rx, rho_tx)
        self.nr, self.nt = nr, nt
        self.rho_time, self.shadowing_std_db, self.shadowing_rho = rho_time, shadowing_std_db, shadowing_rho
        # lognormal mean correction: E[10^(X/10)] = exp((ln10/10)^2 s^2 / 2)
        self._shadow_bias_db = -(math.log(10) / 10) * self.shadowing_std_db**2 / 2

    def _shadow_gain(self, x_db: torch.Tensor) -> torch.Tensor:
        return 10.0 ** ((x_db + self._shadow_bias_db) / 10.0)

    def sample(self, batch, generator=None):
        h = self.spatial.sample(batch, generator)
        x_db = self.shadowing_std_db * torch.randn(batch, 1, self.nt, generator=generator)
        return h * self._shadow_gain(x_db).sqrt()

    def initial_state(self, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stationary state ``(G, shadowing_dB)`` of the first block."""
        g = _crandn((self.nr, self.nt), generator)
        x_db = self.shadowing_std_db * torch.randn(1, self.nt, generator=generator)
        return g, x_db

    def advance(self, state, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """State of the next block (Gauss-Markov fading, AR(1) shadowing in dB)."""
        g, x_db = state
        a, b = self.rho_time, math.sqrt(1 - self.rho_time**2)
        sa, sb = self.shadowing_rho, math.sqrt(1 - self.shadowing_rho**2)
        g = a * g + b * _crandn((self.nr, self.nt), generator)
        x_db = sa * x_db + sb * self.shadowing_std_db * torch.randn(1, self.nt, generator=generator)
        return g, x_db

    def matrix(self, state) -> torch.Tensor:
        """Channel matrix ``(Nr, Nt)`` of a state."""
        g, x_db = state
        return self.spatial._sqrt_rx @ g @ self.spatial._sqrt_tx * self._shadow_gain(x_db).sqrt()

    def sequence(self, n_blocks: int, generator=None) -> torch.Tensor:
        """A run of ``n_blocks`` consecutive blocks, ``(n_blocks, Nr, Nt)`` complex64."""
        state = self.initial_state(generator)
        out = []
        for t in range(n_blocks):
            if t:
                state = self.advance(state, generator)
            out.append(self.matrix(state))
        return torch.stack(out)

    def covariance(self):
        return self.spatial.covariance()


def jakes_rho(doppler_hz: float, block_duration_s: float) -> float:
    """Lag-one correlation ``J0(2 pi f_D T)`` of Jakes' model (series expansion of ``J0``)."""
    x = 2 * math.pi * doppler_hz * block_duration_s
    term, total, k = 1.0, 1.0, 0
    while abs(term) > 1e-12 and k < 200:
        k += 1
        term *= -(x / 2) ** 2 / (k * k)
        total += term
    return total


def make_channel(name: str, nr: int, nt: int, **kw) -> ChannelModel | DeepSICSynthetic:
    """Channel model by CLI name (``iid``, ``kronecker``, ``local-scattering``, ``deepsic-sed``,
    ``time-varying``, ``umi-task``); keyword arguments go to the model's constructor."""
    if name == "iid":
        return IIDRayleigh(nr, nt)
    if name == "kronecker":
        return Kronecker(nr, nt, **kw)
    if name == "local-scattering":
        return LocalScattering(nr, nt, **kw)
    if name == "deepsic-sed":
        return DeepSICSynthetic(nr, nt, **kw)
    if name == "time-varying":
        return TimeVaryingCorrelated(nr, nt, **kw)
    if name == "umi-task":  # cached 3GPP UMi task (generating a missing one needs the lab environment)
        from .umi import make_umi_channel

        return make_umi_channel(nr, nt, **kw)
    raise ValueError(f"unknown channel model {name!r}")


class BlockFadingProcess:
    """Successive block-fading channels ``H[0], H[1], ...`` of a model, one per block.

    Stationary models draw independent blocks; ``TimeVaryingCorrelated`` evolves its state from
    block to block; ``DeepSICSynthetic`` follows its per-user SNR profiles over the block index
    (all ``k_max`` users active). Reproducible from ``seed``.
    """

    def __init__(self, model, seed: int = 0):
        self.model = model
        self.generator = torch.Generator().manual_seed(int(seed))
        self.block_index = 0
        self._state = None

    def next(self) -> torch.Tensor:
        """Channel of the next block, ``(Nr, Nt)`` complex64."""
        m, t = self.model, self.block_index
        self.block_index += 1
        if isinstance(m, DeepSICSynthetic):
            return m.channel(t, m.k_max)
        if isinstance(m, TimeVaryingCorrelated):
            self._state = m.initial_state(self.generator) if self._state is None else m.advance(self._state, self.generator)
            return m.matrix(self._state)
        return m.sample(1, self.generator)[0]


def transmit(h: torch.Tensor, x: torch.Tensor, noise_var, generator: torch.Generator | None = None,
             unit_noise: torch.Tensor | None = None) -> torch.Tensor:
    """Flat-fading MIMO channel ``Y = H X + N``: ``h (..., Nr, Nt)``, ``x (..., Nt, N)`` ->
    ``(..., Nr, N)`` with ``N`` i.i.d. ``CN(0, noise_var)`` (``noise_var`` float or broadcastable).

    ``unit_noise`` (``CN(0, 1)`` samples of the output's shape) replaces drawing from
    ``generator``: a streaming channel uses it to make the noise independent of how the stream
    is cut into buffers."""
    y = h @ x
    if unit_noise is not None:
        return y + unit_noise * math.sqrt(float(noise_var))
    return y + complex_noise(y.shape, noise_var, generator, y.dtype)


def apply_cfo(y: torch.Tensor, cfo: float, first_sample: int) -> torch.Tensor:
    """Carrier frequency offset: multiply sample ``m`` (absolute index ``first_sample + i``) by
    ``exp(j 2 pi cfo m)``, ``cfo`` in cycles per sample; ``y (..., N)``. The phase is computed in
    float64 from the absolute index, so it stays continuous across buffers."""
    if cfo == 0.0:
        return y
    m = torch.arange(first_sample, first_sample + y.shape[-1], dtype=torch.float64)
    frac = torch.remainder(cfo * m, 1.0)  # keep the angle small before the float32 cast
    return y * torch.polar(torch.ones_like(frac), 2 * math.pi * frac).to(y.dtype)

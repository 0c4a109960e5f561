"""Statistical fading models: i.i.d. Rayleigh, Kronecker, local scattering [HM] and a
time-varying spatially correlated channel. Citation keys: ``docs/architecture.md``."""

from __future__ import annotations

import math

import torch

from .base import ChannelModel, crandn, hermitian_sqrt


def exponential_correlation(n: int, rho: float) -> torch.Tensor:
    """Exponential correlation matrix ``R[i, j] = rho^|i - j|``, ``(n, n)`` float64, ``0 <= rho < 1``."""
    if not 0.0 <= rho < 1.0:
        raise ValueError(f"correlation coefficient must be in [0, 1), got {rho}")
    idx = torch.arange(n, dtype=torch.float64)
    return rho ** (idx[:, None] - idx[None, :]).abs()


class IIDRayleigh(ChannelModel):
    """i.i.d. Rayleigh fading: ``H[n, k] ~ CN(0, 1)``, so ``E||H||_F^2 = Nr Nt``.

    Parameters
    ----------
    nr, nt : receive antennas, transmit streams
    """

    def __init__(self, nr: int, nt: int):
        self.nr, self.nt = nr, nt

    def sample(self, batch, generator=None):
        return crandn((batch, self.nr, self.nt), generator)

    @property
    def mean_energy(self) -> float:
        return float(self.nr * self.nt)

    def covariance(self):
        return torch.eye(self.nr * self.nt, dtype=torch.complex128)


class IIDRealGaussian(ChannelModel):
    """Real i.i.d. Gaussian channel of DetNet [DN] and WeSNet [WS] (their 30 x 60 BPSK case):
    ``H[n, k] ~ N(0, 1)`` real, stored as complex64 with zero imaginary part, so
    ``E||H||_F^2 = Nr Nt`` (DetNet's data generator: ``H = randn(N, K)``).

    Parameters
    ----------
    nr, nt : receive antennas, transmit streams
    """

    real_valued = True

    def __init__(self, nr: int, nt: int):
        self.nr, self.nt = nr, nt

    def sample(self, batch, generator=None):
        return torch.randn((batch, self.nr, self.nt), generator=generator).to(torch.complex64)

    @property
    def mean_energy(self) -> float:
        return float(self.nr * self.nt)

    def covariance(self):
        # E[vec(H) vec(H)^H] of a real N(0, 1) matrix: the identity, as for CN(0, 1)
        return torch.eye(self.nr * self.nt, dtype=torch.complex128)


class Kronecker(ChannelModel):
    """Kronecker model ``H = R_r^{1/2} G R_t^{1/2}`` with ``G`` i.i.d. ``CN(0, 1)``.

    ``R_r[i, j] = rho_rx^|i-j|`` and ``R_t[i, j] = rho_tx^|i-j|`` (:func:`exponential_correlation`),
    so ``cov(vec H) = R_t^T kron R_r`` and ``E||H||_F^2 = Nr Nt``.

    Parameters
    ----------
    nr, nt : receive antennas, transmit streams
    rho_rx, rho_tx : correlation of neighbouring receive / transmit antennas, in ``[0, 1)``
    """

    def __init__(self, nr: int, nt: int, rho_rx: float = 0.5, rho_tx: float = 0.0):
        self.nr, self.nt = nr, nt
        self.rho_rx, self.rho_tx = rho_rx, rho_tx
        self.r_rx = exponential_correlation(nr, rho_rx).to(torch.complex128)
        self.r_tx = exponential_correlation(nt, rho_tx).to(torch.complex128)
        self.sqrt_rx = hermitian_sqrt(self.r_rx).to(torch.complex64)
        self.sqrt_tx = hermitian_sqrt(self.r_tx).to(torch.complex64)

    def sample(self, batch, generator=None):
        g = crandn((batch, self.nr, self.nt), generator)
        return self.sqrt_rx @ g @ self.sqrt_tx

    def covariance(self):
        return torch.kron(self.r_tx.T.contiguous(), self.r_rx)


def local_scattering_covariance(nr: int, angle_rad: float, angle_std_rad: float, spacing: float = 0.5) -> torch.Tensor:
    """Gaussian local-scattering covariance of a ULA, [HM] eq. (13).

    ``[C]_{m,n} = exp(2 pi j d (m-n) sin(phi)) exp(-sigma_phi^2 / 2 (2 pi d (m-n) cos(phi))^2)``

    Parameters
    ----------
    nr : antennas of the ULA
    angle_rad : nominal angle ``phi`` of the user
    angle_std_rad : angular standard deviation ``sigma_phi``
    spacing : antenna spacing ``d`` in wavelengths

    Returns
    -------
    ``(nr, nr)`` complex128
    """
    dm = torch.arange(nr, dtype=torch.float64)
    dm = dm[:, None] - dm[None, :]
    phase = 2 * math.pi * spacing * dm * math.sin(angle_rad)
    amp = torch.exp(-0.5 * angle_std_rad**2 * (2 * math.pi * spacing * dm * math.cos(angle_rad)) ** 2)
    return torch.polar(amp, phase)


REDROP_GRID_DEG = 0.01  # angle grid of redrop=True (far below sigma_phi = 10 deg)


def _local_scattering_covariances(nr: int, angles_rad: torch.Tensor, angle_std_rad: float,
                                  spacing: float = 0.5) -> torch.Tensor:
    """:func:`local_scattering_covariance` for a tensor of angles ``(...)`` at once ->
    ``(..., nr, nr)`` complex128 (drawing a new drop per training channel needs thousands)."""
    dm = torch.arange(nr, dtype=torch.float64)
    dm = dm[:, None] - dm[None, :]
    a = angles_rad.to(torch.float64)[..., None, None]
    phase = 2 * math.pi * spacing * dm * torch.sin(a)
    amp = torch.exp(-0.5 * angle_std_rad**2 * (2 * math.pi * spacing * dm * torch.cos(a)) ** 2)
    return torch.polar(amp, phase)


def rotated_drop(angles_rad: torch.Tensor, delta_rad: float) -> torch.Tensor:
    """Every user moved by ``delta_rad`` around the array ([HM] Fig. 6a)."""
    return angles_rad + delta_rad


def displaced_drop(angles_rad: torch.Tensor, distance_m: float, displacement_m: float,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Every user, ``distance_m`` from the array at its nominal angle, moved ``displacement_m`` in
    a uniformly random direction ([HM] Fig. 6b); returns the angles at which the users now lie
    (perfect power control keeps their gain at one wherever they are)."""
    direction = 2 * math.pi * torch.rand(angles_rad.shape, generator=generator, dtype=torch.float64)
    x = distance_m * torch.cos(angles_rad) + displacement_m * torch.cos(direction)
    y = distance_m * torch.sin(angles_rad) + displacement_m * torch.sin(direction)
    return torch.atan2(y, x)


class LocalScattering(ChannelModel):
    """Local scattering model, [HM] Sec. IV-A, eqs. (13)-(14).

    A ULA of ``nr`` antennas (spacing ``spacing`` wavelengths) at the centre of a ``sector_deg``
    sector; ``nt`` single-antenna users at nominal angles in the sector, each seen through
    Gaussian angular spread ``angle_std_deg``. Perfect power control: every user has unit
    average gain per antenna. ``h_u = U_u D_u^{1/2} U_u^H e`` with ``e ~ CN(0, I)`` (eq. 14),
    ``C_u = U_u D_u U_u^H`` from :func:`local_scattering_covariance`.

    Parameters
    ----------
    nr, nt : antennas, users
    angle_std_deg : ``sigma_phi`` in degrees
    spacing : antenna spacing in wavelengths
    sector_deg : width of the sector the users are dropped in
    angles_deg : a fixed drop (nominal user angles in degrees); otherwise drawn from ``seed``
    seed : the drop when ``angles_deg`` is not given: drop ``k`` is ``seed = k`` (the [HM] paper's
        ten drops are seeds 0..9); :attr:`drop_angles_deg` records the angles
    redrop : draw new user angles for every sample instead of a fixed drop (uniform on a grid of
        ``REDROP_GRID_DEG`` over the sector: the matrix square roots of the grid are computed once,
        so a training batch of thousands of new drops costs one gather)
    rotation_deg : mobility, [HM] Fig. 6a: every user moved by this angle around the array
    displacement_m : mobility, [HM] Fig. 6b: every user moved this far in a random direction
        (from ``displacement_seed``), starting ``distance_m`` from the array; its new nominal
        angle is where it now lies
    """

    def __init__(self, nr: int, nt: int, angle_std_deg: float = 10.0, spacing: float = 0.5,
                 sector_deg: float = 120.0, angles_deg=None, seed: int = 0, redrop: bool = False,
                 rotation_deg: float = 0.0, displacement_m: float = 0.0, distance_m: float = 250.0,
                 displacement_seed: int = 0):
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
        self.drop_angles_deg = [math.degrees(float(a)) for a in angles]
        if rotation_deg:
            angles = rotated_drop(angles, math.radians(rotation_deg))
        if displacement_m:
            angles = displaced_drop(angles, distance_m, displacement_m, torch.Generator().manual_seed(displacement_seed))
        self.set_drop(angles)

    def drop(self, generator=None) -> torch.Tensor:
        """Nominal user angles ``(Nt,)`` float64 in radians, uniform in ``[-sector/2, sector/2]``."""
        return (torch.rand(self.nt, generator=generator, dtype=torch.float64) - 0.5) * self.sector

    def set_drop(self, angles_rad: torch.Tensor) -> None:
        """Use the nominal user angles ``angles_rad (Nt,)`` (radians)."""
        self.angles = angles_rad
        self.user_covariances = torch.stack(
            [local_scattering_covariance(self.nr, float(a), self.angle_std, self.spacing) for a in angles_rad])
        self._sqrt = hermitian_sqrt(self.user_covariances).to(torch.complex64)  # (Nt, Nr, Nr)

    def sample(self, batch, generator=None):
        e = crandn((batch, self.nt, self.nr, 1), generator)
        if self.redrop:
            grid = self._redrop_sqrt()
            u = torch.rand(batch, self.nt, generator=generator, dtype=torch.float64)
            sq = grid[(u * (grid.shape[0] - 1)).round().long()]  # (batch, Nt, Nr, Nr)
        else:
            sq = self._sqrt
        h = (sq @ e).squeeze(-1)  # (batch, Nt, Nr)
        return h.transpose(-1, -2).contiguous()

    def _redrop_sqrt(self) -> torch.Tensor:
        """Square roots of the covariances at every grid angle of the sector, ``(G, Nr, Nr)``."""
        if getattr(self, "_grid_sqrt", None) is None:
            n = int(round(math.degrees(self.sector) / REDROP_GRID_DEG)) + 1
            angles = torch.linspace(-0.5, 0.5, n, dtype=torch.float64) * self.sector
            covs = _local_scattering_covariances(self.nr, angles, self.angle_std, self.spacing)
            self._grid_sqrt = hermitian_sqrt(covs).to(torch.complex64)
        return self._grid_sqrt

    @property
    def mean_energy(self) -> float:
        """``E||H||_F^2 = Nr Nt``: every user has unit gain on every antenna (``[C_u]_{mm} = 1``),
        for a fixed drop and a mix of drops alike."""
        return float(self.nr * self.nt)

    def covariance(self):
        if self.redrop:
            raise NotImplementedError("covariance of a fixed drop only; redrop=True mixes drops")
        return torch.block_diag(*self.user_covariances)


class TimeVaryingCorrelated(ChannelModel):
    """Spatially correlated channel evolving across blocks (stands in for COST2100, which is
    not available here: it reproduces spatial correlation and block-to-block variation, not
    COST2100's cluster geometry).

    ``H[t] = R_r^{1/2} G[t] R_t^{1/2} diag(sqrt(s_k[t]))`` with

    * ``G[t] = rho_time G[t-1] + sqrt(1 - rho_time^2) W[t]`` (Gauss-Markov small-scale fading,
      ``rho_time = J0(2 pi f_D T_block)``, see :func:`jakes_rho`);
    * per-user shadowing ``10 log10 s_k[t]``: an AR(1) process in dB with standard deviation
      ``shadowing_std_db`` and lag-one correlation ``shadowing_rho``, normalised so that
      ``E[s_k] = 1`` (the marginal covariance of ``vec H`` stays ``R_t^T kron R_r``).

    :meth:`sample` draws independent blocks from the stationary distribution; a
    :meth:`block_process` (and :meth:`sequence`) evolves the state from block to block.

    Parameters
    ----------
    nr, nt : antennas, users
    rho_rx, rho_tx : spatial correlation as in :class:`Kronecker`
    rho_time : lag-one correlation of the small-scale fading between blocks, in ``[0, 1]``
    shadowing_std_db, shadowing_rho : standard deviation (dB) and lag-one correlation of the shadowing
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
        """Stationary state ``(G (Nr, Nt), shadowing dB (1, Nt))`` of the first block."""
        g = crandn((self.nr, self.nt), generator)
        x_db = self.shadowing_std_db * torch.randn(1, self.nt, generator=generator)
        return g, x_db

    def advance(self, state, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """State of the next block (Gauss-Markov fading, AR(1) shadowing in dB)."""
        g, x_db = state
        a, b = self.rho_time, math.sqrt(1 - self.rho_time**2)
        sa, sb = self.shadowing_rho, math.sqrt(1 - self.shadowing_rho**2)
        g = a * g + b * crandn((self.nr, self.nt), generator)
        x_db = sa * x_db + sb * self.shadowing_std_db * torch.randn(1, self.nt, generator=generator)
        return g, x_db

    def matrix(self, state) -> torch.Tensor:
        """Channel matrix ``(Nr, Nt)`` complex64 of a state."""
        g, x_db = state
        return self.spatial.sqrt_rx @ g @ self.spatial.sqrt_tx * self._shadow_gain(x_db).sqrt()

    def next_block(self, index, state, generator):
        state = self.initial_state(generator) if state is None else self.advance(state, generator)
        return self.matrix(state), state

    def sequence(self, n_blocks: int, generator=None) -> torch.Tensor:
        """A run of ``n_blocks`` consecutive blocks, ``(n_blocks, Nr, Nt)`` complex64."""
        state, out = None, []
        for t in range(n_blocks):
            h, state = self.next_block(t, state, generator)
            out.append(h)
        return torch.stack(out)

    def covariance(self):
        return self.spatial.covariance()


def jakes_rho(doppler_hz: float, block_duration_s: float) -> float:
    """Lag-one correlation ``J0(2 pi f_D T)`` of Jakes' model (series expansion of ``J0``).

    Parameters
    ----------
    doppler_hz : maximum Doppler frequency ``f_D``
    block_duration_s : block duration ``T``
    """
    x = 2 * math.pi * doppler_hz * block_duration_s
    term, total, k = 1.0, 1.0, 0
    while abs(term) > 1e-12 and k < 200:
        k += 1
        term *= -(x / 2) ** 2 / (k * k)
        total += term
    return total

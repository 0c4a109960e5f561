"""Channel statistics of a training set and a monitor of how far a receiver's channels drift
from them (site adaptation, ``docs/architecture.md``).

A model is trained for a site's channel statistics; when the users move, the statistics change
and the model may be worse than MMSE. The receiver estimates every frame's channel anyway, so
it can compare their running statistics with the ones stored in the model's bundle at training
time (``training.channel_stats``, written by the lab's pipelines):

* the receive spatial covariance ``R = E[H H^H] / Nt`` (``Nr x Nr``), compared by Herdin's
  correlation matrix distance ``d = 1 - tr(R1 R2) / (||R1||_F ||R2||_F)`` in ``[0, 1]``
  (0: the same spatial structure up to scale; M. Herdin et al., VTC 2005);
* the per-user power profile ``p_k = E||h_k||^2 / Nr``, compared as the largest per-user
  difference in dB after removing the common level (a user-selection or near-far change).
"""

from __future__ import annotations

import datetime as _dt
import math

import torch

STATS_VERSION = 1


def spatial_covariance(h: torch.Tensor) -> torch.Tensor:
    """Receive spatial covariance ``E[H H^H] / Nt`` of a set of channels ``(n, Nr, Nt)`` (complex128)."""
    h = h.to(torch.complex128)
    return (h @ h.mH).mean(0) / h.shape[-1]


def correlation_matrix_distance(r1: torch.Tensor, r2: torch.Tensor) -> float:
    """Herdin's correlation matrix distance ``1 - tr(R1 R2) / (||R1||_F ||R2||_F)`` in [0, 1]."""
    num = torch.trace(r1 @ r2).real
    return float(1.0 - num / (torch.linalg.norm(r1) * torch.linalg.norm(r2)))


def user_power(h: torch.Tensor) -> torch.Tensor:
    """Mean power per user ``E||h_k||^2 / Nr`` of channels ``(n, Nr, Nt)`` -> ``(Nt,)`` float64."""
    return h.to(torch.complex128).abs().square().mean((0, 1))


def channel_statistics(h: torch.Tensor) -> dict:
    """The JSON statistics of a training set of channels ``(n, Nr, Nt)`` that a bundle stores."""
    r = spatial_covariance(h)
    return {"version": STATS_VERSION, "frames": int(h.shape[0]), "nr": int(h.shape[1]), "nt": int(h.shape[2]),
            "rx_covariance_re": r.real.tolist(), "rx_covariance_im": r.imag.tolist(),
            "user_power": user_power(h).tolist()}


def model_statistics(channel, n: int = 2000, seed: int = 0) -> dict:
    """:func:`channel_statistics` of ``n`` channels drawn from a channel model (seeded)."""
    return channel_statistics(channel.sample(n, torch.Generator().manual_seed(seed)))


def parse_statistics(stats, nr: int, nt: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(R (Nr, Nr) complex128, p (Nt,) float64)`` from a bundle's ``channel_stats``;
    ``ValueError`` (one line) when a field is missing, of the wrong size, non-finite, or ``R`` is
    not a Hermitian matrix with a positive trace."""
    if not isinstance(stats, dict) or stats.get("version") != STATS_VERSION:
        raise ValueError(f"channel_stats must be an object of version {STATS_VERSION}")
    if (stats.get("nr"), stats.get("nt")) != (nr, nt):
        raise ValueError(f"channel_stats are for {stats.get('nr')}x{stats.get('nt')}, the model is {nr}x{nt}")
    try:
        re_ = torch.tensor(stats["rx_covariance_re"], dtype=torch.float64)
        im = torch.tensor(stats["rx_covariance_im"], dtype=torch.float64)
        p = torch.tensor(stats["user_power"], dtype=torch.float64)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"channel_stats: {type(e).__name__} {e}") from None
    if re_.shape != (nr, nr) or im.shape != (nr, nr) or p.shape != (nt,):
        raise ValueError(f"channel_stats: covariance {tuple(re_.shape)} / {tuple(im.shape)} and power {tuple(p.shape)} "
                         f"do not fit {nr}x{nt}")
    r = torch.complex(re_, im)
    if not (bool(torch.isfinite(re_).all()) and bool(torch.isfinite(im).all()) and bool(torch.isfinite(p).all())):
        raise ValueError("channel_stats hold non-finite values")
    if not torch.allclose(r, r.mH, atol=1e-6 * float(r.abs().max())) or not float(torch.diagonal(r).real.sum()) > 0:
        raise ValueError("channel_stats: the covariance is not Hermitian with a positive trace")
    if not bool((p >= 0).all()):
        raise ValueError("channel_stats: negative user power")
    return r, p


REAL_CHANNEL_TOLERANCE = 0.05  # imaginary energy share above which a "real" channel estimate is complex


def imaginary_fraction(h: torch.Tensor) -> float:
    """Share of a channel estimate's energy in its imaginary part, ``||Im H||^2 / ||H||^2``: about
    0 on the real-valued channels of the DeepSIC paper, about 0.5 on complex fading. A model
    trained on real channels (``FrameDetector.real_channels_only``) is warned about above
    :data:`REAL_CHANNEL_TOLERANCE`."""
    total = float(h.abs().square().sum())
    return float(h.imag.square().sum()) / total if total > 0 else 0.0


class DriftMonitor:
    """Running channel statistics of a receiver against a model's training statistics.

    Every accepted frame estimate updates exponentially weighted averages of ``R`` and ``p`` with
    memory ``window`` frames. :attr:`distance` is the correlation matrix distance to the
    reference, :attr:`power_db` the largest per-user power change in dB (common level removed).
    :meth:`update` returns ``"drift"`` when either crosses its threshold (``threshold``,
    ``power_threshold_db``) after at least ``window`` frames, ``"back"`` when both fall below
    80 % of them again, else ``None``: one event per crossing.
    """

    def __init__(self, reference: tuple[torch.Tensor, torch.Tensor], window: int = 256, threshold: float = 0.2,
                 power_threshold_db: float = 6.0):
        if window < 1 or not 0 < threshold < 1 or not power_threshold_db > 0:
            raise ValueError(f"drift monitor: window >= 1, 0 < threshold < 1 and power threshold > 0 dB needed, got "
                             f"{window}, {threshold}, {power_threshold_db}")
        self.r_ref, self.p_ref = reference
        self.window, self.threshold, self.power_threshold_db = int(window), float(threshold), float(power_threshold_db)
        self.r = torch.zeros_like(self.r_ref)
        self.p = torch.zeros_like(self.p_ref)
        self.frames = 0
        self.drifting = False
        self.distance = math.nan
        self.power_db = math.nan

    def update(self, h: torch.Tensor) -> str | None:
        """One frame's ``(Nr, Nt)`` channel estimate."""
        h = h.to(torch.complex128)
        self.frames += 1
        a = max(1.0 / self.window, 1.0 / self.frames)  # a plain mean until the window is full
        self.r = (1 - a) * self.r + a * (h @ h.mH) / h.shape[-1]
        self.p = (1 - a) * self.p + a * h.abs().square().mean(0)
        self.distance = correlation_matrix_distance(self.r, self.r_ref)
        self.power_db = self._power_change_db()
        if self.frames < self.window:
            return None
        over = self.distance > self.threshold or self.power_db > self.power_threshold_db
        under = self.distance < 0.8 * self.threshold and self.power_db < 0.8 * self.power_threshold_db
        if over and not self.drifting:
            self.drifting = True
            return "drift"
        if under and self.drifting:
            self.drifting = False
            return "back"
        return None

    def _power_change_db(self) -> float:
        floor = 1e-12 * float(self.p_ref.max().clamp(min=1e-300))
        d = 10 * torch.log10(self.p.clamp(min=floor) / self.p_ref.clamp(min=floor))
        return float((d - d.mean()).abs().max())

    def state(self) -> dict:
        return {"frames": self.frames, "distance": self.distance, "power_change_db": self.power_db,
                "drifting": self.drifting, "threshold": self.threshold,
                "power_threshold_db": self.power_threshold_db, "window": self.window}


class DriftWatch:
    """The detector's drift and channel-family glue, per model in force (no GNU Radio).

    At a swap, :meth:`new_model` builds a :class:`DriftMonitor` against the model's training
    statistics (``training.channel_stats`` in its bundle; none: no monitor; malformed: a
    ``drift-monitor`` ``off`` event) and arms the real-channel check once. Every accepted frame
    estimate goes through :meth:`frame`: the monitor's ``drift``/``drift-back`` events, and for a
    model trained on real-valued channels (``real_channels_only``) one ``channel-family`` warning
    when the estimate is complex. Neither may ever cost a frame its detection: a failure turns
    the monitor (or the check) off for this model and is returned as a ``problem``.

    Events (dicts with ``event`` and ``time``, UTC ISO 8601) go to ``emit``;
    warnings to ``warn(text)``; problems (``kind``, text: logged once, counted) to ``problem``.
    ``nt`` is the receiver's stream count: a hypernetwork's statistics cover its ``K_max`` users,
    of which the flowgraph's streams are the first ``nt``.
    """

    def __init__(self, nt: int, window: int = 256, threshold: float = 0.2, *, emit=None, warn=None, problem=None):
        if window < 1 or not 0 < threshold < 1:
            raise ValueError(f"drift_window must be >= 1 and 0 < drift_threshold < 1, got {window}, {threshold}")
        self.nt, self.window, self.threshold = int(nt), int(window), float(threshold)
        self._publish = emit or (lambda info: None)
        self._warn = warn or (lambda text: None)
        self._problem = problem or (lambda kind, text: None)
        self.monitor: DriftMonitor | None = None
        self.events: list[dict] = []
        self._model = None
        self._family_unchecked = False

    def _emit(self, info: dict) -> dict:
        info["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
        self._publish(info)
        return info

    def state(self) -> dict | None:
        """The monitor's state (frames, distance, power change, drifting), or ``None`` without one."""
        m = self.monitor
        return None if m is None else m.state()

    def new_model(self, det) -> None:
        """A model came into force: a monitor against its training statistics, the family check armed."""
        self._model, self._family_unchecked, self.monitor = det, True, None
        bundle = getattr(det, "bundle", None)
        stats = ((bundle.manifest.get("training") or {}).get("channel_stats") if bundle is not None else None)
        if stats is None:
            return
        try:
            r, p = parse_statistics(stats, det.nr, det.nt)
            self.monitor = DriftMonitor((r, p[:self.nt]), self.window, self.threshold)
        except ValueError as exc:
            self._problem("bad-channel-stats", f"{det.describe()['path']}: {exc}: the drift monitor is off for "
                                               "this model")
            self._emit({"event": "drift-monitor", "state": "off", "reason": str(exc)})

    def frame(self, h: torch.Tensor, **where) -> None:
        """An accepted frame estimate ``h (Nr, Nt)``; ``where`` (frame, offset) joins the events."""
        if self.monitor is not None:
            self._update_monitor(h, where)
        if self._family_unchecked and self._model is not None:
            try:
                self._check_family(h, where)
            except Exception as exc:  # noqa: BLE001 - a check must never cost a frame its detection
                self._family_unchecked = False
                self._problem("family-check-failed", f"the channel-family check failed ({type(exc).__name__}: {exc})")

    def _update_monitor(self, h: torch.Tensor, where: dict) -> None:
        try:
            event = self.monitor.update(h)
        except Exception as exc:  # noqa: BLE001 - the monitor must never cost a frame its detection
            self._problem("drift-monitor-failed", f"the drift monitor failed ({type(exc).__name__}: {exc}); it is "
                                                  "off for this model")
            self._emit({"event": "drift-monitor", "state": "off", "reason": str(exc)})
            self.monitor = None
            return
        if event is None:
            return
        info = {"event": "drift" if event == "drift" else "drift-back", **self.monitor.state(), **where}
        if event == "drift":
            self._warn(f"the channels drifted from the model's training statistics (covariance distance "
                       f"{info['distance']:.3f}, user power change {info['power_change_db']:.1f} dB over "
                       f"{self.window} frames): consider re-training on this site's channels")
        self.events.append(self._emit(info))

    def _check_family(self, h: torch.Tensor, where: dict) -> None:
        det = self._model
        if not det.real_channels_only:
            self._family_unchecked = False
            return
        frac = imaginary_fraction(h)
        if frac <= REAL_CHANNEL_TOLERANCE:
            return
        self._family_unchecked = False
        d = det.describe()
        channel = ((det.bundle.system.get("channel") or {}).get("name") if det.bundle is not None else None) or "?"
        msg = (f"model {d['path'] or d['architecture']} was trained for real-valued channels ({channel}) and reads "
               f"Re y only, but this channel estimate is complex ({100 * frac:.0f} % of its energy imaginary): "
               "expect an SER near 0.5; use a hypernet-deepsic-complex model")
        self._warn(msg)
        self._emit({"event": "channel-family", "trained_for": "real", "imaginary_fraction": frac, **where,
                    "message": msg})

"""What every run-time detector is: a :class:`FrameDetector` built from a bundle, checked against
the :class:`SystemSpec` of the flowgraph or simulation that uses it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..bundle import FINGERPRINTERS, Bundle, BundleError, ModelCodec, Param
from ..constellation import Constellation
from ..envelope import OperatingEnvelope
from .classical import linear_detect


@dataclass(frozen=True)
class SystemSpec:
    """What the receiver provides: ``nr`` receive streams, ``nt`` transmit streams (users), modulation."""

    nr: int
    nt: int
    modulation: str

    @classmethod
    def of_bundle(cls, system: dict) -> "SystemSpec":
        """The system a bundle's validated ``system`` section was trained for."""
        return cls(system["nr"], system["nt"], system["modulation"])


class FrameDetector:
    """Base class of the run-time neural detectors.

    A detector detects whole frames: ``y (S, Nr, n)`` received data vectors, the frames' channel
    estimates ``h (S, Nr, Nt)`` and noise variances ``(S,)`` (complex, per antenna) ->
    ``(S, Nt, n)`` complex symbol estimates. Per-frame work (SDNet's constant rows,
    hypernetwork-generated DeepSIC modules) is done once per frame; all of a frame's vectors go
    through in one batched pass.

    A family subclasses it with

    * ``codec`` -- the :class:`~neuralmimo.bundle.ModelCodec` of its bundles;
    * ``serves_fewer_users`` -- a receiver with fewer streams than the bundle's ``nt`` may use it
      (a hypernetwork's ``nt`` is its ``K_max``);
    * ``options`` -- run-time options (name -> :class:`~neuralmimo.bundle.Param`), set with
      :meth:`configure` (``neuralmimo sim --detectors PATH@name=value``);
    * :meth:`detect_with_llr` and, optionally, :meth:`flops_per_vector`.

    ``hyperparameters`` are the validated ones of the bundle (or of an in-memory model).

    Every detector also has the run-time option ``fallback`` (default true): where the bundle
    carries an operating envelope (:mod:`neuralmimo.envelope`), :meth:`detect_with_fallback`
    detects the frames outside it with MMSE. :meth:`detect` and :meth:`detect_with_llr` are
    always the model alone.
    """

    codec: ModelCodec
    serves_fewer_users = False
    options: dict[str, Param] = {}

    def __init_subclass__(cls, **kwargs):
        """A family's detector class registers its behavioural fingerprint with the bundle codec
        (:data:`neuralmimo.bundle.FINGERPRINTERS`): ``save_model`` writes it for every bundle of
        its architecture, wherever the family is saved from."""
        super().__init_subclass__(**kwargs)
        if "codec" in cls.__dict__:
            FINGERPRINTERS[cls.codec.architecture] = cls._fingerprint_of

    @classmethod
    def _fingerprint_of(cls, model: torch.nn.Module, hyperparameters: dict, system: dict) -> list[float]:
        was_training = model.training
        try:
            det = cls(model.eval(), hyperparameters, SystemSpec.of_bundle(system))
            return det.probe_output()
        finally:
            model.train(was_training)

    @property
    def real_channels_only(self) -> bool:
        """The model was trained for real-valued channels (it reads ``Re y`` only): on a complex
        channel its output is meaningless, and the neural detector block warns once."""
        return bool(self.hyperparameters.get("real_channel", False))

    def __init__(self, model: torch.nn.Module, hyperparameters: dict, system: SystemSpec, bundle: Bundle | None = None):
        self.model, self.hyperparameters, self.bundle = model, hyperparameters, bundle
        self.system = system
        self.nr, self.nt = system.nr, system.nt
        self.constellation = Constellation(system.modulation)
        self.option_values = {name: hyperparameters.get(name) for name in self.options}
        self.option_values["fallback"] = True
        section = None if bundle is None else bundle.manifest.get("envelope")
        self.envelope = None if section is None else OperatingEnvelope(section, bundle.system["n_pilots"])

    @property
    def architecture(self) -> str:
        return self.codec.architecture

    @property
    def sha256(self) -> str | None:
        return None if self.bundle is None else self.bundle.sha256

    def _where(self) -> str:
        return str(self.bundle.path) if self.bundle is not None else f"in-memory {self.architecture}"

    def check_system(self, system: SystemSpec) -> None:
        """Refuse (:class:`~neuralmimo.bundle.BundleError`) a receiver this model was not trained for."""
        if system.modulation.lower().replace("-", "") != self.constellation.name:
            raise BundleError(f"{self._where()}: model is for {self.constellation.name}, the flowgraph uses "
                              f"{system.modulation}")
        if system.nr != self.nr:
            raise BundleError(f"{self._where()}: model is for Nr = {self.nr} receive streams, the flowgraph has "
                              f"{system.nr}")
        if self.serves_fewer_users and system.nt > self.nt:
            raise BundleError(f"{self._where()}: model serves up to K_max = {self.nt} users, the flowgraph has "
                              f"Nt = {system.nt}")
        if not self.serves_fewer_users and system.nt != self.nt:
            raise BundleError(f"{self._where()}: model is for Nt = {self.nt} streams, the flowgraph has {system.nt}")

    FALLBACK_OPTION = Param("bool")

    def configure(self, **options) -> None:
        """Set run-time options; ``ValueError`` names an unknown option or a bad value."""
        for name, value in options.items():
            if name == "fallback":
                self.option_values[name] = self.FALLBACK_OPTION.check(name, value)
                continue
            if name not in self.options:
                raise ValueError(f"{self.architecture} has no run-time option {name!r}; it has "
                                 f"{sorted([*self.options, 'fallback'])}")
            self.option_values[name] = self.options[name].check(name, value)

    def detect(self, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor,
               n_users: list[int] | None = None) -> torch.Tensor:
        """Symbol estimates ``(S, Nt, n)`` complex64, see the class docstring."""
        return self.detect_with_llr(y, h, noise_var, n_users, llr=False)[0]

    def detect_with_llr(self, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor,
                        n_users: list[int] | None = None, llr: bool = True):
        """``(x (S, Nt, n) complex, llr (S, n, Nt, bits_per_symbol) or None)``; positive LLRs
        favour bit 1, absent users' LLRs are 0. ``n_users`` (default: every stream of ``h``)
        gives each frame's active users where the family supports fewer."""
        raise NotImplementedError

    @property
    def fallback(self) -> bool:
        """MMSE detects the frames outside the envelope (the ``fallback`` option, and an envelope)."""
        return bool(self.option_values["fallback"]) and self.envelope is not None

    def outside_envelope(self, h: torch.Tensor, noise_var: torch.Tensor,
                         n_users: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(outside (S,) bool, snr_db (S,))``: the frames :meth:`detect_with_fallback` hands to
        MMSE (none without an envelope or with ``fallback`` off; ``snr_db`` NaN then) and each
        frame's estimated SNR in the bundle's convention (:meth:`OperatingEnvelope.frame_snr_db`)."""
        s = h.shape[0]
        if not self.fallback:
            return torch.zeros(s, dtype=torch.bool), torch.full((s,), float("nan"), dtype=torch.float64)
        inside, snr = self.envelope.check(h, noise_var, n_users if n_users is not None else [h.shape[2]] * s)
        return ~inside, snr

    def outside_envelope_one(self, h: torch.Tensor, noise_var: float, n_users: int) -> tuple[bool, float]:
        """:meth:`outside_envelope` for one frame's ``h (Nr, Nt)``: ``(outside, snr_db)``, in
        plain floats (:meth:`OperatingEnvelope.check_one`)."""
        if not self.fallback:
            return False, float("nan")
        energy = float(torch.linalg.vector_norm(h[:, :n_users])) ** 2
        inside, snr = self.envelope.check_one(energy, h.shape[0], float(noise_var), int(n_users))
        return not inside, snr

    def detect_mmse(self, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor,
                    n_users: list[int] | None = None, llr: bool = True):
        """What the fallback detects with: unbiased MMSE on each frame's active users (the first
        ``n_users[s]`` columns of ``h``), absent users 0; max-log LLRs with MMSE's effective
        noise variance (absent users' LLRs 0). ``(x (S, h's streams, n), llr (S, n, h's
        streams, bits_per_symbol) or None)``, as :meth:`detect_with_llr` gives them."""
        s, _, n = y.shape
        const = self.constellation
        streams = h.shape[2]  # the receiver's streams (a hypernetwork's may be fewer than its K_max)
        x = torch.zeros(s, streams, n, dtype=torch.complex64)
        bits = torch.zeros(s, n, streams, const.bits_per_symbol) if llr else None
        users = [h.shape[2]] * s if n_users is None else [int(k) for k in n_users]
        for k in sorted(set(users)):
            rows = torch.tensor([i for i, v in enumerate(users) if v == k])
            xk, eff = linear_detect(y[rows], h[rows, :, :k], noise_var.reshape(s)[rows].double(), "mmse", const)
            x[rows, :k] = xk.to(torch.complex64)
            if bits is not None:
                bits[rows, :, :k] = const.llr_maxlog(xk.transpose(1, 2), eff.clamp(min=1e-12)[:, None, :]).float()
        return x, bits

    def detect_with_fallback(self, y: torch.Tensor, h: torch.Tensor, noise_var: torch.Tensor,
                             n_users: list[int] | None = None, llr: bool = True):
        """``(x, llr, outside (S,) bool)``: the model on the frames inside the bundle's envelope,
        :meth:`detect_mmse` on the others (:meth:`outside_envelope`). Inside the envelope this
        is :meth:`detect_with_llr` plus one channel-energy sum per frame."""
        outside, _ = self.outside_envelope(h, noise_var, n_users)
        if not bool(outside.any()):
            return (*self.detect_with_llr(y, h, noise_var, n_users, llr=llr), outside)
        if bool(outside.all()):
            return (*self.detect_mmse(y, h, noise_var, n_users, llr=llr), outside)
        inner = torch.nonzero(~outside).flatten()
        outer = torch.nonzero(outside).flatten()
        sub = (lambda idx: None if n_users is None else [n_users[i] for i in idx.tolist()])
        x_in, l_in = self.detect_with_llr(y[inner], h[inner], noise_var.reshape(-1)[inner], sub(inner), llr=llr)
        x_out, l_out = self.detect_mmse(y[outer], h[outer], noise_var.reshape(-1)[outer], sub(outer), llr=llr)
        x = torch.empty((y.shape[0], *x_in.shape[1:]), dtype=x_in.dtype)
        x[inner], x[outer] = x_in, x_out.to(x_in.dtype)
        bits = None
        if llr and l_in is not None:
            bits = torch.empty((y.shape[0], *l_in.shape[1:]), dtype=l_in.dtype)
            bits[inner], bits[outer] = l_in, l_out.to(l_in.dtype)
        return x, bits, outside

    def flops_per_vector(self, vectors_per_frame: int, n_users: int | None = None) -> float | None:
        """Floating-point operations per detected vector (2 x multiply-accumulates, per-frame work
        shared over ``vectors_per_frame``; ``n_users`` active, default ``Nt``), or ``None`` if the
        family does not count them."""
        return None

    def smoke_test(self) -> None:
        """Run one dummy frame; :class:`~neuralmimo.bundle.BundleError` if the model fails or
        produces a wrong shape or NaN/Inf (a bundle is reported loaded only after this)."""
        g = torch.Generator().manual_seed(0)
        h = torch.randn(1, self.nr, self.nt, dtype=torch.complex64, generator=g)
        y = h @ self.constellation.symbols(self.constellation.random_indices((1, self.nt, 4), g))
        try:
            x, llr = self.detect_with_llr(y, h, torch.ones(1), llr=True)
        except Exception as e:  # noqa: BLE001 - any failure of a dummy frame refuses the model
            raise BundleError(f"{self._where()}: the model fails on a dummy frame ({type(e).__name__}: {e})") from None
        if tuple(x.shape) != (1, self.nt, 4) or not bool(torch.isfinite(x).all()) or \
                (llr is not None and not bool(torch.isfinite(llr).all())):
            raise BundleError(f"{self._where()}: the model's output on a dummy frame is malformed "
                              f"(shape {tuple(x.shape)}, finite {bool(torch.isfinite(x).all())})")

    PROBE_FRAMES, PROBE_VECTORS, PROBE_SEED, PROBE_NOISE = 2, 8, 20260, 0.1

    def probe_output(self) -> list[float]:
        """The detector's output on the fixed probe (``PROBE_FRAMES`` frames of ``PROBE_VECTORS``
        vectors through seeded Gaussian channels, every stream active, noise variance
        ``PROBE_NOISE``, perfect CSI): the real and imaginary parts of ``x (S, Nt, n)``, in
        order, rounded to 7 significant digits -- the bundle's behavioural fingerprint."""
        g = torch.Generator().manual_seed(self.PROBE_SEED)
        s, n = self.PROBE_FRAMES, self.PROBE_VECTORS
        h = torch.randn(s, self.nr, self.nt, dtype=torch.complex64, generator=g)
        x = self.constellation.symbols(self.constellation.random_indices((s, self.nt, n), g))
        noise = torch.randn(s, self.nr, n, dtype=torch.complex64, generator=g) * self.PROBE_NOISE ** 0.5
        with torch.inference_mode():
            out = self.detect(h @ x + noise, h, torch.full((s,), self.PROBE_NOISE))
        return [float(f"{v:.7g}") for v in torch.view_as_real(out.to(torch.complex64)).reshape(-1).tolist()]

    def check_fingerprint(self) -> str:
        """Compare the probe output with the bundle's fingerprint: ``"checked"``, or ``"absent"``
        for a bundle saved before fingerprints; :class:`~neuralmimo.bundle.BundleError` when they
        differ beyond float32 rounding across machines (``rtol 1e-3`` of the output's scale)."""
        fp = None if self.bundle is None else self.bundle.manifest.get("fingerprint")
        if fp is None:
            return "absent"
        stored = torch.tensor(fp["output"], dtype=torch.float64)
        got = torch.tensor(self.probe_output(), dtype=torch.float64)
        scale = float(stored.abs().max()) if stored.numel() else 0.0
        if got.shape != stored.shape or not bool(torch.allclose(got, stored, rtol=1e-3, atol=1e-3 * max(scale, 1e-6))):
            diff = float((got - stored).abs().max()) if got.shape == stored.shape else float("nan")
            raise BundleError(f"{self._where()}: the model does not behave as the manifest's fingerprint says (largest "
                              f"difference {diff:.3g} on the probe): its hyper-parameters or system do not describe "
                              "these weights")
        return "checked"

    def describe(self) -> dict:
        return {"architecture": self.architecture, "sha256": self.sha256, "fingerprint": getattr(self, "fingerprint", None),
                "envelope": None if self.envelope is None else self.envelope.describe(),
                "path": None if self.bundle is None else str(self.bundle.path), "nr": self.nr, "nt": self.nt,
                "modulation": self.constellation.name, "options": dict(self.option_values)}

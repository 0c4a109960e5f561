"""Classical MIMO detectors: ZF, MMSE, exact ML and K-best, batched in torch.

Shapes used throughout: channel ``h (..., Nr, Nt)``, received vectors as columns
``y (..., Nr, N)`` (a frame's ``N`` data vectors share one channel), outputs ``(..., Nt, N)``.
Symbols have unit average energy; ``noise_var`` is the complex noise variance per receive
antenna.

Linear detectors are evaluated in the complex domain, which is algebraically identical to
[LG] eqs. (9) and (11) in the real-valued model of [LG] eq. (2) (per real
dimension both the symbol energy and the noise variance halve, so their ratio is unchanged).
For a real constellation (BPSK) the detectors instead use the real-valued model restricted to
real symbols, ``[Re y; Im y] = [Re H; Im H] x + n`` (widely-linear processing): that is the
MMSE/ZF solution for real symbols and avoids wasting half of the receive dimensions.

MMSE outputs are *unbiased* (each stream divided by its gain ``mu_k = (W H)_kk``) so that hard
decisions on 16-QAM are not pulled towards the origin; the effective noise variance of stream
``k`` is then ``(1 - mu_k) / mu_k``. ZF's is ``sigma^2 [(H^H H)^{-1}]_kk``.
"""

from __future__ import annotations

import torch

from ..constellation import Constellation
from ..receiver.estimation import frame_scale
from ..realvalued import mat_to_real

ML_MAX_CANDIDATES = 1 << 16  # BPSK/QPSK up to 16 real dimensions; 16-QAM up to 4 streams


def _stack_real(h: torch.Tensor, y: torch.Tensor):
    """Widely-linear model for real symbols: ``[Re h; Im h]``, ``[Re y; Im y]``."""
    return torch.cat([h.real, h.imag], -2), torch.cat([y.real, y.imag], -2)


def linear_detect(y: torch.Tensor, h: torch.Tensor, noise_var, kind: str,
                  constellation: Constellation) -> tuple[torch.Tensor, torch.Tensor]:
    """ZF ([LG] eq. (9)) or unbiased MMSE ([LG] eq. (11)) equalisation.

    Parameters
    ----------
    y : ``(..., Nr, N)`` complex; h : ``(..., Nr, Nt)`` complex
    noise_var : float or ``(...)`` tensor, complex noise variance per receive antenna (MMSE
        uses it; ZF uses it only for the effective noise variance it reports)
    kind : ``"zf"`` or ``"mmse"``

    Returns
    -------
    x_hat : ``(..., Nt, N)`` complex equalised symbols
    eff_var : ``(..., Nt)`` effective complex noise variance per stream (for LLRs: pass to
        :meth:`Constellation.llr_maxlog`)

    Computed as ``x = G^{-1} (H^H y)`` with ``G = H^H H (+ sigma^2 I)`` through one Cholesky
    factorisation per channel; ``diag(G^{-1})`` gives both ZF's noise enhancement and MMSE's
    stream gain ``mu_k = 1 - sigma^2 [G^{-1}]_kk``. A rank-deficient ``H`` (ZF undefined) falls
    back to the pseudo-inverse.
    """
    if kind not in ("zf", "mmse"):
        raise ValueError(f"unknown linear detector {kind!r}")
    nt = h.shape[-1]
    # scale-free: every frame divided by a power of two near its channel's peak (exact), so any
    # finite input scale gives the same decisions (frame_scale)
    scale = frame_scale(h)
    h, y = h / scale.to(h.real.dtype), y / scale.to(h.real.dtype)
    nv = (torch.as_tensor(noise_var, dtype=torch.float64, device=h.device) / scale[..., 0, 0] ** 2).to(h.real.dtype)
    if constellation.is_real:
        a, b = _stack_real(h, y)
        nv_dim = nv / 2  # per real dimension; BPSK puts all symbol energy in the real part
    else:
        a, b = h, y
        nv_dim = nv
    nv_mat = nv_dim.reshape(*nv_dim.shape, 1, 1) if nv_dim.dim() else nv_dim
    eye = torch.eye(nt, dtype=a.dtype, device=a.device)
    gram = torch.einsum("...ri,...rj->...ij", a.conj(), a)
    if kind == "mmse":
        gram = gram + nv_mat * eye
    z = a.mH @ b
    chol, info = torch.linalg.cholesky_ex(gram)
    if bool((info != 0).any()):
        g_inv = torch.linalg.pinv(gram, hermitian=True)
        x = g_inv @ z
        ginv_diag = torch.diagonal(g_inv, dim1=-2, dim2=-1).real
    else:
        x = torch.cholesky_solve(z, chol)
        l_inv = torch.linalg.solve_triangular(chol, eye.expand_as(chol), upper=False)
        ginv_diag = l_inv.abs().square().sum(-2)
    nv_vec = nv_dim.unsqueeze(-1) if nv_dim.dim() else nv_dim
    if kind == "zf":
        eff = ginv_diag * nv_vec
    else:
        mu = (1.0 - nv_vec * ginv_diag).clamp(min=1e-12)
        x = x / mu.unsqueeze(-1).to(x.dtype)
        eff = (1.0 - mu) / mu
    if constellation.is_real:
        x = x.to(h.dtype)
        eff = 2 * eff  # complex-equivalent variance (see Constellation.llr_maxlog)
    return x, eff


def linear_flops(rows: int, cols: int, vectors_per_frame: int, mmse: bool = False) -> float:
    """Real FLOPs per detected vector of :func:`linear_detect` on a real-valued ``rows x cols``
    channel (BPSK: ``2 Nr x Nt``, the widely-linear stacking): per frame, shared by its vectors,
    the Gram matrix ``H^T H`` (``2 rows cols^2``), ``+ sigma^2 I`` for MMSE (``cols``) and the
    Cholesky factorisation (``cols^3 / 3``); per vector ``H^T y`` (``2 rows cols``) and two
    triangular solves (``2 cols^2``). (MMSE's per-stream bias correction, ``cols`` per vector, is
    included.)"""
    per_frame = 2 * rows * cols * cols + (cols if mmse else 0) + cols ** 3 / 3
    per_vector = 2 * rows * cols + 2 * cols * cols + (cols if mmse else 0)
    return per_vector + per_frame / vectors_per_frame


def _pam_candidates(levels: torch.Tensor, dims: int) -> torch.Tensor:
    """All ``L^dims`` real vectors over the PAM alphabet, ``(dims, L^dims)`` (lexicographic)."""
    n_l = levels.numel()
    idx = torch.arange(n_l**dims)
    digits = torch.stack([(idx // n_l**(dims - 1 - j)) % n_l for j in range(dims)])
    return levels[digits]


def ml_detect(y: torch.Tensor, h: torch.Tensor, constellation: Constellation,
              max_chunk_elements: int = 1 << 18) -> torch.Tensor:
    """Exact ML ``argmin_s ||y - H s||^2`` over all ``M^Nt`` candidates.

    Evaluated in the real-valued model ([LG] eq. (2); for BPSK the real-symbol model
    ``[Re H; Im H]``), where a square QAM candidate is a vector of ``D`` PAM levels
    (``D = 2 Nt``, or ``Nt`` for BPSK). Expanding

        ||y - A x||^2 = ||y||^2 - 2 x^T (A^T y) + x^T G x,   G = A^T A,

    and splitting ``x = [x_a; x_b]`` into halves, the metric of every candidate pair is
    ``q_a + q_b + 2 x_a^T G_ab x_b - 2 (x_a^T z_a + x_b^T z_b)``: the cross term of *all*
    candidates is one matrix product ``X_a^T (G_ab X_b)`` per channel, the linear terms one
    product per received vector, followed by a single argmin over all ``M^Nt`` entries.
    This is exact (no pruning) and costs ``O(M^{Nt/2} D^2 + M^Nt)`` per channel instead of
    ``O(M^Nt D^2)``.

    Shapes: ``y (..., Nr, N)``, ``h (..., Nr, Nt)`` -> point indices ``(..., Nt, N)`` int64.
    At most ``max_chunk_elements`` metric entries exist at once (chunked over the batch; 2^18
    keeps a chunk in cache, see ``neuralmimo bench detectors``).
    """
    nt = h.shape[-1]
    scale = frame_scale(h)  # scale-free, see linear_detect
    h, y = h / scale.to(h.real.dtype), y / scale.to(h.real.dtype)
    n_cand = constellation.num_points**nt
    if n_cand > ML_MAX_CANDIDATES:
        raise ValueError(f"exact ML over {constellation.num_points}^{nt} = {n_cand} candidates exceeds the limit "
                         f"of {ML_MAX_CANDIDATES} (BPSK/QPSK up to 16 real dimensions); use K-best")
    batch_shape, n_vec = h.shape[:-2], y.shape[-1]
    rdt = h.real.dtype
    if constellation.is_real:
        a, b = _stack_real(h, y)
    else:
        a, b = mat_to_real(h), torch.cat([y.real, y.imag], -2)
    d = a.shape[-1]
    a = a.reshape(-1, a.shape[-2], d)
    b = b.reshape(-1, b.shape[-2], n_vec)
    levels = constellation.pam_levels.to(device=h.device, dtype=rdt)
    da = d // 2
    xa, xb = _pam_candidates(levels, da), _pam_candidates(levels, d - da)  # (da, Ca), (db, Cb)
    ca, cb = xa.shape[1], xb.shape[1]
    # products of coordinate pairs, so that x^T G x of every half-candidate is one GEMM with vec(G)
    pa = (xa.unsqueeze(1) * xa.unsqueeze(0)).reshape(da * da, ca)
    pb = (xb.unsqueeze(1) * xb.unsqueeze(0)).reshape((d - da) ** 2, cb)
    chunk = max(1, max_chunk_elements // (ca * cb * n_vec))
    best = []
    for i in range(0, a.shape[0], chunk):
        ac, bc = a[i:i + chunk], b[i:i + chunk]
        nb = ac.shape[0]
        g = ac.mT @ ac  # (B, D, D)
        zt = (bc.mT @ ac).reshape(nb * n_vec, d)  # (B*N, D) = (A^T y)^T
        qa = g[:, :da, :da].reshape(nb, -1) @ pa  # (B, Ca)
        qb = g[:, da:, da:].reshape(nb, -1) @ pb  # (B, Cb)
        t = (g[:, :da, da:].reshape(nb * da, d - da) @ xb).reshape(nb, da, cb)
        quad = qa.unsqueeze(-1) + qb.unsqueeze(-2) + 2.0 * (xa.T @ t)  # (B, Ca, Cb)
        la = (zt[:, :da] @ xa).reshape(nb, n_vec, ca)
        lb = (zt[:, da:] @ xb).reshape(nb, n_vec, cb)
        # min over the second half first, then over the first: two passes over the M^Nt metrics
        inner, arg_b = (quad.unsqueeze(1) - 2.0 * lb.unsqueeze(-2)).min(-1)  # (B, N, Ca)
        arg_a = (inner - 2.0 * la).argmin(-1, keepdim=True)  # (B, N, 1)
        best.append(arg_a[..., 0] * cb + torch.gather(arg_b, -1, arg_a)[..., 0])
    best = torch.cat(best)
    x = torch.cat([xa[:, best // cb], xb[:, best % cb]], 0)  # (D, B, N)
    x = x.permute(1, 0, 2)  # (B, D, N)
    sym = torch.complex(x[:, :nt], x[:, nt:]) if not constellation.is_real else x.to(h.dtype)
    idx = constellation.hard_decision(sym.to(h.dtype))  # exact lattice points -> their indices
    return idx.reshape(*batch_shape, nt, n_vec)


def kbest_detect(y: torch.Tensor, h: torch.Tensor, constellation: Constellation, k: int) -> torch.Tensor:
    """K-best tree search on the QR decomposition ``H = Q R``.

    ``||y - H s||^2 = ||Q^H y - R s||^2 + const``; layers are detected from the last stream to
    the first, keeping the ``k`` partial candidates with the smallest accumulated metric. With
    ``k >= M^(Nt-1)`` no partial candidate is ever pruned and the result equals exact ML.

    Shapes: ``y (..., Nr, N)``, ``h (..., Nr, Nt)`` -> point indices ``(..., Nt, N)`` int64.
    """
    nt = h.shape[-1]
    if h.shape[-2] < nt:
        raise ValueError(f"K-best needs Nr >= Nt, got Nr={h.shape[-2]}, Nt={nt}")
    scale = frame_scale(h)  # scale-free, see linear_detect
    h, y = h / scale.to(h.real.dtype), y / scale.to(h.real.dtype)
    m = constellation.num_points
    batch_shape, n_vec = h.shape[:-2], y.shape[-1]
    q, r = torch.linalg.qr(h, mode="reduced")  # (..., Nr, Nt), (..., Nt, Nt)
    yt = (q.mH @ y).transpose(-1, -2)  # (..., N, Nt)
    yt = yt.reshape(-1, n_vec, nt)
    r = r.reshape(-1, 1, nt, nt)  # broadcast over the N vectors
    pts = constellation.points.to(h.dtype)
    bsz = yt.shape[0]
    # paths: (B, N, P, depth) indices of layers nt-1 .. nt-depth, metrics (B, N, P)
    paths = torch.zeros(bsz, n_vec, 1, 0, dtype=torch.long)
    metric = torch.zeros(bsz, n_vec, 1, dtype=h.real.dtype)
    for depth, layer in enumerate(range(nt - 1, -1, -1)):
        decided = pts[paths]  # (B, N, P, depth) symbols of layers nt-1 ... layer+1
        if depth:
            coeffs = r[..., layer, layer + 1:].flip(-1)  # R[layer, nt-1 ... layer+1] to match path order
            interf = (decided * coeffs.unsqueeze(-2)).sum(-1)  # (B, N, P)
        else:
            interf = torch.zeros_like(metric, dtype=h.dtype)
        resid = (yt[..., layer].unsqueeze(-1) - interf).unsqueeze(-1) - r[..., layer, layer].unsqueeze(-1).unsqueeze(-1) * pts
        new_metric = (metric.unsqueeze(-1) + resid.abs().square()).reshape(bsz, n_vec, -1)  # (B, N, P*M)
        keep = min(k, new_metric.shape[-1])
        metric, sel = new_metric.topk(keep, dim=-1, largest=False)
        parent, sym = sel // m, sel % m
        paths = torch.cat([torch.gather(paths, 2, parent.unsqueeze(-1).expand(-1, -1, -1, paths.shape[-1])),
                           sym.unsqueeze(-1)], -1)
    best = paths[:, :, 0, :].flip(-1)  # (B, N, Nt) in layer order 0..nt-1
    return best.transpose(-1, -2).reshape(*batch_shape, nt, n_vec)


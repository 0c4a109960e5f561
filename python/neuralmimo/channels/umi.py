"""3GPP TR 38.901 UMi NLoS channel *tasks* ([LG] Sec. V-A, Table II), via Sionna.

A task is a population of UEs dropped uniformly in a circle of radius 5 m around a centre at
distance 50-100 m from a BS at (0, 0, 15) m (UEs at 1.5 m height). Each UE contributes one
narrowband channel ``H`` (``Nr = 32`` BS antennas x ``Nt = 8`` UE antennas, 6 GHz, uplink),
the sum of the NLoS cluster/ray coefficients (the frequency response at the carrier).

Differences from the paper, stated once here:
* the paper used QuaDRiGa; we use Sionna's TR 38.901 implementation of the same scenario;
* array geometry is not given in the paper: the BS is a 4x4 cross-polarised panel (32 ports),
  the UE a 1x4 cross-polarised panel (8 ports), both with omnidirectional elements so UEs on
  every side of the BS are served alike (the paper's task centres cover the full annulus);
* path loss is disabled and each task is normalised to unit average power per entry
  (``E|H[n,k]|^2 = 1`` over the task's UEs). Shadow fading stays, so UEs of one task differ in
  gain; the normalisation factor is kept in the manifest.

A task is one **spatially consistent scene** (``spatial_consistency``, the default since cache
version 2): all its UEs in one Sionna topology with TR 38.901 Sec. 7.6.3 spatial consistency, so
nearby UEs share large-scale parameters and cluster geometry, as in the paper's QuaDRiGa scenes
(tasks larger than ``scene_ues`` are cut into scenes of neighbouring UEs). The generator before
version 2 -- an independent drop per UE, nearest-neighbour channel correlation no higher than
between random UEs -- stays available as ``spatial_consistency: false`` (the medium run and the
shipped ``sdnet-learngene-umi50`` were trained on it and say so in their configs and manifest).

Generation needs Sionna (the lab environment); results are cached as ``.npz`` (no pickle) with a
JSON manifest and are reproducible from the seed. Loading a cached task needs only numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from ..bundle import file_sha256
from .base import StoredChannels, task_split_codes

CACHE_VERSION = 2  # 2: spatially consistent scenes (spatial_consistency), cache keys carry the version


@dataclass(frozen=True)
class UMiConfig:
    """Configuration of a family of UMi tasks (defaults: [LG] Table II)."""

    carrier_frequency_hz: float = 6e9
    bs_position_m: tuple = (0.0, 0.0, 15.0)
    ue_height_m: float = 1.5
    bs_rows: int = 4
    bs_cols: int = 4
    ue_rows: int = 1
    ue_cols: int = 4
    task_radius_m: float = 5.0
    centre_min_m: float = 50.0
    centre_max_m: float = 100.0
    ues_per_task: int = 10_000
    chunk: int = 500
    seed: int = 2024
    # True: each task is one spatially consistent scene (Sionna's 38.901 Sec. 7.6.3 procedure:
    # correlated large-scale parameters and cluster delays/angles of nearby UEs, as QuaDRiGa's
    # scenes in [LG]); False: an independent drop per UE (the generator before cache version 2)
    spatial_consistency: bool = True
    scene_ues: int = 5_000        # UEs per scene (memory); a larger task is cut into scenes by position

    @property
    def nr(self) -> int:
        return 2 * self.bs_rows * self.bs_cols

    @property
    def nt(self) -> int:
        return 2 * self.ue_rows * self.ue_cols

    def key(self) -> str:
        """Short hash naming this configuration's cache folder; it includes :data:`CACHE_VERSION`,
        so a change of the generator gives new folders, never a stale task."""
        blob = json.dumps({"cache_version": CACHE_VERSION, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def default_cache_dir() -> Path:
    return Path(os.environ.get("NEURALMIMO_CACHE", Path.home() / ".cache" / "neuralmimo"))


def task_centre(cfg: UMiConfig, task_id: int) -> tuple[float, float]:
    """Centre ``(x, y)`` of a task: uniform over the annulus ``centre_min < r < centre_max``."""
    g = torch.Generator().manual_seed(cfg.seed * 100_003 + task_id)
    u, phi = torch.rand(2, generator=g, dtype=torch.float64)
    r = math.sqrt(cfg.centre_min_m**2 + float(u) * (cfg.centre_max_m**2 - cfg.centre_min_m**2))
    ang = 2 * math.pi * float(phi)
    return r * math.cos(ang), r * math.sin(ang)


def _ue_positions(cfg: UMiConfig, task_id: int, start: int, count: int) -> torch.Tensor:
    """Positions of UEs ``start .. start+count-1`` of a task, ``(count, 3)`` (chunk-independent)."""
    cx, cy = task_centre(cfg, task_id)
    out = []
    for i in range(start, start + count):
        g = torch.Generator().manual_seed((cfg.seed * 100_003 + task_id) * 1_000_003 + i)
        u, phi = torch.rand(2, generator=g, dtype=torch.float64)
        r = cfg.task_radius_m * math.sqrt(float(u))
        out.append((cx + r * math.cos(2 * math.pi * float(phi)), cy + r * math.sin(2 * math.pi * float(phi)), cfg.ue_height_m))
    return torch.tensor(out, dtype=torch.float32)


def _sionna_umi(cfg: UMiConfig, seed: int, spatial_consistency: bool):
    """Sionna's uplink UMi model with this configuration's arrays, its global seed set to ``seed``."""
    try:
        from sionna.phy import config as sn_config
        from sionna.phy.channel.tr38901 import PanelArray, UMi
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise RuntimeError("generating UMi tasks needs Sionna: run this in the lab environment "
                           "(.venv/lab, made by scripts/bootstrap.sh)") from e
    sn_config.seed = seed
    fc = cfg.carrier_frequency_hz
    bs = PanelArray(num_rows_per_panel=cfg.bs_rows, num_cols_per_panel=cfg.bs_cols, polarization="dual",
                    polarization_type="cross", antenna_pattern="omni", carrier_frequency=fc)
    ue = PanelArray(num_rows_per_panel=cfg.ue_rows, num_cols_per_panel=cfg.ue_cols, polarization="dual",
                    polarization_type="cross", antenna_pattern="omni", carrier_frequency=fc)
    return UMi(carrier_frequency=fc, o2i_model="low", ut_array=ue, bs_array=bs, direction="uplink",
               enable_pathloss=False, enable_shadow_fading=True, enable_spatial_consistency=spatial_consistency)


def _sionna_scenes(cfg: UMiConfig, task_id: int, progress: bool) -> np.ndarray:
    """Un-normalised channels of all UEs of a task, ``(ues_per_task, Nr, Nt)`` complex64, the UEs
    of one scene (all of them, or ``scene_ues`` neighbours along x) in one Sionna topology with
    spatial consistency on: one batch example whose ``num_ut`` UEs share the scene's
    large-scale-parameter maps and spatially consistent cluster parameters."""
    pos = _ue_positions(cfg, task_id, 0, cfg.ues_per_task)
    order = torch.argsort(pos[:, 0], stable=True)  # scenes by position: neighbours stay together
    groups = list(order.split(cfg.scene_ues))
    if progress and len(groups) > 1:
        from tqdm import tqdm
        groups = tqdm(groups, desc=f"UMi task {task_id} (scenes)", unit="scene", leave=False)
    h = np.empty((cfg.ues_per_task, cfg.nr, cfg.nt), np.complex64)
    for k, idx in enumerate(groups):
        model = _sionna_umi(cfg, (cfg.seed * 1009 + task_id) * 100_003 + 50_021 * (k + 1), True)
        count = idx.numel()
        ut_loc = pos[idx][None]  # (1 scene, count UEs, 3)
        bs_loc = torch.tensor(cfg.bs_position_m, dtype=torch.float32).reshape(1, 1, 3)
        model.set_topology(ut_loc, bs_loc, torch.zeros(1, count, 3), torch.zeros(1, 1, 3), torch.zeros(1, count, 3),
                           torch.zeros(1, count, dtype=torch.bool), los=False)
        a, _ = model(num_time_samples=1, sampling_frequency=1.0)
        # a: [1, 1 rx (BS), Nr, count tx (UEs), Nt, paths, 1]; narrowband H = sum over paths
        h[idx.numpy()] = a.sum(-2)[0, 0, :, :, :, 0].permute(1, 0, 2).cpu().numpy().astype(np.complex64)
    return h


def _sionna_chunk(cfg: UMiConfig, task_id: int, start: int, count: int) -> np.ndarray:
    """Un-normalised channels of UEs ``start..start+count-1``, ``(count, Nr, Nt)`` complex64, each
    UE its own drop (``spatial_consistency`` off: one batch example per UE)."""
    model = _sionna_umi(cfg, (cfg.seed * 1009 + task_id) * 100_003 + start, False)
    ut_loc = _ue_positions(cfg, task_id, start, count)[:, None, :]
    bs_loc = torch.tensor(cfg.bs_position_m, dtype=torch.float32).expand(count, 1, 3).contiguous()
    zeros = torch.zeros(count, 1, 3)
    model.set_topology(ut_loc, bs_loc, zeros, zeros.clone(), zeros.clone(),
                       torch.zeros(count, 1, dtype=torch.bool), los=False)
    a, _ = model(num_time_samples=1, sampling_frequency=1.0)
    # a: [batch, 1 rx (BS), Nr, 1 tx (UE), Nt, paths, 1]; narrowband H = sum over paths
    h = a.sum(-2)[:, 0, :, 0, :, 0]
    return h.cpu().numpy().astype(np.complex64)


def task_path(cfg: UMiConfig, task_id: int, cache_dir: Path | None = None) -> Path:
    return (cache_dir or default_cache_dir()) / "umi" / cfg.key() / f"task_{task_id:03d}.npz"


def generate_task(cfg: UMiConfig, task_id: int, cache_dir: Path | None = None, progress: bool = True) -> Path:
    """Generate (or reuse from the cache) one task; returns the ``.npz`` path.

    The ``.npz`` holds ``h`` (``(ues_per_task, Nr, Nt)`` complex64, unit average power),
    ``positions`` and ``split`` (0 train / 1 val / 2 test, 81/9/10 %). The folder's
    ``manifest.json`` records the configuration, each task's centre, normalisation and sha256.
    """
    path = task_path(cfg, task_id, cache_dir)
    manifest_path = path.parent / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {"config": asdict(cfg), "tasks": {}}
    entry = manifest["tasks"].get(str(task_id))
    if path.exists() and entry and entry.get("sha256") == file_sha256(path):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = range(0, cfg.ues_per_task, cfg.chunk)
    if progress and not cfg.spatial_consistency:
        from tqdm import tqdm
        chunks = tqdm(chunks, desc=f"UMi task {task_id}", unit="chunk", leave=False)
    if cfg.spatial_consistency:
        h = _sionna_scenes(cfg, task_id, progress)
    else:
        hs = [_sionna_chunk(cfg, task_id, s, min(cfg.chunk, cfg.ues_per_task - s)) for s in chunks]
        h = np.concatenate(hs)
    scale = float(np.sqrt(np.mean(np.abs(h) ** 2)))
    h = (h / scale).astype(np.complex64)
    n = cfg.ues_per_task
    split = task_split_codes(n)
    positions = _ue_positions(cfg, task_id, 0, n).numpy()
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, h=h, positions=positions, split=split)
    tmp.replace(path)
    manifest["tasks"][str(task_id)] = {"centre_m": task_centre(cfg, task_id), "normalisation": scale,
                                       "sha256": file_sha256(path), "file": path.name}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return path


def load_task(cfg: UMiConfig, task_id: int, cache_dir: Path | None = None, generate: bool = True) -> dict:
    """A task as numpy arrays ``{"h", "positions", "split"}``; generates it if missing and allowed."""
    path = task_path(cfg, task_id, cache_dir)
    if not path.exists():
        if not generate:
            raise FileNotFoundError(f"UMi task {task_id} is not cached at {path}; generate it in the lab "
                                    f"environment with `neuralmimo umi generate --tasks {task_id}`")
        path = generate_task(cfg, task_id, cache_dir)
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


NORMALISATIONS = ("task", "ue")


def normalise_channels(h: torch.Tensor, mode: str) -> torch.Tensor:
    """``"task"``: all channels ``h (B, Nr, Nt)`` scaled together to unit average power per entry
    (shadow fading kept; a no-op on a whole cached task); ``"ue"``: each channel scaled to
    ``||H||_F^2 = Nr Nt`` (shadow fading removed)."""
    if mode == "ue":
        return h / h.abs().square().mean((-2, -1), keepdim=True).sqrt()
    if mode == "task":
        return h / h.abs().square().mean().sqrt()
    raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {mode!r}")


class UMiTaskChannel(StoredChannels):
    """Channel model drawing UEs (with replacement) from one task's split.

    ``split``: ``"train"``, ``"val"``, ``"test"`` or ``"all"``; ``normalise``: see
    :func:`normalise_channels`.
    """

    def __init__(self, task_id: int, cfg: UMiConfig = UMiConfig(), split: str = "test",
                 cache_dir: Path | None = None, generate: bool = True, normalise: str = "task"):
        data = load_task(cfg, task_id, cache_dir, generate)
        h = normalise_channels(torch.from_numpy(data["h"]), normalise)  # over the whole task, then split
        self.h = self.split_of(h, data["split"], split, f"UMi task {task_id}")
        self.nr, self.nt = cfg.nr, cfg.nt
        self.task_id = task_id



def make_umi_channel(nr: int, nt: int, task_id: int = 0, split: str = "test", normalise: str = "task",
                     generate: bool = True, **umi_kwargs) -> UMiTaskChannel:
    """The ``umi-task`` channel by name (``channels.make_channel``): one task's UEs; remaining
    keyword arguments are :class:`UMiConfig` fields (e.g. ``ues_per_task``, ``seed``)."""
    cfg = UMiConfig(**umi_kwargs)
    if (nr, nt) != (cfg.nr, cfg.nt):
        raise ValueError(f"umi-task channels are {cfg.nr}x{cfg.nt} (Nr x Nt), got {nr}x{nt}")
    return UMiTaskChannel(int(task_id), cfg, split, normalise=normalise, generate=generate)

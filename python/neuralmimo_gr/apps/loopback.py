"""The loopback demos: run an example flowgraph headless and put each detector's SER next to the
lab's evaluation of the same settings, which are read from the compiled flowgraph's own blocks
(its ``src``, ``chan``, ``est`` blocks and probes), never restated here.

* :func:`loopback_demo` -- ``loopback_linear.grc`` (ZF, MMSE) against the core simulation;
* :func:`neural_loopback_demo` -- ``loopback_neural.grc`` (hypernetwork-DeepSIC) against the
  DeepSIC pipeline on the same channel sequence, ``loopback_sdnet.grc`` (SDNet-learngene)
  against the test SER its bundle recorded, and ``loopback_hypermimo.grc`` (HyperMIMO) against
  the HyperMIMO lab's draw of the same drop, SNR and pilots.

Used by ``neuralmimo loopback`` / ``loopback-neural`` (``make demo``); imports the lab.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from neuralmimo.bundle import load_bundle, load_model
from neuralmimo.channels import ChannelSpec, make_channel
from neuralmimo.detectors.deepsic import HYPERNET_CODEC
from neuralmimo.lab.deepsic import DeepSICConfig, Receivers, ScenarioConfig, run_transmission
from neuralmimo.lab.figures import plot_ser
from neuralmimo.lab.sim import SimConfig, simulate
from neuralmimo.metrics import error_rate_interval, wilson_interval
from neuralmimo.snr import convert_snr_db

from .harness import compile_grc, load_top_block_class, quiet_info_logs, run_flowgraph


def _load_loopback(grc: Path, out_dir: Path, params: tuple, blocks: tuple):
    """The top block class of a loopback flowgraph, which must take ``params`` and hold ``blocks``
    (ids); ``RuntimeError`` names what is missing (a wrong .grc would otherwise fail later with an
    attribute error)."""
    import inspect

    py = compile_grc(grc, out_dir / "generated")[0]
    cls = load_top_block_class(py)
    have = set(inspect.signature(cls.__init__).parameters)
    missing = [p for p in params if p not in have]
    code = py.read_text()
    missing += [f"block {b}" for b in blocks if f"self.{b} = " not in code]
    if missing:
        raise RuntimeError(f"{grc} is not a loopback flowgraph for this command: it lacks {', '.join(missing)} "
                           f"(parameters {', '.join(params)}; blocks {', '.join(blocks)})")
    return cls


def sim_config_of(tb, snrs: list[float], frames: int, seed: int) -> SimConfig:
    """The lab :class:`~neuralmimo.lab.sim.SimConfig` with the settings of a loopback top block
    (its ``src``, ``chan`` and ``est`` blocks): the same channel, SNR convention, sizes,
    modulation and pilots."""
    lay = tb.est.layout
    return SimConfig(channel=tb.chan.channel, nt=lay.nt, nr=tb.est.nr, modulation=tb.src.constellation.name,
                     snr_db=list(snrs), snr_convention=tb.chan.snr_convention, pilots=lay.n_pilots,
                     frame_data=lay.n_data, detectors=["zf", "mmse"], symbols=frames * lay.nt * lay.n_data, seed=seed)


OTA_OPTIONS = ("cfo_hz", "timing_offset", "sro_ppm", "phase_noise", "samp_rate", "drop_rate", "gain_imbalance_db", "coarse",
               "pilot_spacing")


def is_ota_loopback(grc: Path, out_dir: Path) -> bool:
    """Whether a loopback flowgraph is an over-the-air one (frame sync, a genie reference)."""
    py = compile_grc(grc, out_dir / "generated")[0]
    return "self.probe_genie = " in py.read_text()


def ota_loopback_demo(grc: Path, snrs: list[float], frames: int, seed: int, out_dir: Path, impairments: dict,
                      timeout_s: float = 600, progress: bool = True, record_to: Path | None = None) -> list[dict]:
    """Run an over-the-air loopback (``examples/loopback_ota.grc``) at each SNR with the given
    impairments (its parameters, :data:`OTA_OPTIONS`) and put ZF and MMSE after Frame Sync next to
    the flowgraph's own genie-synchronised MMSE receiver of the same frames and channels.
    ``record_to``: record the receive streams there (one SNR only; its Frame Recorder), with the
    live results in ``live.json`` next to the capture (what a replay must reproduce)."""
    quiet_info_logs()
    given = {k: v for k, v in impairments.items() if v is not None}
    if record_to is not None:
        if len(snrs) != 1:
            raise ValueError("recording needs exactly one SNR point")
        given["record_to"] = str(record_to)
    cls = _load_loopback(grc, out_dir, params=("snr_db", "n_frames", "seed", *given),
                         blocks=("src", "chan", "sync", "est", "probe_zf", "probe_mmse", "probe_genie"))
    if frames < 1:
        raise ValueError(f"frames must be >= 1 (0 would make the flowgraph endless), got {frames}")
    records = []
    for snr in tqdm(snrs, desc="ota loopback", unit="snr", disable=not progress):
        tb = cls(snr_db=snr, n_frames=frames, seed=seed, **given)
        probes = {"zf": tb.probe_zf, "mmse": tb.probe_mmse, "mmse genie": tb.probe_genie}
        for p in probes.values():
            p.report_on_stop = False
        wall = run_flowgraph(tb, timeout_s)
        settings = {k: getattr(tb, k) for k in OTA_OPTIONS if hasattr(tb, k)}
        if record_to is not None:
            tb.recorder.stop()
            tb.recorder.annotate_frames(tb.sync.history())  # the frames whose messages came after the stream ended
            (Path(record_to) / "live.json").write_text(json.dumps(
                {name: _probe_summary(p) for name, p in (("probe_zf", tb.probe_zf), ("probe_mmse", tb.probe_mmse))},
                indent=1) + "\n")
        for det, p in probes.items():
            records.append({"snr_db": snr, "detector": det, "source": "flowgraph", "ser": p.ser(),
                            "ci": list(p.ser_interval()), "n_symbols": p.symbols(), "frames": p.frames(),
                            "frames_sent": frames, "sync_problems": tb.sync.problems(), "impairments": settings,
                            "flowgraph": Path(grc).stem, "snr_convention": "project", "wall_s": wall})
    return records


def _probe_summary(p) -> dict:
    return {"ser": p.ser(), "symbols": p.symbols(), "frames": p.frames(), "frame_errors": [list(e) for e in p.frame_errors()]}


def replay_capture(capture: Path, grc: Path, out_dir: Path, timeout_s: float = 600) -> dict:
    """Run a capture (``neuralmimo.receiver.capture``) through a replay flowgraph (``examples/replay_ota.grc``:
    parameter ``capture``, the receiver's layout parameters, probes ``probe_*``), with the
    parameters taken from the capture's ``neuralmimo`` metadata. Returns ``{probe: summary}`` and,
    when the capture has a ``live.json`` (recorded by a loopback), whether each probe reproduced it."""
    from neuralmimo.receiver.capture import read_capture

    quiet_info_logs()
    cap = read_capture(capture)
    info = cap.info
    values = {"capture": str(cap.path), "n_pilots": info["n_pilots"], "n_data": info["n_data"],
              "modulation": info["modulation"], "period": info["preamble_period"], "sps": info["sps"],
              "rolloff": info["rolloff"], "span": info["span"], "seed": info["seed"], "samp_rate": cap.samp_rate}
    # the frame format's version-2 fields (extension 1.1): absent in older captures, which then need no
    # such parameters in the receiver either
    values.update({k: info[f] for k, f in (("coarse", "coarse_period"), ("pilot_spacing", "pilot_spacing")) if info.get(f)})
    cls = _load_loopback(grc, out_dir, params=tuple(values), blocks=("src", "sync", "est"))
    tb = cls(**values)
    if tb.sync.nr != cap.n_rx or tb.sync.layout.nt != info["nt"]:
        raise ValueError(f"{grc} receives {tb.sync.nr} channels from {tb.sync.layout.nt} streams; the capture has "
                         f"{cap.n_rx} channels from {info['nt']} streams")
    probes = {name: getattr(tb, name) for name in dir(tb) if name.startswith("probe_")}
    for p in probes.values():
        p.report_on_stop = False
    run_flowgraph(tb, timeout_s)
    out = {"capture": str(cap.path), "probes": {n: _probe_summary(p) for n, p in probes.items()},
           "sync_problems": tb.sync.problems()}
    live = Path(cap.path).parent / "live.json"
    if live.is_file():
        recorded = json.loads(live.read_text())
        out["live"] = recorded
        out["reproduces_live"] = {n: recorded[n] == out["probes"][n] for n in recorded if n in out["probes"]}
    return out


def format_replay(result: dict) -> str:
    lines = [f"replay of {result['capture']}", f"{'probe':>12} | {'frames':>6} | {'SER':>10} | {'live SER':>10} | same decisions"]
    for name, s in sorted(result["probes"].items()):
        live = result.get("live", {}).get(name)
        same = result.get("reproduces_live", {}).get(name)
        lines.append(f"{name:>12} | {s['frames']:>6} | {s['ser']:>10.4e} | "
                     f"{'-' if live is None else format(live['ser'], '.4e'):>10} | {'-' if same is None else same}")
    return "\n".join(lines)


def format_ota_loopback(records: list[dict]) -> str:
    """SER table of an over-the-air loopback: after Frame Sync and genie-synchronised."""
    by = {(r["snr_db"], r["detector"]): r for r in records}
    r0 = records[0]
    imp = ", ".join(f"{k}={v:g}" for k, v in r0["impairments"].items())
    lines = [f"{r0['flowgraph']}: {imp}",
             f"{'SNR [dB]':>9} | {'frames':>9} | {'ZF after sync':>20} | {'MMSE after sync':>20} | {'MMSE genie sync':>20} | "
             "sync events"]
    lines.append("-" * (len(lines[1]) + 20))
    for s in dict.fromkeys(r["snr_db"] for r in records):
        cells = []
        for det in ("zf", "mmse", "mmse genie"):
            r = by[(s, det)]
            cells.append(f"{r['ser']:.3e} ±{(r['ci'][1] - r['ci'][0]) / 2:.1e}".rjust(20))
        m = by[(s, "mmse")]
        events = {k: v for k, v in m["sync_problems"].items() if k != "frames"}
        lines.append(f"{s:>9.1f} | {m['frames']:>4}/{m['frames_sent']:<4} | " + " | ".join(cells) + f" | {events or '-'}")
    lines.append("SER per complex symbol (project SNR convention, per symbol after the matched filter); ± is the 95 % "
                 "half-width; frames = frames that reached the MMSE probe / frames sent")
    return "\n".join(lines)


def plot_ota_loopback(records: list[dict], path: Path) -> None:
    plot_ser([{**r} for r in records], path, title="Over-the-air loopback: after Frame Sync vs genie sync")


def loopback_demo(grc: Path, snrs: list[float], frames: int, seed: int, out_dir: Path, timeout_s: float = 600,
                  progress: bool = True) -> list[dict]:
    """Run the loopback flowgraph at each SNR and the core simulation with the same settings
    (read from the flowgraph's own blocks); returns one record per (SNR, detector)."""
    quiet_info_logs()
    cls = _load_loopback(grc, out_dir, params=("snr_db", "n_frames", "seed"),
                         blocks=("src", "chan", "est", "probe_zf", "probe_mmse"))
    if frames < 1:
        raise ValueError(f"frames must be >= 1 (0 would make the flowgraph endless), got {frames}")
    records, cfg = [], None
    for snr in tqdm(snrs, desc="loopback flowgraph", unit="snr", disable=not progress):
        tb = cls(snr_db=snr, n_frames=frames, seed=seed)
        probes = {"zf": tb.probe_zf, "mmse": tb.probe_mmse}
        for p in probes.values():
            p.report_on_stop = False
        wall = run_flowgraph(tb, timeout_s)
        cfg = sim_config_of(tb, snrs, frames, seed)
        for det, p in probes.items():
            records.append({"snr_db": snr, "detector": det, "source": "flowgraph", "ser": p.ser(),
                            "ci": list(p.ser_interval()), "n_symbols": p.symbols(), "frames": p.frames(),
                            "wall_s": wall})
    for r in simulate(cfg, progress=progress):
        records.append({"snr_db": r["snr_db"], "detector": r["detector"], "source": "core sim", "ser": r["ser"],
                        "ci": r["ci"], "n_symbols": r["n_symbols"]})
    for r in records:
        r.update(flowgraph=Path(grc).stem, channel=cfg.channel_spec.to_dict(), nt=cfg.nt, nr=cfg.nr,
                 modulation=cfg.modulation, pilots=cfg.pilots, frame_data=cfg.frame_data,
                 snr_convention=cfg.snr_convention)
    return records


def format_loopback(records: list[dict]) -> str:
    """SER table: flowgraph next to the core simulation for each detector and SNR."""
    by = {(r["snr_db"], r["detector"], r["source"]): r for r in records}
    snrs = list(dict.fromkeys(r["snr_db"] for r in records))
    r0 = records[0]
    lines = [f"{r0['flowgraph']}: {ChannelSpec.parse(r0['channel']).name} {r0['nt']}x{r0['nr']} (Nt x Nr) "
             f"{r0['modulation']}, LS from Np={r0['pilots']}, Nd={r0['frame_data']} data vectors per frame",
             f"{'SNR [dB]':>9} | {'ZF flowgraph':>22} | {'ZF core sim':>22} | {'MMSE flowgraph':>22} | {'MMSE core sim':>22} | agree"]
    lines.append("-" * len(lines[1]))
    for s in snrs:
        cells, agree = [], True
        for det in ("zf", "mmse"):
            a, b = by[(s, det, "flowgraph")], by[(s, det, "core sim")]
            for r in (a, b):
                half = (r["ci"][1] - r["ci"][0]) / 2
                cells.append(f"{r['ser']:.3e} ±{half:.1e}".rjust(22))
            agree &= a["ci"][0] <= b["ci"][1] and b["ci"][0] <= a["ci"][1]
        lines.append(f"{s:>9.1f} | " + " | ".join(cells) + f" | {'yes' if agree else 'NO'}")
    lines.append(f"SER per complex symbol, {r0['snr_convention']} SNR convention; ± is the 95 % half-width (Wilson or "
                 "over frames, whichever is wider); agree = the intervals overlap")
    return "\n".join(lines)


def plot_loopback(records: list[dict], path: Path) -> None:
    """SER vs SNR of the flowgraph and the core simulation, one curve per (detector, source)."""
    curves = [{**r, "detector": f"{r['detector']} {r['source']}"} for r in records]
    plot_ser(curves, path, title="Loopback flowgraph vs core simulation")


# ----------------------------------------------------------------------------- neural loopback demo
def _probe_record(probe, detector: str, scenario: str, wall: float) -> dict:
    return {"scenario": scenario, "detector": detector, "source": "flowgraph", "ser": probe.ser(),
            "ci": list(probe.ser_interval()), "n_symbols": probe.symbols(), "frames": probe.frames(), "wall_s": wall}


def _run_loopback(grc: Path, out_dir: Path, timeout_s: float, **params):
    cls = _load_loopback(grc, out_dir, params=tuple(params),
                         blocks=("src", "chan", "est", "probe_zf", "probe_mmse", "probe_nn"))
    if params.get("n_frames", 1) < 1:
        raise ValueError(f"frames must be >= 1 (0 would make the flowgraph endless), got {params['n_frames']}")
    tb = cls(**params)
    for p in (tb.probe_zf, tb.probe_mmse, tb.probe_nn):
        p.report_on_stop = False
    wall = run_flowgraph(tb, timeout_s)
    return tb, wall


def _scenario(tb) -> str:
    """``deepsic-sed 12x8 BPSK, 10 dB (deepsic)`` from a loopback top block's blocks."""
    chan = tb.chan
    return (f"{chan.channel.name} {tb.est.nr}x{tb.src.layout.nt} {tb.src.constellation.name.upper()}, "
            f"{chan.snr_db():g} dB ({chan.snr_convention})")


def _lab_wilson(lab_ser: dict, lab_symbols: int) -> dict:
    """Lab results known only as an SER over ``lab_symbols`` symbols: Wilson intervals."""
    return {det: {"ser": ser, "ci": list(wilson_interval(int(round(ser * lab_symbols)), lab_symbols)),
                  "n_symbols": lab_symbols, "interval": "Wilson"} for det, ser in lab_ser.items()}


def _records(tb, wall: float, name: str, lab: dict) -> list[dict]:
    """Flowgraph records of the three probes (``zf``, ``mmse``, ``name``) and the lab's records of
    the same detectors (``lab``: ``{detector: {ser, ci, n_symbols, interval}}``)."""
    scen = _scenario(tb)
    probes = {"zf": tb.probe_zf, "mmse": tb.probe_mmse, name: tb.probe_nn}
    out = [_probe_record(p, det, scen, wall) for det, p in probes.items()]
    nn = getattr(tb, "det_nn", None)
    if nn is not None and hasattr(nn, "fallback_frames"):  # frames the MMSE fallback detected
        out[-1]["fallback_frames"] = nn.fallback_frames / max(tb.probe_nn.frames(), 1)
    for det in probes:
        out.append({"scenario": scen, "detector": det, "source": "lab", **lab[det]})
    return out


def _hypernetwork_loopback(grc: Path, model: Path, out_dir: Path, frames: int, timeout_s: float) -> list[dict]:
    """The hypernetwork-DeepSIC loopback and the DeepSIC pipeline's receiver on the same channel
    sequence (its settings read from the flowgraph's blocks)."""
    tb, wall = _run_loopback(grc, out_dir, timeout_s, n_frames=frames, model=str(model))
    lay, chan, nr = tb.src.layout, tb.chan, tb.est.nr
    energy = make_channel(chan.channel, nr, lay.nt).mean_energy
    snr_deepsic = convert_snr_db(chan.snr_db(), chan.snr_convention, "deepsic", channel_energy=energy, nr=nr, nt=lay.nt)
    hyper, _ = load_model(model, HYPERNET_CODEC)
    cfg = DeepSICConfig.from_dict({"receiver": {"n_rx": nr, "k_max": hyper.k_max,
                                                "modulation": tb.src.constellation.name},
                                   "training": {"channel": chan.channel.to_dict()}})
    sc = ScenarioConfig(name="loopback", channel=chan.channel.to_dict(), k_min=lay.nt, k_max=lay.nt,
                        snr_db=snr_deepsic, n_pilots=lay.n_pilots, n_info=lay.n_data, blocks=frames, seed=0)
    lab = run_transmission(cfg, sc, Receivers(hyper, {}), snr_deepsic, lay.n_pilots,
                           methods=("zf", "mmse", "hypernetwork"))
    ser = {m: sum(v) / len(v) for m, v in lab["ser"].items()}
    return _records(tb, wall, "hypernetwork-DeepSIC", _lab_wilson({"zf": ser["zf"], "mmse": ser["mmse"],
                                                                    "hypernetwork-DeepSIC": ser["hypernetwork"]},
                                                                   frames * lay.n_data * lay.nt))


def _sdnet_loopback(grc: Path, model: Path, out_dir: Path, frames: int, timeout_s: float,
                    name: str = "SDNet-learngene") -> list[dict]:
    """An SDNet loopback and the test SER the learngene pipeline recorded in the bundle: the
    model's, or MMSE's where the block detected (nearly) every frame with the MMSE fallback (the
    bundle's operating envelope excludes the flowgraph's operating point)."""
    tb, wall = _run_loopback(grc, out_dir, timeout_s, n_frames=frames, model=str(model))
    test = load_bundle(model).manifest["training"]["test"]
    fell_back = tb.det_nn.fallback_frames >= 0.99 * max(tb.probe_nn.frames(), 1)
    lab = _lab_wilson({"zf": test["zf"], "mmse": test["mmse"], name: test["mmse" if fell_back else "sdnet"]},
                      int(test["symbols"]))
    lab[name]["fallback_frames"] = 1.0 if fell_back else 0.0
    return _records(tb, wall, name, lab)


def _bundle_loopback(grc: Path, model: Path, out_dir: Path, frames: int, timeout_s: float, name: str,
                     lab_frames: int = 4000) -> list[dict]:
    """A loopback of a self-contained detector bundle (HyperMIMO, complex hypernetwork-DeepSIC)
    and the same bundle in the lab: ``lab_frames`` frames of the flowgraph's channel, SNR,
    convention and pilots (:func:`~neuralmimo.datasets.draw_channel_batch` with LS CSI:
    orthogonal DFT pilots, as the frame source sends), detected by the bundle's detector, MMSE
    and ZF. The lab's interval is the flowgraph probe's: Wilson or over frames, whichever is
    wider (errors cluster in the frames of bad channels; a Wilson interval over symbols alone
    is several times too narrow for block fading)."""
    import torch

    from neuralmimo.detectors import SystemSpec, linear_detect, load_detector
    from neuralmimo.datasets import draw_channel_batch as draw_batch

    tb, wall = _run_loopback(grc, out_dir, timeout_s, n_frames=frames, model=str(model))
    lay, chan, nr = tb.src.layout, tb.chan, tb.est.nr
    const = tb.src.constellation
    channel = make_channel(chan.channel, nr, lay.nt)
    det = load_detector(model, SystemSpec(nr, lay.nt, const.name))
    b = draw_batch(channel, const, lab_frames, lay.n_data, chan.snr_db(), torch.Generator().manual_seed(5),
                   convention=chan.snr_convention, csi="ls", n_pilots=lay.n_pilots)
    x, _, outside = det.detect_with_fallback(b.y, b.h, b.noise_var, llr=False)  # as the block: MMSE outside
    decisions = {name: const.hard_decision(x)}  # the bundle's envelope
    for kind in ("zf", "mmse"):
        decisions[kind] = const.hard_decision(linear_detect(b.y, b.h, b.noise_var, kind, const)[0])
    per_frame = lay.n_data * lay.nt
    lab = {}
    for det_name, idx_hat in decisions.items():
        errors = (idx_hat != b.idx).reshape(lab_frames, -1).sum(1)
        lab[det_name] = {"ser": float(errors.sum()) / (lab_frames * per_frame),
                         "ci": list(error_rate_interval(errors, per_frame)), "n_symbols": lab_frames * per_frame,
                         "interval": "Wilson or over frames"}
    lab[name]["fallback_frames"] = float(outside.double().mean())
    return _records(tb, wall, name, lab)


def neural_loopback_demo(examples: Path, models: Path, out_dir: Path, sed_frames: int = 100, umi_frames: int = 1000,
                         hypermimo_frames: int = 400, complex_frames: int = 400, timeout_s: float = 900,
                         progress: bool = True) -> list[dict]:
    """``loopback_neural.grc`` (hypernetwork-DeepSIC), ``loopback_deepsic_complex.grc`` (the
    complex-baseband hypernetwork-DeepSIC on a complex Kronecker channel),
    ``loopback_sdnet_site.grc`` (SDNet on the static site it was trained for),
    ``loopback_sdnet.grc`` (SDNet-learngene on UMi task 50) and ``loopback_hypermimo.grc``
    (HyperMIMO), each detector's flowgraph SER next to the lab evaluation of the same model and
    settings: :func:`~neuralmimo.lab.deepsic.run_transmission` on the same channel sequence, the
    test SER the learngene pipeline recorded in the SDNet bundles' manifests, and
    :func:`_bundle_loopback`'s draw of the same channel."""
    quiet_info_logs()
    hyper, sdnet = models / "hypernet-deepsic-sed-n12", models / "sdnet-learngene-umi50"
    site, hm = models / "sdnet-static-site-umi50", models / "hypermimo-ls12x6-drop0"
    cx = models / "hypernet-deepsic-complex-kron12x8"
    if progress:
        print(f"loopback_neural: {sed_frames} frames, hypernetwork-DeepSIC {hyper} ...", flush=True)
    records = _hypernetwork_loopback(examples / "loopback_neural.grc", hyper, out_dir, sed_frames, timeout_s)
    if progress:
        print(f"loopback_deepsic_complex: {complex_frames} frames, complex hypernetwork-DeepSIC {cx} ...", flush=True)
    records += _bundle_loopback(examples / "loopback_deepsic_complex.grc", cx, out_dir, complex_frames, timeout_s,
                                "DeepSIC complex", lab_frames=2000)
    if progress:
        print(f"loopback_sdnet_site: {umi_frames} frames, SDNet {site} ...", flush=True)
    records += _sdnet_loopback(examples / "loopback_sdnet_site.grc", site, out_dir, umi_frames, timeout_s,
                               name="SDNet (static site)")
    if progress:
        print(f"loopback_sdnet: {umi_frames} frames, SDNet {sdnet} ...", flush=True)
    records += _sdnet_loopback(examples / "loopback_sdnet.grc", sdnet, out_dir, umi_frames, timeout_s)
    if progress:
        print(f"loopback_hypermimo: {hypermimo_frames} frames, HyperMIMO {hm} ...", flush=True)
    return records + _bundle_loopback(examples / "loopback_hypermimo.grc", hm, out_dir, hypermimo_frames, timeout_s,
                                      "HyperMIMO")


def format_neural_demo(records: list[dict]) -> str:
    """SER table: each detector's flowgraph SER next to the lab's for the same model and settings."""
    by = {(r["scenario"], r["detector"], r["source"]): r for r in records}
    keys = list(dict.fromkeys((r["scenario"], r["detector"]) for r in records))
    w = max(len(scen) for scen, _ in keys)
    lines = [f"{'loopback':<{w}} | {'detector':<21} | {'flowgraph SER':>21} | {'lab SER (same model)':>21} | agree"]
    lines.append("-" * len(lines[0]))
    for scen, det in keys:
        a, b = by[(scen, det, "flowgraph")], by[(scen, det, "lab")]
        cells = [f"{r['ser']:.3e} ±{(r['ci'][1] - r['ci'][0]) / 2:.1e}".rjust(21) for r in (a, b)]
        agree = a["ci"][0] <= b["ci"][1] and b["ci"][0] <= a["ci"][1]
        fb = [r.get("fallback_frames") or 0.0 for r in (a, b)]
        note = f" (MMSE fallback on {fb[0]:.0%} / {fb[1]:.0%} of the frames)" if any(fb) else ""
        lines.append(f"{scen:<{w}} | {det:<21} | {cells[0]} | {cells[1]} | {'yes' if agree else 'NO'}{note}")
    lines.append("SER per complex symbol; ± is the 95 % half-width (flowgraph: Wilson or over frames, whichever is "
                 "wider; lab: the same for HyperMIMO and complex DeepSIC, Wilson where only the SER is known); "
                 "agree = the two 95 % intervals overlap (the flowgraph and the lab draw their own channels of the "
                 "same model, so only the intervals can be compared). "
                 "Lab: hypernetwork-DeepSIC through the DeepSIC pipeline on the same channel sequence (random BPSK "
                 "pilots instead of the flowgraph's DFT pilots); SDNet: the test SER in the bundle's manifest "
                 "(learngene pipeline, the task's test channels x 50 vectors); HyperMIMO and complex DeepSIC: the "
                 "bundle on 4,000 / 2,000 frames of the same channel, SNR and pilots drawn by the lab.")
    lines.append("SDNet wins where the channels of a site share a fixed structure (the static site: users that do not "
                 "move, one channel with fresh noise) and ends at ZF level on UMi task 50, whose UEs each see their own "
                 "scatterers (docs/sdnet/where-sdnet-wins.md).")
    return "\n".join(lines)

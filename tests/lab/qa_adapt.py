"""``neuralmimo adapt``: a HyperMIMO trained for one user drop, fine-tuned on a CSI log recorded
after the users moved to another drop, detects the new drop better than before -- by more than
4 standard errors on the same vectors -- and the new bundle appears in the watch folder whole;
the time budget stops it early."""

from __future__ import annotations

import json
import math

import pytest
import torch
from neuralmimo.bundle import load_model
from neuralmimo.channels import make_channel
from neuralmimo.constellation import Constellation
from neuralmimo.site.csilog import CSILogWriter
from neuralmimo.datasets import draw_channel_batch, draw_frames
from neuralmimo.detectors.mmnet import HYPERMIMO_CODEC, HyperMIMO
from neuralmimo.detectors.mmnet.train import train_hypermimo
from neuralmimo.bundle import save_model
from neuralmimo.lab.cli import main

NR, NT, SNR = 12, 6, (0.0, 10.0)


def _drop(seed):
    return make_channel({"name": "local-scattering", "args": {"seed": seed}}, NR, NT)


def _ser(model, chan, g):
    b = draw_channel_batch(chan, Constellation("qpsk"), 2000, 10, 8.0, g)
    with torch.no_grad():
        _, log_p = model(b.y, b.h, b.noise_var)
    errors = int((log_p.argmax(-1) != b.idx).sum())
    return errors, b.idx.numel()


@pytest.mark.timeout(600)
def test_adapted_model_beats_the_old_one_on_the_new_drop(tmp_path):
    torch.manual_seed(0)
    base = HyperMIMO(NT, 5, 75, "qpsk")
    g = torch.Generator().manual_seed(1)
    train_hypermimo(base, lambda s: draw_channel_batch(_drop(0), Constellation("qpsk"), 200, 1, SNR, g), steps=500)
    save_model(base, HYPERMIMO_CODEC, tmp_path / "base", system={
        "nr": NR, "nt": NT, "modulation": "qpsk", "snr_convention": "hypermimo", "snr_db": list(SNR),
        "channel": {"name": "local-scattering", "args": {"seed": 0}}})
    # what a CSI Logger records after the users moved to drop 5: estimates with a little noise
    log = CSILogWriter(tmp_path / "log", NR, NT, chunk_frames=500)
    h = _drop(5).sample(3000, torch.Generator().manual_seed(2))
    noise = 0.05 * torch.randn(h.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(3))
    for i, hi in enumerate(h + noise):
        log.add(i, hi, 0.1)
    log.close()
    assert main(["adapt", "--csi", str(tmp_path / "log"), "--base", str(tmp_path / "base"), "--out",
                 str(tmp_path / "watch"), "--name", "site", "--steps", "500", "--nice", "0"]) == 0
    assert [p.name for p in (tmp_path / "watch").iterdir()] == ["site"]  # whole, nothing half-written
    adapted, bundle = load_model(tmp_path / "watch" / "site", HYPERMIMO_CODEC)
    training = bundle.manifest["training"]
    assert training["steps"] == 500 and training["adapted_from"]["sha256"] == load_model(
        tmp_path / "base", HYPERMIMO_CODEC)[1].sha256 and training["channel_stats"]["nt"] == NT
    old, _ = load_model(tmp_path / "base", HYPERMIMO_CODEC)
    e_old, n = _ser(old.eval(), _drop(5), torch.Generator().manual_seed(9))
    e_new, _ = _ser(adapted.eval(), _drop(5), torch.Generator().manual_seed(9))
    p_old, p_new = e_old / n, e_new / n
    se = math.sqrt(p_old * (1 - p_old) / n + p_new * (1 - p_new) / n)
    assert p_old - p_new > 4 * se, (p_old, p_new, se)


def test_time_budget_and_wrong_inputs(tmp_path, capsys):
    torch.manual_seed(0)
    save_model(HyperMIMO(NT, 5, 75, "qpsk"), HYPERMIMO_CODEC, tmp_path / "base", system={
        "nr": NR, "nt": NT, "modulation": "qpsk", "snr_convention": "hypermimo", "snr_db": list(SNR)})
    log = CSILogWriter(tmp_path / "log", NR, NT)
    for i, hi in enumerate(_drop(5).sample(200, torch.Generator().manual_seed(2))):
        log.add(i, hi, 0.1)
    log.close()
    assert main(["adapt", "--csi", str(tmp_path / "log"), "--base", str(tmp_path / "base"), "--out",
                 str(tmp_path / "watch"), "--steps", "100000", "--budget-s", "5", "--nice", "0"]) == 0
    (bundle,) = (tmp_path / "watch").iterdir()
    steps = json.loads((bundle / "manifest.json").read_text())["training"]["steps"]
    assert 0 < steps < 100000
    small = CSILogWriter(tmp_path / "log8", 8, NT)
    small.add(0, torch.ones(8, NT), 0.1)
    small.close()
    assert main(["adapt", "--csi", str(tmp_path / "log8"), "--base", str(tmp_path / "base"), "--out",
                 str(tmp_path / "w2"), "--nice", "0"]) != 0
    assert "the channels are 8x6, the model is for 12x6" in capsys.readouterr().err


def _deepsic_ser(path, chan, n_blocks=40):
    """SER of a hypernetwork-DeepSIC bundle over blocks of ``chan`` with K = 6 (LS CSI, 6 dB
    per-user SNR, the same blocks for every bundle)."""
    from neuralmimo.detectors import SystemSpec, load_detector

    det = load_detector(path, SystemSpec(NR, NT, "qpsk"))
    g = torch.Generator().manual_seed(11)
    b = draw_frames(chan.sample(n_blocks, g), Constellation("qpsk"), 32, 200, 10 ** -0.6, g, pilots="random")
    x = det.detect(b.y_d, b.h_ls, b.noise_var_hat)
    return int((Constellation("qpsk").hard_decision(x) != b.idx).sum()), b.idx.numel()


@pytest.mark.timeout(600)
def test_adapt_complex_deepsic_learns_the_new_site(tmp_path, capsys):
    """A hypernet-deepsic-complex bundle (untrained: classical soft-IC MMSE) adapted on a CSI log
    of a site with Kronecker channels (rho = 0.7 at both ends) detects that site better, by > 4
    standard errors on the same vectors; the paper's real receiver refuses a complex log in one line."""
    from neuralmimo.detectors.deepsic import COMPLEX_HYPERNET_CODEC, HYPERNET_CODEC, ModularHypernetwork, ModuleSpec
    from neuralmimo.detectors.deepsic import PhaseInvariantHypernetwork, SoftICModuleSpec

    torch.manual_seed(0)
    system = {"nr": NR, "nt": NT, "modulation": "qpsk", "snr_convention": "hypermimo", "snr_db": [0.0, 12.0],
              "n_pilots": 32}
    save_model(PhaseInvariantHypernetwork(SoftICModuleSpec(NR, "qpsk"), NT), COMPLEX_HYPERNET_CODEC,
               tmp_path / "base", system=system)
    log = CSILogWriter(tmp_path / "log", NR, NT, chunk_frames=500)
    site = make_channel({"name": "kronecker", "args": {"rho_rx": 0.7, "rho_tx": 0.7}}, NR, NT)
    for i, hi in enumerate(site.sample(2000, torch.Generator().manual_seed(2))):
        log.add(i, hi, 0.1)
    log.close()
    assert main(["adapt", "--csi", str(tmp_path / "log"), "--base", str(tmp_path / "base"), "--out",
                 str(tmp_path / "watch"), "--name", "site", "--steps", "300", "--lr", "2e-3", "--nice", "0"]) == 0
    training = json.loads((tmp_path / "watch" / "site" / "manifest.json").read_text())["training"]
    assert training["steps"] == 300 and training["channel_stats"]["nt"] == NT
    e_old, n = _deepsic_ser(tmp_path / "base", site)
    e_new, _ = _deepsic_ser(tmp_path / "watch" / "site", site)
    p_old, p_new = e_old / n, e_new / n
    se = math.sqrt(p_old * (1 - p_old) / n + p_new * (1 - p_new) / n)
    assert p_old - p_new > 4 * se, (p_old, p_new, se)
    save_model(ModularHypernetwork(ModuleSpec(NR), NT), HYPERNET_CODEC, tmp_path / "bpsk",
               system={**system, "modulation": "bpsk"})
    capsys.readouterr()
    assert main(["adapt", "--csi", str(tmp_path / "log"), "--base", str(tmp_path / "bpsk"), "--out",
                 str(tmp_path / "w3"), "--nice", "0"]) != 0
    err = capsys.readouterr().err
    assert "reads Re y only" in err and len(err.strip().splitlines()) == 1


def test_adapt_never_publishes_a_broken_model(tmp_path, capsys):
    """Issue 29, class 5: a diverged training (a huge learning rate), a log with NaN channels, a
    one-frame log (it would become the drift reference) and a --name outside --out publish
    nothing and exit non-zero, with one line saying why."""
    torch.manual_seed(0)
    save_model(HyperMIMO(NT, 5, 75, "qpsk"), HYPERMIMO_CODEC, tmp_path / "base", system={
        "nr": NR, "nt": NT, "modulation": "qpsk", "snr_convention": "hypermimo", "snr_db": list(SNR)})
    h = _drop(5).sample(200, torch.Generator().manual_seed(2))
    logs = {"good": h, "nan": h.clone(), "one": h[:1]}
    logs["nan"][::2, 0, 0] = float("nan")  # in every split
    for name, hs in logs.items():
        log = CSILogWriter(tmp_path / name, NR, NT)
        for i, hi in enumerate(hs):
            log.add(i, hi, 0.1)
        log.close()
    base = ["--base", str(tmp_path / "base"), "--out", str(tmp_path / "watch"), "--nice", "0", "--steps", "30"]
    cases = [(["--csi", str(tmp_path / "good"), "--lr", "1e30"], ("diverged", "worse than its base", "NaN/Inf")),
             (["--csi", str(tmp_path / "nan")], ("NaN/Inf",)),
             (["--csi", str(tmp_path / "one")], ("at least 64",)),
             (["--csi", str(tmp_path / "good"), "--name", "../outside"], ("--name",))]
    for args, reasons in cases:
        try:
            code = main(["adapt", *args, *base])
        except SystemExit as e:  # an argument error: argparse exits 2
            code = e.code
        assert code != 0
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and any(r in err for r in reasons), err
    assert not (tmp_path / "outside").exists()
    assert not (tmp_path / "watch").exists() or list((tmp_path / "watch").iterdir()) == []
    assert not list(tmp_path.glob(".watch-*.tmp"))  # nothing half-written left next to it

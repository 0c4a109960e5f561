"""The neuralmimo command line: sim output format, plot, help, errors."""

import json
import subprocess
import sys

import pytest

from neuralmimo.lab.cli import build_parser, parse_snr_range, subcommand_parser

CLI = [sys.executable, "-m", "neuralmimo.lab.cli"]


def test_snr_range_parsing():
    assert parse_snr_range("0:2:20") == [float(x) for x in range(0, 21, 2)]
    assert parse_snr_range("5,7.5") == [5.0, 7.5]


def test_sim_json_records_and_plot(tmp_path):
    png = tmp_path / "ser.png"
    out = subprocess.run(CLI + ["sim", "--channel", "kronecker", "--nt", "2", "--nr", "4", "--modulation", "qpsk",
                                "--snr", "0:10:20", "--pilots", "4", "--detectors", "zf,mmse,ml,kbest",
                                "--symbols", "4000", "--seed", "1", "--json", "--plot", str(png)],
                         capture_output=True, text=True, timeout=300, check=True)
    recs = json.loads(out.stdout)
    assert len(recs) == 3 * 4
    for r in recs:
        assert {"snr_db", "detector", "ser", "ber", "n_symbols", "ci"} <= r.keys()
        assert r["ci"][0] <= r["ser"] <= r["ci"][1] and r["n_symbols"] >= 4000
    ser = {(r["snr_db"], r["detector"]): r["ser"] for r in recs}
    assert ser[(20.0, "zf")] < ser[(0.0, "zf")]  # error rate falls with SNR
    assert png.stat().st_size > 5000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sim_is_reproducible_from_seed():
    args = CLI + ["sim", "--nt", "2", "--nr", "2", "--snr", "5", "--symbols", "2000", "--json", "--seed", "4"]
    a = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    b = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout
    assert a == b


def test_help_documents_every_option():
    sim = subcommand_parser(build_parser(), "sim")
    text = sim.format_help()
    for action in sim._actions:
        for opt in action.option_strings:
            assert opt in text
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help text"


def test_bad_arguments_give_clear_errors():
    r = subprocess.run(CLI + ["sim", "--nt", "9", "--nr", "32", "--detectors", "ml", "--snr", "5", "--symbols", "10"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "exceeds the limit" in r.stderr
    r = subprocess.run(CLI + ["sim", "--nt", "4", "--pilots", "2", "--snr", "5", "--symbols", "10"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "n_pilots >= nt" in r.stderr


def test_config_file_sets_defaults_and_flags_override(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("channel: iid\nnt: 2\nnr: 3\nsnr: '0:5:10'\ndetectors: zf,ml\nsymbols: 500\n")
    recs = json.loads(subprocess.run(CLI + ["sim", "--config", str(cfg), "--json"], capture_output=True,
                                     text=True, timeout=120, check=True).stdout)
    assert {(r["snr_db"], r["detector"]) for r in recs} == {(s, d) for s in (0.0, 5.0, 10.0) for d in ("zf", "ml")}
    assert recs[0]["nt"] == 2 and recs[0]["nr"] == 3
    recs = json.loads(subprocess.run(CLI + ["sim", "--config", str(cfg), "--nt", "3", "--snr", "7", "--json"],
                                     capture_output=True, text=True, timeout=120, check=True).stdout)
    assert recs[0]["nt"] == 3 and {r["snr_db"] for r in recs} == {7.0}
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_option: 1\n")
    r = subprocess.run(CLI + ["sim", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "unknown option 'no_such_option'" in r.stderr


def test_shipped_configs_parse():
    from pathlib import Path

    from neuralmimo.lab.cli import _apply_config
    for path in sorted(Path(__file__).resolve().parents[2].joinpath("configs", "sim").glob("*.yaml")):
        args = _apply_config(build_parser(), ["sim", "--config", str(path)])
        assert args.nt >= 1 and args.snr


def _main(args, capsys):
    """The CLI in this process: (exit code, stdout, stderr)."""
    from neuralmimo.lab.cli import main

    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_bundle_inspect_and_verify_every_kind_and_never_a_traceback(tmp_path, capsys):
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    lg = root / "models" / "learngene-umi-bottom"
    code, out, _ = _main(["bundle", "verify", str(lg)], capsys)
    assert code == 0 and "valid data, not a detector" in out
    code, out, _ = _main(["bundle", "inspect", str(lg)], capsys)
    assert code == 0 and "(data, not a detector)" in out
    code, out, _ = _main(["bundle", "verify", str(root / "models" / "hypernet-deepsic-sed-n12"), "--nr", "12", "--nt",
                          "8", "--modulation", "bpsk"], capsys)
    assert code == 0 and out.startswith("ok: hypernet-deepsic")
    broken = tmp_path / "broken"
    shutil.copytree(lg, broken)
    for text in ("{not json", "[1, 2]", '{"schema_version": 2}', json.dumps({**json.loads(
            (lg / "manifest.json").read_text()), "system": {"nr": "many"}})):
        (broken / "manifest.json").write_text(text)
        for cmd in ("verify", "inspect"):
            code, _, err = _main(["bundle", cmd, str(broken)], capsys)
            assert code == 1 and len(err.strip().splitlines()) == 1 and "refused" in err, err
    # the same through the installed command: one line, no traceback
    r = subprocess.run(CLI + ["bundle", "inspect", str(broken)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    code, _, err = _main(["bundle", "verify", str(lg), "--sha256", "123"], capsys)
    assert code == 1 and "not 64 hex digits" in err


def test_bundle_upgrade_rewrites_a_version_1_manifest(tmp_path, capsys):
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    b = tmp_path / "b"
    shutil.copytree(root / "models" / "hypernet-deepsic-sed-n12", b)
    m = json.loads((b / "manifest.json").read_text())
    m["schema_version"] = 1
    m["system"] = {"n_rx": 12, "k_max": 12, "modulation": "bpsk", "n_pilots": 800, "snr_convention": "deepsic",
                   "snr_db": [6.0, 14.0], "channel": "sed"}
    (b / "manifest.json").write_text(json.dumps(m))
    code, _, err = _main(["bundle", "upgrade", str(b)], capsys)
    assert code == 0, err
    new = json.loads((b / "manifest.json").read_text())
    assert new["schema_version"] == 2 and new["system"]["nr"] == 12 and new["system"]["channel"]["name"] == "deepsic-sed"
    assert new["weights_sha256"] == m["weights_sha256"]


def test_bundle_envelope_writes_the_manifest_and_inspect_prints_it(tmp_path, capsys):
    """Issue 30: ``bundle envelope`` sweeps a bundle on its recorded system, writes the envelope
    (weights untouched), the plot and the tables; ``bundle inspect`` prints it; a malformed
    envelope is refused in one line."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    b = tmp_path / "hm"
    shutil.copytree(root / "models" / "hypermimo-ls12x6-drop0", b)
    before = json.loads((b / "manifest.json").read_text())
    code, out, err = _main(["bundle", "envelope", str(b), "--snr", "0:4:24", "--symbols", "24000", "--no-progress",
                            "--plot", str(tmp_path / "env.png"), "--report", str(tmp_path / "env.md")], capsys)
    assert code == 0, err
    after = json.loads((b / "manifest.json").read_text())
    assert after["weights_sha256"] == before["weights_sha256"] and after["fingerprint"] == before["fingerprint"]
    env = after["envelope"]
    (u,) = env["users"]
    assert u["n_users"] == 6 and [p["snr_db"] for p in u["sweep"]] == [0, 4, 8, 12, 16, 20, 24]
    assert all("validation" in p for p in u["sweep"]) and env["snr_convention"] == "hypermimo"
    assert u["snr_db"] and u["snr_db"][0][0] <= 8.0 <= u["snr_db"][0][1]  # it beats MMSE at 8 dB (its training range)
    assert "| users | envelope [dB]" in out and (tmp_path / "env.png").stat().st_size > 0
    assert (tmp_path / "env.md").read_text().startswith("Envelope of hm")
    code, out, _ = _main(["bundle", "inspect", str(b)], capsys)
    assert code == 0 and "envelope      K=6: " in out
    after["envelope"]["users"][0]["snr_db"] = [[10.0, 2.0]]
    (b / "manifest.json").write_text(json.dumps(after))
    for cmd in ("inspect", "verify"):
        code, _, err = _main(["bundle", cmd, str(b)], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1 and "envelope" in err, err
    with pytest.raises(SystemExit) as e:
        _main(["bundle", "envelope", str(b), "--users", "0"], capsys)
    assert e.value.code == 2 and "user counts" in capsys.readouterr().err


def test_channel_option_takes_a_spec_and_refuses_misspelt_arguments(capsys):
    code, _, err = _main(["sim", "--channel", "{name: kronecker, args: {rho: 0.7}}", "--snr", "5", "--symbols", "100",
                          "--no-progress"], capsys)
    assert code == 2 and "it accepts rho_rx, rho_tx" in err
    r = subprocess.run(CLI + ["sim", "--channel", "{name: kronecker", "--snr", "5"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "--channel" in r.stderr and "Traceback" not in r.stderr

"""Every CLI failure is one clear line and a non-zero exit, never a traceback (issue 14, classes
8 and 9): bad configs, meaningless sweeps, unwritable outputs (refused before the run starts),
broken bundles; ``--debug`` shows the traceback. Negative SNR lists work."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from neuralmimo.lab.cli import main

pytestmark = pytest.mark.timeout(120)
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "neuralmimo.lab.cli"]
# a sweep that would run for hours: a refusal must come before it starts
LONG = ["--symbols", "1000000000", "--no-progress"]


def _main(args, capsys):
    """(exit code, stdout, stderr) of the CLI run in this process; argparse errors included."""
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _config(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


CASES = {
    # (arguments (a callable of tmp_path for files), words the one line must contain)
    "YAML syntax": (lambda t: ["sim", "--config", _config(t, "nt: [1,\n")], ["c.yaml"]),
    "YAML not a mapping": (lambda t: ["sim", "--config", _config(t, "- zf\n- mmse\n")], ["mapping"]),
    "YAML wrong type": (lambda t: ["sim", "--config", _config(t, "nt: many\n")], ["'nt'", "many"]),
    "YAML 5e-4 as text": (lambda t: ["sim", "--config", _config(t, "symbols: 5e-4\n")], ["symbols"]),
    "missing config": (lambda t: ["sim", "--config", str(t / "nope.yaml")], ["nope.yaml"]),
    "kbest-k 0": (lambda t: ["sim", "--kbest-k", "0"], ["--kbest-k"]),
    "symbols 0": (lambda t: ["sim", "--symbols", "0"], ["--symbols"]),
    "descending sweep": (lambda t: ["sim", "--snr", "10:2:0"], ["--snr"]),
    "empty sweep": (lambda t: ["sim", "--snr", ","], ["--snr"]),
    "NaN SNR": (lambda t: ["sim", "--snr", "nan"], ["--snr"]),
    "Nt > Nr, linear": (lambda t: ["sim", "--nt", "8", "--nr", "4", "--detectors", "zf,mmse", *LONG], ["Nt", "Nr"]),
    "misspelt channel argument": (lambda t: ["sim", "--channel", "{name: kronecker, args: {rho: 0.7}}", *LONG],
                                  ["rho_rx"]),
    "arguments to a model that takes none": (lambda t: ["sim", "--channel", "{name: iid, args: {rho: 1}}", *LONG],
                                             ["iid"]),
    "unwritable plot": (lambda t: ["sim", "--plot", str(t / "file.txt" / "ser.png"), *LONG], ["ser.png"]),
    "plot where nobody may write": (lambda t: ["sim", "--plot", "/proc/ser.png", *LONG], ["/proc/ser.png"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_clear_line_and_a_non_zero_exit(case, tmp_path, capsys):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    make_args, words = CASES[case]
    code, out, err = _main(make_args(tmp_path), capsys)
    assert code not in (0, None), out
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("neuralmimo: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


def test_broken_manifests_are_refused_in_one_line(tmp_path, capsys):
    src = ROOT / "models" / "hypernet-deepsic-sed-n12"
    manifest = json.loads((src / "manifest.json").read_text())
    cases = {
        "Infinity": json.dumps(manifest).replace('"snr_db": [', '"snr_db": [Infinity, ', 1)
        if '"snr_db": [' in json.dumps(manifest) else json.dumps({**manifest, "created": float("inf")}),
        "wrong type": json.dumps({**manifest, "architecture": 7}),
    }
    for name, text in cases.items():
        b = tmp_path / name
        shutil.copytree(src, b)
        (b / "manifest.json").write_text(text)
        for cmd in ("inspect", "verify"):
            code, _, err = _main(["bundle", cmd, str(b)], capsys)
            assert code == 1 and len(err.strip().splitlines()) == 1 and "refused" in err, (name, err)
    b = tmp_path / "unreadable"
    shutil.copytree(src, b)
    (b / "weights.safetensors").unlink()
    (b / "weights.safetensors").mkdir()  # exists but cannot be read as a file (root reads any mode)
    code, _, err = _main(["bundle", "verify", str(b)], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "weights" in err, err


def test_negative_snr_lists_work_without_an_equals_sign(capsys):
    code, out, err = _main(["sim", "--nt", "2", "--nr", "2", "--snr", "-5:5:5", "--symbols", "64", "--json",
                            "--no-progress"], capsys)
    assert code == 0, err
    assert sorted({r["snr_db"] for r in json.loads(out)}) == [-5.0, 0.0, 5.0]


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "file.txt").write_text("a file, not a folder")
    args = ["sim", "--plot", str(tmp_path / "file.txt" / "ser.png")]
    quiet = subprocess.run(CLI + args, capture_output=True, text=True, timeout=60)
    loud = subprocess.run(CLI + args + ["--debug"], capture_output=True, text=True, timeout=60)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    assert loud.returncode != 0 and "Traceback" in loud.stderr

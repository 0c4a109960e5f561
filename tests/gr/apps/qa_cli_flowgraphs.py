"""The flowgraph commands of the CLI: loopback (make demo) and bench flowgraph, tiny sizes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[3]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "neuralmimo.lab.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=280)


def test_loopback_command_prints_table_and_writes_json_and_png(tmp_path):
    p = _cli("loopback", "--snr", "5,10", "--frames", "20", "--out", str(tmp_path), "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "ZF flowgraph" in p.stdout and "MMSE core sim" in p.stdout
    records = json.loads((tmp_path / "loopback.json").read_text())
    assert {(r["snr_db"], r["detector"], r["source"]) for r in records} == {
        (s, d, src) for s in (5.0, 10.0) for d in ("zf", "mmse") for src in ("flowgraph", "core sim")}
    assert (tmp_path / "loopback_ser.png").stat().st_size > 10_000
    assert ":info:" not in p.stdout + p.stderr  # results are not buried in scheduler chatter


def test_bench_flowgraph_reports_a_ratio(tmp_path):
    out = tmp_path / "bench.json"
    p = _cli("bench", "flowgraph", "--nt", "2", "--nr", "4", "--frame-data", "64", "--frames", "16", "--repeats", "1",
             "--sync-seconds", "0.05", "--json", str(out))
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert r["vectors"] == 16 * 64 and r["flowgraph_vps"] > 0 and r["kernel_vps"] > 0
    assert "ratio flowgraph / kernels" in p.stdout
    s = r["frame_sync"]  # 0.05 s of signal: 41 frames, all found by the block and by the core
    assert s["flowgraph_frames"] == s["core_frames"] == s["frames_sent"] and s["flowgraph_realtime"] > 0


@pytest.mark.parametrize("args,words", [
    (["--grc", "examples/usrp_mimo_rx.grc"], ["usrp_mimo_rx.grc"]),  # not a loopback flowgraph
    (["--grc", "examples/no_such.grc"], ["no_such.grc"]),
    (["--frames", "0"], ["--frames"]),  # an endless flowgraph before
])
def test_loopback_refuses_in_one_line(tmp_path, args, words):
    p = _cli("loopback", *args, "--out", str(tmp_path), "--no-progress")
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert all(w in lines[0] for w in words), lines[0]


def test_loopback_neural_without_the_umi_cache_ends_in_one_line_not_an_abort(tmp_path):
    """The SDNet loopbacks need UMi task 50 from the lab environment: without it the command
    says so in one line and exits 2 (it used to end in SIGABRT, exit 134, at interpreter exit)."""
    import os

    env = {**os.environ, "NEURALMIMO_CACHE": str(tmp_path / "empty-cache")}
    p = subprocess.run([sys.executable, "-m", "neuralmimo.lab.cli", "loopback-neural", "--out", str(tmp_path / "o"),
                        "--sed-frames", "2", "--complex-frames", "2", "--no-progress"], cwd=ROOT, capture_output=True,
                       text=True, timeout=280, env=env)
    lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
    assert p.returncode == 2 and "Traceback" not in p.stderr, (p.returncode, p.stderr[-2000:])
    assert "UMi" in lines[-1] and "lab environment" in lines[-1], lines

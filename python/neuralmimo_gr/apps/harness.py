"""Running flowgraphs from Python: compile a ``.grc`` with ``grcc`` (checking its output), load
the generated top block, run a top block with a timeout, make stream tags.

Used by the demos (:mod:`.loopback`), the benchmarks and the soak (:mod:`.stress`) and the tests.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

GRCC_ERROR_MARKERS = ("error", "traceback", "failed", "not connected", "invalid")


def quiet_info_logs() -> None:
    """Raise GNU Radio's default log level to WARN for command-line runs: the scheduler logs
    every enlarged buffer at INFO, which would bury the results (errors still show)."""
    from gnuradio import gr

    gr.logging().set_default_level(gr.log_levels.warn)


def installed_blocks_dir() -> Path:
    """Where CMake installed the GRC block YAML for this Python environment."""
    return Path(sys.prefix) / "share" / "gnuradio" / "grc" / "blocks"


def grc_environment(blocks_dir: Path | None = None) -> dict:
    """This process's environment with the module's GRC block folder first on ``GRC_BLOCKS_PATH``
    (GRC and grcc search it besides ``/usr/share/gnuradio/grc/blocks``)."""
    env = dict(os.environ)
    paths = [str(blocks_dir or installed_blocks_dir())]
    paths += [p for p in env.get("GRC_BLOCKS_PATH", "").split(os.pathsep) if p and p not in paths]
    env["GRC_BLOCKS_PATH"] = os.pathsep.join(paths)
    return env


def companion_command(flowgraphs=()) -> list[str]:
    """The command that opens GNU Radio Companion on this module: GRC runs in this interpreter, so
    its Run Command (``{python} -u {filename}``) runs flowgraphs where torch and the blocks are;
    use it with :func:`grc_environment`."""
    grc = shutil.which("gnuradio-companion")
    if grc is None:
        raise RuntimeError("gnuradio-companion not found (install the Debian package gnuradio)")
    return [sys.executable, grc, *[str(Path(f).resolve()) for f in flowgraphs]]


# blocks that generate no instance (``self.<name>``) in the flowgraph's code
_CODELESS_BLOCKS = ("import", "snippet", "note", "epy_module", "virtual_sink", "virtual_source")


def compile_grc(grc: Path, out_dir: Path, blocks_dir: Path | None = None, timeout_s: float = 120) -> tuple[Path, str]:
    """Compile ``grc`` with ``grcc`` into ``out_dir`` with the module's blocks on the block path;
    returns (generated .py, grcc output).

    ``grcc`` exits 0 even when a block YAML fails to load or a port is unconnected, and silently
    drops blocks whose YAML it cannot find, so its output is checked for error markers and the
    generated code for every enabled block of the flowgraph: ``RuntimeError`` otherwise.
    """
    import yaml

    grcc = shutil.which("grcc")
    if grcc is None:
        raise RuntimeError("grcc not found (install the Debian package gnuradio)")
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([grcc, "-o", str(out_dir), str(grc)], env=grc_environment(blocks_dir), capture_output=True,
                          text=True, timeout=timeout_s)
    output = proc.stdout + proc.stderr
    bad = [line for line in output.splitlines()
           if any(m in line.lower() for m in GRCC_ERROR_MARKERS)]
    data = yaml.safe_load(Path(grc).read_text())
    generated = out_dir / (data["options"]["parameters"]["id"] + ".py")
    if proc.returncode != 0 or bad or not generated.exists():
        raise RuntimeError(f"grcc failed on {grc} (exit {proc.returncode}):\n" + ("\n".join(bad) or output))
    code = generated.read_text()
    dropped = [f"{b['name']} ({b['id']})" for b in data.get("blocks", [])
               if b.get("states", {}).get("state", True) in (True, "enabled") and b["id"] not in _CODELESS_BLOCKS
               and f"self.{b['name']}" not in code]
    if dropped:
        raise RuntimeError(f"grcc dropped blocks of {grc}: {', '.join(dropped)} (their block YAML was not found on "
                           f"GRC_BLOCKS_PATH={grc_environment(blocks_dir)['GRC_BLOCKS_PATH']})")
    return generated, output


def load_top_block_class(py: Path):
    """The top block class of a generated flowgraph module (class name = flowgraph id)."""
    spec = importlib.util.spec_from_file_location(py.stem, py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, py.stem)


def run_flowgraph(tb, timeout_s: float) -> float:
    """``tb.start(); tb.wait()`` with a timeout; returns the wall time in seconds.

    In GNU Radio 3.10 an exception in a Python ``work()`` kills that block's thread and
    ``tb.wait()`` never returns; a timeout turns that into a ``TimeoutError``.
    """
    done = threading.Event()
    t0 = time.perf_counter()
    tb.start()
    threading.Thread(target=lambda: (tb.wait(), done.set()), daemon=True).start()
    if not done.wait(timeout_s):
        threading.Thread(target=tb.stop, daemon=True).start()
        raise TimeoutError(f"flowgraph did not finish within {timeout_s} s")
    return time.perf_counter() - t0


def gr_tag(offset: int, key: str, value):
    """A stream tag ``(offset, key, pmt value)``."""
    import pmt
    from gnuradio import gr

    t = gr.tag_t()
    t.offset, t.key, t.value, t.srcid = int(offset), pmt.intern(key), value, pmt.PMT_F
    return t

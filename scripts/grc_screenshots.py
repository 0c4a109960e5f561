"""Screenshots for docs/grc/: GNU Radio Companion with an example open (started by the launcher,
`neuralmimo companion`), and the running Qt example, on a virtual screen (Xvfb).

    .venv/rx/bin/python scripts/grc_screenshots.py        # writes docs/grc/*.png
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "grc"
SHOT = """
import sys, gi
gi.require_version("Gdk", "3.0")
from gi.repository import Gdk
w = Gdk.get_default_root_window()
width, height = (int(v) for v in sys.argv[2:4]) if len(sys.argv) > 3 else (w.get_width(), w.get_height())
Gdk.pixbuf_get_from_window(w, 0, 0, width, height).savev(sys.argv[1], "png", [], [])
"""


def xdo(env, *args) -> str:
    return subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True).stdout.strip()


def wait_window(env, name: str, timeout_s: float = 60) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        w = xdo(env, "search", "--onlyvisible", "--name", name).split()
        if w:
            return w[0]
        time.sleep(0.3)
    raise RuntimeError(f"no window {name!r}")


def shot(env, path: Path, size=()) -> None:
    """The screen's top-left ``size`` (width, height; default all of it) as a PNG."""
    subprocess.run(["/usr/bin/python3", "-c", SHOT, str(path), *map(str, size)], env=env, check=True)
    print(path)


def qt_shot(env, tmp: str, neuralmimo: str, example: str, title: str, png: str, settle_s: float = 12) -> None:
    """Compile and run a Qt example, then take its window (1100 x 760) after ``settle_s`` seconds."""
    gen = subprocess.run([neuralmimo, "grcc", str(ROOT / "examples" / f"{example}.grc"), "--out", tmp], env=env,
                         capture_output=True, text=True, check=True).stdout.split()[0]
    qt = subprocess.Popen([sys.executable, gen], env={**env, "QT_QPA_PLATFORM": "xcb"}, cwd=tmp)
    w = wait_window(env, title)
    xdo(env, "windowsize", w, "1100", "760")
    xdo(env, "windowmove", w, "0", "0")
    time.sleep(settle_s)
    shot(env, OUT / png, (1100, 760))
    qt.terminate()
    qt.wait(10)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    n = 95
    xvfb = subprocess.Popen(["Xvfb", f":{n}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp"])
    time.sleep(1.5)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / ".gnuradio"
        home.mkdir()
        (home / "config.conf").write_text("[grc]\nxterm_executable = /nonexistent-terminal\n")
        (home / "grc.conf").write_text("[main]\nxterm_missing = /nonexistent-terminal\n")
        env = {**os.environ, "DISPLAY": f":{n}", "HOME": tmp}
        neuralmimo = str(Path(sys.executable).parent / "neuralmimo")
        try:
            grc = subprocess.Popen([neuralmimo, "companion", str(ROOT / "examples" / "loopback_neural.grc")], env=env)
            w = wait_window(env, "loopback_neural.grc")
            time.sleep(3)
            xdo(env, "windowsize", w, "1600", "1000")
            xdo(env, "windowmove", w, "0", "0")
            time.sleep(1)
            xdo(env, "windowfocus", "--sync", w)
            xdo(env, "key", "ctrl+minus")  # zoom out: the whole flowgraph on screen
            time.sleep(0.5)
            xdo(env, "key", "ctrl+f")  # the block library's search: show the module's category
            time.sleep(0.5)
            xdo(env, "type", "neural")
            time.sleep(2)
            shot(env, OUT / "companion_loopback_neural.png")
            grc.terminate()
            grc.wait(10)
            # the running Qt examples (generated with the module's blocks on the path)
            qt_shot(env, tmp, neuralmimo, "loopback_linear_qt", "Loopback: LS", "qt_loopback_linear.png")
            qt_shot(env, tmp, neuralmimo, "loopback_ota_qt", "Loopback over the air", "qt_loopback_ota.png", 20)
        finally:
            xvfb.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())

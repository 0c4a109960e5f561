"""The installed GNU Radio module and the layering rule (core never imports GNU Radio)."""

import subprocess
import sys


def test_gnuradio_module_imports():
    import neuralmimo as core
    from gnuradio import gr, neuralmimo

    assert neuralmimo.__version__ == core.__version__
    assert gr.version().startswith("3.10")


def test_core_does_not_import_gnuradio():
    code = ("import sys, pkgutil, importlib, neuralmimo\n"
            "for m in pkgutil.walk_packages(neuralmimo.__path__, 'neuralmimo.'):\n"
            "    if m.name not in ('neuralmimo.channels.umi', 'neuralmimo.lab.bench'): importlib.import_module(m.name)\n"
            "import neuralmimo.channels.umi, neuralmimo.lab.bench\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'gnuradio']\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

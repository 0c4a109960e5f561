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


def test_oot_install_into_a_prefix_holds_core_blocks_yaml_examples_and_models(tmp_path):
    """The standard OOT flow into a prefix of one's own installs both packages into one Python
    directory, and the blocks find the installed models relative to themselves."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    build, prefix = tmp_path / "build", tmp_path / "prefix"
    subprocess.run(["cmake", "-S", str(root), "-B", str(build), f"-DCMAKE_INSTALL_PREFIX={prefix}",
                    f"-DRX_PYTHON={sys.executable}"], check=True, capture_output=True, timeout=300)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True, timeout=300)
    subprocess.run(["cmake", "--install", str(build)], check=True, capture_output=True, timeout=300)
    blocks = sorted(p.parents[2] for p in prefix.rglob("gnuradio/neuralmimo/__init__.py"))
    assert len(blocks) == 1, blocks
    site = blocks[0]
    assert (site / "neuralmimo" / "__init__.py").exists() and (site / "neuralmimo" / "lab" / "cli.py").exists()
    share = prefix / "share"
    assert sorted(p.name for p in (share / "gnuradio" / "grc" / "blocks").glob("neuralmimo_*.block.yml"))
    assert (share / "gr-neuralmimo" / "examples" / "loopback_neural.grc").exists()
    assert (share / "gr-neuralmimo" / "models" / "hypernet-deepsic-sed-n12" / "manifest.json").exists()
    code = ("import neuralmimo, gnuradio.neuralmimo as g\n"
            "from gnuradio.neuralmimo.neural_detector import resolve_model_path\n"
            f"assert neuralmimo.__file__.startswith({str(site)!r}), neuralmimo.__file__\n"
            f"assert g.__file__.startswith({str(site)!r}), g.__file__\n"
            "p = resolve_model_path('hypernet-deepsic-sed-n12')\n"
            f"assert p is not None and str(p).startswith({str(prefix.resolve())!r}), p\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(site)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=120)


def test_blocks_never_import_the_lab_only_apps_may():
    """Every block-package module outside apps/ imports no lab module (nor matplotlib, Sionna),
    each imported alone; the installed package holds apps/ and tags.py."""
    import gnuradio.neuralmimo as g
    from pathlib import Path

    folder = Path(g.__file__).parent
    assert (folder / "tags.py").exists() and (folder / "apps" / "harness.py").exists()
    mods = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__",))
    assert "neural_detector" in mods and "stress" not in mods
    names = ["gnuradio.neuralmimo", *(f"gnuradio.neuralmimo.{m}" for m in mods)]
    # each module imported alone (a fork of one interpreter that has loaded numpy, torch and GNU
    # Radio: torch itself loads tqdm) and what it pulls in compared with that baseline
    code = ("import importlib, json, os, sys, numpy, torch, pmt, gnuradio.gr\nbase = set(sys.modules)\nbad = {}\n"
            "for name in sys.argv[1:]:\n"
            "    r, w = os.pipe()\n"
            "    if os.fork() == 0:\n"
            "        importlib.import_module(name)\n"
            "        new = [m for m in set(sys.modules) - base if m.startswith('neuralmimo.lab')\n"
            "               or m.split('.')[0] in ('matplotlib', 'sionna', 'yaml', 'tqdm')]\n"
            "        os.write(w, json.dumps(new).encode())\n"
            "        os._exit(0)\n"
            "    os.close(w)\n"
            "    with os.fdopen(r) as f:\n"
            "        bad[name] = json.loads(f.read() or '[\"the import failed\"]')\n"
            "    os.wait()\n"
            "print(json.dumps({k: v for k, v in bad.items() if v}))\n")
    out = subprocess.run([sys.executable, "-c", code, *names], check=True, timeout=300, capture_output=True, text=True)
    assert out.stdout.strip() == "{}", out.stdout


def test_the_tools_moved_into_apps_keep_their_old_names_for_one_release():
    code = ("import warnings\nwarnings.simplefilter('error')\nimport gnuradio.neuralmimo.apps.harness as new\n"
            "warnings.simplefilter('always')\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            "    from gnuradio.neuralmimo.harness import compile_grc\n"
            "assert compile_grc is new.compile_grc, compile_grc\n"
            "assert [w.category for w in caught] == [DeprecationWarning] and 'apps.harness' in str(caught[0].message)\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)

"""The layout's rules (docs/architecture.md), checked on the real packages, statically and at run time.

Static pass over every source file, imports inside functions included (a lazy import is still an
arrow): no import circle in the core; no detector family imports another; ``channels``,
``datasets``, ``receiver``, ``site`` and ``training`` import no detector family (``channels`` and
``datasets`` no detector at all); nothing outside ``lab`` imports yaml, matplotlib, tqdm or sionna
at module level; in the block package only ``apps/`` imports the lab; the core root holds only
the cross-cutting leaves and the rooms.

Run-time probe: every module of the core outside the lab is imported alone (a fork of one
interpreter that has loaded numpy, torch and safetensors) and what it pulls in is compared with
that baseline: no GNU Radio, no lab, no lab-only library, no other family.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / "python"
CORE = PYTHON / "neuralmimo"
BLOCKS = PYTHON / "neuralmimo_gr"
LAB_ONLY = ("yaml", "matplotlib", "tqdm", "sionna")
FAMILIES = tuple(f"neuralmimo.detectors.{p.name}" for p in sorted((CORE / "detectors").iterdir())
                 if (p / "__init__.py").exists())
NO_FAMILY_ROOMS = ("neuralmimo.channels", "neuralmimo.datasets", "neuralmimo.receiver", "neuralmimo.site",
                   "neuralmimo.training")
LEAVES = {"__init__", "constellation", "realvalued", "snr", "metrics", "bundle", "params", "supervise", "envelope"}
ROOMS = {"receiver", "site", "training", "channels", "datasets", "detectors", "lab"}


def _load_report_script():
    """scripts/layout_report.py: the import graph this test checks (one reader of imports)."""
    spec = importlib.util.spec_from_file_location("layout_report", ROOT / "scripts" / "layout_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LAYOUT = _load_report_script()
TREE = LAYOUT.Tree(ROOT)


def _module_name(path: Path, base: Path, package: str) -> str:
    return LAYOUT.module_name(path, base, package)


def _imports(path: Path, name: str, top_level_only: bool = False) -> list[str]:
    """Every module ``path`` imports (inside functions too unless ``top_level_only``), the
    project's and third-party ones."""
    return LAYOUT.imports(path, name, TREE.exists, top_level_only)


def _graph(top_level_only: bool = False) -> dict[str, set[str]]:
    return {m: set(_imports(p, m, top_level_only)) for m, p in TREE.files.items() if _within(m, ["neuralmimo"])}


def _within(module: str, rooms) -> bool:
    return any(module == r or module.startswith(r + ".") for r in rooms)


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_core_root_holds_only_the_leaves_and_the_rooms():
    files = {p.stem for p in CORE.glob("*.py")}
    folders = {p.name for p in CORE.iterdir() if (p / "__init__.py").exists()}
    assert files == LEAVES, f"modules at the core root besides the leaves: {sorted(files - LEAVES)}"
    assert folders == ROOMS, sorted(folders ^ ROOMS)


def test_no_import_circles_lazy_imports_included():
    for top_level_only in (True, False):
        graph = TREE.graph(top_level_only)
        assert LAYOUT.circles(graph) == [], f"import circles ({'module level' if top_level_only else 'any'})"
    assert len(TREE.graph(within="neuralmimo.")) > 60  # the walk saw the whole package


def test_families_and_front_end_rooms_keep_to_themselves_lazy_imports_included():
    for module, deps in _graph().items():
        for fam in FAMILIES:
            if _within(module, [fam]):
                bad = [d for d in deps if _within(d, [f for f in FAMILIES if f != fam])]
                assert not bad, f"{module} (family {fam}) imports {bad}"
        if _within(module, NO_FAMILY_ROOMS):
            bad = [d for d in deps if _within(d, FAMILIES)]
            assert not bad, f"{module} imports the detector families {bad}"
        if _within(module, ("neuralmimo.channels", "neuralmimo.datasets")):
            bad = [d for d in deps if _within(d, ["neuralmimo.detectors"])]
            assert not bad, f"{module} imports {bad}"
        if not _within(module, ["neuralmimo.lab"]):
            bad = [d for d in deps if _within(d, ["neuralmimo.lab", "gnuradio", "pmt"])]
            assert not bad, f"{module} imports {bad}"


def test_lab_only_libraries_are_imported_at_module_level_only_in_the_lab():
    for module, deps in _graph(top_level_only=True).items():
        if _within(module, ["neuralmimo.lab"]):
            continue
        bad = [d for d in deps if _top(d) in LAB_ONLY]
        assert not bad, f"{module} imports {bad} at module level"


def test_in_the_block_package_only_apps_import_the_lab():
    seen = 0
    for p in sorted(BLOCKS.rglob("*.py")):
        name = _module_name(p, BLOCKS, "gnuradio.neuralmimo")
        if _within(name, ["gnuradio.neuralmimo.apps"]):
            continue
        seen += 1
        bad = [d for d in _imports(p, name) if _within(d, ["neuralmimo.lab"]) or _top(d) in ("matplotlib", "sionna")]
        assert not bad, f"{name} imports {bad}: only gnuradio.neuralmimo.apps may"
        bad = [d for d in _imports(p, name) if _within(d, ["gnuradio.neuralmimo.apps"])]
        assert not bad, f"block module {name} imports the apps {bad}"
    assert seen > 15


_PROBE = """
import importlib, json, os, sys
import numpy, torch, safetensors.torch
base = set(sys.modules)
out = {}
for name in sys.argv[1:]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            msg = json.dumps(sorted(set(sys.modules) - base))
        except Exception as exc:
            msg = json.dumps({"error": f"{type(exc).__name__}: {exc}"})
        with os.fdopen(w, "w") as f:
            f.write(msg)
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out[name] = json.loads(f.read())
    os.waitpid(pid, 0)
print(json.dumps(out))
"""


def _core_modules() -> list[str]:
    return sorted(m for m in _graph() if not _within(m, ["neuralmimo.lab"]))


@pytest.fixture(scope="module")
def loaded():
    modules = _core_modules()
    res = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True, timeout=600,
                         check=True)
    return json.loads(res.stdout)


def test_the_probe_sees_every_core_module(loaded):
    assert sorted(loaded) == _core_modules() and len(loaded) > 55
    errors = {m: v["error"] for m, v in loaded.items() if isinstance(v, dict)}
    # Sionna is needed only by UMi generation, called lazily: every module imports without it
    assert not errors, errors
    for m in ("neuralmimo.receiver.capture", "neuralmimo.site.retrain", "neuralmimo.receiver.framesync",
              "neuralmimo.detectors.hotswap", "neuralmimo.training.loop"):
        assert m in loaded


def test_at_run_time_no_core_module_pulls_in_gnuradio_the_lab_or_lab_libraries(loaded):
    for module, mods in loaded.items():
        bad = sorted({_top(m) for m in mods} & {*LAB_ONLY, "gnuradio", "pmt"})
        assert not bad, f"importing {module} imports {bad}"
        assert not [m for m in mods if _within(m, ["neuralmimo.lab"])], f"importing {module} imports the lab"


def test_at_run_time_rooms_pull_in_no_family_and_families_no_other(loaded):
    for module, mods in loaded.items():
        if _within(module, NO_FAMILY_ROOMS):
            bad = [m for m in mods if _within(m, FAMILIES)]
            assert not bad, f"importing {module} imports {bad}"
        for fam in FAMILIES:
            if _within(module, [fam]):
                bad = [m for m in mods if _within(m, [f for f in FAMILIES if f != fam])]
                assert not bad, f"importing {module} imports {bad}"


def test_one_folder_per_family_one_registry_line_and_one_row_in_the_lab_table():
    from neuralmimo.detectors import DATA_BUNDLES, REGISTRY
    from neuralmimo.lab.families import FAMILIES as TABLE

    assert sorted(f.detectors for f in TABLE) == sorted(f.rsplit(".", 1)[1] for f in FAMILIES)
    for name, cls in REGISTRY.items():
        assert cls.codec.architecture == name
        rows = [f for f in TABLE if name in f.architectures]
        assert len(rows) == 1, f"architecture {name} is in {len(rows)} rows of lab/families.py"
        assert cls.__module__.startswith(f"neuralmimo.detectors.{rows[0].detectors}.")
    for name in DATA_BUNDLES:
        assert len([f for f in TABLE if name in f.architectures]) == 1, name
    listed = {a for f in TABLE for a in f.architectures}
    assert listed == set(REGISTRY) | set(DATA_BUNDLES), listed ^ (set(REGISTRY) | set(DATA_BUNDLES))
    for f in TABLE:
        assert (ROOT / "configs" / f.pipeline / "quick.yaml").exists() and f.paper_config_path.exists()
        assert (CORE / "lab" / f.pipeline / "steps.py").exists() and hasattr(f.module(), "PIPELINE")

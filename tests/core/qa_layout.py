"""The layout's rules (docs/architecture.md), checked on the real packages.

Each package is imported in a fresh interpreter and the modules it pulls in are compared with a
baseline of what numpy, torch and safetensors load by themselves:

* no detector family imports another family;
* ``channels`` and ``datasets`` import no detector;
* nothing outside ``lab`` imports yaml, matplotlib, tqdm or sionna (at module level; Sionna is
  imported lazily inside UMi generation and the detector benchmark);
* no package of the core imports GNU Radio.

A static pass over every source file finds module-level imports of the lab-only libraries in
modules no package imports, and import cycles between the core's modules.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "python" / "neuralmimo"
LAB_ONLY = ("yaml", "matplotlib", "tqdm", "sionna")
FAMILIES = ("neuralmimo.detectors.sdnet", "neuralmimo.detectors.deepsic", "neuralmimo.detectors.mmnet",
            "neuralmimo.detectors.detnet")
PACKAGES = ["neuralmimo.constellation", "neuralmimo.realvalued", "neuralmimo.snr", "neuralmimo.receiver.frames",
            "neuralmimo.receiver.estimation", "neuralmimo.receiver.alignment", "neuralmimo.metrics", "neuralmimo.bundle", "neuralmimo.training",
            "neuralmimo.channels", "neuralmimo.datasets", "neuralmimo.detectors", "neuralmimo.detectors.registry",
            *FAMILIES]

_PROBE = """
import json, sys
import numpy, torch, safetensors.torch
base = set(sys.modules)
import importlib
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(set(sys.modules) - base)))
"""


def _loaded(module: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", _PROBE, module], capture_output=True, text=True, timeout=120,
                         check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def loaded():
    return {m: _loaded(m) for m in PACKAGES}


def _top(name: str) -> str:
    return name.split(".")[0]


def test_no_core_package_imports_lab_libraries_gnuradio_or_the_lab(loaded):
    for pkg, mods in loaded.items():
        bad = sorted({_top(m) for m in mods} & {*LAB_ONLY, "gnuradio", "pmt"})
        assert not bad, f"importing {pkg} imports {bad}"
        assert not [m for m in mods if m.startswith("neuralmimo.lab")], f"importing {pkg} imports the lab"


def test_no_family_imports_another_family(loaded):
    for fam in FAMILIES:
        others = [f for f in FAMILIES if f != fam]
        bad = [m for m in loaded[fam] if any(m == o or m.startswith(o + ".") for o in others)]
        assert not bad, f"{fam} imports {bad}"


def test_channels_and_datasets_import_no_detector(loaded):
    for pkg in ("neuralmimo.channels", "neuralmimo.datasets"):
        bad = [m for m in loaded[pkg] if m.startswith("neuralmimo.detectors")]
        assert not bad, f"{pkg} imports {bad}"


def _module_name(path: Path) -> str:
    rel = path.relative_to(CORE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _module_level_imports(path: Path) -> list[str]:
    """Absolute names of the modules ``path`` imports at module level (not inside functions)."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            # "from .pkg import sub" imports the submodule when there is one
            subs = [f"{mod}.{a.name}" for a in node.names
                    if (CORE.parent / (f"{mod}.{a.name}".replace(".", "/") + ".py")).exists()
                    or (CORE.parent / f"{mod}.{a.name}".replace(".", "/") / "__init__.py").exists()]
            out += subs or [mod]
    return out


def _sources():
    return sorted(CORE.rglob("*.py"))


def test_lab_only_libraries_are_imported_at_module_level_only_in_the_lab():
    for path in _sources():
        if "lab" in path.relative_to(CORE).parts:
            continue
        bad = [m for m in _module_level_imports(path) if _top(m) in LAB_ONLY]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad} at module level"


def test_no_import_cycles():
    graph = {}
    for path in _sources():
        graph[_module_name(path)] = {m for m in _module_level_imports(path) if _top(m) == "neuralmimo"}
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for n in graph.get(m, ()):
            if state.get(n) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m)
    assert len(graph) > 30  # the walk saw the whole package


def test_one_folder_per_family_and_one_registry_line_each():
    from neuralmimo.detectors import REGISTRY

    folders = sorted(p.name for p in (CORE / "detectors").iterdir() if (p / "__init__.py").exists())
    assert folders == sorted(f.rsplit(".", 1)[1] for f in FAMILIES)
    for name, cls in REGISTRY.items():
        assert cls.codec.architecture == name
        assert cls.__module__.startswith(tuple(FAMILIES))

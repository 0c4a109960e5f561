#!/usr/bin/env python3
"""The import graph of gr-neuralmimo's Python tree, as text: rooms with their files and lines,
the arrows between rooms, and the import circles (module-level imports alone, and with the
imports inside functions). ``tests/core/qa_layout.py`` checks the layout's rules on the same
graph.

    python3 scripts/layout_report.py [REPO]      # REPO: a checkout (default: this one)

Reads the sources as text (nothing is imported); runs with any Python 3.10+.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

PACKAGES = (("python/neuralmimo", "neuralmimo"), ("python/neuralmimo_gr", "gnuradio.neuralmimo"))


def module_name(path: Path, base: Path, package: str) -> str:
    parts = [package, *path.relative_to(base).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports(path: Path, name: str, exists, top_level_only: bool = False) -> list[str]:
    """Absolute names of the modules ``path`` (module ``name``) imports: at module level only, or
    every import statement (inside functions too). ``exists(module)`` tells whether a
    ``from package import name`` names a submodule."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = []
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            subs = [f"{mod}.{a.name}" for a in node.names if exists(f"{mod}.{a.name}")]
            out += subs or [mod]
    return out


class Tree:
    """The project's modules (``neuralmimo`` and ``gnuradio.neuralmimo``) and their imports."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.files: dict[str, Path] = {}
        for rel, package in PACKAGES:
            base = self.root / rel
            for p in sorted(base.rglob("*.py")):
                self.files[module_name(p, base, package)] = p

    def exists(self, module: str) -> bool:
        return module in self.files

    def graph(self, top_level_only: bool = False, within: str = "") -> dict[str, set[str]]:
        """``module -> modules of the project it imports`` for the modules under ``within``."""
        return {m: {d for d in imports(p, m, self.exists, top_level_only) if d in self.files}
                for m, p in self.files.items() if m == within or m.startswith(within)}

    def room(self, module: str) -> str:
        """The room of a module: its package's first folder (``receiver``, ``detectors/sdnet``
        for a family), or ``root`` for a module at a package's top."""
        for _, package in PACKAGES:
            if module == package or module.startswith(package + "."):
                rest = module[len(package) + 1:].split(".") if module != package else []
                path = self.files[module]
                if len(rest) <= 1 and path.name != "__init__.py" or not rest:
                    return f"{package} (root)"
                room = rest[0]
                if room == "detectors" and len(rest) > 1 and (path.parent.name != "detectors"):
                    room = f"detectors/{rest[1]}"
                return f"{package}.{room}"
        raise KeyError(module)


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10_000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def report(root: Path) -> str:
    tree = Tree(root)
    rooms: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for m, p in tree.files.items():
        r = rooms[tree.room(m)]
        r[0] += 1
        r[1] += len(p.read_text().splitlines())
    lines = [f"rooms of {root} (files, lines):"]
    lines += [f"  {name:<40} {f:>3} files {n:>6} lines" for name, (f, n) in sorted(rooms.items())]
    for label, top in (("module-level", True), ("module-level and inside functions", False)):
        g = tree.graph(top_level_only=top)
        arrows = defaultdict(int)
        for m, deps in g.items():
            for d in deps:
                a, b = tree.room(m), tree.room(d)
                if a != b:
                    arrows[(a, b)] += 1
        cs = circles(g)
        lines.append(f"imports {label}: {sum(len(d) for d in g.values())} between modules, {len(arrows)} arrows "
                     f"between rooms, {len(cs)} circle(s)")
        lines += [f"  circle: {' <-> '.join(c)}" for c in cs]
        if not top:
            lines += [f"  {a} -> {b}: {n}" for (a, b), n in sorted(arrows.items())]
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]))

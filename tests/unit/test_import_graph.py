"""The floors of the code hold: no import runs up a floor, and no import runs in a circle (lazy, function-level and
TYPE_CHECKING imports included: they are read from the source, not from what happens to be imported).

Floors, top to bottom: bench -> jobs -> cli -> actors -> storage -> xray; inside xray its sub-packages in the order
of XRAY_FLOORS (xray/__init__.py says what each holds). A module may import its own floor and the floors below.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FLOORS = ("xray", "storage", "actors", "cli", "jobs", "bench")
XRAY_FLOORS = ("codec", "tiles", "metadata", "evaluation", "models", "synth", "calibration", "report")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {_module_name(p): p for top in FLOORS for p in sorted((REPO / top).rglob("*.py"))
            if "__pycache__" not in p.parts}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports anywhere in its source, resolved to modules (a name imported from a
    package that is itself a module counts as that module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                     for alias in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(path, modules) - {name} for name, path in modules.items()}


def floor_of(module: str) -> tuple[int, int]:
    parts = module.split(".")
    top = FLOORS.index(parts[0])
    inner = XRAY_FLOORS.index(parts[1]) + 1 if parts[0] == "xray" and len(parts) > 2 else 0
    return top, inner


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    bad = []
    for src, targets in edges.items():
        for dst in targets:
            (s_top, s_in), (d_top, d_in) = floor_of(src), floor_of(dst)
            if d_top > s_top or (d_top == s_top == 0 and d_in > s_in):
                bad.append(f"{src} -> {dst}")
    return sorted(bad)


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_graph_is_read_from_every_package():
    edges = graph()
    assert {name.split(".")[0] for name in edges} == set(FLOORS)
    # a lazy import inside a function is seen: quantize_inputs builds models only for a checkpoint
    assert "xray.models.registry" in edges["jobs.quantize_inputs"]
    assert "cli.flags" in edges["cli.config_files"]


def test_no_import_runs_up_a_floor():
    assert upward_imports(graph()) == []


def test_no_import_circles():
    assert circles(graph()) == []


@pytest.mark.parametrize("package", XRAY_FLOORS)
def test_every_xray_room_says_what_it_holds(package):
    doc = ast.get_docstring(ast.parse((REPO / "xray" / package / "__init__.py").read_text()))
    assert doc and "import" in doc.lower(), f"xray/{package}/__init__.py: say what it holds and what it may import"


def test_the_checks_catch_what_they_are_for():
    # an upward import and a circle, made up: the same functions report them
    edges = {"xray.codec.png": {"xray.models.registry"}, "xray.models.registry": set(),
             "storage.fs": {"jobs.score"}, "jobs.score": {"storage.fs"}}
    assert upward_imports(edges) == ["storage.fs -> jobs.score", "xray.codec.png -> xray.models.registry"]
    assert circles(edges) == [["jobs.score", "storage.fs"]]

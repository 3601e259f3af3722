"""The tree shows the architecture: one import name, sub-packages as rooms, no import cycles, small modules."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).parents[2]
# The fixed top-level folders and the names they install as (pyproject.toml's package-dir).
ROOTS = {
    "gcbulk": REPO / "gcbulk",
    "gcbulk.engine": REPO / "engine",
    "gcbulk.state": REPO / "state",
    "gcbulk.emulator": REPO / "emulator",
}
ROOMS = ("cli", "gc", "plan", "results", "service", "upload")
# Modules stay small enough to read in one sitting. The bound is loose on purpose: a tight one split classes into mixins
# that shared undeclared state (issue 29); a module that outgrows this should be split along a real seam.
MAX_MODULE_LINES = 700


def _modules() -> dict[str, Path]:
    found = {}
    for prefix, folder in ROOTS.items():
        for path in folder.rglob("*.py"):
            parts = [p for p in path.relative_to(folder).with_suffix("").parts if p != "__init__"]
            found[".".join([prefix, *parts])] = path
    return found


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every gcbulk module this one imports, at any level (inside functions and TYPE_CHECKING blocks too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                names.add(child if child in known else node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {name for name in names if name in known}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_back_through_others() -> None:
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    assert _cycles(graph) == []


def test_every_import_uses_the_one_gcbulk_name() -> None:
    stray = []
    for folder in (*ROOTS.values(), REPO / "tests", REPO / "benchmarks"):
        for path in folder.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                module = node.module if isinstance(node, ast.ImportFrom) and node.level == 0 else None
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [module or ""]
                stray += [
                    f"{path.relative_to(REPO)}: {n}"
                    for n in names
                    if n.split(".")[0] in ("engine", "state", "emulator")
                ]
    assert stray == []


def test_the_engine_shows_its_rooms_each_with_a_docstring() -> None:
    for room in ROOMS:
        init = REPO / "engine" / room / "__init__.py"
        assert init.is_file(), room
        assert ast.get_docstring(ast.parse(init.read_text())), f"engine/{room}/__init__.py says what the room is for"


def test_the_wheel_lists_every_package_of_the_tree() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {name for name, path in _modules().items() if path.name == "__init__.py"}
    # Folders of data only (no module), listed too so that setuptools packs them without warning of them.
    data_only = {name for name in config["package-data"] if name not in packages}
    assert data_only == {"gcbulk.schemas"}
    assert set(config["packages"]) == packages | data_only
    assert config["package-dir"] == {name: str(path.relative_to(REPO)) for name, path in ROOTS.items()}


def test_modules_stay_small() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}

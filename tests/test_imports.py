"""The package's modules import each other in one direction only: the graph of every
``import`` statement (at module level and inside functions) between ``sgdnoise`` modules has
no cycle, so each module can be read, and imported, after the modules below it; and the
README's package table names exactly the modules there are."""

from __future__ import annotations

import ast
import pathlib

import pytest

import sgdnoise

ROOT = pathlib.Path(sgdnoise.__file__).parent


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: pathlib.Path, modules: set[str]) -> set[str]:
    """The ``sgdnoise`` modules that ``path`` imports anywhere in its text (``from a import
    b`` counts ``a.b`` when that is a module, else ``a``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in modules else base)
    return {m for m in found if m in modules and m != name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(ROOT.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "sgdnoise.covariance" in graph["sgdnoise.curvature"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


@pytest.mark.parametrize("graph, cycle", [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b", "c"}, "b": set(), "c": {"c2"}, "c2": {"c"}}, ["c", "c2", "c"]),
])
def test_find_cycle_sees_a_cycle_and_only_a_cycle(graph, cycle):
    assert find_cycle(graph) == cycle


def test_relative_and_from_imports_resolve_to_modules():
    """``from . import x``, ``from .x import f`` and ``import sgdnoise.x`` all give edges."""
    graph = import_graph()
    assert "sgdnoise.covariance" in graph["sgdnoise.stability"]  # from .covariance import ...
    assert "sgdnoise.validate" in graph["sgdnoise.models"]  # from .validate import ...


# ------------------------------------------------------- the README's table of the package


def readme_table() -> dict[str, str]:
    """Module name -> its row of the README's package table (a row may name several)."""
    text = (ROOT.parents[1] / "README.md").read_text()
    table = text[text.index("| module | what it holds |"):].split("\n\n")[0]
    rows = {}
    for line in table.splitlines()[2:]:
        first, rest = line.strip("|").split("|", 1)
        for name in first.replace("`", "").split(","):
            rows[name.strip()] = rest
    return rows


def test_readme_package_table_names_every_module_and_submodule():
    """Every library module and package of ``src/sgdnoise`` (chapters apart) has a row, no
    row names a module that does not exist, and a package's row names each submodule."""
    library = {p.stem for p in ROOT.glob("*.py") if not p.stem.startswith("_")}
    packages = {p.parent.name: p.parent for p in ROOT.glob("*/__init__.py")}
    library |= set(packages) - {"chapters"}
    rows = readme_table()
    assert set(rows) == library, (f"missing: {sorted(library - set(rows))}, "
                                  f"no such module: {sorted(set(rows) - library)}")
    for name, folder in packages.items():
        if name == "chapters":
            continue
        subs = {p.stem for p in folder.glob("*.py") if not p.stem.startswith("_")}
        missing = {s for s in subs if f"`{s}`" not in rows[name]}
        assert not missing, f"the row of {name} does not name {sorted(missing)}"

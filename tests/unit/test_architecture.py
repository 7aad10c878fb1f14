"""The layout's rules, checked on the source tree: no import cycle, small modules, one-line docstrings,
a dozen top-level modules, and every named query defined once and used (issue 12)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "bxbatch"
MAX_LINES = 500
MAX_TOP_LEVEL = 12


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The bxbatch modules ``name`` imports, at the top or inside a function (a lazy import is still an edge)."""
    found: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            for alias in node.names:
                if f"{module}.{alias.name}" in MODULES:
                    found.add(f"{module}.{alias.name}")
                elif module in MODULES:
                    found.add(module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in MODULES)
    found.discard(name)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    # a package's __init__ importing its own submodules (to register them) is not a cycle of ideas
    for name in graph:
        graph[name] = {m for m in graph[name] if not (MODULES[name].name == "__init__.py" and m.startswith(name + "."))}
    assert _cycles(graph) == []


def test_no_module_over_500_lines() -> None:
    sizes = {name: len(path.read_text(encoding="utf-8").splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in sizes.items() if n > MAX_LINES} == {}


def test_at_most_a_dozen_top_level_modules() -> None:
    top = [
        p.name for p in SRC.iterdir() if (p.suffix == ".py" and p.name != "__init__.py") or (p / "__init__.py").exists()
    ]
    assert len(top) <= MAX_TOP_LEVEL, sorted(top)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_says_what_it_owns(name: str) -> None:
    doc = ast.get_docstring(ast.parse(MODULES[name].read_text(encoding="utf-8")))
    assert doc, f"{name} has no docstring"
    first = doc.splitlines()[0]
    assert first.endswith(".") and len(first) <= 120, f"{name}: {first!r}"


def _named_queries() -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for path in sorted((SRC / "queries").glob("*.sql")):
        if path.name.startswith("schema_"):
            continue  # the ledger's DDL, applied whole
        for name in re.findall(r"(?m)^-- name: (\w+)\s*$", path.read_text(encoding="utf-8")):
            counts[(path.stem, name)] = counts.get((path.stem, name), 0) + 1
    return counts


def test_every_named_query_is_defined_once_and_used() -> None:
    queries = _named_queries()
    assert queries, "no named query found: the test looks in the wrong place"
    assert [q for q, n in queries.items() if n > 1] == []
    code = "\n".join(p.read_text(encoding="utf-8") for p in MODULES.values())
    unused = [f"{file}.{name}" for file, name in queries if not re.search(rf"[\"']{name}[\"']", code)]
    assert unused == []


def test_no_private_imports_across_modules() -> None:
    """``from bxbatch.x import _name`` couples a module to another's internals: make the name public or move it."""
    found = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bxbatch"):
                found += [
                    f"{name}: {node.module}.{a.name}"
                    for a in node.names
                    if a.name.startswith("_") and a.name != "__version__"
                ]
    assert found == []

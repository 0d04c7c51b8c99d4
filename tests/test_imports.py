"""The package's layering: no import cycle (imports inside functions count too), argparse only in cli.py,
Streamlit never in the package. Read from the source with ast; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "aligndebug"


def _modules() -> dict[str, Path]:
    return {p.stem: p for p in PKG.glob("*.py")}


def _imports(path: Path) -> list[tuple[str, str]]:
    """(module imported, kind) for every import in the file, at any depth: kind 'pkg' for aligndebug
    modules (by bare name), 'ext' for anything else (top-level name)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1 or mod.split(".")[0] == "aligndebug":
                base = mod.split(".")[-1] if node.level == 0 and mod != "aligndebug" else (mod if node.level else "")
                if base and base != "aligndebug":
                    out.append((base.split(".")[0], "pkg"))
                else:  # `from . import x` / `from aligndebug import x`: x is a module or a name of __init__
                    out.extend((a.name, "pkg") for a in node.names)
            elif node.level == 0:
                out.append((mod.split(".")[0], "ext"))
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "aligndebug" and len(parts) > 1:
                    out.append((parts[1], "pkg"))
                else:
                    out.append((parts[0], "ext"))
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: {t for t, kind in _imports(p) if kind == "pkg" and t in mods and t != m} for m, p in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from .b import f\n")
    b.write_text("def g():\n    from .a import h\n")
    graph = {p.stem: {t for t, k in _imports(p) if k == "pkg"} for p in (a, b)}
    assert find_cycles(graph) == [["a", "b"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_package_has_no_import_cycle():
    graph = _graph()
    assert len(graph) > 20  # the walk found the package
    assert "models" in graph["extract"] and "triage" in graph["cli"]  # and reads its imports
    assert find_cycles(graph) == []


def test_argparse_only_in_cli_and_streamlit_never_in_the_package():
    for name, path in _modules().items():
        ext = {t for t, kind in _imports(path) if kind == "ext"}
        assert "streamlit" not in ext, name
        if name != "cli":
            assert "argparse" not in ext, name

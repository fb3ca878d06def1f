"""No import cycles among the modules of slp and of experiments/.

The graph is read from the source (``ast``), not by importing: an edge ``a -> b`` for every
``import b`` or ``from b import ...`` in ``a``, at any depth (an import inside a function
counts: it is a cycle the moment that function runs), except under ``if TYPE_CHECKING:``.
A module importing its own parent package is not an edge (importing ``slp.data._cache``
runs ``slp/data/__init__.py`` first either way). A cycle is a strongly connected component
of more than one module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Cycles tolerated for now (none: the interpreter is layered, interpreter -> rules -> registry
# -> tracer -> routes).
KNOWN: frozenset[str] = frozenset()


def modules(folder: Path) -> dict[str, Path]:
    """``{dotted name: file}`` of every module under ``folder``.

    A package (a folder with ``__init__.py``) is named from its parent, so ``slp/data/idx.py``
    is ``slp.data.idx``; a plain folder of scripts from itself, so ``experiments/lab/cli.py``
    is ``lab.cli`` (what the scripts import, with ``experiments/`` on the path).
    """
    root = folder.parent if (folder / "__init__.py").is_file() else folder
    found = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _runtime_nodes(tree: ast.AST):
    """Every node of ``tree`` except the bodies of ``if TYPE_CHECKING:``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                todo.extend(child.orelse)
            else:
                todo.append(child)


def imported(name: str, path: Path) -> set[str]:
    """The dotted names that module ``name`` (file ``path``) imports, relative ones resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(folders: list[Path]) -> dict[str, set[str]]:
    """``{module: modules it imports}`` among the modules of ``folders``."""
    mods = {}
    for folder in folders:
        mods.update(modules(folder))
    return {
        m: {d for d in imported(m, p) if d in mods and d != m and not m.startswith(d + ".")}
        for m, p in mods.items()
    }


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_slp_and_experiments():
    folders = [ROOT / "slp", ROOT / "experiments"]
    graph = import_graph(folders)
    assert {"slp.checkpoints", "slp.data", "lab.cli", "zoo"} <= set(graph)
    found = cycles(graph)
    others = [" <-> ".join(sorted(c)) for c in found if c != KNOWN]
    assert not others, "import cycles:\n" + "\n".join(others)
    if KNOWN in found:
        pytest.xfail("the interpreter's known cycle: " + " <-> ".join(sorted(KNOWN)))


def test_the_private_package_imports_no_public_module():
    """``slp._src`` is the ground floor: the public modules re-export from it, never back."""
    graph = import_graph([ROOT / "slp"])
    upward = {
        m: sorted(d for d in deps if not d.startswith("slp._src") and d != "slp")
        for m, deps in graph.items()
        if m.startswith("slp._src")
    }
    assert {m: d for m, d in upward.items() if d} == {}
    # and no spelling of such an import escapes the graph (a string given to importlib)
    for path in sorted((ROOT / "slp" / "_src").rglob("*.py")):
        text = path.read_text()
        for public in ("slp.network", "slp.projections", "slp.attributions", "slp.data"):
            assert f"import {public}" not in text and f"from {public} " not in text, path


def test_the_graph_sees_every_kind_of_import_and_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg import a\n",
        "a.py": "import pkg.b\n",
        "b.py": "def f():\n    from .sub import c\n",
        "sub/__init__.py": "",
        "sub/c.py": "from .. import a\nfrom pkg import sub\n",
        "d.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n"
            "else:\n    import json\n"
        ),
        "e.py": "from pkg.d import x\n",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph([pkg])
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.b"},
        "pkg.b": {"pkg.sub", "pkg.sub.c"},  # inside a function, relative
        "pkg.sub": set(),
        "pkg.sub.c": {"pkg.a"},  # its parent packages are not edges
        "pkg.d": set(),  # the TYPE_CHECKING import is not an edge
        "pkg.e": {"pkg.d"},
    }
    assert cycles(graph) == [frozenset({"pkg.a", "pkg.b", "pkg.sub.c"})]
    assert modules(tmp_path / "pkg")["pkg.sub.c"] == pkg / "sub" / "c.py"

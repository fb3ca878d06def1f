"""Every public function and class has a complete docstring, and its examples run.

The public names are those of slp's docstring (the list ``tests/packaging/test_public_api.py``
keeps in step with each module's ``__all__``); a name exported by several modules is checked
once, under its first listing. A docstring is complete when it has

* a summary: one line, then a blank line (or nothing more);
* ``Args:`` naming every parameter (``*args`` and ``**kwargs`` by their names, with or
  without stars; an entry ``a, b:`` names both), for a function or for a class whose
  constructor takes arguments (its own ``__init__``: fields of a NamedTuple or dataclass
  are its attributes, not Args);
* ``Returns:`` (or ``Yields:``) for a function that returns a value;
* ``Raises:`` for a function whose body raises (a ``raise`` statement of its own);
* ``Examples:`` with at least one ``>>>`` line (the section the API reference renders as
  code; a singular ``Example:`` would be rendered as prose, so it does not count).

The examples run as doctests (`test_examples_run`), with ``slp``, ``jax``, ``jnp`` and
``np`` imported. `INCOMPLETE` lists the public names whose docstrings still miss parts:
the test fails when a new name is incomplete and when a listed one is completed (remove it
from the list), so the list only shrinks.
"""

from __future__ import annotations

import ast
import doctest
import importlib
import importlib.util
import inspect
import re
import textwrap
from pathlib import Path

import pytest

import slp


def _listed() -> dict[str, list[str]]:
    """slp's docstring list of public names, read as tests/packaging/test_public_api.py reads it."""
    path = Path(__file__).resolve().parents[1] / "packaging" / "test_public_api.py"
    spec = importlib.util.spec_from_file_location("_public_api", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.listed_names(slp.__doc__)


LISTED = _listed()

SECTION = re.compile(r"^\s*(\w+(?: \w+)?):\s*$", re.M)


def public_objects() -> dict[str, object]:
    """Public functions and classes by their first listed name (constants and modules left out)."""
    seen: dict[int, str] = {}
    found: dict[str, object] = {}
    for module, names in LISTED.items():
        mod = importlib.import_module(module)
        for name in names:
            obj = getattr(mod, name)
            if not (inspect.isclass(obj) or inspect.isroutine(obj) or hasattr(obj, "__wrapped__")):
                continue  # constants (a colour map is callable, but not a function) and modules
            if id(obj) in seen:
                continue
            seen[id(obj)] = f"{module}.{name}"
            found[f"{module}.{name}"] = obj
    return found


def sections(doc: str) -> dict[str, str]:
    """The docstring's Google-style sections: title -> its text."""
    doc = inspect.cleandoc(doc)
    marks = [m for m in SECTION.finditer(doc) if m.group(1)[0].isupper()]
    return {
        m.group(1): doc[m.end() : (marks[i + 1].start() if i + 1 < len(marks) else len(doc))]
        for i, m in enumerate(marks)
    }


def documented_args(text: str) -> set[str]:
    """Parameter names of an Args section: its least-indented entries ``name:``."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return set()
    indent = min(len(line) - len(line.lstrip()) for line in lines)
    names: set[str] = set()
    for line in lines:
        if len(line) - len(line.lstrip()) == indent and ":" in line:
            head = line.split(":", 1)[0]
            head = re.sub(r"\s*\(.*\)$", "", head)  # "name (type)"
            names |= {n.strip().lstrip("*") for n in head.split(",")}
    return names


def _own_function(obj):
    return obj.__init__ if inspect.isclass(obj) else obj


def parameters(obj) -> list[str] | None:
    """The parameters to document: a function's, a class's own ``__init__``'s (None: none)."""
    if inspect.isclass(obj):
        if "__init__" not in vars(obj) or hasattr(obj, "_fields"):
            return None
        if hasattr(obj, "__dataclass_fields__") or issubclass(obj, BaseException):
            return None
    try:
        sig = inspect.signature(_own_function(obj))
    except (TypeError, ValueError):
        return None
    names = [p.name for p in sig.parameters.values() if p.name not in ("self", "cls")]
    return names or None


def _function_node(obj) -> ast.FunctionDef | None:
    try:
        source = textwrap.dedent(inspect.getsource(inspect.unwrap(obj)))
    except (OSError, TypeError):
        return None
    node = ast.parse(source).body[0]
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _own_nodes(node):
    """The statements of a function, not of the functions and classes defined inside it."""
    for child in ast.iter_child_nodes(node):
        if not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            yield child
            yield from _own_nodes(child)


def returns_value(obj) -> bool:
    if inspect.isclass(obj):
        return False
    ann = inspect.signature(obj).return_annotation
    if ann is not inspect.Signature.empty:
        return ann not in (None, "None", "NoReturn")
    node = _function_node(obj)
    return node is not None and any(
        isinstance(n, ast.Return) and n.value is not None for n in _own_nodes(node)
    )


def raises(obj) -> bool:
    node = _function_node(_own_function(obj) if inspect.isclass(obj) else obj)
    return node is not None and any(
        isinstance(n, ast.Raise) and n.exc is not None for n in _own_nodes(node)
    )


def missing_parts(obj) -> tuple[str, ...]:
    doc = inspect.getdoc(obj) if inspect.isclass(obj) else obj.__doc__
    if not doc or not doc.strip():
        return ("docstring",)
    doc = inspect.cleandoc(doc)
    lines = doc.splitlines()
    missing = []
    if not lines[0].strip() or (len(lines) > 1 and lines[1].strip()):
        missing.append("summary")
    found = sections(doc)
    params = parameters(obj)
    if params is not None:
        named = documented_args(found.get("Args", found.get("Arguments", "")))
        if not set(params) <= named:
            missing.append("Args")
    if returns_value(obj) and not ({"Returns", "Yields"} & set(found)):
        missing.append("Returns")
    if raises(obj) and "Raises" not in found:
        missing.append("Raises")
    if ">>>" not in found.get("Examples", ""):
        missing.append("Examples")
    return tuple(missing)


INCOMPLETE: dict[str, tuple[str, ...]] = {}
"""Public names whose docstrings still miss parts, with the parts; this list only shrinks."""


def test_every_public_docstring_is_complete_or_listed():
    found = {name: m for name, obj in public_objects().items() if (m := missing_parts(obj))}
    new = {n: m for n, m in found.items() if INCOMPLETE.get(n) != m}
    done = {n: m for n, m in INCOMPLETE.items() if found.get(n) != m}
    assert not new and not done, (
        "docstrings: complete these parts (or, if a listed name improved, update INCOMPLETE):\n"
        + "".join(f"  {n}: {', '.join(m)}\n" for n, m in sorted(new.items()))
        + ("listed in INCOMPLETE but now different (shrink the list):\n" if done else "")
        + "".join(f"  {n}: listed {', '.join(m)}\n" for n, m in sorted(done.items()))
    )


def _examples() -> list[tuple[str, doctest.DocTest]]:
    finder = doctest.DocTestFinder(recurse=False, exclude_empty=True)
    out = []
    for name, obj in public_objects().items():
        module = importlib.import_module(obj.__module__)
        for test in finder.find(obj, name, module=module, globs={}):
            if not test.examples:
                continue
            out.append((name, test))
    return out


EXAMPLES = _examples()


@pytest.mark.parametrize("name, test", EXAMPLES, ids=[n for n, _ in EXAMPLES])
def test_examples_run(name, test):
    import jax
    import jax.numpy as jnp
    import numpy as np

    test.globs = {"slp": slp, "jax": jax, "jnp": jnp, "np": np}
    runner = doctest.DocTestRunner(
        optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False
    )
    out: list[str] = []
    result = runner.run(test, out=out.append, clear_globs=True)
    assert result.failed == 0, f"{name}'s example failed:\n" + "".join(out)


@pytest.mark.parametrize(
    "doc, missing",
    [
        ("", ("docstring",)),
        ("Two\nlines.\n\nExamples:\n  >>> 1\n  1", ("summary", "Args", "Returns")),
        (
            "Sum.\n\nArgs:\n  a, b: numbers.\n\nReturns:\n  a + b.\n\nExamples:\n  >>> 1\n  1",
            (),
        ),
        ("Sum.\n\nArgs:\n  a: a number.\n\nReturns:\n  a + b.\n", ("Args", "Examples")),
    ],
)
def test_the_checker_finds_missing_parts(doc, missing):
    def add(a, b):
        return a + b

    add.__doc__ = doc
    assert missing_parts(add) == missing


def test_the_checker_wants_raises_where_a_function_raises():
    def positive(x: int) -> int:
        """Its argument.

        Args:
          x: a positive number.

        Returns:
          x.

        Examples:
          >>> 1
          1
        """
        if x <= 0:
            raise ValueError(x)
        return x

    assert missing_parts(positive) == ("Raises",)

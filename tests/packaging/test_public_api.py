"""The public API is listed once, in slp's docstring: every public module and its ``__all__``.

Adding a name to a module's ``__all__`` or removing one, or adding a public module, without
updating that list fails here.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

import pytest

import slp

_MODULE = re.compile(r"``(slp(?:\.\w+)*)``")
_NAME = re.compile(r"``(\w+)``")


def listed_names(doc: str) -> dict[str, list[str]]:
    """The docstring's "Public names" list: ``{module: [name, ...]}`` in the order written.

    A line that is only a module in double backticks starts a module; the indented lines
    under it hold its names, each in double backticks; any other line ends the list.
    """
    lines = doc.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Public names"))
    listed: dict[str, list[str]] = {}
    module = None
    for line in lines[start + 1 :]:
        if (m := _MODULE.fullmatch(line)) is not None:
            module = m.group(1)
            assert module not in listed, f"{module} is listed twice"
            listed[module] = []
        elif module is not None and line.startswith("    "):
            listed[module] += _NAME.findall(line)
        elif module is not None:
            break
    return listed


LISTED = listed_names(slp.__doc__)


def test_the_list_has_every_public_module_and_only_those():
    on_disk = {m.name for m in pkgutil.iter_modules(slp.__path__) if not m.name.startswith("_")}
    assert on_disk == set(slp._MODULES), "slp._MODULES (the lazy modules) differs from slp/"
    assert set(LISTED) == {"slp"} | {f"slp.{m}" for m in on_disk}


@pytest.mark.parametrize("module", sorted(LISTED))
def test_each_modules_all_is_its_list(module):
    mod = importlib.import_module(module)
    names = list(mod.__all__)
    assert len(names) == len(set(names)), f"{module}.__all__ names something twice"
    assert len(LISTED[module]) == len(set(LISTED[module])), f"{module} listed twice over"
    added = sorted(set(names) - set(LISTED[module]))
    removed = sorted(set(LISTED[module]) - set(names))
    assert not added and not removed, (
        f"{module}.__all__ and slp's docstring differ: in __all__ only {added}, "
        f"in the docstring only {removed}; update the list in slp/__init__.py"
    )
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module}.__all__ names what it does not define: {missing}"


def test_the_parser_reads_the_format_and_stops_at_the_next_paragraph():
    doc = (
        "Intro\n\nPublic names, by module:\n\n``slp``\n    ``a``, ``B``,\n    ``c``\n"
        "``slp.x``\n    ``d``\n\nNext paragraph with ``slp.y``\n"
    )
    assert listed_names(doc) == {"slp": ["a", "B", "c"], "slp.x": ["d"]}

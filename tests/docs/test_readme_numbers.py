"""Every number in the result sections of the README and the docs site comes from a committed
results file.

The numbers and where each comes from are the table of ``readme_numbers.py`` (`NUMBERS`).
Three checks:

* each row's numbers are the rounded values of its file, and the section cites that file
  (``results/<name>.json`` or its ``.md`` report);
* no number in the checked sections escapes the table, apart from `ALLOWED` and what
  stands in inline code, code blocks or link targets (commands, option values and file
  names);
* the checked sections exist, so renaming or moving one does not skip it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from readme_numbers import ALLOWED, CHECKED, NUMBERS, Numbers, Section, Value, at, load

ROOT = Path(__file__).resolve().parents[2]

NUMBER = re.compile(
    r"(?<![\w.])(?P<num>[−+-]?\d+(?:,\d{3})*(?:\.\d+)*(?:e[−+-]?\d+)?)"
    r"(?P<suffix>k|M|st|nd|rd|th)?(?!\w)"
)
"""A printed number: signs, thousands separators, decimals, exponents; a "k"/"M" or
ordinal suffix. Digits glued to letters (2CONV, H100, float32, α2β1) are names."""

CODE = re.compile(r"`[^`\n]*`")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK_TARGET = re.compile(r"\]\([^)\s]*\)")


# --- reading the pages ------------------------------------------------------------------------


class Block(NamedTuple):
    """One section of a page: heading text, top-level parent, text."""

    heading: str
    parent: str
    text: str


def page_blocks(page: str) -> list[Block]:
    """The README's ``##`` and ``###`` sections (parent: the ``##`` above); a docs page is
    one block, titled by its ``#`` heading."""
    levels = ("##", "###") if page == "README.md" else ("#",)
    blocks, heading, parent, lines = [], "", "", []
    for line in (ROOT / page).read_text(encoding="utf-8").splitlines(keepends=True):
        m = re.match(r"(#+) (.*)", line)
        if m and m.group(1) in levels:
            blocks.append(Block(heading, parent, "".join(lines)))
            heading = m.group(2).strip()
            parent = heading if m.group(1) == levels[0] else parent
            lines = []
        lines.append(line)
    blocks.append(Block(heading, parent, "".join(lines)))
    return [b for b in blocks if b.heading]


def checked_blocks() -> list[tuple[Section, Block]]:
    return [(s, b) for s in CHECKED for b in page_blocks(s.page) if b.parent.startswith(s.heading)]


def block_for(section: Section) -> Block:
    found = [b for b in page_blocks(section.page) if b.heading.startswith(section.heading)]
    assert len(found) == 1, (
        f"{len(found)} sections of {section.page} start with {section.heading!r}"
    )
    return found[0]


# --- the checks --------------------------------------------------------------------------------


def _flexible(pattern: str) -> str:
    """``pattern`` with each space matching any run of whitespace (README lines wrap)."""
    return pattern.replace("\\ ", " ").replace(" ", r"\s+")


def _normal(text: str) -> str:
    text = text.replace("−", "-").lstrip("+")
    return re.sub(
        r"e([+-])0*(\d)", lambda m: "e" + ("-" if m.group(1) == "-" else "") + m.group(2), text
    )


def expected(value: Value, doc: Any) -> list[str] | str:
    """The printed forms ``value`` allows, or why it cannot be printed (a claim that fails)."""
    got = value.get(doc) if callable(value.get) else at(doc, value.get)
    options = got if isinstance(got, list) else [got]
    if value.fmt == "s":
        return [str(o) for o in options]
    if any(isinstance(o, (str, dict)) or o is None for o in options):
        return f"not a number: {got!r}"
    return [_normal(format(o * value.scale if value.scale != 1 else o, value.fmt)) for o in options]


def _excluded_spans(text: str) -> list[tuple[int, int]]:
    spans = [m.span() for m in FENCE.finditer(text)]
    spans += [m.span() for m in CODE.finditer(text)] + [
        m.span() for m in LINK_TARGET.finditer(text)
    ]
    for pattern in ALLOWED:
        spans += [m.span() for m in re.finditer(pattern, text)]
    return spans


def _inside(pos: int, spans) -> bool:
    return any(a <= pos < b for a, b in spans)


def _numbers(text: str, start: int, end: int, skip) -> list[re.Match]:
    return [m for m in NUMBER.finditer(text, start, end) if not _inside(m.start("num"), skip)]


@pytest.mark.parametrize(
    "entry", NUMBERS, ids=[f"{e.section.heading[:12]}:{e.pattern[:40]}" for e in NUMBERS]
)
def test_readme_number_matches_its_results_file(entry: Numbers):
    block = block_for(entry.section)
    stem = re.escape(Path(entry.source).stem)
    assert re.search(rf"results/{stem}\.(json|md)", block.text), (
        f"{entry.section.page} {block.heading!r} prints numbers from {entry.source} but does not "
        "cite it"
    )
    doc = load(entry.source)
    skip = _excluded_spans(block.text)
    fences = [m.span() for m in FENCE.finditer(block.text)]  # commands, not results
    matches = [
        m
        for m in re.finditer(_flexible(entry.pattern), block.text, re.M)
        if not _inside(m.start(1), fences)
    ]
    assert matches, f"{entry.pattern!r} is not in {entry.section.page} {block.heading!r}"
    for m in matches:
        printed = _numbers(block.text, m.start(1), m.end(1), skip)
        assert len(printed) == len(entry.values), (
            f"{m.group(1)!r}: {len(printed)} numbers, the table has {len(entry.values)}"
        )
        for p, value in zip(printed, entry.values, strict=True):
            want = expected(value, doc)
            assert _normal(p.group("num")) in want, (
                f"{entry.section.page} {block.heading!r}: {m.group(1)!r} prints {p.group('num')}; "
                f"{entry.source} {value.get if isinstance(value.get, str) else 'gives'} {want}"
            )


def test_every_number_in_the_result_sections_is_traced():
    untraced = []
    for section, block in checked_blocks():
        covered = []
        for entry in NUMBERS:
            if entry.section.page == section.page and block.heading.startswith(
                entry.section.heading
            ):
                pattern = _flexible(entry.pattern)
                covered += [m.span(1) for m in re.finditer(pattern, block.text, re.M)]
        skip = _excluded_spans(block.text) + covered
        for m in _numbers(block.text, 0, len(block.text), skip):
            line = block.text[: m.start()].count("\n")
            context = block.text.splitlines()[line].strip()
            untraced.append(f"{section.page} {block.heading[:30]!r}: {m.group()!r} in {context!r}")
    assert not untraced, "numbers without a results file in NUMBERS:\n" + "\n".join(untraced)


def test_checked_sections_exist():
    for section in CHECKED:
        parents = {b.parent for b in page_blocks(section.page)}
        assert any(p.startswith(section.heading) for p in parents), (
            f"{section.page} has no section {section.heading!r}"
        )
    for entry in NUMBERS:
        block_for(entry.section)  # exactly one section of its page
        assert any(
            entry.section.page == s.page
            and entry.section.heading.startswith(s.heading)
            or entry.section.page == s.page
            and s.page != "README.md"
            for s in CHECKED
        ), f"{entry.section} is not in CHECKED"

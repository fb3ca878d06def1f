"""The library's rooms stay small enough to read in one sitting: no file of `slp/` over 700
lines, no function over 80 lines of code (its docstring not counted) or above ruff's
complexity 12 (that part is ruff's own check, `slp/ruff.toml`, run in CI)."""

import ast
from pathlib import Path

SLP = Path(__file__).resolve().parents[2] / "slp"
MAX_FILE_LINES = 700
MAX_FUNCTION_LINES = 80


def _code_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of ``fn`` from its ``def`` to its end, less its docstring's."""
    lines = fn.end_lineno - fn.lineno + 1
    first = fn.body[0] if fn.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node)
                if n > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n})")
    return found


def test_no_library_file_is_over_700_lines():
    long = {
        str(p.relative_to(SLP.parent)): n
        for p in sorted(SLP.rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES
    }
    assert not long, long


def test_no_library_function_is_over_80_lines_of_code():
    assert not long_functions(SLP)


def test_the_length_check_sees_a_long_function_and_skips_docstrings(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    doc = '    """' + "\n".join(["doc"] * 100) + '"""\n'
    body = "".join(f"    x{i} = {i}\n" for i in range(81))
    source = "def long():\n" + body + "\n\ndef documented():\n" + doc + "    pass\n"
    (pkg / "a.py").write_text(source)
    assert [s.split()[1] for s in long_functions(pkg)] == ["long"]

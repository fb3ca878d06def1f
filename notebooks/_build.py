"""Builds the tutorial notebooks from their Python sources and executes them.

Run:
    python notebooks/_build.py             # build and execute all three (about 3-5 minutes)
    python notebooks/_build.py 02_insens   # only the notebooks whose name contains "02_insens"
    python notebooks/_build.py --no-execute  # cells only, outputs cleared

Each notebook ``notebooks/<name>.ipynb`` is generated from ``notebooks/src/<name>.py``, a
script in the "percent" cell format: a line ``# %%`` starts a code cell, a line
``# %% [markdown]`` a markdown cell whose lines are comments (``# `` is stripped), and a
code line ``# %matplotlib inline`` becomes that IPython magic (as in jupytext). The
sources are ordinary Python files, so ruff lints and formats them. Executing runs every
cell top to bottom in a fresh ``python3`` kernel of this interpreter and stores the
outputs, figures included, so that the notebooks read well on a code host. Notebooks are
written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
NOTEBOOKS = (
    "01_switched_linear_projections",
    "02_insens",
    "03_comparing_methods",
)
CELL_TIMEOUT_S = 600

_CELL_MARK = "# %%"
_MAGICS = ("# %matplotlib ",)


def parse_cells(text: str) -> list[tuple[str, str]]:
    """Cells of a percent-format script.

    Args:
      text: the script. Lines before the first ``# %%`` are ignored (a module docstring).

    Returns:
      ``[(kind, source)]`` with kind ``"markdown"`` or ``"code"``; sources have no leading
      or trailing blank lines; empty cells are dropped.
    """
    cells: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith(_CELL_MARK):
            rest = line[len(_CELL_MARK) :].strip()
            if rest not in ("", "[markdown]"):
                raise ValueError(f"unknown cell marker {line!r}; use '# %%' or '# %% [markdown]'")
            cells.append(("markdown" if rest else "code", []))
        elif cells:
            kind, lines = cells[-1]
            if kind == "markdown":
                if line and not line.startswith("#"):
                    raise ValueError(f"markdown cell line is not a comment: {line!r}")
                line = line[2:] if line.startswith("# ") else line[1:]
            elif line.startswith(_MAGICS):
                line = line[2:]
            lines.append(line)
    out = []
    for kind, lines in cells:
        source = "\n".join(lines).strip("\n")
        if source.strip():
            out.append((kind, source))
    return out


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` with its cells from ``src/<name>.py`` and no outputs."""
    cells = parse_cells((SOURCES / f"{name}.py").read_text())
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    for i, (kind, source) in enumerate(cells):
        make = nbformat.v4.new_markdown_cell if kind == "markdown" else nbformat.v4.new_code_cell
        # Stable ids keep diffs of rebuilt notebooks small.
        nb.cells.append(make(source, id=f"{name[:2]}-{i:02d}"))
    return nb


@contextlib.contextmanager
def kernel_environment() -> Iterator[None]:
    """A ``python3`` kernelspec for this interpreter, first on the kernel search path.

    A ``python3`` kernelspec elsewhere (a user's, another environment's) could start a
    different interpreter; ``JUPYTER_PATH`` is searched before every other location.
    """
    saved = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="slp-kernel-") as tmp:
        spec = Path(tmp) / "kernels" / "python3"
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        kernel = {"argv": argv, "display_name": "Python 3", "language": "python"}
        (spec / "kernel.json").write_text(json.dumps(kernel))
        os.environ["JUPYTER_PATH"] = os.pathsep.join([tmp] + ([saved] if saved else []))
        try:
            yield
        finally:
            if saved is None:
                os.environ.pop("JUPYTER_PATH", None)
            else:
                os.environ["JUPYTER_PATH"] = saved


def execute(nb: nbformat.NotebookNode, *, cwd: Path, timeout: int = CELL_TIMEOUT_S) -> float:
    """Runs every cell of ``nb`` in place in a fresh kernel; returns the wall time in seconds.

    Raises:
      nbclient.exceptions.CellExecutionError: a cell raised.
    """
    import nbclient

    with kernel_environment():
        client = nbclient.NotebookClient(
            nb, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(cwd)}}
        )
        t0 = time.perf_counter()
        client.execute()
        return time.perf_counter() - t0


def write_atomic(nb: nbformat.NotebookNode, path: Path) -> None:
    """Writes ``nb`` to ``path`` (temp file in the same folder, then ``os.replace``)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            nbformat.write(nb, fh)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a notebook is not
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="substrings of notebook names (default: all)")
    parser.add_argument("--no-execute", action="store_true", help="write cells without outputs")
    args = parser.parse_args(argv)
    names = [n for n in NOTEBOOKS if not args.names or any(s in n for s in args.names)]
    if not names:
        parser.error(f"no notebook matches {args.names}; have {list(NOTEBOOKS)}")
    for name in names:
        nb = build(name)
        if not args.no_execute:
            seconds = execute(nb, cwd=HERE)
            print(f"{name}: executed in {seconds:.1f} s", file=sys.stderr)
        path = HERE / f"{name}.ipynb"
        write_atomic(nb, path)
        print(f"{name}: wrote {path} ({path.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Builds the tutorial notebooks from their Python sources and executes them.

Run:
    python notebooks/_build.py             # build and execute all three (about 3-5 minutes)
    python notebooks/_build.py 02_insens   # only the notebooks whose name contains "02_insens"
    python notebooks/_build.py --no-execute  # cells only, outputs cleared

Each notebook ``notebooks/<name>.ipynb`` is generated from ``notebooks/src/<name>.py``, a
script in jupytext's "percent" format (``py:percent``), read by jupytext: a line ``# %%``
starts a code cell, a line ``# %% [markdown]`` a markdown cell whose lines are comments,
the commented magic ``# %matplotlib inline`` becomes that magic, and the header between
``# ---`` lines holds the notebook's kernelspec. The sources are ordinary Python files, so
ruff lints and formats them, and ``jupytext --sync`` or an editor with jupytext can open
them as notebooks as well. Code that the notebooks share lives in ``notebooks/tutorial.py``,
which they import as ``tutorial``.

Executing runs every cell top to bottom in a fresh ``python3`` kernel of this interpreter,
working in ``notebooks/`` and with that folder on its ``PYTHONPATH``, and stores the
outputs, figures included, so that the notebooks read well on a code host. Notebooks are
written atomically (``slp.data._files.atomic_writer``).
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

import jupytext
import nbformat

from slp.data._files import atomic_writer

HERE = Path(__file__).resolve().parent
SOURCES = HERE / "src"
NOTEBOOKS = (
    "01_switched_linear_projections",
    "02_insens",
    "03_comparing_methods",
)
CELL_TIMEOUT_S = 600


def build(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` with its cells from ``src/<name>.py`` and no outputs.

    jupytext's own metadata (the source's format and jupytext's version) and its per-cell
    layout hints are dropped: the notebook keeps the kernelspec, the cells and their sources.
    """
    nb = jupytext.read(SOURCES / f"{name}.py", fmt="py:percent")
    nb.metadata.pop("jupytext", None)
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell.metadata = nbformat.NotebookNode()
        # Stable ids keep diffs of rebuilt notebooks small.
        cell.id = f"{name[:2]}-{i:02d}"
    return nb


@contextlib.contextmanager
def kernel_environment() -> Iterator[None]:
    """A ``python3`` kernelspec for this interpreter, first on the kernel search path.

    A ``python3`` kernelspec elsewhere (a user's, another environment's) could start a
    different interpreter; ``JUPYTER_PATH`` is searched before every other location. The
    kernel gets ``notebooks/`` on its ``PYTHONPATH``, so ``import tutorial`` works whatever
    its working directory (the tests run the notebooks in an empty temporary folder).
    """
    saved = os.environ.get("JUPYTER_PATH")
    with tempfile.TemporaryDirectory(prefix="slp-kernel-") as tmp:
        spec = Path(tmp) / "kernels" / "python3"
        spec.mkdir(parents=True)
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        pythonpath = [str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]
        kernel = {
            "argv": argv,
            "display_name": "Python 3",
            "language": "python",
            "env": {"PYTHONPATH": os.pathsep.join(pythonpath)},
        }
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
    """Writes ``nb`` to ``path``, which shows either the old notebook or the whole new one."""
    with atomic_writer(path) as fh:
        text = nbformat.writes(nb)
        fh.write((text if text.endswith("\n") else text + "\n").encode("utf-8"))


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

"""The tutorial notebooks: built from their sources, committed executed, and run in CI.

The fast tests read the committed ``.ipynb`` files: their cells are those of
``notebooks/src/*.py``, and their outputs come from one uninterrupted top-to-bottom run
(execution counts 1, 2, 3, ...) without errors. The slow tests execute every notebook from
scratch in a fresh kernel of this interpreter (``nbclient``), training its network (or
loading the checkpoint that an earlier notebook cached in the data directory), and fail on
any cell error; the notebooks themselves assert the library's claims (Theorem 1, Insens by
hand), so a wrong result fails the run as well.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from experiment_helpers import load_script

import slp.data

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = ROOT / "notebooks"
MAX_BYTES = 1_500_000


def _load_builder():
    return load_script("_build.py", folder="notebooks")


build = _load_builder()
NAMES = build.NOTEBOOKS


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def _errors(nb: nbformat.NotebookNode) -> list[str]:
    return [
        f"cell {i}: {out.get('ename')}: {out.get('evalue')}"
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type == "error"
    ]


@pytest.mark.parametrize("name", NAMES)
def test_build_reads_the_source_with_jupytext(name):
    """Cells as jupytext reads ``py:percent``; the notebook keeps no jupytext metadata."""
    import jupytext

    source = NOTEBOOK_DIR / "src" / f"{name}.py"
    expected = jupytext.read(source, fmt="py:percent")
    built = build.build(name)
    assert [(c.cell_type, c.source) for c in built.cells] == [
        (c.cell_type, c.source) for c in expected.cells
    ]
    assert {c.cell_type for c in built.cells} == {"markdown", "code"}  # no stray raw cells
    assert [c.id for c in built.cells] == [f"{name[:2]}-{i:02d}" for i in range(len(built.cells))]
    assert all(c.metadata == {} for c in built.cells)
    assert built.metadata["kernelspec"]["name"] == "python3"
    assert "jupytext" not in built.metadata
    nbformat.validate(built)


def test_kernel_finds_the_shared_tutorial_module():
    """The kernel has ``notebooks/`` on its path, so ``import tutorial`` works from any cwd."""
    import json
    import os

    with build.kernel_environment():
        folder = Path(os.environ["JUPYTER_PATH"].split(os.pathsep)[0])
        spec = json.loads((folder / "kernels" / "python3" / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
    assert spec["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(NOTEBOOK_DIR)
    assert (NOTEBOOK_DIR / "tutorial.py").is_file()


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_matches_its_source(name):
    committed = _read(name)
    built = build.build(name)
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in built.cells
    ], f"notebooks/{name}.ipynb is out of date: run python notebooks/_build.py {name}"


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_ran_top_to_bottom(name):
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    assert path.stat().st_size < MAX_BYTES
    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    # One uninterrupted run in a fresh kernel numbers the cells 1, 2, 3, ...
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert _errors(nb) == []
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the committed notebook has no figures: was it executed?"
    stderr = [o.text for c in code for o in c.outputs if o.get("name") == "stderr"]
    assert stderr == [], f"warnings or errors printed by the notebook: {stderr}"


# A number in a sentence: a decimal (0.316, 1.5e-07, -0.165) or a percentage (32.7%).
_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?%|\d+\.\d+(?:e[-+]?\d+)?")
# Numbers in the prose that the notebook does not compute: citations and the paper's own
# values, each with the reason.
CITED = {
    "01_switched_linear_projections": {
        "1909.11275": "arXiv identifier",
        "17%": "active share of the paper's 2CONV (section 3)",
    },
    "03_comparing_methods": {
        "1e-6": "default stabiliser of the alpha-beta rules (slp.attributions)",
        "1e-7": "default epsilon of lrp_epsilon (slp.attributions)",
    },
}


def _printed_text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            parts.append(out.get("text", ""))
            parts.append(out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.mark.parametrize("name", sorted(CITED))
def test_numbers_in_the_prose_are_printed_by_the_same_run(name):
    """Every decimal or percentage in a markdown cell is in the notebook's printed output.

    A sentence that states a result must quote what this run of the notebook printed, not
    a number from an earlier run or from elsewhere (those few are listed in ``CITED``).
    """
    nb = _read(name)
    printed = _printed_text(nb)
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    missing = sorted(
        {n for n in _NUMBER.findall(prose) if n not in CITED[name] and n not in printed}
    )
    assert missing == [], f"notebooks/{name}.ipynb states numbers it does not print: {missing}"


def _mnist_available() -> bool:
    try:
        for split in ("train", "test"):
            slp.data.load_mnist(split, download=False)
    except (slp.data.DatasetNotFoundError, FileNotFoundError):
        return False
    return True


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize("name", NAMES)
def test_notebook_executes_from_scratch(name, tmp_path):
    if not _mnist_available():
        pytest.skip("MNIST is not in the data directory: python experiments/fetch_data.py mnist")
    nb = _read(name)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    t0 = time.perf_counter()
    build.execute(nb, cwd=tmp_path)  # raises CellExecutionError on the first failing cell
    seconds = time.perf_counter() - t0
    print(f"{name}: {seconds:.0f} s")
    assert _errors(nb) == []
    assert nb.cells[-1].outputs[0].text.strip() == sys.executable
    assert list(tmp_path.iterdir()) == [], "a notebook wrote files into its working directory"

"""The code of the user guide's "Bring your own model" page runs as it stands.

Each ``python`` block of ``docs/guide/your-model.md`` (one per library: flax.linen,
flax.nnx, equinox, dm-haiku, plain jnp) is a whole program; it is run in a fresh namespace
and must leave an Insens map ``omega`` shaped like the example's input and not all zero.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "guide" / "your-model.md"
BLOCK = re.compile(r"^( *)```python\n(.*?)^\1```", re.S | re.M)


def blocks() -> list[str]:
    found = [textwrap.dedent(m.group(2)) for m in BLOCK.finditer(PAGE.read_text("utf-8"))]
    assert len(found) >= 5, f"{PAGE} has {len(found)} python blocks"
    return found


@pytest.mark.parametrize("code", blocks(), ids=lambda c: re.search(r"import (\w+)", c).group(1))
def test_bring_your_own_model_block_runs(code):
    namespace: dict = {"__name__": "guide_example"}
    exec(compile(code, str(PAGE), "exec"), namespace)  # noqa: S102 (the page's own code)
    omega = np.asarray(namespace["omega"])
    x_shape = {(8, 8, 1), (1, 8, 8), (8, 8)}
    assert omega.shape in x_shape, omega.shape
    assert np.isfinite(omega).all() and np.abs(omega).max() > 0

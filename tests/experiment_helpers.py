"""Shared by the experiment smoke tests: loading a script as a module, synthetic data."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

import slp

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str, folder: str = "experiments"):
    """``<folder>/<name>`` (a script, not a package module) imported as a module.

    It is registered in ``sys.modules`` (as ``_script_<stem>``) before it runs, so that
    dataclasses and flax modules defined in it can find their own module.
    """
    module_name = f"_script_{Path(name).stem}"
    spec = importlib.util.spec_from_file_location(module_name, ROOT / folder / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def run_script(name: str, argv: list[str], written: Path):
    """Loads script ``name``, runs its ``main(argv)`` and reads the JSON file it wrote.

    Returns:
      ``(module, result, saved)``: the loaded script, what ``main`` returned and the
      contents of ``written``.
    """
    module = load_script(name)
    result = module.main(argv)
    return module, result, json.loads(Path(written).read_text())


def bar_digits(*, n_train: int, n_test: int):
    """A stand-in for `slp.data.load_mnist`: class k is a bar in row band k, with a faint rim."""

    def load(split: str, *, data_dir=None, download=True):
        n = n_train if split == "train" else n_test
        rng = np.random.default_rng(0 if split == "train" else 1)
        labels = rng.integers(0, 10, size=n).astype(np.int32)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, y in enumerate(labels):
            row = 4 + 2 * int(y)
            start = rng.integers(4, 9)
            images[i, row : row + 2, start : start + 14] = 255
            images[i, row + 2, start : start + 14] = 90  # above the digit threshold
        return slp.data.Dataset(images, labels)

    return load

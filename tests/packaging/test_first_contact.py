"""First contact: the README's Usage snippet, the bundled example, --help of every script,
help(slp), downloads, and a wheel that installs under the package's distribution name."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pydoc
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from experiment_helpers import ROOT, bar_digits, load_script
from PIL import Image

import slp
from slp import training
from slp.data import _cache, example

README = ROOT / "README.md"
PYTHON = sys.executable


def _section(title: str) -> str:
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, f"README has no section '## {title}'"
    return match.group(1)


def _usage_snippet() -> str:
    blocks = re.findall(r"```python\n(.*?)```", _section("Usage"), flags=re.S)
    assert blocks, "README Usage has no python block"
    return blocks[0]


def _env() -> dict[str, str]:
    return {**os.environ, "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}


def _run(args, *, cwd, timeout) -> subprocess.CompletedProcess:
    """``args`` run in ``_env()``, stdout and stderr captured as text; no check."""
    return subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


# ------------------------------------------------------------------------ the snippet


def test_readme_usage_snippet_runs_verbatim(tmp_path):
    script = tmp_path / "usage.py"
    script.write_text(_usage_snippet())
    proc = _run([PYTHON, str(script)], cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    digits = example.example_digits()
    # the printed class is the network's arg-max, which for this digit is its label
    assert f"label {digits.labels[7]} predicted 7" in out
    assert re.search(r"^route: (cone|probes|dense) \(", out, flags=re.M), out
    # the output shown in the README is this output, up to the numbers (timings vary)
    (shown,) = re.findall(r"```text\n(.*?)```", _section("Usage"), flags=re.S)[:1]

    def skeleton(text):
        # numbers and the unit of a predicted time (it scales with the machine's speed)
        text = re.sub(r"[0-9.e+-]+", "#", text)
        return re.sub(r"~# (?:ms|s|min|h)\b", "~# <time>", text).splitlines()

    assert skeleton(shown) == skeleton(out)
    pngs = list(tmp_path.glob("*.png"))
    assert len(pngs) == 1, out
    with Image.open(pngs[0]) as im:
        width, height = im.size
        pixels = np.asarray(im.convert("RGB"))
    assert width > 100 and height > 100
    # the map's red and blue, and the colour key's, are in the picture
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    blue = (pixels[..., 2] > 200) & (pixels[..., 0] < 80) & (pixels[..., 1] < 80)
    assert red.sum() > 50 and blue.sum() > 50


def test_readme_usage_output_shows_the_predicted_class():
    """The class shown under the snippet is the bundled network's arg-max for the digit."""
    shown = re.findall(r"```text\n(.*?)```", _section("Usage"), flags=re.S)
    assert shown, "README Usage shows no output block"
    digits = example.example_digits()
    net = example.example_model()
    logits = np.asarray(net.model.apply(net.params, digits.images[7:8]))[0]
    assert f"label {digits.labels[7]} predicted {int(logits.argmax())}" in shown[0]


# ------------------------------------------------------------------ bundled example


def test_example_model_is_small_and_predicts_the_bundled_digits():
    net = example.example_model()
    digits = example.example_digits()
    assert net.path.stat().st_size < 100_000
    assert digits.images.shape == (10, 28, 28, 1) and digits.images.dtype == np.float32
    assert digits.images.min() >= 0 and digits.images.max() <= 1
    np.testing.assert_array_equal(digits.labels, np.arange(10))
    logits = np.asarray(net.model.apply(net.params, digits.images))
    assert logits.shape == (10, 10)
    # the stated test accuracy (0.98) makes more than 7 of 10 right all but certain
    assert (logits.argmax(-1) == digits.labels).sum() >= 8
    assert net.metadata["config"] == example.example_config().to_dict()
    assert net.metadata["num_test"] == 10_000 and net.metadata["test_accuracy"] > 0.97


def _mnist_test_or_skip():
    try:
        return slp.data.load_mnist("test", download=False)
    except slp.data.DatasetNotFoundError as e:
        pytest.skip(f"MNIST not in the data directory: {e}")


@pytest.mark.realdata
def test_example_digits_are_the_first_mnist_test_digit_of_each_class():
    images, labels = _mnist_test_or_skip()
    digits = example.example_digits()
    for c in range(10):
        first = int(np.flatnonzero(labels == c)[0])
        assert digits.indices[c] == first
        np.testing.assert_array_equal(np.rint(digits.images[c, ..., 0] * 255), images[first])


@pytest.mark.realdata
def test_example_model_test_accuracy_is_the_stated_one():
    images, labels = _mnist_test_or_skip()
    net = example.example_model()
    x = training.to_float_images(images)
    acc = training.accuracy(net.model, net.params, x, labels)
    assert acc == pytest.approx(net.metadata["test_accuracy"], abs=1e-4)


@pytest.mark.slow
def test_make_example_smoke(monkeypatch, tmp_path):
    load = bar_digits(n_train=256, n_test=64)
    monkeypatch.setattr(slp.data, "load_mnist", load)
    monkeypatch.setattr(training, "load_mnist", load)
    script = load_script("make_example.py")
    out = tmp_path / "example"
    meta = script.main(["--out", str(out), "--epochs", "1", "--num-train", "256", "--no-progress"])
    config = dataclasses.replace(example.example_config(), epochs=1, num_train=256)
    params, sidecar = training.load_checkpoint(out / example.MODEL_FILE, config=config)
    assert sidecar["test_accuracy"] == meta["test_accuracy"]
    with np.load(out / example.DIGITS_FILE) as f:
        images, labels, indices = f["images"], f["labels"], f["indices"]
    test_images, test_labels = load("test")
    np.testing.assert_array_equal(labels, np.arange(10))
    np.testing.assert_array_equal(images, test_images[indices])
    for c in range(10):
        assert indices[c] == np.flatnonzero(test_labels == c)[0]


# -------------------------------------------------------------------------- --help

SCRIPTS = sorted(
    p.name
    for p in (ROOT / "experiments").glob("*.py")
    if not p.name.startswith("_") and 'if __name__ == "__main__"' in p.read_text()
)
COMMANDS = [[str(ROOT / "experiments" / s), "--help"] for s in SCRIPTS] + [
    ["-m", "slp.data", "fetch", "--help"],
    ["-m", "slp", "maps", "--help"],
]


def _option_entries(help_text: str) -> list[str]:
    """Each option's entry (its line and continuation lines) after the usage block."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(r"^\S.*:$", line))
    entries: list[str] = []
    current = None
    for line in lines[start:]:
        if re.match(r"^  -", line):
            current = [line.strip()]
            entries.append(current)
        elif current is not None and re.match(r"^ {3,}\S", line):
            current.append(line.strip())
        else:
            current = None
    return [" ".join(e) for e in entries]


@pytest.fixture(scope="module")
def help_outputs():
    def run(cmd):
        # -X importtime: stderr lists every module imported
        return _run([PYTHON, "-X", "importtime", *cmd], cwd=ROOT, timeout=120)

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        return dict(zip((" ".join(c) for c in COMMANDS), pool.map(run, COMMANDS), strict=True))


def test_help_scripts_found():
    assert {"train.py", "mnist_noise.py", "make_example.py", "bench_insens.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("cmd", [" ".join(c) for c in COMMANDS], ids=lambda c: c.split()[0])
def test_help_gives_every_option_help_text_and_default(help_outputs, cmd):
    proc = help_outputs[cmd]
    assert proc.returncode == 0, proc.stderr[-2000:]
    entries = [e for e in _option_entries(proc.stdout) if not e.startswith("-h, --help")]
    assert entries, proc.stdout
    for entry in entries:
        # argparse adds "(default: ...)" only to options that have a help text
        assert "default" in entry or "(required)" in entry, f"{cmd}: no help or default: {entry}"


@pytest.mark.parametrize("cmd", [" ".join(c) for c in COMMANDS], ids=lambda c: c.split()[0])
def test_help_answers_before_jax_is_imported(help_outputs, cmd):
    """``--help`` costs the interpreter's start, not jax's import (about a second)."""
    proc = help_outputs[cmd]
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "argparse" in imported, "no import list: was -X importtime honoured?"
    heavy = sorted(imported & {"jax", "flax", "optax", "matplotlib", "torch"})
    assert not heavy, f"{cmd} imports {heavy} before answering --help"


def test_option_entries_parser_sees_missing_defaults():
    text = "usage: x\n\noptions:\n  --a A       alpha (default: 1)\n  --b B       beta\n"
    assert _option_entries(text) == ["--a A       alpha (default: 1)", "--b B       beta"]


# -------------------------------------------------------------------------- help(slp)


def test_help_slp_names_every_public_module():
    text = pydoc.render_doc(slp, renderer=pydoc.plaintext)
    section = re.search(r"^PACKAGE CONTENTS\n((?: {4}.*\n)+)", text, flags=re.M)
    assert section, text[:2000]
    listed = [line.split()[0] for line in section.group(1).splitlines()]
    public = {m for m in listed if not m.startswith("_")}
    assert {"data", "projections", "attributions", "config"} <= public
    for module in public:
        assert f"``slp.{module}``" in slp.__doc__, f"slp's docstring does not describe {module}"
    # the internals sit in one private package, slp._src
    assert [m for m in listed if m.startswith("_")] == ["__main__", "_src"], listed


def test_import_slp_is_lazy_and_its_names_resolve():
    """``import slp`` imports no jax; every name in ``__all__`` resolves on first use."""
    code = (
        "import sys, slp, slp.config; assert 'jax' not in sys.modules, 'eager'; "
        "[getattr(slp, n) for n in slp.__all__]; assert 'jax' in sys.modules; "
        "assert callable(slp.insens) and callable(slp.attribute); "
        "import slp.network; assert callable(slp.insens); print(len(slp.__all__))"
    )
    proc = subprocess.run(
        [PYTHON, "-c", code], env=_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout) == len(slp.__all__)
    assert set(slp.__all__) <= set(dir(slp))
    # the literal __all__ (for type checkers) and the lazy table name the same things
    assert set(slp.__all__) == set(slp._NAMES)


# ------------------------------------------------------------------------- downloads


def test_download_file_copies_the_bytes(tmp_path):
    data = np.random.default_rng(0).bytes(3 << 20)
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    got = _cache.download_file(src.as_uri(), tmp_path / "out" / "dst.bin")
    assert got.read_bytes() == data


def test_download_file_rejected_leaves_nothing(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 1000)

    def reject(path):
        raise _cache.CorruptDataError("no")

    with pytest.raises(_cache.CorruptDataError):
        _cache.download_file(src.as_uri(), tmp_path / "out" / "dst.bin", verify=reject)
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------- the distribution


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_distribution_name_is_not_the_taken_one():
    meta = _project()
    assert meta["name"] != "slp"  # PyPI's slp is an unrelated speech and language library
    assert meta["name"] in _section("Set up")
    assert (ROOT / "LICENSE").read_text().lstrip().startswith("Apache License")
    assert meta["license"] == "Apache-2.0" and meta["license-files"] == ["LICENSE"]


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_venv_and_imports(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels]
        + [str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("*.whl")
    name = _project()["name"]
    assert wheel.name.startswith(name.replace("-", "_") + "-")
    # A fresh venv that sees this interpreter's dependencies (jax, flax, ...) through a .pth
    # line, but not the editable install of the clone: that .pth file is not processed.
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    (site,) = (venv / "lib").glob("python*/site-packages")
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "_deps.pth").write_text("\n".join(deps) + "\n")
    python = venv / "bin" / "python"
    subprocess.run(
        [PYTHON, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    code = (
        "import slp, slp.data; net = slp.data.example_model(); d = slp.data.example_digits(); "
        "print(slp.__file__); print(int(net.model.apply(net.params, d.images[7:8])[0].argmax()))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [python, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    where, predicted = proc.stdout.split()
    assert Path(where).is_relative_to(venv), where
    assert predicted == "7"

"""Smoke tests of experiments/mnist_metrics.py, encodings.py and cifar10.py on tiny configs.

The data loaders are replaced by small synthetic data sets and the networks are narrow
TwoConvs trained for one short epoch, so each script runs in seconds without the real
data. The registry is cut down to a few methods (covering the options the scripts must
supply: a PRNG key for smoothgrad, the input range for deep_taylor_bounded) plus methods
defined here, which shows that new registry entries are picked up without edits.
"""

from __future__ import annotations

import json
from pathlib import Path

import experiment_helpers as helpers
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import slp
from slp import training
from slp.attributions import registry

TINY_TRAIN = [
    "--num-train", "128", "--epochs", "1", "--batch-size", "32",
    "--features", "2", "4", "--hidden", "8", "--no-progress",
]  # fmt: skip


load_script = helpers.load_script
fake_grey = helpers.bar_digits(n_train=160, n_test=40)


def fake_cifar(split: str = "train", **kwargs):
    """Colour stand-in for CIFAR-10: class k has a coloured square at a class position."""
    n = 160 if split == "train" else 40
    rng = np.random.default_rng(2 if split == "train" else 3)
    labels = rng.integers(0, 10, size=n).astype(np.int32)
    images = rng.integers(0, 60, size=(n, 32, 32, 3)).astype(np.uint8)
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 5)
        images[i, 4 + 12 * r : 12 + 12 * r, 2 + 6 * c : 6 + 6 * c, y % 3] = 250
    return slp.data.Dataset(images=images, labels=labels, source="images", lossy=True)


def _needs_foo(f, x, *, target=None, foo):
    return x * foo


@pytest.fixture
def small_registry(monkeypatch):
    small = {n: registry.get_method(n) for n in ("insens", "gradient", "smoothgrad")}
    small["deep_taylor_bounded"] = registry.get_method("deep_taylor_bounded")
    small["input_times_two"] = lambda f, x, *, target=None: 2 * jnp.asarray(x)
    small["needs_foo"] = _needs_foo
    monkeypatch.setattr(registry, "_METHODS", small)
    return small


def _run_tiny(name: str, tmp_path: Path, *options: str):
    """Runs experiments/<name> on TINY_TRAIN with its checkpoints and results under
    ``tmp_path``; returns the script module, what its main returned and the results folder."""
    script = load_script(name)
    out = tmp_path / "results"
    argv = [*TINY_TRAIN, "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(out), *options]
    return script, script.main(argv), out


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


@pytest.mark.slow
def test_mnist_metrics_end_to_end(tmp_path, monkeypatch, small_registry):
    monkeypatch.setattr(training, "load_mnist", fake_grey)
    script, result, out = _run_tiny(
        "mnist_metrics.py", tmp_path,
        "--num-images", "6", "--num-random-images", "3", "--steps", "4",
    )  # fmt: skip
    methods = ["insens", "gradient", "smoothgrad", "deep_taylor_bounded", "input_times_two"]
    assert result["config"]["methods"] == methods
    assert "foo" in result["skipped_methods"]["needs_foo"]
    saved = json.loads((out / "mnist_metrics.json").read_text())
    assert saved["config"]["num_images"] == 6 and saved["config"]["num_random_images"] == 3

    rob = saved["robustness"]
    # 2 x input is zero off the (thresholded) fake digit: all its mass is on the digit.
    assert rob["input_times_two"]["clean"]["on_digit"]["mean"] == pytest.approx(1.0)
    assert set(rob["insens"]) == {"clean", "bordered", "background", "framed"}
    assert -1 <= rob["gradient"]["bordered"]["spearman"]["mean"] <= 1
    assert rob["gradient"]["bordered"]["spearman"]["n"] == 6

    # Every deletion curve ends on the all-baseline image and starts on the clean one,
    # whatever the order; insertion curves run the other way.
    curves = saved["mean_curves"]
    assert curves["fraction"] == pytest.approx([0, 0.25, 0.5, 0.75, 1])
    start = curves["random"]["deletion"]["probability"][0]
    end = curves["random"]["deletion"]["probability"][-1]
    for m in methods:
        for order in ("signed", "abs"):
            c = curves[m][order]
            assert c["deletion"]["probability"][0] == pytest.approx(start, rel=1e-5)
            assert c["deletion"]["probability"][-1] == pytest.approx(end, rel=1e-5)
            assert c["insertion"]["probability"][0] == pytest.approx(end, rel=1e-5)
            assert c["insertion"]["probability"][-1] == pytest.approx(start, rel=1e-5)

    # Insens ignores the output layer, so re-initialising it leaves the map unchanged;
    # an input-only map never changes; the gradient of the target logit does.
    rand = saved["randomization"]
    assert saved["randomization_steps"] == ["Dense_1", "Dense_0", "Conv_1", "Conv_0"]
    assert rand["insens"]["Dense_1"]["spearman"]["mean"] == pytest.approx(1.0)
    assert rand["input_times_two"]["Conv_0"]["spearman"]["mean"] == pytest.approx(1.0)
    assert rand["gradient"]["Dense_1"]["spearman"]["mean"] < 0.99

    md = (out / "mnist_metrics.md").read_text()
    assert "## Where Insens stands" in md and "needs_foo" in md
    for name in ("robustness", "curves", "curves_logit", "randomization"):
        width, height = _png_size(out / f"mnist_metrics_{name}.png")
        assert width > 400 and height > 200
    assert not [p for p in out.iterdir() if p.name.startswith(".")]

    # --replot rebuilds the report from the JSON alone, unchanged.
    (out / "mnist_metrics.md").unlink()
    (out / "mnist_metrics_curves.png").unlink()
    script.main(["--replot", "--out", str(out)])
    assert (out / "mnist_metrics.md").read_text() == md
    assert (out / "mnist_metrics_curves.png").is_file()


def test_scripts_document_command_and_runtime():
    for name in ("mnist_metrics.py", "encodings.py", "cifar10.py"):
        doc = load_script(name).__doc__
        assert f"python experiments/{name}" in doc and "minutes" in doc


@pytest.mark.slow
def test_encodings_end_to_end(tmp_path, monkeypatch, small_registry):
    monkeypatch.setattr(slp.data, "load_fashion_mnist", fake_grey)
    script, result, out = _run_tiny(
        "encodings.py", tmp_path,
        "--dataset", "fashion_mnist", "--num-images", "5", "--examples", "0", "1",
        "--methods", "insens", "gradient", "deep_taylor_bounded", "input_times_two",
    )  # fmt: skip
    assert set(result["accuracy"]) == {"plain", "neg", "mean", "neg_mean"}
    assert sorted(p.name for p in (tmp_path / "ck").glob("*.msgpack")) == sorted(
        p.name for p in (tmp_path / "ck").glob("twoconv_fashion_mnist_*.msgpack")
    )
    assert len(list((tmp_path / "ck").glob("*.msgpack"))) == 4
    saved = json.loads((out / "encodings_fashion_mnist.json").read_text())
    assert saved["config"]["stand_in_for"] == "smallnorb"
    rev = saved["reversal"]
    # 2 x input: the mean and neg-mean inputs are exact negatives, plain and neg are
    # 1 - each other: both pairs are perfectly anti-correlated, whatever the networks.
    for pair in ("mean vs neg_mean", "plain vs neg"):
        assert rev["input_times_two"][pair]["pearson"]["mean"] == pytest.approx(-1.0, abs=1e-5)
        assert rev["input_times_two"][pair]["share_negative"] == 1.0
    assert rev["input_times_two"]["plain vs mean"]["pearson"]["mean"] == pytest.approx(1.0)
    # The exactly mirrored network: the gradient flips sign, Insens too (eq. 7 with
    # w_hat -> -w_hat and v unchanged).
    ref = "mean vs its exact mirror"
    assert rev["gradient"][ref]["pearson"]["mean"] == pytest.approx(-1.0, abs=1e-4)
    assert rev["insens"][ref]["pearson"]["mean"] == pytest.approx(-1.0, abs=1e-4)
    # 2 x input in the 0 -> 1 encoding lies on the (thresholded) object only.
    assert saved["locality"]["plain"]["input_times_two"]["object"]["mean"] == pytest.approx(1.0)
    md = (out / "encodings_fashion_mnist.md").read_text()
    assert "Stand-in data" in md and "smallnorb" in md
    assert "correlation of the mean and neg_mean maps" in md
    (out / "encodings_fashion_mnist.md").unlink()
    script.main(["--replot", "--dataset", "fashion_mnist", "--out", str(out)])
    assert (out / "encodings_fashion_mnist.md").read_text() == md
    width, height = _png_size(out / "encodings_fashion_mnist.png")
    assert height > width  # 2 examples x 4 encodings = 8 rows, 5 columns
    assert _png_size(out / "encodings_fashion_mnist_correlation.png")[0] > 400


def test_encodings_smallnorb_missing_is_a_clear_error(tmp_path):
    script = load_script("encodings.py")
    with pytest.raises(slp.data.DatasetNotFoundError, match="smallNORB"):
        script.main(
            [*TINY_TRAIN, "--dataset", "smallnorb", "--data-dir", str(tmp_path),
             "--no-download", "--out", str(tmp_path / "out")]
        )  # fmt: skip


def test_encodings_smallnorb_preprocessing(monkeypatch):
    """smallNORB input: first camera, 3x3 block means, 0 -> 1 scale."""
    script = load_script("encodings.py")
    images = np.zeros((2, 2, 96, 96), np.uint8)
    images[0, 0, :3, :3] = 255  # one full block -> 1.0
    images[0, 0, 3:6, :3] = [[255, 0, 0], [0, 0, 0], [0, 0, 0]]  # 1/9 of 255
    images[:, 1] = 255  # the second camera is ignored
    norb = slp.data.Dataset(images, np.array([3, 4], np.int32), info=np.zeros((2, 4), np.int32))
    monkeypatch.setattr(slp.data, "load_smallnorb", lambda split, **kw: norb)
    x, y = script.load_unit_images("smallnorb", "test", data_dir=None, download=False)
    assert x.shape == (2, 32, 32, 1) and y.tolist() == [3, 4]
    assert x[0, 0, 0, 0] == pytest.approx(1.0) and x[0, 1, 0, 0] == pytest.approx(1 / 9)
    assert x[1].max() == 0.0
    enc = script.encode(x, "neg_mean")
    assert enc[0, 0, 0, 0] == pytest.approx(-1.0) and enc[1, 5, 5, 0] == pytest.approx(1.0)


@pytest.mark.slow
def test_cifar10_end_to_end(tmp_path, monkeypatch, small_registry):
    monkeypatch.setattr(slp.data, "load_cifar10", fake_cifar)
    _, result, out = _run_tiny(
        "cifar10.py", tmp_path,
        "--num-images", "6", "--num-random-images", "2", "--steps", "4",
        "--figure-classes", "3", "--methods", "insens", "gradient", "input_times_two",
    )  # fmt: skip
    saved = json.loads((out / "cifar10.json").read_text())
    assert saved["config"]["lossy"] is True and saved["config"]["train"]["input_shape"] == [
        32,
        32,
        3,
    ]
    assert 0.0 <= saved["test_accuracy"] <= 1.0
    # The deletion baseline is the training images' mean colour (first --num-train images).
    train = fake_cifar("train")
    expected = train.images[:128].reshape(-1, 3).astype(np.float64).mean(axis=0) / 255
    np.testing.assert_allclose(saved["config"]["baseline"], expected, rtol=1e-5)
    assert len(set(saved["config"]["sample_indices"])) == 6
    assert result["randomization"]["input_times_two"]["Conv_0"]["spearman"]["mean"] == 1.0
    md = (out / "cifar10.md").read_text()
    assert "Lossy data" in md and "test accuracy" in md
    for name in ("figure6", "robustness", "curves", "curves_logit", "randomization"):
        assert _png_size(out / f"cifar10_{name}.png")[0] > 300


def test_cifar10_names_hide_directories():
    script = load_script("cifar10.py")
    jpeg = slp.data.Dataset(None, None, source="images:/some/dir/cifar10-jpeg.zip", lossy=True)
    assert script.source_label(jpeg) == "images:cifar10-jpeg.zip"
    assert script.dataset_name(jpeg) == "cifar10_jpeg"
    official = slp.data.Dataset(None, None, source="official", lossy=False)
    assert script.source_label(official) == "official"
    assert script.dataset_name(official) == "cifar10_official"


def test_cifar10_figure_indices():
    script = load_script("cifar10.py")
    labels = np.array([3, 0, 1, 0, 2, 1])
    assert script.figure_indices(labels, classes=3, per_class=1) == [1, 2, 4]
    assert script.figure_indices(labels, classes=2, per_class=2) == [1, 3, 2, 5]


def test_bench_metrics_smoke(tmp_path):
    """experiments/bench_metrics.py on a tiny random network, slp only: times, table, JSON."""
    names = ["PixelFlipping", "MaxSensitivity", "MPRT", "Focus"]
    argv = ["--tiny", "--images", "4", "--batch", "2", "--no-quantus", "--out", str(tmp_path)]
    bench, result, saved = helpers.run_script(
        "bench_metrics.py", argv + ["--metrics", *names], tmp_path / "bench_metrics.json"
    )
    assert list(saved["metrics"]) == names
    for name in names:
        assert saved["metrics"][name]["slp"]["seconds"] > 0
        assert "ratio" not in saved["metrics"][name]
    assert saved["metrics"]["MaxSensitivity"]["options"] == {"nr_samples": 3}
    table = (tmp_path / "bench_metrics.md").read_text()
    assert table.startswith("| metric | group |") and "| MPRT | randomisation |" in table
    floor = saved["explanation_floor"]  # the gradients alone: 3 noisy copies of 4 images
    assert floor["gradients"] == 4 * 3 and floor["slp"]["seconds"] > 0 and "ratio" not in floor
    assert "Explanations alone: the gradient at 3 noisy copies of each of the 4 images" in table
    assert "MaxSensitivity takes" in table
    with pytest.raises(ValueError, match="unknown metric 'Fidelity'"):
        bench.main(argv + ["--metrics", "Fidelity"])
    assert "python experiments/bench_metrics.py" in bench.__doc__ and "minutes" in bench.__doc__


@pytest.mark.crosscheck
def test_bench_metrics_smoke_with_quantus(tmp_path):
    """The same with Quantus on the torch port: a ratio per metric."""
    pytest.importorskip("quantus")
    names = ["PixelFlipping", "RelevanceRankAccuracy"]
    argv = ["--tiny", "--images", "4", "--batch", "2", "--out", str(tmp_path)]
    argv += ["--quantus-images", "PixelFlipping=1"]
    _, _, saved = helpers.run_script(
        "bench_metrics.py", argv + ["--metrics", *names], tmp_path / "bench_metrics.json"
    )
    for name in names:
        assert saved["metrics"][name]["ratio"] > 0
    assert saved["machine"]["quantus_version"] == "0.6.0"
    # Quantus timed on one image of PixelFlipping and scaled to four; on all four otherwise.
    flip, rank = (
        saved["metrics"]["PixelFlipping"]["quantus"],
        saved["metrics"]["RelevanceRankAccuracy"]["quantus"],
    )
    assert (flip["images"], flip["scaled"], rank["images"], rank["scaled"]) == (1, True, 4, False)
    assert flip["seconds"] == pytest.approx(4 * flip["measured_s"])
    assert "(scaled from 1 images)" in (tmp_path / "bench_metrics.md").read_text()
    assert not (tmp_path / "bench_metrics.partial.json").exists()

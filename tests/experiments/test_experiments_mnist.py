"""Smoke tests of experiments/train.py and experiments/mnist_noise.py on a tiny config.

The MNIST loader is replaced by synthetic digit-like images (a few hundred), the
network is a narrow TwoConv and training is one short epoch, so each script runs
in seconds and needs neither the network nor the real data set.
"""

from __future__ import annotations

import json

import experiment_helpers as helpers
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import slp
from slp import training
from slp.attributions import registry

load_script = helpers.load_script
fake_mnist = helpers.bar_digits(n_train=300, n_test=120)


TINY_TRAIN = [
    "--num-train", "256", "--epochs", "1", "--batch-size", "32",
    "--features", "4", "8", "--hidden", "16", "--no-progress",
]  # fmt: skip


@pytest.fixture
def fake_data(monkeypatch):
    monkeypatch.setattr(training, "load_mnist", fake_mnist)


@pytest.mark.slow
def test_train_script_trains_then_reuses(tmp_path, fake_data):
    script = load_script("train.py")
    args = [*TINY_TRAIN, "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path)]
    first = script.main(args)
    assert not first["reused_checkpoint"]
    saved = json.loads((tmp_path / "mnist_train.json").read_text())
    assert saved["config"]["num_train"] == 256 and saved["config"]["features"] == [4, 8]
    assert 0.0 <= saved["test_accuracy"] <= 1.0 and len(saved["epoch_seconds"]) == 1
    ckpts = sorted(p.name for p in (tmp_path / "ck").iterdir())
    assert len(ckpts) == 2 and ckpts[0].endswith(".json") and ckpts[1].endswith(".msgpack")
    second = script.main(args)
    assert second["reused_checkpoint"]
    assert second["test_accuracy"] == first["test_accuracy"]


@pytest.mark.slow
def test_mnist_noise_script_end_to_end(tmp_path, fake_data, monkeypatch):
    # Figure 4's columns follow the registry: with a registry of three methods (a small
    # one keeps the test fast), the third, unknown to the script, is the last column.
    small = {name: registry.get_method(name) for name in ("insens", "gradient")}
    small["input_times_two"] = lambda f, x, *, target=None: 2 * jnp.asarray(x)
    monkeypatch.setattr(registry, "_METHODS", small)
    script = load_script("mnist_noise.py")
    out = tmp_path / "results"
    result = script.main(
        [
            *TINY_TRAIN,
            "--checkpoint-dir", str(tmp_path / "ck"),
            "--out", str(out),
            "--sigma", "0.5",
            "--sigmas", "0.2", "1.0",
            "--examples", "0", "3",
        ]
    )  # fmt: skip
    assert result["figure_columns"] == ["input", "insens", "gradient", "input_times_two"]

    saved = json.loads((out / "mnist_noise.json").read_text())
    assert set(saved) == {
        "clean_accuracy",
        "variants",
        "paper",
        "active_fraction",
        "insens_all",
        "insens_layers",
        "config",
    }
    ia = saved["insens_all"]
    assert ia["num_images"] == saved["config"]["num_test"]
    assert 0.0 <= ia["share_on_digit_outline"]["mean"] <= 1.0
    assert saved["paper"]["bordered"] == 0.87 and saved["paper"]["background"] == 0.32
    assert saved["paper"]["framed"] == 0.45
    grid = {(r["variant"], r["sigma"]) for r in saved["variants"]}
    assert grid == {(v, s) for v in slp.noise.VARIANTS for s in (0.2, 0.5, 1.0)}
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in saved["variants"])
    assert saved["config"]["sigma"] == 0.5 and saved["config"]["num_test"] == 120

    # Active fractions: the fake digits and a fixed network give values in (0, 1) per
    # layer, and the overall value is the neuron-weighted mean of the layers'.
    af = saved["active_fraction"]
    assert [layer["shape"] for layer in af["layers"]] == [[28, 28, 4], [14, 14, 8], [16]]
    sizes = np.array([layer["neurons"] for layer in af["layers"]])
    means = np.array([layer["mean"] for layer in af["layers"]])
    assert af["overall"]["neurons"] == sizes.sum() == 28 * 28 * 4 + 14 * 14 * 8 + 16
    assert af["overall"]["mean"] == pytest.approx((means * sizes).sum() / sizes.sum())

    # Insens per layer, on all 120 test images: clean, |I_l| is the complement of the active
    # fraction (measured by `slp.activation_pattern`), and the total map (`LayerInsens.total`)
    # has the share on the digit that `slp.insens` gives.
    il = saved["insens_layers"]
    assert il["num_images"] == 120 and il["layers"] == ["conv1", "conv2", "dense"]
    assert list(il["conditions"]) == ["clean", "bordered", "background", "framed"]
    clean = il["conditions"]["clean"]
    inactive = np.array([layer["inactive"]["mean"] for layer in clean["layers"]])
    np.testing.assert_allclose(inactive, sizes * (1 - means), rtol=1e-6)
    assert clean["total"]["inactive"]["mean"] == pytest.approx(inactive.sum())
    assert clean["total"]["share_on_digit_outline"]["mean"] == pytest.approx(
        ia["share_on_digit_outline"]["mean"], abs=1e-5
    )
    for cond in il["conditions"].values():
        for part in [*cond["layers"], cond["total"]]:
            assert part["share_on_digit_outline"]["n"] == 120
            assert 0.0 <= part["share_on_digit_outline"]["mean"] <= 1.0
            assert part["mean_abs"]["mean"] > 0
    assert 0.0 < il["region_fraction"] < 1.0 and il["seconds"] > 0

    md = (out / "mnist_noise.md").read_text()
    assert "| noisy bordered |" in md and "0.87" in md and "figure4.png" in md
    assert "Which layer carries the digit under noise?" in md
    assert "| total (Insens) |" in md and "mnist_noise_layers.png" in md
    with Image.open(out / "mnist_noise_layers.png") as im:
        width, height = im.size
    # 8 rows; input, three layers, total and a colour bar: taller than wide.
    assert height > width > 200
    with Image.open(out / "figure4.png") as im:
        width, height = im.size
    # 2 examples x 4 conditions = 8 rows; 1 + 3 columns: taller than wide.
    assert height > width > 200
    assert (out / "mnist_noise_sweep.png").stat().st_size > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left


def test_mnist_noise_rejects_bad_examples(tmp_path, fake_data):
    script = load_script("mnist_noise.py")
    with pytest.raises(ValueError, match="--examples"):
        script.main(
            [*TINY_TRAIN, "--checkpoint-dir", str(tmp_path), "--out", str(tmp_path)]
            + ["--examples", "500"]
        )


def test_scripts_document_command_and_runtime():
    for name in ("train.py", "mnist_noise.py"):
        doc = load_script(name).__doc__
        assert f"python experiments/{name}" in doc and "minutes" in doc


@pytest.mark.slow
def test_every_registered_method_runs_through_the_script(fake_data):
    """The figure calls every registered method the same way, keys included (smoothgrad)."""
    script = load_script("mnist_noise.py")
    cfg = training.TrainConfig(features=(2, 2), hidden=4)
    model = training.make_model(cfg)
    params = training.init_params(cfg)
    x = training.to_float_images(fake_mnist("test").images[:3])
    runner = script.analysis.MethodRunner(lambda p, z: model.apply(p, z[None])[0], batch_size=2)
    for method in slp.available_methods():
        maps = runner(method, params, x, np.zeros(len(x), np.int32))
        assert maps.shape == x.shape, method
        assert np.isfinite(maps).all(), method


def test_readme_first_command_keeps_the_committed_results_and_the_readme_tests_pass(
    tmp_path, fake_data, monkeypatch
):
    """The README's first command (mnist_noise.py with its defaults) on a tiny setting, run
    from a folder as a user runs it: it writes into runs/ there, leaves the repository's
    committed results/ byte for byte, says that it could not compare itself with them
    (other options), and the README-number tests still pass afterwards."""
    import subprocess
    import sys

    results = helpers.ROOT / "results"
    before = {p.name: p.read_bytes() for p in results.iterdir()}
    small = {name: registry.get_method(name) for name in ("insens", "gradient")}
    monkeypatch.setattr(registry, "_METHODS", small)
    monkeypatch.chdir(tmp_path)
    script = load_script("mnist_noise.py")
    result = script.main(
        [
            *TINY_TRAIN,
            "--checkpoint-dir", str(tmp_path / "ck"),
            "--sigma", "0.5", "--sigmas", "0.5",
            "--examples", "0", "--layer-images", "4",
        ]
    )  # fmt: skip
    assert result["reproduced"] is None  # a tiny network: not comparable with the committed one
    assert (tmp_path / "runs" / "mnist_noise.json").is_file()
    assert {p.name: p.read_bytes() for p in results.iterdir()} == before
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/docs/test_readme_numbers.py"],
        cwd=helpers.ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_mnist_seeds_script_measures_every_seed(tmp_path, fake_data, capsys):
    script = load_script("mnist_seeds.py")
    args = [*TINY_TRAIN, "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path)]
    result = script.main([*args, "--seeds", "0", "1", "--sigma", "0.5", "--num-test", "60"])
    saved = json.loads((tmp_path / "mnist_seeds.json").read_text())
    assert saved["seeds"] == [0, 1] and saved == json.loads(json.dumps(result))
    assert set(saved["per_seed"]) == {"0", "1"} and saved["config"]["num_test"] == 60
    # two networks, two sets of numbers; the spread is over exactly these
    clean = [saved["per_seed"][s]["clean_accuracy"] for s in ("0", "1")]
    assert saved["numbers"]["clean_accuracy"]["values"] == clean
    assert saved["numbers"]["clean_accuracy"]["std"] == pytest.approx(np.std(clean, ddof=1))
    assert len(list((tmp_path / "ck").glob("*.msgpack"))) == 2
    capsys.readouterr()
    refused = {"3": "give at least two --seeds", "3 3": "--seeds repeats 3"}
    for seeds, message in refused.items():  # usage errors, before any training
        with pytest.raises(SystemExit) as e:
            script.main([*args, "--seeds", *seeds.split()])
        assert e.value.code == 2
        assert message in capsys.readouterr().err

"""experiments/evaluate_mnist.py on a tiny setting: two seeds of a narrow 2CONV on synthetic
digits, every metric family, a rerun that computes nothing, and the results' format."""

from __future__ import annotations

import json

import experiment_helpers as helpers
import pytest

from slp import training

fake_mnist = helpers.bar_digits(n_train=300, n_test=40)

TINY = [
    "--num-train", "128", "--epochs", "1", "--batch-size", "32",
    "--features", "2", "4", "--hidden", "8", "--no-progress", "--no-download",
    "--seeds", "0", "1", "--num-images", "8", "--sweep-images", "6", "--draws", "2",
    "--sigmas", "0.5", "2", "--batch-size-maps", "4",
    "--methods", "insens", "gradient", "gradient_x_input", "lrp_epsilon",
]  # fmt: skip


@pytest.fixture
def fake_data(monkeypatch):
    monkeypatch.setattr(training, "load_mnist", fake_mnist)


@pytest.mark.slow
def test_evaluate_mnist_end_to_end_and_resumes(tmp_path, fake_data):
    script = helpers.load_script("evaluate_mnist.py")
    args = [*TINY, "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "out")]
    args += ["--cache", str(tmp_path / "cache"), "--smoke"]
    first = script.main(args)
    saved = json.loads((tmp_path / "out" / "mnist_evaluation.json").read_text())
    assert saved["seeds"] == [0, 1] and saved["config"]["smoke"] is True
    # lrp_epsilon is gradient x input: reported once, under one name, with its alias
    assert saved["methods"] == {"insens": [], "gradient": [], "gradient_x_input": ["lrp_epsilon"]}
    ident = saved["identities"]["lrp_epsilon = gradient_x_input"]
    assert ident["merged"] and ident["max_relative"] <= ident["tolerance"]
    for name, metric in saved["metrics"].items():
        for entry in [*metric["methods"].values(), *metric["controls"].values()]:
            if entry["mean"] is not None:
                low, high = entry["ci95"]
                assert low <= entry["mean"] <= high, name
                assert entry["n_seeds"] == 2
        assert set(metric["top_group"]["members"]) <= set(saved["methods"])
    assert set(saved["metrics"]["StateChange-noise"]["controls"]) == {"random", "blurred_random"}
    assert saved["metrics"]["Robustness-framed-2"]["methods"]["insens"]["n_images"] <= 6
    for png in ("ranking", "sweep", "state_change"):
        assert (tmp_path / "out" / f"mnist_evaluation_{png}.png").stat().st_size > 1000
    md = (tmp_path / "out" / "mnist_evaluation.md").read_text()
    assert "smoke run" in md and "| method |" in md

    # a rerun finds every map chunk and score in the cache: none is written again (the maps'
    # manifests are rewritten by slp.attribute_dataset, their chunks are not)
    def written():
        files = (tmp_path / "cache").rglob("*.npy")
        return {p: p.stat().st_mtime_ns for p in files}

    files = written()
    assert any("scores" in p.parts for p in files) and any("maps" in p.parts for p in files)
    second = script.main(args)
    assert written() == files
    assert first["metrics"] == second["metrics"]


@pytest.mark.slow
def test_quantus_family_scores_every_metric(tmp_path):
    """The Quantus-named metrics through lab.evaluation on a tiny random 2CONV (runs once
    slp.metrics has `evaluate`). Insens's map does not depend on the class explained, so
    RandomLogit compares a map with itself: SSIM 1 on every image."""
    from slp import metrics

    if not hasattr(metrics, "evaluate"):
        pytest.skip("slp.metrics has no evaluate (the Quantus-named metrics) yet")
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lab import evaluation

    cfg = training.TrainConfig(features=(2, 4), hidden=8)
    model = training.make_model(cfg)
    params = training.init_params(cfg)
    fresh = model.init(jax.random.key(1), jnp.zeros((1, 28, 28, 1)))
    images = training.to_float_images(fake_mnist("test").images[:3])
    labels = np.zeros(3, np.int32)

    def apply(p, x):
        return model.apply(p, x[None])[0]

    data = evaluation.SeedData(0, apply, params, "tiny", images, labels, fresh)
    setting = evaluation.Setting(
        seeds=(0,), num_images=3, methods=("insens", "gradient"), families=("quantus",),
        batch_size=3, cache=tmp_path, identity_images=2,
    )  # fmt: skip
    scores, _ = evaluation.run(setting, [data], lambda msg: None)
    assert set(scores) == set(evaluation.QUANTUS)
    for name, by_method in scores.items():
        assert set(by_method) == {"insens", "gradient"}
        assert by_method["gradient"].shape == (1, 3), name
    np.testing.assert_allclose(scores["RandomLogit"]["insens"], 1.0, atol=1e-5)

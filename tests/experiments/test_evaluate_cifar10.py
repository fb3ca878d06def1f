"""experiments/evaluate_cifar10.py on a tiny setting: two seeds of a narrow 2CONV on a
synthetic colour stand-in for CIFAR-10, the families that need no Quantus metric."""

from __future__ import annotations

import json

import experiment_helpers as helpers
import numpy as np
import pytest

import slp


def fake_cifar(split: str = "train", **kwargs):
    """Class k has a bright square at a class position on dark noise."""
    n = 160 if split == "train" else 40
    rng = np.random.default_rng(2 if split == "train" else 3)
    labels = rng.integers(0, 10, size=n).astype(np.int32)
    images = rng.integers(0, 60, size=(n, 32, 32, 3)).astype(np.uint8)
    for i, y in enumerate(labels):
        r, c = divmod(int(y), 5)
        images[i, 4 + 12 * r : 12 + 12 * r, 2 + 6 * c : 6 + 6 * c, y % 3] = 250
    return slp.data.Dataset(images=images, labels=labels, source="images", lossy=True)


@pytest.mark.slow
def test_evaluate_cifar10_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setattr(slp.data, "load_cifar10", fake_cifar)
    script = helpers.load_script("evaluate_cifar10.py")
    out = tmp_path / "out"
    script.main([
        "--num-train", "128", "--epochs", "1", "--batch-size", "32", "--features", "2", "4",
        "--hidden", "8", "--no-progress", "--no-download", "--checkpoint-dir", str(tmp_path),
        "--seeds", "0", "1", "--num-images", "6", "--sweep-images", "4", "--draws", "2",
        "--sigmas", "0.1", "--batch-size-maps", "3", "--methods", "insens", "gradient",
        "--families", "curves", "state_change", "robustness", "--cache", str(tmp_path / "c"),
        "--out", str(out), "--smoke",
    ])  # fmt: skip
    saved = json.loads((out / "cifar10_evaluation.json").read_text())
    assert saved["seeds"] == [0, 1] and set(saved["test_accuracy"]) == {"0", "1"}
    assert saved["config"]["dataset"] == "CIFAR-10 (lossy JPEG copy)"
    # removed pixels take the training images' mean colour (the first --num-train of them)
    train = fake_cifar("train")
    expected = train.images[:128].reshape(-1, 3).astype(np.float64).mean(axis=0) / 255
    np.testing.assert_allclose(saved["config"]["baseline"], expected, rtol=1e-5)
    assert "Robustness-gaussian-0.1" in saved["metrics"]
    for metric in saved["metrics"].values():
        for entry in metric["methods"].values():
            if entry["mean"] is not None:
                assert entry["ci95"][0] <= entry["mean"] <= entry["ci95"][1]
    assert (out / "cifar10_evaluation_ranking.png").stat().st_size > 1000


def _script_arguments(text: str) -> list[str]:
    """The arguments that ``experiments/gpu/evaluate_cifar10.sh`` passes to
    ``evaluate_cifar10.py``, with its shell variables given stand-in values."""
    import shlex

    start = text.rindex("experiments/evaluate_cifar10.py")  # the command, not the comment
    command = text[start:].split("\n\n")[0].replace("\\\n", " ")
    words = shlex.split(command, comments=True)[1:]
    stand_in = {
        "${SOURCE[@]}": ["--source", "images", "--images-path", "cifar.zip"],
        "$CACHE": ["cache"],
        "$OUT": ["out"],
        "$@": [],
    }
    return [v for w in words for v in stand_in.get(w, [w])]


def test_the_gpu_script_passes_options_the_evaluation_takes():
    import subprocess
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "experiments" / "gpu" / "evaluate_cifar10.sh"
    subprocess.run(["bash", "-n", str(path)], check=True)  # the shell parses it
    args = _script_arguments(path.read_text())
    assert "--seeds" in args and "--cache" in args, args
    parsed = helpers.load_script("evaluate_cifar10.py").build_parser().parse_args(args)
    assert parsed.seeds == [0, 1, 2] and parsed.num_images == 200 and parsed.epochs == 5
    assert str(parsed.cache) == "cache" and str(parsed.out) == "out"

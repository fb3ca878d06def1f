"""Tests of slp.training: preprocessing, evaluation, training, checkpoints."""

from __future__ import annotations

import hashlib
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from slp import training as T

# A tiny TwoConv and an easy synthetic task keep every training run to about a second.
TINY = T.TrainConfig(
    seed=0,
    epochs=5,
    batch_size=16,
    learning_rate=3e-3,
    num_classes=4,
    features=(4, 8),
    hidden=32,
    dataset="synthetic",
    input_shape=(8, 8, 1),
)


def quadrant_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8x8 images whose class (0..3) is the quadrant holding a bright 2x2 square."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    x = rng.uniform(0.0, 0.2, size=(n, 8, 8, 1)).astype(np.float32)
    for k, y in enumerate(labels):
        r, c = divmod(int(y), 2)
        i, j = 4 * r + rng.integers(0, 3), 4 * c + rng.integers(0, 3)
        x[k, i : i + 2, j : j + 2, 0] = 1.0
    return x, labels.astype(np.int32)


@pytest.fixture(scope="module")
def data():
    train_x, train_y = quadrant_task(256, seed=1)
    test_x, test_y = quadrant_task(128, seed=2)
    return train_x, train_y, test_x, test_y


@pytest.fixture(scope="module")
def trained(data):
    train_x, train_y, test_x, test_y = data
    return T.train(TINY, train_x, train_y, test_images=test_x, test_labels=test_y, progress=False)


def _leaves_equal(a, b) -> bool:
    return all(
        np.array_equal(np.asarray(u), np.asarray(v))
        for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )


def test_to_float_images_scales_to_unit_interval():
    images = np.array([[[0, 51], [255, 102]]], dtype=np.uint8)
    out = T.to_float_images(images)
    assert out.shape == (1, 2, 2, 1) and out.dtype == np.float32
    np.testing.assert_allclose(out[0, :, :, 0], [[0.0, 0.2], [1.0, 0.4]], rtol=1e-7)


@pytest.mark.parametrize(
    "bad, match",
    [(np.zeros((2, 3, 3), np.float32), "uint8"), (np.zeros((3, 3), np.uint8), r"\(N, H, W\)")],
)
def test_to_float_images_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        T.to_float_images(bad)


class FirstPixels(nn.Module):
    """Logits = the first `classes` pixels of each input: predictions known by construction."""

    classes: int = 3

    def __call__(self, x):
        return x.reshape((x.shape[0], -1))[:, : self.classes]


def test_accuracy_and_logits_against_known_predictions():
    # Example k has its maximum at pixel pred[k]; labels disagree on 2 of 7.
    pred = np.array([0, 1, 2, 2, 1, 0, 1])
    labels = np.array([0, 1, 2, 0, 1, 2, 1])
    x = np.zeros((7, 2, 2), np.float32)
    x.reshape(7, -1)[np.arange(7), pred] = 1.0
    model = FirstPixels()
    # batch_size 3 exercises the padded last batch (7 = 3 + 3 + 1).
    logits = T.predict_logits(model, {}, x, batch_size=3)
    np.testing.assert_array_equal(logits, x.reshape(7, -1)[:, :3])
    assert T.accuracy(model, {}, x, labels, batch_size=3) == pytest.approx(5 / 7)


def test_accuracy_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels"):
        T.accuracy(FirstPixels(), {}, np.zeros((4, 2, 2)), np.zeros(3, int))


def test_train_learns_the_synthetic_task(trained):
    hist = trained.history
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, 5]
    assert hist[-1]["loss"] < hist[0]["loss"]
    # Chance is 0.25; the task is easy for a conv net.
    assert hist[-1]["test_accuracy"] > 0.9
    assert all(h["seconds"] > 0 for h in hist)


def test_train_is_deterministic_given_the_seed(data, trained):
    train_x, train_y, _, _ = data
    again = T.train(TINY, train_x, train_y, progress=False)
    assert _leaves_equal(again.params, trained.params)
    other = T.train(
        T.TrainConfig.from_dict({**TINY.to_dict(), "seed": 1}), train_x, train_y, progress=False
    )
    assert not _leaves_equal(other.params, trained.params)


def test_train_shows_progress_with_loss_and_accuracy(data, capsys):
    train_x, train_y, test_x, test_y = data
    cfg = T.TrainConfig.from_dict({**TINY.to_dict(), "epochs": 1})
    T.train(cfg, train_x, train_y, test_images=test_x, test_labels=test_y, progress=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "acc=" in err and "test accuracy" in err


def test_train_rejects_bad_input(data):
    train_x, train_y, _, _ = data
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        T.train(TINY, train_x, train_y + 4, progress=False)
    big = T.TrainConfig.from_dict({**TINY.to_dict(), "batch_size": 1000})
    with pytest.raises(ValueError, match="batch_size 1000 exceeds"):
        T.train(big, train_x, train_y, progress=False)
    with pytest.raises(ValueError, match="input_shape"):
        T.train(TINY, train_x[:, :6, :6], train_y, progress=False)
    with pytest.raises(ValueError, match="images must be float"):
        T.train(TINY, train_x[..., 0], train_y, progress=False)


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("learning_rate", 0.0),
        ("num_train", 0),
        ("num_classes", 0),
        ("hidden", -1),
        ("features", ()),
        ("features", (8, 0)),
        ("input_shape", (28, 28)),
        ("input_shape", (28, 0, 1)),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(ValueError, match=field):
        T.TrainConfig(**{field: value})


def test_config_dict_roundtrip_and_names():
    d = json.loads(json.dumps(TINY.to_dict()))
    assert d["features"] == [4, 8] and d["input_shape"] == [8, 8, 1]
    assert T.TrainConfig.from_dict(d) == TINY
    with pytest.raises(ValueError, match="bogus"):
        T.TrainConfig.from_dict({**d, "bogus": 1})
    other = T.TrainConfig.from_dict({**d, "learning_rate": 1e-4})
    assert T.checkpoint_name(TINY) != T.checkpoint_name(other)
    assert T.checkpoint_name(TINY).startswith("twoconv_synthetic_seed0_")


def test_checkpoint_roundtrip_is_exact_and_atomic(tmp_path, trained):
    path = tmp_path / "ck" / "net.msgpack"
    meta = {"config": TINY.to_dict(), "test_accuracy": 0.5, "note": "x"}
    T.save_checkpoint(path, trained.params, meta)
    assert sorted(p.name for p in path.parent.iterdir()) == ["net.json", "net.msgpack"]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    recorded = {**meta, "format": 1, "array_sha256": digest}
    assert json.loads(path.with_suffix(".json").read_text()) == recorded
    params, loaded_meta = T.load_checkpoint(path, config=TINY)
    assert loaded_meta == recorded
    assert _leaves_equal(params, trained.params)
    assert jax.tree.structure(params) == jax.tree.structure(trained.params)


def test_load_checkpoint_errors(tmp_path, trained):
    path = tmp_path / "net.msgpack"
    with pytest.raises(FileNotFoundError, match="array file not found"):
        T.load_checkpoint(path, config=TINY)
    T.save_checkpoint(path, trained.params, {"config": TINY.to_dict()})
    other = T.TrainConfig.from_dict({**TINY.to_dict(), "epochs": 7})
    with pytest.raises(ValueError, match="trained with config"):
        T.load_checkpoint(path, config=other)
    sidecar = path.with_suffix(".json")
    sidecar.write_text(json.dumps({"config": TINY.to_dict(), "format": 0}))
    with pytest.raises(ValueError, match="sidecar format 0, this version of slp reads format 1"):
        T.load_checkpoint(path, config=TINY)
    sidecar.write_text(json.dumps({"config": TINY.to_dict(), "format": 1}))
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable msgpack file|does not fit"):
        T.load_checkpoint(path, config=TINY)
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="sidecar"):
        T.load_checkpoint(path, config=TINY)


def test_load_or_train_trains_once_then_reuses(tmp_path, data):
    calls = []

    def load_data():
        calls.append(1)
        return data

    cfg = T.TrainConfig.from_dict({**TINY.to_dict(), "epochs": 1})
    first = T.load_or_train(cfg, checkpoint_dir=tmp_path, load_data=load_data, progress=False)
    assert not first.reused and len(calls) == 1
    assert first.path.name == f"{T.checkpoint_name(cfg)}.msgpack"
    meta = json.loads(first.path.with_suffix(".json").read_text())
    assert meta["config"] == cfg.to_dict()
    assert meta["test_accuracy"] == first.metadata["history"][-1]["test_accuracy"]
    # The stored accuracy is the network's accuracy on the test data.
    test_x, test_y = data[2], data[3]
    assert meta["test_accuracy"] == T.accuracy(first.model, first.params, test_x, test_y)

    second = T.load_or_train(cfg, checkpoint_dir=tmp_path, load_data=load_data, progress=False)
    assert second.reused and len(calls) == 1
    assert _leaves_equal(second.params, first.params)
    x = jnp.asarray(test_x[:5])
    np.testing.assert_array_equal(
        second.model.apply(second.params, x), first.model.apply(first.params, x)
    )

    third = T.load_or_train(
        cfg, checkpoint_dir=tmp_path, load_data=load_data, retrain=True, progress=False
    )
    assert not third.reused and len(calls) == 2


def test_load_or_train_default_folder_is_in_the_data_dir(tmp_path, data):
    cfg = T.TrainConfig.from_dict({**TINY.to_dict(), "epochs": 1})
    ck = T.load_or_train(cfg, data_dir=tmp_path, load_data=lambda: data, progress=False)
    assert ck.path == tmp_path / "checkpoints" / f"{T.checkpoint_name(cfg)}.msgpack"
    assert ck.path.is_file()

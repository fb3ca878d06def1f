"""Training and evaluation of the 2CONV network with optax, and its checkpoints.

Everything here is deterministic given `TrainConfig.seed`: parameter
initialisation and the per-epoch shuffles are drawn from JAX PRNG keys derived
from it, and XLA on CPU is deterministic for a fixed program.

A checkpoint is the project's one format (`slp.checkpoints`): `<name>.msgpack` holds
the parameters, `<name>.json` the sidecar with the training config, the test accuracy
and the per-epoch history; both are written atomically and the format is checked on
loading.

`<name>` is derived from a hash of the config (`checkpoint_name`), so different
configs never overwrite each other and `load_or_train` reuses a checkpoint only
when its config matches the requested one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from slp import checkpoints
from slp import data as slp_data
from slp.checkpoints import Checkpoint
from slp.config import TrainConfig
from slp.data import load_mnist
from slp.models import TwoConv

__all__ = [
    "TrainConfig",
    "TrainOutput",
    "make_model",
    "to_float_images",
    "load_mnist_float",
    "init_params",
    "predict_logits",
    "accuracy",
    "train",
    "save_checkpoint",
    "load_checkpoint",
    "load_or_train",
    "load_or_train_mnist",
]


class TrainOutput(NamedTuple):
    """What `train` returns.

    Attributes:
      params: the trained flax parameters (a pytree of float32 arrays).
      history: one dict per epoch with `epoch` (int), `loss` and
        `train_accuracy` (floats, means over the epoch's steps), `seconds`
        (wall time of the epoch's steps), `cpu_seconds` (CPU time of this
        process over all its threads in that time) and, when test data was given,
        `test_accuracy` (float in [0, 1]).

    Examples:
      >>> import dataclasses
      >>> config = slp.config.TrainConfig(features=(2, 2), hidden=8, input_shape=(8, 8, 1))
      >>> x = np.random.default_rng(0).random((8, 8, 8, 1), np.float32)
      >>> out = slp.training.train(dataclasses.replace(config, batch_size=4), x, np.arange(8) % 10)
      >>> len(out.history), sorted(out.history[0])[:3]
      (3, ['cpu_seconds', 'epoch', 'loss'])
    """

    params: Any
    history: list[dict[str, Any]]


def load_mnist_float(
    split: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    limit: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST as network input: `slp.data.load_mnist` followed by `to_float_images`.

    Args:
      split: "train" or "test".
      data_dir: the data directory (default `$SLP_DATA_DIR` or `~/.cache/slp`).
      download: fetch missing files.
      limit: keep only the first `limit` examples (None: all).

    Returns:
      `(images, labels)`: float32 `(N, 28, 28, 1)` in [0, 1] and int32 `(N,)`.

    Examples:
      >>> images, labels = slp.training.load_mnist_float("test", limit=100)  # doctest: +SKIP
      >>> images.shape, images.dtype, labels[:3]  # doctest: +SKIP
      ((100, 28, 28, 1), dtype('float32'), array([7, 2, 1], dtype=int32))
    """
    images, labels = load_mnist(split, data_dir=data_dir, download=download)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return to_float_images(images), np.asarray(labels, dtype=np.int32)


def make_model(config: TrainConfig) -> TwoConv:
    """The TwoConv network described by `config`.

    Args:
      config: the training config (`num_classes`, `features`, `hidden`).

    Returns:
      An `slp.models.TwoConv` (not initialised; see `init_params`).

    Examples:
      >>> slp.training.make_model(slp.config.TrainConfig(features=(4, 8), hidden=32)).hidden
      32
    """
    return TwoConv(num_classes=config.num_classes, features=config.features, hidden=config.hidden)


def to_float_images(images: np.ndarray) -> np.ndarray:
    """Converts uint8 grayscale images to the network's float input.

    Args:
      images: uint8 array `(N, H, W)` with values 0..255.

    Returns:
      float32 array `(N, H, W, 1)` with values in [0, 1] (`images / 255`).

    Raises:
      ValueError: `images` is not uint8 or not `(N, H, W)`.

    Examples:
      >>> x = slp.training.to_float_images(np.full((2, 28, 28), 255, np.uint8))
      >>> x.shape, x.dtype, float(x.max())
      ((2, 28, 28, 1), dtype('float32'), 1.0)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images, got dtype {images.dtype}")
    if images.ndim != 3:
        raise ValueError(f"expected images shaped (N, H, W), got shape {images.shape}")
    return (images.astype(np.float32) / np.float32(255.0))[..., None]


def init_params(config: TrainConfig) -> Any:
    """Initial parameters of `make_model(config)` from `config.seed`.

    Args:
      config: the training config (its `input_shape` sizes the dense layer).

    Returns:
      The flax parameter pytree.

    Examples:
      >>> config = slp.config.TrainConfig(features=(2, 2), hidden=8, input_shape=(8, 8, 1))
      >>> params = slp.training.init_params(config)
      >>> jax.tree.map(jnp.shape, params)["params"]["Dense_0"]
      {'bias': (8,), 'kernel': (8, 8)}
    """
    init_key, _ = jax.random.split(jax.random.key(config.seed))
    x = jnp.zeros((1, *config.input_shape), jnp.float32)
    return make_model(config).init(init_key, x)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: nn.Module, params: Any, x_BX: jax.Array) -> jax.Array:
    return model.apply(params, x_BX)


def predict_logits(
    model: nn.Module, params: Any, inputs: np.ndarray, *, batch_size: int = 1000
) -> np.ndarray:
    """Logits of `model` on every input, computed in jitted batches.

    The last batch is padded to `batch_size` so that one compiled program serves
    every call with the same batch size and example shape.

    Args:
      model: a flax module mapping `(B, ...)` to `(B, C)`.
      params: its parameters.
      inputs: array `(N, ...)` of examples.
      batch_size: examples per forward pass.

    Returns:
      numpy array `(N, C)` of logits.

    Raises:
      ValueError: no inputs.

    Examples:
      >>> config = slp.config.TrainConfig(features=(2, 2), hidden=8, input_shape=(8, 8, 1))
      >>> model, params = slp.training.make_model(config), slp.training.init_params(config)
      >>> slp.training.predict_logits(model, params, np.zeros((5, 8, 8, 1)), batch_size=4).shape
      (5, 10)
    """
    inputs = np.asarray(inputs)
    n = inputs.shape[0]
    if n == 0:
        raise ValueError("predict_logits got zero inputs")
    batch_size = min(batch_size, n)
    out = []
    for start in range(0, n, batch_size):
        batch = inputs[start : start + batch_size]
        m = batch.shape[0]
        if m < batch_size:
            pad = np.zeros((batch_size - m, *batch.shape[1:]), batch.dtype)
            batch = np.concatenate([batch, pad])
        out.append(np.asarray(_apply(model, params, jnp.asarray(batch)))[:m])
    return np.concatenate(out)


def accuracy(
    model: nn.Module,
    params: Any,
    inputs: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 1000,
) -> float:
    """Fraction of `inputs` whose arg-max logit equals the label.

    Args:
      model: a flax module mapping `(B, ...)` to `(B, C)`.
      params: its parameters.
      inputs: array `(N, ...)`.
      labels: integer array `(N,)`.
      batch_size: examples per forward pass.

    Returns:
      Accuracy in [0, 1].

    Raises:
      ValueError: `inputs` and `labels` have different lengths.

    Examples:
      >>> net, digits = slp.data.example_model(), slp.data.example_digits()
      >>> slp.training.accuracy(net.model, net.params, digits.images, digits.labels)
      0.9
    """
    labels = np.asarray(labels)
    if labels.shape != (np.shape(inputs)[0],):
        raise ValueError(
            f"labels must be shaped (N,) = ({np.shape(inputs)[0]},), got {labels.shape}"
        )
    pred = predict_logits(model, params, inputs, batch_size=batch_size).argmax(-1)
    return float(np.mean(pred == labels))


def _check_data(images: np.ndarray, labels: np.ndarray, what: str) -> None:
    if np.asarray(images).ndim != 4:
        raise ValueError(f"{what} images must be float (N, H, W, C); got shape {images.shape}")
    if np.shape(labels) != (np.shape(images)[0],):
        raise ValueError(
            f"{what} labels must be shaped ({np.shape(images)[0]},), got {np.shape(labels)}"
        )


def _record(epoch: int, losses, corrects, seen: int, t0: float, c0: float) -> dict:
    """One epoch's line of the training history (``seen``: the examples it trained on)."""
    return {
        "epoch": epoch + 1,
        "loss": float(jnp.mean(jnp.stack(losses))),
        "train_accuracy": float(jnp.sum(jnp.stack(corrects))) / seen,
        "seconds": time.perf_counter() - t0,
        "cpu_seconds": time.process_time() - c0,
    }


def train(
    config: TrainConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    *,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    progress: bool = True,
) -> TrainOutput:
    """Trains `make_model(config)` with Adam on softmax cross-entropy.

    Learning rate: linear warm-up over `warmup_fraction` of the steps to
    `learning_rate`, then cosine decay to 0. Deterministic given `config.seed`.

    Args:
      config: hyperparameters.
      train_images: float array `(N, H, W, C)` (see `to_float_images`).
      train_labels: integer array `(N,)` in `[0, num_classes)`.
      test_images: optional float array `(M, H, W, C)` evaluated after every epoch.
      test_labels: optional integer array `(M,)`.
      progress: show a tqdm progress bar with the running loss and accuracy.

    Returns:
      `TrainOutput(params, history)`.

    Raises:
      ValueError: `batch_size` exceeds the training examples, or the data are not float
        `(N, H, W, C)` with one label each (test data: both or neither).

    Examples:
      >>> import dataclasses
      >>> config = slp.config.TrainConfig(features=(2, 2), hidden=8, input_shape=(8, 8, 1))
      >>> x, y = np.random.default_rng(0).random((8, 8, 8, 1), np.float32), np.arange(8) % 10
      >>> out = slp.training.train(dataclasses.replace(config, epochs=1, batch_size=4), x, y)
      >>> len(out.history), bool(np.isfinite(out.history[0]["loss"]))
      (1, True)
    """
    train_images, train_labels = _training_data(
        config, train_images, train_labels, test_images, test_labels
    )
    n = train_images.shape[0]
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} exceeds the {n} training examples")
    total_steps = steps_per_epoch * config.epochs

    model = make_model(config)
    params = init_params(config)
    optimizer = _optimizer(config, total_steps)
    opt_state = optimizer.init(params)
    step = _train_step(model, optimizer)

    images_dev = jnp.asarray(train_images, jnp.float32)
    labels_dev = jnp.asarray(train_labels)
    _, shuffle_key = jax.random.split(jax.random.key(config.seed))
    history = []
    bar = tqdm(total=total_steps, disable=not progress, unit="step", dynamic_ncols=True)
    try:
        for epoch in range(config.epochs):
            perm = jax.random.permutation(jax.random.fold_in(shuffle_key, epoch), n)
            t0, c0 = time.perf_counter(), time.process_time()
            params, opt_state, losses, corrects = _epoch(
                step, params, opt_state, images_dev, labels_dev, perm, config, epoch, bar, progress
            )
            jax.block_until_ready(params)
            record = _record(epoch, losses, corrects, steps_per_epoch * config.batch_size, t0, c0)
            if test_images is not None:
                record["test_accuracy"] = accuracy(model, params, test_images, test_labels)
                if progress:
                    bar.write(
                        f"epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f}, "
                        f"test accuracy {record['test_accuracy']:.4f}, {record['seconds']:.0f} s",
                        file=sys.stderr,
                    )
            history.append(record)
    finally:
        bar.close()
    return TrainOutput(params=params, history=history)


def _training_data(
    config: TrainConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray | None,
    test_labels: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The training images and int32 labels `train` uses, once all its data is checked."""
    _check_data(train_images, train_labels, "training")
    if tuple(train_images.shape[1:]) != config.input_shape:
        raise ValueError(
            f"training images have example shape {tuple(train_images.shape[1:])}, "
            f"but config.input_shape is {config.input_shape}"
        )
    if (test_images is None) != (test_labels is None):
        raise ValueError("give both test_images and test_labels, or neither")
    if test_images is not None:
        _check_data(test_images, test_labels, "test")
    if config.num_train is not None:
        train_images = train_images[: config.num_train]
        train_labels = train_labels[: config.num_train]
    train_labels = np.asarray(train_labels).astype(np.int32)
    if train_labels.min() < 0 or train_labels.max() >= config.num_classes:
        raise ValueError(
            f"training labels must lie in [0, {config.num_classes}); "
            f"got range [{train_labels.min()}, {train_labels.max()}]"
        )
    return train_images, train_labels


def _optimizer(config: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Adam with a linear warm-up to `learning_rate`, then a cosine decay to 0."""
    warmup = int(config.warmup_fraction * total_steps)
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=warmup,
        decay_steps=total_steps,
        end_value=0.0,
    )
    return optax.adam(schedule)


def _train_step(model: nn.Module, optimizer: optax.GradientTransformation) -> Callable:
    """One compiled optimiser step: ``(params, opt_state, x_BX, y_B) -> (params, opt_state,
    mean loss, number correct)``."""

    @jax.jit
    def step(params, opt_state, x_BX, y_B):
        def loss_fn(p):
            logits = model.apply(p, x_BX)
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_B).mean()
            return loss, logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        correct = jnp.sum(jnp.argmax(logits, -1) == y_B)
        return optax.apply_updates(params, updates), opt_state, loss, correct

    return step


def _epoch(step, params, opt_state, images_dev, labels_dev, perm, config, epoch, bar, progress):
    """One pass over the batches of `perm`: ``(params, opt_state, losses, corrects)``, the
    last two one scalar per step."""
    bs = config.batch_size
    steps_per_epoch = len(perm) // bs
    losses, corrects = [], []
    for i in range(steps_per_epoch):
        idx = perm[i * config.batch_size : (i + 1) * config.batch_size]
        params, opt_state, loss, correct = step(params, opt_state, images_dev[idx], labels_dev[idx])
        losses.append(loss)
        corrects.append(correct)
        bar.update(1)
        if progress and (i % 20 == 19 or i == steps_per_epoch - 1):
            k = min(len(losses), 50)
            bar.set_postfix(
                epoch=epoch + 1,
                loss=f"{float(jnp.mean(jnp.stack(losses[-k:]))):.4f}",
                acc=f"{float(jnp.sum(jnp.stack(corrects[-k:]))) / (k * bs):.4f}",
            )
    return params, opt_state, losses, corrects


def checkpoint_name(config: TrainConfig) -> str:
    """File stem of the checkpoint for `config`: `twoconv_<dataset>_seed<seed>_<hash>`."""
    canonical = json.dumps(config.to_dict(), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:10]
    return f"twoconv_{config.dataset}_seed{config.seed}_{digest}"


def save_checkpoint(path: str | os.PathLike, params: Any, metadata: dict[str, Any]) -> Path:
    """Writes `params` and the JSON sidecar `metadata` atomically (`slp.checkpoints.save`).

    Args:
      path: the parameter file, conventionally `<dir>/<name>.msgpack`; the
        sidecar goes to the same path with suffix `.json`.
      params: the flax parameter pytree.
      metadata: JSON-serialisable dict with ``config`` (`TrainConfig.to_dict`), test
        accuracy, ...; the sidecar also records the checkpoint ``format``.

    Returns:
      The parameter file's path.

    Examples:
      >>> import tempfile, pathlib
      >>> config = slp.config.TrainConfig(features=(2, 2), hidden=8, input_shape=(8, 8, 1))
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.msgpack"
      >>> meta = {"config": config.to_dict()}
      >>> slp.training.save_checkpoint(path, slp.training.init_params(config), meta).name
      'tiny.msgpack'
      >>> params, metadata = slp.training.load_checkpoint(path, config=config)
      >>> metadata["config"]["hidden"]
      8
    """
    return checkpoints.save(path, params, metadata)


def load_checkpoint(path: str | os.PathLike, *, config: TrainConfig) -> tuple[Any, dict[str, Any]]:
    """Reads a checkpoint written by `save_checkpoint` for the network of `config`.

    Args:
      path: the parameter file (`.msgpack`); its `.json` sidecar must exist.
      config: the config the checkpoint must have been trained with.

    Returns:
      `(params, metadata)`.

    Raises:
      FileNotFoundError: either file is missing.
      ValueError: another checkpoint format, the sidecar's config differs from `config`,
        or the parameters do not fit the network (`slp.checkpoints.load`).

    Examples:
      >>> import tempfile, pathlib
      >>> import dataclasses
      >>> config = slp.config.TrainConfig(features=(2, 2), hidden=8, input_shape=(8, 8, 1))
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny.msgpack"
      >>> meta = {"config": config.to_dict()}
      >>> _ = slp.training.save_checkpoint(path, slp.training.init_params(config), meta)
      >>> slp.training.load_checkpoint(path, config=dataclasses.replace(config, hidden=16))
      Traceback (most recent call last):
      ...
      ValueError: checkpoint ... was trained with config ..., not the requested ...
    """

    def template(metadata: dict[str, Any]) -> Any:  # the sidecar is read once, by load
        if metadata.get("config") != config.to_dict():
            raise ValueError(
                f"checkpoint {path} was trained with config {metadata.get('config')}, "
                f"not the requested {config.to_dict()}"
            )
        return jax.eval_shape(lambda: init_params(config))

    params, metadata = checkpoints.load(path, template)
    return jax.tree.map(jnp.asarray, params), metadata


def load_or_train(
    config: TrainConfig,
    *,
    load_data: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    checkpoint_dir: str | os.PathLike | None = None,
    data_dir: str | os.PathLike | None = None,
    retrain: bool = False,
    progress: bool = True,
) -> Checkpoint:
    """Loads the checkpoint for `config` from `checkpoint_dir`, training it if missing.

    Args:
      config: the training config; it determines the checkpoint's name.
      checkpoint_dir: folder holding checkpoints (created if needed); default
        ``<data dir>/checkpoints``.
      data_dir: the data directory of that default (default ``$SLP_DATA_DIR`` or
        ``~/.cache/slp``).
      load_data: called only when training; returns float
        `(train_images (N, H, W, C), train_labels (N,), test_images (M, H, W, C),
        test_labels (M,))`.
      retrain: train (and overwrite the checkpoint) even if one exists.
      progress: show the training progress bar.

    Returns:
      A `Checkpoint`.

    Examples:
      >>> import tempfile
      >>> import dataclasses
      >>> config = slp.config.TrainConfig(features=(2, 2), hidden=8, input_shape=(8, 8, 1))
      >>> rng = np.random.default_rng(0)
      >>> data = lambda: (rng.random((8, 8, 8, 1), np.float32), np.arange(8) % 10, None, None)
      >>> folder = tempfile.mkdtemp()
      >>> tiny = dataclasses.replace(config, epochs=1, batch_size=4)
      >>> slp.training.load_or_train(tiny, checkpoint_dir=folder, load_data=data).reused
      False
      >>> slp.training.load_or_train(tiny, checkpoint_dir=folder, load_data=data).reused
      True
    """
    if checkpoint_dir is None:
        checkpoint_dir = slp_data.data_dir(data_dir) / "checkpoints"
    path = Path(checkpoint_dir) / f"{checkpoint_name(config)}.msgpack"
    model = make_model(config)
    if not retrain and path.is_file() and path.with_suffix(".json").is_file():
        params, metadata = load_checkpoint(path, config=config)
        return Checkpoint(model, params, metadata, path, reused=True)
    train_x, train_y, test_x, test_y = load_data()
    t0 = time.perf_counter()
    out = train(config, train_x, train_y, test_images=test_x, test_labels=test_y, progress=progress)
    metadata = {
        "config": config.to_dict(),
        "test_accuracy": out.history[-1].get("test_accuracy"),
        "history": out.history,
        "train_seconds": time.perf_counter() - t0,
        "num_test": int(len(test_y)) if test_y is not None else None,
        "versions": {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__},
    }
    save_checkpoint(path, out.params, metadata)
    return Checkpoint(model, out.params, metadata, path, reused=False)


def load_or_train_mnist(
    config: TrainConfig,
    *,
    data_dir: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    download: bool = True,
    retrain: bool = False,
    progress: bool = True,
    num_test: int | None = None,
) -> Checkpoint:
    """`load_or_train` on MNIST: the checkpoint for `config`, trained first if missing.

    Args:
      config: the training config (`num_train` limits the training images).
      data_dir: the data directory (default `$SLP_DATA_DIR` or `~/.cache/slp`).
      checkpoint_dir: where checkpoints live (default `<data dir>/checkpoints`).
      download: fetch MNIST when missing.
      retrain: train even if the checkpoint exists.
      progress: show the training progress bar.
      num_test: when training, evaluate on the first `num_test` test images (None: all).

    Returns:
      The `Checkpoint`.

    Examples:
      >>> net = slp.training.load_or_train_mnist(slp.config.TrainConfig())  # doctest: +SKIP
      >>> net.metadata["test_accuracy"] > 0.99  # doctest: +SKIP
      True
    """
    data_dir = slp_data.data_dir(data_dir)

    def load_data():
        train_x, train_y = load_mnist_float(
            "train", data_dir=data_dir, download=download, limit=config.num_train
        )
        test_x, test_y = load_mnist_float(
            "test", data_dir=data_dir, download=download, limit=num_test
        )
        return train_x, train_y, test_x, test_y

    return load_or_train(
        config,
        load_data=load_data,
        checkpoint_dir=checkpoint_dir,
        data_dir=data_dir,
        retrain=retrain,
        progress=progress,
    )

"""A small trained network and ten MNIST test digits that ship with the package.

For a first look without downloading MNIST or training: `example_model` loads a small
2CONV network (`slp.models.TwoConv` with 4 and 8 channels and 32 hidden units, trained
on MNIST by ``experiments/make_example.py``; its test accuracy is in the returned
metadata) and `example_digits` the first image of each class 0..9 of the MNIST test set
(LeCun, Cortes & Burges). Both files live in ``slp/data/example/`` inside the package.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from slp.config import TrainConfig

if TYPE_CHECKING:
    from slp.checkpoints import Checkpoint

EXAMPLE_DIR = Path(__file__).resolve().parent / "example"
MODEL_FILE = "twoconv_small.msgpack"
DIGITS_FILE = "digits.npz"


def example_config() -> TrainConfig:
    """The training config of the bundled network (`slp.config.TrainConfig`)."""
    return TrainConfig(
        seed=0,
        epochs=2,
        batch_size=64,
        learning_rate=3e-3,
        features=(4, 8),
        hidden=32,
    )


class ExampleDigits(NamedTuple):
    """The bundled MNIST test digits, as network input.

    Attributes:
      images: float32 (10, 28, 28, 1), pixel values / 255, in [0, 1]; ``images[c]`` is a
        digit of class c.
      labels: int32 (10,), the classes 0..9.
      indices: int32 (10,), each image's index in the MNIST test set (the first of its class).

    Examples:
      >>> digits = slp.data.example_digits()
      >>> digits.images.shape, digits.labels.tolist()
      ((10, 28, 28, 1), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    """

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


def example_digits() -> ExampleDigits:
    """The first MNIST test image of each class 0..9, bundled with the package.

    Returns:
      ExampleDigits: images float32 (10, 28, 28, 1) in [0, 1], labels int32 (10,),
      indices int32 (10,) into the MNIST test set.

    Examples:
      >>> digits = slp.data.example_digits()
      >>> digits.images.dtype, float(digits.images.max()) <= 1.0
      (dtype('float32'), True)
    """
    with np.load(EXAMPLE_DIR / DIGITS_FILE) as f:
        images, labels, indices = f["images"], f["labels"], f["indices"]
    x = (images.astype(np.float32) / np.float32(255.0))[..., None]
    return ExampleDigits(images=x, labels=labels.astype(np.int32), indices=indices.astype(np.int32))


def example_model() -> Checkpoint:
    """The small trained 2CONV network bundled with the package.

    Returns:
      `slp.checkpoints.Checkpoint`: ``model`` (`slp.models.TwoConv`, 4 and 8 channels, 32
      hidden units; maps ``(B, 28, 28, 1)`` to logits ``(B, 10)``), ``params``,
      ``metadata`` (config, ``test_accuracy`` on the 10,000 MNIST test images, history),
      ``path`` and ``reused=True``.

    Raises:
      ValueError: the bundled file was trained with another configuration than
        `example_config` (write it again with ``experiments/make_example.py``).

    Examples:
      >>> net = slp.data.example_model()
      >>> x = slp.data.example_digits().images[7]
      >>> int(net.model.apply(net.params, x[None])[0].argmax())
      7
    """
    # Imported here, so that `import slp.data` needs no jax. Reading the file needs only the
    # checkpoint format and the network, not `slp.training` (which imports `slp.data`).
    import jax  # noqa: PLC0415
    import jax.numpy as jnp  # noqa: PLC0415

    from slp import checkpoints  # noqa: PLC0415
    from slp.models import TwoConv  # noqa: PLC0415

    config = example_config()
    model = TwoConv(num_classes=config.num_classes, features=config.features, hidden=config.hidden)
    x = jax.ShapeDtypeStruct((1, *config.input_shape), jnp.float32)
    path = EXAMPLE_DIR / MODEL_FILE
    params, metadata = checkpoints.load(path, jax.eval_shape(model.init, jax.random.key(0), x))
    if metadata.get("config") != config.to_dict():
        raise ValueError(
            f"{path} was trained with config {metadata.get('config')}, not the bundled "
            f"example's {config.to_dict()}; write it again with experiments/make_example.py"
        )
    params = jax.tree.map(jnp.asarray, params)
    return checkpoints.Checkpoint(model, params, metadata, path, reused=True)

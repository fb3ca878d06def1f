"""The code that the tutorial notebooks share: the small 2CONV network they all explain.

The notebooks import this module as ``tutorial``: Jupyter starts their kernel in this
folder, and ``notebooks/_build.py`` puts the folder on the kernel's ``PYTHONPATH`` so that
the import works from any working directory.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from slp import training
from slp.config import TrainConfig

# A small version of the paper's 2CONV (16 and 32 channels, 128 hidden units), one seeded
# epoch on the first 12,000 MNIST training images; its checkpoint is cached in the data
# directory, so the first notebook to run trains it and the others load it.
CONFIG = TrainConfig(
    seed=0,
    epochs=1,
    batch_size=64,
    learning_rate=3e-3,
    num_train=12_000,
    features=(16, 32),
    hidden=128,
)
NUM_TEST = 2_000  # the first 2,000 MNIST test images


class Network(NamedTuple):
    """A trained network with the test images it is evaluated on."""

    model: Any  # slp.models.TwoConv
    params: Any
    test_x: np.ndarray  # (num_test, 28, 28, 1) float images
    test_y: np.ndarray  # (num_test,) labels
    accuracy: float  # on test_x


def mnist_2conv(config: TrainConfig = CONFIG, *, num_test: int = NUM_TEST) -> Network:
    """The 2CONV trained on MNIST with ``config`` (cached checkpoint, else trained first).

    Args:
      config: the training config; the notebooks use ``CONFIG``.
      num_test: how many MNIST test images to load and evaluate on (the first ones).

    Returns:
      The model, its parameters, the test images and labels, and the test accuracy.
    """
    ck = training.load_or_train_mnist(config, num_test=num_test, progress=False)
    test_x, test_y = training.load_mnist_float("test", limit=num_test)
    accuracy = training.accuracy(ck.model, ck.params, test_x, test_y)
    return Network(ck.model, ck.params, test_x, test_y, accuracy)

"""Configuration records that import no jax.

`TrainConfig`, the hyperparameters of one training run of 2CONV (`slp.training` trains with
it and names checkpoints after it), lives here so that a command line can build its options
from the record's fields and answer ``--help`` without importing jax: ``import slp.config``
imports only the standard library. `DEFAULT_SIGMA`, `slp.noise`'s default noise strength,
is here for the same reason.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

__all__ = ["DEFAULT_SIGMA", "TrainConfig"]

DEFAULT_SIGMA = 2.0
"""Default standard deviation of the additive Gaussian noise of `slp.noise` (intensities in
[0, 1]). Calibrated: the sweep value that best matches the paper's bordered/background
accuracies (`experiments/mnist_noise.py`)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (all JSON-serialisable).

    Attributes:
      seed: PRNG seed for initialisation and shuffling.
      epochs: passes over the training set.
      batch_size: examples per optimiser step (the last incomplete batch of an
        epoch is dropped; the shuffle changes every epoch).
      learning_rate: peak learning rate of Adam.
      warmup_fraction: fraction of all steps spent warming the learning rate up
        linearly from 0; a cosine decay to 0 follows.
      num_train: use only the first `num_train` training examples (None: all).
      num_classes: logits of the network.
      features: channels of TwoConv's conv layers, one number per layer.
      hidden: width of TwoConv's hidden dense layer.
      dataset: name of the training data, part of the checkpoint name.
      input_shape: one example's shape `(H, W, C)`.

    Examples:
      >>> config = slp.config.TrainConfig(epochs=1, features=(4, 8), hidden=32)
      >>> slp.config.TrainConfig.from_dict(config.to_dict()) == config
      True
      >>> slp.config.TrainConfig(epochs=0)
      Traceback (most recent call last):
      ...
      ValueError: epochs must be >= 1, got 0
    """

    seed: int = 0
    epochs: int = 3
    batch_size: int = 128
    learning_rate: float = 1e-3
    warmup_fraction: float = 0.05
    num_train: int | None = None
    num_classes: int = 10
    features: tuple[int, ...] = (32, 64)
    hidden: int = 1024
    dataset: str = "mnist"
    input_shape: tuple[int, ...] = (28, 28, 1)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.num_train is not None and self.num_train < 1:
            raise ValueError(f"num_train must be None or >= 1, got {self.num_train}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {self.hidden}")
        # JSON turns tuples into lists; keep the frozen config hashable either way.
        object.__setattr__(self, "features", tuple(int(f) for f in self.features))
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if not self.features or min(self.features) < 1:
            raise ValueError(
                f"features must be one or more channel counts >= 1, got {self.features}"
            )
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(
                f"input_shape must be one image's (H, W, C), each >= 1; got {self.input_shape}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain JSON-compatible dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of `to_dict`; unknown keys raise a `ValueError` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {unknown}")
        return cls(**d)

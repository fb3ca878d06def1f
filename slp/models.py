"""Reference ReLU networks used by the paper's experiments (flax.linen).

`TwoConv` is this project's reconstruction of the paper's "2CONV" network (the
appendix with the exact sizes is not available): conv 5x5x32 -> max-pool 2 ->
conv 5x5x64 -> max-pool 2 -> dense 1024 -> dense classes, all ReLU, SAME padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

__all__ = ["MLP", "TwoConv", "QNetwork", "as_single_example"]


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs.

    Attributes:
      hidden: widths of the hidden ReLU layers.
      num_classes: width of the (linear) output layer.
    """

    hidden: Sequence[int] = (128, 64)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x_BX: jax.Array) -> jax.Array:
        """Maps a batch `(B, ...)` to logits `(B, num_classes)`."""
        h = x_BX.reshape((x_BX.shape[0], -1))
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return nn.Dense(self.num_classes)(h)


class TwoConv(nn.Module):
    """The 2CONV reconstruction: two conv+max-pool blocks and one hidden dense layer.

    Input is NHWC with 1 (MNIST) or 3 (CIFAR-10) channels; every hidden layer is
    ReLU; the output layer is linear (logits).

    Attributes:
      num_classes: number of output logits.
      features: channels of the two conv layers.
      hidden: width of the hidden dense layer.
      kernel_size: side of the square conv kernels.
    """

    num_classes: int = 10
    features: Sequence[int] = (32, 64)
    hidden: int = 1024
    kernel_size: int = 5

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        """Maps `(B, H, W, C)` to logits `(B, num_classes)`."""
        if x_BHWC.ndim != 4:
            raise ValueError(
                f"TwoConv expects a batch of NHWC images (B, H, W, C); got shape {x_BHWC.shape}"
            )
        h = x_BHWC
        k = (self.kernel_size, self.kernel_size)
        for feat in self.features:
            h = nn.relu(nn.Conv(feat, k, padding="SAME")(h))
            h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape((h.shape[0], -1))
        h = nn.relu(nn.Dense(self.hidden)(h))
        return nn.Dense(self.num_classes)(h)


class QNetwork(nn.Module):
    """The classic DQN convolutional Q-network (Mnih et al. 2015), ReLU throughout.

    Input `(B, 84, 84, 4)`: four stacked grayscale frames scaled to [0, 1].

    Attributes:
      num_actions: number of Q-values.
    """

    num_actions: int = 6

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        """Maps `(B, 84, 84, 4)` frames to Q-values `(B, num_actions)`."""
        h = x_BHWC
        h = nn.relu(nn.Conv(32, (8, 8), strides=(4, 4), padding="VALID")(h))
        h = nn.relu(nn.Conv(64, (4, 4), strides=(2, 2), padding="VALID")(h))
        h = nn.relu(nn.Conv(64, (3, 3), strides=(1, 1), padding="VALID")(h))
        h = h.reshape((h.shape[0], -1))
        h = nn.relu(nn.Dense(512)(h))
        return nn.Dense(self.num_actions)(h)


def as_single_example(model: nn.Module, params) -> callable:
    """Returns `f(x) -> logits` on one example, the form every `slp` transform takes."""

    def f(x):
        return model.apply(params, x[None])[0]

    return f

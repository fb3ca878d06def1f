"""Reference ReLU networks used by the paper's experiments (flax.linen).

`TwoConv` is this project's reconstruction of the paper's "2CONV" network (the
appendix with the exact sizes is not available): conv 5x5x32 -> max-pool 2 ->
conv 5x5x64 -> max-pool 2 -> dense 1024 -> dense classes, all ReLU, SAME padding.

`VGG16` and `ResNet50` are torchvision's ImageNet classifiers (Simonyan & Zisserman 2015,
configuration D; He et al. 2016, with the stride on the 3x3 convolution of each
bottleneck as in torchvision) in NHWC layout, in inference mode (no dropout, batch norm
from its running statistics). `slp.torchvision.convert` loads a torchvision
``state_dict`` into them with the same logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["MLP", "TwoConv", "QNetwork", "VGG16", "ResNet50", "as_single_example"]


class MLP(nn.Module):
    """Fully connected ReLU network on flattened inputs.

    Attributes:
      hidden: widths of the hidden ReLU layers.
      num_classes: width of the (linear) output layer.

    Examples:
      >>> model = slp.models.MLP(hidden=(16,), num_classes=3)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4)))
      >>> f = slp.models.as_single_example(model, params)
      >>> slp.insens(f)(jnp.ones((4, 4))).shape
      (4, 4)
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

    Examples:
      >>> model = slp.models.TwoConv(features=(4, 8), hidden=32)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> model.apply(params, jnp.zeros((2, 28, 28, 1))).shape
      (2, 10)
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

    Examples:
      >>> model = slp.models.QNetwork(num_actions=6)
      >>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 84, 84, 4)))
      >>> shapes["params"]["Dense_1"]["kernel"].shape
      (512, 6)
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


#: VGG-16's feature extractor (configuration D): conv widths, "M" for a 2x2 max-pool.
VGG16_FEATURES = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M")
VGG16_FEATURES += (512, 512, 512, "M", 512, 512, 512, "M")


def _check_nhwc(name: str, x: jax.Array, channels: int | None = None) -> None:
    if x.ndim != 4 or (channels is not None and x.shape[-1] != channels):
        want = f"(B, H, W, {channels})" if channels is not None else "(B, H, W, C)"
        raise ValueError(
            f"{name} expects a batch of NHWC images {want}; got shape {x.shape} "
            "(add a batch axis with x[None]; move channels last with x.transpose(0, 2, 3, 1))"
        )


def adaptive_avg_pool(x_BHWC: jax.Array, out: tuple[int, int]) -> jax.Array:
    """torch's ``AdaptiveAvgPool2d(out)`` on NHWC: output cell ``i`` averages input rows
    ``floor(i H / out) .. ceil((i + 1) H / out) - 1`` (and the same along W).

    Written as a tiled average pool when ``out`` divides the input, as a repeat when the
    input divides ``out`` (both keep the structured Insens routes), else as a constant
    averaging matrix per axis.
    """
    h = x_BHWC
    for axis, n_out in zip((1, 2), out, strict=True):
        n_in = h.shape[axis]
        if n_in == n_out:
            continue
        if n_in % n_out == 0:
            w = n_in // n_out
            win = (w, 1) if axis == 1 else (1, w)
            h = nn.avg_pool(h, win, strides=win)
        elif n_out % n_in == 0:
            h = jnp.repeat(h, n_out // n_in, axis=axis)
        else:
            mat = np.zeros((n_out, n_in), np.float32)
            for i in range(n_out):
                lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
                mat[i, lo:hi] = 1.0 / (hi - lo)
            spec = "oh,bhwc->bowc" if axis == 1 else "ow,bhwc->bhoc"
            h = jnp.einsum(spec, jnp.asarray(mat, h.dtype), h)
    return h


class VGG16(nn.Module):
    """VGG-16 (configuration D) as in torchvision, NHWC, inference mode (no dropout).

    13 conv 3x3 layers (padding 1) with five 2x2 max-pools, torch's adaptive average
    pooling to 7x7 (`adaptive_avg_pool`), then dense 4096 -> dense 4096 -> dense
    ``num_classes``; every hidden layer ReLU, logits linear. Any input side of at least
    32 works (at 224 the pooling to 7x7 is the identity). Parameter names follow
    torchvision's modules (``features_0`` is ``features.0``).

    Attributes:
      num_classes: number of output logits (1000 for ImageNet).

    Examples:
      >>> model = slp.models.VGG16(num_classes=10)
      >>> x = jnp.zeros((1, 32, 32, 3))
      >>> shapes = jax.eval_shape(model.init, jax.random.key(0), x)  # no weights allocated
      >>> shapes["params"]["classifier_6"]["kernel"].shape
      (4096, 10)
    """

    num_classes: int = 1000

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        """Maps `(B, H, W, 3)` to logits `(B, num_classes)`."""
        _check_nhwc("VGG16", x_BHWC, 3)
        h = x_BHWC
        idx = 0
        for item in VGG16_FEATURES:
            if item == "M":
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
                idx += 1
            else:
                h = nn.Conv(item, (3, 3), padding=((1, 1), (1, 1)), name=f"features_{idx}")(h)
                h = nn.relu(h)
                idx += 2
        h = adaptive_avg_pool(h, (7, 7))
        # torch flattens channel-first; the converter permutes the first dense kernel's
        # rows so that this channel-last flattening reads the same weights.
        h = h.reshape((h.shape[0], -1))
        h = nn.relu(nn.Dense(4096, name="classifier_0")(h))
        h = nn.relu(nn.Dense(4096, name="classifier_3")(h))
        return nn.Dense(self.num_classes, name="classifier_6")(h)


def _batch_norm(name: str) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name=name)


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck: 1x1 -> 3x3 (stride here) -> 1x1 (x4 width),
    batch norm after each, ReLU; the shortcut is the input or a strided 1x1 conv + BN."""

    planes: int
    stride: int = 1
    downsample: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = (self.stride, self.stride)
        h = nn.Conv(self.planes, (1, 1), use_bias=False, name="conv1")(x)
        h = nn.relu(_batch_norm("bn1")(h))
        h = nn.Conv(self.planes, (3, 3), s, padding=((1, 1), (1, 1)), use_bias=False, name="conv2")(
            h
        )
        h = nn.relu(_batch_norm("bn2")(h))
        h = nn.Conv(4 * self.planes, (1, 1), use_bias=False, name="conv3")(h)
        h = _batch_norm("bn3")(h)
        if self.downsample:
            x = nn.Conv(4 * self.planes, (1, 1), s, use_bias=False, name="downsample_0")(x)
            x = _batch_norm("downsample_1")(x)
        return nn.relu(h + x)


class ResNet50(nn.Module):
    """ResNet-50 as in torchvision (v1.5: stride on the 3x3 convolutions), NHWC.

    Batch norm in inference mode (running statistics in the ``batch_stats`` collection).
    Stem conv 7x7/2 + BN + ReLU + max-pool 3x3/2 (padding 1), four stages of 3, 4, 6, 3
    bottlenecks (widths 64, 128, 256, 512, output x4), global average pooling, dense
    ``num_classes``. Any input side of at least 32 works. Parameter names follow
    torchvision's modules (``layer1_0`` is ``layer1.0``).

    Attributes:
      num_classes: number of output logits (1000 for ImageNet).

    Examples:
      >>> model = slp.models.ResNet50(num_classes=10)
      >>> shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
      >>> sorted(shapes), shapes["params"]["fc"]["kernel"].shape
      (['batch_stats', 'params'], (2048, 10))
    """

    num_classes: int = 1000
    blocks: Sequence[int] = (3, 4, 6, 3)

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        """Maps `(B, H, W, 3)` to logits `(B, num_classes)`."""
        _check_nhwc("ResNet50", x_BHWC, 3)
        h = nn.Conv(64, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False, name="conv1")(
            x_BHWC
        )
        h = nn.relu(_batch_norm("bn1")(h))
        h = nn.max_pool(h, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        for stage, (n, planes) in enumerate(zip(self.blocks, (64, 128, 256, 512), strict=True)):
            for b in range(n):
                stride = 2 if (b == 0 and stage > 0) else 1
                h = Bottleneck(planes, stride, downsample=(b == 0), name=f"layer{stage + 1}_{b}")(h)
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.num_classes, name="fc")(h)


def as_single_example(model: nn.Module, params) -> callable:
    """Returns `f(x) -> logits` on one example, the form every `slp` transform takes.

    Args:
      model: a flax module applied to a batch, ``model.apply(params, x_B...) -> (B, C)``.
      params: its variables (``{"params": ...}``, with ``batch_stats`` where it has them).

    Returns:
      ``f(x) = model.apply(params, x[None])[0]``: one input without the batch axis in,
      its logits ``(C,)`` out.

    Examples:
      >>> model = slp.models.TwoConv(features=(4, 8), hidden=32)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
      >>> f = slp.models.as_single_example(model, params)
      >>> f(jnp.zeros((28, 28, 1))).shape
      (10,)
    """

    def f(x):
        return model.apply(params, x[None])[0]

    return f

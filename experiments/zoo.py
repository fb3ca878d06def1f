"""A model zoo for the Insens benchmark: ReLU networks written the ways their users write them.

Every builder takes ``(key, dtype)`` (and ``small=True`` for a test-sized network) and
returns a `ZooModel`: a per-example function ``f(x) -> logits`` with random weights and
the shape of one input. `ZOO` maps a name to each builder:

- ``2conv-linen``, ``2conv-nnx``, ``2conv-equinox``, ``2conv-haiku``, ``2conv-jnp``:
  the 2CONV network (`slp.models.TwoConv`: conv 5x5x32 -> max-pool 2 -> conv 5x5x64 ->
  max-pool 2 -> dense 1024 -> dense 10, SAME padding, ReLU) on 28x28x1 in flax.linen,
  flax.nnx, equinox (channel-first, 1x28x28), dm-haiku and plain ``jax.numpy``/``lax``.
  For one key all five carry the same weights (the linen initialisation with random
  biases), so they compute the same function (equinox on the transposed input);
- ``2conv-jnp-deadcode``: ``2conv-jnp`` (same weights) whose forward pass also returns
  an auxiliary value, the concatenation of all flattened pre-activations, which ``f``
  drops: dead code in the traced program;
- ``mlp``: 784-256-256-10 in plain ``jax.numpy`` on a 28x28x1 image, flattened;
- ``resnet8``: a small residual network (`resnet8_module`, also ``experiments/bench_insens.py
  --model resnet8``) on 32x32x3;
- ``qnetwork``: the DQN Q-network of the Pong experiment (`slp.models.QNetwork`) on
  84x84x4 frame stacks;
- ``bn-cnn-linen``: a flax.linen CNN with inference-mode batch norm
  (``use_running_average=True``, random running statistics) and max pooling, 28x28x1;
- ``depthwise-linen``: a flax.linen depthwise-separable CNN (``feature_group_count``),
  global average pooling, 32x32x3;
- ``residual-linen``: a flax.linen residual CNN (identity shortcuts, max pooling), 28x28x1;
- ``densenet-linen``: a flax.linen DenseNet-style block (concatenations along channels),
  16x16x3;
- ``convpool-equinox``, ``convpool-haiku``: conv + max-pool CNNs in equinox (3x32x32,
  channel-first) and dm-haiku (32x32x3).

equinox and dm-haiku are imported by their builders only.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = [
    "ZOO",
    "TwoConvWeights",
    "ZooModel",
    "bn_cnn_linen",
    "convpool_equinox",
    "convpool_haiku",
    "densenet_linen",
    "depthwise_linen",
    "mlp",
    "mlp_weights",
    "qnetwork",
    "residual_linen",
    "resnet8",
    "twoconv_equinox",
    "twoconv_haiku",
    "twoconv_jnp",
    "twoconv_jnp_deadcode",
    "twoconv_linen",
    "twoconv_nnx",
    "twoconv_weights",
]


class ZooModel(NamedTuple):
    """A network of the zoo.

    Attributes:
      f: per-example network ``f(x) -> logits``, ``x`` shaped ``input_shape``.
      input_shape: the shape of one input, e.g. ``(28, 28, 1)`` (HWC) or ``(1, 28, 28)``
        (CHW, equinox).
    """

    f: Callable[[jax.Array], jax.Array]
    input_shape: tuple[int, ...]


def _cast(tree: Any, dtype) -> Any:
    return jax.tree.map(lambda a: jnp.asarray(a, dtype), tree)


# Jitted, and compiled once per model, shape and dtype: op by op, initialising ResNet-8
# compiles hundreds of small kernels.
@functools.partial(jax.jit, static_argnums=(0, 2, 3))
def _linen_params(model, key: jax.Array, shape: tuple[int, ...], dtype) -> Any:
    """flax.linen initialisation, with random biases, cast to ``dtype``."""
    from lab import analysis

    kp, kb = jax.random.split(key)
    params = model.init(kp, jnp.zeros((1,) + shape, jnp.float32))
    return _cast(analysis.with_random_biases(params, kb), dtype)


def _twoconv_sizes(small: bool) -> dict[str, Any]:
    if small:
        return dict(features=(2, 3), hidden=8, num_classes=10, kernel=5, shape=(12, 12, 1))
    return dict(features=(32, 64), hidden=1024, num_classes=10, kernel=5, shape=(28, 28, 1))


class TwoConvWeights(NamedTuple):
    """2CONV weights: convs ``[(kernel_HWIO, bias_O)]``, dense ``[(kernel_IO, bias_O)]``."""

    convs: list[tuple[jax.Array, jax.Array]]
    dense: list[tuple[jax.Array, jax.Array]]


def twoconv_weights(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> TwoConvWeights:
    """The weights every 2CONV spelling loads: `slp.models.TwoConv`'s, random biases."""
    from slp.models import TwoConv

    s = _twoconv_sizes(small)
    model = TwoConv(num_classes=s["num_classes"], features=s["features"], hidden=s["hidden"])
    p = _linen_params(model, key, s["shape"], dtype)["params"]
    convs = [(p[f"Conv_{i}"]["kernel"], p[f"Conv_{i}"]["bias"]) for i in range(2)]
    dense = [(p[f"Dense_{i}"]["kernel"], p[f"Dense_{i}"]["bias"]) for i in range(2)]
    return TwoConvWeights(convs, dense)


def twoconv_linen(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """2CONV as `slp.models.TwoConv` (flax.linen), NHWC."""
    from slp.models import TwoConv, as_single_example

    s = _twoconv_sizes(small)
    model = TwoConv(num_classes=s["num_classes"], features=s["features"], hidden=s["hidden"])
    return ZooModel(
        as_single_example(model, _linen_params(model, key, s["shape"], dtype)), s["shape"]
    )


def twoconv_nnx(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """2CONV in flax.nnx (``nnx.Conv``, ``nnx.max_pool``, ``nnx.Linear``), NHWC."""
    from flax import nnx

    s = _twoconv_sizes(small)
    (f1, f2), k = s["features"], (s["kernel"], s["kernel"])
    c_in = s["shape"][-1]
    flat = (s["shape"][0] // 4) * (s["shape"][1] // 4) * f2

    class TwoConvNNX(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.conv1 = nnx.Conv(c_in, f1, k, padding="SAME", param_dtype=dtype, rngs=rngs)
            self.conv2 = nnx.Conv(f1, f2, k, padding="SAME", param_dtype=dtype, rngs=rngs)
            self.dense1 = nnx.Linear(flat, s["hidden"], param_dtype=dtype, rngs=rngs)
            self.dense2 = nnx.Linear(s["hidden"], s["num_classes"], param_dtype=dtype, rngs=rngs)

        def __call__(self, x_BHWC):
            h = nnx.max_pool(nnx.relu(self.conv1(x_BHWC)), (2, 2), strides=(2, 2))
            h = nnx.max_pool(nnx.relu(self.conv2(h)), (2, 2), strides=(2, 2))
            h = nnx.relu(self.dense1(h.reshape((h.shape[0], -1))))
            return self.dense2(h)

    model = nnx.eval_shape(lambda: TwoConvNNX(nnx.Rngs(0)))  # shapes only: weights below
    w = twoconv_weights(key, dtype, small=small)
    for layer, (kernel, bias) in zip(
        (model.conv1, model.conv2, model.dense1, model.dense2), w.convs + w.dense, strict=True
    ):
        layer.kernel.set_value(kernel)
        layer.bias.set_value(bias)
    graphdef, state = nnx.split(model)

    def f(x_HWC):
        return nnx.merge(graphdef, state)(x_HWC[None])[0]

    return ZooModel(f, s["shape"])


def twoconv_equinox(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """2CONV in equinox (``eqx.nn.Conv2d``, ``eqx.nn.MaxPool2d``, ``eqx.nn.Linear``), CHW."""
    import equinox as eqx

    s = _twoconv_sizes(small)
    (f1, f2), k = s["features"], s["kernel"]
    h_in, w_in, c_in = s["shape"]
    hp, wp = h_in // 4, w_in // 4

    class TwoConvEqx(eqx.Module):
        conv1: eqx.nn.Conv2d
        conv2: eqx.nn.Conv2d
        pool: eqx.nn.MaxPool2d
        dense1: eqx.nn.Linear
        dense2: eqx.nn.Linear

        def __init__(self, key):
            k1, k2, k3, k4 = jax.random.split(key, 4)
            self.conv1 = eqx.nn.Conv2d(c_in, f1, k, padding="SAME", dtype=dtype, key=k1)
            self.conv2 = eqx.nn.Conv2d(f1, f2, k, padding="SAME", dtype=dtype, key=k2)
            self.pool = eqx.nn.MaxPool2d(2, stride=2)
            self.dense1 = eqx.nn.Linear(f2 * hp * wp, s["hidden"], dtype=dtype, key=k3)
            self.dense2 = eqx.nn.Linear(s["hidden"], s["num_classes"], dtype=dtype, key=k4)

        def __call__(self, x_CHW):
            h = self.pool(jax.nn.relu(self.conv1(x_CHW)))
            h = self.pool(jax.nn.relu(self.conv2(h)))
            h = jax.nn.relu(self.dense1(h.reshape(-1)))
            return self.dense2(h)

    model = eqx.filter_eval_shape(TwoConvEqx, jax.random.key(0))  # shapes only: weights below
    w = twoconv_weights(key, dtype, small=small)
    (k1, b1), (k2, b2) = w.convs
    (d1, c1), (d2, c2) = w.dense
    # linen flattens (H, W, C), equinox (C, H, W): permute the rows of the first dense layer
    d1_OI = d1.reshape(hp, wp, f2, -1).transpose(3, 2, 0, 1).reshape(s["hidden"], -1)
    new = (
        k1.transpose(3, 2, 0, 1),
        b1[:, None, None],
        k2.transpose(3, 2, 0, 1),
        b2[:, None, None],
        d1_OI,
        c1,
        d2.T,
        c2,
    )
    model = eqx.tree_at(
        lambda m: (
            m.conv1.weight,
            m.conv1.bias,
            m.conv2.weight,
            m.conv2.bias,
            m.dense1.weight,
            m.dense1.bias,
            m.dense2.weight,
            m.dense2.bias,
        ),
        model,
        new,
    )
    return ZooModel(model, (c_in, h_in, w_in))


def twoconv_haiku(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """2CONV in dm-haiku (``hk.transform``, ``hk.Conv2D``, ``hk.max_pool``), NHWC."""
    import haiku as hk

    s = _twoconv_sizes(small)
    k = s["kernel"]

    def forward(x_BHWC):
        h = x_BHWC
        for i, feat in enumerate(s["features"]):
            h = jax.nn.relu(hk.Conv2D(feat, k, padding="SAME", name=f"conv{i}")(h))
            h = hk.max_pool(h, window_shape=(2, 2, 1), strides=(2, 2, 1), padding="VALID")
        h = jax.nn.relu(hk.Linear(s["hidden"], name="dense0")(hk.Flatten()(h)))
        return hk.Linear(s["num_classes"], name="dense1")(h)

    model = hk.without_apply_rng(hk.transform(forward))
    w = twoconv_weights(key, dtype, small=small)
    params = {
        name: {"w": kernel, "b": bias}
        for name, (kernel, bias) in zip(
            ("conv0", "conv1", "dense0", "dense1"), w.convs + w.dense, strict=True
        )
    }

    def f(x_HWC):
        return model.apply(params, x_HWC[None])[0]

    return ZooModel(f, s["shape"])


def _twoconv_jnp_forward(
    w: TwoConvWeights, x_HWC: jax.Array, *, with_pre_activations: bool = False
) -> tuple[jax.Array, jax.Array | None]:
    """2CONV in ``lax``/``jax.numpy``: the logits and (``with_pre_activations``) every
    pre-activation, flattened and concatenated (else None)."""
    h, pre = x_HWC, []
    for kernel, bias in w.convs:
        z = (
            lax.conv_general_dilated(
                h[None], kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )[0]
            + bias[None, None, :]
        )
        if with_pre_activations:
            pre.append(z.reshape(-1))
        h = lax.reduce_window(jnp.maximum(z, 0.0), -jnp.inf, lax.max, (2, 2, 1), (2, 2, 1), "VALID")
    (d1, c1), (d2, c2) = w.dense
    z = h.reshape(-1) @ d1 + c1
    logits = jnp.maximum(z, 0.0) @ d2 + c2
    return logits, jnp.concatenate(pre + [z]) if with_pre_activations else None


def twoconv_jnp(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """2CONV in plain ``lax.conv_general_dilated``, ``lax.reduce_window`` and ``@``, HWC."""
    w = twoconv_weights(key, dtype, small=small)

    def f(x_HWC):
        return _twoconv_jnp_forward(w, x_HWC)[0]

    return ZooModel(f, _twoconv_sizes(small)["shape"])


def twoconv_jnp_deadcode(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """`twoconv_jnp` (same weights for the same key) that also computes an unused value.

    The forward pass returns the logits and the concatenation of every pre-activation (as a
    model returning auxiliary outputs for logging would); ``f`` keeps the logits, so the
    concatenation is traced but does not reach the output.
    """
    w = twoconv_weights(key, dtype, small=small)

    def f(x_HWC):
        logits, _all_pre_activations = _twoconv_jnp_forward(w, x_HWC, with_pre_activations=True)
        return logits

    return ZooModel(f, _twoconv_sizes(small)["shape"])


def mlp_weights(
    key: jax.Array, dtype=jnp.float32, *, small: bool = False
) -> tuple[tuple[int, ...], list[tuple[jax.Array, jax.Array]]]:
    """The input shape and layers ``[(kernel_IO, bias_O)]`` of `mlp` (LeCun-normal kernels,
    biases ``0.05 N(0, 1)``)."""
    shape, widths = ((12, 12, 1), (16, 16, 10)) if small else ((28, 28, 1), (256, 256, 10))
    sizes = (int(np.prod(shape)),) + widths
    keys = jax.random.split(key, 2 * len(widths))
    layers = [
        (
            jax.random.normal(keys[2 * i], (n_in, n_out)) / np.sqrt(n_in),
            0.05 * jax.random.normal(keys[2 * i + 1], (n_out,)),
        )
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))
    ]
    return shape, _cast(layers, dtype)


def mlp(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """784-256-256-10 ReLU network in plain ``jax.numpy`` on a 28x28x1 image, flattened
    (small: 144-16-16-10 on 12x12x1)."""
    shape, layers = mlp_weights(key, dtype, small=small)

    def f(x_HWC):
        h = x_HWC.reshape(-1)
        for w_IO, b_O in layers[:-1]:
            h = jax.nn.relu(h @ w_IO + b_O)
        w_IO, b_O = layers[-1]
        return h @ w_IO + b_O

    return ZooModel(f, shape)


def resnet8_module():
    """A CIFAR-style residual network: conv 16, three residual blocks (16, 32/2, 64/2;
    1x1 strided shortcuts), global average pooling, dense 10. ReLU throughout."""
    import flax.linen as nn

    class ResNet8(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.relu(nn.Conv(16, (3, 3), padding="SAME")(x))
            for width, stride in ((16, 1), (32, 2), (64, 2)):
                r = nn.relu(nn.Conv(width, (3, 3), (stride, stride), padding="SAME")(h))
                r = nn.Conv(width, (3, 3), padding="SAME")(r)
                if stride > 1 or width != h.shape[-1]:
                    h = nn.Conv(width, (1, 1), (stride, stride))(h)
                h = nn.relu(h + r)
            return nn.Dense(10)(jnp.mean(h, axis=(1, 2)))

    return ResNet8()


def resnet8(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """`resnet8_module` (flax.linen) on 32x32x3 (small: 8x8x3)."""
    from slp.models import as_single_example

    model, shape = resnet8_module(), (8, 8, 3) if small else (32, 32, 3)
    return ZooModel(as_single_example(model, _linen_params(model, key, shape, dtype)), shape)


def qnetwork(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """`slp.models.QNetwork` with 6 actions on 84x84x4 (small: 36x36x4, the least its
    three VALID convolutions take)."""
    from slp.models import QNetwork, as_single_example

    model, shape = QNetwork(num_actions=6), (36, 36, 4) if small else (84, 84, 4)
    return ZooModel(as_single_example(model, _linen_params(model, key, shape, dtype)), shape)


# ----------------------------------------------------------------------------------
# Networks of other shapes: batch norm, depthwise-separable, residual, DenseNet-style,
# conv + max-pool in equinox and dm-haiku. Small images (MNIST- and CIFAR-like), a few
# milliseconds per image on a CPU.


def _random_batch_stats(variables: Any, key: jax.Array) -> Any:
    """``variables`` with random running means (``0.1 N(0, 1)``), variances (``U(0.5, 2)``)
    and batch-norm scales (``1 + 0.1 N(0, 1)``): inference-mode batch norm as a trained
    network has it, not the identity of a fresh one."""
    leaves, tree = jax.tree.flatten_with_path(variables)
    keys = iter(jax.random.split(key, len(leaves)))
    out = []
    for path, p in leaves:
        name, k = jax.tree_util.keystr(path), next(keys)
        if "batch_stats" in name and "mean" in name:
            p = 0.1 * jax.random.normal(k, p.shape, p.dtype)
        elif "batch_stats" in name and "var" in name:
            p = jax.random.uniform(k, p.shape, p.dtype, 0.5, 2.0)
        elif "BatchNorm" in name and "scale" in name:
            p = 1.0 + 0.1 * jax.random.normal(k, p.shape, p.dtype)
        out.append(p)
    return jax.tree.unflatten(tree, out)


def _linen_model(model, key: jax.Array, dtype, shape: tuple[int, ...]) -> ZooModel:
    """A flax.linen model with random biases (and batch statistics) as a `ZooModel`."""
    from slp.models import as_single_example

    kp, ks = jax.random.split(key)
    variables = _random_batch_stats(_linen_params(model, kp, shape, jnp.float32), ks)
    return ZooModel(as_single_example(model, _cast(variables, dtype)), shape)


def bn_cnn_linen(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """flax.linen CNN with inference-mode batch norm on 28x28x1: (conv 3x3 -> batch norm
    (``use_running_average=True``) -> ReLU -> max-pool 2) x 2 with 16, 32 channels ->
    dense 64 -> dense 10 (small: 2, 3 channels, dense 8, on 12x12x1)."""
    import flax.linen as nn

    features, hidden, shape = ((2, 3), 8, (12, 12, 1)) if small else ((16, 32), 64, (28, 28, 1))

    class BatchNormCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            for feat in features:
                x = nn.BatchNorm(use_running_average=True)(nn.Conv(feat, (3, 3))(x))
                x = nn.max_pool(nn.relu(x), (2, 2), (2, 2))
            x = nn.relu(nn.Dense(hidden)(x.reshape((x.shape[0], -1))))
            return nn.Dense(10)(x)

    return _linen_model(BatchNormCNN(), key, dtype, shape)


def depthwise_linen(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """flax.linen depthwise-separable CNN on 32x32x3 (MobileNet-style): conv 3x3 8 ->
    two blocks of (depthwise 3x3 stride 2, ``feature_group_count`` = channels -> ReLU ->
    pointwise 1x1 16, 32 -> ReLU) -> global average pooling -> dense 10 (small: 4, 4, 6
    channels on 8x8x3)."""
    import flax.linen as nn

    stem, widths, shape = (4, (4, 6), (8, 8, 3)) if small else (8, (16, 32), (32, 32, 3))

    class DepthwiseCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(stem, (3, 3))(x))
            for width in widths:
                c = x.shape[-1]
                x = nn.relu(nn.Conv(c, (3, 3), (2, 2), feature_group_count=c)(x))
                x = nn.relu(nn.Conv(width, (1, 1))(x))
            return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))

    return _linen_model(DepthwiseCNN(), key, dtype, shape)


def residual_linen(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """flax.linen residual CNN on 28x28x1: conv 3x3 8 -> two stages of (residual block:
    ReLU(x + conv 3x3(ReLU(conv 3x3 x))), identity shortcut -> max-pool 2) -> dense 10
    (small: 3 channels on 12x12x1)."""
    import flax.linen as nn

    width, shape = (3, (12, 12, 1)) if small else (8, (28, 28, 1))

    class ResidualCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(width, (3, 3))(x))
            for _ in range(2):
                r = nn.Conv(width, (3, 3))(nn.relu(nn.Conv(width, (3, 3))(x)))
                x = nn.max_pool(nn.relu(x + r), (2, 2), (2, 2))
            return nn.Dense(10)(x.reshape((x.shape[0], -1)))

    return _linen_model(ResidualCNN(), key, dtype, shape)


def densenet_linen(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """flax.linen DenseNet-style block on 16x16x3: conv 3x3 8 -> three layers each adding
    ReLU(conv 3x3, 8 channels) of the concatenation of all earlier ones (along channels)
    -> transition (ReLU(conv 1x1 16) -> average pooling 2) -> global average pooling ->
    dense 10 (small: 4 + 3 x 2 channels, transition 6, on 8x8x3)."""
    import flax.linen as nn

    stem, growth, trans, shape = (4, 2, 6, (8, 8, 3)) if small else (8, 8, 16, (16, 16, 3))

    class DenseBlockCNN(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(stem, (3, 3))(x))
            for _ in range(3):
                x = jnp.concatenate([x, nn.relu(nn.Conv(growth, (3, 3))(x))], axis=-1)
            x = nn.avg_pool(nn.relu(nn.Conv(trans, (1, 1))(x)), (2, 2), (2, 2))
            return nn.Dense(10)(jnp.mean(x, axis=(1, 2)))

    return _linen_model(DenseBlockCNN(), key, dtype, shape)


def _convpool_sizes(small: bool) -> tuple[tuple[int, int], int, tuple[int, int, int]]:
    """Channels, hidden units and (H, W, C) input of the conv + max-pool networks."""
    return ((2, 3), 8, (8, 8, 3)) if small else ((16, 32), 64, (32, 32, 3))


def convpool_equinox(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """equinox CNN on 3x32x32 (channel-first, CIFAR-like): (conv 3x3 -> ReLU -> max-pool 2)
    x 2 with 16, 32 channels -> dense 64 -> dense 10 (small: 2, 3 channels, dense 8, on
    3x8x8). equinox's own initialisation (uniform weights and biases)."""
    import equinox as eqx

    (f1, f2), hidden, (h, w, c) = _convpool_sizes(small)

    class ConvPoolEqx(eqx.Module):
        conv1: eqx.nn.Conv2d
        conv2: eqx.nn.Conv2d
        pool: eqx.nn.MaxPool2d
        dense1: eqx.nn.Linear
        dense2: eqx.nn.Linear

        def __init__(self, key):
            k1, k2, k3, k4 = jax.random.split(key, 4)
            self.conv1 = eqx.nn.Conv2d(c, f1, 3, padding=1, dtype=dtype, key=k1)
            self.conv2 = eqx.nn.Conv2d(f1, f2, 3, padding=1, dtype=dtype, key=k2)
            self.pool = eqx.nn.MaxPool2d(2, stride=2)
            self.dense1 = eqx.nn.Linear(f2 * (h // 4) * (w // 4), hidden, dtype=dtype, key=k3)
            self.dense2 = eqx.nn.Linear(hidden, 10, dtype=dtype, key=k4)

        def __call__(self, x_CHW):
            x = self.pool(jax.nn.relu(self.conv1(x_CHW)))
            x = self.pool(jax.nn.relu(self.conv2(x)))
            return self.dense2(jax.nn.relu(self.dense1(x.reshape(-1))))

    return ZooModel(ConvPoolEqx(key), (c, h, w))


def convpool_haiku(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """dm-haiku CNN on 32x32x3 (CIFAR-like): (``hk.Conv2D`` 3x3 -> ReLU -> ``hk.max_pool``
    2) x 2 with 16, 32 channels -> dense 64 -> dense 10 (small: 2, 3 channels, dense 8, on
    8x8x3); haiku's initialisation with random biases."""
    import haiku as hk

    from lab import analysis

    features, hidden, shape = _convpool_sizes(small)

    def forward(x_BHWC):
        x = x_BHWC
        for feat in features:
            x = jax.nn.relu(hk.Conv2D(feat, 3)(x))
            x = hk.max_pool(x, window_shape=(1, 2, 2, 1), strides=(1, 2, 2, 1), padding="VALID")
        x = jax.nn.relu(hk.Linear(hidden)(hk.Flatten()(x)))
        return hk.Linear(10)(x)

    model = hk.without_apply_rng(hk.transform(forward))
    kp, kb = jax.random.split(key)
    params = model.init(kp, jnp.zeros((1,) + shape, jnp.float32))
    params = _cast(analysis.with_random_biases(params, kb), dtype)

    def f(x_HWC):
        return model.apply(params, x_HWC[None])[0]

    return ZooModel(f, shape)


ZOO: dict[str, Callable[..., ZooModel]] = {
    "2conv-linen": twoconv_linen,
    "2conv-nnx": twoconv_nnx,
    "2conv-equinox": twoconv_equinox,
    "2conv-haiku": twoconv_haiku,
    "2conv-jnp": twoconv_jnp,
    "2conv-jnp-deadcode": twoconv_jnp_deadcode,
    "mlp": mlp,
    "resnet8": resnet8,
    "qnetwork": qnetwork,
    "bn-cnn-linen": bn_cnn_linen,
    "depthwise-linen": depthwise_linen,
    "residual-linen": residual_linen,
    "densenet-linen": densenet_linen,
    "convpool-equinox": convpool_equinox,
    "convpool-haiku": convpool_haiku,
}

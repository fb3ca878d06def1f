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
- ``resnet8``: the small residual network of ``experiments/bench_insens.py --model
  resnet8`` on 32x32x3;
- ``qnetwork``: the DQN Q-network of the Pong experiment (`slp.models.QNetwork`) on
  84x84x4 frame stacks.

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
    "mlp",
    "mlp_weights",
    "qnetwork",
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


def resnet8(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """``bench_insens.resnet8()`` (flax.linen) on 32x32x3 (small: 8x8x3)."""
    import bench_insens

    from slp.models import as_single_example

    model, shape = bench_insens.resnet8(), (8, 8, 3) if small else (32, 32, 3)
    return ZooModel(as_single_example(model, _linen_params(model, key, shape, dtype)), shape)


def qnetwork(key: jax.Array, dtype=jnp.float32, *, small: bool = False) -> ZooModel:
    """`slp.models.QNetwork` with 6 actions on 84x84x4 (small: 36x36x4, the least its
    three VALID convolutions take)."""
    from slp.models import QNetwork, as_single_example

    model, shape = QNetwork(num_actions=6), (36, 36, 4) if small else (84, 84, 4)
    return ZooModel(as_single_example(model, _linen_params(model, key, shape, dtype)), shape)


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
}

"""Cone-route rules added to the registry: ``lax.pad`` and ``lax.rev`` (over channels).

Reference: ``jax.jacfwd`` in float64 of the network's hidden pre-activations, written out by
hand here (not traced by slp), and eq. 8 summed over the inactive neurons. For a piecewise
linear network at a point off its kinks, that Jacobian is the switched weight vectors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import slp

TOL = 1e-10  # float64


def _conv(h, k, padding):
    return lax.conv_general_dilated(
        h[None], k, (1, 1), padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def _insens_reference(pre_activations, x):
    """Eq. 8 from ``jax.jacfwd`` of every hidden layer's pre-activations."""
    total, count = np.zeros(x.shape), 0
    for v, jac in zip(pre_activations(x), jax.jacfwd(pre_activations)(x), strict=True):
        w = np.asarray(jac).reshape(v.size, -1)
        vv = np.asarray(v).reshape(-1)
        sq = np.sum(w * w, axis=1)
        inactive = vv <= 0
        coef = np.where(inactive & (sq > 0), vv / np.where(sq > 0, sq, 1), 0)
        total += (coef @ w).reshape(x.shape)
        count += int(inactive.sum())
    return total / max(count, 1)


def _network(middle, channels_after: int, seed: int = 0):
    """conv 3x3 -> ReLU -> ``middle`` -> conv 3x3 VALID -> ReLU -> dense -> ReLU -> dense.

    Returns ``(f, pre_activations)``: the network and its hidden pre-activations."""
    rng = np.random.default_rng(seed)
    k1 = jnp.asarray(rng.normal(size=(3, 3, 1, 3)) / 3)
    b1 = jnp.asarray(rng.normal(size=(1, 1, 3)) * 0.1)
    k2 = jnp.asarray(rng.normal(size=(3, 3, channels_after, 2)) / 3)
    b2 = jnp.asarray(rng.normal(size=(1, 1, 2)) * 0.1)
    x0 = jnp.zeros((10, 10, 1))
    n_flat = jax.eval_shape(
        lambda x: _conv(middle(jax.nn.relu(_conv(x, k1, "SAME"))), k2, "VALID"), x0
    ).size
    w3 = jnp.asarray(rng.normal(size=(n_flat, 8)) / np.sqrt(n_flat))
    w4 = jnp.asarray(rng.normal(size=(8, 4)) / np.sqrt(8))

    def pre_activations(x):
        v1 = _conv(x, k1, "SAME") + b1
        v2 = _conv(middle(jax.nn.relu(v1)), k2, "VALID") + b2
        v3 = jax.nn.relu(v2).reshape(-1) @ w3
        return v1, v2, v3

    def f(x):
        return jax.nn.relu(pre_activations(x)[-1]) @ w4

    return f, pre_activations


def _check_every_route(f, pre_activations, x):
    plan = slp.insens_plan(f, x, route="cone")
    assert plan.route == "cone", plan.not_taken
    want = _insens_reference(pre_activations, x)
    for route in ("cone", "probes", "dense"):
        got = np.asarray(slp.insens(f, route=route)(x))
        np.testing.assert_allclose(got, want, atol=TOL, err_msg=route)


@pytest.mark.parametrize(
    "config",
    [
        [(1, 2, 0), (2, 0, 0), (0, 0, 0)],  # zero padding of the height and the width
        [(0, 0, 0), (1, 1, 0), (0, 1, 0)],  # ... and of the channels
        [(-1, 1, 0), (1, -2, 0), (0, 0, 0)],  # cropping (negative padding) too
    ],
)
def test_pad_takes_the_cone_route(x64, config):
    channels = 3 + sum(config[2][:2])
    f, pre = _network(lambda h: lax.pad(h, jnp.zeros((), h.dtype), config), channels)
    x = jax.random.normal(jax.random.key(1), (10, 10, 1), jnp.float64)
    _check_every_route(f, pre, x)


def test_pad_with_a_constant_value_takes_the_cone_route(x64):
    """A non-zero padding value is a constant: the maps are those of zero padding + offset."""
    f, pre = _network(
        lambda h: lax.pad(h, jnp.asarray(0.5, h.dtype), [(1, 1, 0), (0, 2, 0), (0, 0, 0)]), 3
    )
    x = jax.random.normal(jax.random.key(2), (10, 10, 1), jnp.float64)
    _check_every_route(f, pre, x)


def test_rev_over_channels_takes_the_cone_route(x64):
    f, pre = _network(lambda h: h[:, :, ::-1], 3)
    x = jax.random.normal(jax.random.key(3), (10, 10, 1), jnp.float64)
    _check_every_route(f, pre, x)


def test_interior_padding_and_a_rev_of_two_spatial_axes_are_refused_with_the_reason(x64):
    x = jax.random.normal(jax.random.key(4), (10, 10, 1), jnp.float64)
    dilated, _ = _network(
        lambda h: lax.pad(h, jnp.zeros((), h.dtype), [(0, 0, 1), (0, 0, 1), (0, 0, 0)]), 3
    )
    flipped, _ = _network(lambda h: h[::-1, ::-1], 3)  # one reversal along two axes
    for f, reason in ((dilated, "interior padding"), (flipped, "reversal along several spatial")):
        plan = slp.insens_plan(f, x)
        assert plan.route != "cone"
        assert reason in str(plan.not_taken["cone"])
        assert "not implemented on the cone route" in str(plan.not_taken["cone"])


@pytest.mark.parametrize("pool", ["mean", "max"])
def test_relu_after_global_pooling_takes_the_cone_route(x64, pool):
    """conv -> ReLU -> global pooling -> ReLU -> dense -> ReLU -> dense."""
    rng = np.random.default_rng(5)
    k1 = jnp.asarray(rng.normal(size=(3, 3, 1, 4)) / 3)
    b1 = jnp.asarray(rng.normal(size=(1, 1, 4)) * 0.1)
    x = jax.random.normal(jax.random.key(6), (8, 8, 1), jnp.float64)
    w2 = jnp.asarray(rng.normal(size=(4, 5)))
    w3 = jnp.asarray(rng.normal(size=(5, 3)))
    reduce = {"mean": jnp.mean, "max": jnp.max}[pool]
    # thresholds that leave two pooled neurons on and two off at x
    c = reduce(jax.nn.relu(_conv(x, k1, "SAME") + b1), axis=(0, 1)) * jnp.asarray(
        [0.5, 1.5, 0.5, 1.5]
    )

    def pre_activations(x):
        v1 = _conv(x, k1, "SAME") + b1
        v2 = reduce(jax.nn.relu(v1), axis=(0, 1)) - c
        v3 = jax.nn.relu(v2) @ w2
        return v1, v2, v3

    def f(x):
        return jax.nn.relu(pre_activations(x)[-1]) @ w3

    assert (pre_activations(x)[1] <= 0).any() and (pre_activations(x)[1] > 0).any()
    _check_every_route(f, pre_activations, x)


# -- upsampling, edge and reflect padding (sigma may be a fraction; concatenations along a
# spatial axis). 10x10 inputs: the cones cover a part of the image only.


def _transposed(seed, strides, padding="SAME"):
    k = jnp.asarray(np.random.default_rng(seed + 100).normal(size=(3, 3, 3, 3)) / 3)
    return lambda h: lax.conv_transpose(
        h[None], k, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def _strided(seed):
    """A 3x3 convolution of stride 2 (the cones of a block start rho > 1 apart)."""
    k = jnp.asarray(np.random.default_rng(seed + 200).normal(size=(3, 3, 3, 3)) / 3)
    return lambda h: lax.conv_general_dilated(
        h[None], k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


MIDDLES = {
    "edge_pad": lambda seed: lambda h: jnp.pad(h, ((1, 2), (2, 1), (0, 0)), mode="edge"),
    "reflect_pad": lambda seed: lambda h: jnp.pad(h, ((1, 1), (1, 0), (0, 0)), mode="reflect"),
    "symmetric_pad": lambda seed: lambda h: jnp.pad(h, ((1, 0), (0, 1), (0, 0)), "symmetric"),
    "resize_nearest_x2": lambda seed: lambda h: jax.image.resize(h, (20, 20, 3), "nearest"),
    "resize_nearest_3_2": lambda seed: lambda h: jax.image.resize(h, (15, 13, 3), "nearest"),
    "resize_nearest_down": lambda seed: lambda h: jax.image.resize(h, (5, 7, 3), "nearest"),
    "take_rows": lambda seed: lambda h: jnp.take(h, jnp.asarray([0, 2, 2, 3, 5, 9, 8]), axis=0),
    "transposed_conv": lambda seed: _transposed(seed, (2, 2)),
    "transposed_conv_valid_3_1": lambda seed: _transposed(seed, (3, 1), "VALID"),
    # (no ReLU inside a middle: the reference records the network's own pre-activations)
    "strided_then_transposed": lambda seed: lambda h: _transposed(seed, (2, 2))(_strided(seed)(h)),
    "transposed_then_strided": lambda seed: lambda h: _strided(seed)(_transposed(seed, (2, 2))(h)),
    "flip_rows": lambda seed: lambda h: jnp.flip(h, 0),
    "flip_rows_then_columns": lambda seed: lambda h: jnp.flip(jnp.flip(h, 0), 1),
    "reflect_pad_2": lambda seed: lambda h: jnp.pad(h, ((2, 1), (0, 2), (0, 0)), mode="reflect"),
    "repeat_x2": lambda seed: lambda h: jnp.repeat(jnp.repeat(h, 2, axis=0), 2, axis=1),
    "repeat_rows_3": lambda seed: lambda h: jnp.repeat(h, 3, axis=0),
    "repeat_columns_by_broadcast": lambda seed: (
        lambda h: jnp.broadcast_to(h[:, :, None, :], (10, 10, 2, 3)).reshape(10, 20, 3)
    ),
    "repeat_then_strided": lambda seed: lambda h: _strided(seed)(jnp.repeat(h, 2, axis=1)),
    "resize_then_edge_pad": lambda seed: (
        lambda h: jnp.pad(
            jax.image.resize(h, (20, 20, 3), "nearest"), ((1, 1), (1, 1), (0, 0)), mode="edge"
        )
    ),
}


# Middles whose cones cover the whole second ReLU layer along some axis (a flip, a take of
# rows out of order, small layers).
WHOLE = {
    "flip_rows",
    "flip_rows_then_columns",
    "reflect_pad_2",
    "take_rows",
    "resize_nearest_down",
    "strided_then_transposed",
    "repeat_then_strided",  # a second ReLU layer 3 rows high, its cones 5 rows
}


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", sorted(MIDDLES))
def test_upsampling_and_edge_padding_take_the_cone_route(x64, name, seed):
    """Each cone route map equals Insens from ``jax.jacfwd`` (float64) to 1e-10."""
    f, pre = _network(MIDDLES[name](seed), 3, seed=seed)
    x = jax.random.normal(jax.random.key(10 + seed), (10, 10, 1), jnp.float64)
    plan = slp.insens_plan(f, x, route="cone")
    assert plan.route == "cone", plan.not_taken
    want = _insens_reference(pre, x)
    got = np.asarray(slp.insens(f, route="cone")(x))
    np.testing.assert_allclose(got, want, atol=TOL)
    # the cones cover a part of the image only: in the first ReLU layer, and (but where the
    # operation widens them past the whole layer) in the second
    relus = [e.ins[0] for e in plan.cone.steps.values() if e.rule.name == "relu"]
    for g in relus[:1] if name in WHOLE else relus[:2]:
        assert all(w < g.shape[g.axis_of(k)] for k, w in enumerate(g.width)), name


def test_repeat_of_the_input_takes_the_cone_route(x64):
    """``jnp.repeat`` before the first convolution: the input's channel axis is still
    found (the repeated axis carries the height through the reshape)."""
    rng = np.random.default_rng(4)
    k1 = jnp.asarray(rng.normal(size=(3, 3, 2, 3)) / 3)
    w2 = jnp.asarray(rng.normal(size=(20 * 6 * 3, 4)) / 19)

    def pre_activations(x):
        v1 = _conv(jnp.repeat(x, 2, axis=0), k1, "SAME")
        v2 = jax.nn.relu(v1)[:, ::1].reshape(20, 6, 3).reshape(-1) @ w2
        return v1, v2

    def f(x):
        return jax.nn.relu(pre_activations(x)[-1])

    x = jax.random.normal(jax.random.key(3), (10, 6, 2), jnp.float64)
    _check_every_route(f, pre_activations, x)


def test_a_dense_layer_over_a_width_merged_with_channels_is_refused_with_the_reason(x64):
    """A reshape that merges the width with the channels, then a dense layer over them, is a
    layer over a spatial axis (not an upsampling): the cone route names it."""
    rng = np.random.default_rng(5)
    k1 = jnp.asarray(rng.normal(size=(3, 3, 1, 3)) / 3)
    w2, w3 = (jnp.asarray(rng.normal(size=s)) for s in [(18, 5), (30, 2)])

    def f(x):
        h = jax.nn.relu(_conv(x, k1, "SAME")).reshape(6, 18)
        return jax.nn.relu(h @ w2).reshape(-1) @ w3

    plan = slp.insens_plan(f, jnp.ones((6, 6, 1)))
    assert "a dense layer over spatial axes" in plan.not_taken["cone"], plan.not_taken


def _depth_to_space(h, r: int):
    """(H, W, r r C) -> (H r, W r, C): the channels of each position fill an r x r block."""
    hh, ww, c = h.shape
    h = h.reshape(hh, ww, r, r, c // (r * r)).transpose(0, 2, 1, 3, 4)
    return h.reshape(hh * r, ww * r, c // (r * r))


@pytest.mark.parametrize("r", [2, 3])
def test_depth_to_space_takes_the_cone_route(x64, r):
    """A depth-to-space (pixel shuffle): the channels split into free axes, which then merge
    with the height and the width; each element of a block reads another channel."""
    rng = np.random.default_rng(6 + r)
    k1 = jnp.asarray(rng.normal(size=(3, 3, 1, 2 * r * r)) / 3)
    k2 = jnp.asarray(rng.normal(size=(3, 3, 2, 2)) / 3)
    n = 6 * r * 6 * r * 2
    w3 = jnp.asarray(rng.normal(size=(n, 4)) / np.sqrt(n))

    def pre_activations(x):
        v1 = _conv(x, k1, "SAME")
        v2 = _conv(_depth_to_space(jax.nn.relu(v1), r), k2, "SAME")
        return v1, v2, jax.nn.relu(v2).reshape(-1) @ w3

    def f(x):
        return jax.nn.relu(pre_activations(x)[-1])

    x = jax.random.normal(jax.random.key(r), (6, 6, 1), jnp.float64)
    _check_every_route(f, pre_activations, x)


# -- elementwise operations that repeat one channel over the channels ----------------------

SCALES = jnp.asarray([1.0, -2.0, 0.5]).reshape(1, 1, 3)
ROW_SCALES = jnp.linspace(-1.0, 1.0, 10).reshape(1, 10, 1)
STRETCHES = {
    "sum": lambda h: h + h[..., :1],  # implicit broadcast of a size-1 channel axis
    "difference, stretched first": lambda h: h[..., 1:2] - h,
    "explicit broadcast": lambda h: h * 0.5 + jnp.broadcast_to(h[..., 2:], h.shape),
    "plus a bias per channel": lambda h: h[..., 2:3] + SCALES,
    "times a scale per channel": lambda h: h[..., :1] * SCALES,
    "over a scale per channel": lambda h: h[..., 1:2] / SCALES,
}


@pytest.mark.parametrize("name", sorted(STRETCHES))
def test_one_channel_repeated_over_the_channels_takes_the_cone_route(x64, name):
    """``conv(x) + x[..., :1]`` and alike: a free axis of size 1 stretched by an elementwise
    operation repeats the value (the ReLU's pending mask included)."""
    f, pre = _network(STRETCHES[name], 3, seed=len(name))
    x = jax.random.normal(jax.random.key(len(name)), (10, 10, 1), jnp.float64)
    _check_every_route(f, pre, x)


@pytest.mark.parametrize("middle", [lambda h: h + h[:1], lambda h: h[:, 2:3] * ROW_SCALES])
def test_a_row_repeated_over_the_rows_is_refused_with_the_reason(x64, middle):
    """A spatial axis of size 1 stretched over the others is not a cone: refused, named."""
    f, _ = _network(middle, 3)
    plan = slp.insens_plan(f, jnp.ones((10, 10, 1)))
    assert "broadcasts an input-dependent value over a spatial axis" in plan.not_taken["cone"]


def test_a_flattened_one_by_one_map_is_pooled_not_merged():
    """A map whose spatial axes all have one element, flattened into a dense layer (the
    small Q-network's last convolution, ``(1, 1, 1, 64) -> (1, 64)``), takes the pooled
    geometry. The merge of a size-1 spatial axis with the free axis beside it (edge padding's
    repeated rows) also applies to it and is exact, but costs two gathers per block: the
    small Q-network's cone route ran 7-10% slower through it."""
    from types import SimpleNamespace

    from slp._src.cone import rules
    from slp._src.cone.geometry import Geom, Global

    z = Geom((1, 1, 1, 64), (-1, 0, 1, -1), (8, 8), (0, 0), (36, 36), (5, 5))
    eqn = SimpleNamespace(
        dep=(True,),
        primitive=SimpleNamespace(name="reshape", multiple_results=False),
        outputs=("out",),
    )
    outs, data = rules._reshape_geometry(SimpleNamespace(shapes={"out": (1, 64)}), eqn, [z])
    assert data == "pool" and isinstance(outs[0], Global)


def test_a_conv_to_one_by_one_then_dense_every_route_exact(x64):
    """The network behind the test above, exact on every route against jax.jacfwd."""
    rng = np.random.default_rng(5)
    k1 = jnp.asarray(rng.normal(size=(4, 4, 2, 3)) / 4)
    k2 = jnp.asarray(rng.normal(size=(3, 3, 3, 5)) / 3)
    w3 = jnp.asarray(rng.normal(size=(5, 6)) / 2)
    w4 = jnp.asarray(rng.normal(size=(6, 3)) / 2)

    def pre_activations(x):
        v1 = lax.conv_general_dilated(
            x[None], k1, (2, 2), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]
        v2 = _conv(jax.nn.relu(v1), k2, "VALID")  # 3x3 -> 1x1
        v3 = jax.nn.relu(v2).reshape(1, -1) @ w3
        return v1, v2, v3

    def f(x):
        return (jax.nn.relu(pre_activations(x)[-1]) @ w4)[0]

    x = jnp.asarray(rng.uniform(size=(8, 8, 2)))
    _check_every_route(f, pre_activations, x)

"""The fast Insens routes (cone and probe) against independent references, in float64.

References: forward-mode autodiff of the whole switched network (every neuron's
switched weight vector materialised, then eq. 8 by hand), and the brute-force dense
matrices of ``tests/reference.py``. Also: which route a network gets, and that the
choice falls back to the generic route where the structured one does not apply.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from experiment_helpers import run_script
from jax import lax
from reference import dense_model, init_params, jax_function, random_spec

import slp
from slp._src import insens as fast  # the module behind slp.insens
from slp._src import matmul as _matmul
from slp._src import network as net
from slp.models import MLP, TwoConv, as_single_example

TOL = 1e-10


def jacfwd_insens(f, x, *, include_pool_losers=False):
    """Eq. 8 from the full Jacobian of the switched network (the naive route)."""
    program = net.trace(f, x)

    @jax.jit
    def full(x):
        state = net.forward(program, x)
        frozen = net.frozen_network(program, state)
        return state, jax.jacfwd(lambda xp: frozen(xp).relu_inputs)(x)

    state, jac = full(x)
    inactive = [np.asarray(v) <= 0 for v in state.activities]
    if include_pool_losers:
        for k, src in enumerate(program.pool_sources):
            won = np.zeros(int(np.prod(program.pool_input_shapes[k])), bool)
            won[np.asarray(state.winners[k]).reshape(-1)] = True
            inactive[src] = inactive[src] | ~won.reshape(program.pool_input_shapes[k])
    total, count = np.zeros(x.shape), 0
    for j, v, i in zip(jac, state.activities, inactive, strict=True):
        w = np.asarray(j).reshape(v.size, -1)
        sq = np.sum(w * w, axis=1)
        vv = np.asarray(v).reshape(-1)
        ii = i.reshape(-1)
        coef = np.where(ii & (sq > 0), vv / np.where(sq > 0, sq, 1), 0)
        total += (coef @ w).reshape(x.shape)
        count += int(ii.sum())
    return total / max(count, 1)


NHWC = ("NHWC", "HWIO", "NHWC")
NCHW = ("NCHW", "OIHW", "NCHW")


def _normals(rng, *shapes):
    """Standard normal arrays of these shapes, drawn from ``rng`` one after the other."""
    return [jnp.asarray(rng.normal(size=shape)) for shape in shapes]


def _conv(h, kernel, strides, padding, dn=NHWC, **dilation):
    """``lax.conv_general_dilated`` in the layout ``dn`` (NHWC/HWIO by default)."""
    return lax.conv_general_dilated(h, kernel, strides, padding, dimension_numbers=dn, **dilation)


def _max_pool(h, window, strides):
    return lax.reduce_window(h, -jnp.inf, lax.max, window, strides, "VALID")


def _params(model, shape, seed=0):
    """Random float64 weights of a flax model (NumPy: no init compile) and an input x."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape))
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x[None])

    def draw(path, leaf):
        if "bias" in jax.tree_util.keystr(path):  # away from 0: both states in every layer
            return jnp.asarray(rng.normal(0.0, 0.3, leaf.shape))
        fan_in = int(np.prod(leaf.shape[:-1]))
        return jnp.asarray(rng.normal(0.0, 1.0 / np.sqrt(fan_in), leaf.shape))

    return jax.tree_util.tree_map_with_path(draw, shapes), x


def _flax(model, shape, seed=0):
    """``f(x)`` of a flax model with random float64 weights, and an input x."""
    params, x = _params(model, shape, seed)
    return as_single_example(model, params), x


class ConvNet(nn.Module):
    """A configurable conv/pool/dense ReLU net (NHWC) for route tests."""

    convs: tuple = ((3, 3, "SAME"),)  # (features, kernel, padding[, stride])
    pool: tuple | None = ((2, 2), (2, 2), "VALID")  # window, strides, padding
    avg: bool = False
    hidden: tuple = (7,)
    classes: int = 3

    @nn.compact
    def __call__(self, x):
        h = x
        for feat, k, pad, *stride in self.convs:
            st = (stride[0], stride[0]) if stride else (1, 1)
            h = nn.relu(nn.Conv(feat, (k, k), strides=st, padding=pad)(h))
            if self.pool is not None:
                win, st, pp = self.pool
                pool = nn.avg_pool if self.avg else nn.max_pool
                h = pool(h, win, strides=st, padding=pp)
        h = h.reshape((h.shape[0], -1))
        for width in self.hidden:
            h = nn.relu(nn.Dense(width)(h))
        return nn.Dense(self.classes)(h)


def _conv3(features: int, stride: int = 1, **options) -> nn.Conv:
    """The test networks' usual layer: a 3x3 "SAME" convolution."""
    return nn.Conv(features, (3, 3), (stride, stride), padding="SAME", **options)


def _head(h, *, global_pool: bool = False):
    """The last layers of the test networks below: global average pooling (optional) or
    flatten, dense 5, ReLU, dense 3."""
    if global_pool:
        h = jnp.mean(h, axis=(1, 2))
    if h.ndim > 2:
        h = h.reshape((h.shape[0], -1))
    return nn.Dense(3)(nn.relu(nn.Dense(5)(h)))


class GroupedNet(nn.Module):
    """Grouped and depthwise (strided) convolutions."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(_conv3(4)(x))
        h = nn.relu(_conv3(4, 2, feature_group_count=4)(h))
        h = nn.relu(nn.Conv(6, (2, 2), padding="VALID", feature_group_count=2)(h))
        return _head(h)


class ChannelDenseNet(nn.Module):
    """Dense layers over the channel axis of feature maps (1x1 convolutions in effect)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(_conv3(3)(x))
        h = nn.relu(nn.Dense(4)(h))  # over channels, at every position
        h = nn.max_pool(h, (2, 2), (2, 2))
        h = nn.relu(nn.Conv(3, (2, 2), padding="VALID")(h))
        h = nn.relu(nn.Dense(2)(h))
        return _head(h)


class GlobalPoolNet(nn.Module):
    """Global average pooling before the dense layers (all-convolutional style)."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(_conv3(3)(x))
        h = nn.max_pool(h, (2, 2), (2, 2))
        h = nn.relu(_conv3(4, 2)(h))
        return _head(h, global_pool=True)


class ResidualNet(nn.Module):
    """Residual blocks (identity and strided 1x1 shortcuts), then global average pooling."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(_conv3(3)(x))
        r = nn.relu(_conv3(3)(h))
        h = nn.relu(h + _conv3(3)(r))
        s = nn.Conv(4, (1, 1), (2, 2))(h)
        r = nn.relu(_conv3(4, 2)(h))
        h = nn.relu(s + _conv3(4)(r))
        return _head(h, global_pool=True)


class ConcatNet(nn.Module):
    """Inception-style branches and a DenseNet-style block, concatenated along channels."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(_conv3(3)(x))
        a = nn.relu(nn.Conv(2, (1, 1))(h))
        b = nn.relu(_conv3(2)(h))
        c = nn.max_pool(h, (3, 3), (1, 1), padding="SAME")
        h = jnp.concatenate([a, b, c], axis=-1)
        h = jnp.concatenate([h, nn.relu(_conv3(2)(h))], axis=-1)
        h = nn.relu(nn.Conv(3, (2, 2), (2, 2))(h))
        return _head(h)


CONE_NETS = {
    "twoconv": (TwoConv(num_classes=4, features=(3, 5), hidden=9), (16, 16, 1)),
    "twoconv_rgb_odd": (TwoConv(num_classes=3, features=(2, 3), hidden=6), (13, 11, 3)),
    "valid_conv": (ConvNet(convs=((3, 4, "VALID"), (2, 3, "VALID"))), (17, 15, 2)),
    "overlapping_pool": (ConvNet(pool=((3, 3), (2, 2), "SAME")), (12, 12, 1)),
    "avg_pool": (ConvNet(avg=True, convs=((3, 3, "SAME"), (2, 3, "SAME"))), (12, 12, 2)),
    "pool3_same_odd": (
        ConvNet(convs=((2, 3, "SAME"), (2, 2, "VALID")), pool=((3, 3), (3, 3), "SAME")),
        (14, 13, 1),
    ),
    "three_pools": (ConvNet(convs=((2, 3, "SAME"), (3, 3, "SAME"), (2, 2, "SAME"))), (16, 16, 1)),
    # Strided convolutions, DQN-like (8/4, 4/2, 3/1 scaled down) and SAME-padded.
    "dqn_like": (
        ConvNet(convs=((3, 4, "VALID", 2), (4, 3, "VALID", 2), (3, 3, "VALID")), pool=None),
        (25, 23, 2),
    ),
    "strided_same_pool": (
        ConvNet(convs=((3, 3, "SAME", 2), (2, 3, "SAME", 3)), pool=((2, 2), (1, 1), "SAME")),
        (17, 16, 1),
    ),
    "grouped": (GroupedNet(), (11, 10, 2)),
    "channel_dense": (ChannelDenseNet(), (10, 9, 2)),
    "global_mean": (GlobalPoolNet(), (13, 11, 2)),
    "residual": (ResidualNet(), (10, 9, 2)),
    "concatenated": (ConcatNet(), (9, 8, 1)),
    # the last convolution leaves a 1x1 map, flattened into the dense layers
    "one_by_one": (ConvNet(convs=((3, 3, "VALID", 2), (4, 3, "VALID")), pool=None), (7, 8, 1)),
    "no_pool_two_dense": (
        ConvNet(convs=((2, 3, "SAME"), (3, 3, "SAME")), pool=None, hidden=(6, 5)),
        (8, 9, 1),
    ),
}


@pytest.mark.parametrize("name", sorted(CONE_NETS))
def test_cone_route_exact(x64, name):
    model, shape = CONE_NETS[name]
    f, x = _flax(model, shape)
    plan = fast.insens_plan(f, x, route="cone")
    assert plan.route == "cone"
    assert plan.cut is not None
    ref = jacfwd_insens(f, x)
    assert np.abs(ref).max() > 1e-3  # a map that is not trivially zero
    np.testing.assert_allclose(slp.insens(f, route="cone")(x), ref, atol=TOL)


@pytest.mark.parametrize("name", sorted(CONE_NETS))
@pytest.mark.slow
def test_probe_route_exact(x64, name):
    model, shape = CONE_NETS[name]
    f, x = _flax(model, shape)
    ref = jacfwd_insens(f, x)
    chunk = 5 if name == "twoconv" else None  # several steps / a single step
    got = slp.insens(f, route="probes", chunk_size=chunk)(x)
    np.testing.assert_allclose(got, ref, atol=TOL)


@pytest.mark.parametrize("kind", sorted(_matmul.SPLIT_PRODUCTS))
def test_split_products_are_float32_level(kind):
    """``precision="tf32x3"`` etc.: the pieces sum back to the operand and the product
    matches a float64 product of the float32 operands to float32 accumulation error."""
    rng = np.random.default_rng(0)
    a = (rng.normal(size=(40, 300)) * np.exp(2 * rng.normal(size=(40, 1)))).astype(np.float32)
    b = rng.normal(size=(300, 20)).astype(np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    got = np.asarray(_matmul.dot(jnp.asarray(a), jnp.asarray(b), kind), np.float64)
    scale = np.abs(a64) @ np.abs(b64)
    # float32 accumulation of 300 terms: ~1e-7; one bfloat16 or TF32 pass alone: ~1e-3
    assert np.max(np.abs(got - a64 @ b64) / scale) < 1e-5
    # b split once ahead (as for a loop that reuses it): the same product
    presplit = _matmul.dot(jnp.asarray(a), _matmul.split(jnp.asarray(b), kind), kind)
    np.testing.assert_array_equal(np.asarray(presplit, np.float64), got)
    piece_kind, n, _ = _matmul.SPLIT_PRODUCTS[kind]
    pieces = [np.asarray(p, np.float64) for p in _matmul.pieces(jnp.asarray(a), piece_kind, n)]
    assert np.max(np.abs(sum(pieces) - a64) / np.abs(a64)) <= 2.0**-21
    assert np.max(np.abs(pieces[0] - a64) / np.abs(a64)) > 2.0**-14  # the rest matters


@pytest.mark.parametrize("precision", ["tf32x3", "bf16x6", "highest"])
@pytest.mark.slow
def test_insens_precision_option(precision):
    """float32 maps at each precision against the naive route in float64."""
    model, shape = CONE_NETS["twoconv"]
    params, x = _params(model, shape, seed=5)
    assert x.dtype == jnp.float32
    got = np.asarray(slp.insens(as_single_example(model, params), precision=precision)(x))
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), params)
        ref = jacfwd_insens(
            as_single_example(model, params64), jnp.asarray(np.asarray(x), jnp.float64)
        )
    assert np.abs(ref).max() > 1e-3
    assert np.max(np.abs(got - ref)) / np.max(np.abs(ref)) < 1e-5


@pytest.mark.slow
def test_split_precision_in_float64_is_exact(x64):
    """Split products apply to float32 only: float64 stays exact."""
    model, shape = CONE_NETS["twoconv"]
    f, x = _flax(model, shape, seed=6)
    ref = jacfwd_insens(f, x)
    np.testing.assert_allclose(slp.insens(f, precision="bf16x6")(x), ref, atol=TOL)


@pytest.mark.slow
def test_cone_route_pool_losers(x64):
    f, x = _flax(TwoConv(num_classes=4, features=(3, 5), hidden=9), (16, 16, 1), seed=3)
    ref = jacfwd_insens(f, x, include_pool_losers=True)
    assert np.abs(ref - jacfwd_insens(f, x)).max() > 1e-6  # the option matters here
    np.testing.assert_allclose(slp.insens(f, include_pool_losers=True)(x), ref, atol=TOL)


def test_cone_route_without_dense_layer(x64):
    """The last ReLU is a conv layer: the cone route ends there, without a cut."""

    k1 = jnp.full((3, 3, 1, 2), 0.3)
    k2 = jnp.full((3, 3, 2, 2), -0.2)

    def f(x):
        h = _conv(x[None], k1, (1, 1), "SAME")
        h = jax.nn.relu(h - 0.1)
        h = _max_pool(h, (1, 2, 2, 1), (1, 2, 2, 1))
        h = _conv(h, k2, (1, 1), "SAME")
        h = jax.nn.relu(h + 0.05)
        return jnp.sum(h, axis=(0, 1, 2))

    x = jax.random.normal(jax.random.PRNGKey(0), (10, 10, 1), jnp.float64)
    plan = fast.insens_plan(f, x, route="cone")
    assert (plan.route, plan.cut) == ("cone", None)
    np.testing.assert_allclose(slp.insens(f, route="cone")(x), jacfwd_insens(f, x), atol=TOL)


def _check_cone(f, x):
    """``f`` takes the cone route, and both routes match the naive route at ``x``."""
    x = jnp.asarray(x)
    plan = fast.insens_plan(f, x, route="cone")
    assert plan.route == "cone"
    ref = jacfwd_insens(f, x)
    np.testing.assert_allclose(slp.insens(f, route="cone")(x), ref, atol=TOL)
    np.testing.assert_allclose(slp.insens(f, route="probes")(x), ref, atol=TOL)
    return plan


class BatchNormNet(nn.Module):
    """Conv -> inference-mode batch norm (a per-channel affine map) -> ReLU -> pool -> dense."""

    @nn.compact
    def __call__(self, x):
        h = nn.Conv(4, (3, 3), strides=(1, 1), padding="SAME")(x)
        h = nn.relu(nn.BatchNorm(use_running_average=True)(h))
        h = nn.max_pool(h, (2, 2), (2, 2))
        h = nn.Conv(3, (3, 3), strides=(2, 2), padding="VALID", use_bias=False)(h)
        h = nn.relu(nn.BatchNorm(use_running_average=True)(h))
        h = nn.relu(nn.Dense(6)(h.reshape((h.shape[0], -1))))
        return nn.Dense(3)(h)


@pytest.mark.slow
def test_cone_route_batch_norm(x64):
    """Per-channel scales (inference-mode batch norm) stay on the cone route, exactly."""
    model = BatchNormNet()
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(14, 13, 2)))
    variables = model.init(jax.random.PRNGKey(0), x[None])

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if "var" in name:  # running variance: positive, away from 1
            return jnp.asarray(rng.uniform(0.2, 3.0, leaf.shape))
        scale = (
            0.3 if ("bias" in name or "mean" in name) else 1 / np.sqrt(leaf.size / leaf.shape[-1])
        )
        return jnp.asarray(rng.normal(0.0, scale, leaf.shape))

    variables = jax.tree_util.tree_map_with_path(draw, variables)

    def f(xi):
        return model.apply(variables, xi[None])[0]

    plan = fast.insens_plan(f, x, route="cone")
    assert plan.route == "cone"
    ref = jacfwd_insens(f, x)
    assert np.abs(ref).max() > 1e-3
    np.testing.assert_allclose(slp.insens(f, route="cone")(x), ref, atol=TOL)
    np.testing.assert_allclose(slp.insens(f, route="probes")(x), ref, atol=TOL)


def test_cone_route_position_dependent_scale(x64):
    """A constant that varies with the position (and channel) multiplies the cones."""
    rng = np.random.default_rng(4)
    k1, k2 = _normals(rng, (3, 3, 1, 3), (2, 2, 3, 2))
    scale = jnp.asarray(rng.uniform(-2.0, 2.0, size=(1, 9, 8, 3)))
    per_row = jnp.asarray(rng.uniform(0.5, 2.0, size=(1, 3, 1, 1)))
    w = jnp.asarray(rng.normal(size=(3 * 3 * 2, 5)))

    def f(x):  # x: (H, W, 1)
        h = _conv(x[None], k1, (1, 1), "SAME")
        h = jax.nn.relu(h * scale + 0.1)
        h = _max_pool(h, (1, 2, 2, 1), (1, 2, 2, 1))
        h = _conv(h, k2, (1, 1), "VALID")
        h = jax.nn.relu(h / per_row - 0.05)
        return jax.nn.relu(h.reshape(-1) @ w)

    _check_cone(f, rng.normal(size=(9, 8, 1)))


def test_cone_route_channel_dot_on_the_right(x64):
    """A dense layer over channels with the feature map as the right operand (output
    channels first), then max pooling in that layout."""
    rng = np.random.default_rng(5)
    k1, wc, w = _normals(rng, (3, 3, 2, 3), (4, 3), (4 * 4 * 3, 5))

    def f(x):  # x: (H, W, 2)
        h = _conv(x[None], k1, (1, 1), "SAME")
        h = jax.nn.relu(h + 0.1)
        h = lax.dot_general(wc, h, (((1,), (3,)), ((), ())))  # (4, 1, H, W)
        h = jax.nn.relu(h - 0.2)
        h = _max_pool(h, (1, 1, 2, 2), (1, 1, 2, 2))
        return jax.nn.relu(h.reshape(-1) @ w)

    _check_cone(f, rng.normal(size=(8, 6, 2)))


def test_cone_route_global_sum_then_affine(x64):
    """A global sum over the positions, scaled and shifted per channel, then the cut."""
    rng = np.random.default_rng(6)
    k1 = jnp.asarray(rng.normal(size=(3, 3, 1, 3)))
    scale = jnp.asarray(rng.uniform(-1.0, 1.0, size=(1, 3)))
    w = jnp.asarray(rng.normal(size=(3, 4)))

    def f(x):  # x: (H, W, 1)
        h = _conv(x[None], k1, (2, 2), "VALID")
        h = jax.nn.relu(h + 0.1)
        h = jnp.sum(h, axis=(1, 2)) * scale / 3.0 - 0.2  # (1, 3)
        return jax.nn.relu(h @ w)[0]

    assert _check_cone(f, rng.normal(size=(11, 12, 1))).cut is not None


def test_cone_route_difference_of_branches(x64):
    """Two branches with different receptive fields (3x3 and 5x5, one pooled in between),
    subtracted, then pooled and flattened."""
    rng = np.random.default_rng(7)
    k0, k3, k5, w = _normals(rng, (3, 3, 1, 2), (3, 3, 2, 2), (5, 5, 2, 2), (5 * 4 * 2, 4))

    def f(x):  # x: (H, W, 1)
        h = jax.nn.relu(_conv(x[None], k0, (1, 1), "SAME"))
        a = _conv(h, k3, (1, 1), "SAME")
        b = lax.reduce_window(h, 0.0, lax.add, (1, 3, 3, 1), (1, 1, 1, 1), "SAME")
        b = _conv(jax.nn.relu(b), k5, (1, 1), "SAME")
        h = jax.nn.relu(a - b + 0.1)
        h = _max_pool(h, (1, 2, 2, 1), (1, 2, 2, 1))
        return jax.nn.relu(h.reshape(-1) @ w)

    _check_cone(f, rng.normal(size=(10, 9, 1)))


def test_cone_route_nchw_layout(x64):
    """Convolutions in NCHW/OIHW layout, written with lax directly."""
    rng = np.random.default_rng(0)
    k1, k2, w = _normals(rng, (3, 2, 3, 3), (4, 3, 2, 2), (4 * 3 * 3, 5))

    def f(x):  # x: (C, H, W)
        h = _conv(x[None], k1, (1, 1), "SAME", NCHW)
        h = jax.nn.relu(h + 0.1)
        h = _max_pool(h, (1, 1, 2, 2), (1, 1, 2, 2))
        h = _conv(h, k2, (1, 1), "VALID", NCHW)
        h = jax.nn.relu(h)
        return jax.nn.relu(h.reshape(-1) @ w)

    x = jnp.asarray(rng.normal(size=(2, 8, 8)))
    plan = fast.insens_plan(f, x, route="cone")
    assert plan.route == "cone"
    assert plan.cone.spatial == (1, 2)  # the channel axis is not spatial
    np.testing.assert_allclose(slp.insens(f, route="cone")(x), jacfwd_insens(f, x), atol=TOL)


def _equinox_twoconv(in_chw, *, features=(3, 5), hidden=9, classes=4, seed=0):
    """2CONV (`TwoConv`'s shape, small) in equinox, float64: channel-first inputs,
    ``Conv2d`` adds and removes a batch axis, ``MaxPool2d`` transposes internally."""
    eqx = pytest.importorskip("equinox")
    c, h, w = in_chw
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    f1, f2 = features
    n_flat = f2 * (h // 2 // 2) * (w // 2 // 2)

    class Net(eqx.Module):
        conv1: eqx.nn.Conv2d
        conv2: eqx.nn.Conv2d
        pool: eqx.nn.MaxPool2d
        dense1: eqx.nn.Linear
        dense2: eqx.nn.Linear

        def __init__(self):
            opts = dict(padding="SAME", dtype=jnp.float64)
            self.conv1 = eqx.nn.Conv2d(c, f1, 5, key=k[0], **opts)
            self.conv2 = eqx.nn.Conv2d(f1, f2, 5, key=k[1], **opts)
            self.pool = eqx.nn.MaxPool2d(2, stride=2)
            self.dense1 = eqx.nn.Linear(n_flat, hidden, dtype=jnp.float64, key=k[2])
            self.dense2 = eqx.nn.Linear(hidden, classes, dtype=jnp.float64, key=k[3])

        def __call__(self, x_CHW):
            h = self.pool(jax.nn.relu(self.conv1(x_CHW)))
            h = self.pool(jax.nn.relu(self.conv2(h)))
            return self.dense2(jax.nn.relu(self.dense1(h.reshape(-1))))

    return Net()


@pytest.mark.parametrize("in_chw", [(1, 16, 16), (3, 13, 11)])
@pytest.mark.slow
def test_cone_route_equinox_channel_first(x64, in_chw):
    """equinox's layout (transposes and unit batch axes around every convolution and
    pooling, channel-first flattening) on the cone route, exactly."""
    f = _equinox_twoconv(in_chw)
    x = jax.random.normal(jax.random.PRNGKey(1), in_chw, jnp.float64)
    plan = _check_cone(f, x)
    assert plan.cone.spatial == (1, 2)  # the channel axis is found behind the batch axis
    assert plan.cone.sigma_tot == (4, 4)


def test_cone_route_dilated_convolutions(x64):
    """Kernel (rhs) dilation, also with strides and per axis, then max pooling."""
    rng = np.random.default_rng(8)
    k1, k2, w = _normals(rng, (3, 3, 2, 3), (3, 2, 3, 4), (3 * 3 * 4, 5))

    def f(x):  # x: (13, 14, 2)
        h = _conv(x[None], k1, (1, 1), "SAME", rhs_dilation=(2, 2))
        h = jax.nn.relu(h + 0.1)
        h = _conv(h, k2, (2, 1), "VALID", rhs_dilation=(1, 3))
        h = jax.nn.relu(h - 0.1)  # (1, 6, 11, 4)
        h = _max_pool(h, (1, 2, 3, 1), (1, 2, 3, 1))
        return jax.nn.relu(h.reshape(-1) @ w)

    _check_cone(f, jnp.asarray(rng.normal(size=(13, 14, 2))))


def test_cone_route_strided_slicing(x64):
    """Strided slices of the input and of a feature map (``x[::2, 1::3]``), also of its
    channels, between convolutions."""
    rng = np.random.default_rng(9)
    k1, k2, w = _normals(rng, (3, 3, 2, 3), (3, 3, 2, 4), (6 * 3 * 4, 5))

    def f(x):  # x: (15, 17, 2)
        h = x[::2, 1::3]  # (8, 6, 2)
        h = jax.nn.relu(_conv(h[None], k1, (1, 1), "SAME") + 0.1)
        h = h[:, 1:7, ::2, :2]  # (1, 6, 3, 2)
        h = jax.nn.relu(_conv(h, k2, (1, 1), "SAME") - 0.1)
        return jax.nn.relu(h.reshape(-1) @ w)

    _check_cone(f, jnp.asarray(rng.normal(size=(15, 17, 2))))


@pytest.mark.parametrize("layout", ["HWC", "CHW", "NHWC"])
def test_cone_route_global_max_pooling(x64, layout):
    """``jnp.max`` over the spatial axes before the dense layers, in three layouts."""
    rng = np.random.default_rng(10)
    k1, k2, w1, w2 = _normals(rng, (3, 3, 2, 3), (3, 3, 3, 4), (4, 6), (6, 3))

    def f(x):  # x: (9, 10, 2)
        h = jax.nn.relu(_conv(x[None], k1, (1, 1), "SAME") + 0.1)
        h = jax.nn.relu(_conv(h, k2, (2, 2), "SAME") - 0.1)
        if layout == "HWC":
            h = jnp.max(h[0], axis=(0, 1))
        elif layout == "CHW":
            h = jnp.max(h[0].transpose(2, 0, 1), axis=(1, 2))
        else:
            h = jnp.max(h, axis=(1, 2))[0]
        return jax.nn.relu(h @ w1 - 0.2) @ w2

    assert _check_cone(f, jnp.asarray(rng.normal(size=(9, 10, 2)))).cut is not None


def test_forced_cone_route_names_the_operation(x64):
    """``route="cone"`` on a network it does not take: the error names the operation,
    where it sits and why."""
    rng = np.random.default_rng(11)
    k, w = _normals(rng, (3, 3, 1, 2), (2 * 6 * 6, 4))

    @jax.jit
    def mixing(h):
        return jnp.cumsum(h, axis=1)

    def f(x):
        h = jax.nn.relu(_conv(x[None], k, (1, 1), "SAME"))
        return jax.nn.relu(mixing(h).reshape(-1) @ w)

    def interior_pad(x):
        h = jax.nn.relu(_conv(x[None], k, (1, 1), "SAME"))[0]
        h = jax.lax.pad(h, 0.0, ((0, 0, 1), (0, 0, 1), (0, 0, 0)))
        return jax.nn.relu(h.reshape(-1) @ jnp.ones((2 * 11 * 11, 4)))

    def transposed_conv(x):  # taken since the cone route reads input dilation
        h = _conv(x[None], k, (1, 1), ((1, 1), (1, 1)), lhs_dilation=(2, 2))
        return jax.nn.relu(jax.nn.relu(h).reshape(-1) @ jnp.ones((2 * 11 * 11, 4)))

    x = jnp.asarray(rng.normal(size=(6, 6, 1)))
    with pytest.raises(
        ValueError,
        match=r"'cumsum' at equation \d+ \(inside mixing > cumsum, test_insens_fast.py:\d+\): not",
    ):
        slp.insens(f, route="cone")(x)
    with pytest.raises(
        ValueError,
        match=r"'pad' at equation \d+ \(test_insens_fast.py:\d+\): interior padding \(a "
        r"dilation\) is not implemented on the cone route",
    ):
        fast.insens_plan(interior_pad, x, route="cone")
    assert fast.insens_plan(transposed_conv, x, route="cone").route == "cone"
    with pytest.raises(ValueError, match="cone route: no convolution"):
        fast.insens_plan(lambda x: jax.nn.relu(x.reshape(-1) @ w[:36]), x, route="cone")


def _min_side(spec, hw):
    """Smallest spatial size of any conv/pool output of a `random_spec` network."""
    (h, w), sides = hw, []
    for layer in spec:
        if layer[0] == "conv":
            _, _, k, st, pad = layer
            h, w = (
                (-(-h // st), -(-w // st))
                if pad == "SAME"
                else ((h - k) // st + 1, (w - k) // st + 1)
            )
        elif layer[0] in ("maxpool", "avgpool"):
            _, win, st = layer
            h, w = (h - win) // st + 1, (w - win) // st + 1
        else:
            continue
        sides += [h, w]
    return min(sides, default=0)


@pytest.mark.parametrize(
    "seed", [s if s < 3 else pytest.param(s, marks=pytest.mark.slow) for s in range(12)]
)
def test_random_architectures(x64, seed):
    """Random conv/pool/dense mixes against the brute-force dense-matrix reference."""
    rng = np.random.default_rng(7000 + seed)
    spec = random_spec(rng)
    params = init_params(spec, (8, 8, 2), rng)
    x = rng.normal(size=(8, 8, 2))
    f = jax_function(spec, params, relu="nn" if seed % 2 else "max")
    ref = dense_model(spec, params, x).insens()
    xj = jnp.asarray(x)
    plan = fast.insens_plan(f, xj)
    has_conv = any(layer[0] == "conv" for layer in spec)
    # The cone route takes convolutional nets (strided ones too) whose spatial axes keep
    # a size > 1 up to the flattening (a 1x1 map may go either way); MLPs get probes.
    if not has_conv:
        assert "cone" in plan.not_taken and plan.route != "cone"
    elif _min_side(spec, (8, 8)) > 1:
        assert "cone" in plan.costs
    for route in ("auto", *plan.costs):
        got = slp.insens(f, route=route)(xj)
        np.testing.assert_allclose(np.asarray(got).reshape(-1), ref, atol=TOL)


def _layout_function(spec, params, layout: str):
    """A `random_spec` network (`reference.jax_function`) in another layout.

    ``"chw"``: channel-first inputs ``(C, H, W)``, NCHW convolutions and pools, flattened
    channel-first (the dense rows permuted to match): the map is the reference's,
    transposed. ``"transposed"``: ``(H, W, C)`` inputs and ReLUs, but every convolution
    and pooling runs channel-first between transposes (as equinox's pooling does).
    """

    def conv(h, p, s, pad):  # (C, H, W)
        kernel = jnp.asarray(p[0]).transpose(3, 2, 0, 1)  # HWIO -> OIHW
        out = _conv(h[None], kernel, (s, s), pad, NCHW)
        return out[0] + jnp.asarray(p[1])[:, None, None]

    def pool(h, kind, win, s):  # (C, H, W)
        if kind == "maxpool":
            return lax.reduce_window(h, -jnp.inf, lax.max, (1, win, win), (1, s, s), "VALID")
        return lax.reduce_window(h, 0.0, lax.add, (1, win, win), (1, s, s), "VALID") / win**2

    def channel_first(fn, h, *a):
        if layout == "chw":
            return fn(h, *a)
        return fn(h.transpose(2, 0, 1), *a).transpose(1, 2, 0)

    def f(x):
        h, flat = x, None
        for layer, p in zip(spec, params, strict=True):
            kind = layer[0]
            if kind == "conv":
                h = channel_first(conv, h, p, layer[3], layer[4])
            elif kind in ("maxpool", "avgpool"):
                h = channel_first(pool, h, kind, layer[1], layer[2])
            elif kind == "flatten":
                flat, h = h.shape, h.reshape(-1)
            elif kind == "dense":
                w = jnp.asarray(p[0])
                if layout == "chw" and flat is not None:  # rows in (C, H, W) order
                    c, hh, ww = flat
                    w = w.reshape(hh, ww, c, -1).transpose(2, 0, 1, 3).reshape(h.size, -1)
                    flat = None
                h = h @ w + jnp.asarray(p[1])
            elif kind == "relu":
                h = jax.nn.relu(h)
        return h

    return f


@pytest.mark.parametrize("layout", ["chw", "transposed"])
@pytest.mark.parametrize(
    "seed", [s if s < 1 else pytest.param(s, marks=pytest.mark.slow) for s in range(6)]
)
def test_random_architectures_other_layouts(x64, seed, layout):
    """The networks of `test_random_architectures` channel-first or with transposes around
    every convolution and pooling: the cone route takes them, exactly (brute-force
    dense-matrix reference)."""
    rng = np.random.default_rng(7000 + seed)
    spec = random_spec(rng)
    params = init_params(spec, (8, 8, 2), rng)
    x = rng.normal(size=(8, 8, 2))
    ref = dense_model(spec, params, x).insens().reshape(x.shape)
    f = _layout_function(spec, params, layout)
    chw = layout == "chw"
    xj = jnp.asarray(x.transpose(2, 0, 1) if chw else x)
    routes = ["probes"]
    if any(layer[0] == "conv" for layer in spec) and _min_side(spec, (8, 8)) > 1:
        plan = fast.insens_plan(f, xj, route="cone")
        assert plan.cone.spatial == ((1, 2) if chw else (0, 1))
        routes.append("cone")
    for route in routes:
        got = np.asarray(slp.insens(f, route=route)(xj))
        np.testing.assert_allclose(got.transpose(1, 2, 0) if chw else got, ref, atol=TOL)


def test_plan_full_size_twoconv(x64):
    """2CONV on 28x28x1: cone route, cut at the dense layer, 7x7 blocks of 4x4 pixels."""
    f, x = _flax(TwoConv(), (28, 28, 1))
    assert slp.insens_plan is fast.insens_plan  # exported at the top level
    plan = slp.insens_plan(f, x, batch=8)  # at 1 input per call probes may be chosen
    assert plan.route == "cone"
    assert plan.cone.sigma_tot == (4, 4)
    assert len(plan.cone.blocks) == 49
    assert (plan.pre_sites, plan.post_sites, plan.cut_out_shape) == ((0, 1), (2,), (1, 1024))
    probes = fast.insens_plan(f, x, route="probes")
    # Probe route: pooled units of the second block see 16x16 inputs -> 256 colours.
    assert probes.probes.lattice == (16, 16, 1)
    assert probes.probes.n_colours == 256
    assert probes.probes.n_groups == 49


def test_plan_mlp_uses_cut_without_probing(x64):
    f, x = _flax(MLP(hidden=(6, 5), num_classes=3), (5, 4, 1))
    plan = fast.insens_plan(f, x, chunk_size=8, route="probes")
    assert plan.route == "probes"
    assert plan.probes.lattice == (1, 1, 1)  # nothing before the cut: one colour, in chunks
    assert plan.cut is not None and plan.pre_sites == () and plan.post_sites == (0, 1)
    assert plan.probes.pixels_per_chunk <= 8
    for route in ("probes", "dense"):
        for chunk in (8, None):
            got = slp.insens(f, chunk_size=chunk, route=route)(x)
            np.testing.assert_allclose(got, jacfwd_insens(f, x), atol=TOL)
    with pytest.raises(ValueError, match="cone route does not apply"):
        slp.insens(f, route="cone")(x)


class Strided(nn.Module):
    """A stride-2 convolution, then a stride-1 one."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(3, (3, 3), strides=(2, 2), padding="SAME")(x))
        h = nn.relu(nn.Conv(2, (3, 3), padding="SAME")(h))
        return _head(h)


def test_strided_conv_both_routes(x64):
    f, x = _flax(Strided(), (10, 10, 1))
    plan = fast.insens_plan(f, x, route="cone")
    assert plan.route == "cone"
    assert plan.cone.sigma_tot == (2, 2)
    probes = fast.insens_plan(f, x, route="probes")
    assert probes.probes.lattice[:2] == (7, 7)  # receptive fields of the second conv: 7x7
    ref = jacfwd_insens(f, x)
    np.testing.assert_allclose(slp.insens(f, route="cone")(x), ref, atol=TOL)
    np.testing.assert_allclose(slp.insens(f, route="probes")(x), ref, atol=TOL)


def test_operation_without_box_rule_is_safe(x64):
    """An op with no receptive-field rule gets the whole input: still exact (one-hot probes)."""
    rng = np.random.default_rng(1)
    k, w = _normals(rng, (3, 3, 1, 2), (2 * 6 * 6, 4))

    def f(x):
        h = _conv(x[None], k, (1, 1), "SAME")
        h = jnp.cumsum(jax.nn.relu(h + 0.2), axis=1)[:, ::-1]  # cumsum + rev: mixing rows
        h = jax.nn.relu(h.reshape(-1) @ w)
        return h

    x = jnp.asarray(rng.normal(size=(6, 6, 1)))
    plan = fast.insens_plan(f, x, route="probes")
    assert plan.route == "probes"
    np.testing.assert_allclose(slp.insens(f, route="probes")(x), jacfwd_insens(f, x), atol=TOL)


def test_batched_traced_params_and_no_recompile(x64):
    model = TwoConv(num_classes=3, features=(2, 3), hidden=5)
    params, _ = _params(model, (12, 12, 1), seed=1)
    xs = jax.random.normal(jax.random.PRNGKey(0), (3, 12, 12, 1), jnp.float64)

    @jax.jit
    def run(p, xb):  # weights traced by the outer jit: the route must not need their values
        return jax.vmap(slp.insens(as_single_example(model, p)))(xb)

    got = run(params, xs)
    f = as_single_example(model, params)
    assert "cone" in fast.insens_plan(f, xs[0]).costs
    for i in range(3):
        np.testing.assert_allclose(got[i], jacfwd_insens(f, xs[i]), atol=TOL)
    traces = []
    ins = slp.insens(lambda x: (traces.append(1), f(x))[1])  # appends only while traced
    ins(xs[0])
    n = len(traces)
    ins(xs[1])
    assert n and len(traces) == n  # the second input did not trace (compile) again


def test_bad_options():
    f = lambda x: jax.nn.relu(x)  # noqa: E731
    with pytest.raises(ValueError, match="chunk_size"):
        slp.insens(f, chunk_size=0)
    with pytest.raises(ValueError, match="unknown route"):
        slp.insens(f, route="fast")
    with pytest.raises(ValueError, match="unknown precision 'tf32x6'"):
        slp.insens(f, precision="tf32x6")


@pytest.mark.parametrize("bad", [2.5, "8", True, -1])
def test_a_chunk_size_that_is_not_a_positive_integer_is_refused(bad):
    # 2.5 used to be truncated to 2 without a word
    for build in (lambda: slp.insens(jax.nn.relu, chunk_size=bad),
                  lambda: slp.insens_plan(jax.nn.relu, jnp.ones(3), chunk_size=bad)):  # fmt: skip
        with pytest.raises(ValueError, match="chunk_size must be a positive integer or None"):
            build()


def test_a_network_without_relu_or_an_input_without_elements_is_refused():
    # A linear network used to get an all-zero map (the empty mean's 0) as if every neuron
    # were active; a scalar or empty input failed inside numpy.
    rng = np.random.default_rng(0)
    w1, w2 = rng.normal(size=(6, 4)), rng.normal(size=(4, 2))
    no_relu = "the network has no ReLU layer"
    for call in (
        lambda: slp.insens(lambda x: x @ w1 @ w2)(jnp.ones(6)),
        lambda: slp.insens(lambda x: x @ w1 @ w2, probes=4, key=jax.random.key(0))(jnp.ones(6)),
        lambda: slp.insens_plan(lambda x: x @ w1 @ w2, jnp.ones(6)),
        lambda: slp.attribute(lambda x: x @ w1 @ w2, jnp.ones(6), "insens"),
    ):
        with pytest.raises(ValueError, match=no_relu):
            call()
    f = lambda x: jax.nn.relu(x * w1[0]) @ w1[:4]  # noqa: E731 - a scalar input
    with pytest.raises(ValueError, match=r"at least one axis.*shape \(\) \(reshape"):
        slp.insens(f)(jnp.float32(1.0))
    np.testing.assert_allclose(  # what the hint says gives the same network
        slp.insens(lambda x: f(x[0]))(jnp.ones(1)).shape, (1,)
    )
    with pytest.raises(ValueError, match=r"one element; got shape \(0, 3\)"):
        slp.insens(lambda x: jax.nn.relu(x.sum(0)))(jnp.ones((0, 3)))


def test_batched_insens_says_how_it_read_the_batch():
    w = jnp.ones((12, 3))
    with pytest.raises(ValueError, match=r"batched=True reads x's first axis .* shape \(\)"):
        slp.insens(lambda x: jax.nn.relu(x @ w), batched=True)(jnp.ones(12))


def test_an_integer_key_for_the_estimator_asks_for_a_prng_key():
    with pytest.raises(TypeError, match=r"key must be a PRNG key, jax\.random\.key\(3\)"):
        slp.insens(jax.nn.relu, probes=4, key=3)


@pytest.mark.slow
def test_bench_smoke(tmp_path):
    """experiments/bench_insens.py on a tiny network: every route, ratios, exact maps."""
    argv = ["--tiny", "--batches", "1", "3", "--repeats", "1", "--out", str(tmp_path)]
    argv += ["--precisions", "bfloat16", "--variant-batches", "3"]
    bench, result, saved = run_script("bench_insens.py", argv, tmp_path / "bench_insens.json")
    # the route the planner picks for this tiny network (which one depends on the cost table)
    assert saved["network"]["insens_route"] in ("cone", "probes", "dense")
    for name in ("naive", "insens", "forward"):
        for batch in (1, 3):
            assert saved["cases"][f"{name}@{batch}"]["images_per_s"] > 0
    assert set(saved["ratios"]["3"]) >= {"insens_vs_naive_speed", "forward_vs_insens_speed"}
    assert 0 < saved["network"]["active_fraction_all"] < 1
    assert saved["cases"]["insens:bfloat16@3"]["images_per_s"] > 0
    assert "insens:bfloat16@1" not in saved["cases"]
    # float32 maps: agreement to float32 rounding, not to zero; and against float64
    ex = result["exactness"]
    assert ex["max_abs_diff"] <= 1e-4 * ex["max_abs_naive"]
    for name in ("naive", "insens"):
        assert 0 <= ex[f"rel_err_x64_{name}"] < 1e-5
    with pytest.raises(ValueError, match="for --model twoconv"):
        bench.parse_args(["--model", "qnetwork", "--tiny"])
    assert bench.parse_args(["--model", "qnetwork"]).model == "qnetwork"
    f, _, _, x = bench.build(bench.parse_args(["--model", "resnet8", "--batches", "2"]))
    assert x.shape == (2, 32, 32, 3) and f(x[0]).shape == (10,)
    assert "cone" in slp.insens_plan(f, x[0]).costs

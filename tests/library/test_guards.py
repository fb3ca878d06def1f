"""No silent wrong maps: non-finite values and a batch passed where one example is expected.

Policy under test (slp._src.guards): when x, a ReLU input or the output is NaN or inf (from the
input or from a weight), every method and every float-returning transform gives NaN
everywhere, and activation_pattern raises. A function of a batch is refused with an error
that names the remedy; `per_example` / `batched=True` give each example its own map.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import slp
from slp.models import TwoConv

METHODS = slp.available_methods()
OPTIONS = {"smoothgrad": {"key": jax.random.key(0), "samples": 4}}


@pytest.fixture(scope="module")
def net():
    model = TwoConv(num_classes=4, features=(3, 4), hidden=8)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 12, 1)))
    x = jax.random.uniform(jax.random.PRNGKey(1), (12, 12, 1))
    return model, params, x


def _set_weight(params, value):
    """``params`` with one weight of the first convolution set to ``value``."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    out, done = [], False
    for path, leaf in leaves:
        if not done and "kernel" in jax.tree_util.keystr(path) and leaf.ndim == 4:
            leaf = leaf.at[2, 2, 0, 0].set(value)
            done = True
        out.append(leaf)
    assert done
    return jax.tree_util.tree_unflatten(tree, out)


CASES = ("clean", "nan-input", "inf-input", "nan-weight", "inf-weight")


def _batch_of_cases(net):
    """Inputs and first-conv weights of the five cases, stacked for one vmapped call."""
    model, params, x = net
    leaves = jax.tree_util.tree_leaves_with_path(params)
    k = next(v for p, v in leaves if "kernel" in jax.tree_util.keystr(p) and v.ndim == 4)
    w0 = k[2, 2, 0, 0]
    xs = jnp.stack([x, x.at[5, 6, 0].set(jnp.nan), x.at[5, 6, 0].set(jnp.inf), x, x])
    ws = jnp.stack([w0, w0, w0, jnp.nan, jnp.inf])

    def network(value):
        p = _set_weight(params, value)
        return lambda x: model.apply(p, x[None])[0]

    return xs, ws, network


def _check(out, name):
    for leaf in jax.tree_util.tree_leaves(out):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            continue
        assert bool(jnp.all(jnp.isfinite(leaf[0]))), f"{name}: clean network gave non-finite"
        for i, case in enumerate(CASES[1:], start=1):
            assert bool(jnp.all(jnp.isnan(leaf[i]))), f"{name} on {case}: {leaf[i].ravel()[:4]}"


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_nan_exactly_when_something_is_not_finite(net, method):
    xs, ws, network = _batch_of_cases(net)
    opts = OPTIONS.get(method, {})
    out = jax.jit(jax.vmap(lambda x, w: slp.attribute(network(w), x, method, **opts)))(xs, ws)
    assert out.shape == xs.shape
    _check(out, method)


@pytest.mark.slow
def test_transforms_give_nan_or_raise(net):
    xs, ws, network = _batch_of_cases(net)
    for name, tf in [
        ("activities", slp.activities),
        ("switched_projections", slp.switched_projections),
        ("explicit_projections", slp.explicit_projections),
        ("switched_centres", slp.switched_centres),
        ("insens", slp.insens),
        ("insens by layer", lambda f: lambda x: slp.insens(f, by_layer=True)(x).maps),
    ]:
        _check(jax.jit(jax.vmap(lambda x, w, tf=tf: tf(network(w))(x)))(xs, ws), name)
    f_nan_weight = network(jnp.nan)
    x = xs[0]
    assert slp.activation_pattern(network(ws[0]))(x)[0].dtype == jnp.bool_
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        slp.activation_pattern(f_nan_weight)(x)
    with pytest.raises(Exception, match="NaN or inf"):  # inside jit: raised by the runtime
        jax.block_until_ready(jax.jit(slp.activation_pattern(network(ws[0])))(xs[1]))


# --- a batch where one example is expected ---------------------------------------------------


def _naive_insens(f, x):
    """Insens of one example from explicit projections (NumPy): the mean of v w/|w|^2."""
    total, count = np.zeros(x.size), 0
    for p in jax.jit(slp.explicit_projections(f))(x)[:-1]:
        w = np.asarray(p.weights).reshape(-1, x.size)
        v = np.asarray(p.activity).ravel()
        sq = np.sum(w * w, axis=1)
        off = v <= 0
        count += int(off.sum())
        keep = off & (sq > 0)
        total += (v[keep, None] * w[keep] / sq[keep, None]).sum(axis=0)
    return (total / count).reshape(x.shape)


@pytest.mark.slow
def test_batch_function_is_refused_and_batched_entry_points_are_exact(net):
    model, params, x = net
    xb = jnp.stack([x, 1 - x, jnp.roll(x, 3, axis=0)])
    f_batch = lambda xb: model.apply(params, xb)  # noqa: E731
    # Without the guard this would be Insens over the inactive neurons of all 4 examples
    # together: each example's map about 1/3 of its own (the issue this test reproduces).
    with pytest.raises(ValueError, match="function of a batch.*per_example"):
        slp.insens(f_batch)(xb)
    with pytest.raises(ValueError, match="function of a batch"):
        slp.attribute(f_batch, xb, "gradient")
    with pytest.raises(ValueError, match="function of a batch"):
        slp.activities(f_batch)(xb)

    one = lambda x: model.apply(params, x[None])[0]  # noqa: E731
    want = np.stack([_naive_insens(one, xi) for xi in xb])
    got = slp.insens(f_batch, batched=True)(xb)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    got = jax.vmap(slp.insens(slp.per_example(f_batch)))(xb)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)

    grads = np.stack([np.asarray(jax.grad(lambda x: one(x)[1])(xi)) for xi in xb])
    np.testing.assert_allclose(
        slp.attribute(f_batch, xb, "gradient", batched=True, target=1), grads, rtol=1e-5, atol=1e-7
    )
    targets = jnp.array([0, 2, 3])
    per = slp.attribute(f_batch, xb, "gradient", batched=True, target=targets)
    for i, t in enumerate(targets):
        want_i = jax.grad(lambda x, t=t: one(x)[t])(xb[i])
        np.testing.assert_allclose(per[i], want_i, rtol=1e-5, atol=1e-7)


def test_per_example_functions_with_matching_leading_axes_pass(net):
    """A per-example conv net whose output keeps the input's first axis is not a batch."""
    k = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 1, 2))

    def seg(x):  # (12, 12, 1) -> (12, 12, 2): rows mix with their neighbours
        z = jax.lax.conv_general_dilated(
            x[None], k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]
        return jax.nn.relu(z)

    x = net[2]
    assert slp.insens(seg)(x).shape == x.shape

    rowwise = lambda x: jax.nn.relu(x[..., 0] @ jnp.ones((12, 5)))  # noqa: E731
    with pytest.raises(ValueError, match="function of a batch"):
        slp.insens(rowwise)(x)
    assert slp.insens(slp.single_example(rowwise))(x).shape == x.shape


def test_one_number_per_example_is_refused_too(net, tmp_path):
    """A batch function with one output per example, (B, ...) -> (B,), is a batch: before,
    only outputs (B, C) were checked, and every map came out about 1/B of its own."""
    model, params, x = net
    xb = jnp.stack([x, 1 - x, x * 0.5, jnp.roll(x, 3, axis=0)])
    logit3 = lambda xb: model.apply(params, xb)[..., 3]  # noqa: E731
    assert logit3(xb).shape == (4,)
    with pytest.raises(ValueError, match=r"function of a batch.*returns \(4,\)"):
        slp.insens(logit3)(xb)
    with pytest.raises(ValueError, match=r"function of a batch.*returns \(4,\)"):
        slp.attribute(logit3, xb, "gradient")
    # attribute_dataset with params: traced inside its compiled step, checked before it.
    images = np.asarray(jnp.stack([xb, xb[::-1]]))  # two "images" of shape (4, 12, 12, 1)
    with pytest.raises(ValueError, match="function of a batch"):
        slp.attribute_dataset(
            lambda p, xb: model.apply(p, xb)[..., 3],
            images,
            "gradient",
            params=params,
            batch_size=2,
            out=tmp_path,
            progress=False,
        )
    assert not list(tmp_path.glob("maps-*"))


def test_per_example_vector_outputs_of_the_input_length_pass():
    """(10, 10) -> (10,) per-example networks that the row test must not take for a batch:
    a fixed zero logit (row 0 moves with nothing) and a causal sum (rows 1: move with row
    0). Their maps are those of the same function declared `single_example`."""
    rng = np.random.RandomState(0)
    w = jnp.asarray(rng.normal(size=(100, 9)).astype(np.float32))
    x = jnp.asarray(rng.uniform(size=(10, 10)).astype(np.float32))

    def zero_logit(x):
        return jnp.concatenate([jnp.zeros(1), jnp.maximum(x.reshape(-1) @ w, 0.0)])

    def causal(x):
        return jnp.cumsum(jnp.maximum(x @ w[:10, :3], 0.0).sum(-1))

    for f in (zero_logit, causal):
        assert f(x).shape == (10,)
        np.testing.assert_array_equal(slp.insens(f)(x), slp.insens(slp.single_example(f))(x))
    np.testing.assert_array_equal(
        slp.attribute(zero_logit, x, "gradient", target=4),
        jax.grad(lambda x: zero_logit(x)[4])(x),
    )


def test_a_model_that_expects_a_batch_axis_is_told_how_to_wrap_it():
    # A model written for batches (flattening per row) fails on one example; the error says
    # both ways out, and the one for this case gives the per-example map.
    w = jnp.asarray(np.random.default_rng(0).normal(size=(12, 3)))
    model = lambda xb: jax.nn.relu(xb.reshape(xb.shape[0], -1) @ w)  # noqa: E731
    x = jnp.ones((3, 4))
    with pytest.raises(ValueError, match=r"map over it with jax\.vmap.*f\(x\[None\]\)\[0\]"):
        slp.attribute(model, x, "gradient")
    got = slp.attribute(lambda x: model(x[None])[0], x, "gradient", target=1)
    np.testing.assert_allclose(got, jax.grad(lambda x: model(x[None])[0, 1])(x), rtol=1e-6)

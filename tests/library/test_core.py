"""Core engine against independent references: Theorem 1, dense matrices, finite differences."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from reference import dense_model, init_params, jax_function, random_spec

import slp
from slp.models import MLP, TwoConv, as_single_example


def _flat(p: slp.Projection):
    n = int(np.prod(p.activity.shape))
    return (
        np.asarray(p.weights).reshape(n, -1),
        np.asarray(p.bias).reshape(n),
        np.asarray(p.activity).reshape(n),
    )


def _f64(tree):
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)


def _theorem1(projections, x):
    """max |v - (x . w_hat + b_hat)| over every neuron of every layer."""
    err = 0.0
    for p in projections:
        w, b, v = _flat(p)
        err = max(err, float(np.max(np.abs(w @ np.asarray(x).reshape(-1) + b - v))))
    return err


# --- Theorem 1 on the library's models -------------------------------------------------


@pytest.mark.parametrize("hidden", [(7,), (16, 8, 5)])
def test_theorem1_mlp(x64, hidden):
    model = MLP(hidden=hidden, num_classes=4)
    x = jax.random.normal(jax.random.PRNGKey(1), (3, 5), jnp.float64)
    params = _f64(model.init(jax.random.PRNGKey(0), x[None]))
    f = as_single_example(model, params)
    proj = slp.switched_projections(f)(x)
    assert len(proj) == len(hidden) + 1
    assert _theorem1(proj, x) < 1e-10
    # The output layer's projection is the network itself.
    np.testing.assert_allclose(proj[-1].activity, f(x), atol=1e-12)
    w, b, _ = _flat(proj[-1])
    np.testing.assert_allclose(w @ np.asarray(x).reshape(-1) + b, f(x), atol=1e-10)


@pytest.mark.parametrize("channels", [1, 3])
def test_theorem1_twoconv_small(x64, channels):
    model = TwoConv(num_classes=5, features=(4, 6), hidden=12)
    x = jax.random.normal(jax.random.PRNGKey(2), (12, 12, channels), jnp.float64)
    params = _f64(model.init(jax.random.PRNGKey(0), x[None]))
    f = as_single_example(model, params)
    proj = slp.switched_projections(f)(x)
    assert [p.activity.shape for p in proj] == [(1, 12, 12, 4), (1, 6, 6, 6), (1, 12), (5,)]
    assert proj[0].weights.shape == (1, 12, 12, 4) + x.shape
    assert _theorem1(proj, x) < 1e-10
    np.testing.assert_allclose(proj[-1].activity, f(x), atol=1e-12)


@pytest.mark.slow
def test_theorem1_twoconv_full_size(x64):
    """The 2CONV reconstruction at MNIST size: all 38,656 hidden neurons plus 10 logits."""
    model = TwoConv(num_classes=10)
    x = jax.random.uniform(jax.random.PRNGKey(3), (28, 28, 1), jnp.float64)
    params = _f64(model.init(jax.random.PRNGKey(0), x[None]))
    f = as_single_example(model, params)
    proj = slp.switched_projections(f)(x)
    n = sum(int(np.prod(p.activity.shape)) for p in proj[:-1])
    assert n == 28 * 28 * 32 + 14 * 14 * 64 + 1024
    assert _theorem1(proj, x) < 1e-10
    np.testing.assert_allclose(proj[-1].activity, f(x), atol=1e-10)


# --- against the brute-force dense-matrix reference ------------------------------------

_SMALL_SPECS = [
    [("conv", 3, 3, 1, "SAME"), ("relu",), ("maxpool", 2, 2), ("flatten",), ("dense", 4)],
    [("conv", 2, 3, 1, "SAME"), ("relu",), ("maxpool", 2, 2),
     ("conv", 3, 2, 1, "VALID"), ("relu",), ("avgpool", 2, 1),
     ("flatten",), ("dense", 5), ("relu",), ("dense", 3)],
    [("conv", 2, 3, 2, "SAME"), ("relu",), ("maxpool", 2, 1), ("flatten",), ("dense", 3)],
]  # fmt: skip


def _check_against_reference(spec, seed, *, relu="nn", method="jacfwd", losers=False):
    rng = np.random.default_rng(seed)
    in_shape = (8, 8, 2)
    params = init_params(spec, in_shape, rng)
    x = rng.normal(size=in_shape)
    ref = dense_model(spec, params, x)
    f = jax_function(spec, params, relu=relu)
    xj = jnp.asarray(x)
    proj = slp.switched_projections(f, method=method)(xj)
    assert len(proj) == len(ref.weights)
    for p, w, b, v in zip(proj, ref.weights, ref.biases, ref.activities, strict=True):
        pw, pb, pv = _flat(p)
        np.testing.assert_allclose(pv, v, atol=1e-10)
        np.testing.assert_allclose(pw, w, atol=1e-10)
        np.testing.assert_allclose(pb, b, atol=1e-10)
    om = slp.insens(f, include_pool_losers=losers)(xj)
    assert om.shape == x.shape
    np.testing.assert_allclose(
        np.asarray(om).reshape(-1), ref.insens(include_pool_losers=losers), atol=1e-10
    )


@pytest.mark.parametrize("spec", _SMALL_SPECS)
@pytest.mark.parametrize("method", ["jacfwd", "explicit"])
def test_matches_dense_reference(x64, spec, method):
    _check_against_reference(spec, seed=0, method=method)


@pytest.mark.parametrize("spec", _SMALL_SPECS[:1] + _SMALL_SPECS[2:])
@pytest.mark.slow
def test_insens_pool_losers_option(x64, spec):
    _check_against_reference(spec, seed=1, losers=True)
    # Losers with v > 0 exist in these nets, so the option must change the map.
    rng = np.random.default_rng(1)
    params = init_params(spec, (8, 8, 2), rng)
    x = jnp.asarray(rng.normal(size=(8, 8, 2)))
    f = jax_function(spec, params)
    a = slp.insens(f)(x)
    b = slp.insens(f, include_pool_losers=True)(x)
    assert float(jnp.max(jnp.abs(a - b))) > 1e-6


@pytest.mark.parametrize(
    "seed", [s if s < 4 else pytest.param(s, marks=pytest.mark.slow) for s in range(24)]
)
def test_random_architectures(x64, seed):
    rng = np.random.default_rng(1000 + seed)
    spec = random_spec(rng)
    _check_against_reference(spec, seed=seed, relu="nn" if seed % 2 else "max")


@pytest.mark.slow
def test_two_routes_agree_on_twoconv(x64):
    model = TwoConv(num_classes=4, features=(3, 5), hidden=9)
    x = jax.random.normal(jax.random.PRNGKey(4), (10, 10, 3), jnp.float64)
    f = as_single_example(model, _f64(model.init(jax.random.PRNGKey(1), x[None])))
    a = slp.switched_projections(f, method="jacfwd")(x)
    b = slp.switched_projections(f, method="explicit")(x)
    for p, q in zip(a, b, strict=True):
        np.testing.assert_allclose(p.weights, q.weights, atol=1e-12)
        np.testing.assert_allclose(p.bias, q.bias, atol=1e-12)


def test_finite_differences(x64):
    """w_hat = d v / d x, checked by central differences wherever the state is unchanged."""
    spec = _SMALL_SPECS[1]
    rng = np.random.default_rng(5)
    params = init_params(spec, (8, 8, 2), rng)
    x = rng.normal(size=(8, 8, 2))
    f = jax_function(spec, params)
    acts = jax.jit(slp.activities(f))
    pattern = jax.jit(slp.activation_pattern(f))
    proj = slp.switched_projections(f)(jnp.asarray(x))
    base = [np.asarray(p) for p in pattern(jnp.asarray(x))]
    h = 1e-6
    checked = 0
    for j in rng.choice(x.size, 40, replace=False):
        e = np.zeros(x.size)
        e[j] = h
        xp, xm = x + e.reshape(x.shape), x - e.reshape(x.shape)
        same = all(
            np.array_equal(a, np.asarray(b))
            for xx in (xp, xm)
            for a, b in zip(base, pattern(jnp.asarray(xx)), strict=True)
        )
        if not same:
            continue
        checked += 1
        for p, vp, vm in zip(proj[:-1], acts(jnp.asarray(xp)), acts(jnp.asarray(xm)), strict=True):
            fd = (np.asarray(vp) - np.asarray(vm)).reshape(-1) / (2 * h)
            w, _, _ = _flat(p)
            np.testing.assert_allclose(w[:, j], fd, atol=1e-6)
    assert checked >= 30


# --- conventions and edge cases ----------------------------------------------------------


def test_kink_is_inactive(x64):
    """v = 0 exactly counts as inactive (step-function derivative), unlike jnp.maximum's 0.5."""
    w1 = jnp.array([[1.0, 2.0], [-1.0, 1.0]])  # columns are neurons; neuron 0: x0 - x1
    w2 = jnp.array([[3.0], [5.0]])

    def f(x):
        return jnp.maximum(x @ w1, 0.0) @ w2

    x = jnp.array([0.7, 0.7])
    proj = slp.switched_projections(f)(x)
    assert not bool(slp.activation_pattern(f)(x)[0][0])
    # Only neuron 1 passes: w_hat_out = 5 * [2, 1].
    np.testing.assert_allclose(proj[-1].weights[0], [10.0, 5.0], atol=1e-12)
    # It is in I with w_hat = [1, -1] and v = 0: omega contributes 0, |I| = 1.
    np.testing.assert_allclose(slp.insens(f)(x), [0.0, 0.0], atol=1e-12)


def test_zero_switched_weights_no_nan(x64):
    """A layer that is entirely inactive switches off everything above it."""
    rng = np.random.default_rng(0)
    w1 = jnp.asarray(rng.normal(size=(4, 6)))
    b1 = jnp.full((6,), -100.0)  # every neuron of layer 1 inactive
    w2 = jnp.asarray(rng.normal(size=(6, 5)))
    b2 = jnp.asarray(rng.normal(size=(5,)))
    w3 = jnp.asarray(rng.normal(size=(5, 2)))

    def f(x):
        h = jax.nn.relu(x @ w1 + b1)
        h = jax.nn.relu(h @ w2 + b2)
        return h @ w3

    x = jnp.asarray(rng.normal(size=(4,)))
    proj = slp.switched_projections(f)(x)
    np.testing.assert_array_equal(proj[1].weights, 0)  # layer 2 has w_hat = 0
    centres = slp.switched_centres(f)(x)
    for c in centres:
        assert bool(jnp.all(jnp.isfinite(c)))
    np.testing.assert_allclose(centres[1], jnp.broadcast_to(x, centres[1].shape))
    # Reference: layer-1 neurons all inactive with w_hat = w1 columns; layer-2 neurons
    # with v <= 0 contribute 0 but count.
    v1 = np.asarray(x @ w1 + b1)
    omega = sum(v1[i] * np.asarray(w1[:, i]) / np.sum(np.asarray(w1[:, i]) ** 2) for i in range(6))
    n_inactive = 6 + int(np.sum(np.asarray(b2) <= 0))
    np.testing.assert_allclose(slp.insens(f)(x), omega / n_inactive, atol=1e-10)
    assert bool(jnp.all(jnp.isfinite(slp.insens(f)(x))))


def test_no_inactive_neuron_gives_zero(x64):
    w = jnp.eye(3)

    def f(x):
        return jax.nn.relu(x @ w + 10.0) @ w

    np.testing.assert_array_equal(slp.insens(f)(jnp.ones(3)), 0.0)


def test_centres_lie_on_switched_hyperplane(x64):
    """eq. 5-6: v = (x - c_hat) . w_hat and c_hat . w_hat + b_hat = 0."""
    spec = _SMALL_SPECS[0]
    rng = np.random.default_rng(7)
    params = init_params(spec, (8, 8, 2), rng)
    x = jnp.asarray(rng.normal(size=(8, 8, 2)))
    f = jax_function(spec, params)
    ref = dense_model(spec, params, np.asarray(x))
    centres = slp.switched_centres(f)(x)
    for c, w, b, v in zip(centres, ref.weights, ref.biases, ref.activities, strict=True):
        c = np.asarray(c).reshape(len(v), -1)
        nz = np.sum(w * w, axis=1) > 0
        np.testing.assert_allclose(
            np.sum((np.asarray(x).reshape(1, -1) - c) * w, axis=1)[nz], v[nz], atol=1e-10
        )
        np.testing.assert_allclose(np.sum(c * w, axis=1)[nz] + b[nz], 0, atol=1e-10)


# --- the same network written three ways ----------------------------------------------


@pytest.mark.slow
def test_flax_jnp_and_params_list_agree(x64):
    model = TwoConv(num_classes=3, features=(2, 3), hidden=5)
    x = jax.random.normal(jax.random.PRNGKey(0), (8, 8, 1), jnp.float64)
    params = _f64(model.init(jax.random.PRNGKey(3), x[None]))["params"]
    f_flax = as_single_example(model, {"params": params})

    def f_jnp(x):
        h = x
        for name in ("Conv_0", "Conv_1"):
            k, b = params[name]["kernel"], params[name]["bias"]
            h = lax_conv(h, k) + b[None, None, :]
            h = jnp.maximum(h, 0.0)
            h = jax.lax.reduce_window(h, -jnp.inf, jax.lax.max, (2, 2, 1), (2, 2, 1), "VALID")
        h = h.reshape(-1)
        h = jax.nn.relu(h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"])
        return h @ params["Dense_1"]["kernel"] + params["Dense_1"]["bias"]

    stax = [
        ("conv", params["Conv_0"]["kernel"], params["Conv_0"]["bias"]),
        ("relu",),
        ("pool",),
        ("conv", params["Conv_1"]["kernel"], params["Conv_1"]["bias"]),
        ("relu",),
        ("pool",),
        ("flatten",),
        ("dense", params["Dense_0"]["kernel"], params["Dense_0"]["bias"]),
        ("relu",),
        ("dense", params["Dense_1"]["kernel"], params["Dense_1"]["bias"]),
    ]

    def f_list(x, layers=stax):
        h = x[None]
        for layer in layers:
            if layer[0] == "conv":
                h = nn.Conv(layer[1].shape[-1], (5, 5), padding="SAME").apply(
                    {"params": {"kernel": layer[1], "bias": layer[2]}}, h
                )
            elif layer[0] == "relu":
                h = nn.relu(h)
            elif layer[0] == "pool":
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
            elif layer[0] == "flatten":
                h = h.reshape(1, -1)
            else:
                h = h @ layer[1] + layer[2][None, :]
        return h[0]

    outs = [slp.switched_projections(g)(x) for g in (f_flax, f_jnp, f_list)]
    for other in outs[1:]:
        for p, q in zip(outs[0], other, strict=True):
            np.testing.assert_allclose(
                np.asarray(p.weights).reshape(-1), np.asarray(q.weights).reshape(-1), atol=1e-12
            )
    maps = [slp.insens(g)(x) for g in (f_flax, f_jnp, f_list)]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-12)
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-12)


def lax_conv(h, k):
    return jax.lax.conv_general_dilated(
        h[None], k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


# --- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "act, name",
    [
        (jnp.tanh, "tanh"),
        (jax.nn.sigmoid, "logistic"),
        (jax.nn.gelu, "gelu"),
        (jax.nn.softmax, "softmax"),
        (lambda z: jax.nn.leaky_relu(z), "leaky_relu"),
    ],
)
def test_unsupported_operations_are_named(act, name):
    w = jnp.ones((3, 3))

    def f(x):
        return act(x @ w) @ w

    with pytest.raises(slp.UnsupportedOperationError, match="unsupported operation") as err:
        slp.switched_projections(f)(jnp.ones(3))
    assert name in str(err.value)
    with pytest.raises(slp.UnsupportedOperationError):
        slp.insens(f)(jnp.ones(3))


def test_product_of_inputs_rejected():
    with pytest.raises(slp.UnsupportedOperationError, match="'mul'"):
        slp.activities(lambda x: jax.nn.relu(x * x))(jnp.ones(3))


def test_wrong_input_shape_is_reported():
    model = TwoConv(num_classes=3, features=(2, 3), hidden=5)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
    f = as_single_example(model, params)
    with pytest.raises(ValueError, match=r"shape \(8, 8, 2\)"):
        slp.insens(f)(jnp.zeros((8, 8, 2)))
    with pytest.raises(ValueError, match="floating-point"):
        slp.activities(f)(jnp.zeros((8, 8, 1), jnp.int32))
    with pytest.raises(ValueError, match="single array"):
        slp.activities(lambda x: (x, x))(jnp.zeros(3))
    with pytest.raises(ValueError, match="unknown method"):
        slp.switched_projections(f, method="magic")


# --- transforms -----------------------------------------------------------------------------


@pytest.mark.slow
def test_jit_vmap_and_no_recompile():
    model = TwoConv(num_classes=3, features=(2, 3), hidden=5)
    xs = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 1))
    params = model.init(jax.random.PRNGKey(1), xs[:1])
    f = as_single_example(model, params)
    traces = []
    ins = slp.insens(lambda x: (traces.append(1), f(x))[1])  # appends only while traced
    batched = jax.vmap(ins)(xs)
    for i in range(4):
        np.testing.assert_allclose(batched[i], ins(xs[i]), rtol=1e-5, atol=1e-6)
    n = len(traces)
    ins(xs[0] + 1.0)
    assert len(traces) == n  # second call with the same shape did not trace (compile) again
    proj_jit = jax.jit(slp.switched_projections(f))(xs[0])
    proj = slp.switched_projections(f)(xs[0])
    for p, q in zip(proj, proj_jit, strict=True):
        np.testing.assert_allclose(p.weights, q.weights, atol=tol(np.float32))
    pats = jax.vmap(slp.activation_pattern(f))(xs)
    assert pats[0].shape == (4, 1, 8, 8, 2) and pats[0].dtype == jnp.bool_
    acts = jax.jit(jax.vmap(slp.activities(f)))(xs)
    np.testing.assert_array_equal(acts[0] > 0, pats[0])


def test_params_traced_by_outer_jit():
    """The transforms work when the weights themselves are tracers (inside a jitted fn)."""
    model = MLP(hidden=(6,), num_classes=2)
    x = jnp.linspace(-1, 1, 4)
    params = model.init(jax.random.PRNGKey(0), x[None])

    @jax.jit
    def run(p, x):
        return slp.insens(as_single_example(model, p))(x)

    np.testing.assert_allclose(
        run(params, x), slp.insens(as_single_example(model, params))(x), atol=1e-6
    )


def test_public_api_imports():
    for name in slp.__all__:
        assert getattr(slp, name) is not None, name


def test_nonzero_array_literals_and_differentiable_forward(x64):
    """Non-zero array constants are weights, not ReLU zeros; the forward walk has a gradient."""
    from slp._src import network as net

    def f(x):
        return jax.nn.relu(x) @ jnp.ones((4, 2)) + jnp.full((2,), 0.5)

    x = jnp.array([1.0, -2.0, 3.0, 0.5])
    proj = slp.switched_projections(f)(x)
    np.testing.assert_allclose(proj[-1].weights, [[1.0, 0.0, 1.0, 1.0]] * 2)
    np.testing.assert_allclose(proj[-1].bias, [0.5, 0.5])

    def g(x):
        h = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (2,), (2,), "VALID")
        return jnp.sum(h * jnp.array([1.0, 10.0]))

    program = net.trace(g, x)
    grad = jax.grad(lambda xp: net.interpret(program, xp, net.ForwardRules()).output)(x)
    np.testing.assert_allclose(grad, [1.0, 0.0, 10.0, 0.0])


@pytest.mark.parametrize("strides", [(2, 2), (1, 1)])
def test_pool_winners_ties_go_to_lowest_flat_index(strides):
    """Tiled (stride = window) and general pools pick the same, hand-computed winners."""
    from slp._src import network as net

    z = jnp.array([[1.0, 2, 0, 0], [3, 3, 0, 0], [1, 1, 5, 5], [1, 1, 5, 5]])

    def g(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (2, 2), strides, "VALID")

    program = net.trace(g, z)
    (eqn,) = [e for e in program.eqns if e.kind == "max_pool"]
    winners = np.asarray(net.pool_winners(eqn, z))
    if strides == (2, 2):
        np.testing.assert_array_equal(winners, [[4, 2], [8, 10]])
    else:
        np.testing.assert_array_equal(winners, [[4, 5, 2], [4, 10, 10], [8, 10, 10]])
    np.testing.assert_array_equal(net.select_winners(eqn, z, jnp.asarray(winners)), g(z))


@pytest.mark.parametrize("strides", [(2, 2), (1, 1)])
def test_forward_pool_routes_its_derivative_to_the_lowest_index_winner(strides):
    """The forward pass's pool: the windows' maxima, winners as `pool_winners`, and a
    derivative that goes to one winner per window (ties: the lowest flat index), not split
    among tied entries as ``jax.grad`` of ``reduce_window`` max does."""
    from slp._src import network as net
    from slp._src.pooling import pick_winners

    z = jnp.array([[1.0, 2, 0, 0], [3, 3, 0, -0.0], [1, 1, 5, 5], [1, 1, 5, 5]])

    def g(x):
        return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (2, 2), strides, "VALID")

    program = net.trace(g, z)
    (eqn,) = [e for e in program.eqns if e.kind == "max_pool"]
    out, winners = pick_winners(eqn, z)
    np.testing.assert_array_equal(out, g(z))
    np.testing.assert_array_equal(winners, net.pool_winners(eqn, z))
    weights = jnp.arange(1.0, 1.0 + out.size).reshape(out.shape)
    grad = jax.grad(lambda zz: jnp.sum(weights * pick_winners(eqn, zz)[0]))(z)
    want = np.zeros(z.size)
    np.add.at(want, np.asarray(winners).ravel(), np.asarray(weights).ravel())
    np.testing.assert_array_equal(grad, want.reshape(z.shape))
    if strides == (2, 2):  # by hand: windows 1..4 go to 4 (the first 3), 2, 8, 10
        np.testing.assert_array_equal(
            grad, [[0, 0, 2, 0], [1, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]]
        )

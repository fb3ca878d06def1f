"""Tests of slp.metrics against hand-computed values and scipy."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from jax.extend import core as jex_core

from slp import metrics
from slp.metrics import _common


def test_spearman_of_known_permutations():
    a = jnp.arange(1.0, 6.0)
    assert float(metrics.spearman(a, a)) == pytest.approx(1.0)
    assert float(metrics.spearman(a, a[::-1])) == pytest.approx(-1.0)
    # b's ranks are (2, 1, 3, 5, 4): sum d^2 = 1 + 1 + 0 + 1 + 1 = 4,
    # rho = 1 - 6 * 4 / (5 * 24) = 0.8.
    b = jnp.array([20.0, 10.0, 30.0, 50.0, 40.0])
    assert float(metrics.spearman(a, b)) == pytest.approx(0.8)
    # Monotone transforms do not change ranks.
    assert float(metrics.spearman(jnp.exp(a), b**3)) == pytest.approx(0.8)


def test_average_ranks_of_ties():
    # Sorted: 1, 2, 2, 3, 3, 3 -> ranks 1, 2.5, 2.5, 5, 5, 5.
    r = metrics.average_ranks(jnp.array([[3.0, 2.0, 1.0], [2.0, 3.0, 3.0]]))
    np.testing.assert_allclose(r, [5, 2.5, 1, 2.5, 5, 5])


def test_spearman_with_ties_matches_scipy():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, size=(7, 9)).astype(np.float32)
    b = (a + rng.integers(0, 3, size=(7, 9))).astype(np.float32)
    expected = scipy.stats.spearmanr(a.ravel(), b.ravel()).statistic
    assert float(metrics.spearman(a, b)) == pytest.approx(expected, abs=1e-5)


def test_pearson_and_cosine_by_hand():
    a = jnp.array([1.0, 2.0, 3.0])
    b = jnp.array([1.0, 0.0, 1.0])
    # Centred: (-1, 0, 1) and (1/3, -2/3, 1/3) -> dot 0.
    assert float(metrics.pearson(a, b)) == pytest.approx(0.0, abs=1e-7)
    # cos = (1 + 3) / (sqrt(14) sqrt(2)).
    assert float(metrics.cosine_similarity(a, b)) == pytest.approx(4 / np.sqrt(28))
    assert float(metrics.cosine_similarity(a, -2 * a)) == pytest.approx(-1.0)


def test_undefined_similarities_are_nan():
    a = jnp.arange(4.0)
    assert np.isnan(metrics.spearman(a, jnp.ones(4)))
    assert np.isnan(metrics.pearson(jnp.ones(4), a))
    assert np.isnan(metrics.cosine_similarity(a, jnp.zeros(4)))
    # a NaN or inf entry has no rank: NaN, not the correlation of the rest
    for bad in (jnp.nan, jnp.inf):
        assert np.isnan(metrics.spearman(a.at[1].set(bad), a)), bad
        assert np.isnan(jax.jit(metrics.spearman)(a, a.at[3].set(-bad))), bad
    with pytest.raises(ValueError, match="same number of entries"):
        metrics.spearman(a, jnp.arange(5.0))


def test_similarities_vmap_and_jit():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(5, 6, 6)).astype(np.float32)
    b = rng.normal(size=(5, 6, 6)).astype(np.float32)
    batched = jax.jit(jax.vmap(metrics.spearman))(a, b)
    expected = [
        scipy.stats.spearmanr(x.ravel(), y.ravel()).statistic for x, y in zip(a, b, strict=True)
    ]
    np.testing.assert_allclose(batched, expected, atol=1e-5)


def test_mass_on_mask():
    attr = jnp.array([[1.0, -3.0], [0.0, 4.0]])
    mask = jnp.array([[True, False], [False, True]])
    assert float(metrics.mass_on_mask(attr, mask)) == pytest.approx(5 / 8)
    # Channels: |a| summed per pixel: pixel (0,0) has 1 + 2, pixel (0,1) has 3.
    attr_c = jnp.array([[[1.0, -2.0], [3.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    assert float(metrics.mass_on_mask(attr_c, mask)) == pytest.approx(3 / 6)
    assert np.isnan(metrics.mass_on_mask(jnp.zeros((2, 2)), mask))
    with pytest.raises(ValueError, match="do not match"):
        metrics.mass_on_mask(jnp.zeros((3, 2)), mask)


def test_pixel_order_and_ties():
    scores = jnp.array([[0.5, 2.0], [0.5, -1.0]])
    # Order: 2.0 first, then the two 0.5s in raster order, then -1.0.
    np.testing.assert_array_equal(metrics.pixel_order(scores), [[1, 0], [2, 3]])


def _linear_net(w, b):
    """Two logits: ``w . x + b`` and the constant 0 (so softmax is a sigmoid)."""

    def f(x):
        return jnp.stack([jnp.sum(w * x) + b, jnp.zeros((), x.dtype)])

    return f


def test_deletion_curve_of_a_linear_model_by_hand():
    x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    w = jnp.array([[1.0, -1.0], [0.5, 2.0]])
    b = 0.25
    f = _linear_net(w, b)
    # Contributions w * x: 1, -2, 1.5, 8; f(x) = 8.5 + 0.25 = 8.75.
    # Scores order the pixels: (1,1), (0,0), (1,0), (0,1).
    scores = jnp.array([[3.0, 0.0], [1.0, 9.0]])
    curve = metrics.deletion_curve(f, x, scores, target=0, baseline=0.0, steps=4)
    expected = [8.75, 8.75 - 8, 8.75 - 8 - 1, 8.75 - 8 - 1 - 1.5, 0.25]
    np.testing.assert_allclose(curve.fraction, [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(curve.logit, expected, rtol=1e-6)
    np.testing.assert_allclose(curve.probability, 1 / (1 + np.exp(-np.array(expected))), rtol=1e-6)
    # Two steps: 0, 2 and 4 pixels deleted.
    half = metrics.deletion_curve(f, x, scores, target=0, steps=2)
    np.testing.assert_allclose(half.logit, [8.75, -0.25, 0.25], rtol=1e-6)
    # The area by the trapezoidal rule: 0.25 * (8.75/2 + 0.75 - 0.25 - 1.75 + 0.25/2).
    area = metrics.curve_area(curve.fraction, curve.logit)
    assert float(area) == pytest.approx(0.25 * (8.75 / 2 + 0.75 - 0.25 - 1.75 + 0.125))


def test_insertion_curve_with_a_non_zero_baseline():
    x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    w = jnp.array([[1.0, -1.0], [0.5, 2.0]])
    f = _linear_net(w, 0.0)
    scores = jnp.array([[3.0, 0.0], [1.0, 9.0]])
    baseline = 1.0  # f(baseline image) = 1 - 1 + 0.5 + 2 = 2.5
    curve = metrics.insertion_curve(f, x, scores, target=0, baseline=baseline, steps=4)
    # Restoring pixel j adds w_j (x_j - 1): (1,1) +6, (0,0) +0, (1,0) +1, (0,1) -1.
    np.testing.assert_allclose(curve.logit, [2.5, 8.5, 8.5, 9.5, 8.5], rtol=1e-6)


def test_curves_on_colour_images_remove_whole_pixels():
    x = jnp.arange(1.0, 13.0).reshape(2, 2, 3)
    f = _linear_net(jnp.ones((2, 2, 3)), 0.0)
    scores = jnp.array([[0.0, 1.0], [2.0, 3.0]])
    curve = metrics.deletion_curve(f, x, scores, target=0, steps=4)
    # Pixel sums: (0,0) 6, (0,1) 15, (1,0) 24, (1,1) 33; removed from (1,1) back.
    np.testing.assert_allclose(curve.logit, [78, 45, 21, 6, 0])


def test_curves_default_target_and_vmap():
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(3, 4, 4)).astype(np.float32)
    scores = rng.normal(size=(3, 4, 4)).astype(np.float32)
    w = jnp.asarray(rng.normal(size=(4, 4)).astype(np.float32))

    def f(x):  # the arg-max is logit 0 exactly when w . x > 0
        return jnp.stack([jnp.sum(w * x), jnp.zeros(())])

    fn = jax.vmap(lambda x, s: metrics.deletion_curve(f, x, s, steps=16))
    curves = fn(jnp.asarray(xs), jnp.asarray(scores))
    for x, s, logit in zip(xs, scores, curves.logit, strict=True):
        t = 0 if np.sum(np.asarray(w) * x) > 0 else 1
        order = np.argsort(-s.ravel(), kind="stable")
        kept = np.ones(16, bool)
        expected = [np.sum(np.asarray(w) * x) if t == 0 else 0.0]
        for j in order:
            kept[j] = False
            value = np.sum((np.asarray(w) * x).ravel()[kept])
            expected.append(value if t == 0 else 0.0)
        np.testing.assert_allclose(logit, expected, rtol=1e-5, atol=1e-5)


def test_random_scores_give_a_permutation():
    s = metrics.random_scores(jax.random.key(0), (5, 6))
    assert s.shape == (5, 6)
    assert sorted(np.asarray(metrics.pixel_order(s)).ravel().tolist()) == list(range(30))
    assert not np.allclose(s, metrics.random_scores(jax.random.key(1), (5, 6)))


def test_curve_input_errors():
    f = _linear_net(jnp.ones((2, 2)), 0.0)
    with pytest.raises(ValueError, match="scores must be shaped"):
        metrics.deletion_curve(f, jnp.ones((2, 2)), jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="steps"):
        metrics.insertion_curve(f, jnp.ones((2, 2)), jnp.ones((2, 2)), steps=0)
    with pytest.raises(ValueError, match="1-D"):
        metrics.curve_area(jnp.ones(3), jnp.ones(4))
    # scores with a NaN: no order, so NaN curves (the fractions stay)
    nan_scores = jnp.ones((2, 2)).at[0, 1].set(jnp.nan)
    curve = metrics.deletion_curve(f, jnp.ones((2, 2)), nan_scores, steps=4)
    assert np.all(np.isnan(curve.logit)) and np.all(np.isnan(curve.probability))
    np.testing.assert_allclose(curve.fraction, [0, 0.25, 0.5, 0.75, 1])


class _Net(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(2, (3, 3))(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(5)(x))
        return nn.Dense(3)(x)


def test_cascading_randomization_replaces_layers_from_the_top():
    net = _Net()
    x = jnp.zeros((1, 4, 4, 1))
    trained = net.init(jax.random.key(0), x)
    fresh = net.init(jax.random.key(1), x)
    assert metrics.layer_order(trained) == ("Dense_1", "Dense_0", "Conv_0")
    steps = metrics.cascading_randomization(trained, fresh)
    assert [name for name, _ in steps] == ["Dense_1", "Dense_0", "Conv_0"]
    for k, (_, p) in enumerate(steps):
        for j, layer in enumerate(("Dense_1", "Dense_0", "Conv_0")):
            source = fresh if j <= k else trained
            for leaf, ref in zip(
                jax.tree.leaves(p["params"][layer]),
                jax.tree.leaves(source["params"][layer]),
                strict=True,
            ):
                assert leaf is ref
        net.apply(p, x)  # still a valid parameter tree
    # The trained tree is not modified.
    assert trained["params"]["Dense_1"]["kernel"] is not fresh["params"]["Dense_1"]["kernel"]
    custom = metrics.cascading_randomization(trained, fresh, order=["Conv_0"])
    assert len(custom) == 1
    assert custom[0][1]["params"]["Dense_1"] is trained["params"]["Dense_1"]


def test_cascading_randomization_errors():
    net = _Net()
    trained = net.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
    with pytest.raises(ValueError, match="not in both"):
        metrics.cascading_randomization(trained, trained, order=["Dense_7"])
    with pytest.raises(ValueError, match="'params' collection"):
        metrics.layer_order({"kernel": 1})
    other = _Net().init(jax.random.key(0), jnp.zeros((1, 5, 5, 1)))  # Dense_0 larger
    with pytest.raises(ValueError, match="differs in structure"):
        metrics.cascading_randomization(trained, other)


# --- steps_vmap: vmap over a metric's steps, one batch axis under an outer vmap -----------------


def _steps_problem():
    """A per-example function mapping its steps with `steps_vmap` and with `jax.vmap`; its
    closure holds a float input and an integer target, and its steps carry keys."""
    w = jax.random.normal(jax.random.key(0), (5, 3))

    def make(mapper):
        def per_example(x, t, key):
            def step(item):
                z, k = item
                return jnp.tanh(z @ w)[t] * x.sum(), jax.random.normal(k, ())

            zs = x[None] * jnp.arange(4.0)[:, None]
            return mapper(step, (zs, jax.random.split(key, 4)))

        return per_example

    return make(_common.steps_vmap), make(lambda fn, xs: jax.vmap(fn)(xs))


def test_steps_vmap_is_vmap_under_vmaps_and_gradients():
    ours, plain = _steps_problem()
    xs = jax.random.normal(jax.random.key(1), (6, 5))
    ts, keys = jnp.arange(6) % 3, jax.random.split(jax.random.key(2), 6)
    two = (xs.reshape(2, 3, 5), ts.reshape(2, 3), keys.reshape(2, 3))
    # each case jitted: one compilation, not one per operation (the vmaps are what is tested)
    cases = [
        (lambda f: jax.jit(f, static_argnums=1)(xs[0], 1, keys[0]), "one example"),
        (lambda f: jax.jit(jax.vmap(f))(xs, ts, keys), "vmap, batched target"),
        (lambda f: jax.jit(jax.vmap(f, in_axes=(0, None, 0)))(xs, 2, keys), "vmap, one target"),
        (
            lambda f: jax.jit(jax.vmap(f, in_axes=(None, 0, None)))(xs[0], ts, keys[0]),
            "only the target",
        ),
        (lambda f: jax.jit(jax.vmap(jax.vmap(f)))(*two), "two vmaps"),
    ]
    for run, what in cases:
        for got, want in zip(run(ours), run(plain), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7, err_msg=what)
    grad = [
        jax.jit(jax.grad(lambda x, f=f: f(x, 1, keys[0])[0].sum()))(xs[0]) for f in (ours, plain)
    ]
    np.testing.assert_allclose(grad[0], grad[1], rtol=1e-6)


def test_steps_vmap_gives_the_function_one_batch_axis_under_vmap():
    fn = lambda z: jnp.sin(z)  # noqa: E731
    per_example = lambda x: _common.steps_vmap(fn, x[None] * jnp.arange(5.0)[:, None])  # noqa: E731
    jaxpr = jax.make_jaxpr(jax.vmap(per_example))(jnp.ones((4, 3)))
    shapes = [e.invars[0].aval.shape for e in _all_eqns(jaxpr.jaxpr) if e.primitive.name == "sin"]
    assert shapes == [(20, 3)], shapes  # 4 examples x 5 steps on one axis, not (4, 5, 3)


def test_steps_vmap_keeps_two_batch_axes_rather_than_repeat_a_large_closure():
    # Per example, a 3 x 50 matrix (150 values) that fn only reads: repeating it for each of
    # the 5 steps would exceed fn's largest value per step (50), so the steps stay an axis.
    def per_example(w):
        return _common.steps_vmap(lambda z: jnp.sin(z @ w), jnp.ones((5, 3)) * w[0, 0])

    ws = jax.random.normal(jax.random.key(3), (4, 3, 50))
    jaxpr = jax.make_jaxpr(jax.vmap(per_example))(ws)
    shapes = [e.invars[0].aval.shape for e in _all_eqns(jaxpr.jaxpr) if e.primitive.name == "sin"]
    assert shapes == [(4, 5, 50)], shapes
    want = jax.vmap(lambda w: jax.vmap(lambda z: jnp.sin(z @ w))(jnp.ones((5, 3)) * w[0, 0]))(ws)
    np.testing.assert_allclose(jax.vmap(per_example)(ws), want, rtol=1e-6)


def _all_eqns(jaxpr):
    for e in jaxpr.eqns:
        yield e
        for sub in jex_core.jaxprs_in_params(e.params):
            yield from _all_eqns(sub)

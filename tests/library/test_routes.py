"""Route choice (`slp.insens_plan`), the dense route, Insens per layer, runtime weights.

References: the brute-force dense-matrix network of `tests/reference.py` (NumPy, float64,
no autodiff), written from the paper's formulas.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import slp
from slp._src import planner  # the plan behind slp.insens
from tests import reference as ref

ROUTES = ("cone", "probes", "dense")


def _random_net(seed, in_shape=(8, 8, 2)):
    rng = np.random.default_rng(seed)
    spec = ref.random_spec(rng, in_shape)
    params = ref.init_params(spec, in_shape, rng)
    x = rng.normal(size=in_shape)
    return spec, params, ref.jax_function(spec, params), x


def _mlp(rng, sizes=(784, 64, 32, 10)):
    ws = [rng.normal(0, 1 / np.sqrt(a), (a, b)) for a, b in zip(sizes, sizes[1:], strict=False)]

    def f(x):
        h = x.reshape(-1)
        for i, w in enumerate(ws):
            h = h @ jnp.asarray(w)
            h = jax.nn.relu(h) if i < len(ws) - 1 else h
        return h

    return f


@pytest.mark.parametrize("seed", range(4))
def test_every_route_is_exact(x64, seed):
    spec, params, f, x = _random_net(seed)
    want = ref.dense_model(spec, params, x).insens()
    plan = slp.insens_plan(f, jnp.asarray(x))
    assert set(plan.costs) | set(plan.not_taken) == set(ROUTES)
    for route in plan.costs:
        got = np.asarray(slp.insens(f, route=route)(jnp.asarray(x))).reshape(-1)
        np.testing.assert_allclose(got, want, atol=1e-10, err_msg=route)


def test_dense_route_in_several_steps(x64):
    spec, params, f, x = _random_net(5)
    want = ref.dense_model(spec, params, x).insens()
    plan = planner.build_plan(slp.network.trace(f, jnp.asarray(x)), jnp.asarray(x), 7)
    assert plan.dense.columns_per_step >= 7
    got = slp.insens(f, route="dense", chunk_size=7)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got).reshape(-1), want, atol=1e-10)


def test_plan_names_every_route_not_taken():
    f = _mlp(np.random.default_rng(0))
    plan = slp.insens_plan(f, jnp.ones((28, 28)))
    assert plan.route in ("probes", "dense")
    assert plan.cost == plan.costs[plan.route]
    assert plan.cost.flops > 0 and plan.cost.peak_bytes > 0 and plan.cost.steps >= 1
    assert "cone" in plan.not_taken and "convolution" in plan.not_taken["cone"]
    other = ({"probes", "dense"} - {plan.route}).pop()
    assert "predicted" in plan.not_taken[other]
    assert plan.route in str(plan)
    with pytest.raises(ValueError, match="cone route does not apply.*convolution"):
        slp.insens(f, route="cone")(jnp.ones((28, 28)))


def test_the_cheapest_route_is_chosen():
    # The documented rule written out: the least predicted time at the batch size.
    _, _, f, x = _random_net(1, in_shape=(4, 4, 1))
    for batch in (1, 8):
        plan = slp.insens_plan(f, jnp.asarray(x), batch=batch)
        c = plan.costs
        assert plan.route == min(c, key=lambda r: c[r].predict(batch))
    # Full-size 2CONV at 8 inputs per call: the cone route, predicted several times cheaper
    # than dense.
    model = slp.models.TwoConv(num_classes=10)
    p = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 28, 28, 1)))
    p = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), p)
    f2 = lambda x: model.apply(p, x[None])[0]  # noqa: E731
    plan = slp.insens_plan(f2, jnp.zeros((28, 28, 1)), batch=8)
    assert plan.route == "cone"
    assert plan.costs["dense"].flops > 5 * plan.cost.flops


@pytest.mark.parametrize("route", ROUTES)
def test_insens_by_layer_against_reference(x64, route):
    spec, params, f, x = _random_net(0)  # every route takes it
    r = ref.dense_model(spec, params, x)
    layers = slp.insens(f, by_layer=True, route=route)(jnp.asarray(x))
    assert isinstance(layers, slp.LayerInsens)
    n_relu = len(r.weights) - 1
    assert len(layers.maps) == len(layers.counts) == n_relu
    for k in range(n_relu):
        w, v = r.weights[k], r.activities[k]
        inactive = np.flatnonzero(v <= 0)
        sq = np.sum(w * w, axis=1)
        want = sum(
            (v[i] * w[i] / sq[i] for i in inactive if sq[i] > 0), np.zeros(w.shape[1])
        ) / max(len(inactive), 1)
        assert int(layers.counts[k]) == len(inactive)
        np.testing.assert_allclose(np.asarray(layers.maps[k]).reshape(-1), want, atol=1e-10)
    np.testing.assert_allclose(np.asarray(layers.total()).reshape(-1), r.insens(), atol=1e-10)


def test_by_layer_batches():
    _, _, f, x = _random_net(3)
    xs = jnp.stack([jnp.asarray(x, jnp.float32)] * 3)
    layers = jax.vmap(slp.insens(f, by_layer=True))(xs)
    assert layers.maps[0].shape == xs.shape
    assert layers.counts[0].shape == (3,)
    np.testing.assert_allclose(
        jax.vmap(lambda m: m.total())(layers), jax.vmap(slp.insens(f))(xs), rtol=1e-5, atol=1e-7
    )


def _largest_constant(hlo: str) -> int:
    sizes = [1]
    for m in re.finditer(r"= \w+\[([0-9,]*)\][^ ]* constant\(", hlo):
        sizes.append(int(np.prod([int(d) for d in m.group(1).split(",") if d])))
    return max(sizes)


def test_weights_are_not_folded_into_compile_time_constants():
    # The cone route pads the dense weights of the cut; as a compile-time constant XLA
    # folds that pad while compiling (slowly, with error-level log lines on a busy machine).
    rng = np.random.default_rng(4)
    kern = jnp.asarray(rng.normal(size=(5, 5, 1, 8)), jnp.float32)
    dense = jnp.asarray(rng.normal(size=(7 * 7 * 8, 64)), jnp.float32)

    def f(x):
        h = lax.conv_general_dilated(
            x[None], kern, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]
        h = lax.reduce_window(jax.nn.relu(h), -jnp.inf, lax.max, (2, 2, 1), (2, 2, 1), "VALID")
        return jax.nn.relu(h.reshape(-1) @ dense)

    x = jnp.ones((14, 14, 1))
    hlo = jax.jit(slp.insens(f, route="cone")).lower(x).compile().as_text()
    assert _largest_constant(hlo) <= dense.size


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_gives_nan_map(bad):
    _, _, f, x = _random_net(0)
    x = jnp.asarray(x, jnp.float32).at[3, 4, 1].set(bad)
    for route in slp.insens_plan(f, x).costs:
        assert np.all(np.isnan(np.asarray(slp.insens(f, route=route)(x)))), route
    layers = slp.insens(f, by_layer=True)(x)
    assert all(np.all(np.isnan(np.asarray(m))) for m in layers.maps)
    good = jnp.asarray(_random_net(0)[3], jnp.float32)
    maps = jax.vmap(slp.insens(f))(jnp.stack([good, x]))
    assert np.all(np.isfinite(np.asarray(maps[0]))) and np.all(np.isnan(np.asarray(maps[1])))


def test_without_receptive_boxes_the_routes_still_give_the_reference_map(x64, monkeypatch):
    """When the boxes cannot be computed (`NotConcrete`: no structure known), the planner
    takes every element as depending on the whole input (`boxes.whole_boxes`)."""
    from slp._src import boxes

    def not_concrete(*args, **kwargs):
        raise boxes.NotConcrete

    spec, params, f, x = ref.conv_pool_dense(1)
    want = ref.dense_model(spec, params, x).insens()
    monkeypatch.setattr(boxes, "receptive_boxes", not_concrete)
    for route in ("auto", "probes", "dense"):
        got = slp.insens(f, route=route)(jnp.asarray(x))
        np.testing.assert_allclose(np.asarray(got).reshape(-1), want, atol=1e-10)

"""The planner's cost model (`slp._src.costs`): the fit, the prediction, the choice, the counts.

References: coefficients known in advance (synthetic timings made from them), work counted
by hand from the network's layers, and the prediction formula written out.
"""

import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import slp
from slp._src import costs, planner
from tests.library.test_insens_fast import jacfwd_insens  # the naive route: Eq. 8 from jacfwd

# --- The fit --------------------------------------------------------------------------------


def _synthetic(rng, true: dict[str, float], n: int, noise: float):
    """``n`` calls with random work of every kind, timed by ``true`` times lognormal noise."""
    samples = []
    for _ in range(n):
        work = {k: float(rng.uniform(0.0, 1.0) < 0.7) * 10 ** rng.uniform(0, 3) for k in true}
        work["call"] = 1.0  # every call pays the fixed cost
        seconds = sum(true[k] * v for k, v in work.items()) * math.exp(noise * rng.normal())
        samples.append((work, seconds))
    return samples


TRUE = {"call": 2e-4, "ops": 3e-5, "matmul": 4e-11, "elementwise": 1e-9}


def _scaled(rng):
    """Work amounts of the sizes of real ones: ops ~1e3, FLOPs ~1e9, elements ~1e7."""
    size = {"call": 1.0, "ops": 1.0, "matmul": 1e6, "elementwise": 1e4}
    return [
        ({k: v * size[k] for k, v in w.items()}, s / 1.0)
        for w, s in _synthetic(rng, {k: TRUE[k] * size[k] for k in TRUE}, 60, 0.0)
    ]


def test_fit_recovers_known_coefficients_from_exact_timings():
    samples = _scaled(np.random.default_rng(0))
    # the timings are sums of the true coefficients times the work, so the fit is exact
    for work, seconds in samples[:3]:
        assert seconds == pytest.approx(sum(TRUE[k] * v for k, v in work.items()))
    fit = costs.fit_coefficients(samples)
    assert set(fit) == set(TRUE)
    for k, v in TRUE.items():
        assert fit[k] == pytest.approx(v, rel=1e-5), k


def test_fit_with_noisy_timings_is_close_and_a_coefficient_with_no_effect_is_zero():
    rng = np.random.default_rng(1)
    true = {"call": 1e-3, "ops": 1e-4, "matmul": 1e-6, "unused": 0.0}
    samples = _synthetic(rng, true, 400, 0.05)  # 5% multiplicative noise
    fit = costs.fit_coefficients(samples)
    for k in ("call", "ops", "matmul"):
        assert fit[k] == pytest.approx(true[k], rel=0.1), k
    # an unused kind of work gets (next to) nothing: under 2% of any call's time
    assert max(fit["unused"] * w["unused"] / s for w, s in samples) < 0.02
    # the fit is in log space: the residuals' median is near zero
    logs = [math.log(costs.predict_seconds(w, 1, coefficients=fit) / s) for w, s in samples]
    assert abs(float(np.median(logs))) < 0.02


def test_fit_names_and_bad_input():
    samples = [({"a.call": 1.0, "b": 2.0}, 1.0), ({"a.call": 1.0, "b": 4.0}, 1.5)]
    fit = costs.fit_coefficients(samples, names=["a.call", "b", "never"])
    assert fit["never"] == 0.0
    assert fit["a.call"] == pytest.approx(0.5, rel=1e-5)
    assert fit["b"] == pytest.approx(0.25, rel=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        costs.fit_coefficients([])
    with pytest.raises(ValueError, match="positive"):
        costs.fit_coefficients([({"a.call": 1.0}, 0.0)])
    with pytest.raises(ValueError, match="non-negative"):
        costs.fit_coefficients([({"a.call": -1.0}, 1.0)])


# --- The prediction and the choice ----------------------------------------------------------


def test_predict_counts_per_call_work_once_and_per_image_work_per_image():
    c = {"r.call": 1.0, "r.ops": 0.1, "r.setup": 0.01, "r.matmul": 1e-3, "forward": 1e-4}
    work = {"r.call": 1, "r.ops": 5, "r.setup": 7, "r.matmul": 20, "forward": 30}
    per_call = 1.0 + 0.5 + 0.07
    per_image = 0.02 + 0.003
    for batch in (1, 8):
        got = costs.predict_seconds(work, batch, coefficients=c)
        assert got == pytest.approx(per_call + batch * per_image)
        # a device twice as fast halves the per-image terms only
        got = costs.predict_seconds(work, batch, coefficients=c, speed=2.0)
        assert got == pytest.approx(per_call + batch * per_image / 2)


def test_choose_least_worst_ratio_to_the_fastest():
    c = {"a.call": 1.0, "b.call": 1.0, "c.call": 1.0, "a.matmul": 1.0, "b.matmul": 1.0}
    c["c.matmul"] = 1.0
    # a: 1 + B, b: 3 + B / 4, c: 1.2 + 1.3 B
    work = {
        "a": {"a.call": 1.0, "a.matmul": 1.0},
        "b": {"b.call": 3.0, "b.matmul": 0.25},
        "c": {"c.call": 1.2, "c.matmul": 1.3},
    }
    # batch 1: a 2, b 3.25, c 2.5; batch 8: a 9, b 5, c 11.6. Worst ratios: a 1.8, b 1.625,
    # c 2.32: b, though a is fastest at batch 1.
    assert costs.CHOICE_BATCHES == (1, 8)
    assert costs.choose(work, coefficients=c) == "b"
    assert costs.choose({"a": work["a"], "c": work["c"]}, coefficients=c) == "a"
    # With the batch size known: the least predicted seconds at that size.
    assert costs.choose(work, batch=1, coefficients=c) == "a"
    assert costs.choose(work, batch=8, coefficients=c) == "b"
    with pytest.raises(ValueError, match="no route"):
        costs.choose({})


def test_plan_chooses_and_predicts_with_the_cost_model():
    rng = np.random.default_rng(0)
    k = jnp.asarray(rng.normal(size=(3, 3, 1, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(144, 10)), jnp.float32)

    def f(x):
        z = lax.conv_general_dilated(
            x[None], k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]
        return jax.nn.relu(z).reshape(-1) @ w

    x = jnp.ones((6, 6, 1))
    for batch in (1, 8):
        plan = slp.insens_plan(f, x, batch=batch)
        assert plan.batch == batch
        work = {r: c.work for r, c in plan.costs.items()}
        assert plan.route == costs.choose(work, batch=batch)
        speed = planner.device_speed(plan.flop_rate)
        for cost in plan.costs.values():
            want = costs.predict_seconds(cost.work, batch, speed=speed)
            assert cost.seconds == pytest.approx(want, rel=1e-12)
        text = str(plan)
        assert f"one call on {batch} input" in text and "compile excluded" in text
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        slp.insens_plan(f, x, batch=0)


# --- The counts -----------------------------------------------------------------------------


def test_program_work_counted_by_hand():
    """Ops, FLOPs and elements of a small program, per example and per call, by hand."""
    w = jnp.ones((6, 4))
    k = jnp.ones((3, 3, 2, 5))  # HWIO

    def fn(x):  # x: (6,)
        h = x @ w  # 2 * 6 * 4 FLOPs, per example
        setup = w.T @ w  # does not depend on x: once per call under vmap, 2 * 4 * 6 * 4
        img = jnp.ones((1, 7, 7, 2)) * h[0]  # 98 + 98 elements (broadcast, multiply)

        def body(c, _):  # 3 steps, each: a 3x3 conv 2 -> 5 channels on 7x7 (SAME), a sum
            z = lax.conv_general_dilated(
                img * c, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            # the same in every step (XLA hoists it out of the loop): counted once
            same = lax.conv_general_dilated(
                img, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            return c + jnp.sum(z) + jnp.sum(same), None

        total, _ = lax.scan(body, jnp.ones(()), None, length=3)
        return total + jnp.sum(setup)

    work = costs.program_work(fn, jax.ShapeDtypeStruct((6,), jnp.float32))
    assert work["matmul"] == 2 * 6 * 4
    assert work["conv"] == (3 + 1) * 2 * (7 * 7 * 5) * (3 * 3 * 2)
    assert work["conv_taps"] == (3 + 1) * (7 * 7 * 5) * (3 * 3)  # output elements x taps
    assert work["conv_cf"] == 0 and work["conv_grouped"] == 0
    # operands that do not depend on x, read per execution: w (x @ w), the kernel of the
    # first convolution (3 steps) and of the second (once); img * c depends on x
    assert work["weights"] == 6 * 4 + (3 + 1) * (3 * 3 * 2 * 5)
    # the setup product's FLOPs and the elements of everything that does not depend on x
    assert work["setup"] >= 2 * 4 * 6 * 4
    # every equation once per execution: those in the loop body that change from step to
    # step once per step, the others (the second convolution's) once
    closed = jax.make_jaxpr(fn)(jnp.ones(6))
    (scan,) = [e for e in closed.eqns if e.primitive.name == "scan"]
    n_out, n_body = len(closed.eqns) - 1, len(scan.params["jaxpr"].eqns)
    assert n_out + n_body < work["ops"] < n_out + 3 * n_body


def test_weights_passed_as_arguments_count_as_the_closed_over_ones():
    """`jaxpr_work` with the weights as flagged arguments counts what `program_work` counts
    with them closed over (the planner traces each route so, to run the same program)."""
    w = jnp.arange(24.0).reshape(6, 4)

    def fn(x, w):
        return jnp.sum(jnp.maximum(x @ w, 0.0)) + jnp.sum(w.T @ w)  # w.T @ w: setup

    x = jax.ShapeDtypeStruct((6,), jnp.float32)
    closed_over = costs.program_work(lambda x: fn(x, w), x)
    closed = jax.make_jaxpr(fn)(x, w)
    assert costs.jaxpr_work(closed, [True, False]) == closed_over
    assert closed_over["setup"] >= 2 * 4 * 6 * 4 and closed_over["weights"] == 6 * 4
    # flagged as depending on the input, the weights' product is per-example work instead
    both = costs.jaxpr_work(closed, [True, True])
    assert both["matmul"] == closed_over["matmul"] + 2 * 4 * 6 * 4
    assert both["setup"] < closed_over["setup"]


def test_a_plan_shows_its_traced_routes_in_a_line_each():
    """The plan keeps each counted route's traced program; its repr (what a notebook shows)
    names the route and its size, not the program's text."""
    f, shape = _small_conv_net()
    plan = slp.insens_plan(f, jnp.ones(shape))
    assert set(plan.traced) == set(plan.costs) == {"cone", "probes", "dense"}
    for route, traced in plan.traced.items():
        assert re.fullmatch(rf"TracedRoute\(route='{route}', \d+ operations\)", repr(traced))
    assert "lambda" not in repr(plan)  # no program text


def test_program_work_channel_first_and_grouped_convolutions_in_loops_apart():
    k_oihw = jnp.ones((4, 2, 3, 3))
    k_group = jnp.ones((3, 3, 1, 4))  # HWIO, 2 groups of 1 -> 2 channels each

    def conv_cf(x):  # NCHW inside a loop
        return lax.conv_general_dilated(x[None], k_oihw, (1, 1), "SAME")[0]

    def conv_grouped(x):  # feature_group_count inside a loop
        return lax.conv_general_dilated(
            x[None],
            k_group,
            (1, 1),
            "SAME",
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=2,
        )[0]

    def looped(conv):
        def fn(x):
            return lax.scan(lambda c, _: (c + jnp.sum(conv(x * c)), None), 1.0, None, length=2)[0]

        return fn

    cf = costs.program_work(looped(conv_cf), jax.ShapeDtypeStruct((2, 5, 5), jnp.float32))
    assert cf["conv_cf"] == 2 * 2 * (4 * 5 * 5) * (2 * 3 * 3) and cf["conv"] == 0
    gr = costs.program_work(looped(conv_grouped), jax.ShapeDtypeStruct((5, 5, 2), jnp.float32))
    assert gr["conv_grouped"] == 2 * 2 * (5 * 5 * 4) * (1 * 3 * 3) and gr["conv"] == 0
    # outside a loop XLA picks a fast layout: an ordinary convolution
    once = costs.program_work(conv_cf, jax.ShapeDtypeStruct((2, 5, 5), jnp.float32))
    assert once["conv"] == 2 * (4 * 5 * 5) * (2 * 3 * 3) and once["conv_cf"] == 0


def test_plan_work_is_the_routes_traced_program():
    """Dense route of a 36-5-4-3 network: the first layer's product with the one-hot input
    directions does not depend on x (set-up, once per call); the second layer's does."""
    rng = np.random.default_rng(0)
    w1 = jnp.asarray(rng.normal(size=(36, 5)), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    w3 = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)

    def f(x):
        return jax.nn.relu(jax.nn.relu(x.reshape(-1) @ w1) @ w2) @ w3

    plan = slp.insens_plan(f, jnp.ones((6, 6)))
    dense = plan.costs["dense"].work
    shared = set(costs.SHARED)
    assert set(dense) == {f"dense.{k}" for k in set(costs.WORK_KINDS) - shared} | shared | {
        "dense.call",
        "forward",
    }
    forward = 2 * (36 * 5 + 5 * 4 + 4 * 3)
    tangents = 2 * 36 * 5 * 4  # 36 directions through the second layer (masked by layer 1)
    assert tangents <= dense["dense.matmul"] <= tangents + 3 * forward
    assert dense["dense.setup"] >= 2 * 36 * 36 * 5  # one-hot directions times w1
    assert dense["forward"] == plan.forward_flops
    assert plan.costs["dense"].flops == dense["dense.matmul"]


def test_coefficients_source_round_trips_in_lines_of_100():
    for command in ("short", "x" * 85, "python experiments/bench_insens.py " * 8):
        calibration = {"command": command, "flop_rate": 2.3e11, "load_average": 3.0}
        fit = {"a.call": 1.234567e-4, "a.matmul": 0.0, "forward": 5e-12}
        src = costs.coefficients_source(fit, calibration)
        assert max(len(line) for line in src.splitlines()) <= 100
        namespace: dict = {}
        exec(src, namespace)
        assert namespace["CALIBRATION"] == calibration
        assert namespace["COEFFICIENTS"] == pytest.approx(fit, rel=1e-3)


# --- The choice at the batch size of the call ------------------------------------------------


def _small_conv_net():
    """Conv, max-pool, conv, max-pool, dense: every exact route applies."""
    rng = np.random.default_rng(3)
    k1 = jnp.asarray(rng.normal(size=(3, 3, 1, 4)) / 3, jnp.float32)
    k2 = jnp.asarray(rng.normal(size=(3, 3, 4, 8)) / 6, jnp.float32)
    w = jnp.asarray(rng.normal(size=(2 * 2 * 8, 10)) / 6, jnp.float32)

    def conv(x, k):
        return lax.conv_general_dilated(
            x[None], k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]

    def pool(z):
        return lax.reduce_window(z, -jnp.inf, lax.max, (2, 2, 1), (2, 2, 1), "VALID")

    def f(x, scale=1.0):
        h = pool(jax.nn.relu(conv(x, k1 * scale) + 0.1))
        h = pool(jax.nn.relu(conv(h, k2) - 0.05))
        return h.reshape(-1) @ w

    return f, (8, 8, 1)


def test_auto_runs_the_route_chosen_for_the_batch_size_of_the_call(monkeypatch):
    """Under vmap the batch size reaches the choice; on one input the choice is for 1. The
    cost table is replaced by a rule (probes for one input, dense for 2, the cone above),
    so that the test does not depend on the fitted coefficients."""
    from slp._src import routes as module  # where the route for the batch size runs

    def rule(work, *, batch=None, coefficients=None):
        assert batch is not None and set(work) == {"cone", "probes", "dense"}
        return {1: "probes", 2: "dense"}.get(batch, "cone")

    monkeypatch.setattr(module._costs, "choose", rule)
    ran = []
    # a route traced while its work was counted runs that program (not traced again)
    traced_norms = planner.TracedRoute.norms

    def traced_spy(self, *args):
        ran.append(self.route)
        return traced_norms(self, *args)

    monkeypatch.setattr(planner.TracedRoute, "norms", traced_spy)
    f, shape = _small_conv_net()
    x = jax.random.uniform(jax.random.PRNGKey(0), (5, *shape))
    want = np.stack([jacfwd_insens(f, xi) for xi in x])
    auto = slp.insens(f)
    for b, route in ((1, "probes"), (2, "dense"), (5, "cone")):
        ran.clear()
        got = auto(x[0])[None] if b == 1 else jax.vmap(auto)(x[:b])
        assert ran and ran[-1] == route, (b, ran)
        np.testing.assert_allclose(got, want[:b], rtol=1e-4, atol=1e-6)
    assert slp.insens_plan(f, x[0], batch=2).route == "dense"


def test_auto_batched_over_the_weights_and_differentiated():
    """A vmap over the weights (closed over by ``f``) and a gradient through the map: the
    chosen route's numbers, as each route gives them (float32 rounding)."""
    f, shape = _small_conv_net()
    x = jax.random.uniform(jax.random.PRNGKey(1), shape)
    scales = jnp.asarray([0.5, 1.0, 2.0])

    def per_scale(route):
        return jax.vmap(lambda s: slp.insens(lambda xx: f(xx, s), route=route)(x))(scales)

    got = per_scale("auto")
    for route in ("cone", "probes"):
        np.testing.assert_allclose(got, per_scale(route), rtol=1e-5, atol=1e-7)

    def total(xx, route):
        return jnp.sum(slp.insens(f, route=route)(xx) ** 2)

    g = jax.grad(total)(x, "auto")
    np.testing.assert_allclose(g, jax.grad(total)(x, "cone"), rtol=1e-4, atol=1e-9)
    assert bool(jnp.all(jnp.isfinite(g)))


def test_minimax_fit_bounds_the_worst_prediction_and_ranks_the_routes():
    """Two routes per group whose timings the model cannot fit exactly: the minimax fit
    reaches its stated worst factor, no worse (within its 5% step) than the log fit's
    without the ranking, and predicts the fastest call of each group below every call of it
    over 1.2x slower."""
    # route a: call + 1 unit of "a.m"; route b: call + "b.m"; one group per (m, size).
    samples, groups = [], []
    for g, (ma, mb) in enumerate([(1.0, 4.0), (2.0, 1.0), (8.0, 3.0), (3.0, 9.0)]):
        ta, tb = 0.1 + ma * (1 + 0.3 * (g % 2)), 0.1 + mb * (1 - 0.2 * (g % 2))
        samples += [({"a.call": 1.0, "a.m": ma}, ta), ({"b.call": 1.0, "b.m": mb}, tb)]
        groups += [g, g]
    coef, worst = costs.fit_coefficients_minimax(samples, groups=groups)
    pred = [costs.predict_seconds(w, 1, coefficients=coef) for w, _ in samples]
    ratios = [max(p / s, s / p) for p, (_, s) in zip(pred, samples, strict=True)]
    assert max(ratios) == pytest.approx(worst, rel=1e-6)
    log_coef = costs.fit_coefficients(samples)
    log_pred = [costs.predict_seconds(w, 1, coefficients=log_coef) for w, _ in samples]
    log_worst = max(max(p / s, s / p) for p, (_, s) in zip(log_pred, samples, strict=True))
    _, free_worst = costs.fit_coefficients_minimax(samples)  # without the ranking
    assert free_worst <= 1.05 * log_worst + 1e-9  # (the last step may give up 5%)
    for g in range(4):
        ta, tb = samples[2 * g][1], samples[2 * g + 1][1]
        if max(ta, tb) > 1.2 * min(ta, tb):  # the faster one is predicted faster
            fast, slow = (2 * g, 2 * g + 1) if ta < tb else (2 * g + 1, 2 * g)
            assert pred[fast] * costs.ORDER_MARGIN <= pred[slow] * (1 + 1e-9)
    with pytest.raises(ValueError, match="labels"):
        costs.fit_coefficients_minimax(samples, groups=[0])


def test_device_speed_is_one_on_a_cpu_near_the_calibration_rate():
    """The rate probe's noise on one CPU is not taken for speed: within SAME_CPU_BAND of the
    calibration rate a CPU is the calibration machine; outside it the ratio scales."""
    cal = float(costs.CALIBRATION["flop_rate"])
    assert jax.devices()[0].platform == "cpu"
    assert planner.device_speed(cal * 2.0) == 1.0 and planner.device_speed(cal / 2.5) == 1.0
    assert planner.device_speed(cal * 4.0) == pytest.approx(4.0)
    assert planner.device_speed(cal / 10) == pytest.approx(0.1)


def test_insens_plan_takes_chunk_size_none_as_insens_does():
    """None: every input element in one step (as `slp.insens`); below 1: a ValueError."""
    w = jnp.asarray(np.random.default_rng(0).normal(size=(6, 3)))

    def f(x):
        return jax.nn.relu(x @ w) @ jnp.ones((3, 2))

    x = jnp.ones(6)
    assert slp.insens_plan(f, x, chunk_size=None).dense.columns_per_step == 6
    with pytest.raises(ValueError, match="chunk_size must be a positive integer or None"):
        slp.insens_plan(f, x, chunk_size=0)

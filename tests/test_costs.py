"""The planner's cost model (`_slp.costs`): the fit, the prediction, the choice, the counts.

References: coefficients known in advance (synthetic timings made from them), work counted
by hand from the network's layers, and the prediction formula written out.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import slp
from _slp import costs

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


TRUE = {"call": 2e-4, "steps": 3e-5, "matmul": 4e-11, "elementwise": 1e-9}


def _scaled(rng):
    """Work amounts of the sizes of real ones: steps ~10, FLOPs ~1e9, elements ~1e7."""
    size = {"call": 1.0, "steps": 1.0, "matmul": 1e6, "elementwise": 1e4}
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
    true = {"call": 1e-3, "steps": 1e-4, "matmul": 1e-6, "unused": 0.0}
    samples = _synthetic(rng, true, 400, 0.05)  # 5% multiplicative noise
    fit = costs.fit_coefficients(samples)
    for k in ("call", "steps", "matmul"):
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
    c = {"r.call": 1.0, "r.steps": 0.1, "r.setup": 0.01, "r.matmul": 1e-3, "forward": 1e-4}
    work = {"r.call": 1, "r.steps": 5, "r.setup": 7, "r.matmul": 20, "forward": 30}
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
        assert plan.route == costs.choose({r: c.work for r, c in plan.costs.items()})
        speed = plan.flop_rate / costs.CALIBRATION["flop_rate"]
        for cost in plan.costs.values():
            want = costs.predict_seconds(cost.work, batch, speed=speed)
            assert cost.seconds == pytest.approx(want, rel=1e-12)
        text = str(plan)
        assert f"one call on {batch} input" in text and "compile excluded" in text
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        slp.insens_plan(f, x, batch=0)


# --- The counts -----------------------------------------------------------------------------


def _conv_dense_net():
    """conv 3x3, 1 -> 2 channels, SAME, on 6x6x1 -> ReLU -> flatten -> dense 72 -> 5 -> ReLU
    -> dense 5 -> 3; no biases."""
    rng = np.random.default_rng(0)
    k = jnp.asarray(rng.normal(size=(3, 3, 1, 2)), jnp.float32)
    w1 = jnp.asarray(rng.normal(size=(72, 5)), jnp.float32)
    w2 = jnp.asarray(rng.normal(size=(5, 3)), jnp.float32)

    def f(x):
        z = lax.conv_general_dilated(
            x[None], k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]
        h = jax.nn.relu(z).reshape(-1)
        return jax.nn.relu(h @ w1) @ w2

    return f


def test_cone_work_counted_by_hand():
    plan = slp.insens_plan(_conv_dense_net(), jnp.ones((6, 6, 1)))
    work = plan.costs["cone"].work
    # 36 input pixels, one block each; a pixel reaches a 3x3x2 cone of the conv's output.
    assert work["cone.steps"] == 36
    conv = 2 * 36 * 1 * 18  # each pixel's 1 x 18 cone matrix
    cut = 2 * 36 * 18 * 5  # each pixel's 18 cone values times their rows of the 72 x 5 weights
    post = 36 * (5 + 2 * 5 * 3)  # each pixel's column through the ReLU and the 5 -> 3 layer
    assert work["cone.matmul"] == conv + cut + post
    assert work["cone.setup"] == 18 + 72 * 5  # the cone matrix and the cut's weights


def test_dense_work_counted_by_hand():
    plan = slp.insens_plan(_conv_dense_net(), jnp.ones((6, 6, 1)))
    work = plan.costs["dense"].work
    macs = 36 * 2 * 9 + 72 * 5 + 5 * 3  # conv, dense, dense
    # every one of the 36 input directions through every layer (plus one FLOP per element
    # of the reshapes and ReLUs: 36 + 72 * 3 + 5)
    assert work["dense.matmul"] == 36 * (2 * macs + 36 + 72 * 3 + 5)
    assert work["forward"] == 2 * macs + 36 + 72 * 3 + 5
    assert work["loop_conv_cf"] == 0 and work["dense.steps"] == 1


def test_channel_first_convolutions_counted_apart():
    rng = np.random.default_rng(0)
    k = jnp.asarray(rng.normal(size=(2, 1, 3, 3)), jnp.float32)  # OIHW

    def f(x_CHW):
        z = lax.conv_general_dilated(x_CHW[None], k, (1, 1), "SAME")[0]  # NCHW
        return jax.nn.relu(z).sum(axis=(1, 2))

    work = slp.insens_plan(f, jnp.ones((1, 6, 6))).costs["dense"].work
    assert work["loop_conv_cf"] == 36 * (2 * 72 * 9)  # 36 directions, the conv's FLOPs

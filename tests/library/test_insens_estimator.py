"""The unbiased Insens estimator (`slp.insens` with ``probes=k``).

References: the brute-force dense-matrix network of `tests/reference.py` (NumPy, float64,
no autodiff) gives the exact switched weight vectors ``w_hat_i``; the estimator is written
out again below in NumPy from them and the same Gaussian probes, and its mean over many
keys is compared with the exact Insens.

Why ``(k - 2)``: for ``S = |w|^2 chi2_k``, the chi-square density
``p_k(s) = s^(k/2 - 1) e^(-s/2) / (2^(k/2) Gamma(k/2))`` gives
``E[1/chi2_k] = Gamma(k/2 - 1) / (2 Gamma(k/2)) = 1/(k - 2)`` (k > 2), so
``E[(k - 2)/S] = 1/|w|^2``; and ``Var[1/chi2_k] = 2/((k - 2)^2 (k - 4))`` (k > 4).
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from experiment_helpers import load_script

import slp
from tests import reference as ref

SPEC = [
    ("conv", 4, 3, 1, "SAME"),
    ("relu",),
    ("maxpool", 2, 2),
    ("conv", 6, 3, 1, "SAME"),
    ("relu",),
    ("flatten",),
    ("dense", 12),
    ("relu",),
    ("dense", 3),
]
IN_SHAPE = (6, 6, 2)


@pytest.fixture
def small_net(x64):
    rng = np.random.default_rng(3)
    params = ref.init_params(SPEC, IN_SHAPE, rng)
    f = ref.jax_function(SPEC, params)
    x = rng.normal(size=IN_SHAPE)
    model = ref.dense_model(SPEC, params, x)
    exact = model.insens().reshape(IN_SHAPE)
    return f, x, model, exact


def test_expected_reciprocal_chi2_by_quadrature():
    integrate = pytest.importorskip("scipy.integrate")
    for k in (3, 5, 8, 32):

        def density(s, k=k):
            return s ** (k / 2 - 1) * math.exp(-s / 2) / (2 ** (k / 2) * math.gamma(k / 2))

        mean_inv, _ = integrate.quad(lambda s, k=k: density(s) / s, 0, np.inf)
        closed = math.gamma(k / 2 - 1) / (2 * math.gamma(k / 2))
        assert mean_inv == pytest.approx(closed, rel=1e-6)
        assert closed == pytest.approx(1 / (k - 2), rel=1e-12)


def _numpy_estimate(model, x, probes, key):
    """The estimator from the dense switched weights and the same probes (float64)."""
    z = np.stack(
        [
            np.asarray(jax.random.normal(jax.random.fold_in(key, m), x.shape, np.float64))
            for m in range(probes)
        ]
    ).reshape(probes, -1)
    parts, count = [], 0
    for w, v in zip(model.weights[:-1], model.activities[:-1], strict=True):
        y = z @ w.T  # (k, neurons): J z_m per neuron
        inactive = v <= 0
        count += int(inactive.sum())
        parts.append((w, v, inactive, y**2))
    return parts, count


def _combine(parts, count, k_used, drop=None):
    total = 0.0
    for w, v, inactive, y2 in parts:
        s = y2.sum(0) if drop is None else y2.sum(0) - y2[drop].sum(0)
        coeff = np.where(inactive & (s > 0), v * (k_used - 2) / np.where(s > 0, s, 1), 0)
        total = total + coeff @ w
    return total / count


def test_same_probes_as_numpy_formula(small_net):
    f, x, model, _ = small_net
    k, key = 8, jax.random.key(7)
    out = slp.insens(f, probes=k, key=key, return_stderr=True)(x)
    parts, count = _numpy_estimate(model, x, k, key)
    want = _combine(parts, count, k).reshape(IN_SHAPE)
    np.testing.assert_allclose(np.asarray(out.map), want, rtol=1e-10, atol=1e-12)
    # k = 8: eight groups of one probe (delete-one jackknife).
    loo = np.stack([_combine(parts, count, k - 1, drop=[m]) for m in range(k)])
    se = np.sqrt((k - 1) / k * ((loo - loo.mean(0)) ** 2).sum(0)).reshape(IN_SHAPE)
    np.testing.assert_allclose(np.asarray(out.stderr), se, rtol=1e-9, atol=1e-12)


def test_exact_first_layers_against_numpy_formula(small_net):
    # The two conv layers exact (|w_hat|^2 from the dense switched weights), the dense
    # layer from the probes, (k - 2)/S as before.
    f, x, model, _ = small_net
    k, key = 8, jax.random.key(11)
    out = slp.insens(f, probes=k, key=key, exact_layers=2, return_stderr=True)(x)
    parts, count = _numpy_estimate(model, x, k, key)
    total = 0.0
    for layer, (w, v, inactive, y2) in enumerate(parts):
        s = np.sum(w * w, axis=1) if layer < 2 else y2.sum(0) / (k - 2)
        total = total + np.where(inactive & (s > 0), v / np.where(s > 0, s, 1), 0) @ w
    want = (total / count).reshape(IN_SHAPE)
    np.testing.assert_allclose(np.asarray(out.map), want, rtol=1e-9, atol=1e-12)
    # Exact layers add no spread: the jackknife sees only the dense layer's probes.
    loo = []
    for m in range(k):
        total = 0.0
        for layer, (w, v, inactive, y2) in enumerate(parts):
            s = np.sum(w * w, axis=1) if layer < 2 else (y2.sum(0) - y2[m]) / (k - 3)
            total = total + np.where(inactive & (s > 0), v / np.where(s > 0, s, 1), 0) @ w
        loo.append(total / count)
    loo = np.stack(loo)
    se = np.sqrt((k - 1) / k * ((loo - loo.mean(0)) ** 2).sum(0)).reshape(IN_SHAPE)
    np.testing.assert_allclose(np.asarray(out.stderr), se, rtol=1e-8, atol=1e-12)


def test_exact_layers_beyond_the_cone_route_are_named(small_net):
    f, x, _, _ = small_net
    with pytest.raises(ValueError, match="exact_layers=3: the cone route does not reach"):
        slp.insens(f, probes=8, key=jax.random.key(0), exact_layers=3)(x)
    with pytest.raises(ValueError, match="network has 3 ReLU layers"):
        slp.insens(f, probes=8, key=jax.random.key(0), exact_layers=4)(x)
    with pytest.raises(ValueError, match="exact_layers applies to the estimate"):
        slp.insens(f, exact_layers=1)


def test_mean_over_keys_converges_to_exact(small_net):
    f, x, _, exact = small_net
    k, n = 8, 2000
    est = slp.insens(f, probes=k, key=jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), n)
    maps = np.asarray(jax.jit(jax.vmap(lambda kk: est(x, kk)))(keys))
    mean, sem = maps.mean(0), maps.std(0, ddof=1) / np.sqrt(n)
    assert np.all(sem > 0)
    # 72 elements: |z| < 4.5 has a chance below 1e-3 of failing if unbiased.
    assert np.abs((mean - exact) / sem).max() < 4.5
    # The same test rejects the plug-in reciprocal k / S (biased by k / (k - 2)): it can fail.
    plug_in = mean * k / (k - 2)
    assert np.abs((plug_in - exact) / sem).max() > 10


@pytest.mark.parametrize("k", [8, 32])
def test_stderr_covers_the_error(small_net, k):
    f, x, _, exact = small_net
    est = slp.insens(f, probes=k, key=jax.random.key(0), return_stderr=True)
    keys = jax.random.split(jax.random.key(2), 300)
    out = jax.jit(jax.vmap(lambda kk: est(x, kk)))(keys)
    maps, se = np.asarray(out.map), np.asarray(out.stderr)
    covered = np.abs(maps - exact) <= 1.96 * se
    # Nominal 95%; the jackknife is conservative in expectation (Efron-Stein), the
    # estimator's tails are heavy at small k: at least 93% over 300 x 72 cases.
    assert covered.mean() >= 0.93
    # Not vacuous: the standard error is not wildly larger than the spread over keys.
    ratio = np.sqrt((se**2).mean(0).sum() / maps.var(0, ddof=1).sum())
    assert 0.9 < ratio < 2.0


def test_exact_by_default_bit_for_bit(small_net):
    f, x, _, exact = small_net
    plain = np.asarray(slp.insens(f)(x))
    explicit = np.asarray(slp.insens(f, probes=None, key=jax.random.key(5))(x))
    np.testing.assert_array_equal(plain, explicit)
    np.testing.assert_allclose(plain, exact, atol=1e-12)


def test_by_layer_estimate_sums_to_the_estimate(small_net):
    f, x, _, _ = small_net
    key = jax.random.key(4)
    layers = slp.insens(f, probes=10, key=key, by_layer=True)(x)
    whole = slp.insens(f, probes=10, key=key)(x)
    np.testing.assert_allclose(np.asarray(layers.total()), np.asarray(whole), rtol=1e-10)


@pytest.mark.parametrize("bad", [0, 2, -5, 2.5, True, "8"])
def test_too_few_probes_is_refused(bad):
    with pytest.raises(ValueError, match=r"probes must be an integer >= 3.*k - 2"):
        slp.insens(lambda x: x, probes=bad, key=jax.random.key(0))


def test_missing_key_is_refused():
    with pytest.raises(ValueError, match=r"pass a key.*jax\.random\.key"):
        slp.insens(lambda x: x, probes=8)


def test_stderr_needs_probes():
    with pytest.raises(ValueError, match="return_stderr needs probes=k"):
        slp.insens(lambda x: x, return_stderr=True)
    with pytest.raises(ValueError, match="probes >= 6"):
        slp.insens(lambda x: x, probes=5, key=jax.random.key(0), return_stderr=True)


# --- The plan's predicted time ---------------------------------------------------------------


def test_plan_predicts_seconds_from_work_and_measured_rate(small_net):
    from slp._src import costs, planner

    f, x, _, _ = small_net
    plan = slp.insens_plan(f, x)
    rate = plan.flop_rate
    assert rate > 1e6  # FLOP/s of a real matrix product, not a placeholder
    for cost in plan.costs.values():
        # Written out: the fitted seconds per unit of work, per-image work scaled by the
        # measured rate over the calibration machine's.
        speed = planner.device_speed(rate)
        want = sum(
            costs.COEFFICIENTS.get(k, 0.0) * (v if costs.is_per_call(k) else v / speed)
            for k, v in cost.work.items()
        )
        assert cost.seconds == pytest.approx(want)
    assert plan.cost == plan.costs[plan.route]
    assert "~" in str(plan)  # the printed plan shows the predicted time
    assert slp.insens_plan(f, x).flop_rate == rate  # measured once per process
    # The forward FLOPs, counted by hand: conv 6x6x2 -> 4 (3x3 SAME), relu, 2x2 pool,
    # conv 3x3x4 -> 6 (3x3 SAME), relu, dense 54 -> 12, relu, dense 12 -> 3.
    macs = 36 * 4 * 9 * 2 + 9 * 6 * 9 * 4 + 54 * 12 + 12 * 3
    # Plus one FLOP per element of the bias adds, ReLUs and pools (fewer than 1,000).
    assert 2 * macs <= plan.forward_flops <= 2 * macs + 1000
    est = plan.estimate_cost(64)
    assert est.flops == pytest.approx(67 * plan.forward_flops)
    assert est.seconds == pytest.approx(est.flops / rate)


@pytest.mark.slow
def test_imagenet_scale_smoke(tmp_path):
    mod = load_script("imagenet_scale.py")
    result = mod.main(["--smoke", "--out", str(tmp_path)])
    row = result["error"]["2conv-small"]["by_k"]
    assert set(row) == {"4", "8", "8+exact1"}
    assert all(0 < r["rel_l2_mean"] < 2 for r in row.values())
    assert result["time"]["2conv-small"]["estimate"]["6+stderr"]["x_forward"] > 1
    assert (tmp_path / "imagenet_scale.md").read_text().startswith("# Insens")
    assert (tmp_path / "imagenet_scale.png").stat().st_size > 0

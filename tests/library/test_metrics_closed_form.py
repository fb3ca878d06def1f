"""The Quantus-named metrics of slp.metrics on inputs whose scores are known in closed form.

A 2x2 map, a linear model ``w . x + b`` (beside a constant logit 0), hand-computed values;
the registry and `evaluate` (unknown options, bad shapes), and jit/vmap against the loop.
"""

from __future__ import annotations

import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

import slp
from slp import metrics

A = jnp.array([[1.0, -3.0], [0.0, 4.0]])
MASK = jnp.array([[True, False], [False, True]])
RAW = {"normalise": False}


def score(name, attribution=A, *, f=None, x=None, **kw):
    return float(metrics.evaluate(name, f, x, attribution, **kw))


# ------------------------------------------------------------------------------ registry


def test_registry_lists_every_group_and_names_are_quantus():
    names = metrics.available_metrics()
    assert len(names) == len(set(names))
    for name in names:
        spec = metrics.get_metric(name)
        assert spec.group in metrics.GROUPS
        assert spec.function.__name__ in metrics.__all__
        assert getattr(metrics, spec.function.__name__) is spec.function
        assert spec.reference
    assert set(metrics.available_metrics("complexity")) == {
        "Sparseness",
        "Complexity",
        "EffectiveComplexity",
    }


def test_the_documented_tables_match_the_registry():
    """The table of `slp.metrics`'s docstring and the metrics guide's: every metric, its
    group, direction and function as registered."""
    doc_rows = {}
    for line in metrics.__doc__.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] in metrics.available_metrics():
            doc_rows[parts[0]] = tuple(parts[1:4])
    guide = Path(__file__).resolve().parents[2] / "docs" / "guide" / "metrics.md"
    section = guide.read_text().split("## Evaluation metrics under Quantus's names\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    readme_rows = {}
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip("|").split("|")]
        if len(cells) >= 4 and cells[0] in metrics.available_metrics():
            readme_rows[cells[0]] = tuple(cells[1:4])
    for name in metrics.available_metrics():
        spec = metrics.get_metric(name)
        good = "higher" if spec.higher_is_better else "lower"
        assert doc_rows[name] == (spec.group, good, spec.function.__name__), name
        assert readme_rows[name] == (spec.group, good, spec.function.__name__), name


def test_unknown_metric_and_option_errors_list_what_exists():
    with pytest.raises(ValueError, match="unknown metric 'Sparsity'.*Sparseness"):
        metrics.evaluate("Sparsity", None, None, A)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['patch_size'\].*abs, normalise"):
        metrics.evaluate("Sparseness", None, None, A, patch_size=2)
    with pytest.raises(ValueError, match="unknown group"):
        metrics.available_metrics("fidelity")
    with pytest.raises(TypeError, match="Quantus's class name.*got function"):
        metrics.evaluate(lambda x: x, "Sparseness", None, A)  # the name second


# ---------------------------------------------------------------------------- complexity


def test_complexity_by_hand():
    # |A| = 1, 3, 0, 4 (sum 8), sorted 0, 1, 3, 4:
    # sum_i (2i - n - 1) a_(i) = -3*0 - 1*1 + 1*3 + 3*4 = 14; Gini = 14 / (n * sum) = 14 / 32.
    assert score("Sparseness", **RAW) == pytest.approx(14 / 32, abs=1e-6)
    p = np.array([1, 3, 0, 4]) / 8
    entropy = -np.sum(p * np.log(p + 1e-12))
    assert score("Complexity", **RAW) == pytest.approx(entropy, rel=1e-6)
    assert score("Complexity", normalise=True) == pytest.approx(entropy, rel=1e-6)
    assert score("EffectiveComplexity", eps=0.5, **RAW) == 3
    # normalised by the maximum 4: 0.25, 0.75, 0, 1
    assert score("EffectiveComplexity", eps=0.5) == 2
    # a uniform map: Gini 0, entropy log n
    assert score("Sparseness", jnp.ones((3, 3))) == pytest.approx(0.0, abs=1e-6)
    assert score("Complexity", jnp.ones((3, 3))) == pytest.approx(np.log(9), rel=1e-6)


# -------------------------------------------------------------------------- localisation


def test_localisation_by_hand():
    kw = {"mask": MASK, **RAW}
    assert score("RelevanceMassAccuracy", **kw) == pytest.approx(5 / 2)  # (1 + 4) / (1-3+0+4)
    assert score("RelevanceMassAccuracy", abs=True, **kw) == pytest.approx(5 / 8)
    assert float(metrics.mass_on_mask(A, MASK)) == pytest.approx(5 / 8)
    # the 2 highest entries (4, then 1) are both on the mask
    assert score("RelevanceRankAccuracy", **kw) == 1.0
    assert score("RelevanceRankAccuracy", A.at[0, 1].set(9), **kw) == 0.5
    assert score("TopKIntersection", k=1, **kw) == 1.0
    assert score("TopKIntersection", k=1, concept_influence=True, **kw) == 2.0  # * 4 / 2
    assert score("TopKIntersection", k=2, mask=~MASK, **RAW) == 0.0
    assert score("PointingGame", **kw) == 1.0
    assert score("PointingGame", weighted=True, **kw) == 0.5  # 1 - 2/4
    assert score("PointingGame", mask=~MASK, **RAW) == 0.0
    assert score("AttributionLocalisation", **kw) == pytest.approx(5 / 8)  # abs by default
    assert score("AttributionLocalisation", weighted=True, **kw) == pytest.approx(5 / 16)
    positive = score("AttributionLocalisation", positive_attributions=True, abs=False, **kw)
    assert positive == pytest.approx(5 / 5)
    # Focus: each pixel of a 2x2 map is a quadrant; positive mass 1, 0, 0, 4
    assert score("Focus", mask=jnp.array([1, 0, 0, 1]), **RAW) == pytest.approx(1.0)
    assert score("Focus", mask=jnp.array([1, 0, 0, 0]), **RAW) == pytest.approx(1 / 5)


def test_localisation_empty_mask_is_nan_and_channels_share_the_mask():
    empty = jnp.zeros((2, 2), bool)
    for name in (
        "RelevanceMassAccuracy",
        "RelevanceRankAccuracy",
        "PointingGame",
        "AttributionLocalisation",
    ):
        assert np.isnan(score(name, mask=empty)), name
    # an (H, W, C) map with an (H, W) mask: every channel of a masked pixel counts
    a3 = jnp.stack([A, 2 * A], axis=-1)
    assert score("RelevanceMassAccuracy", a3, mask=MASK, abs=True) == pytest.approx(5 / 8)


def test_localisation_bad_masks():
    with pytest.raises(ValueError, match="needs mask="):
        metrics.evaluate("PointingGame", None, None, A)
    with pytest.raises(ValueError, match=r"mask shaped \(3, 2\) does not fit"):
        metrics.evaluate("RelevanceRankAccuracy", None, None, A, mask=jnp.ones((3, 2), bool))
    with pytest.raises(ValueError, match="four quadrant flags"):
        metrics.evaluate("Focus", None, None, A, mask=MASK)
    with pytest.raises(ValueError, match="smaller than the map's 4 entries"):
        metrics.evaluate("TopKIntersection", None, None, A, mask=MASK)  # Quantus's k=1000


# -------------------------------------------------------------------------- faithfulness

X = jnp.array([[1.0, 2.0], [3.0, 4.0]])
W = jnp.array([[1.0, -1.0], [0.5, 2.0]])
SCORES = jnp.array([[3.0, 0.0], [1.0, 9.0]])  # order: (1,1), (0,0), (1,0), (0,1)
LOGITS = {"softmax": False, "normalise": False}


def linear(w=W, b=0.25):
    """Two logits: ``w . x + b`` and the constant 0."""

    def f(x):
        return jnp.stack([jnp.sum(w * x) + b, jnp.zeros((), x.dtype)])

    return f


def curve(name, attribution=SCORES, *, f=None, x=X, **kw):
    out = metrics.evaluate(name, linear() if f is None else f, x, attribution, target=0, **kw)
    return np.asarray(out)


def test_pixel_flipping_by_hand():
    # contributions w * x: 1, -2, 1.5, 8; f(x) = 8.75; removed (to 0) in the order of SCORES
    np.testing.assert_allclose(
        curve("PixelFlipping", perturb_baseline=0.0, **LOGITS), [0.75, -0.25, -1.75, 0.25]
    )
    np.testing.assert_allclose(
        curve("PixelFlipping", perturb_baseline=0.0, features_in_step=2, **LOGITS),
        [-0.25, 0.25],
    )
    # "black" is x's minimum, 1: removing pixel j adds w_j (1 - x_j)
    np.testing.assert_allclose(curve("PixelFlipping", **LOGITS), [2.75, 2.75, 1.75, 2.75])
    auc = curve("PixelFlipping", return_auc_per_sample=True, **LOGITS)
    assert float(auc) == pytest.approx((2.75 + 2 * 2.75 + 2 * 1.75 + 2.75) / 2)
    # softmax: the probability of logit 0 against the constant 0 is a sigmoid
    probs = curve("PixelFlipping", perturb_baseline=0.0, normalise=False)
    np.testing.assert_allclose(
        probs, 1 / (1 + np.exp(-np.array([0.75, -0.25, -1.75, 0.25]))), rtol=1e-6
    )


def test_faithfulness_estimate_and_correlation_by_hand():
    # one pixel at a time, in the order of SCORES: drops 8, 1, 1.5, -2, map 9, 3, 1, 0
    expected = np.corrcoef([9, 3, 1, 0], [8, 1, 1.5, -2])[0, 1]
    score_ = curve("FaithfulnessEstimate", perturb_baseline=0.0, **LOGITS)
    assert float(score_) == pytest.approx(expected, rel=1e-6)
    # a map equal to the contributions: every subset's sum is exactly its drop
    contributions = W * X
    corr = curve(
        "FaithfulnessCorrelation",
        contributions,
        perturb_baseline=0.0,
        nr_runs=20,
        subset_size=2,
        key=jax.random.key(0),
        **LOGITS,
    )
    assert float(corr) == pytest.approx(1.0, abs=1e-6)
    anti = curve(
        "FaithfulnessCorrelation",
        -contributions,
        perturb_baseline=0.0,
        nr_runs=20,
        subset_size=2,
        key=jax.random.key(0),
        **LOGITS,
    )
    assert float(anti) == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("n, size", [(10, 3), (50, 49), (784, 1), (784, 224), (1500, 700)])
def test_random_subset_is_jax_random_choice(n, size):
    # the reference: jax's own draw without replacement, one key at a time
    keys = jax.random.split(jax.random.key(11), 300)
    got = jax.vmap(lambda k: metrics._common.random_subset(k, n, size))(keys)
    for k, mask in zip(keys[:60], np.asarray(got)[:60], strict=True):
        want = np.zeros(n, bool)
        want[np.asarray(jax.random.choice(k, n, (size,), False))] = True
        np.testing.assert_array_equal(mask, want)
    assert (np.asarray(got).sum(1) == size).all()


def test_smallest_breaks_ties_by_index_like_a_stable_sort():
    rng = np.random.default_rng(0)
    for size in (1, 5, 17, 39):
        keys = rng.integers(0, 4, 40).astype(np.uint32)  # many ties
        want = np.zeros(40, bool)
        want[np.argsort(keys, kind="stable")[:size]] = True
        got = metrics._common.smallest(jnp.asarray(keys), size)
        np.testing.assert_array_equal(np.asarray(got), want)


def test_monotonicity_by_hand():
    # restoring pixels from the baseline 0 adds w_j x_j at each step; the output after the
    # first step is the first one compared (Quantus's convention)
    positive_w = jnp.abs(W)
    for attribution in (SCORES, -SCORES):
        assert bool(curve("Monotonicity", attribution, f=linear(positive_w), **LOGITS))
        # Quantus 0.6.0's walk never restores anything
        assert bool(curve("Monotonicity", attribution, insert_baseline=True, **LOGITS))
    signed = {"perturb_baseline": 0.0, "abs": False, **LOGITS}
    # increasing SCORES restores -2 (first), 1.5, 1, 8: never falls after the first step
    assert bool(curve("Monotonicity", SCORES, **signed))
    # increasing -SCORES restores 8 (first), 1, 1.5, -2: falls at the end
    assert not bool(curve("Monotonicity", -SCORES, **signed))

    def relu(x):
        return jnp.stack([jax.nn.relu(jnp.sum(W * x) - 5.0), jnp.zeros(())])

    # ascending contributions -2, 1, 1.5, 8: outputs 0, 0, 0, 3.5; descending: 3, 4.5, 5.5, 3.5
    assert bool(curve("Monotonicity", W * X, f=relu, **signed))
    assert not bool(curve("Monotonicity", -W * X, f=relu, **signed))


def test_region_perturbation_and_selectivity_by_hand():
    base = {"perturb_baseline": 0.0, **LOGITS}
    # patches of one pixel: cumulative drops 8, 8+1, 8+1+1.5, 8+1+1.5-2
    np.testing.assert_allclose(curve("RegionPerturbation", patch_size=1, **base), [8, 9, 10.5, 8.5])
    np.testing.assert_allclose(
        curve("RegionPerturbation", patch_size=1, order="lerf", regions_evaluation=2, **base),
        [-2, -0.5],
    )
    np.testing.assert_allclose(curve("RegionPerturbation", patch_size=2, **base), [8.5])
    np.testing.assert_allclose(
        curve("Selectivity", patch_size=1, **base), [0.75, -0.25, -1.75, 0.25]
    )
    # a 3x3 image in patches of 2: padded by one row and column after, patches
    # {(0..1, 0..1)}, {(0..1, 2)}, {(2, 0..1)}, {(2, 2)}; the two patches of sum 0 tie and
    # keep patch order
    x3 = jnp.arange(1.0, 10.0).reshape(3, 3)
    f3 = linear(jnp.ones((3, 3)), 0.0)
    a3 = jnp.array([[0.0, 0.0, 5.0], [0.0, 0.0, 5.0], [1.0, 1.0, 0.0]])
    np.testing.assert_allclose(
        curve("RegionPerturbation", a3, f=f3, x=x3, patch_size=2, **base),
        [3 + 6, 9 + 7 + 8, 24 + 1 + 2 + 4 + 5, 45],
    )


def test_noisy_linear_imputation_by_hand():
    # one pixel: the weighted mean of its neighbours inside the image,
    # (2/6 + 3/6 + 1/12) / (1/6 + 1/6 + 1/12) = 11/5
    one = metrics.noisy_linear_imputation(X, jnp.array([[False, False], [False, True]]), noise=0.0)
    np.testing.assert_allclose(one, [[1, 2], [3, 2.2]], rtol=1e-6)
    # two pixels that see each other: u = (5/6 + u/12) / (5/12), u = 2.5
    two = metrics.noisy_linear_imputation(X, jnp.array([[True, False], [False, True]]), noise=0.0)
    np.testing.assert_allclose(two, [[2.5, 2], [3, 2.5]], rtol=1e-6)
    noisy = metrics.noisy_linear_imputation(
        X, jnp.array([[True, False], [False, True]]), key=jax.random.key(0), noise=0.1
    )
    assert np.all(np.asarray(noisy)[[0, 1], [1, 0]] == [2, 3])
    assert not np.allclose(noisy, two)


def test_road_by_hand():
    # 25%: pixel (1,1) imputed to 2.2: f = 8.75 - 8 + 2 * 2.2 > 0, class 0 kept;
    # 50%: (1,1) and (0,0) both 2.5: 0.25 + 2.5 - 2 + 1.5 + 5 > 0, kept
    kept = curve("ROAD", percentages=(25, 50), noise=0.0, normalise=False)
    np.testing.assert_array_equal(kept, [1, 1])
    # a bias that flips the class once the big contribution is imputed away
    # f(x) - b = 8.5, 4.9 and 7 at 0, 25 and 50%
    flips = metrics.road(linear(W, -6.0), X, SCORES, target=0, percentages=(0, 25, 50), noise=0.0)
    np.testing.assert_array_equal(flips, [1, 0, 1])


def test_faithfulness_bad_input():
    f = linear()
    with pytest.raises(ValueError, match=r"attribution shaped \(3, 2\) does not fit x shaped"):
        metrics.evaluate("PixelFlipping", f, X, jnp.ones((3, 2)))
    with pytest.raises(ValueError, match="features_in_step=3 must divide"):
        metrics.evaluate("PixelFlipping", f, X, SCORES, features_in_step=3)
    with pytest.raises(ValueError, match="perturb_baseline 'grey'"):
        metrics.evaluate("PixelFlipping", f, X, SCORES, perturb_baseline="grey")
    with pytest.raises(ValueError, match="pass key="):
        metrics.evaluate("FaithfulnessCorrelation", f, X, SCORES, subset_size=2)
    with pytest.raises(ValueError, match="subset_size must be smaller"):
        metrics.evaluate("FaithfulnessCorrelation", f, X, SCORES, key=jax.random.key(0))
    with pytest.raises(ValueError, match="order must be"):
        metrics.evaluate("RegionPerturbation", f, X, SCORES, patch_size=1, order="best")
    with pytest.raises(ValueError, match="larger than the image"):
        metrics.evaluate("Selectivity", f, X, SCORES)  # Quantus's patch_size=8
    with pytest.raises(ValueError, match="ROAD ranks pixels"):
        rgb = linear(jnp.ones((2, 2, 3)), 0.0)
        metrics.evaluate("ROAD", rgb, jnp.ones((2, 2, 3)), jnp.ones((2, 2, 3)), noise=0.0)


# ---------------------------------------------------------------------------- robustness

ONES = 0.5 * jnp.ones((2, 2))  # a linear model whose gradient x input is 0.5 x


def _noise(key, nr, low, high, shape=(2, 2)):
    """The documented draws: sample i from ``jax.random.split(key, nr)[i]``."""
    return [
        np.asarray(jax.random.uniform(k, shape, jnp.float32, low, high))
        for k in jax.random.split(key, nr)
    ]


def test_robustness_by_hand():
    key, nr = jax.random.key(3), 5
    f = linear(ONES, 0.0)
    kw = {"target": 0, "key": key, "nr_samples": nr}
    # the gradient of a linear model does not move at all
    for name in ("MaxSensitivity", "AvgSensitivity", "LocalLipschitzEstimate"):
        assert float(metrics.evaluate(name, f, X, ONES, **kw)) == pytest.approx(0.0, abs=1e-7)
    # gradient x input moves by 0.5 n_i: ||0.5 n_i|| / ||0.5 x||
    rel = [np.linalg.norm(n) / np.linalg.norm(X) for n in _noise(key, nr, -0.2, 0.2)]
    gxi = {"method": "gradient_x_input", **kw}
    assert float(metrics.evaluate("MaxSensitivity", f, X, ONES * X, **gxi)) == pytest.approx(
        max(rel), rel=1e-5
    )
    assert float(metrics.evaluate("AvgSensitivity", f, X, ONES * X, **gxi)) == pytest.approx(
        np.mean(rel), rel=1e-5
    )
    # ||0.5 n|| / ||n|| = 0.5 for every noise
    lle = metrics.evaluate("LocalLipschitzEstimate", f, X, ONES * X, normalise=False, **gxi)
    assert float(lle) == pytest.approx(0.5, rel=1e-5)
    # (a - a_i) / a = -n / x = (x - x_i) / x: relative input stability 1
    ris = metrics.evaluate("RelativeInputStability", f, X, ONES * X, **gxi)
    assert float(ris) == pytest.approx(1.0, rel=1e-4)


def test_robustness_nan_when_the_prediction_changes():
    # logit 0 is w . x, logit 1 a threshold just below it: any noise can flip the class
    def f(x):
        return jnp.stack([jnp.sum(x), jnp.sum(X) - 1e-3])

    kw = {"target": 0, "key": jax.random.key(0), "nr_samples": 8}
    assert np.isnan(
        metrics.evaluate(
            "MaxSensitivity", f, X, ONES, **kw, return_nan_when_prediction_changes=True
        )
    )
    assert np.isfinite(metrics.evaluate("MaxSensitivity", f, X, ONES, **kw))

    # its noise is positive: a class below the threshold at x flips to 0 for every copy
    def g(x):
        return jnp.stack([jnp.sum(x), jnp.sum(X) + 1e-3])

    assert np.isnan(metrics.evaluate("RelativeInputStability", g, X, ONES, **kw))


def test_robustness_bad_input():
    f = linear()
    with pytest.raises(ValueError, match="pass key="):
        metrics.evaluate("MaxSensitivity", f, X, SCORES)
    with pytest.raises(ValueError, match="unknown attribution method 'saliency'"):
        metrics.evaluate("MaxSensitivity", f, X, SCORES, key=jax.random.key(0), method="saliency")
    with pytest.raises(ValueError, match="upper_bound > lower_bound"):
        metrics.evaluate("AvgSensitivity", f, X, SCORES, key=jax.random.key(0), upper_bound=0.1)
    with pytest.raises(TypeError, match=r"key must be a PRNG key, jax.random.key\(3\)"):
        metrics.evaluate("MaxSensitivity", f, X, SCORES, key=3)
    with pytest.raises(TypeError, match="got the string 'insens'; .* method='insens'"):
        metrics.evaluate("MaxSensitivity", f, X, SCORES, key=jax.random.key(0), explain="insens")
    rgb = linear(jnp.ones((2, 2, 3)), 0.0)
    with pytest.raises(ValueError, match="maps explain returns are shaped"):
        metrics.evaluate(
            "MaxSensitivity", rgb, jnp.ones((2, 2, 3)), SCORES, key=jax.random.key(0), nr_samples=2
        )


# ------------------------------------------------------------------------- randomisation


def _dense(w, b):
    return {"params": {"Dense_0": {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}}}


def _dense_fn(params, x):
    p = params["params"]["Dense_0"]
    return jnp.ravel(x) @ p["kernel"] + p["bias"]


def test_random_logit_by_hand():
    # two classes: the other class is always the one not explained
    w = np.random.default_rng(1).normal(size=(9, 2))
    x = np.random.default_rng(2).uniform(size=(3, 3))
    f = functools.partial(_dense_fn, _dense(w, np.zeros(2)))
    kw = {"target": 0, "key": jax.random.key(0), "num_classes": 2, "normalise": False}
    own = w[:, 0].reshape(3, 3)
    score_ = metrics.evaluate("RandomLogit", f, x, own, **kw)
    assert float(score_) == pytest.approx(float(metrics.ssim(own, w[:, 1])), rel=1e-6)
    # a map that ignores the class (Insens's) is as similar as can be
    same = metrics.evaluate("RandomLogit", f, x, own, explain=lambda f, x, t, k: own, **kw)
    assert float(same) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="num_classes must be between 2 and the 2 logits"):
        metrics.evaluate("RandomLogit", f, x, own, key=jax.random.key(0))  # Quantus's 1000


def test_parameter_randomisation_by_hand():
    # one dense layer: the gradient map of class 0 is the kernel's column 0
    rng = np.random.default_rng(3)
    w, w_random = rng.normal(size=(9, 2)), rng.normal(size=(9, 2))
    params, fresh = _dense(w, np.zeros(2)), _dense(w_random, np.ones(2))
    x = rng.uniform(size=(3, 3))
    own = w[:, 0].reshape(3, 3)
    kw = {"target": 0, "params": params, "random_params": fresh}
    rho = scipy.stats.spearmanr(np.abs(w[:, 0]), np.abs(w_random[:, 0])).statistic
    np.testing.assert_allclose(
        metrics.evaluate("MPRT", _dense_fn, x, own, **kw), [1, rho], rtol=1e-5
    )
    last = metrics.evaluate("MPRT", _dense_fn, x, own, return_last_correlation=True, **kw)
    assert float(last) == pytest.approx(rho, rel=1e-5)
    # the gradient of a linear network ignores the noise: SmoothMPRT is MPRT
    smooth = metrics.evaluate(
        "SmoothMPRT", _dense_fn, x, own, key=jax.random.key(0), nr_samples=3, **kw
    )
    np.testing.assert_allclose(smooth, [1, rho], rtol=1e-5)

    def entropy(v):
        counts, _ = np.histogram(v, bins=100)
        return scipy.stats.entropy(counts)

    expected = (entropy(w_random[:, 0]) - entropy(w[:, 0])) / entropy(w[:, 0])
    eff = metrics.evaluate("EfficientMPRT", _dense_fn, x, own, **kw)
    assert float(eff) == pytest.approx(expected, rel=1e-5)


def test_parameter_randomisation_bad_input():
    params = _dense(np.ones((9, 2)), np.zeros(2))
    x, own = np.ones((3, 3)), np.ones((3, 3))
    with pytest.raises(ValueError, match="need params="):
        metrics.evaluate("MPRT", _dense_fn, x, own)
    with pytest.raises(ValueError, match="layer_order must be one of"):
        metrics.evaluate(
            "MPRT", _dense_fn, x, own, params=params, random_params=params, layer_order="sideways"
        )
    with pytest.raises(ValueError, match="exclude each other"):
        metrics.evaluate(
            "MPRT",
            _dense_fn,
            x,
            own,
            params=params,
            random_params=params,
            return_average_correlation=True,
            return_last_correlation=True,
        )
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['seed'\]"):
        metrics.evaluate("MPRT", _dense_fn, x, own, params=params, random_params=params, seed=42)


# ----------------------------------------------------------------------------- axiomatic


def test_completeness_by_hand():
    f = linear(W, 0.0)
    kw = {"target": 0, "perturb_baseline": 0.0, "normalise": False}
    # gradient x input of a linear model without bias sums to f(x) - f(0), in exact numbers
    assert bool(metrics.evaluate("Completeness", f, X, W * X, **kw))
    assert bool(metrics.evaluate("Completeness", f, X, W * X + 0.001, rtol=1e-3, **kw))
    assert not bool(metrics.evaluate("Completeness", f, X, W * X + 0.001, **kw))
    assert not bool(
        metrics.evaluate(
            "Completeness",
            f,
            X,
            W * X,
            normalise=True,
            **{k: v for k, v in kw.items() if k != "normalise"},
        )
    )


def test_non_sensitivity_by_hand():
    w = jnp.array([[1.0, 0.0], [2.0, -1.0]])  # the output ignores pixel (0, 1)
    f = linear(w, 0.0)
    kw = {"target": 0, "perturb_baseline": 0.0, "softmax": False}
    # |w| / 2 = 0.5, 0, 1, 0.5: attribution exactly where the output moves
    assert int(metrics.evaluate("NonSensitivity", f, X, w, **kw)) == 0
    assert int(metrics.evaluate("NonSensitivity", f, X, jnp.ones((2, 2)), **kw)) == 1
    assert int(metrics.evaluate("NonSensitivity", f, X, jnp.array([[1.0, 1], [0, 1]]), **kw)) == 2
    # in pairs: the first pair moves, so pixel (0, 1)'s zero attribution is a violation
    assert int(metrics.evaluate("NonSensitivity", f, X, w, features_in_step=2, **kw)) == 1


def _relu_net():
    rng = np.random.default_rng(4)
    w1, b1 = jnp.asarray(rng.normal(size=(4, 6))), jnp.asarray(rng.normal(size=6))
    w2 = jnp.asarray(rng.normal(size=(6, 3)))

    def f(x):
        return jax.nn.relu(jnp.ravel(x) @ w1 + b1) @ w2

    return f


def test_input_invariance_by_hand():
    f = linear(W, 0.25)
    assert bool(metrics.evaluate("InputInvariance", f, X, W, target=0))
    assert not bool(
        metrics.evaluate("InputInvariance", f, X, W * X, target=0, method="gradient_x_input")
    )
    # Insens: the shift changes no activity and no switched weight
    g = _relu_net()
    omega = slp.attribute(g, X, "insens")
    assert bool(metrics.evaluate("InputInvariance", g, X, omega, method="insens", input_shift=3.0))


# ------------------------------------------------------------- jit and vmap against a loop

_RNG = np.random.default_rng(7)
_K0, _B0 = _RNG.normal(size=(16, 8)), _RNG.normal(size=8) * 0.1
_K1, _B1 = _RNG.normal(size=(8, 3)), _RNG.normal(size=3) * 0.1
TRAINED = {
    "params": {"Dense_0": {"kernel": _K0, "bias": _B0}, "Dense_1": {"kernel": _K1, "bias": _B1}}
}
FRESH = jax.tree.map(lambda p: _RNG.normal(size=p.shape), TRAINED)


def mlp_fn(params, x):
    p = params["params"]
    h = jax.nn.relu(jnp.ravel(x) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


MLP = functools.partial(mlp_fn, TRAINED)
RANDOMISATION = {"params": TRAINED, "random_params": FRESH}
SMALL = {
    "PixelFlipping": {"features_in_step": 2},
    "FaithfulnessCorrelation": {"nr_runs": 6, "subset_size": 5},
    "FaithfulnessEstimate": {"features_in_step": 4},
    "Monotonicity": {"features_in_step": 4},
    "RegionPerturbation": {"patch_size": 2, "order": "random"},
    "Selectivity": {"patch_size": 3},
    "ROAD": {"percentages": (20, 60)},
    "MaxSensitivity": {"nr_samples": 4},
    "AvgSensitivity": {"nr_samples": 4},
    "LocalLipschitzEstimate": {"nr_samples": 4},
    "RelativeInputStability": {"nr_samples": 4},
    "RandomLogit": {"num_classes": 3},
    "MPRT": RANDOMISATION,
    "SmoothMPRT": {"nr_samples": 3, **RANDOMISATION},
    "EfficientMPRT": {"n_bins": 10, **RANDOMISATION},
    "TopKIntersection": {"k": 5},
}


@pytest.mark.parametrize("name", metrics.available_metrics())
def test_jit_vmap_equal_the_loop(name):
    """``jax.jit(jax.vmap(...))`` over x, attribution, target, mask and key gives, for every
    metric, what one call per example gives."""
    spec = metrics.get_metric(name)
    n = 3
    x = jnp.asarray(_RNG.uniform(size=(n, 4, 4, 1)), jnp.float32)
    a = jnp.asarray(_RNG.normal(size=(n, 4, 4)), jnp.float32)
    t = jnp.array([0, 2, 1])
    masks = jnp.asarray(_RNG.uniform(size=(n, 4, 4)) > 0.5)
    if name == "Focus":
        masks = jnp.array([[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 0, 0]])
    keys = jax.random.split(jax.random.key(1), n)
    f = mlp_fn if "params" in spec.options else MLP
    opts = SMALL.get(name, {})

    def one(x, a, t, m, k):
        return metrics.evaluate(name, f, x, a, target=t, mask=m, key=k, **opts)

    batched = jax.jit(jax.vmap(one))(x, a, t, masks, keys)
    loop = [one(x[i], a[i], int(t[i]), masks[i], keys[i]) for i in range(n)]
    np.testing.assert_allclose(
        np.asarray(batched, float), np.asarray(loop, float), rtol=2e-5, atol=1e-6
    )


def test_jit_of_evaluate_with_static_options_compiles_once():
    traces = []  # one entry per trace: a second call with new arrays must not trace again

    def traced(name, f, x, a, **kw):
        traces.append(name)
        return metrics.evaluate(name, f, x, a, **kw)

    fn = jax.jit(traced, static_argnames=("name", "f", "features_in_step", "softmax"))
    x = jnp.asarray(_RNG.uniform(size=(4, 4, 1)), jnp.float32)
    a = jnp.asarray(_RNG.normal(size=(4, 4)), jnp.float32)
    kw = {"target": 1, "features_in_step": 2, "softmax": False}
    first = fn("PixelFlipping", MLP, x, a, **kw)
    np.testing.assert_allclose(first, metrics.pixel_flipping(MLP, x, a, **kw), rtol=1e-6)
    fn("PixelFlipping", MLP, x + 1, -a, **kw)
    assert traces == ["PixelFlipping"]


TAKE_TARGET = [
    n for n in metrics.available_metrics() if "target" in metrics.get_metric(n).per_example
]


@pytest.mark.parametrize("name", TAKE_TARGET)
def test_a_target_out_of_range_raises_or_gives_nan(name):
    """A concrete class index past the 3 logits raises the ValueError that names it; a traced
    one (vmap over targets) gives NaN for that example and the in-range example's score."""
    spec = metrics.get_metric(name)
    x = jnp.asarray(_RNG.uniform(size=(2, 4, 4, 1)), jnp.float32)
    a = jnp.asarray(_RNG.normal(size=(2, 4, 4)), jnp.float32)
    keys = jax.random.split(jax.random.key(2), 2)
    f = mlp_fn if "params" in spec.options else MLP
    opts = SMALL.get(name, {})

    def one(x, a, t, k):
        return metrics.evaluate(name, f, x, a, target=t, key=k, **opts)

    with pytest.raises(ValueError, match="target 3 is out of range"):
        jax.jit(one, static_argnums=2)(x[1], a[1], 3, keys[1])
    batched = jax.jit(jax.vmap(one))(x, a, jnp.array([1, 3]), keys)
    alone = jax.jit(one, static_argnums=2)(x[0], a[0], 1, keys[0])  # a concrete target
    np.testing.assert_allclose(np.asarray(batched[0], float), np.asarray(alone, float), rtol=2e-5)
    assert np.all(np.isnan(np.asarray(batched[1], float)))


@pytest.mark.parametrize("bad", [jnp.nan, jnp.inf])
def test_a_map_with_a_non_finite_entry_raises_or_gives_nan(bad):
    """A concrete map with a NaN or inf entry raises; a traced one (under jit or vmap) gives
    a NaN score for that example, bool scores included, and the others' scores unchanged."""
    x = jnp.asarray(_RNG.uniform(size=(2, 4, 4, 1)), jnp.float32)
    a = jnp.asarray(_RNG.normal(size=(2, 4, 4)), jnp.float32)
    broken = a[1].at[2, 3].set(bad)
    for name, f, opts in [
        ("Sparseness", None, {}),
        ("PointingGame", None, {"mask": MASK.repeat(2, 0).repeat(2, 1)}),
        ("PixelFlipping", MLP, {"features_in_step": 2}),
        ("Monotonicity", MLP, {"features_in_step": 4}),  # a bool score
    ]:
        with pytest.raises(ValueError, match="1 NaN or inf entry of 16"):
            metrics.evaluate(name, f, x[1], broken, **opts)

        def one(x, a, name=name, f=f, opts=opts):
            return metrics.evaluate(name, f, x, a, **opts)

        batched = np.asarray(jax.jit(jax.vmap(one))(x, jnp.stack([a[0], broken])), float)
        assert np.all(np.isnan(batched[1])), name
        np.testing.assert_allclose(batched[0], np.asarray(one(x[0], a[0]), float), rtol=2e-5)


def test_the_guards_read_arguments_given_by_name():
    """``f``, ``x`` and ``attribution`` by keyword: the target and map checks still run."""
    x = jnp.asarray(_RNG.uniform(size=(4, 4, 1)), jnp.float32)
    a = jnp.asarray(_RNG.normal(size=(4, 4)), jnp.float32)

    def one(t, a):
        return metrics.pixel_flipping(f=MLP, x=x, attribution=a, target=t, features_in_step=4)

    got = np.asarray(jax.vmap(one)(jnp.array([1, 3, 1]), jnp.stack([a, a, a.at[0, 0].set(np.nan)])))
    np.testing.assert_allclose(got[0], one(1, a), rtol=1e-6)
    assert np.all(np.isnan(got[1:]))
    with pytest.raises(ValueError, match="NaN or inf"):
        metrics.sparseness(attribution=a.at[1, 1].set(np.inf))

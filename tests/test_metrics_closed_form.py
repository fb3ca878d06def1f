"""The Quantus-named metrics of slp.metrics on inputs whose scores are known in closed form.

A 2x2 map, a linear model ``w . x + b`` (beside a constant logit 0), hand-computed values;
the registry and `evaluate` (unknown options, bad shapes), and jit/vmap against the loop.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

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


def test_unknown_metric_and_option_errors_list_what_exists():
    with pytest.raises(ValueError, match="unknown metric 'Sparsity'.*Sparseness"):
        metrics.evaluate("Sparsity", None, None, A)
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['patch_size'\].*abs, normalise"):
        metrics.evaluate("Sparseness", None, None, A, patch_size=2)
    with pytest.raises(ValueError, match="unknown group"):
        metrics.available_metrics("fidelity")


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

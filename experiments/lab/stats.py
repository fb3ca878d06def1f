"""Intervals, paired tests and top groups for scores of several methods on several networks.

The experiments score every method on the same test images with networks trained from
several seeds: a method's scores are an array ``(S, N)``, seed by image, NaN where its map
is undefined. Two sources of spread matter: which network training produced and which
images were drawn, and the images are the same for every seed (a crossed design). The
intervals here treat both as random, in the **two-way random-effects model**
``score[s, i] = mu + a_s + b_i + e_si`` (seed effect a, image effect b, interaction e):
the grand mean's variance is ``(MS_seed + MS_image - MS_error) / (S N)`` from the usual
mean squares (Cornfield & Tukey 1956), with Satterthwaite's (1946) degrees of freedom, and
the interval is the mean ± t × standard error. Two methods are compared **paired**, on the
per-image differences of their scores in the same model. With one seed this is the paired
t-test over images (the network held fixed).

Why not a bootstrap: on synthetic scores with 5 seeds
(tests/experiments/test_lab_stats.py), a two-level bootstrap (seeds, then images) rejected
a true null 9-15% of the time at a nominal 5%, and a t-test over per-seed means 13% when
images also differ; this model stayed at 5-6% in every regime tried.

- `interval`: a method's mean score and its 95% interval.
- `compare`: the paired mean difference of two methods, its interval and two-sided p-value.
- `holm`: Holm's (1979) step-down adjustment of several p-values.
- `top_group`: the best method by mean and every method that the paired tests against it,
  Holm-adjusted, cannot separate from it at level ``alpha``.

Only images defined in every seed (for every compared method) are used, and the counts are
reported with each result.

No jax: NumPy and SciPy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import stats as _sps

__all__ = [
    "Interval",
    "Comparison",
    "TopGroup",
    "complete_images",
    "interval",
    "compare",
    "holm",
    "top_group",
]


class Interval(NamedTuple):
    """A mean with its 95% interval in the two-way random-effects model.

    Attributes:
      mean: mean over seeds and images.
      ci95: ``(low, high)``: mean ± t(0.975, df) × se.
      se: its standard error.
      df: Satterthwaite's degrees of freedom (``N - 1`` with one seed).
      n_seeds: seeds.
      n_images: images used (defined in every seed).
    """

    mean: float
    ci95: tuple[float, float]
    se: float
    df: float
    n_seeds: int
    n_images: int


class Comparison(NamedTuple):
    """Method a minus method b, paired on the same seeds and images.

    Attributes:
      difference: an `Interval` of the mean difference a - b.
      p_value: two-sided p-value of "no mean difference".
    """

    difference: Interval
    p_value: float


class TopGroup(NamedTuple):
    """Methods that paired tests cannot separate from the best.

    Attributes:
      best: the method with the best mean.
      members: the best and every method whose Holm-adjusted p-value against it is at least
        ``alpha``, in order of their means (best first).
      means: per method, its mean on the images every method is defined on.
      comparisons: per other method, its `Comparison` with the best (method - best).
      adjusted: per other method, the Holm-adjusted p-value.
      n_images: images used (defined for every method in every seed).
    """

    best: str
    members: tuple[str, ...]
    means: dict[str, float]
    comparisons: dict[str, Comparison]
    adjusted: dict[str, float]
    n_images: int


def _as_scores(scores) -> np.ndarray:
    a = np.asarray(scores, np.float64)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"scores must be (seeds, images) or (images,); got shape {a.shape}")
    return a


def complete_images(*scores) -> np.ndarray:
    """Bool ``(N,)``: the images where every one of the ``(S, N)`` arrays is finite in every
    seed."""
    arrays = [_as_scores(s) for s in scores]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"score arrays of different shapes: {sorted(shapes)}")
    return np.logical_and.reduce([np.isfinite(a).all(axis=0) for a in arrays])


def _model(a: np.ndarray) -> Interval:
    """Mean, standard error and interval of complete scores ``(S, N)`` (module docstring)."""
    s, n = a.shape
    if n < 2:
        raise ValueError(f"an interval needs at least 2 images defined in every seed; got {n}")
    grand = float(a.mean())
    cols = a.mean(axis=0)
    ms_image = s * float(np.sum((cols - grand) ** 2)) / (n - 1)
    if s == 1:
        var, df = ms_image / n, float(n - 1)
    else:
        rows = a.mean(axis=1)
        ms_seed = n * float(np.sum((rows - grand) ** 2)) / (s - 1)
        resid = a - rows[:, None] - cols[None, :] + grand
        ms_error = float(np.sum(resid**2)) / ((s - 1) * (n - 1))
        combined = ms_seed + ms_image - ms_error
        # a negative variance estimate (sampling noise) is floored at the error term's
        combined = max(combined, ms_error)
        var = combined / (s * n)
        terms = ((ms_seed, s - 1), (ms_image, n - 1), (ms_error, (s - 1) * (n - 1)))
        denom = sum(m**2 / k for m, k in terms)
        df = combined**2 / denom if denom > 0 else float(s * n - 1)
    se = float(np.sqrt(var))
    half = float(_sps.t.ppf(0.975, df)) * se
    return Interval(grand, (grand - half, grand + half), se, float(df), s, n)


def interval(scores) -> Interval:
    """A method's mean score over seeds and images ``(S, N)`` and its 95% interval.

    Images undefined (NaN) in any seed are left out.

    Raises:
      ValueError: fewer than 2 images defined in every seed.
    """
    a = _as_scores(scores)
    return _model(a[:, complete_images(a)])


def compare(a, b, *, images: np.ndarray | None = None) -> Comparison:
    """Paired comparison of two methods' scores ``(S, N)`` on the same seeds and images.

    Args:
      a, b: the two methods' scores.
      images: bool ``(N,)``, the images to use (default: `complete_images` of both).

    Returns:
      The `Comparison` of a - b.
    """
    a, b = _as_scores(a), _as_scores(b)
    keep = complete_images(a, b) if images is None else np.asarray(images, bool)
    diff = _model((a - b)[:, keep])
    if diff.se == 0.0:
        p = 1.0 if diff.mean == 0.0 else 0.0
    else:
        p = float(2.0 * _sps.t.sf(abs(diff.mean) / diff.se, diff.df))
    return Comparison(diff, p)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (same order as given).

    The k-th smallest of m p-values is multiplied by ``m - k + 1`` (k from 1), the results
    are made non-decreasing in that order and capped at 1. Rejecting where the adjusted
    value is below alpha controls the family-wise error rate at alpha.
    """
    p = np.asarray(p_values, np.float64)
    if p.ndim != 1 or np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must be a vector of numbers in [0, 1]; got {p_values}")
    m = p.size
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(stepped, 1.0)
    return out


def top_group(
    scores: Mapping[str, Any], *, higher_is_better: bool, alpha: float = 0.05
) -> TopGroup:
    """The best method and those that paired, Holm-corrected tests cannot separate from it.

    Every method is compared on the images where all of them are defined in every seed.

    Args:
      scores: method name -> scores ``(S, N)``, all of one shape.
      higher_is_better: whether a larger score is better.
      alpha: the family-wise error rate of the tests against the best.

    Returns:
      The `TopGroup`.
    """
    names = list(scores)
    if len(names) < 2:
        raise ValueError("a top group needs at least two methods")
    keep = complete_images(*scores.values())
    if keep.sum() < 2:
        raise ValueError("fewer than 2 images where every method is defined in every seed")
    means = {n: float(_as_scores(scores[n])[:, keep].mean()) for n in names}
    sign = 1.0 if higher_is_better else -1.0
    ranked = sorted(names, key=lambda n: -sign * means[n])
    best, others = ranked[0], ranked[1:]
    comparisons = {n: compare(scores[n], scores[best], images=keep) for n in others}
    adjusted = holm([comparisons[n].p_value for n in others])
    adjusted_by = {n: float(v) for n, v in zip(others, adjusted, strict=True)}
    members = (best, *[n for n in others if adjusted_by[n] >= alpha])
    return TopGroup(best, members, means, comparisons, adjusted_by, int(keep.sum()))

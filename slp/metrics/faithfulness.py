"""Faithfulness: does removing what a map calls important change the network's output?

Each metric perturbs the input (features set to a baseline value, or imputed) in an order
or in subsets the map chooses, and follows the target's output (``softmax`` chooses the
probability or the logit). Features are counted in Quantus's channel-first layout (see
`slp.metrics`); ties in the map keep that order.

``perturb_baseline`` is the value a removed feature takes: ``"black"`` (the input's
minimum), ``"white"`` (its maximum), ``"mean"`` or a number, always computed on the input
``x``. (Quantus 0.6.0 computes it on the image as perturbed so far in its cumulative
metrics, PixelFlipping, RegionPerturbation and Selectivity: the same value for
``"black"``, ``"white"`` and numbers, a drifting one for ``"mean"``.)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from slp.metrics._common import (
    as_input,
    baseline_value,
    flat,
    map_steps,
    normalise_by_max,
    positive,
    prepare,
    random_subset,
    rank,
    require_key,
    score_function,
    unflat,
)
from slp.metrics.registry import metric
from slp.metrics.similarity import pearson

__all__ = [
    "pixel_flipping",
    "faithfulness_correlation",
    "faithfulness_estimate",
    "monotonicity",
    "region_perturbation",
    "selectivity",
    "road",
    "noisy_linear_imputation",
]


def _features(f, x, attribution, target, *, softmax, abs, normalise, normalise_func):
    """``(x, t, score, a)``: the input, target, scoring function and the prepared map
    broadcast to ``x`` and flattened channel-first."""
    x = as_input(x)
    t, score = score_function(f, x, target, softmax=softmax)
    a = prepare(attribution, x, abs=abs, normalise=normalise, normalise_func=normalise_func)
    return x, t, score, flat(jnp.broadcast_to(a, x.shape))


def _groups(n: int, features_in_step: int) -> int:
    k = positive("features_in_step", features_in_step)
    if n % k:
        raise ValueError(f"features_in_step={k} must divide the input's {n} features")
    return n // k


@metric(
    "PixelFlipping",
    group="faithfulness",
    higher_is_better=False,
    reference='Bach et al., "On pixel-wise explanations for non-linear classifier decisions '
    'by layer-wise relevance propagation", PLoS ONE 10(7), 2015',
)
def pixel_flipping(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    features_in_step: int = 1,
    perturb_baseline="black",
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
    softmax: bool = True,
    return_auc_per_sample: bool = False,
) -> jax.Array:
    """The target's output as features are removed, highest attribution first.

    Step ``s = 1..S`` (``S = n / features_in_step``) sets the ``s * features_in_step``
    highest-attributed features to the baseline; the curve holds the output after each
    step (not before the first: Quantus's convention). `deletion_curve` is the same walk
    over whole pixels with the start point included.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input of ``n`` features.
      attribution: the map (``x``'s shape, or its pixels for an image).
      target: class followed; None: the arg-max logit at ``x``.
      features_in_step: features removed per step (divides ``n``).
      perturb_baseline: see `slp.metrics.faithfulness`.
      abs, normalise, normalise_func: Quantus's preparation of the map.
      softmax: follow the probability (True) or the logit.
      return_auc_per_sample: return the curve's area (trapezoids of width 1) instead.

    Returns:
      ``(S,)`` curve, or a scalar with ``return_auc_per_sample``.

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])  # linear: gradient x input is x
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> curve = slp.metrics.pixel_flipping(f, x, x, softmax=False)
      >>> curve.shape, curve[:3], curve[-1]  # the logit after each feature removed
      ((16,), Array([6.5625, 5.6875, 4.875 ], dtype=float32), Array(0., dtype=float32))
      >>> bool(jnp.all(slp.metrics.evaluate("PixelFlipping", f, x, x, softmax=False) == curve))
      True
    """
    x, _, score, a = _features(
        f,
        x,
        attribution,
        target,
        softmax=softmax,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
    )
    steps = _groups(a.size, features_in_step)
    step_of = rank(-a) // (a.size // steps)
    b, xf = baseline_value(perturb_baseline, x), flat(x)
    curve = map_steps(
        lambda s: score(unflat(jnp.where(step_of <= s, b, xf), x.shape)), jnp.arange(steps)
    )
    return jnp.trapezoid(curve) if return_auc_per_sample else curve


@metric(
    "FaithfulnessCorrelation",
    group="faithfulness",
    higher_is_better=True,
    reference='Bhatt, Weller, Moura, "Evaluating and aggregating feature-based model '
    'explanations", IJCAI 2020',
)
def faithfulness_correlation(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    nr_runs: int = 100,
    subset_size: int = 224,
    perturb_baseline="black",
    similarity_func: Callable = pearson,
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
    softmax: bool = False,
) -> jax.Array:
    """Correlation of the map's sums on random feature subsets with the output's drops.

    The drop is the output's when the subset is set to the baseline. Run ``r`` removes the
    subset ``jax.random.choice(jax.random.split(key, nr_runs)[r], n, (subset_size,),
    replace=False)``.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input of ``n`` features.
      attribution: the map (``x``'s shape, or its pixels for an image).
      target: class followed; None: the arg-max logit at ``x``.
      key: PRNG key of the subsets.
      nr_runs: subsets drawn.
      subset_size: features per subset (smaller than ``n``; Quantus's 224 suits ImageNet).
      perturb_baseline: see `slp.metrics.faithfulness`.
      similarity_func: ``(sums, drops) -> scalar``, default `pearson`.
      abs, normalise, normalise_func: Quantus's preparation of the map.
      softmax: follow the probability (True) or the logit.

    Returns:
      Scalar (a correlation by default; NaN if either series is constant).

    Raises:
      ValueError: if ``subset_size`` is not smaller than ``n``.

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])  # linear: gradient x input is x
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> k = jax.random.key(0)
      >>> float(slp.metrics.faithfulness_correlation(f, x, x, key=k, nr_runs=10, subset_size=4))
      1.0
    """
    key = require_key(key, "FaithfulnessCorrelation")
    x, _, score, a = _features(
        f,
        x,
        attribution,
        target,
        softmax=softmax,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
    )
    size = positive("subset_size", subset_size)
    if size >= a.size:
        raise ValueError(f"subset_size must be smaller than the input's {a.size} features")
    b, xf, y = baseline_value(perturb_baseline, x), flat(x), score(x)

    def run(k):
        chosen = random_subset(k, a.size, size)
        drop = y - score(unflat(jnp.where(chosen, b, xf), x.shape))
        return jnp.sum(jnp.where(chosen, a, 0)), drop

    sums, drops = map_steps(run, jax.random.split(key, positive("nr_runs", nr_runs)))
    return similarity_func(sums, drops)


@metric(
    "FaithfulnessEstimate",
    group="faithfulness",
    higher_is_better=True,
    reference='Alvarez-Melis, Jaakkola, "Towards robust interpretability with '
    'self-explaining neural networks", NeurIPS 2018',
)
def faithfulness_estimate(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    features_in_step: int = 1,
    perturb_baseline="black",
    similarity_func: Callable = pearson,
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
    softmax: bool = False,
) -> jax.Array:
    """Correlation of the map's sum on each group of features with the output's drop.

    The drop is the output's when that group alone is set to the baseline; groups of
    ``features_in_step`` in order of decreasing attribution.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input of ``n`` features.
      attribution: the map (``x``'s shape, or its pixels for an image).
      target: class followed; None: the arg-max logit at ``x``.
      features_in_step: features per group (divides ``n``).
      perturb_baseline: see `slp.metrics.faithfulness`.
      similarity_func: ``(sums, drops) -> scalar``, default `pearson`.
      abs, normalise, normalise_func: Quantus's preparation of the map.
      softmax: follow the probability (True) or the logit.

    Returns:
      Scalar (a correlation by default).

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])  # linear: gradient x input is x
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> float(slp.metrics.faithfulness_estimate(f, x, x, features_in_step=4))
      1.0
    """
    x, _, score, a = _features(
        f,
        x,
        attribution,
        target,
        softmax=softmax,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
    )
    steps = _groups(a.size, features_in_step)
    group = rank(-a) // (a.size // steps)
    b, xf, y = baseline_value(perturb_baseline, x), flat(x), score(x)

    def step(s):
        chosen = group == s
        drop = y - score(unflat(jnp.where(chosen, b, xf), x.shape))
        return jnp.sum(jnp.where(chosen, a, 0)), drop

    sums, drops = map_steps(step, jnp.arange(steps))
    return similarity_func(sums, drops)


@metric(
    "Monotonicity",
    group="faithfulness",
    higher_is_better=True,
    reference='Arya et al., "One explanation does not fit all: a toolkit and taxonomy of AI '
    'explainability techniques", arXiv:1909.03012, 2019',
)
def monotonicity(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    features_in_step: int = 1,
    perturb_baseline="black",
    abs: bool = True,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
    softmax: bool = True,
    insert_baseline: bool = False,
) -> jax.Array:
    """Whether the output never falls as features are restored, least attributed first.

    The walk starts from an input all at the baseline and restores ``x``'s features in
    groups of ``features_in_step``, in order of increasing attribution; the score is True
    when the target's output after each step is at least the one before.

    Quantus 0.6.0 writes the baseline value, not ``x``'s features, at every step, so its
    input never changes and it returns True for every map; ``insert_baseline=True`` does
    the same, for its numbers.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input of ``n`` features.
      attribution: the map (``x``'s shape, or its pixels for an image).
      target: class followed; None: the arg-max logit at ``x``.
      features_in_step: features restored per step (divides ``n``).
      perturb_baseline: see `slp.metrics.faithfulness`.
      abs, normalise, normalise_func: Quantus's preparation of the map.
      softmax: follow the probability (True) or the logit.
      insert_baseline: Quantus 0.6.0's walk (see above).

    Returns:
      bool scalar.

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])  # linear: gradient x input is x
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> bool(slp.metrics.monotonicity(f, x, x))  # restoring a feature never lowers f(x)[0]
      True
      >>> bool(slp.metrics.evaluate("Monotonicity", f, x, x))
      True
    """
    x, _, score, a = _features(
        f,
        x,
        attribution,
        target,
        softmax=softmax,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
    )
    steps = _groups(a.size, features_in_step)
    step_of = rank(a) // (a.size // steps)
    b = baseline_value(perturb_baseline, x)
    restored = jnp.full(a.shape, b) if insert_baseline else flat(x)
    curve = map_steps(
        lambda s: score(unflat(jnp.where(step_of <= s, restored, b), x.shape)), jnp.arange(steps)
    )
    return jnp.all(jnp.diff(curve) >= 0)


def _patch_index(shape: Sequence[int], patch_size: int) -> tuple[jax.Array, int]:
    """``(patch (H, W) int, number of patches)``: Quantus's grid of square patches, the
    image padded (half before, half after) to a multiple of ``patch_size``."""
    if len(shape) not in (2, 3):
        raise ValueError(f"patches need an image (H, W) or (H, W, C), got shape {tuple(shape)}")
    p = positive("patch_size", patch_size)
    h, w = shape[:2]
    if p > min(h, w):
        raise ValueError(f"patch_size={p} is larger than the image {h}x{w}")
    rows = (jnp.arange(h) + (-h) % p // 2) // p  # padding: the smaller half before
    cols = (jnp.arange(w) + (-w) % p // 2) // p
    per_row = math.ceil(w / p)
    return rows[:, None] * per_row + cols[None, :], math.ceil(h / p) * per_row


def _patch_walk(
    f,
    x,
    attribution,
    target,
    *,
    patch_size,
    order,
    key,
    perturb_baseline,
    abs,
    normalise,
    normalise_func,
    softmax,
):
    """``(score, y, image at step s, number of patches)`` of the patch metrics."""
    x = as_input(x)
    _, score = score_function(f, x, target, softmax=softmax)
    a = prepare(attribution, x, abs=abs, normalise=normalise, normalise_func=normalise_func)
    patch, count = _patch_index(x.shape, patch_size)
    per_pixel = jnp.broadcast_to(a, x.shape)
    if x.ndim == 3:
        per_pixel = per_pixel.sum(axis=-1)
    sums = jax.ops.segment_sum(jnp.ravel(per_pixel), jnp.ravel(patch), count)
    if order == "morf":
        position = rank(-sums)
    elif order == "lerf":
        position = rank(sums)
    elif order == "random":
        position = jnp.argsort(jax.random.permutation(require_key(key, "order='random'"), count))
    else:
        raise ValueError(f"order must be 'morf', 'lerf' or 'random', got {order!r}")
    step_of = position[patch]
    if x.ndim == 3:
        step_of = step_of[..., None]
    b = baseline_value(perturb_baseline, x)
    return score, score(x), (lambda s: jnp.where(step_of <= s, b, x)), count


@metric(
    "RegionPerturbation",
    group="faithfulness",
    higher_is_better=True,
    reference='Samek et al., "Evaluating the visualization of what a deep neural network '
    'has learned", IEEE TNNLS 28(11), 2017',
)
def region_perturbation(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    patch_size: int = 8,
    order: str = "morf",
    regions_evaluation: int = 100,
    perturb_baseline="black",
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
    softmax: bool = True,
) -> jax.Array:
    """Drop in output as square patches are set to the baseline, one more at each step.

    The image is cut into a grid of ``patch_size`` squares (padded as Quantus pads it); a
    patch's score is the map's sum on it (all channels). ``order`` ``"morf"`` removes the
    highest-scoring patch first, ``"lerf"`` the lowest, ``"random"`` a random order
    (``jax.random.permutation(key, patches)``).

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one image ``(H, W)`` or ``(H, W, C)``.
      attribution: the map (``x``'s shape or its pixels).
      target: class followed; None: the arg-max logit at ``x``.
      key: PRNG key, for ``order="random"`` only.
      patch_size: side of the patches.
      order: ``"morf"``, ``"lerf"`` or ``"random"``.
      regions_evaluation: patches removed (at most all of them).
      perturb_baseline: see `slp.metrics.faithfulness`.
      abs, normalise, normalise_func: Quantus's preparation of the map.
      softmax: follow the probability (True) or the logit.

    Returns:
      ``(R,)``: ``y(x) - y(x with the first r patches removed)``, ``r = 1..R``,
      ``R = min(regions_evaluation, patches)``. With ``"morf"`` a good map makes these
      drops large early (a large area: Samek et al.'s AOPC); Quantus 0.6.0 declares the
      metric's direction "lower", which holds for ``"lerf"``.

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])  # linear: gradient x input is x
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> slp.metrics.region_perturbation(f, x, x, patch_size=2, softmax=False)  # 4 patches
      Array([3.125, 5.75 , 6.875, 7.5  ], dtype=float32)
    """
    score, y, image, count = _patch_walk(
        f,
        x,
        attribution,
        target,
        patch_size=patch_size,
        order=order,
        key=key,
        perturb_baseline=perturb_baseline,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
        softmax=softmax,
    )
    steps = min(positive("regions_evaluation", regions_evaluation), count)
    return map_steps(lambda s: y - score(image(s)), jnp.arange(steps))


@metric(
    "Selectivity",
    group="faithfulness",
    higher_is_better=False,
    reference='Montavon, Samek, Müller, "Methods for interpreting and understanding deep '
    'neural networks", Digital Signal Processing 73, 2018',
)
def selectivity(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    patch_size: int = 8,
    perturb_baseline="black",
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
    softmax: bool = True,
) -> jax.Array:
    """The output as square patches are set to the baseline, highest map sum first.

    The walk of `region_perturbation` (``order="morf"``) over every patch; the curve holds
    the output itself, whose area (Quantus's ``get_auc_score``) is small for a good map.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one image ``(H, W)`` or ``(H, W, C)``.
      attribution: the map (``x``'s shape or its pixels).
      target: class followed; None: the arg-max logit at ``x``.
      patch_size: side of the patches.
      perturb_baseline: see `slp.metrics.faithfulness`.
      abs, normalise, normalise_func: Quantus's preparation of the map.
      softmax: follow the probability (True) or the logit.

    Returns:
      ``(P,)``: the output with the first ``r`` patches removed, ``r = 1..P`` (all).

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])  # linear: gradient x input is x
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> slp.metrics.selectivity(f, x, x, patch_size=2, softmax=False)
      Array([4.375, 1.75 , 0.625, 0.   ], dtype=float32)
    """
    score, _, image, count = _patch_walk(
        f,
        x,
        attribution,
        target,
        patch_size=patch_size,
        order="morf",
        key=None,
        perturb_baseline=perturb_baseline,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
        softmax=softmax,
    )
    return map_steps(lambda s: score(image(s)), jnp.arange(count))


# Rong et al. 2022: each unknown pixel is the weighted mean of its 8 neighbours, the direct
# ones weighing 1/6 and the diagonal ones 1/12 (the weights of the pixels inside the image).
_NEIGHBOURS = (
    ((1, 1), 1 / 12), ((0, 1), 1 / 6), ((-1, 1), 1 / 12), ((1, -1), 1 / 12),
    ((0, -1), 1 / 6), ((-1, -1), 1 / 12), ((1, 0), 1 / 6), ((-1, 0), 1 / 6),
)  # fmt: skip


def _neighbour_sum(v: jax.Array) -> jax.Array:
    """``sum_o w_o v[i + o]`` over the 8 neighbours inside the image (``v`` ``(H, W, C)``)."""
    h, w = v.shape[:2]
    padded = jnp.pad(v, ((1, 1), (1, 1), (0, 0)))
    return sum(
        wt * padded[1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for (dy, dx), wt in _NEIGHBOURS
    )


def noisy_linear_imputation(
    x: jax.Array,
    mask: jax.Array,
    *,
    key: jax.Array | None = None,
    noise: float = 0.01,
    maxiter: int | None = None,
) -> jax.Array:
    """ROAD's imputation (Rong et al. 2022): masked pixels become their neighbours' mean.

    The masked pixels are the solution of a sparse linear system, each the weighted mean
    of its neighbours, plus Gaussian noise.

    For every masked pixel ``i``: ``sum_o w_o (u_i - v_{i+o}) = 0`` over its neighbours
    inside the image, ``v`` being ``u`` on masked pixels and ``x`` elsewhere (weights 1/6
    direct, 1/12 diagonal). The system is symmetric positive definite when any pixel is
    unmasked and is solved per channel by conjugate gradients (Jacobi preconditioned, to a
    residual of ``eps^0.75`` of the right-hand side at the input's precision).

    Args:
      x: one image ``(H, W)`` or ``(H, W, C)``.
      mask: bool ``(H, W)``, the pixels to impute.
      key: PRNG key of the noise (``noise * N(0, 1)`` per masked pixel and channel); may be
        None when ``noise`` is 0.
      noise: standard deviation of the noise.
      maxiter: conjugate-gradient iterations at most (default ``4 (H + W)``).

    Returns:
      Array shaped like ``x``: ``x`` off the mask, the imputed values on it.

    Raises:
      ValueError: if ``x`` is not an image or ``mask`` does not fit its pixels.

    Examples:
      >>> x = jnp.arange(9.0).reshape(3, 3)
      >>> mask = jnp.zeros((3, 3), bool).at[1, 1].set(True)
      >>> round(float(slp.metrics.noisy_linear_imputation(x, mask, noise=0.0)[1, 1]), 4)
      4.0
    """
    x = as_input(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"imputation needs an image (H, W) or (H, W, C), got {x.shape}")
    xc = x if x.ndim == 3 else x[..., None]
    m = jnp.asarray(mask, bool)
    if m.shape != xc.shape[:2]:
        raise ValueError(f"mask shaped {m.shape} does not fit the image's pixels {xc.shape[:2]}")
    m = m[..., None]
    total = _neighbour_sum(jnp.ones_like(xc))  # the weights inside the image

    def system(u):
        return jnp.where(m, total * u - _neighbour_sum(jnp.where(m, u, 0)), 0)

    rhs = jnp.where(m, _neighbour_sum(jnp.where(m, 0, xc)), 0)
    tol = float(jnp.finfo(xc.dtype).eps) ** 0.75
    steps = 4 * (xc.shape[0] + xc.shape[1]) if maxiter is None else positive("maxiter", maxiter)
    u, _ = jax.scipy.sparse.linalg.cg(
        system, rhs, tol=tol, maxiter=steps, M=lambda r: jnp.where(m, r / total, 0)
    )
    if noise:
        u = u + noise * jax.random.normal(require_key(key, "noisy imputation"), u.shape, u.dtype)
    out = jnp.where(m, u, xc)
    return out if x.ndim == 3 else out[..., 0]


@metric(
    "ROAD",
    group="faithfulness",
    higher_is_better=False,
    reference='Rong et al., "A consistent and efficient evaluation strategy for attribution '
    'methods", ICML 2022 (arXiv:2202.00449)',
)
def road(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    percentages: Sequence[float] = tuple(range(1, 100, 2)),
    noise: float = 0.01,
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Remove And Debias: whether the prediction survives imputing the most attributed pixels.

    The pixels are imputed by `noisy_linear_imputation`, per share of pixels removed: for
    a share ``p`` (percent) the ``int(P p / 100)`` highest-attributed of the ``P`` pixels
    (all channels; the noise of share ``j`` is drawn from
    ``jax.random.split(key, len(percentages))[j]``). Quantus returns, per share, the mean
    over the examples it is given; the mean of these scores over the same examples is that.
    (Quantus 0.6.0 averages its first batch only, of ``batch_size`` examples, and runs
    single-channel images only: it indexes pixels by feature.)

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one image ``(H, W)`` or ``(H, W, C)``.
      attribution: a pixel map (``(H, W)``, ``(H, W, 1)``, or ``x``'s shape when ``C = 1``).
      target: the class; None: the arg-max logit at ``x``.
      key: PRNG key of the noise (may be None when ``noise`` is 0).
      percentages: shares of pixels removed, in percent.
      noise: standard deviation of the imputation's noise.
      abs, normalise, normalise_func: Quantus's preparation of the map.

    Returns:
      int32 ``(len(percentages),)``: 1 where the arg-max of ``f`` is still ``target``.

    Raises:
      ValueError: if ``x`` is not an image or the map has several channels.

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])  # linear: gradient x input is x
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> slp.metrics.road(f, x, x, key=jax.random.key(0), percentages=(25, 50, 75))
      Array([1, 1, 1], dtype=int32)
    """
    x = as_input(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"ROAD needs an image (H, W) or (H, W, C), got shape {x.shape}")
    t, _ = score_function(f, x, target, softmax=False)
    a = prepare(attribution, x, abs=abs, normalise=normalise, normalise_func=normalise_func)
    if a.ndim == 3 and a.shape[-1] != 1:
        raise ValueError(f"ROAD ranks pixels: give a pixel map {x.shape[:2]}, got {a.shape}")
    position = rank(-jnp.ravel(a)).reshape(x.shape[:2])
    shares = tuple(float(p) for p in percentages)
    counts = jnp.array([int(position.size * p / 100) for p in shares])
    keys = jax.random.split(require_key(key, "ROAD"), len(shares)) if noise else counts

    def kept(count, k):
        removed = noisy_linear_imputation(
            x, position < count, key=k if noise else None, noise=noise
        )
        return (jnp.argmax(f(removed)) == t).astype(jnp.int32)

    return map_steps(lambda args: kept(*args), (counts, keys))

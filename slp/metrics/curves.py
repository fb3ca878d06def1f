"""Deletion and insertion curves (Samek et al. 2017; Petsiuk et al. 2018) and their areas.

**Replacement baseline**: a perturbed pixel takes the value of ``baseline`` (a scalar, or an
array shaped like the image). A pixel is all channels of one image position: they are
removed together. Ties in the scores keep raster order (`pixel_order`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from slp._src.guards import nan_unless
from slp.attributions.registry import check_target, resolve_target

__all__ = [
    "PerturbationCurve",
    "pixel_order",
    "random_scores",
    "deletion_curve",
    "insertion_curve",
    "curve_area",
]


def pixel_order(scores: jax.Array) -> jax.Array:
    """Rank of every pixel when sorted by decreasing score (0 = removed first).

    Ties keep raster order (the earlier pixel comes first), so the order is a
    deterministic function of the scores.

    Args:
      scores: pixel importances ``(H, W)``.

    Returns:
      int array ``(H, W)`` holding a permutation of ``0 .. H*W - 1``.

    Raises:
      ValueError: if ``scores`` is not 2-D.

    Examples:
      >>> slp.metrics.pixel_order(jnp.array([[0.1, 0.9], [0.5, 0.5]]))  # the tie: raster order
      Array([[3, 0],
             [1, 2]], dtype=int32)
    """
    scores = jnp.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"pixel scores must be shaped (H, W), got {scores.shape}")
    idx = jnp.argsort(-jnp.ravel(scores), stable=True)
    rank = jnp.zeros(idx.shape, jnp.int32).at[idx].set(jnp.arange(idx.size, dtype=jnp.int32))
    return rank.reshape(scores.shape)


def random_scores(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Pixel scores giving a uniformly random order: the reference of deletion curves.

    Args:
      key: PRNG key.
      shape: ``(H, W)``.

    Returns:
      float32 array ``shape`` of i.i.d. uniform values.

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> scores = slp.metrics.random_scores(jax.random.key(0), x.shape[:2])
      >>> scores.shape, scores.dtype
      ((4, 4), dtype('float32'))
      >>> slp.metrics.deletion_curve(f, x, scores, steps=4).logit.shape  # a random order
      (5,)
    """
    return jax.random.uniform(key, tuple(shape))


class PerturbationCurve(NamedTuple):
    """The model's output as pixels are deleted or inserted in a given order.

    Attributes:
      fraction: ``(S + 1,)`` share of the image's pixels perturbed, 0 to 1.
      logit: ``(S + 1,)`` the target's logit at each step.
      probability: ``(S + 1,)`` the target's softmax probability at each step.

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> curve = slp.metrics.deletion_curve(f, x, x[..., 0], steps=4)
      >>> curve.fraction
      Array([0.  , 0.25, 0.5 , 0.75, 1.  ], dtype=float32)
      >>> curve.logit.shape, curve.probability.shape
      ((5,), (5,))
    """

    fraction: jax.Array
    logit: jax.Array
    probability: jax.Array


def _perturbation_curve(f, x, scores, *, target, baseline, steps, insert):
    x = jnp.asarray(x)
    if x.ndim not in (2, 3):
        raise ValueError(f"x must be one image (H, W) or (H, W, C), got shape {x.shape}")
    if jnp.shape(scores) != x.shape[:2]:
        raise ValueError(
            f"scores must be shaped like the image's pixels {x.shape[:2]}, got {jnp.shape(scores)}"
        )
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    rank = pixel_order(scores)
    n_pixels = rank.size
    counts = (jnp.arange(steps + 1) * n_pixels) // steps  # pixels perturbed at step k

    def at_step(n):
        moved = rank < n
        if x.ndim == 3:
            moved = moved[..., None]
        return jnp.where(moved, x, base) if insert else jnp.where(moved, base, x)

    logits = jax.vmap(lambda n: f(at_step(n)))(counts)
    y = f(x)
    t = resolve_target(y, target)  # raises for a concrete target out of range
    # A traced one out of range would read a clamped index: NaN instead, as the methods do;
    # and NaN where the scores have a NaN or inf entry (the order is undefined).
    ok = jnp.all(jnp.isfinite(scores))
    if target is not None:
        ok = ok & check_target(target, y.shape[0])
    fraction = counts.astype(logits.dtype) / n_pixels
    return PerturbationCurve(
        fraction=fraction,
        logit=nan_unless(ok, logits[:, t]),
        probability=nan_unless(ok, jax.nn.softmax(logits, axis=-1)[:, t]),
    )


_CURVE_ARGS = """
    Args:
      f: per-example network ``f(x) -> logits``.
      x: one image ``(H, W)`` or ``(H, W, C)``.
      scores: pixel importances ``(H, W)`` (see `pixel_map`; ties: `pixel_order`); with a
        NaN or inf entry the order is undefined and the curves are NaN.
      target: class whose output is followed; None: the arg-max logit at ``x``. A
        concrete index out of range raises ValueError; a traced one gives NaN curves.
      baseline: the value of a pixel not (or no longer) in ``x``: a scalar or an array
        broadcastable to ``x``.
      steps: ``S``, the number of steps after the start.

    Returns:
      `PerturbationCurve` with ``S + 1`` points.
    """


def _curve_function(
    name: str, *, insert: bool, summary: str, examples: str
) -> Callable[..., PerturbationCurve]:
    """`deletion_curve` (insert=False) or `insertion_curve` (insert=True): the one
    perturbation walk, its direction fixed, documented by ``summary`` + the shared Args +
    ``examples``."""

    def curve(
        f: Callable,
        x: jax.Array,
        scores: jax.Array,
        *,
        target=None,
        baseline: Any = 0.0,
        steps: int = 28,
    ) -> PerturbationCurve:
        return _perturbation_curve(
            f, x, scores, target=target, baseline=baseline, steps=int(steps), insert=insert
        )

    curve.__name__ = curve.__qualname__ = name
    curve.__doc__ = summary + _CURVE_ARGS + examples
    return curve


deletion_curve = _curve_function(
    "deletion_curve",
    insert=False,
    summary="""Deletion curve: replace pixels by ``baseline``, highest score first.

    At step ``k = 0..S`` the ``floor(k P / S)`` highest-scoring of the ``P`` pixels
    (all their channels) hold ``baseline`` and the rest hold ``x``. A faithful map
    makes the target's output fall fast: a small `curve_area`.
""",
    examples="""
    Examples:
      A linear two-class network on a 4x4 image, the pixels scored by their values:

      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> curve = slp.metrics.deletion_curve(f, x, x[..., 0], steps=4)
      >>> curve.logit
      Array([7.5  , 4.125, 1.75 , 0.375, 0.   ], dtype=float32)
      >>> float(slp.metrics.curve_area(curve.fraction, curve.logit))
      2.5
    """,
)

insertion_curve = _curve_function(
    "insertion_curve",
    insert=True,
    summary="""Insertion curve: start from ``baseline`` and restore pixels, highest score first.

    At step ``k`` the ``floor(k P / S)`` highest-scoring pixels hold ``x`` and the rest
    hold ``baseline``. A faithful map makes the target's output rise fast: a large
    `curve_area`.
""",
    examples="""
    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> curve = slp.metrics.insertion_curve(f, x, x[..., 0], steps=4)
      >>> curve.logit
      Array([0.   , 3.375, 5.75 , 7.125, 7.5  ], dtype=float32)
      >>> float(slp.metrics.curve_area(curve.fraction, curve.logit))
      5.0
    """,
)


def curve_area(fraction: jax.Array, values: jax.Array) -> jax.Array:
    """Area under a curve by the trapezoidal rule.

    Args:
      fraction: ``(S + 1,)`` increasing abscissae (e.g. `PerturbationCurve.fraction`).
      values: ``(S + 1,)`` ordinates (e.g. `PerturbationCurve.logit`).

    Returns:
      Scalar ``sum_k (fraction_{k+1} - fraction_k) (values_k + values_{k+1}) / 2``.

    Raises:
      ValueError: if ``fraction`` and ``values`` are not 1-D arrays of one shape.

    Examples:
      >>> float(slp.metrics.curve_area(jnp.array([0.0, 0.5, 1.0]), jnp.array([1.0, 1.0, 0.0])))
      0.75
    """
    fraction, values = jnp.asarray(fraction), jnp.asarray(values)
    if fraction.shape != values.shape or fraction.ndim != 1:
        raise ValueError(
            f"fraction and values must be equal 1-D shapes, got {fraction.shape}, {values.shape}"
        )
    return jnp.sum(jnp.diff(fraction) * (values[1:] + values[:-1]) / 2)

"""Measures of attribution maps: similarity, locality, faithfulness, model dependence.

The paper compares methods visually; these functions measure what its figures show.
All are pure functions of one example (batch them with `jax.vmap`) unless they say
otherwise; none compiles anything itself.

- Similarity of two maps: `spearman` (rank correlation, ties get their average rank),
  `pearson`, `cosine_similarity`.
- Locality: `mass_on_mask`, the share of a map's absolute mass on a region (for MNIST
  the digit and its 3-pixel outline, `slp.noise.clean_mask("bordered", x)`).
- Faithfulness: `deletion_curve` and `insertion_curve` (Samek et al. 2017, "Evaluating
  the visualization of what a deep neural network has learned"; Petsiuk et al. 2018,
  RISE) and their areas `curve_area`; `random_scores` gives the random-order reference.
  **Replacement baseline**: a perturbed pixel takes the value of ``baseline`` (a scalar,
  or an array shaped like the image); the experiments use 0 for MNIST (the background's
  value) and the training set's mean colour for CIFAR-10. A pixel is all channels of one
  image position: they are removed together.
- Model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"):
  `layer_order` and `cascading_randomization` re-initialise the layers of a flax
  parameter tree one by one from the top (output) layer down.

Maps with a channel axis ``(H, W, C)`` become pixel maps ``(H, W)`` with `pixel_map`
(channels summed, keeping the signed total per pixel, as `slp.plotting` draws them).
Undefined values (the correlation of a constant map, the share of an all-zero map) are
NaN, so that callers can drop them explicitly instead of averaging in a made-up number.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from slp._src.guards import nan_unless
from slp.attributions.registry import check_target, resolve_target

__all__ = [
    "PerturbationCurve",
    "pixel_map",
    "average_ranks",
    "pearson",
    "spearman",
    "cosine_similarity",
    "mass_on_mask",
    "pixel_order",
    "random_scores",
    "deletion_curve",
    "insertion_curve",
    "curve_area",
    "layer_order",
    "cascading_randomization",
]


def pixel_map(values: jax.Array) -> jax.Array:
    """A map ``(H, W)`` from ``(H, W)`` or ``(H, W, C)`` (channels summed).

    Summing over channels keeps the signed total contribution of each pixel.

    Args:
      values: array ``(H, W)`` or ``(H, W, C)``, JAX or NumPy.

    Returns:
      Array ``(H, W)`` of the same kind (NumPy in, NumPy out).
    """
    if not hasattr(values, "ndim"):
        values = jnp.asarray(values)
    if values.ndim == 2:
        return values
    if values.ndim == 3:
        return values.sum(axis=-1)
    raise ValueError(f"expected a map shaped (H, W) or (H, W, C), got shape {values.shape}")


def average_ranks(values: jax.Array) -> jax.Array:
    """Ranks ``1..n`` of the flattened values; tied values share their average rank.

    Args:
      values: any array with ``n`` entries.

    Returns:
      float array ``(n,)``: entry i is ``(#{v < v_i} + #{v <= v_i} + 1) / 2``.
    """
    v = jnp.ravel(values)
    s = jnp.sort(v)
    below = jnp.searchsorted(s, v, side="left")
    upto = jnp.searchsorted(s, v, side="right")
    dtype = jnp.result_type(v.dtype, jnp.float32)
    return (below + upto + 1).astype(dtype) / 2


def pearson(a: jax.Array, b: jax.Array) -> jax.Array:
    """Pearson correlation of two maps (flattened); NaN when either is constant.

    Args:
      a: array with ``n`` entries.
      b: array with ``n`` entries.

    Returns:
      Scalar in [-1, 1], or NaN.
    """
    a, b = _pair(a, b)
    a = a - a.mean()
    b = b - b.mean()
    return _normalised_dot(a, b)


def spearman(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman rank correlation of two maps: `pearson` of their `average_ranks`.

    Args:
      a: array with ``n`` entries.
      b: array with ``n`` entries.

    Returns:
      Scalar in [-1, 1]; NaN when either map is constant.
    """
    a, b = _pair(a, b)
    return pearson(average_ranks(a), average_ranks(b))


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine of the angle between two maps `a` and `b` of ``n`` entries each (flattened).

    Returns a scalar in [-1, 1], or NaN when either map is all zero.
    """
    a, b = _pair(a, b)
    return _normalised_dot(a, b)


def _pair(a, b) -> tuple[jax.Array, jax.Array]:
    a, b = jnp.ravel(jnp.asarray(a)), jnp.ravel(jnp.asarray(b))
    if a.shape != b.shape:
        raise ValueError(f"maps must have the same number of entries; got {a.size} and {b.size}")
    if a.size < 2:
        raise ValueError(f"maps need at least 2 entries to be compared, got {a.size}")
    dtype = jnp.result_type(a.dtype, b.dtype, jnp.float32)
    return a.astype(dtype), b.astype(dtype)


def _normalised_dot(a: jax.Array, b: jax.Array) -> jax.Array:
    norm = jnp.sqrt(jnp.sum(a * a) * jnp.sum(b * b))
    ok = norm > 0
    return jnp.where(ok, jnp.sum(a * b) / jnp.where(ok, norm, 1), jnp.nan)


def mass_on_mask(attribution: jax.Array, mask: jax.Array) -> jax.Array:
    """Share of a map's absolute mass that lies on ``mask``.

    ``sum(|a| on mask) / sum(|a|)``, with ``|a|`` summed over channels for ``(H, W, C)``
    maps. A uniform map scores the mask's share of the image area.

    Args:
      attribution: map ``(H, W)`` or ``(H, W, C)``.
      mask: bool ``(H, W)``.

    Returns:
      Scalar in [0, 1]; NaN for an all-zero map.
    """
    attribution = jnp.asarray(attribution)
    mass = jnp.abs(attribution)
    if mass.ndim == 3:
        mass = mass.sum(axis=-1)
    if mass.ndim != 2 or mass.shape != jnp.shape(mask):
        raise ValueError(
            f"attribution {attribution.shape} and mask {jnp.shape(mask)} do not match: "
            "expected (H, W) or (H, W, C) and (H, W)"
        )
    total = mass.sum()
    ok = total > 0
    return jnp.where(ok, jnp.sum(jnp.where(mask, mass, 0)) / jnp.where(ok, total, 1), jnp.nan)


def pixel_order(scores: jax.Array) -> jax.Array:
    """Rank of every pixel when sorted by decreasing score (0 = removed first).

    Ties keep raster order (the earlier pixel comes first), so the order is a
    deterministic function of the scores.

    Args:
      scores: pixel importances ``(H, W)``.

    Returns:
      int array ``(H, W)`` holding a permutation of ``0 .. H*W - 1``.
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
    """
    return jax.random.uniform(key, tuple(shape))


class PerturbationCurve(NamedTuple):
    """The model's output as pixels are deleted or inserted in a given order.

    Attributes:
      fraction: ``(S + 1,)`` share of the image's pixels perturbed, 0 to 1.
      logit: ``(S + 1,)`` the target's logit at each step.
      probability: ``(S + 1,)`` the target's softmax probability at each step.
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
    # A traced one out of range would read a clamped index: NaN instead, as the methods do.
    ok = True if target is None else check_target(target, y.shape[0])
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
      scores: pixel importances ``(H, W)`` (see `pixel_map`; ties: `pixel_order`).
      target: class whose output is followed; None: the arg-max logit at ``x``. A
        concrete index out of range raises ValueError; a traced one gives NaN curves.
      baseline: the value of a pixel not (or no longer) in ``x``: a scalar or an array
        broadcastable to ``x``.
      steps: ``S``, the number of steps after the start.

    Returns:
      `PerturbationCurve` with ``S + 1`` points.
    """


def _curve_function(name: str, *, insert: bool, summary: str) -> Callable[..., PerturbationCurve]:
    """`deletion_curve` (insert=False) or `insertion_curve` (insert=True): the one
    perturbation walk, its direction fixed, documented by ``summary`` + the shared Args."""

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
    curve.__doc__ = summary + _CURVE_ARGS
    return curve


deletion_curve = _curve_function(
    "deletion_curve",
    insert=False,
    summary="""Deletion curve: replace pixels by ``baseline``, highest score first.

    At step ``k = 0..S`` the ``floor(k P / S)`` highest-scoring of the ``P`` pixels
    (all their channels) hold ``baseline`` and the rest hold ``x``. A faithful map
    makes the target's output fall fast: a small `curve_area`.
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
)


def curve_area(fraction: jax.Array, values: jax.Array) -> jax.Array:
    """Area under a curve by the trapezoidal rule.

    Args:
      fraction: ``(S + 1,)`` increasing abscissae (e.g. `PerturbationCurve.fraction`).
      values: ``(S + 1,)`` ordinates (e.g. `PerturbationCurve.logit`).

    Returns:
      Scalar ``sum_k (fraction_{k+1} - fraction_k) (values_k + values_{k+1}) / 2``.
    """
    fraction, values = jnp.asarray(fraction), jnp.asarray(values)
    if fraction.shape != values.shape or fraction.ndim != 1:
        raise ValueError(
            f"fraction and values must be equal 1-D shapes, got {fraction.shape}, {values.shape}"
        )
    return jnp.sum(jnp.diff(fraction) * (values[1:] + values[:-1]) / 2)


def _layers(params: Mapping) -> Mapping:
    if not isinstance(params, Mapping) or "params" not in params:
        raise ValueError(
            "expected a flax variables dict with a 'params' collection, e.g. model.init(...); "
            f"got {type(params).__name__}"
            + (f" with keys {sorted(params)}" if isinstance(params, Mapping) else "")
        )
    return params["params"]


def layer_order(params: Mapping) -> tuple[str, ...]:
    """Names of the top-level layers of a flax parameter tree, output layer first.

    flax records submodules in the order they were created, which for a sequential
    network (e.g. `slp.models.TwoConv`) is input to output; this is that order reversed.

    Args:
      params: flax variables ``{"params": {layer_name: {...}, ...}}``.

    Returns:
      Layer names, top (output) layer first.
    """
    return tuple(reversed(tuple(_layers(params))))


def cascading_randomization(
    params: Mapping, random_params: Mapping, *, order: Sequence[str] | None = None
) -> list[tuple[str, Mapping]]:
    """Cascading model randomisation: re-initialise layers one by one from the top down.

    Step ``k`` (``k = 1..L``) replaces the first ``k`` layers of ``order`` with their
    values in ``random_params`` (a fresh initialisation of the same network, e.g.
    ``model.init`` with another key) and keeps the others trained.

    Args:
      params: trained flax variables ``{"params": {layer: subtree}}``.
      random_params: freshly initialised variables with the same structure.
      order: layer names to randomise, in order; default `layer_order` (output first).

    Returns:
      ``L`` pairs ``(name of the layer randomised last, variables)``.
    """
    trained, fresh = _layers(params), _layers(random_params)
    order = layer_order(params) if order is None else tuple(order)
    unknown = [n for n in order if n not in trained or n not in fresh]
    if unknown:
        raise ValueError(f"layers {unknown} are not in both parameter trees; have {list(trained)}")
    for name in order:
        a, b = jax.tree.structure(trained[name]), jax.tree.structure(fresh[name])
        if a != b or jax.tree.map(jnp.shape, trained[name]) != jax.tree.map(jnp.shape, fresh[name]):
            raise ValueError(f"layer {name!r} differs in structure between the two trees")
    steps = []
    current = dict(trained)
    for name in order:
        current[name] = fresh[name]
        steps.append((name, {**dict(params), "params": dict(current)}))
    return steps

"""Localisation: how much of a map lies on a region known to matter (a segmentation mask)."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from slp.metrics._common import flat, normalise_by_max, positive, prepare, rank
from slp.metrics.registry import metric

__all__ = [
    "mass_on_mask",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "top_k_intersection",
    "pointing_game",
    "attribution_localisation",
    "focus",
]


def mass_on_mask(attribution: jax.Array, mask: jax.Array) -> jax.Array:
    """Share of a map's absolute mass that lies on ``mask``.

    ``sum(|a| on mask) / sum(|a|)``, with ``|a|`` summed over channels for ``(H, W, C)``
    maps. A uniform map scores the mask's share of the image area.

    Args:
      attribution: map ``(H, W)`` or ``(H, W, C)``.
      mask: bool ``(H, W)``.

    Returns:
      Scalar in [0, 1]; NaN for an all-zero map.

    Raises:
      ValueError: if the map is not ``(H, W)`` or ``(H, W, C)`` or the mask does not fit it.

    Examples:
      >>> a = jnp.arange(16.0).reshape(4, 4)  # a map growing down the image
      >>> mask = jnp.zeros((4, 4), bool).at[2:].set(True)  # the bottom half
      >>> round(float(slp.metrics.mass_on_mask(a, mask)), 4)  # 92 / 120
      0.7667
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


_CLEVR = (
    'Arras, Osman, Samek, "CLEVR-XAI: a benchmark dataset for the ground truth evaluation of '
    'neural network explanations", Information Fusion 81, 2022'
)


def _map_and_mask(attribution, mask, *, abs, normalise, normalise_func, name):
    """The prepared map and its mask, both flattened channel-first (``(n,)`` each)."""
    a = prepare(attribution, None, abs=abs, normalise=normalise, normalise_func=normalise_func)
    if mask is None:
        raise ValueError(f"{name} needs mask=, the segmentation mask of the map's pixels")
    s = jnp.asarray(mask)
    pixels = a.shape[:2] if a.ndim == 3 else None
    if pixels is not None and s.shape in (pixels, (*pixels, 1)):
        s = jnp.broadcast_to(s.reshape(*pixels, 1), a.shape)
    elif s.shape != a.shape:
        also = f" or its pixels {pixels}" if pixels else ""
        raise ValueError(
            f"mask shaped {s.shape} does not fit the attribution shaped {a.shape}: expected "
            f"{a.shape}{also}"
        )
    return flat(a), flat(s.astype(bool))


def _nan_unless(ok, value):
    return jnp.where(ok, value, jnp.nan)


@metric("RelevanceMassAccuracy", group="localisation", higher_is_better=True, reference=_CLEVR)
def relevance_mass_accuracy(
    attribution: jax.Array,
    *,
    mask: jax.Array | None = None,
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Share of the map's sum that lies on the mask: ``sum(a on mask) / sum(a)``.

    `mass_on_mask` is this with ``abs=True`` (and channels summed first).

    Args:
      attribution: map ``(H, W)`` or ``(H, W, C)``.
      mask: bool, the map's shape or its pixels ``(H, W)`` (then every channel).
      abs, normalise, normalise_func: Quantus's preparation of the map.

    Returns:
      Scalar; NaN for an empty mask.

    Examples:
      >>> a = jnp.arange(16.0).reshape(4, 4)  # a map growing down the image
      >>> mask = jnp.zeros((4, 4), bool).at[2:].set(True)  # the bottom half
      >>> round(float(slp.metrics.relevance_mass_accuracy(a, mask=mask)), 4)
      0.7667
      >>> round(float(slp.metrics.evaluate("RelevanceMassAccuracy", None, a, a, mask=mask)), 4)
      0.7667
    """
    a, s = _map_and_mask(
        attribution,
        mask,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
        name="RelevanceMassAccuracy",
    )
    return _nan_unless(s.any(), jnp.sum(jnp.where(s, a, 0)) / jnp.sum(a))


@metric("RelevanceRankAccuracy", group="localisation", higher_is_better=True, reference=_CLEVR)
def relevance_rank_accuracy(
    attribution: jax.Array,
    *,
    mask: jax.Array | None = None,
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Share of the ``K`` highest entries that lie on the mask, ``K`` = the mask's size.

    Args:
      attribution: map ``(H, W)`` or ``(H, W, C)``.
      mask: bool, the map's shape or its pixels ``(H, W)``.
      abs, normalise, normalise_func: Quantus's preparation of the map.

    Returns:
      Scalar in [0, 1]; NaN for an empty mask.

    Examples:
      >>> a = jnp.arange(16.0).reshape(4, 4)  # a map growing down the image
      >>> mask = jnp.zeros((4, 4), bool).at[2:].set(True)  # the bottom half
      >>> float(slp.metrics.relevance_rank_accuracy(a, mask=mask))  # the top 8 on the mask
      1.0
      >>> float(slp.metrics.relevance_rank_accuracy(-a, mask=mask))
      0.0
    """
    a, s = _map_and_mask(
        attribution,
        mask,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
        name="RelevanceRankAccuracy",
    )
    k = jnp.sum(s)
    hits = jnp.sum(s & (rank(-a) < k))
    return _nan_unless(k > 0, hits / jnp.maximum(k, 1))


@metric(
    "TopKIntersection",
    group="localisation",
    higher_is_better=True,
    reference='Theiner, Müller-Budack, Ewerth, "Interpretable semantic photo '
    'geolocalization", arXiv:2104.14995, 2021',
)
def top_k_intersection(
    attribution: jax.Array,
    *,
    mask: jax.Array | None = None,
    k: int = 1000,
    concept_influence: bool = False,
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Share of the ``k`` highest entries that lie on the mask.

    Args:
      attribution: map ``(H, W)`` or ``(H, W, C)`` of ``n`` entries.
      mask: bool, the map's shape or its pixels ``(H, W)``.
      k: entries counted; as in Quantus, smaller than ``n`` (its default 1000 is for
        ImageNet: give ``k`` for small images).
      concept_influence: multiply by ``n / |mask|`` (1 for a map no better than chance).
      abs, normalise, normalise_func: Quantus's preparation of the map.

    Returns:
      Scalar; NaN for an empty mask.

    Raises:
      ValueError: if ``k`` is not an integer >= 1 smaller than ``n``.

    Examples:
      >>> a = jnp.arange(16.0).reshape(4, 4)  # a map growing down the image
      >>> mask = jnp.zeros((4, 4), bool).at[2:].set(True)  # the bottom half
      >>> float(slp.metrics.top_k_intersection(a, mask=mask, k=4))
      1.0
      >>> float(slp.metrics.top_k_intersection(a, mask=mask, k=4, concept_influence=True))
      2.0
    """
    a, s = _map_and_mask(
        attribution,
        mask,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
        name="TopKIntersection",
    )
    k = positive("k", k)
    if k >= a.size:
        raise ValueError(f"k must be smaller than the map's {a.size} entries, got k={k}")
    score = jnp.sum(s & (rank(-a) < k)) / k
    if concept_influence:
        score = score * a.size / jnp.maximum(jnp.sum(s), 1)
    return _nan_unless(s.any(), score)


@metric(
    "PointingGame",
    group="localisation",
    higher_is_better=True,
    reference='Zhang et al., "Top-down neural attention by excitation backprop", IJCV 126, 2018',
)
def pointing_game(
    attribution: jax.Array,
    *,
    mask: jax.Array | None = None,
    weighted: bool = False,
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """1 when a largest entry of the map lies on the mask, else 0.

    Quantus 0.6.0 stores this score in a boolean array: its NaN for an empty mask
    becomes True, and ``weighted=True`` fails (TypeError) once an example hits. Here an
    empty mask gives NaN and ``weighted`` gives ``1 - |mask| / n`` for a hit, as Quantus's
    documentation of the option describes.

    Args:
      attribution: map ``(H, W)`` or ``(H, W, C)`` of ``n`` entries.
      mask: bool, the map's shape or its pixels ``(H, W)``.
      weighted: score a hit ``1 - |mask| / n`` (a small target is harder to hit).
      abs, normalise, normalise_func: Quantus's preparation of the map.

    Returns:
      float scalar: 0, 1 (or the weighted hit), NaN for an empty mask.

    Examples:
      >>> a = jnp.arange(16.0).reshape(4, 4)  # a map growing down the image
      >>> mask = jnp.zeros((4, 4), bool).at[2:].set(True)  # the bottom half
      >>> float(slp.metrics.pointing_game(a, mask=mask))  # the largest entry, 15, is on it
      1.0
      >>> float(slp.metrics.pointing_game(-a, mask=mask))
      0.0
      >>> float(slp.metrics.pointing_game(a, mask=mask, weighted=True))  # 1 - 8 / 16
      0.5
    """
    a, s = _map_and_mask(
        attribution,
        mask,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
        name="PointingGame",
    )
    hit = jnp.any(s & (a == jnp.max(a))).astype(a.dtype)
    if weighted:
        hit = hit * (1 - jnp.sum(s) / s.size)
    return _nan_unless(s.any(), hit)


@metric(
    "AttributionLocalisation",
    group="localisation",
    higher_is_better=True,
    reference='Kohlbrenner et al., "Towards best practice in explaining neural network '
    'decisions with LRP", IJCNN 2020',
)
def attribution_localisation(
    attribution: jax.Array,
    *,
    mask: jax.Array | None = None,
    weighted: bool = False,
    max_size: float = 1.0,
    positive_attributions: bool = False,
    abs: bool = True,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Share of the map's sum on the mask, ``sum(a on mask) / (sum(a) + 1e-9)``.

    With ``weighted`` it is multiplied by the mask's share of the map, ``|mask| / n``.
    (Quantus 0.6.0 divides by the size of ``x_batch[2:]``, the batch from its third
    example on, instead of one image: its weighted scores depend on the batch size and
    equal these for a batch of three single-channel images.)

    Args:
      attribution: map ``(H, W)`` or ``(H, W, C)`` of ``n`` entries.
      mask: bool, the map's shape or its pixels ``(H, W)``.
      weighted: multiply by the mask's share of the map.
      max_size: Quantus only warns when the mask covers more than this share; accepted
        for the same calls, it changes nothing.
      positive_attributions: clip the map at 0 first.
      abs, normalise, normalise_func: Quantus's preparation of the map.

    Returns:
      Scalar; NaN for an empty mask or a share above 1.

    Examples:
      >>> a = jnp.arange(16.0).reshape(4, 4)  # a map growing down the image
      >>> mask = jnp.zeros((4, 4), bool).at[2:].set(True)  # the bottom half
      >>> round(float(slp.metrics.attribution_localisation(a, mask=mask)), 4)
      0.7667
      >>> round(float(slp.metrics.attribution_localisation(a, mask=mask, weighted=True)), 4)
      0.3833
    """
    del max_size  # a warning threshold in Quantus
    a, s = _map_and_mask(
        attribution,
        mask,
        abs=abs,
        normalise=normalise,
        normalise_func=normalise_func,
        name="AttributionLocalisation",
    )
    if positive_attributions:
        a = jnp.clip(a, 0, None)
    share = jnp.sum(jnp.where(s, a, 0)) / (jnp.sum(a) + 1e-9)
    ok = s.any() & (share <= 1)
    if weighted:
        share = share * jnp.sum(s) / s.size
    return _nan_unless(ok, share)


@metric(
    "Focus",
    group="localisation",
    higher_is_better=True,
    reference='Arias-Duart et al., "Focus! Rating XAI methods and finding biases", FUZZ-IEEE 2022',
)
def focus(
    attribution: jax.Array,
    *,
    mask: jax.Array | None = None,
    mosaic_shape=None,
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Share of the map's positive mass on the quadrants of a 2x2 mosaic showing the target.

    The input is a mosaic of four images; ``mask`` holds four flags, one per quadrant
    (top-left, top-right, bottom-left, bottom-right; Quantus's ``custom_batch``), 1 where
    the quadrant's image is of the target class. The score is
    ``sum(max(a, 0) on flagged quadrants) / (sum(max(a, 0)) + 1e-9)``.

    Args:
      attribution: map ``(H, W)`` or ``(H, W, C)`` of the mosaic; the quadrants split at
        ``H // 2`` and ``W // 2``.
      mask: ``(4,)`` quadrant flags.
      mosaic_shape: unused, as in Quantus.
      abs, normalise, normalise_func: Quantus's preparation of the map.

    Returns:
      Scalar in [0, 1].

    Raises:
      ValueError: if the map is not ``(H, W)`` or ``(H, W, C)``, or ``mask`` is not four
        flags.

    Examples:
      A 4x4 mosaic of four 2x2 images whose bottom-right one shows the target:

      >>> a = jnp.arange(16.0).reshape(4, 4)
      >>> round(float(slp.metrics.focus(a, mask=jnp.array([0, 0, 0, 1]))), 4)  # 50 / 120
      0.4167
      >>> round(float(slp.metrics.evaluate("Focus", None, a, a, mask=jnp.array([0, 0, 0, 1]))), 4)
      0.4167
    """
    del mosaic_shape  # unused by Quantus 0.6.0 as well
    a = prepare(attribution, None, abs=abs, normalise=normalise, normalise_func=normalise_func)
    if a.ndim not in (2, 3):
        raise ValueError(f"Focus needs an image map (H, W) or (H, W, C), got {a.shape}")
    if mask is None or jnp.shape(mask) != (4,):
        raise ValueError(
            "Focus needs mask=, the four quadrant flags (top-left, top-right, bottom-left, "
            f"bottom-right), shape (4,); got {None if mask is None else jnp.shape(mask)}"
        )
    h, w = a.shape[:2]
    rows = (jnp.arange(h) >= h // 2).astype(jnp.int32)
    cols = (jnp.arange(w) >= w // 2).astype(jnp.int32)
    quadrant = 2 * rows[:, None] + cols[None, :]
    weight = jnp.asarray(mask, a.dtype)[quadrant]
    if a.ndim == 3:
        weight = weight[..., None]
    a = jnp.clip(a, 0, None)
    return jnp.sum(weight * a) / (jnp.sum(a) + 1e-9)

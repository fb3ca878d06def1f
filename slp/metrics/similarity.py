"""Similarity of two maps: rank and linear correlations, cosine, pixel maps."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["pixel_map", "average_ranks", "pearson", "spearman", "cosine_similarity", "ssim"]


def pixel_map(values: jax.Array) -> jax.Array:
    """A map ``(H, W)`` from ``(H, W)`` or ``(H, W, C)`` (channels summed).

    Summing over channels keeps the signed total contribution of each pixel.

    Args:
      values: array ``(H, W)`` or ``(H, W, C)``, JAX or NumPy.

    Returns:
      Array ``(H, W)`` of the same kind (NumPy in, NumPy out).

    Raises:
      ValueError: if ``values`` has neither 2 nor 3 axes.

    Examples:
      >>> a = jnp.stack([jnp.ones((2, 3)), -2 * jnp.ones((2, 3))], axis=-1)  # (H, W, 2)
      >>> slp.metrics.pixel_map(a)
      Array([[-1., -1., -1.],
             [-1., -1., -1.]], dtype=float32)
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

    Examples:
      >>> slp.metrics.average_ranks(jnp.array([3.0, 1.0, 3.0, 2.0]))
      Array([3.5, 1. , 3.5, 2. ], dtype=float32)
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

    Examples:
      >>> round(float(slp.metrics.pearson(jnp.array([1.0, 2, 3]), jnp.array([2.0, 4, 7]))), 4)
      0.9934
      >>> float(slp.metrics.pearson(jnp.array([1.0, 2, 3]), jnp.ones(3)))  # a constant map
      nan
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
      Scalar in [-1, 1]; NaN when either map is constant or has a NaN or inf entry (whose
      rank is undefined).

    Examples:
      >>> float(slp.metrics.spearman(jnp.array([1.0, 2, 3]), jnp.array([2.0, 4, 7])))
      1.0
      >>> float(slp.metrics.spearman(jnp.arange(4.0), jnp.array([0.0, 1, 1, 0])))
      0.0
    """
    a, b = _pair(a, b)
    finite = jnp.all(jnp.isfinite(a)) & jnp.all(jnp.isfinite(b))
    return jnp.where(finite, pearson(average_ranks(a), average_ranks(b)), jnp.nan)


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine of the angle between two maps ``a`` and ``b`` (flattened).

    Args:
      a: array with ``n`` entries.
      b: array with ``n`` entries.

    Returns:
      Scalar in [-1, 1]; NaN when either map is all zero.

    Examples:
      >>> round(float(slp.metrics.cosine_similarity(jnp.array([1.0, 0]), jnp.ones(2))), 4)
      0.7071
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


def ssim(a: jax.Array, b: jax.Array, *, win_size: int = 7) -> jax.Array:
    """Structural similarity of two maps, flattened (Wang et al. 2004), as Quantus computes it.

    Quantus (RandomLogit's default similarity) calls scikit-image's
    ``structural_similarity`` on the two maps flattened to vectors, with ``data_range`` the
    spread of both maps together: means, variances (sample, ``n / (n - 1)``) and covariance
    over sliding windows of ``win_size`` entries, ``K1 = 0.01``, ``K2 = 0.03``, averaged
    over the windows that fit inside the vector.

    Args:
      a: array with ``n`` entries (``n >= win_size``).
      b: array with ``n`` entries.
      win_size: odd window length.

    Returns:
      Scalar, 1 for equal maps; NaN when both maps are one constant.

    Raises:
      ValueError: if ``win_size`` is even or larger than ``n``.

    Examples:
      >>> a = jnp.arange(16.0)
      >>> float(slp.metrics.ssim(a, a)), round(float(slp.metrics.ssim(a, a**2)), 4)
      (1.0, 0.0649)
    """
    a, b = _pair(a, b)
    if win_size % 2 != 1 or win_size > a.size:
        raise ValueError(f"win_size must be odd and at most {a.size}, got {win_size}")
    spread = jnp.abs(jnp.maximum(a.max(), b.max()) - jnp.minimum(a.min(), b.min()))
    c1, c2 = (0.01 * spread) ** 2, (0.03 * spread) ** 2
    window = jnp.full(win_size, 1 / win_size, a.dtype)

    def mean(v):
        return jnp.convolve(v, window, mode="valid")

    ua, ub = mean(a), mean(b)
    norm = win_size / (win_size - 1)
    va, vb = norm * (mean(a * a) - ua * ua), norm * (mean(b * b) - ub * ub)
    vab = norm * (mean(a * b) - ua * ub)
    s = (2 * ua * ub + c1) * (2 * vab + c2) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    return jnp.mean(s)

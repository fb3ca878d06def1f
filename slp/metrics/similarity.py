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

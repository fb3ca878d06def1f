"""Localisation: how much of a map lies on a region known to matter (a segmentation mask)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["mass_on_mask"]


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

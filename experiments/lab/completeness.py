"""State changes: how fast perturbing a map's top pixels switches hidden neurons on or off.

The paper (section 4) says Insens is "more complete": it reflects the patterns that
switch neurons off, that is, the patterns that decide the network's state (eq. 3). This
module measures exactly that. The pixels of an image are perturbed in the order of a map
(most important first), a share k of the pixels at a time (k = 1-20% by default), and at
each k the hidden neurons whose state changed (active <-> inactive, `slp.activation_pattern`)
are counted, per ReLU layer. A map that captures the patterns that affect the
computation changes the activation pattern fastest: its curve rises above that of a
random order and of a blurred random order (random blobs, as large as a stroke), which
perturb as many pixels.

Two replacements of a perturbed pixel:

- ``"baseline"``: the pixel takes the value ``baseline`` (0, MNIST's background). A pixel
  that already holds the baseline is not changed at all, so a map that points at the
  background changes nothing here, whatever those pixels do to the state.
- ``"noise"``: the pixel becomes ``clip(x + sigma * z, low, high)`` with ``z ~ N(0, 1)``
  drawn once per pixel (the same draw at every k, so the perturbed sets are nested).
  Background pixels change too, so a map that points at the background is tested.

`state_changes` is a pure function of one example (batch it with `jax.vmap`); the score
of a map is `area` of its curve: the mean, over the k grid, of the share of hidden
neurons whose state changed (higher = the map finds the state-deciding pixels faster).

This belongs with the evaluation metrics of `slp.metrics` (as ``state_change``, next to
the Quantus-named perturbation metrics) once that package's layout has settled.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import slp
from slp import metrics

__all__ = [
    "DEFAULT_FRACTIONS",
    "REPLACEMENTS",
    "StateChanges",
    "area",
    "blurred_random_scores",
    "state_changes",
]

DEFAULT_FRACTIONS = tuple(k / 100 for k in range(1, 21))
"""Shares of the pixels perturbed: 1%, 2%, ..., 20%."""

REPLACEMENTS = ("baseline", "noise")


class StateChanges(NamedTuple):
    """Hidden neurons whose state changed as the top pixels of a map are perturbed.

    Attributes:
      fraction: ``(K,)`` share of the image's pixels perturbed.
      pixels: int ``(K,)`` pixels perturbed (``ceil(fraction * H * W)``).
      changed: int ``(K, L)`` neurons of each of the L ReLU layers whose state (active:
        activity > 0) differs from the unperturbed image's.
      neurons: int ``(L,)`` neurons of each ReLU layer.
    """

    fraction: jax.Array
    pixels: jax.Array
    changed: jax.Array
    neurons: jax.Array


def _pattern(f: Callable, x: jax.Array) -> tuple[jax.Array, ...]:
    return slp.activation_pattern(f)(x)


def state_changes(
    f: Callable,
    x: jax.Array,
    scores: jax.Array,
    *,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    replacement: str = "baseline",
    baseline: Any = 0.0,
    sigma: float = 1.0,
    low: float = 0.0,
    high: float = 1.0,
    key: jax.Array | None = None,
) -> StateChanges:
    """Neurons that change state when the top-scored pixels of ``x`` are perturbed.

    A pixel is all channels of one image position; pixels are taken by decreasing score
    (`slp.metrics.pixel_order`, ties in raster order).

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one image ``(H, W, C)``.
      scores: pixel scores ``(H, W)`` (for a map ``(H, W, C)`` use `slp.metrics.pixel_map`,
        or its absolute value to order by magnitude).
      fractions: shares of the ``H * W`` pixels perturbed, each in ``(0, 1]``.
      replacement: ``"baseline"`` or ``"noise"`` (module docstring).
      baseline: the value of a perturbed pixel under ``"baseline"``: a scalar, or one value
        per channel ``(C,)`` (e.g. a data set's mean colour).
      sigma: noise standard deviation under ``"noise"``.
      low, high: the input range noisy pixels are clipped to.
      key: PRNG key of the noise (required for ``"noise"``).

    Returns:
      `StateChanges` with ``K = len(fractions)`` and one column per ReLU layer of ``f``.
    """
    x = jnp.asarray(x)
    scores = jnp.asarray(scores)
    if x.ndim != 3:
        raise ValueError(f"x must be one image (H, W, C); got shape {x.shape}")
    if scores.shape != x.shape[:2]:
        raise ValueError(f"scores must be shaped (H, W) = {x.shape[:2]}; got {scores.shape}")
    if replacement not in REPLACEMENTS:
        raise ValueError(f"replacement must be one of {REPLACEMENTS}; got {replacement!r}")
    fr = tuple(float(k) for k in fractions)
    if not fr or any(not 0.0 < k <= 1.0 for k in fr):
        raise ValueError(f"fractions must be a non-empty list of shares in (0, 1]; got {fractions}")
    if replacement == "noise":
        if key is None:
            raise ValueError("replacement='noise' needs a PRNG key")
        noisy = jnp.clip(x + sigma * jax.random.normal(key, x.shape, x.dtype), low, high)
    else:
        noisy = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    h, w = x.shape[:2]
    rank = metrics.pixel_order(scores)  # (H, W): 0 = perturbed first
    # round(., 6) first: 0.07 * 100 is 7.000000000000001, which must not become 8 pixels
    pixels = jnp.asarray([max(math.ceil(round(k * h * w, 6)), 1) for k in fr], jnp.int32)

    clean = _pattern(f, x)

    def one(n):
        hit = (rank < n)[:, :, None]
        perturbed = _pattern(f, jnp.where(hit, noisy, x))
        return tuple(jnp.sum(p != c) for p, c in zip(perturbed, clean, strict=True))

    changed = jnp.stack(jax.lax.map(one, pixels), axis=-1)
    neurons = jnp.asarray([c.size for c in clean], jnp.int32)
    return StateChanges(jnp.asarray(fr, x.dtype), pixels, changed.astype(jnp.int32), neurons)


def area(changes: StateChanges) -> jax.Array:
    """The score of a curve: mean over the k grid of the share of hidden neurons changed.

    Args:
      changes: one image's `StateChanges` (``changed (K, L)``, ``neurons (L,)``).

    Returns:
      Scalar in [0, 1]: ``mean_k sum_l changed[k, l] / sum_l neurons[l]``.
    """
    total = jnp.sum(changes.neurons)
    return jnp.mean(jnp.sum(changes.changed, axis=-1) / total)


def blurred_random_scores(key: jax.Array, shape: Sequence[int], *, width: float = 2.0) -> jax.Array:
    """Pixel scores of a blurred random order: uniform noise smoothed by a Gaussian.

    Perturbing by these scores removes random blobs about ``2 * width`` pixels across
    instead of scattered pixels (a control with the spatial coherence of a real map).

    Args:
      key: PRNG key.
      shape: ``(H, W)``.
      width: the Gaussian's standard deviation in pixels (> 0).

    Returns:
      float32 ``(H, W)``.
    """
    if width <= 0:
        raise ValueError(f"width must be positive; got {width}")
    h, w = (int(s) for s in shape)
    u = jax.random.uniform(key, (h, w))
    radius = int(3 * width)
    t = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    g = jnp.exp(-0.5 * (t / width) ** 2)
    g = g / g.sum()
    # separable blur, edges padded with the mean so that corners are not favoured
    pad = jnp.pad(u, radius, constant_values=0.5)
    rows = jax.vmap(lambda r: jnp.convolve(r, g, mode="valid"))(pad)
    return jax.vmap(lambda c: jnp.convolve(c, g, mode="valid"), in_axes=1, out_axes=1)(rows)

"""The paper's noisy MNIST variants (section 5.1, Figure 4): bordered, background, framed.

The paper does not define its terms precisely; this module fixes them, and every
constant below is also the default of the matching keyword argument:

- **digit**: the pixels whose intensity is strictly above `DIGIT_THRESHOLD`
  (0.1 on the [0, 1] scale, i.e. > 25.5/255): every visibly inked pixel, so the
  faint anti-aliased rim of a stroke belongs to the digit. For multi-channel
  images a pixel is digit when any channel is above the threshold.
- **outline**: the pixels added by a binary dilation of the digit by
  `OUTLINE_RADIUS` = 3 pixels with a square structuring element, i.e. every
  non-digit pixel within Chebyshev distance 3 of the digit (the same as three
  iterations of an 8-connected 3x3 dilation).
- **frame**: the first `count` pixels of the image in *frame order*: ring by ring
  from the border inwards (ring = `min(i, j, H-1-i, W-1-j)`), each ring clockwise
  from its top-left corner. So the frame hugs the image border and grows inwards.
- **noise**: `x' = clip(x + sigma * z, 0, 1)` with `z ~ N(0, 1)` i.i.d. per pixel
  (per element for multi-channel images), applied to the noisy pixels only; clean
  pixels keep their exact values. `z` depends only on the key, so one key gives
  the same noise pattern, scaled, at every `sigma`.

Variants (which pixels stay clean; everything else gets noise):

- `"bordered"`: the digit and its 3-pixel outline.
- `"background"`: the digit only.
- `"framed"`: the digit, plus a frame with as many pixels as the outline
  (the outline's clean pixels moved to the image border). This reading keeps
  the paper's control exact: framed differs from bordered only in *where* the
  extra clean pixels are, and from background only in having them.
- `"framed_noisy_digit"`: the other reading of the paper's sentence: only a
  frame with as many pixels as the outline is clean, the digit gets noise too.

`DEFAULT_SIGMA` = 2.0 is the noise strength the experiment reports by default.
The paper does not state its own; 2.0 is the value of the sweep (0.1 ... 3.0) at
which our clean-trained 2CONV comes closest to the paper's accuracies on the two
unambiguously defined variants, bordered (87%) and background (32%). Noise that
strong saturates: after clipping, most noisy pixels are 0 or 1. See
`experiments/mnist_noise.py` and results/mnist_noise.md for the sweep.

All functions are pure functions of one example (batch with `jax.vmap`); the
PRNG key is an explicit argument; `variant`, `threshold` and `radius` are static.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from slp._src.guards import check_key
from slp.config import DEFAULT_SIGMA

__all__ = [
    "DIGIT_THRESHOLD",
    "OUTLINE_RADIUS",
    "DEFAULT_SIGMA",
    "VARIANTS",
    "digit_mask",
    "outline_mask",
    "frame_mask",
    "clean_mask",
    "add_noise",
    "make_noisy",
    "make_noisy_batch",
    "bordered",
    "background",
    "framed",
]

DIGIT_THRESHOLD = 0.1
"""A pixel is digit when its intensity (in [0, 1]) is strictly above this."""

OUTLINE_RADIUS = 3
"""Width in pixels of the outline around the digit (square dilation radius)."""


VARIANTS = ("bordered", "background", "framed", "framed_noisy_digit")
"""Names accepted by `clean_mask` and `make_noisy`; the first three are the paper's."""


def _spatial(x: jax.Array) -> jax.Array:
    """`(H, W)` intensities of an `(H, W)` or `(H, W, C)` image (max over channels)."""
    if x.ndim == 2:
        return x
    if x.ndim == 3:
        return jnp.max(x, axis=-1)
    raise ValueError(f"expected one image shaped (H, W) or (H, W, C), got shape {x.shape}")


def digit_mask(x: jax.Array, *, threshold: float = DIGIT_THRESHOLD) -> jax.Array:
    """The digit: pixels with intensity strictly above `threshold`.

    Args:
      x: one image `(H, W)` or `(H, W, C)` with intensities in [0, 1].
      threshold: intensity a digit pixel must exceed.

    Returns:
      bool array `(H, W)`.

    Examples:
      >>> x = jnp.zeros((8, 8)).at[3:5, 3:5].set(1.0)  # a 2x2 "digit"
      >>> int(slp.noise.digit_mask(x).sum())
      4
    """
    return _spatial(jnp.asarray(x)) > threshold


def dilate(mask: jax.Array, *, radius: int = OUTLINE_RADIUS) -> jax.Array:
    """Binary dilation with a `(2 radius + 1)` square structuring element.

    A pixel is set when any set pixel lies within Chebyshev distance `radius`;
    pixels outside the image count as unset.

    Args:
      mask: bool array `(H, W)`.
      radius: dilation radius in pixels (>= 0).

    Returns:
      bool array `(H, W)`.
    """
    mask = jnp.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"dilate expects a 2-D mask (H, W), got shape {mask.shape}")
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    # A square window is separable: dilate rows, then columns.
    m = mask.astype(jnp.int32)
    k = 2 * radius + 1
    pad = ((radius, radius), (radius, radius))
    m = jax.lax.reduce_window(m, 0, jax.lax.max, (k, 1), (1, 1), padding=(pad[0], (0, 0)))
    m = jax.lax.reduce_window(m, 0, jax.lax.max, (1, k), (1, 1), padding=((0, 0), pad[1]))
    return m > 0


def outline_mask(
    x: jax.Array, *, threshold: float = DIGIT_THRESHOLD, radius: int = OUTLINE_RADIUS
) -> jax.Array:
    """The outline: pixels within `radius` of the digit that are not digit themselves.

    Args:
      x: one image `(H, W)` or `(H, W, C)` in [0, 1].
      threshold: see `digit_mask`.
      radius: see `dilate`.

    Returns:
      bool array `(H, W)`.

    Examples:
      >>> x = jnp.zeros((8, 8)).at[3:5, 3:5].set(1.0)  # a 2x2 "digit"
      >>> int(slp.noise.outline_mask(x, radius=1).sum())  # the ring around it
      12
    """
    digit = digit_mask(x, threshold=threshold)
    return dilate(digit, radius=radius) & ~digit


@functools.lru_cache(maxsize=16)
def _frame_order_np(height: int, width: int) -> np.ndarray:
    order = np.full((height, width), -1, dtype=np.int32)
    rank = 0
    ring = 0
    while ring <= (min(height, width) - 1) // 2:
        top, left, bottom, right = ring, ring, height - 1 - ring, width - 1 - ring
        path = [(top, j) for j in range(left, right + 1)]
        path += [(i, right) for i in range(top + 1, bottom + 1)]
        if bottom > top:
            path += [(bottom, j) for j in range(right - 1, left - 1, -1)]
        if right > left:
            path += [(i, left) for i in range(bottom - 1, top, -1)]
        for i, j in path:
            order[i, j] = rank
            rank += 1
        ring += 1
    assert rank == height * width and (order >= 0).all()
    order.setflags(write=False)
    return order


def frame_order(height: int, width: int) -> np.ndarray:
    """Rank of every pixel in frame order (border rings inwards, each clockwise).

    Args:
      height: image height H.
      width: image width W.

    Returns:
      int32 numpy array `(H, W)` holding a permutation of `0 .. H*W - 1`.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    return _frame_order_np(int(height), int(width))


def frame_mask(shape: tuple[int, int], count: jax.Array | int) -> jax.Array:
    """A frame of `count` pixels along the image border (see `frame_order`).

    Args:
      shape: `(H, W)`.
      count: number of frame pixels (may be traced; clipped to [0, H*W]).

    Returns:
      bool array `(H, W)` with exactly `clip(count, 0, H*W)` pixels set.

    Raises:
      ValueError: `shape` is not `(H, W)`.

    Examples:
      >>> slp.noise.frame_mask((4, 4), 5).astype(int)
      Array([[1, 1, 1, 1],
             [0, 0, 0, 1],
             [0, 0, 0, 0],
             [0, 0, 0, 0]], dtype=int32)
    """
    if len(shape) != 2:
        raise ValueError(f"frame_mask expects shape (H, W), got {shape}")
    return jnp.asarray(frame_order(*shape)) < count


def clean_mask(
    variant: str,
    x: jax.Array,
    *,
    threshold: float = DIGIT_THRESHOLD,
    radius: int = OUTLINE_RADIUS,
) -> jax.Array:
    """Pixels that `variant` keeps clean (see the module docstring).

    Args:
      variant: one of `VARIANTS`.
      x: one image `(H, W)` or `(H, W, C)` in [0, 1].
      threshold: see `digit_mask`.
      radius: see `dilate`.

    Returns:
      bool array `(H, W)`.

    Raises:
      ValueError: an unknown `variant`.

    Examples:
      >>> x = jnp.zeros((8, 8)).at[3:5, 3:5].set(1.0)  # a 2x2 "digit"
      >>> {v: int(slp.noise.clean_mask(v, x, radius=1).sum()) for v in slp.noise.VARIANTS}
      {'bordered': 16, 'background': 4, 'framed': 16, 'framed_noisy_digit': 12}
    """
    digit = digit_mask(x, threshold=threshold)
    grown = dilate(digit, radius=radius)
    if variant == "bordered":
        return grown
    if variant == "background":
        return digit
    if variant in ("framed", "framed_noisy_digit"):
        n_outline = jnp.sum(grown & ~digit)
        frame = frame_mask(digit.shape, n_outline)
        return frame | digit if variant == "framed" else frame
    raise ValueError(f"unknown noise variant {variant!r}; expected one of {VARIANTS}")


def add_noise(key: jax.Array, x: jax.Array, clean: jax.Array, *, sigma: float) -> jax.Array:
    """Adds clipped Gaussian noise to every pixel not in `clean`.

    `x' = clip(x + sigma * z, 0, 1)` on noisy pixels, `x' = x` on clean ones,
    with `z = jax.random.normal(key, x.shape)`.

    Args:
      key: PRNG key.
      x: one image `(H, W)` or `(H, W, C)` in [0, 1].
      clean: bool `(H, W)`: pixels left untouched.
      sigma: noise standard deviation (>= 0; may be traced).

    Returns:
      array shaped and typed like `x`.

    Raises:
      ValueError: `clean`'s shape is not `x`'s `(H, W)`; a concrete `sigma` is negative or a
        concrete `x` is outside [0, 1].
      TypeError: `key` is a seed (a number), not a PRNG key.

    Examples:
      >>> x = jnp.zeros((8, 8)).at[3:5, 3:5].set(1.0)  # a 2x2 "digit"
      >>> y = slp.noise.add_noise(jax.random.key(0), x, slp.noise.digit_mask(x), sigma=0.5)
      >>> bool((y[3:5, 3:5] == 1).all()), bool((y >= 0).all() & (y <= 1).all())
      (True, True)
    """
    x = jnp.asarray(x)
    if clean.shape != x.shape[:2]:
        raise ValueError(f"clean mask shape {clean.shape} does not match image shape {x.shape}")
    _check_concrete(x, sigma)
    check_key(key, "noise")
    z = jax.random.normal(key, x.shape, dtype=x.dtype)
    noisy = jnp.clip(x + sigma * z, 0.0, 1.0)
    keep = clean if x.ndim == 2 else clean[..., None]
    return jnp.where(keep, x, noisy)


def _check_concrete(x: jax.Array, sigma) -> None:
    """Refuses a concrete negative ``sigma`` and a concrete image outside [0, 1], whose noisy
    pixels the clipping to [0, 1] would flatten (traced ones pass: they cannot be read)."""
    if not isinstance(sigma, jax.core.Tracer) and np.ndim(sigma) == 0 and float(sigma) < 0:
        raise ValueError(f"sigma must be >= 0, got {float(sigma)}")
    if isinstance(x, jax.core.Tracer) or x.size == 0:
        return
    lo, hi = float(jnp.min(x)), float(jnp.max(x))
    if lo < -1e-6 or hi > 1 + 1e-6:  # rounding of a transform of [0, 1] data passes
        raise ValueError(
            f"the noise model takes intensities in [0, 1] (noisy pixels are clipped to it); "
            f"the image holds [{lo:.4g}, {hi:.4g}]: scale it first (e.g. / 255)"
        )


def make_noisy(
    variant: str,
    key: jax.Array,
    x: jax.Array,
    *,
    sigma: float = DEFAULT_SIGMA,
    threshold: float = DIGIT_THRESHOLD,
    radius: int = OUTLINE_RADIUS,
) -> jax.Array:
    """One noisy variant of one image: `add_noise(key, x, clean_mask(variant, x))`.

    Args:
      variant: one of `VARIANTS` (static).
      key: PRNG key.
      x: one image `(H, W)` or `(H, W, C)` in [0, 1].
      sigma: noise standard deviation.
      threshold: digit threshold (static).
      radius: outline width (static).

    Returns:
      array shaped like `x`.

    Examples:
      >>> x = jnp.zeros((8, 8)).at[3:5, 3:5].set(1.0)  # a 2x2 "digit"
      >>> y = slp.noise.make_noisy("bordered", jax.random.key(0), x, radius=1)
      >>> bool((y == x)[2:6, 2:6].all())  # the digit and its 1-pixel outline stay clean
      True
    """
    clean = clean_mask(variant, x, threshold=threshold, radius=radius)
    return add_noise(key, x, clean, sigma=sigma)


@functools.partial(jax.jit, static_argnames="variant")
def make_noisy_batch(
    variant: str, keys: jax.Array, images: jax.Array, *, sigma: float = DEFAULT_SIGMA
) -> jax.Array:
    """`make_noisy` over a batch: one key per image, compiled once per variant and shape.

    ``sigma`` is traced, so a sweep over noise strengths reuses one compiled program (and
    gives the same bits for every strength as that program; an eager call can differ from
    it in the last bit of a pixel).

    Args:
      variant: one of `VARIANTS` (static).
      keys: PRNG keys `(N,)`.
      images: `(N, H, W)` or `(N, H, W, C)` in [0, 1].
      sigma: noise standard deviation.

    Returns:
      array shaped like `images`.

    Examples:
      >>> x = jnp.zeros((8, 8)).at[3:5, 3:5].set(1.0)  # a 2x2 "digit"
      >>> keys = jax.random.split(jax.random.key(0), 3)
      >>> slp.noise.make_noisy_batch("background", keys, jnp.stack([x, x, x]), sigma=1.0).shape
      (3, 8, 8)
    """
    return jax.vmap(lambda k, x: make_noisy(variant, k, x, sigma=sigma))(keys, images)


def bordered(key: jax.Array, x: jax.Array, **options) -> jax.Array:
    """Noise everywhere except the digit and its outline: `make_noisy("bordered", ...)`.

    Args:
      key: PRNG key.
      x: one image `(H, W)` or `(H, W, C)` in [0, 1].
      **options: `sigma`, `threshold`, `radius` of `make_noisy`.

    Returns:
      array shaped like `x`.

    Examples:
      >>> x = jnp.zeros((8, 8)).at[3:5, 3:5].set(1.0)
      >>> slp.noise.bordered(jax.random.key(0), x, sigma=1.0).shape
      (8, 8)
    """
    return make_noisy("bordered", key, x, **options)


def background(key: jax.Array, x: jax.Array, **options) -> jax.Array:
    """Noise everywhere except the digit: `make_noisy("background", ...)`.

    Args:
      key: PRNG key.
      x: one image `(H, W)` or `(H, W, C)` in [0, 1].
      **options: `sigma`, `threshold`, `radius` of `make_noisy`.

    Returns:
      array shaped like `x`.

    Examples:
      >>> x = jnp.zeros((8, 8)).at[3:5, 3:5].set(1.0)
      >>> slp.noise.background(jax.random.key(0), x, sigma=1.0).shape
      (8, 8)
    """
    return make_noisy("background", key, x, **options)


def framed(key: jax.Array, x: jax.Array, **options) -> jax.Array:
    """Digit and a border frame as large as the outline clean: `make_noisy("framed", ...)`.

    Args:
      key: PRNG key.
      x: one image `(H, W)` or `(H, W, C)` in [0, 1].
      **options: `sigma`, `threshold`, `radius` of `make_noisy`.

    Returns:
      array shaped like `x`.

    Examples:
      >>> x = jnp.zeros((8, 8)).at[3:5, 3:5].set(1.0)
      >>> slp.noise.framed(jax.random.key(0), x, sigma=1.0).shape
      (8, 8)
    """
    return make_noisy("framed", key, x, **options)

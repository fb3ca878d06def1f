"""Tests of slp.noise against hand-built images, scipy's dilation and the normal distribution."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from slp import noise


def square_digit(size: int = 28, top: int = 13, left: int = 13, side: int = 2) -> np.ndarray:
    x = np.zeros((size, size), np.float32)
    x[top : top + side, left : left + side] = 1.0
    return x


def test_digit_mask_is_strictly_above_the_threshold():
    x = np.array([[0.0, 0.1, 0.10001], [0.5, 1.0, 0.05]], np.float32)
    np.testing.assert_array_equal(noise.digit_mask(x), [[False, False, True], [True, True, False]])
    np.testing.assert_array_equal(
        noise.digit_mask(x, threshold=0.6), [[False, False, False], [False, True, False]]
    )
    assert noise.DIGIT_THRESHOLD == 0.1


def test_digit_mask_of_a_multichannel_image_uses_any_channel():
    x = np.zeros((2, 2, 3), np.float32)
    x[0, 1, 2] = 0.9
    np.testing.assert_array_equal(noise.digit_mask(x), [[False, True], [False, False]])


def test_dilation_of_single_pixels_by_hand():
    m = np.zeros((10, 10), bool)
    m[5, 5] = True
    out = np.asarray(noise.dilate(m, radius=3))
    expected = np.zeros((10, 10), bool)
    expected[2:9, 2:9] = True  # the 7x7 square centred on (5, 5)
    np.testing.assert_array_equal(out, expected)
    # At a corner the square is cut off by the image border.
    m = np.zeros((10, 10), bool)
    m[0, 9] = True
    out = np.asarray(noise.dilate(m, radius=3))
    assert out.sum() == 16 and out[:4, 6:].all()
    np.testing.assert_array_equal(noise.dilate(m, radius=0), m)


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_dilation_matches_scipy(radius):
    rng = np.random.default_rng(radius)
    for _ in range(5):
        m = rng.random((28, 28)) < 0.03
        ref = ndimage.binary_dilation(m, structure=np.ones((3, 3), bool), iterations=radius)
        np.testing.assert_array_equal(np.asarray(noise.dilate(m, radius=radius)), ref)


def test_dilation_rejects_bad_input():
    with pytest.raises(ValueError, match="2-D mask"):
        noise.dilate(np.zeros((2, 2, 1), bool))
    with pytest.raises(ValueError, match="radius"):
        noise.dilate(np.zeros((2, 2), bool), radius=-1)


def test_frame_order_by_hand():
    expected = np.array(
        [
            [0, 1, 2, 3, 4, 5],
            [17, 18, 19, 20, 21, 6],
            [16, 27, 28, 29, 22, 7],
            [15, 26, 25, 24, 23, 8],
            [14, 13, 12, 11, 10, 9],
        ]
    )
    np.testing.assert_array_equal(noise.frame_order(5, 6), expected)
    for h, w in [(28, 28), (1, 4), (4, 1), (3, 3), (7, 4)]:
        order = noise.frame_order(h, w)
        assert sorted(order.ravel().tolist()) == list(range(h * w))


def test_frame_mask_fills_the_border_ring_first():
    # The outermost ring of a 28x28 image has 4 * 27 = 108 pixels.
    m = np.asarray(noise.frame_mask((28, 28), 108))
    ring = np.ones((28, 28), bool)
    ring[1:-1, 1:-1] = False
    np.testing.assert_array_equal(m, ring)
    assert np.asarray(noise.frame_mask((28, 28), 0)).sum() == 0
    assert np.asarray(noise.frame_mask((28, 28), 10_000)).sum() == 784
    m = np.asarray(noise.frame_mask((28, 28), 5))
    assert m.sum() == 5 and m[0, :5].all()


def test_clean_masks_of_a_square_digit_by_hand():
    x = square_digit()  # 2x2 digit at rows/cols 13..14
    digit = np.zeros((28, 28), bool)
    digit[13:15, 13:15] = True
    grown = np.zeros((28, 28), bool)
    grown[10:18, 10:18] = True  # 2 + 2 * 3 = 8 pixels wide
    np.testing.assert_array_equal(noise.clean_mask("background", x), digit)
    np.testing.assert_array_equal(noise.clean_mask("bordered", x), grown)
    np.testing.assert_array_equal(noise.outline_mask(x), grown & ~digit)
    # 64 - 4 = 60 outline pixels: the top row (28), the right column below it (27) and
    # the 5 rightmost pixels of the bottom row except its corner.
    frame = np.zeros((28, 28), bool)
    frame[0, :] = True
    frame[1:, 27] = True
    frame[27, 22:27] = True
    assert frame.sum() == 60
    np.testing.assert_array_equal(noise.clean_mask("framed_noisy_digit", x), frame)
    np.testing.assert_array_equal(noise.clean_mask("framed", x), frame | digit)
    with pytest.raises(ValueError, match="unknown noise variant 'speckle'"):
        noise.clean_mask("speckle", x)


def test_noise_spares_clean_pixels_and_stays_in_unit_interval():
    x = square_digit()
    key = jax.random.key(0)
    for variant in noise.VARIANTS:
        y = np.asarray(noise.make_noisy(variant, key, x, sigma=0.7))
        clean = np.asarray(noise.clean_mask(variant, x))
        np.testing.assert_array_equal(y[clean], x[clean])
        assert y.min() >= 0.0 and y.max() <= 1.0
        assert (y[~clean] != x[~clean]).mean() > 0.3  # most noisy pixels did change
    np.testing.assert_array_equal(noise.make_noisy("bordered", key, x, sigma=0.0), x)


def test_noise_refuses_a_negative_sigma_an_image_outside_the_unit_range_and_a_seed():
    x, key = square_digit(), jax.random.key(0)
    with pytest.raises(ValueError, match="sigma must be >= 0, got -0.5"):
        noise.make_noisy("bordered", key, x, sigma=-0.5)
    with pytest.raises(ValueError, match=r"intensities in \[0, 1\].*\[0, 255\].*/ 255"):
        noise.make_noisy("background", key, x * 255, sigma=0.5)
    with pytest.raises(TypeError, match=r"key must be a PRNG key, jax.random.key\(0\)"):
        noise.make_noisy("framed", 0, x, sigma=0.5)
    # traced values cannot be read: under vmap an image is not checked, and is clipped
    y = noise.make_noisy_batch("bordered", jax.random.split(key, 1), jnp.asarray(x[None] * 2))
    assert float(y.max()) <= 2.0
    noise.make_noisy("bordered", key, x * (1 + 1e-7), sigma=0.5)  # rounding passes


def _clipped_normal_mean(sigma: float) -> float:
    """E[clip(sigma Z, 0, 1)] for Z ~ N(0, 1), from the normal pdf and cdf."""
    a = 1.0 / sigma
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    cdf_upper = 0.5 * math.erfc(a / math.sqrt(2))  # P(Z > a)
    # sigma * E[Z; 0 < Z < a] + 1 * P(Z > a)
    return sigma * (1 / math.sqrt(2 * math.pi) - phi) + cdf_upper


@pytest.mark.parametrize("sigma", [0.3, 1.0])
def test_noise_statistics_on_a_blank_image(sigma):
    x = np.zeros((300, 300), np.float32)
    y = np.asarray(noise.background(jax.random.key(1), x, sigma=sigma))
    n = y.size
    # Half of the pixels are clipped to 0 (negative noise).
    assert abs((y == 0).mean() - 0.5) < 4 * 0.5 / math.sqrt(n)
    expected = _clipped_normal_mean(sigma)
    assert abs(y.mean() - expected) < 5 * 0.5 / math.sqrt(n)
    # Fraction clipped at 1: P(Z >= 1 / sigma).
    p1 = 0.5 * math.erfc(1 / sigma / math.sqrt(2))
    assert abs((y == 1).mean() - p1) < 5 * math.sqrt(p1 * (1 - p1) / n) + 1e-4


def test_one_key_gives_the_same_noise_scaled_by_sigma():
    x = np.zeros((40, 40), np.float32)
    key = jax.random.key(3)
    small = np.asarray(noise.background(key, x, sigma=0.1))
    large = np.asarray(noise.background(key, x, sigma=0.2))
    inside = (small > 0) & (large < 1)  # pixels clipped by neither
    assert inside.sum() > 500
    np.testing.assert_allclose(large[inside], 2 * small[inside], rtol=1e-5)
    other = np.asarray(noise.background(jax.random.key(4), x, sigma=0.1))
    assert not np.array_equal(other, small)


def test_variants_vmap_and_jit_over_a_batch():
    xs = np.stack([square_digit(left=8 + 4 * i) for i in range(4)])
    keys = jax.random.split(jax.random.key(0), 4)
    for variant in noise.VARIANTS:
        fn = jax.jit(jax.vmap(lambda k, x, v=variant: noise.make_noisy(v, k, x, sigma=0.5)))
        batch = np.asarray(fn(keys, xs))
        one_by_one = np.stack(
            [np.asarray(noise.make_noisy(variant, keys[i], xs[i], sigma=0.5)) for i in range(4)]
        )
        np.testing.assert_allclose(batch, one_by_one, atol=1e-6)
        batch = np.asarray(noise.make_noisy_batch(variant, keys, xs, sigma=0.5))
        np.testing.assert_allclose(batch, one_by_one, atol=1e-6)
    # sigma may be traced.
    sweep = jax.jit(lambda s: noise.bordered(keys[0], xs[0], sigma=s))
    assert sweep(0.2).shape == (28, 28)


def test_multichannel_images_keep_the_clean_mask_in_every_channel():
    x = np.repeat(square_digit()[..., None], 3, axis=-1)
    y = np.asarray(noise.framed(jax.random.key(0), x, sigma=0.5))
    clean = np.asarray(noise.clean_mask("framed", x))
    assert y.shape == (28, 28, 3)
    np.testing.assert_array_equal(y[clean], x[clean])
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        noise.bordered(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def test_named_variants_match_make_noisy():
    x = square_digit()
    key = jax.random.key(5)
    for fn, name in [
        (noise.bordered, "bordered"),
        (noise.background, "background"),
        (noise.framed, "framed"),
    ]:
        np.testing.assert_array_equal(
            fn(key, x, sigma=0.4), noise.make_noisy(name, key, x, sigma=0.4)
        )

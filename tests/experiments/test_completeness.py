"""lab.completeness: neurons that change state as a map's top pixels are perturbed, against
a network small enough to count the flips by hand."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lab import completeness

# Three pixels (an image of shape (1, 3, 1)), x = (1.0, 0.5, 0.2).
# Layer 1, three ReLUs:  v1 = x0 - 0.5 = 0.5 (on; x0 -> 0 gives -0.5: off)
#                        v2 = -x1 + 0.2 = -0.3 (off; x1 -> 0 gives 0.2: on)
#                        v3 = x2 + 0.1 = 0.3 (on; x2 -> 0 gives 0.1: stays on)
# Layer 2, one ReLU:     u = h1 + h3 - 0.55 = 0.25 (on; x2 -> 0 gives 0.05: stays on;
#                        off as soon as h1 = 0)
W1 = np.array([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
B1 = np.array([-0.5, 0.2, 0.1], np.float32)
W2 = np.array([[1.0], [0.0], [1.0]], np.float32)
B2 = np.array([-0.55], np.float32)
X = jnp.asarray(np.array([1.0, 0.5, 0.2], np.float32).reshape(1, 3, 1))
THIRDS = (1 / 3, 2 / 3, 1.0)


def f(x):
    h = jax.nn.relu(x.reshape(-1) @ W1 + B1)
    u = jax.nn.relu(h @ W2 + B2)
    return jnp.concatenate([u, -u])


def test_flips_counted_by_hand_per_layer():
    # order x0, x1, x2: x0 -> 0 flips v1 and u; then x1 -> 0 flips v2; x2 -> 0 flips nothing
    got = completeness.state_changes(f, X, jnp.asarray([[3.0, 2.0, 1.0]]), fractions=THIRDS)
    np.testing.assert_array_equal(got.pixels, [1, 2, 3])
    np.testing.assert_array_equal(got.changed, [[1, 1], [2, 1], [2, 1]])
    np.testing.assert_array_equal(got.neurons, [3, 1])
    # shares of the 4 hidden neurons: 2/4, 3/4, 3/4
    assert float(completeness.area(got)) == pytest.approx((2 + 3 + 3) / 12)


def test_reversed_order_is_slower():
    # order x2, x1, x0: nothing, then v2, then v1 and u
    got = completeness.state_changes(f, X, jnp.asarray([[1.0, 2.0, 3.0]]), fractions=THIRDS)
    np.testing.assert_array_equal(got.changed, [[0, 0], [1, 0], [2, 1]])
    assert float(completeness.area(got)) == pytest.approx((0 + 1 + 3) / 12)


def test_a_pixel_already_at_the_baseline_changes_nothing():
    x = X.at[0, 0, 0].set(0.0)  # v1 = -0.5 (off), u = -0.25 (off) from the start
    got = completeness.state_changes(f, x, jnp.asarray([[3.0, 2.0, 1.0]]), fractions=(1 / 3,))
    np.testing.assert_array_equal(got.changed, [[0, 0]])


def test_noise_clipped_to_the_baseline_is_the_baseline_replacement():
    # with low = high = 0 every noisy pixel is clipped to 0: the baseline's answer by hand
    got = completeness.state_changes(
        f, X, jnp.asarray([[3.0, 2.0, 1.0]]), fractions=THIRDS,
        replacement="noise", sigma=5.0, low=0.0, high=0.0, key=jax.random.key(0),
    )  # fmt: skip
    np.testing.assert_array_equal(got.changed, [[1, 1], [2, 1], [2, 1]])


def test_noise_draw_is_nested_and_vmaps():
    keys = jax.random.split(jax.random.key(1), 4)
    scores = jnp.asarray([[3.0, 2.0, 1.0]])
    batched = jax.vmap(
        lambda k: (
            completeness.state_changes(
                f, X, scores, fractions=THIRDS, replacement="noise", sigma=1.0, key=k
            ).changed
        )
    )(keys)
    assert batched.shape == (4, 3, 2)
    for k, row in zip(keys, batched, strict=True):
        one = completeness.state_changes(
            f, X, scores, fractions=THIRDS, replacement="noise", sigma=1.0, key=k
        )
        np.testing.assert_array_equal(one.changed, row)


def test_bad_input_is_named():
    s = jnp.asarray([[3.0, 2.0, 1.0]])
    with pytest.raises(ValueError, match="scores must be shaped"):
        completeness.state_changes(f, X, s.T)
    with pytest.raises(ValueError, match="replacement must be one of"):
        completeness.state_changes(f, X, s, replacement="zero")
    with pytest.raises(ValueError, match="needs a PRNG key"):
        completeness.state_changes(f, X, s, replacement="noise")
    with pytest.raises(ValueError, match=r"shares in \(0, 1\]"):
        completeness.state_changes(f, X, s, fractions=(0.0,))


def test_blurred_random_scores_are_smooth():
    key = jax.random.key(3)
    plain = np.asarray(jax.random.uniform(key, (28, 28)))
    blurred = np.asarray(completeness.blurred_random_scores(key, (28, 28), width=2.0))
    assert blurred.shape == (28, 28)

    # neighbours of a blurred field are strongly correlated, of white noise not
    def lag1(a):
        return np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1]

    assert lag1(blurred) > 0.8 and abs(lag1(plain)) < 0.15

"""Attribution methods that coincide, and the conditions under which they do.

On the trained networks of `results/` several registered methods give (nearly) the same
maps. These are the identities behind that, each checked in float64 on small random
ReLU networks with convolutions, max and average pooling and dense layers, and each
next to a case that breaks its condition, so that a test can fail:

1. ``lrp_alpha_beta`` with its defaults (alpha=1, beta=0, bias split, stabiliser 1e-6)
   *is* ``lrp_alpha1_beta0``: the same rule, on any network.
2. ``lrp_alpha1_beta0`` equals ``lrp_zplus`` when no bias is positive: alpha1-beta0 puts
   ``b^+`` into the positive denominator and z+ ignores the bias, so they differ only
   through positive biases.
3. ``deep_taylor`` (iNNvestigate's alpha1-beta0 with the whole bias in the denominator, no
   stabiliser, initial relevance ``max(f_t, 0)``) equals ``lrp_alpha_beta(stabilizer=0)``
   when no bias is negative (then ``b = b^+``) and the target logit is positive.
4. LRP-0 (``lrp_epsilon`` with ``epsilon=0``) equals gradient x input, ``x * df_t/dx``,
   with or without biases: LRP-0 sends ``R_k a_j w_jk / z_k`` to input j of neuron k and
   ``z_k`` includes the bias, so by induction from ``R_out = f_t`` every value's
   relevance is the value times the gradient of ``f_t`` with respect to it (a ReLU or a
   max-pool winner passes both unchanged, a linear map transposes both). Only the
   conservation of relevance needs a bias-free network, not this identity.
5. LRP-epsilon multiplies that ratio ``R_k / z_k`` by ``z_k / (z_k + eps sign z_k)``,
   so it approaches gradient x input linearly as ``eps -> 0``.

With all biases zero, 2 and 3 give one map for all four LRP rules named there.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from reference import init_params, jax_function

import slp

IN_SHAPE = (8, 8, 2)
SPECS = {
    "conv-maxpool-avgpool-dense": [
        ("conv", 3, 3, 1, "SAME"), ("relu",), ("maxpool", 2, 2),
        ("conv", 4, 3, 1, "SAME"), ("relu",), ("avgpool", 2, 1),
        ("flatten",), ("dense", 6), ("relu",), ("dense", 3),
    ],
    "strided-conv-dense": [
        ("conv", 4, 3, 2, "VALID"), ("relu",),
        ("flatten",), ("dense", 8), ("relu",), ("dense", 4),
    ],
}  # fmt: skip

# How each case sets the biases drawn by `init_params` (normal, std 0.3). Non-positive
# biases are scaled down so that enough neurons stay active for a non-trivial map.
BIASES = {
    "mixed": lambda b: b,
    "nonpositive": lambda b: -0.05 * np.abs(b),
    "nonnegative": np.abs,
    "zero": np.zeros_like,
}


def _network(spec_name: str, biases: str, seed: int = 0):
    """A plain-jnp ReLU network in float64 with the given sign pattern of its biases."""
    spec = SPECS[spec_name]
    params = init_params(spec, IN_SHAPE, np.random.default_rng(seed))
    params = [
        None if p is None else (np.asarray(p[0], np.float64), BIASES[biases](p[1])) for p in params
    ]
    x = np.random.default_rng(seed + 100).uniform(0, 1, IN_SHAPE)
    return jax_function(spec, params), jnp.asarray(x)


def _positive_logit_network(spec_name: str, biases: str):
    """`_network` of the first seed whose target (arg-max) logit is positive."""
    for seed in range(10):
        f, x = _network(spec_name, biases, seed)
        if float(jnp.max(f(x))) > 0:
            return f, x
    raise AssertionError(f"no seed gives {spec_name} a positive logit")


def _rel(a, b) -> float:
    """max |a - b| / max |b|."""
    return float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b)))


def _gradient_x_input(f, x):
    """x * d f_t / dx by plain autodiff of the network (not the library's walker)."""
    t = int(jnp.argmax(f(x)))
    return x * jax.grad(lambda z: f(z)[t])(x)


SPEC_NAMES = sorted(SPECS)


@pytest.mark.parametrize("spec", SPEC_NAMES)
def test_alpha_beta_defaults_are_alpha1_beta0(x64, spec):
    f, x = _network(spec, "mixed")
    np.testing.assert_array_equal(
        slp.attribute(f, x, "lrp_alpha_beta"), slp.attribute(f, x, "lrp_alpha1_beta0")
    )


@pytest.mark.parametrize("spec", SPEC_NAMES)
@pytest.mark.parametrize("biases", ["nonpositive", "zero"])
def test_alpha1_beta0_is_zplus_without_positive_biases(x64, spec, biases):
    f, x = _network(spec, biases)
    zplus = slp.attribute(f, x, "lrp_zplus")
    assert float(jnp.max(jnp.abs(zplus))) > 0
    assert _rel(slp.attribute(f, x, "lrp_alpha1_beta0"), zplus) <= tol(np.float64)


@pytest.mark.parametrize("spec", SPEC_NAMES)
def test_alpha1_beta0_is_not_zplus_with_positive_biases(x64, spec):
    f, x = _network(spec, "mixed")
    assert _rel(slp.attribute(f, x, "lrp_alpha1_beta0"), slp.attribute(f, x, "lrp_zplus")) > 1e-3


@pytest.mark.parametrize("spec", SPEC_NAMES)
@pytest.mark.parametrize("biases", ["nonnegative", "zero"])
def test_deep_taylor_is_alpha1_beta0_without_negative_biases(x64, spec, biases):
    f, x = _positive_logit_network(spec, biases)
    alpha1_beta0 = slp.attribute(f, x, "lrp_alpha_beta", stabilizer=0.0)
    assert _rel(slp.attribute(f, x, "deep_taylor"), alpha1_beta0) <= tol(np.float64)


@pytest.mark.parametrize("spec", SPEC_NAMES)
def test_deep_taylor_is_not_alpha1_beta0_with_negative_biases(x64, spec):
    f, x = _positive_logit_network(spec, "mixed")
    alpha1_beta0 = slp.attribute(f, x, "lrp_alpha_beta", stabilizer=0.0)
    assert _rel(slp.attribute(f, x, "deep_taylor"), alpha1_beta0) > 1e-3


@pytest.mark.parametrize("spec", SPEC_NAMES)
@pytest.mark.parametrize("biases", ["mixed", "zero"])
def test_lrp0_is_gradient_times_input_with_or_without_biases(x64, spec, biases):
    f, x = _network(spec, biases)
    reference = _gradient_x_input(f, x)
    assert _rel(slp.attribute(f, x, "lrp_epsilon", epsilon=0.0), reference) <= tol(np.float64)
    # the library's own gradient x input is the same map
    assert _rel(slp.attribute(f, x, "gradient_x_input"), reference) <= tol(np.float64)


@pytest.mark.parametrize("spec", SPEC_NAMES)
def test_lrp_epsilon_approaches_gradient_times_input_linearly(x64, spec):
    f, x = _network(spec, "mixed")
    reference = _gradient_x_input(f, x)
    err = {e: _rel(slp.attribute(f, x, "lrp_epsilon", epsilon=e), reference) for e in (1e-4, 1e-6)}
    # epsilon large against the layer outputs: the identity does not hold
    assert _rel(slp.attribute(f, x, "lrp_epsilon", epsilon=0.1), reference) > 1e-3
    assert err[1e-4] > 0
    assert 0.5e-2 < err[1e-6] / err[1e-4] < 2e-2

"""Switched linear projections (Theorem 1) and switched centres (eq. 6).

For a ReLU network and an input x, every neuron's activity is one affine map of x,

    v_i(x) = x . w_hat_i(x) + b_hat_i(x)                                   (eq. 2)

where the *switched weight vector* ``w_hat`` is the product of the weight matrices
with inactive neurons (and max-pool losers) switched off. Reference: Szymanski,
McCane & Atkinson, "Switched linear projections and inactive state sensitivity for
deep neural network interpretability", arXiv:1909.11275, sections 3.1-3.2.

All public functions are transforms in the style of `jax.grad`: they take a
per-example function ``f(x) -> logits`` and return a function of one example ``x``.
Batch with `jax.vmap`; everything composes with `jax.jit`. When ``x``, a ReLU input or
the output is NaN or inf (a non-finite input or weight), the state is undefined: every
array returned is NaN, and `activation_pattern` raises ``FloatingPointError``.

Mixed precision: a network may compute in other dtypes than its input's (bfloat16
layers, a float64 constant). Activities and switched biases are the network's own values,
in each layer's dtype; switched weight vectors and centres live on the input and come out
in ``x``'s dtype, as `jax.grad` of a layer would.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import struct

from slp._src import guards as _guards
from slp._src import matmul as _matmul
from slp._src import matrices as _matrices
from slp._src import network as net

__all__ = [
    "Projection",
    "activities",
    "activation_pattern",
    "switched_projections",
    "switched_centres",
    "explicit_projections",
]


@struct.dataclass
class Projection:
    """The switched linear projection of every neuron of one layer.

    For a layer of shape ``L`` (e.g. ``(28, 28, 32)`` for a conv layer, ``(1024,)``
    for a dense one) and an input of shape ``X``:

    Attributes:
      weights: ``L + X``, the switched weight vector ``w_hat`` of every neuron, in the
        input's dtype.
      bias: ``L``, the switched bias ``b_hat``, in the layer's dtype.
      activity: ``L``, the activity (pre-activation) ``v``, in the layer's dtype; for every
        neuron ``activity == sum(weights * x) + bias`` (Theorem 1).

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> hidden, out = slp.switched_projections(f)(x)  # one per ReLU layer, then the output
      >>> hidden.weights.shape, hidden.bias.shape, hidden.activity.shape
      ((3, 4), (3,), (3,))
      >>> bool(jnp.allclose(hidden.weights @ x + hidden.bias, hidden.activity, atol=1e-5))
      True
      >>> bool(jnp.allclose(out.activity, f(x), atol=1e-5))  # the output's projection
      True
    """

    weights: jax.Array
    bias: jax.Array
    activity: jax.Array


def activities(f: Callable) -> Callable:
    """Activities (pre-activations) of every ReLU in ``f``.

    Args:
      f: per-example network ``f(x) -> logits``.

    Returns:
      ``fn(x) -> tuple`` of arrays, the input of every ReLU in forward order, each in
      its layer's own shape.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> (v,) = slp.activities(f)(x)  # one ReLU layer
      >>> np.asarray(v).round(3)
      array([ 0.265,  1.755, -1.712], dtype=float32)
      >>> jax.vmap(slp.activities(f))(jnp.stack([x, -x]))[0].shape  # a batch of two
      (2, 3)
    """

    def fn(x):
        program = net.trace(f, x)
        state = net.forward(program, x)
        return _guards.nan_unless(net.defined(x, state), state.activities)

    return fn


def activation_pattern(f: Callable) -> Callable:
    """The network's state: which neurons are active (eq. 3).

    A neuron is active when its activity is strictly positive (the ReLU derivative is
    the step function, 0 at ``v = 0``).

    Args:
      f: per-example network ``f(x) -> logits``.

    Returns:
      ``fn(x) -> tuple`` of bool arrays, ``activity > 0`` per ReLU layer.

    Raises:
      FloatingPointError: when ``x``, a ReLU input or the output is NaN or inf (also
        under `jax.jit` and `jax.vmap`, when the function runs).

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> slp.activation_pattern(f)(x)
      (Array([ True,  True, False], dtype=bool),)
      >>> slp.activation_pattern(f)(x.at[0].set(jnp.nan))
      Traceback (most recent call last):
      ...
      FloatingPointError: the input, a ReLU input or the output of f is NaN or inf: ...
    """

    def fn(x):
        program = net.trace(f, x)
        state = net.forward(program, x)
        ok = _guards.raise_unless(net.defined(x, state))
        return tuple(p & ok for p in state.pattern())

    return fn


def switched_projections(f: Callable, *, method: str = "jacfwd") -> Callable:
    """Switched linear projections of every neuron (Theorem 1, eq. 2).

    ``w_hat_i = W_1^(x) W_2^(x) ... w_i`` is computed as the Jacobian of the switched
    (frozen-state) network, ``b_hat_i`` as the switched network evaluated at 0 (the
    paper's sum of switched biases), and ``v_i`` by the ordinary forward pass.

    Args:
      f: per-example network ``f(x) -> logits``.
      method: ``"jacfwd"`` (forward-mode autodiff of the switched network) or
        ``"explicit"`` (the paper's mask-weighted matrix products, layer by layer).

    Returns:
      ``fn(x) -> tuple`` of `Projection`: one per ReLU layer in forward order, then
      one for the output of ``f``.

    Raises:
      ValueError: if ``method`` is neither ``"jacfwd"`` nor ``"explicit"``.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> hidden, out = slp.switched_projections(f)(x)
      >>> hidden.weights.shape, out.weights.shape  # L + X: (neurons, inputs)
      ((3, 4), (2, 4))
      >>> bool(jnp.allclose(out.weights @ x + out.bias, f(x), atol=1e-5))  # Theorem 1
      True
      >>> active = hidden.activity > 0  # the third ReLU is off: W1's column 3 switched off
      >>> bool(jnp.allclose(out.weights, ((W1 * active[None]) @ W2).T, atol=1e-5))
      True
    """
    if method == "explicit":
        return explicit_projections(f)
    if method != "jacfwd":
        raise ValueError(f"unknown method {method!r}; choose 'jacfwd' or 'explicit'")

    def fn(x):
        program = net.trace(f, x)
        state = net.forward(program, x)
        frozen = net.frozen_network(program, state)

        def layers(xp):
            res = frozen(xp)
            return (*res.relu_inputs, res.output)

        # Derivatives pushed through the network in its own dtypes, then in x's.
        weights = [w.astype(x.dtype) for w in jax.jacfwd(layers)(x)]
        biases = layers(jnp.zeros_like(x))
        acts = (*state.activities, state.output)
        out = tuple(Projection(w, b, a) for w, b, a in zip(weights, biases, acts, strict=True))
        return _guards.nan_unless(net.defined(x, state), out)

    return fn


def switched_centres(f: Callable, *, method: str = "jacfwd") -> Callable:
    """Switched centres ``c_hat = x - v w_hat / |w_hat|^2`` of every neuron (eq. 6).

    The centre is the point nearest to ``x`` on the neuron's switched hyperplane
    ``x' . w_hat + b_hat = 0``, so that ``v = (x - c_hat) . w_hat`` (eq. 5). A neuron
    with ``w_hat = 0`` has no such point; its centre is ``x``. ``|w_hat|^2`` and the step
    ``v w_hat / |w_hat|^2`` are computed in at least float32 (a float16 square overflows
    above 256), the centre is returned in ``x``'s dtype.

    Args:
      f: per-example network ``f(x) -> logits``.
      method: as in `switched_projections`: ``"jacfwd"`` or ``"explicit"``.

    Returns:
      ``fn(x) -> tuple`` of arrays shaped like each `Projection.weights` (``L + X``),
      in the order of `switched_projections`, in ``x``'s dtype.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> centres, _ = slp.switched_centres(f)(x)  # hidden layer, then output
      >>> centres.shape  # one centre in input space per hidden neuron
      (3, 4)
      >>> hidden, _ = slp.switched_projections(f)(x)
      >>> v = jnp.sum((x[None] - centres) * hidden.weights, axis=1)  # eq. 5
      >>> bool(jnp.allclose(v, hidden.activity, atol=1e-5))
      True
    """
    projections = switched_projections(f, method=method)

    def fn(x):
        out = []
        for p in projections(x):
            axes = tuple(range(p.activity.ndim, p.weights.ndim))
            sq = _matmul.square_sum(p.weights, axes)
            v = p.activity.astype(jnp.promote_types(p.activity.dtype, sq.dtype))
            scale = jnp.where(sq > 0, v / jnp.where(sq > 0, sq, 1), 0)
            scale = scale.reshape(scale.shape + (1,) * x.ndim)
            centre = x.reshape((1,) * p.activity.ndim + x.shape) - scale * p.weights
            out.append(centre.astype(x.dtype))
        return tuple(out)

    return fn


def explicit_projections(f: Callable) -> Callable:
    """`switched_projections` by the paper's explicit route (no autodiff of the network).

    Starting from the identity map of the input, each dense layer multiplies the
    switched map by its weight matrix, each convolution is applied to every column,
    each ReLU zeroes the rows of inactive neurons and each max-pool keeps the rows of
    its winners: ``W_1^(x) W_2^(x) ... W_l^(x)`` and the switched bias alongside.
    Materialises ``neurons x inputs`` per layer; meant for checks and small networks.

    Args:
      f: per-example network ``f(x) -> logits``.

    Returns:
      ``fn(x) -> tuple`` of `Projection`, as `switched_projections`.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> explicit = slp.explicit_projections(f)(x)
      >>> jacobian = slp.switched_projections(f)(x)
      >>> [bool(jnp.allclose(e.weights, j.weights, atol=1e-5)) for e, j in zip(explicit, jacobian)]
      [True, True]
    """

    def fn(x):
        program = net.trace(f, x)
        state = net.forward(program, x)
        res = net.interpret(program, x, _matrices.ExplicitRules(state))
        out = []
        acts = (*state.activities, state.output)
        for (m, c), a in zip((*res.relu_inputs, res.output), acts, strict=True):
            out.append(Projection(m.reshape(c.shape + x.shape).astype(x.dtype), c, a))
        return _guards.nan_unless(net.defined(x, state), tuple(out))

    return fn

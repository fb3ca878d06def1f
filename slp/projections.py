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

from _slp import guards as _guards
from _slp import matmul as _matmul
from _slp import primitives as _primitives
from slp import network as net

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

    Returns:
      ``fn(x) -> tuple`` of bool arrays, ``activity > 0`` per ReLU layer.

    Raises:
      FloatingPointError: when ``x``, a ReLU input or the output is NaN or inf (also
        under `jax.jit` and `jax.vmap`, when the function runs).
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

    Returns:
      ``fn(x) -> tuple`` of arrays shaped like each `Projection.weights` (``L + X``),
      in the order of `switched_projections`, in ``x``'s dtype.
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


class _ExplicitRules(net.Rules):
    """Propagates the switched map itself: a pair (M, c) with value = M @ vec(x) + c.

    ``M`` has the value's shape plus one trailing axis of size ``x.size``. Dense layers
    and convolutions are applied to ``M`` as explicit products, ReLUs multiply by the
    frozen mask, max-pools select the frozen winners' rows; other linear operations
    (reshapes, average pooling, ...) act on ``M`` through their own linear map.
    """

    def __init__(self, state: net.NetworkState):
        self.state = state

    def input(self, x):
        d = x.size
        eye = jnp.eye(d, dtype=x.dtype).reshape(x.shape + (d,))
        return (eye, jnp.zeros_like(x))

    def relu(self, eqn, z):
        m, c = z
        mask = (self.state.activities[eqn.site] > 0).astype(c.dtype)
        return (m * mask[..., None], c * mask)

    def max_pool(self, eqn, z):
        m, c = z
        w = self.state.winners[eqn.site].reshape(-1)
        shape = self.state.winners[eqn.site].shape
        return (
            m.reshape(-1, m.shape[-1])[w].reshape(shape + (m.shape[-1],)),
            c.reshape(-1)[w].reshape(shape),
        )

    def linear(self, eqn, args):
        dep = eqn.dep
        rule = _primitives.lookup(eqn.primitive).matrices  # "columns", "dot" or "conv"
        if rule == "dot":
            return [self._dot(eqn, args)]
        if rule == "conv":
            return [self._conv(eqn, args)]
        offsets = [a[1] if d else a for a, d in zip(args, dep, strict=True)]
        tangents = [a[0] for a, d in zip(args, dep, strict=True) if d]

        def lin(*deps):
            it = iter(deps)
            full = [next(it) if d else a for a, d in zip(offsets, dep, strict=True)]
            return tuple(eqn.apply(*full, precision=self.precision))

        dep_offsets = [a[1] for a, d in zip(args, dep, strict=True) if d]
        c_out = lin(*dep_offsets)
        m_out = jax.vmap(
            lambda *ts: jax.jvp(lin, tuple(dep_offsets), ts)[1], in_axes=-1, out_axes=-1
        )(*tangents)
        return list(zip(m_out, c_out, strict=True))

    def _dot(self, eqn, args):
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        lhs, rhs = args
        prec = (self.precision, self.precision)
        pet = eqn.params.get("preferred_element_type")
        if eqn.dep[0]:
            m, c = lhs
            out_m = jax.lax.dot_general(
                m, rhs, ((lc, rc), (lb, rb)), precision=prec, preferred_element_type=pet
            )
            out_c = jax.lax.dot_general(
                c, rhs, ((lc, rc), (lb, rb)), precision=prec, preferred_element_type=pet
            )
            # The trailing axis of m is the last lhs free axis: move it to the end.
            pos = len(lb) + (c.ndim - len(lc) - len(lb))
            return (jnp.moveaxis(out_m, pos, -1), out_c)
        m, c = rhs
        out_m = jax.lax.dot_general(
            lhs, m, ((lc, rc), (lb, rb)), precision=prec, preferred_element_type=pet
        )
        out_c = jax.lax.dot_general(
            lhs, c, ((lc, rc), (lb, rb)), precision=prec, preferred_element_type=pet
        )
        return (out_m, out_c)

    def _conv(self, eqn, args):
        (m, c), kernel = args
        p = eqn.params
        dn = p["dimension_numbers"]
        b_in, b_out = dn.lhs_spec[0], dn.out_spec[0]
        d = m.shape[-1]
        if p.get("batch_group_count", 1) != 1:
            raise net.UnsupportedOperationError("convolutions with batch_group_count > 1")
        # Fold the matrix axis into the conv's batch axis: one conv of all columns.
        mm = jnp.moveaxis(m, -1, b_in + 1)
        shp = list(c.shape)
        shp[b_in] *= d
        mm = mm.reshape(shp)
        out = eqn.bind(mm, kernel, precision=self.precision)
        oshp = list(out.shape)
        oshp[b_out : b_out + 1] = [c.shape[b_in], d]
        out_m = jnp.moveaxis(out.reshape(oshp), b_out + 1, -1)
        out_c = eqn.bind(c, kernel, precision=self.precision)
        return (out_m, out_c)


def explicit_projections(f: Callable) -> Callable:
    """`switched_projections` by the paper's explicit route (no autodiff of the network).

    Starting from the identity map of the input, each dense layer multiplies the
    switched map by its weight matrix, each convolution is applied to every column,
    each ReLU zeroes the rows of inactive neurons and each max-pool keeps the rows of
    its winners: ``W_1^(x) W_2^(x) ... W_l^(x)`` and the switched bias alongside.
    Materialises ``neurons x inputs`` per layer; meant for checks and small networks.

    Returns:
      ``fn(x) -> tuple`` of `Projection`, as `switched_projections`.
    """

    def fn(x):
        program = net.trace(f, x)
        state = net.forward(program, x)
        res = net.walk(program, x, _ExplicitRules(state))
        out = []
        acts = (*state.activities, state.output)
        for (m, c), a in zip((*res.relu_inputs, res.output), acts, strict=True):
            out.append(Projection(m.reshape(c.shape + x.shape).astype(x.dtype), c, a))
        return _guards.nan_unless(net.defined(x, state), tuple(out))

    return fn

"""Inactive state sensitivity, Insens (eqs. 7-8).

For each neuron, ``omega_hat_i = x - c_hat_i = v_i w_hat_i / |w_hat_i|^2`` (eq. 7).
Insens averages it over the set ``I`` of inactive hidden neurons (``v <= 0``):

    Omega_hat(x) = (1/|I|) sum_{i in I} omega_hat_i                      (eq. 8)

Reference: Szymanski, McCane & Atkinson, arXiv:1909.11275, section 4.

Computation: the sum over ``I`` of ``(v_i / |w_hat_i|^2) w_hat_i`` is one
vector-Jacobian product of the switched network with cotangent ``v_i/|w_hat_i|^2``
on inactive neurons and 0 elsewhere, so the switched weight vectors themselves are
never materialised; the squared norms ``|w_hat_i|^2`` are accumulated from
Jacobian-vector products over chunks of input directions, so memory grows with
``neurons x chunk_size``, not ``neurons x inputs``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from slp import network as net

__all__ = ["insens", "inactive_sets", "switched_sq_norms"]


def switched_sq_norms(
    linear_fn: Callable, x: jax.Array, *, chunk_size: int | None = 128
) -> tuple[jax.Array, ...]:
    """Squared norms ``|w_hat_i|^2`` of the rows of a linear map's Jacobian.

    Args:
      linear_fn: the tangent map of the switched network, ``t (shape X) -> tuple`` of
        layer tangents (e.g. from `jax.linearize`).
      x: an input, shape ``X`` (only shape and dtype are used).
      chunk_size: input directions per step; None means all at once.

    Returns:
      Tuple of arrays, per layer, ``sum_j (d v_i / d x_j)^2`` in the layer's shape.
    """
    d = int(np.prod(x.shape))
    chunk = d if chunk_size is None else max(1, min(int(chunk_size), d))
    n_chunks = -(-d // chunk)

    def one_chunk(k):
        idx = k * chunk + jnp.arange(chunk)
        basis = jax.nn.one_hot(idx, d, dtype=x.dtype).reshape((chunk,) + x.shape)
        tangents = jax.vmap(linear_fn)(basis)
        return tuple(jnp.sum(t * t, axis=0) for t in tangents)

    if n_chunks == 1:
        return one_chunk(0)

    def body(acc, k):
        return tuple(a + s for a, s in zip(acc, one_chunk(k), strict=True)), None

    shapes = jax.eval_shape(one_chunk, 0)
    init = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)
    # The last chunk may run past d: one_hot of an out-of-range index is all zeros.
    out, _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
    return out


def inactive_sets(
    program: net.Program, state: net.NetworkState, *, include_pool_losers: bool = False
) -> tuple[jax.Array, ...]:
    """The set ``I`` of eq. 8 per ReLU layer, as bool arrays in each layer's shape.

    A neuron is inactive when ``v <= 0``. With ``include_pool_losers``, neurons whose
    ReLU output loses every max-pool window it is in are counted as inactive too.
    """
    inactive = [v <= 0 for v in state.activities]
    if include_pool_losers:
        for k, src in enumerate(program.pool_sources):
            if src < 0:
                raise ValueError(
                    f"include_pool_losers: max-pool {k} does not pool a ReLU output "
                    "directly, so its losers are not neurons of a ReLU layer"
                )
            shape = program.pool_input_shapes[k]
            won = jnp.zeros(int(np.prod(shape)), bool).at[state.winners[k].reshape(-1)].set(True)
            inactive[src] = inactive[src] | ~won.reshape(shape)
    return tuple(inactive)


def insens(
    f: Callable, *, include_pool_losers: bool = False, chunk_size: int | None = 128
) -> Callable:
    """Inactive state sensitivity ``Omega_hat(x)`` (eq. 8). Jit-compiled.

    The mean over every inactive hidden neuron (``v <= 0``, all ReLU layers) of
    ``omega_hat_i = v_i w_hat_i / |w_hat_i|^2`` (eq. 7). Output neurons are not in
    ``I``; max-pool units are not neurons of their own. A neuron with ``w_hat = 0``
    contributes 0 and is still counted in ``|I|``. If no neuron is inactive the
    result is 0.

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      include_pool_losers: also count max-pool losers with ``v > 0`` as inactive.
      chunk_size: input directions per step when accumulating ``|w_hat|^2``; bounds
        memory at about ``neurons x chunk_size`` values. None: all at once.

    Returns:
      ``fn(x) -> Omega_hat``, shaped like ``x``; batch with `jax.vmap`.
    """

    def fn(x):
        program = net.trace(f, x)
        state = net.forward(program, x)
        frozen = net.frozen_network(program, state)

        def acts(xp):
            return frozen(xp).relu_inputs

        _, lin = jax.linearize(acts, x)
        sq = switched_sq_norms(lin, x, chunk_size=chunk_size)
        inactive = inactive_sets(program, state, include_pool_losers=include_pool_losers)
        coeffs = tuple(
            jnp.where(i & (s > 0), v / jnp.where(s > 0, s, 1), 0)
            for i, s, v in zip(inactive, sq, state.activities, strict=True)
        )
        _, vjp = jax.vjp(acts, x)
        (total,) = vjp(coeffs)
        count = sum(jnp.sum(i) for i in inactive) if inactive else jnp.zeros((), jnp.int32)
        return jnp.where(count > 0, total / jnp.maximum(count, 1).astype(total.dtype), 0)

    return jax.jit(fn)

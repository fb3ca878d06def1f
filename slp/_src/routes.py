"""The exact routes of `slp.insens`: each computes the squared norms ``|w_hat_i|^2`` of every
hidden neuron (the cone route in `slp._src.cone`, the probe and dense routes here);
`state_and_norms` runs one route with the state it starts from, and `routed_state` the route
chosen for the batch size of the call.

The routes and the plan they read are described in `slp._src.insens`'s docstring; the plan is
built in `slp._src.planner`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from jax import custom_batching, lax

from slp._src import cone as _cone
from slp._src import costs as _costs
from slp._src import cut as _cut
from slp._src import matmul as _matmul
from slp._src import network as net
from slp._src.interpreter import constant_value
from slp._src.linear import cut_linearized, linearized

if TYPE_CHECKING:
    from slp._src.planner import InsensPlan

__all__ = [
    "switched_sq_norms",
    "probe_norms",
    "dense_norms",
    "runtime_consts",
    "state_and_norms",
    "state_and_every_route",
    "routed_state",
]


def switched_sq_norms(
    linear_fn: Callable, x: jax.Array, *, chunk_size: int | None = 128
) -> tuple[jax.Array, ...]:
    """Squared norms ``|w_hat_i|^2`` of the rows of a linear map's Jacobian, by one-hot probes.

    The structure-blind route: one Jacobian-vector product per input element.

    Args:
      linear_fn: the tangent map of the switched network, ``t (shape X) -> tuple`` of
        layer tangents (e.g. from `jax.linearize`).
      x: an input, shape ``X`` (only shape and dtype are used).
      chunk_size: input directions per step; None means all at once.

    Returns:
      Tuple of arrays, per layer, ``sum_j (d v_i / d x_j)^2`` in the layer's shape, in
      the layer's dtype but at least float32 (`slp._src.matmul.accumulator`).
    """
    d = int(np.prod(x.shape))
    chunk = d if chunk_size is None else max(1, min(int(chunk_size), d))
    n_chunks = -(-d // chunk)

    def one_chunk(k):
        idx = k * chunk + jnp.arange(chunk)
        basis = jax.nn.one_hot(idx, d, dtype=x.dtype).reshape((chunk,) + x.shape)
        tangents = jax.vmap(linear_fn)(basis)
        return tuple(_matmul.square_sum(t, 0) for t in tangents)

    if n_chunks == 1:
        return one_chunk(0)

    def body(acc, k):
        return tuple(a + s for a, s in zip(acc, one_chunk(k), strict=True)), None

    shapes = jax.eval_shape(one_chunk, 0)
    init = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)
    # The last chunk may run past d: one_hot of an out-of-range index is all zeros.
    out, _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
    return out


def probe_norms(program, state, x, plan: InsensPlan, precision, lin=None) -> list:
    """``|w_hat|^2`` per ReLU layer by the probe route (module docstring).

    ``lin``: the switched network linearized at ``x`` with the plan's cut
    (`slp._src.linear.linearized`) where the caller has it; None: a walk of its own."""
    layout = plan.probes
    kc = layout.colours_per_chunk
    colour = jnp.asarray(layout.colour)
    cut_eqn = program.eqns[plan.cut] if plan.cut is not None else None
    # The grouped product below is an einsum: split products fall back to float32.
    hp = _matmul.plain(precision)
    lin = cut_linearized(program, state, x, plan.cut, lin)
    pre = lin.before_cut(plan.pre_sites)

    if cut_eqn is not None:
        post = lin.after_cut(plan.post_sites)
        # The cut's weights (a constant: found back from the cut, no walk) in their own
        # dtype, its product's result type as the network's.
        weight = constant_value(program, cut_eqn.inputs[cut_eqn.dep.index(False)])
        operand_shape = program.avals[cut_eqn.inputs[cut_eqn.dep.index(True)]].shape
        w_mat = _cut.cut_matrix(cut_eqn, weight, operand_shape)
        pet = cut_eqn.params.get("preferred_element_type")
        w_mat = jnp.concatenate([w_mat, jnp.zeros((1, w_mat.shape[1]), w_mat.dtype)], 0)
        group_rows = jnp.asarray(layout.group_rows)
        w_groups = w_mat[group_rows]  # (G, R, M)
        slots = jnp.asarray(layout.slots)

    def step(c):
        ids = c * kc + jnp.arange(kc, dtype=jnp.int32)
        probes = (colour[None] == ids.reshape((kc,) + (1,) * x.ndim)).astype(x.dtype)
        pre_t = jax.vmap(pre)(probes)
        if cut_eqn is None:
            return [_matmul.square_sum(t, 0) for t in pre_t]
        *pre_t, cut_t = pre_t
        sums = [_matmul.square_sum(t, 0) for t in pre_t]
        comp = cut_t.reshape(kc, -1)
        comp = jnp.concatenate([comp, jnp.zeros((kc, 1), comp.dtype)], 1)
        comp, w_g = _matmul.widen(comp[:, group_rows], w_groups, pet)
        parts = jnp.einsum("kgr,grm->gkm", comp, w_g, precision=hp)
        cols = jnp.zeros((layout.pixels_per_chunk + 1, parts.shape[-1]), parts.dtype)
        cols = cols.at[slots[c]].add(parts)[:-1]
        cols = cols.reshape((layout.pixels_per_chunk,) + plan.cut_out_shape)
        return sums + _cut.post_norms(post, lin.shapes[1].dtype, cols)

    sums = _cut.scan_sum(step, jnp.arange(layout.n_chunks), layout.n_chunks)
    by_site = dict(zip(plan.pre_sites + plan.post_sites, sums, strict=True))
    return [by_site[s] for s in range(len(program.relu_shapes))]


def dense_norms(program, state, x, plan: InsensPlan, jvp: Callable | None = None) -> list:
    """``|w_hat|^2`` per ReLU layer by the dense route: one-hot input directions through
    the whole switched network by forward mode, ``plan.dense.columns_per_step`` at a time.

    ``jvp``: the switched network's tangent map at ``x`` where the caller has it
    (`slp._src.linear.Linearized.jvp`); None linearizes the switched network."""
    if jvp is None:
        jvp = linearized(program, x, state=state).jvp
    return list(switched_sq_norms(jvp, x, chunk_size=plan.dense.columns_per_step))


def runtime_consts(program: net.Program) -> net.Program:
    """``program`` with its constants (weights) behind an optimisation barrier.

    The routes build large arrays from the weights (cone matrices, padded slices of the
    dense weights); as compile-time constants XLA would fold them while compiling, slowly
    and with warnings. Behind the barrier they are computed when the function runs.
    """
    consts = {
        i: lax.optimization_barrier(c) if np.size(c) > 1 else c for i, c in program.consts.items()
    }
    return dataclasses.replace(program, consts=consts)


def state_and_norms(program, x, plan: InsensPlan, prec):
    """The state at ``x``, the switched network's VJP (eq. 8's sum over neurons) and the exact
    ``|w_hat|^2`` per ReLU layer by ``plan.route``.

    The state and the VJP come from one pass; the dense and probe routes also take their
    tangent map from it, the cone route its constants and convolution matrices.

    Returns:
      ``(state, vjp, sq)``: the `NetworkState`, ``vjp(cotangents) -> (x_cotangent,)`` and
      one array of squared norms per ReLU layer.
    """
    if plan.route == "dense":
        lin = linearized(program, x)
        return lin.state, lin.vjp, dense_norms(program, lin.state, x, plan, lin.jvp)
    if plan.route == "cone":  # its constants and matrices from the same pass
        prepare = _cone.Prepare(program, plan.cone, prec)
        if plan.cut is None:
            state, vjp = net.forward_and_vjp(program, x, prepare)
            return state, vjp, _cone.norms(program, state, x, plan, prec, prepare)
        lin = linearized(program, x, visit=prepare, cut=plan.cut)
        return lin.state, lin.vjp, _cone.norms(program, lin.state, x, plan, prec, prepare, lin)
    lin = linearized(program, x, cut=plan.cut)
    return lin.state, lin.vjp, probe_norms(program, lin.state, x, plan, prec, lin)


def state_and_every_route(program, x, plan: InsensPlan, prec, routes) -> tuple:
    """The state at ``x`` and the exact ``|w_hat|^2`` per ReLU layer by each of ``routes``,
    from one walk: the network linearized at ``x`` with the plan's cut, collecting the cone
    route's constants on the way (`state_and_norms` for one route).

    Returns:
      ``(state, sqs)``: ``sqs`` a tuple, the norms by each of ``routes`` in that order.
    """
    prepare = _cone.Prepare(program, plan.cone, prec) if "cone" in routes else None
    lin = linearized(program, x, visit=prepare, cut=plan.cut)

    def norms(route):
        one = plan._replace(route=route)
        if route == "dense":
            return dense_norms(program, lin.state, x, one, lin.jvp)
        if route == "cone":
            return _cone.norms(program, lin.state, x, one, prec, prepare, lin)
        return probe_norms(program, lin.state, x, one, prec, lin)

    return lin.state, tuple(norms(r) for r in routes)


def routed_state(program, x, plan: InsensPlan):
    """`state_and_norms` by the route predicted fastest for the batch size it runs at, each
    route running the program traced for its count (``plan.traced``, `TracedRoute`).

    The state and the VJP come from the part of the program for ``plan.route`` (chosen for
    one input per call) that computes the state. The squared norms: on one input, that
    program's; under `jax.vmap` the batching rule sees the batch size and runs the norms of
    the route `slp._src.costs.choose` picks for it: at 1 and 8 inputs per call the fastest
    route often differs (2CONV on a 2-core CPU: probes at 1, the cone at 8). Each route's
    norms program computes the state again; under `jax.jit` XLA computes the common
    operations once. The weights are passed as arguments, so a vmap over them (or a jit that
    traces them) batches them too. Differentiation goes through the route chosen for one
    input (every route gives the same numbers up to rounding).
    """
    works = {r: c.work for r, c in plan.costs.items()}
    consts = dict(program.consts)
    acts, vjp, (output, winners) = jax.vjp(
        lambda xx: plan.traced[plan.route].state(xx, consts), x, has_aux=True
    )
    state = net.NetworkState(acts, winners, output)

    def run(route, xx, cs):
        return plan.traced[route].norms(xx, cs)

    @custom_batching.custom_vmap
    def norms(xx, cs):
        return run(plan.route, xx, cs)

    @norms.def_vmap
    def norms_batched(axis_size, in_batched, xx, cs):
        route = _costs.choose(works, batch=axis_size)
        axes = tuple(jax.tree.map(lambda b: 0 if b else None, list(in_batched)))
        out = jax.vmap(lambda a, c: run(route, a, c), in_axes=axes)(xx, cs)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_jvp
    def differentiable(xx, cs):
        return norms(xx, cs)

    @differentiable.defjvp
    def differentiable_jvp(primals, tangents):
        return jax.jvp(lambda a, c: run(plan.route, a, c), primals, tangents)

    return state, vjp, differentiable(x, consts)

"""The cut of the structured Insens routes: the dense layer over (most of) the whole input
where the cone and probe routes hand over to explicit Jacobian columns (`slp.insens`).

Shared by `slp.insens` (probe route) and `slp._src.cone` (cone route).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core

from slp._src import interpreter as interp
from slp._src import matmul as _matmul


def cut_matrix(eqn: interp.Eqn, weight: jax.Array, operand_shape) -> jax.Array:
    """The cut's weights as a ``(operand size, output size)`` matrix (row-major rows).

    Valid when the operand's non-contracted axes all have size 1 and there are no batch
    axes (checked by `slp._src.planner._cut_candidate`).
    """
    (lc, rc), _ = eqn.params["dimension_numbers"]
    c_op, c_w = (lc, rc) if eqn.dep[0] else (rc, lc)
    # Operand rows enumerate its contracted axes in axis order; match the weight's axes.
    pairs = sorted(zip(c_op, c_w, strict=True))
    w_c = [b for _, b in pairs]
    w_free = [a for a in range(weight.ndim) if a not in c_w]
    k = int(np.prod([operand_shape[a] for a, _ in pairs]))
    return jnp.transpose(weight, w_c + w_free).reshape(k, -1)


def post_norms(post, dtype, cols) -> list:
    """Sums of squares at the post-cut ReLU layers of exact columns ``cols`` of the cut
    (accumulated in at least float32, `slp._src.matmul.accumulator`).

    ``post``: the network after the cut (`slp._src.linear.Linearized.after_cut`); ``dtype``:
    the cut output's (the columns are cast to it, as the network would have them)."""
    post_t = jax.vmap(post)(cols.astype(dtype))
    return [_matmul.square_sum(t, 0) for t in post_t]


def scan_sum(step, xs, n: int):
    """``sum_i step(xs[i])`` for lists of arrays, as a scan (one step: no loop).

    ``step`` is traced once (its walks over the program are interpretations, and the scan
    would otherwise trace it a second time for its shapes): the scan replays that trace.
    """
    first = jax.tree.map(lambda a: a[0], xs)
    if n == 1:
        return step(first)
    flat, tree = jax.tree.flatten(first)
    closed, out_shapes = jax.make_jaxpr(
        lambda *leaves: step(jax.tree.unflatten(tree, leaves)), return_shape=True
    )(*flat)
    replay = jex_core.jaxpr_as_fun(closed)
    init = [jnp.zeros(s.shape, s.dtype) for s in out_shapes]

    def body(acc, xi):
        sums = replay(*jax.tree.leaves(xi))
        return [a + s for a, s in zip(acc, sums, strict=True)], None

    out, _ = lax.scan(body, init, xs)
    return out

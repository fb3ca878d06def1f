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


class PreCut(interp.FrozenRules):
    """The switched network; records the operand of the cut."""

    walk = "pre-cut"

    def __init__(self, state, cut_eqn):
        super().__init__(state)
        self.cut_eqn = cut_eqn
        self.operand = None

    def linear(self, eqn, args):
        if eqn is self.cut_eqn:
            self.operand = args[eqn.dep.index(True)]
        return super().linear(eqn, args)


class PostCut(interp.FrozenRules):
    """The switched network with the cut's output replaced by ``z`` (cast to the dtype of
    the cut's own output, as the network would have it)."""

    walk = "post-cut"

    def __init__(self, state, cut_eqn, z):
        super().__init__(state)
        self.cut_eqn = cut_eqn
        self.z = z

    def linear(self, eqn, args):
        if eqn is self.cut_eqn:
            out = jax.eval_shape(lambda *a: eqn.bind(*a), *args)
            return [self.z.astype(out.dtype)]
        return super().linear(eqn, args)


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


def post_norms(program, state, x, plan, cols) -> list:
    """Sums of squares at the post-cut ReLU layers of exact columns ``cols`` of the cut
    (accumulated in at least float32, `slp._src.matmul.accumulator`)."""
    cut_eqn = program.eqns[plan.cut]
    z0 = jnp.zeros(plan.cut_out_shape, cols.dtype)  # `PostCut` casts it as the cut would

    def post(z):
        res = interp.interpret(program, x, PostCut(state, cut_eqn, z))
        return tuple(res.relu_inputs[s] for s in plan.post_sites)

    post_t = jax.vmap(lambda t: jax.jvp(post, (z0,), (t,))[1])(cols)
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

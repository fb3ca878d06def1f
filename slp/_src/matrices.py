"""The explicit-matrix route of `slp.explicit_projections`: the switched map itself, as a
matrix, carried through the network by the walker (section 3.1: ``W_1^(x) ... W_l^(x)``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from slp._src import interpreter as interp

__all__ = ["ExplicitRules"]


class ExplicitRules(interp.Rules):
    """Propagates the switched map itself: a pair (M, c) with value = M @ vec(x) + c.

    ``M`` has the value's shape plus one trailing axis of size ``x.size``. Dense layers
    and convolutions are applied to ``M`` as explicit products, ReLUs multiply by the
    frozen mask, max-pools select the frozen winners' rows; other linear operations
    (reshapes, average pooling, ...) act on ``M`` through their own linear map.
    """

    walk = "explicit"

    def __init__(self, state: interp.NetworkState):
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
        return eqn.decl.matrices(self, eqn, args)


# -- the matrix rules, one callable each, named in the registry (`slp._src.primitives`) -----
# Each is ``(rules, eqn, args) -> [(M, c), ...]`` (one pair per output).


def COLUMNS(rules, eqn, args):
    """Any linear operation: its own linear map applied to every column of the switched map
    (a JVP per column, batched)."""
    dep = eqn.dep
    offsets = [a[1] if d else a for a, d in zip(args, dep, strict=True)]
    tangents = [a[0] for a, d in zip(args, dep, strict=True) if d]

    def lin(*deps):
        it = iter(deps)
        full = [next(it) if d else a for a, d in zip(offsets, dep, strict=True)]
        return tuple(eqn.apply(*full, precision=rules.precision))

    dep_offsets = [a[1] for a, d in zip(args, dep, strict=True) if d]
    c_out = lin(*dep_offsets)
    m_out = jax.vmap(lambda *ts: jax.jvp(lin, tuple(dep_offsets), ts)[1], in_axes=-1, out_axes=-1)(
        *tangents
    )
    return list(zip(m_out, c_out, strict=True))


def DOT(rules, eqn, args):
    """A dense layer: one ``dot_general`` of the whole matrix."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    lhs, rhs = args
    prec = (rules.precision, rules.precision)
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
        return [(jnp.moveaxis(out_m, pos, -1), out_c)]
    m, c = rhs
    out_m = jax.lax.dot_general(
        lhs, m, ((lc, rc), (lb, rb)), precision=prec, preferred_element_type=pet
    )
    out_c = jax.lax.dot_general(
        lhs, c, ((lc, rc), (lb, rb)), precision=prec, preferred_element_type=pet
    )
    return [(out_m, out_c)]


def CONV(rules, eqn, args):
    """A convolution: every column folded into the batch axis, one convolution of all."""
    (m, c), kernel = args
    p = eqn.params
    dn = p["dimension_numbers"]
    b_in, b_out = dn.lhs_spec[0], dn.out_spec[0]
    d = m.shape[-1]
    if p.get("batch_group_count", 1) != 1:
        raise interp.UnsupportedOperationError("convolutions with batch_group_count > 1")
    # Fold the matrix axis into the conv's batch axis: one conv of all columns.
    mm = jnp.moveaxis(m, -1, b_in + 1)
    shp = list(c.shape)
    shp[b_in] *= d
    mm = mm.reshape(shp)
    out = eqn.bind(mm, kernel, precision=rules.precision)
    oshp = list(out.shape)
    oshp[b_out : b_out + 1] = [c.shape[b_in], d]
    out_m = jnp.moveaxis(out.reshape(oshp), b_out + 1, -1)
    out_c = eqn.bind(c, kernel, precision=rules.precision)
    return [(out_m, out_c)]

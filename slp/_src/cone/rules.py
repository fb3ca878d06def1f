"""The cone route's rules for elementwise operations, sums, shape changes, concatenations
and the ReLU: one `ConeRule` each (a geometry part and a tangent part), named in the
primitive registry (`slp._src.primitives`, the ``cone`` field).
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
from jax import lax

from slp._src.cone.geometry import ConeRule, Flat, Geom, Global, single
from slp._src.cone.tangents import ConeVal, Pass, dep_arg, scaled
from slp._src.cone.windows import TakeData, take_tangent, taken
from slp._src.interpreter import Refusal

# -- identity: the value as it is ------------------------------------------------------


def _identity_geometry(ctx, eqn, ins):
    z = single(eqn, ins, eqn.primitive.name)
    return z if isinstance(z, Refusal) else ([z], None)


def _identity_tangent(p, eqn, step, args):
    return [dep_arg(eqn, args)]


IDENTITY = ConeRule("identity", _identity_geometry, _identity_tangent, elementwise=True)


def _neg_tangent(p, eqn, step, args):
    return [dep_arg(eqn, args)._replace(t=-dep_arg(eqn, args).t)]


NEG = ConeRule("neg", _identity_geometry, _neg_tangent, elementwise=True)


# -- sums: bias adds, residual connections --------------------------------------------


def union_geom(nk: int, vals, shape, what: str) -> Geom | Refusal:
    """The geometry of a value built elementwise from several cone values (a sum, a
    concatenation along a channel axis): its cone covers every operand's."""
    g0 = vals[0]
    for v in vals:
        if (
            v.link != g0.link
            or v.sigma != g0.sigma
            or any(v.shape[a] != g0.shape[a] for a, k in enumerate(g0.link) if k >= 0)
        ):
            return Refusal(f"{what} of values with different positions or strides")
    beta = [min(v.beta[k] for v in vals) for k in range(nk)]
    recep = [max(v.beta[k] + v.recep[k] for v in vals) - beta[k] for k in range(nk)]
    width = [-(-recep[k] // g0.sigma[k]) for k in range(nk)]
    return Geom(tuple(shape), g0.link, g0.sigma, tuple(beta), tuple(recep), tuple(width))


def embed_into(p: Pass, v: ConeVal, g: Geom, ng: Geom, at: Geom | None = None):
    """``v``'s cone tangents (geometry ``g``) placed into the wider cone of ``ng``, at a
    static offset per element offset ``r``; slots of ``v``'s cone beyond ``ng``'s are ones
    that ``v`` does not reach (zero). Materialised: zero at slots outside the value.
    ``at``: ``g`` as placed in ``ng``'s positions (a concatenation along a spatial axis;
    None: in place)."""
    nk = p.nk
    # slot s of v's cone is slot s + offset of ng's
    offsets = {k: -p.geo.shift(at or g, ng, k) for k in range(nk)}

    def embed(sub, off, n_lead):
        for k in range(nk):
            pos = n_lead + 1 + g.axis_of(k)
            lo = max(0, -off[k])
            hi = max(lo, min(g.width[k], ng.width[k] - off[k]))
            sub = lax.slice_in_dim(sub, lo, hi, axis=pos)
            widths = [(0, 0)] * sub.ndim
            left = min(ng.width[k], off[k] + lo)
            widths[pos] = (left, ng.width[k] - left - (hi - lo))
            sub = jnp.pad(sub, widths)
        return sub

    return p.by_runs(p.materialize(v, g), offsets, embed)


def stretches_free_axes(z, shape) -> bool:
    """Whether an elementwise operation's output ``shape`` is ``z``'s up to free axes of size
    1 that it stretches (``conv(x) + x[..., :1]``: one channel repeated over the channels)."""
    return (
        isinstance(z, Geom)
        and len(shape) == len(z.shape)
        and all(
            n == m or (n == 1 and k < 0) for n, m, k in zip(z.shape, shape, z.link, strict=True)
        )
    )


def repeated(p: Pass, z: ConeVal, g: Geom, ng: Geom, dims) -> ConeVal:
    """``z`` (geometry ``g``) as the value of geometry ``ng`` that repeats it along ``ng``'s
    new axes and its free axes of size 1 stretched (operand axis ``a`` is ``ng``'s axis
    ``dims[a]``); a pending mask stays pending, repeated alike."""
    n_pre, win = p.n_pre, ng.window_shape()
    unit, g_win = [1] * len(win), g.window_shape()
    for a, b in enumerate(dims):
        unit[b] = g_win[a]
    t = jnp.broadcast_to(z.t.reshape(z.t.shape[:n_pre] + tuple(unit)), z.t.shape[:n_pre] + win)
    if z.mask is None:
        return ConeVal(t, None, z.valid)
    unit = [1] * len(ng.shape)
    for a, b in enumerate(dims):
        unit[b] = g.shape[a]
    return ConeVal(t, jnp.broadcast_to(z.mask.reshape(unit), ng.shape), z.valid)


def stretched(p: Pass, z: ConeVal, g: Geom, shape) -> tuple[ConeVal, Geom]:
    """``z`` (geometry ``g``) and its geometry as an elementwise operation's operand of output
    ``shape``: repeated along the free axes of size 1 it stretches (`repeated`), if any."""
    if g.shape == tuple(shape):
        return z, g
    ng = dataclasses.replace(g, shape=tuple(shape))
    return repeated(p, z, g, ng, range(len(g.shape))), ng


def _elementwise_geometry(z, shape, what: str):
    """The geometry of an elementwise operation's output of ``shape`` whose one
    input-dependent operand is ``z``: ``z``'s, with the free axes it stretches."""
    if isinstance(z, Refusal) or shape == z.shape:
        return z if isinstance(z, Refusal) else ([z], None)
    if not stretches_free_axes(z, shape):
        return Refusal(f"{what} that broadcasts an input-dependent value over a spatial axis")
    return [dataclasses.replace(z, shape=tuple(shape))], None


def _add_geometry(ctx, eqn, ins):
    deps = [v for v, d in zip(ins, eqn.dep, strict=True) if d]
    shape = ctx.shapes[eqn.outputs[0]]
    if len(deps) == 2:  # e.g. a residual connection
        a, b = deps
        if not (isinstance(a, Geom) and isinstance(b, Geom)):
            return Refusal("a sum of a globally pooled value and another input-dependent value")
        if not all(stretches_free_axes(v, shape) for v in deps):
            return Refusal("a sum that broadcasts an input-dependent value over a spatial axis")
        ng = union_geom(ctx.nk, deps, shape, "a sum")
        return ng if isinstance(ng, Refusal) else ([ng], None)
    return _elementwise_geometry(single(eqn, ins, "a sum"), shape, "a sum")


def _sum_tangent(negate: bool):
    """The tangent of ``a + b`` (``negate``: ``a - b``)."""

    def tangent(p, eqn, step, args):
        return _add_tangent(p, eqn, step, args, negate)

    return tangent


def _add_tangent(p, eqn, step, args, negate: bool):
    if all(eqn.dep):
        (ng,) = step.outs
        ta, tb = (
            embed_into(p, *stretched(p, a, g, ng.shape), ng)
            for a, g in zip(args, step.ins, strict=True)
        )
        return [ConeVal(ta - tb if negate else ta + tb)]
    g = next(v for v in step.ins if v is not None)
    z, _ = stretched(p, dep_arg(eqn, args), g, step.outs[0].shape)
    return [z._replace(t=-z.t) if (negate and eqn.dep[1]) else z]


ADD = ConeRule("add", _add_geometry, _sum_tangent(negate=False))
SUB = ConeRule("sub", _add_geometry, _sum_tangent(negate=True))


# -- products with constants: scales, divisions ---------------------------------------


def _scale_geometry(ctx, eqn, ins):
    z = single(eqn, ins, "a product")
    return _elementwise_geometry(z, ctx.shapes[eqn.outputs[0]], f"a {eqn.primitive.name}")


def _divide_geometry(ctx, eqn, ins):
    if not eqn.dep[0]:
        return Refusal("a division by an input-dependent value")
    return _scale_geometry(ctx, eqn, ins)


def _scale_tangent(p, eqn, step, args):
    j = eqn.dep.index(True)
    return [scaled(p, *stretched(p, args[j], step.ins[j], step.outs[0].shape), args[1 - j])]


def _divide_tangent(p, eqn, step, args):
    return [scaled(p, *stretched(p, args[0], step.ins[0], step.outs[0].shape), 1 / args[1])]


SCALE = ConeRule("scale", _scale_geometry, _scale_tangent)
DIVIDE = ConeRule("divide", _divide_geometry, _divide_tangent)


# -- shape changes: reshape, squeeze, broadcast_in_dim ----------------------------------


def _core(shape, link=None):
    """Axes that a reshape cannot add or drop: all but free axes of size 1."""
    link = link or (-1,) * len(shape)
    return [a for a, n in enumerate(shape) if not (n == 1 and link[a] < 0)]


def _relabel(z: Geom, new_shape) -> Geom | None:
    """``z`` reshaped to ``new_shape`` by adding or dropping free axes of size 1 (a spatial
    axis of size 1 goes to the next new axis of size 1, in order), or by regrouping free
    axes (`_regroup`); or None."""
    link, a_new = [-1] * len(new_shape), 0
    for a_old in _core(z.shape, z.link):
        n = z.shape[a_old]
        while a_new < len(new_shape) and new_shape[a_new] == 1 and n != 1:
            a_new += 1  # new free axes of size 1
        if a_new == len(new_shape) or new_shape[a_new] != n:
            return _regroup(z, new_shape)
        link[a_new] = z.link[a_old]
        a_new += 1
    if any(n != 1 for n in new_shape[a_new:]):
        return _regroup(z, new_shape)
    return dataclasses.replace(z, shape=tuple(new_shape), link=tuple(link))


def _regroup(z: Geom, new_shape) -> Geom | None:
    """``z`` reshaped to ``new_shape`` where spatial axes (none of size 1) stay as they are
    and the free axes between them split or merge among themselves (e.g. the channels of a
    depth-to-space split into the block's rows, columns and channels), or None."""
    if any(z.shape[a] == 1 for a, k in enumerate(z.link) if k >= 0):
        return None
    old = [a for a, n in enumerate(z.shape) if n > 1]
    new = [b for b, n in enumerate(new_shape) if n > 1]
    link, i, j = [-1] * len(new_shape), 0, 0
    while i < len(old) or j < len(new):
        if i < len(old) and z.link[old[i]] >= 0:  # a spatial axis: one new axis, the same
            if j == len(new) or new_shape[new[j]] != z.shape[old[i]]:
                return None
            link[new[j]] = z.link[old[i]]
            i, j = i + 1, j + 1
            continue
        size_old, size_new = 1, 1  # a run of free axes: as many elements in new axes
        while i < len(old) and z.link[old[i]] < 0:
            size_old *= z.shape[old[i]]
            i += 1
        while j < len(new) and size_new < size_old:
            size_new *= new_shape[new[j]]
            j += 1
        if size_new != size_old or size_old == 1:
            return None
    return dataclasses.replace(z, shape=tuple(new_shape), link=tuple(link))


def _reshape_geometry(ctx, eqn, ins):
    z = single(eqn, ins, eqn.primitive.name)
    if isinstance(z, Refusal):
        return z
    new_shape = ctx.shapes[eqn.outputs[0]]
    if int(np.prod(new_shape)) != int(np.prod(z.shape)):
        return Refusal(f"a {eqn.primitive.name} that broadcasts an input-dependent value")
    if isinstance(z, Global):
        return [Global(z.geom, new_shape)], "global"
    ng = _relabel(z, new_shape)
    if ng is not None:
        return [ng], "relabel"
    sizes = [z.shape[a] for a, k in enumerate(z.link) if k >= 0]
    if sizes and all(n == 1 for n in sizes):  # e.g. a 1x1 map flattened: before any merge
        return [Global(z, new_shape)], "pool"
    merged = _merge_repeat(z)
    if merged is not None and _relabel(merged[0], new_shape) is not None:
        return [_relabel(merged[0], new_shape)], ("merge",) + merged
    ups = _upsamples(z, new_shape)
    if ups:
        return [_relabel(ups[-1][0], new_shape)], ("upsample", tuple(ups))
    if any(n == 1 for n in sizes):
        return Refusal(
            "a reshape that merges a spatial axis of size 1 with others: not implemented on "
            "the cone route"
        )
    return [Flat(z)], "flat"


def _merge_repeat(z: Geom):
    """A spatial axis ``a_s`` of size 1 beside a free axis ``a_f`` of size ``m`` (the
    broadcast rows of an edge padding wider than 1) merged into one spatial axis: its
    element ``P`` is the operand's element ``(0, P)``, bounded by ``sigma P + beta -
    sigma (m - 1) ... sigma P + beta + recep - 1``. Returns ``(merged, a_s, a_f)`` (the
    merged geometry has ``a_s`` dropped and ``a_f`` spatial), or None."""
    for a_s, k in enumerate(z.link):
        if k < 0 or z.shape[a_s] != 1:
            continue
        for a_f in (a_s - 1, a_s + 1):
            if 0 <= a_f < len(z.shape) and z.link[a_f] < 0 and z.shape[a_f] > 1:
                m = z.shape[a_f]
                beta, recep, width = map(list, (z.beta, z.recep, z.width))
                beta[k] = beta[k] - z.sigma[k] * (m - 1)
                recep[k] = recep[k] + z.sigma[k] * (m - 1)
                width[k] = -(-recep[k] // z.sigma[k])
                link = list(z.link)
                link[a_f] = k
                keep = [a for a in range(len(z.shape)) if a != a_s]
                merged = Geom(
                    tuple(z.shape[a] for a in keep),
                    tuple(link[a] for a in keep),
                    z.sigma,
                    tuple(beta),
                    tuple(recep),
                    tuple(width),
                )
                return merged, a_s, a_f
    return None


def _merge_upsample(z: Geom):
    """Each way a spatial axis ``a_s`` of ``n > 1`` elements and the free axis ``a_f =
    a_s + 1`` after it, of ``m > 1`` elements, merge into one spatial axis of ``n m``
    elements (``jnp.repeat``'s nearest-neighbour upsampling: a broadcast to a new axis, then
    this reshape): its element ``P`` is the operand's element ``(P // m, P % m)``, whose
    cone is that of a take of ``P // m`` along ``a_s`` (`slp._src.cone.windows.taken`).
    Yields ``(merged, taken, a_s, a_f)``: ``merged`` without ``a_f``, ``taken`` the take's
    geometry with ``a_f`` still there."""
    for a_s, k in enumerate(z.link[:-1]):
        a_f, n = a_s + 1, z.shape[a_s]
        m = z.shape[a_f]
        if k < 0 or n < 2 or z.link[a_f] >= 0 or m < 2:
            continue
        shape = z.shape[:a_s] + (n * m,) + z.shape[a_f:]
        took = taken(dataclasses.replace(z, shape=shape), k, n, np.arange(n * m) // m)
        keep = [a for a in range(len(shape)) if a != a_f]
        merged = dataclasses.replace(
            took,
            shape=tuple(shape[a] for a in keep),
            link=tuple(took.link[a] for a in keep),
        )
        yield merged, took, a_s, a_f


def _upsamples(z: Geom, new_shape, depth: int = 0) -> list | None:
    """The merges of `_merge_upsample`, one after another, that turn ``z`` into a relabelling
    of ``new_shape`` (e.g. a depth-to-space, which merges the height and the width each with
    a free axis), or None. At most one merge per spatial axis."""
    if depth == len(z.sigma):
        return None
    for up in _merge_upsample(z):
        if _relabel(up[0], new_shape) is not None:
            return [up]
        more = _upsamples(up[0], new_shape, depth + 1)
        if more:
            return [up] + more
    return None


def _upsample_tangent(p, t, g: Geom, took: Geom, a_s: int, a_f: int):
    """``t`` (geometry ``g``, materialised) in the layout of `_merge_upsample`'s merged
    axis: the take of ``P // m`` along ``a_s``, then per cone slot (position ``P =
    rho' B + d'[r] + e``) the free index ``P % m``."""
    k, m, n_pre = g.link[a_s], g.shape[a_f], p.n_pre
    idx = np.arange(g.shape[a_s] * m) // m
    out = take_tangent(p, t, g, took, TakeData(a_s, a_s, idx))
    rho, d = p.geo.starts(took, k)
    big = rho * p.block[k] + jnp.asarray(d)[:, None] + jnp.arange(took.width[k])[None]
    shape = [1] * out.ndim
    shape[k], shape[n_pre + a_s] = big.shape
    out = jnp.take_along_axis(out, jnp.mod(big, m).reshape(shape), n_pre + a_f)
    return jnp.squeeze(out, n_pre + a_f)


def _merge_tangent(p, t, g: Geom, merged: Geom, a_s: int, a_f: int):
    """``t`` (geometry ``g``) in ``merged``'s layout (`_merge_repeat`): output slot ``e``
    of element offset ``r`` is position ``P = rho B + d'[r] + e``, which reads the free
    index ``P`` at the operand's only position 0, its cone slot ``-rho B - d[r]``."""
    k, n_pre = g.link[a_s], p.n_pre
    rho, d = p.geo.starts(g, k)
    _, d_m = p.geo.starts(merged, k)
    big = rho * p.block[k] + jnp.asarray(d_m)[:, None] + jnp.arange(merged.width[k])[None]
    slot = -rho * p.block[k] - jnp.asarray(d)
    ok = (big >= 0) & (big < g.shape[a_f]) & ((slot >= 0) & (slot < g.width[k]))[:, None]
    shape = [1] * t.ndim
    shape[k] = len(d)
    t = jnp.take_along_axis(t, jnp.clip(slot, 0, g.width[k] - 1).reshape(shape), n_pre + a_s)
    shape[n_pre + a_f] = merged.width[k]
    big = jnp.clip(big, 0, g.shape[a_f] - 1).reshape(shape)
    t = jnp.where(ok.reshape(shape), jnp.take_along_axis(t, big, n_pre + a_f), 0)
    return jnp.squeeze(t, n_pre + a_s)


def _reshape_tangent(p, eqn, step, args):
    z, g, (ng,) = dep_arg(eqn, args), next(v for v in step.ins if v is not None), step.outs
    n_pre = p.n_pre
    if step.data[0] == "merge":
        t = _merge_tangent(p, p.materialize(z, g), g, *step.data[1:])
        return [ConeVal(t.reshape(t.shape[:n_pre] + ng.window_shape()))]
    if step.data[0] == "upsample":
        t = p.materialize(z, g)
        for merged, took, a_s, a_f in step.data[1]:  # each merge from the one before
            t = _upsample_tangent(p, t, g, took, a_s, a_f)
            g = merged
        return [ConeVal(t.reshape(t.shape[:n_pre] + ng.window_shape()))]
    if step.data == "relabel":
        mask = None if z.mask is None else z.mask.reshape(ng.shape)
        return [ConeVal(z.t.reshape(z.t.shape[:n_pre] + ng.window_shape()), mask, z.valid)]
    if step.data == "flat":
        return [ConeVal(p.materialize(z, g))]
    if step.data == "pool":  # a value with one position: pooled (zero outside the value)
        t = p.materialize(z, g)
        t = jnp.sum(t, axis=tuple(n_pre + a for a, k in enumerate(g.link) if k >= 0))
        return [ConeVal(t.reshape(t.shape[:n_pre] + ng.shape))]
    return [ConeVal(z.t.reshape(z.t.shape[:n_pre] + ng.shape))]


REPEATED = -2
"""The carry (`slp._src.cone.ChannelCarry`) of an axis that a broadcast adds: it follows no
input axis (as -1), and its elements repeat the value."""


def _reshape_carry(eqn, ins, shapes):
    """Axes kept (up to axes of size 1) carry their input axis. Where adjacent axes merge
    into one, the merged axis carries the input axis of one of them if every other is a
    broadcast's repeat (`REPEATED`: ``jnp.repeat``'s upsampling), else none (e.g. a width
    and a channel axis merged for a dense layer: a layer over a spatial axis, not over
    channels); a reshape that splits axes carries none."""
    src = next(c for c in ins if c is not None)
    old_shape, new_shape = shapes[eqn.inputs[0]], shapes[eqn.outputs[0]]
    old, new = _core(old_shape), _core(new_shape)
    out, i = [-1] * len(new_shape), 0
    for a_new in new:
        group, size = [], 1
        while i < len(old) and size < new_shape[a_new]:
            group.append(src[old[i]])
            size *= old_shape[old[i]]
            i += 1
        if size != new_shape[a_new]:
            return [(-1,) * len(new_shape)], set()
        rest = [c for c in group if c != REPEATED]
        out[a_new] = group[0] if len(group) == 1 else (rest[0] if len(rest) == 1 else -1)
    return [tuple(out) if i == len(old) else (-1,) * len(new_shape)], set()


SHAPE = ConeRule("shape", _reshape_geometry, _reshape_tangent, carry=_reshape_carry)


def _broadcast_geometry(ctx, eqn, ins):
    """``broadcast_in_dim`` that adds free axes (e.g. ``h[None]``, or the repeated rows of
    an edge padding): operand axis ``i`` is output axis ``broadcast_dimensions[i]``, each
    new axis repeats the value. An empty output carries no tangents at all."""
    z = single(eqn, ins, eqn.primitive.name)
    if isinstance(z, Refusal):
        return z
    if not isinstance(z, Geom):
        return _reshape_geometry(ctx, eqn, ins)
    out_shape, dims = ctx.shapes[eqn.outputs[0]], tuple(eqn.params["broadcast_dimensions"])
    link = [-1] * len(out_shape)
    for a, b in enumerate(dims):
        link[b] = z.link[a]
    ng = dataclasses.replace(z, shape=tuple(out_shape), link=tuple(link))
    if 0 in out_shape:
        return [ng], "empty"
    stretched = [a for a, b in enumerate(dims) if z.shape[a] != out_shape[b]]
    if any(z.shape[a] != 1 or z.link[a] >= 0 for a in stretched):
        return Refusal(
            "a broadcast_in_dim that stretches an axis of an input-dependent value (other "
            "than a free axis of size 1)"
        )
    return [ng], "repeat"


def _broadcast_tangent(p, eqn, step, args):
    (ng,), z = step.outs, dep_arg(eqn, args)
    if step.data == "empty":
        return [ConeVal(jnp.zeros(z.t.shape[: p.n_pre] + ng.window_shape(), z.t.dtype))]
    if step.data != "repeat":
        return _reshape_tangent(p, eqn, step, args)
    # a new axis, or a free axis of size 1 stretched: the value repeats along it
    g = next(v for v in step.ins if v is not None)
    return [repeated(p, z, g, ng, eqn.params["broadcast_dimensions"])]


def _broadcast_carry(eqn, ins, shapes):
    src = next(c for c in ins if c is not None)
    out = [REPEATED] * len(shapes[eqn.outputs[0]])
    for a, b in enumerate(eqn.params["broadcast_dimensions"]):
        out[b] = src[a]
    return [tuple(out)], set()


BROADCAST = ConeRule(
    "broadcast_in_dim", _broadcast_geometry, _broadcast_tangent, carry=_broadcast_carry
)


# -- transposes: a relabelling of the axes ---------------------------------------------


def _transpose_geometry(ctx, eqn, ins):
    (z,) = ins
    perm = tuple(eqn.params["permutation"])
    shape = tuple(z.shape[a] for a in perm)
    if isinstance(z, Global):
        return [Global(z.geom, shape)], perm
    link = tuple(z.link[a] for a in perm)
    return [dataclasses.replace(z, shape=shape, link=link)], perm


def _transpose_tangent(p, eqn, step, args):
    (z,), perm = args, step.data
    n_pre = p.n_pre
    t = jnp.transpose(z.t, tuple(range(n_pre)) + tuple(n_pre + a for a in perm))
    mask = None if z.mask is None else jnp.transpose(z.mask, perm)
    return [ConeVal(t, mask, z.valid)]


def _transpose_carry(eqn, ins, shapes):
    (src,) = ins
    return [tuple(src[a] for a in eqn.params["permutation"])], set()


TRANSPOSE = ConeRule("transpose", _transpose_geometry, _transpose_tangent, carry=_transpose_carry)


# -- global sum pooling -------------------------------------------------------------------


def _reduce_sum_geometry(ctx, eqn, ins):
    (z,) = ins
    if not isinstance(z, Geom):
        return Refusal("a sum of a globally pooled value")
    axes = tuple(eqn.params["axes"])
    if any(a not in axes for a, k in enumerate(z.link) if k >= 0):
        return Refusal("a sum over some of the spatial axes")
    return [Global(z, ctx.shapes[eqn.outputs[0]])], axes


def _reduce_sum_tangent(p, eqn, step, args):
    (g,) = step.ins
    t = p.materialize(args[0], g)  # zero at cone slots outside the value
    return [ConeVal(jnp.sum(t, axis=tuple(p.n_pre + a for a in step.data)))]


def _reduce_sum_carry(eqn, ins, shapes):
    (src,) = ins
    axes = eqn.params["axes"]
    return [tuple(c for a, c in enumerate(src) if a not in axes)], set()


REDUCE_SUM = ConeRule(
    "reduce_sum", _reduce_sum_geometry, _reduce_sum_tangent, carry=_reduce_sum_carry
)


# -- concatenations along channel axes ------------------------------------------------


def _concat_geometry(ctx, eqn, ins):
    """Cone values concatenated along a channel axis (e.g. Inception or DenseNet), or along
    a spatial axis (e.g. the rows of an edge or reflect padding): there operand ``i``,
    placed at offset ``o_i``, is a value whose element ``P`` is its element ``P - o_i``
    (``beta`` less ``sigma o_i``), and the output's cone covers every operand's."""
    if not all(eqn.dep):
        return Refusal("a concatenation of input-dependent values with constants")
    if not all(isinstance(v, Geom) for v in ins):
        return Refusal("a concatenation of globally pooled values")
    d = eqn.params["dimension"]
    out_shape = ctx.shapes[eqn.outputs[0]]
    k = ins[0].link[d]
    if k < 0:
        ng = union_geom(ctx.nk, ins, out_shape, "a concatenation")
        return ng if isinstance(ng, Refusal) else ([ng], tuple(ins))
    placed, offset = [], 0
    for v in ins:
        beta = list(v.beta)
        beta[k] = beta[k] - v.sigma[k] * offset
        placed.append(dataclasses.replace(v, shape=out_shape, beta=tuple(beta)))
        offset += v.shape[d]
    ng = union_geom(ctx.nk, placed, out_shape, "a concatenation")
    return ng if isinstance(ng, Refusal) else ([ng], tuple(placed))


def _concat_tangent(p, eqn, step, args):
    """Along a channel axis the embedded operands are concatenated; along a spatial one
    they are summed (each is zero outside its own positions)."""
    (ng,), d = step.outs, eqn.params["dimension"]
    ts = [
        embed_into(p, v, g, ng, at)
        for v, g, at in zip(args, step.ins, step.data, strict=True)
        if 0 not in g.shape or ng.link[d] < 0
    ]
    if ng.link[d] < 0:
        return [ConeVal(jnp.concatenate(ts, p.n_pre + d))]
    return [ConeVal(sum(ts[1:], ts[0]))]


CONCATENATE = ConeRule("concatenate", _concat_geometry, _concat_tangent)


def _stack_geometry(ctx, eqn, ins):
    """Cone values stacked along a new (free) axis, e.g. ``jnp.stack`` of two branches."""
    if not all(eqn.dep):
        return Refusal("a stack of input-dependent values with constants")
    if not all(isinstance(v, Geom) for v in ins):
        return Refusal("a stack of globally pooled values")
    ng = union_geom(ctx.nk, ins, ins[0].shape, "a stack")
    if isinstance(ng, Refusal):
        return ng
    ax = eqn.params["axis"]
    link = ng.link[:ax] + (-1,) + ng.link[ax:]
    return [dataclasses.replace(ng, shape=ctx.shapes[eqn.outputs[0]], link=link)], ng


def _stack_tangent(p, eqn, step, args):
    ts = [embed_into(p, v, g, step.data) for v, g in zip(args, step.ins, strict=True)]
    return [ConeVal(jnp.stack(ts, p.n_pre + eqn.params["axis"]))]


def _stack_carry(eqn, ins, shapes):
    src = next(c for c in ins if c is not None)
    ax = eqn.params["axis"]
    return [tuple(src[:ax]) + (-1,) + tuple(src[ax:])], set()


STACK = ConeRule("stack", _stack_geometry, _stack_tangent, carry=_stack_carry)


def _split_geometry(ctx, eqn, ins):
    """A cone value split along a free (channel) axis, e.g. ``jnp.split`` of the channels."""
    (z,) = ins  # split has one operand
    if not isinstance(z, Geom):
        return Refusal("a split of a globally pooled value")
    if z.link[eqn.params["axis"]] >= 0:
        return Refusal("a split along a spatial axis")
    return [dataclasses.replace(z, shape=ctx.shapes[o]) for o in eqn.outputs], None


def _split_tangent(p, eqn, step, args):
    t = p.materialize(args[0], step.ins[0])
    bounds = np.cumsum(eqn.params["sizes"])[:-1]
    return [ConeVal(piece) for piece in jnp.split(t, bounds, p.n_pre + eqn.params["axis"])]


SPLIT = ConeRule("split", _split_geometry, _split_tangent)


def _tile_geometry(ctx, eqn, ins):
    """A cone value repeated along free (channel) axes, e.g. ``jnp.tile`` of the channels."""
    (z,) = ins
    if not isinstance(z, Geom):
        return Refusal("a tile of a globally pooled value")
    reps = tuple(eqn.params["reps"])
    if len(reps) != len(z.shape) or any(
        r != 1 and k >= 0 for r, k in zip(reps, z.link, strict=True)
    ):
        return Refusal("a tile along a spatial axis")
    return [dataclasses.replace(z, shape=ctx.shapes[eqn.outputs[0]])], None


def _tile_tangent(p, eqn, step, args):
    t = p.materialize(args[0], step.ins[0])
    return [ConeVal(jnp.tile(t, (1,) * p.n_pre + tuple(eqn.params["reps"])))]


TILE = ConeRule("tile", _tile_geometry, _tile_tangent)


# -- ReLU ---------------------------------------------------------------------------------


def _relu_geometry(ctx, eqn, ins):
    z = single(eqn, ins, "a ReLU")
    if isinstance(z, Refusal):
        return z
    return [z], None


def _relu_tangent(p, eqn, step, args):
    z = dep_arg(eqn, args)
    on = p.state.activities[eqn.site] > 0
    if isinstance(step.ins[eqn.dep.index(True)], Global):
        # After global pooling every element of the value is one neuron reached by every
        # input element: the state multiplies the tangents at once.
        mask = on.astype(z.t.dtype)
        return [ConeVal(z.t * mask.reshape((1,) * (z.t.ndim - mask.ndim) + mask.shape))]
    # The state multiplies the value: kept pending until a consumer needs it.
    return [z._replace(mask=on)]


RELU = ConeRule("relu", _relu_geometry, _relu_tangent)

"""The cone route's tangent machinery: one scan step per block of input elements.

`norms` (traced) runs the blocks; `tangents` walks the geometry's operations with the
block's cone tangents (`ConeVal`), reading the geometry as it goes, and each operation's
`ConeRule.tangent` does its part. `Pass` holds what a tangent rule reads (the geometry, the
block, the state, the precision) and the window arithmetic the rules share.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from slp._src import cut as _cut
from slp._src import interpreter as interp
from slp._src import linear as _linear
from slp._src import matmul as _matmul
from slp._src.cone.geometry import ConeGeometry, Geom, Global

# ----------------------------------------------------------------------------------
# Tangents.


class ConeVal(NamedTuple):
    """The block's tangents of one value (its geometry is in the `ConeGeometry`).

    For a `Geom` value, ``t`` has shape ``(r_0, ..., r_{K-1}, f) + geom.window_shape()``:
    one Jacobian column per input element of the current block (spatial offsets ``r_k``
    inside the block, ``f`` the flat index over the free input axes), restricted to the
    element's cone. Two factors may still be pending (applied when a consumer needs
    them): ``mask``, a value-shaped array that multiplies the value (a ReLU's 0/1 state),
    and, if ``valid`` is False, the zeroing of cone slots outside the value. For a `Flat`
    value ``t`` is laid out as its geometry's (both applied); for a `Global` one it is
    ``(r..., f) + shape``.
    """

    t: Any
    mask: Any = None
    valid: bool = True


class Pass(NamedTuple):
    """What the tangent rules read besides their operands, for one block.

    Attributes:
      geo: the `ConeGeometry`.
      block: int32 ``(K,)`` block index ``B`` (None while preparing).
      state: the network's `slp._src.network.NetworkState` (ReLU states, pool winners).
      precision: matrix-product precision (`slp._src.matmul`).
      consts: values of the constants (ids of the program's constants and of the
        operations that do not depend on the input).
      prepared: per operation index, its rule's loop-invariant data.
      dtype: the input's dtype (its tangents'; every other value's tangents are in that
        value's own dtype, `ConeGeometry.dtypes`).
    """

    geo: ConeGeometry
    block: Any
    state: Any
    precision: Any
    consts: Mapping[int, Any]
    prepared: Mapping[int, Any]
    dtype: Any

    @property
    def nk(self) -> int:
        return len(self.geo.spatial)

    @property
    def n_pre(self) -> int:
        """Leading axes of ``t`` that index the block's input elements."""
        return self.nk + 1

    def union(self, g: Geom, k: int):
        """Start (traced), static ``d - min(d)``, length and start range of the block's cones."""
        rho, d = self.geo.starts(g, k)
        dmin = int(d.min())
        span = g.width[k] + int(d.max()) - dmin
        b = self.geo.blocks[:, k]
        rng = (rho * int(b.min()) + dmin, rho * int(b.max()) + dmin)
        return rho * self.block[k] + dmin, d - dmin, span, rng

    def windows(self, arr, g: Geom, fill=0):
        """``arr`` (value-shaped; free axes may have size 1) cut into the block's cones.

        Returns ``(r_0, ..., r_{K-1}) + window shape`` (free axes as in ``arr``).
        """
        out = arr
        for k in range(self.nk):
            pos = k + g.axis_of(k)  # earlier r axes were put in front
            start, rel, span, rng = self.union(g, k)
            shifted = shift(out, pos, start, span, rng, fill)
            w = g.width[k]
            pieces = [lax.slice_in_dim(shifted, int(o), int(o) + w, axis=pos) for o in rel]
            out = jnp.moveaxis(jnp.stack(pieces, axis=pos), pos, k)
        return out

    def overlap_add(self, t, g: Geom):
        """Transpose of `windows` for ``t`` with one ``r`` axis per spatial axis in front."""
        out = t
        nk = self.nk
        for k in range(nk):
            ax = (nk - k - 1) + g.axis_of(k)  # window axis after the remaining r axes
            start, rel, span, rng = self.union(g, k)
            w = g.width[k]
            v = jnp.moveaxis(out, 0, ax)  # r axis of k right before its window axis
            shape = list(v.shape)
            del shape[ax]
            shape[ax] = span
            acc = jnp.zeros(shape, v.dtype)
            for i, o in enumerate(rel):
                idx = [slice(None)] * len(shape)
                idx[ax] = slice(int(o), int(o) + w)
                acc = acc.at[tuple(idx)].add(lax.index_in_dim(v, i, ax, keepdims=False))
            # Back onto the value's positions: acc[i] is position start + i.
            n = g.shape[g.axis_of(k)]
            lo = max(0, rng[1])
            hi = max(0, n - rng[0] - span)
            pad = [(0, 0)] * acc.ndim
            pad[ax] = (lo, hi)
            out = lax.dynamic_slice_in_dim(jnp.pad(acc, pad), lo - start, n, ax)
        return out

    def apply(self, t, win):
        """``t`` times cone windows ``win`` (no ``f`` axis: the same for every channel)."""
        return t * jnp.expand_dims(win, self.nk)

    def materialize(self, z: ConeVal, g: Geom):
        """``z.t`` with its pending mask / validity applied."""
        if z.mask is not None:
            return self.apply(z.t, self.windows(z.mask.astype(z.t.dtype), g))
        if not z.valid:
            shape = tuple(n if k >= 0 else 1 for n, k in zip(g.shape, g.link, strict=True))
            return self.apply(z.t, self.windows(jnp.ones(shape, z.t.dtype), g))
        return z.t

    def by_runs(self, t, kappas: dict, fn, extra=None):
        """``fn`` applied per group of element offsets ``r`` with the same shifts.

        ``t``: cone tangents, ``r`` axes in front. ``kappas[k]``: static shift per offset
        along spatial axis ``k``, periodic (`kappa_runs`); each ``r_k`` is split into
        ``(q, rho)`` and ``fn(sub, kappa, n_lead, extra_sub)`` gets the slice of ``t``
        (and of ``extra``, laid out like ``t``'s leading axes) for one run per axis,
        ``kappa`` the tuple of its shifts and ``n_lead = 2 K`` leading axes. Its results
        are reassembled and returned with the ``r`` axes merged back.
        """
        nk = self.nk
        runs, lead = [None] * nk, []
        for k in range(nk):
            period, runs[k] = kappa_runs(kappas[k])
            lead += [t.shape[k] // period, period]
        tt = t.reshape(tuple(lead) + t.shape[nk:])
        ee = None if extra is None else extra.reshape(tuple(lead) + extra.shape[nk:])
        blocks = {}
        for combo in itertools.product(*runs):
            sub, esub = tt, ee
            for k, (rho0, rho1, _) in enumerate(combo):
                sub = lax.slice_in_dim(sub, rho0, rho1, axis=2 * k + 1)
                if esub is not None:
                    esub = lax.slice_in_dim(esub, rho0, rho1, axis=2 * k + 1)
            kap = tuple(c[2] for c in combo)
            blocks[combo] = fn(sub, kap, 2 * nk) if extra is None else fn(sub, kap, 2 * nk, esub)
        # Reassemble along the rho axes (last axis first), then merge (q, rho) back into r.
        for k in reversed(range(nk)):
            blocks = {
                c: jnp.concatenate([blocks[c + (run,)] for run in runs[k]], axis=2 * k + 1)
                for c in itertools.product(*runs[:k])
            }
        out = blocks[()]
        return out.reshape(t.shape[:nk] + out.shape[2 * nk :])


def shift(arr, axis: int, c, length: int, c_range: tuple[int, int], fill=0):
    """``out[i] = arr[i + c]`` along ``axis`` for ``i < length`` (``fill`` outside).

    ``c`` is traced (it depends on the block); ``c_range`` is its range over blocks.
    """
    n = arr.shape[axis]
    lo = max(0, -c_range[0])
    hi = max(0, c_range[1] + length - n)
    pad = [(0, 0)] * arr.ndim
    pad[axis] = (lo, hi)
    padded = jnp.pad(arr, pad, constant_values=fill)
    return lax.dynamic_slice_in_dim(padded, c + lo, length, axis)


def kappa_runs(kappa: np.ndarray):
    """Element offsets ``r`` grouped by equal ``kappa[r]`` (a window's static shift).

    ``kappa`` is periodic in ``r`` with the output value's stride, so the groups are found
    in one period as runs of consecutive offsets ``rho`` with equal shift; a group is then
    ``r = q * period + rho`` for every ``q`` and ``rho`` in its run (one rectangular slice
    of ``r`` split into ``(q, rho)``), whatever the network's depth.

    Returns:
      ``(period, runs)``: runs are ``(rho0, rho1, kappa)`` covering ``0 .. period - 1``.
    """
    n = len(kappa)
    period = next(
        p
        for p in range(1, n + 1)
        if n % p == 0 and np.array_equal(kappa, np.tile(kappa[:p], n // p))
    )
    runs, start = [], 0
    for rho in range(1, period + 1):
        if rho == period or kappa[rho] != kappa[start]:
            runs.append((start, rho, int(kappa[start])))
            start = rho
    return period, runs


def input_tangents(p: Pass, g: Geom) -> ConeVal:
    """The input's cone tangents (geometry ``g``): element ``(r, f)`` of the block is
    one-hot at itself."""
    geo = p.geo
    shape = geo.in_shape
    nk = p.nk
    free_shape = tuple(n for n, k in zip(shape, g.link, strict=True) if k < 0)
    nf = int(np.prod(free_shape))
    eye = jnp.eye(nf, dtype=p.dtype).reshape((nf,) + free_shape)
    ok = jnp.ones((), p.dtype)
    for k in range(nk):
        j = geo.sigma_tot[k] * p.block[k] + jnp.arange(geo.sigma_tot[k])
        inside = (j >= 0) & (j < shape[geo.spatial[k]])
        ok = ok.reshape(ok.shape + (1,)) * inside.astype(p.dtype).reshape((1,) * ok.ndim + (-1,))
    t = ok.reshape(ok.shape + (1,) * (1 + len(free_shape))) * eye.reshape(
        (1,) * nk + (nf,) + free_shape
    )
    # Put the window axes (size 1) of the spatial axes in place.
    win = [1 if k >= 0 else n for n, k in zip(shape, g.link, strict=True)]
    return ConeVal(t.reshape(t.shape[: nk + 1] + tuple(win)))


class Prepare:
    """The constants the cone route's operations read and every rule's loop-invariant data
    (`slp._src.cone.geometry.ConeRule.prepare`), collected as the forward pass goes by:
    the forward walk (`slp._src.interpreter.forward_walk`) calls it at every input-dependent
    linear operation with its operands, so the route needs no pass of its own for them.

    Args:
      program: the traced network.
      geo: the route's `ConeGeometry`.
      precision: matrix-product precision (`slp._src.matmul`).
    """

    def __init__(self, program, geo: ConeGeometry, precision):
        self.program, self.geo = program, geo
        self.p0 = Pass(geo, None, None, precision, {}, {}, None)
        self.consts: dict[int, Any] = {}
        self.prepared: dict[int, Any] = {}

    def __call__(self, eqn, args) -> None:
        i = self.program.producers.get(eqn.outputs[0])
        step = self.geo.steps.get(i)
        if step is None:  # not on the route (after its end, or not needed by it)
            return
        for a, v, d in zip(eqn.inputs, args, eqn.dep, strict=True):
            if not d and isinstance(a, int):
                self.consts[a] = v
        if step.rule.prepare is not None:
            p = self.p0._replace(consts=self.consts)
            self.prepared[i] = step.rule.prepare(p, eqn, step, args_of(p, eqn, {}))


def _prepared(program, p0: Pass) -> Pass:
    """``p0`` with what `Prepare` collects, from a pass of its own over the geometry's
    operations (their constants computed from the program's; once per call, outside the loop
    over blocks), for callers without a forward pass to collect it on."""
    collect = Prepare(program, p0.geo, p0.precision)

    def visit(i, env):
        eqn = program.eqns[i]
        collect(
            eqn,
            [
                None if d else interp.operand_value(a, env)
                for a, d in zip(eqn.inputs, eqn.dep, strict=True)
            ],
        )

    interp.walked("constants")
    interp.constant_values(program, p0.geo.order, visit)
    return p0._replace(consts=collect.consts, prepared=collect.prepared)


def args_of(p: Pass, eqn, env) -> list:
    return [a.val if not isinstance(a, int) else env.get(a, p.consts.get(a)) for a in eqn.inputs]


def in_dtype(v: ConeVal, dtype) -> ConeVal:
    """``v`` with its tangents in ``dtype``, its value's own (None: as they are): where the
    network casts (``convert_element_type``, a product with a wider result type) the
    tangents are cast alike, so that a sum adds tangents of one dtype as the network adds
    values of one."""
    return v if dtype is None or v.t.dtype == dtype else v._replace(t=v.t.astype(dtype))


def _tangents(program, p: Pass):
    """Walks the geometry's operations with the block's tangents.

    Returns ``(relu_in, cut)``: per ReLU layer up to the end, ``(t, geom)`` of its input
    (its pending mask applied), and the tangents of the cut's operand (None without a cut).
    """
    geo = p.geo
    interp.walked("tangents")
    env: dict[int, Any] = {program.input_id: input_tangents(p, geo.values[program.input_id])}
    relu_in = {}
    for i in geo.order:
        eqn = program.eqns[i]
        if eqn.kind == "const":
            continue
        step = geo.steps[i]
        args = args_of(p, eqn, env)
        j = eqn.dep.index(True)
        if i == geo.end and eqn.kind != "relu":  # the cut
            g = step.ins[j]
            return relu_in, p.materialize(args[j], g) if isinstance(g, Geom) else args[j].t
        if eqn.kind == "relu":
            # The norms need the ReLU's input itself: apply a mask still pending from an
            # earlier ReLU. (Cone slots outside the value need no zeroing: the norms only
            # sum onto real positions, and the ReLU mask's cones are zero outside.)
            z, g = args[j], step.ins[j]
            if z.mask is not None:
                z = ConeVal(p.materialize(z, g), valid=z.valid)
            relu_in[eqn.site] = (z.t, g)
            if i == geo.end:
                return relu_in, None
            args[j] = z
        outs = step.rule.tangent(p, eqn, step, args)
        for o, v in zip(eqn.outputs, outs, strict=True):
            env[o] = in_dtype(v, geo.dtypes.get(o))
    raise AssertionError("the geometry ends at its last operation")


def _cut_columns(program, geo: ConeGeometry, p0: Pass, plan):
    """``cols(t, b)``: the cut's exact Jacobian columns from the block's tangents ``t`` of its
    operand (one product with the slice of the dense weights that the block's cones cover)."""

    cut_eqn = program.eqns[plan.cut]
    hp = p0.precision
    nk = p0.nk
    op_id = cut_eqn.inputs[cut_eqn.dep.index(True)]
    weight = args_of(p0, cut_eqn, {})[cut_eqn.dep.index(False)]
    w_mat = _cut.cut_matrix(cut_eqn, weight, geo.shapes[op_id])
    pet = cut_eqn.params.get("preferred_element_type")
    n_out = w_mat.shape[1]
    kind = geo.values[op_id]
    if isinstance(kind, Global):  # after global pooling: the same weights for every element
        w_cut = _matmul.split(w_mat, hp)  # once, outside the loop
        return lambda t, b: _matmul.dot(t.reshape(-1, w_mat.shape[0]), w_cut, hp, pet)
    g = kind if isinstance(kind, Geom) else kind.geom
    # The dense weights with their rows laid out as the cut's operand before flattening.
    # Elements of a block whose cones at the cut start at the same place share one slice
    # of the weights: split the block's offsets r by that start.
    w_full = w_mat.reshape(g.shape + (n_out,))
    groups, rhos = [], []
    for k in range(nk):
        rho, d = geo.starts(g, k)  # rho > 1 where the network upsamples
        rhos.append(rho)
        groups.append([(int(u), np.nonzero(d == u)[0]) for u in np.unique(d)])
    pad = [(0, 0)] * w_full.ndim
    sizes = list(w_full.shape)
    for k in range(nk):
        ax = g.axis_of(k)
        us = [u for u, _ in groups[k]]
        b_max = rhos[k] * int(geo.blocks[:, k].max())
        pad[ax] = (max(0, -min(us)), max(0, b_max + max(us) + g.width[k] - g.shape[ax]))
        sizes[ax] = g.width[k]
    w_cut = _matmul.split(jnp.pad(w_full, pad), hp)  # once, outside the loop

    def cols(t, b):
        out = []
        for combo in itertools.product(*groups):
            starts = [jnp.zeros((), jnp.int32)] * len(w_cut.shape)
            part = t
            for k, (u, members) in enumerate(combo):
                ax = g.axis_of(k)
                starts[ax] = (rhos[k] * b[k] + u + pad[ax][0]).astype(jnp.int32)
                part = lax.slice_in_dim(part, int(members[0]), int(members[-1]) + 1, axis=k)
            w_win = _matmul.each(
                lambda w, s=starts: lax.dynamic_slice(w, s, sizes).reshape(-1, n_out), w_cut
            )
            out.append(_matmul.dot(part.reshape(-1, w_win.shape[0]), w_win, hp, pet))
        return jnp.concatenate(out, 0)

    return cols


def norms(program, state, x, plan, precision, prepare: Prepare | None = None, lin=None) -> list:
    """``|w_hat|^2`` per ReLU layer by the cone route (`slp._src.insens` module docstring).

    One scan step per block of input elements: their cone tangents through the
    convolutional part (norms summed onto each layer), then, at the cut, their exact
    Jacobian columns as one product with the slice of the dense weights that the
    block's cones cover, pushed through the rest of the network.

    Args:
      program: the traced network.
      state: its `slp._src.network.NetworkState` at ``x``.
      x: the input.
      plan: the `slp.InsensPlan` (route ``"cone"``; ``plan.cone`` the geometry).
      precision: matrix-product precision (`slp._src.matmul`).
      prepare: the constants and prepared data, collected on the forward pass that made
        ``state`` (`Prepare`); None: one pass of its own computes them.
      lin: the network linearized at ``x`` with the plan's cut (`slp._src.linear.linearized`,
        for the columns' way through the rest of the network); None: a walk of its own.

    Returns:
      Per ReLU layer, the squared norms ``|w_hat_i|^2`` in the layer's shape (None for
      layers in neither ``plan.pre_sites`` nor ``plan.post_sites``).
    """

    geo = plan.cone
    nk = len(geo.spatial)
    p0 = Pass(geo, None, state, precision, {}, {}, x.dtype)
    if prepare is None:
        p0 = _prepared(program, p0)
    else:  # collected on the forward pass
        p0 = p0._replace(consts=prepare.consts, prepared=prepare.prepared)
    cols_of = post = None
    if plan.cut is not None:
        cols_of = _cut_columns(program, geo, p0, plan)
        lin = _linear.cut_linearized(program, state, x, plan.cut, lin)
        post = lin.after_cut(plan.post_sites)

    def step(b):
        p = p0._replace(block=b)
        relu_in, cut_t = _tangents(program, p)
        sums = []
        for s in plan.pre_sites:
            t, g = relu_in[s]
            # over the free axis f, in at least float32 (`_matmul.accumulator`); after global
            # pooling every element is reached by every input element: over r too
            if isinstance(g, Global):
                sums.append(_matmul.square_sum(t, tuple(range(nk + 1))))
            else:
                sums.append(p.overlap_add(_matmul.square_sum(t, nk), g))
        if cols_of is None:
            return sums
        cols = cols_of(cut_t, b)
        cols = cols.reshape((cols.shape[0],) + plan.cut_out_shape)
        return sums + _cut.post_norms(post, lin.shapes[1].dtype, cols)

    blocks = jnp.asarray(geo.blocks, jnp.int32)
    sums = _cut.scan_sum(step, blocks, len(geo.blocks))
    by_site = dict(zip(plan.pre_sites + plan.post_sites, sums, strict=True))
    # None for a layer the plan does not ask for (an estimate's exact first layers).
    return [by_site.get(s) for s in range(len(program.relu_shapes))]


# -- helpers of the rules ---------------------------------------------------------------


def dep_arg(eqn, args):
    """The one input-dependent operand's value."""
    return args[eqn.dep.index(True)]


def scaled(p: Pass, z: ConeVal, v, c) -> ConeVal:
    """``z`` (geometry ``v``) times a constant ``c``: a scalar or broadcastable to the value,
    e.g. a per-channel scale such as an inference-mode batch norm's."""
    if np.ndim(c) == 0:
        return z._replace(t=z.t * c)
    c = jnp.asarray(c, z.t.dtype)
    c = c.reshape((1,) * (len(v.shape) - c.ndim) + c.shape)
    if isinstance(v, Global) or all(c.shape[a] == 1 for a, k in enumerate(v.link) if k >= 0):
        # the same at every position: broadcasts over the cone slots as it is
        return z._replace(t=z.t * c.reshape((1,) * p.n_pre + c.shape))
    # varies with the position: cut into the cones like a ReLU mask
    shape = tuple(n if k < 0 else m for n, k, m in zip(c.shape, v.link, v.shape, strict=True))
    return z._replace(t=p.apply(z.t, p.windows(jnp.broadcast_to(c, shape), v)))

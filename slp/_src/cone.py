"""The cone route of `slp.insens`: exact Jacobian columns restricted to each input
element's cone (the window of each layer that it reaches), for conv/pool nets.

It runs in two steps:

1. `cone_geometry` (static: from the program and shapes alone) first chooses the
   spatial input axes: every axis longer than 1 that no convolution or channel-dense
   layer contracts as channels (`_channel_axes`). It then computes, operation by
   operation up to the end of the structured part, the geometry of every value (`_Geom`:
   where its elements sit relative to the input) and the block layout. It returns a
   `ConeGeometry`, or a `ConeRefusal` that names the operation the route does not take.
2. `norms` (traced) runs one scan step per block of input elements. `_tangents` walks the
   same operations with the block's cone tangents and reads the geometry as it goes.

Each primitive's part is a `ConeRule`: how it changes the geometry and the tangents.
`slp._src.primitives` registers it (the ``cone`` field of the primitive's declaration); a
primitive the route does not take holds a `slp._src.primitives.Refusal` there.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# `slp._src.primitives` imports this module to fill its ``cone`` fields: its names are read
# here only when the rules run, after both modules have loaded.
from slp._src import cut as _cut
from slp._src import matmul as _matmul
from slp._src import primitives as _primitives
from slp._src import provenance as _provenance

# ----------------------------------------------------------------------------------
# Geometry.


@dataclasses.dataclass(frozen=True)
class _Geom:
    """Where a value's elements sit relative to the input, in the cone route.

    Along every spatial input axis ``k``, element ``p`` of the value's axis linked to
    ``k`` depends on input coordinates ``sigma_k p + beta_k ... + recep_k - 1``, so
    input coordinate ``j`` reaches at most ``width_k`` consecutive elements, starting
    at ``floor((j - beta_k) / sigma_k) - width_k + 1`` (the element's *cone*).

    Attributes:
      shape: the value's shape.
      link: per value axis, the spatial input axis ``k`` it follows, or -1 (free axis:
        batch, channels).
      sigma, beta, recep, width: per spatial input axis.
    """

    shape: tuple[int, ...]
    link: tuple[int, ...]
    sigma: tuple[int, ...]
    beta: tuple[int, ...]
    recep: tuple[int, ...]
    width: tuple[int, ...]

    def window_shape(self) -> tuple[int, ...]:
        return tuple(
            self.width[k] if k >= 0 else n for n, k in zip(self.shape, self.link, strict=True)
        )

    def axis_of(self, k: int) -> int:
        return self.link.index(k)


@dataclasses.dataclass(frozen=True)
class _Flat:
    """A cone value reshaped so that spatial and free axes merge (only the cut takes it).

    ``geom``: the geometry before the reshape (the block's tangents keep its layout).
    """

    geom: _Geom


@dataclasses.dataclass(frozen=True)
class _Global:
    """A cone value pooled over all its spatial axes (global sum, average or max pooling).

    Its tangents are ``(r_0, ..., r_{K-1}, f) + shape``, exact: every position an input
    element reaches was pooled. ``geom``: the geometry before the pooling.
    """

    geom: _Geom
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ConeRefusal:
    """Why the cone route does not take a network.

    Attributes:
      reason: what rules it out.
      primitive: name of the operation that rules it out (None: the network as a whole).
      index: that operation's index into ``program.eqns`` (None: none).
      where: the nested calls the operation sits in (`slp._src.network.Eqn.where`).
      context: where the operation sits in the user's terms, e.g. ``"inside resize,
        model.py:12"`` (`slp._src.provenance`), or "".
    """

    reason: str
    primitive: str | None = None
    index: int | None = None
    where: tuple[str, ...] = ()
    context: str = ""

    def __str__(self) -> str:
        if self.primitive is None:
            return f"cone route: {self.reason}"
        ctx = self.context or (f"inside {' > '.join(self.where)}" if self.where else "")
        ctx = f" ({ctx})" if ctx else ""
        return f"cone route: '{self.primitive}' at equation {self.index}{ctx}: {self.reason}"


def _refused_at(i: int, eqn, reason: str) -> ConeRefusal:
    """The `ConeRefusal` of operation ``i`` of the program, named in the user's terms."""
    name = eqn.primitive.name
    found = _provenance.describe(eqn.source, eqn.where, name)
    inside = found.label if found.label not in (None, name) else " > ".join(eqn.where)
    context = [f"inside {inside}"] if inside else []
    context += [found.location] if found.location else []
    return ConeRefusal(reason, name, i, eqn.where, ", ".join(context))


@dataclasses.dataclass(frozen=True)
class ConeRule:
    """The cone route's rule for one primitive (its ``cone`` entry in `slp._src.primitives`).

    Attributes:
      geometry: ``(ctx, eqn, ins) -> (outs, data)`` or a `_primitives.Refusal`: the geometry of the
        outputs from the operands' (``ins``: per operand a `_Geom`, `_Flat`, `_Global`,
        or None for a constant; ``ctx``: a `_GeoCtx`) and static data for the tangents.
      tangent: ``(p, eqn, step, args) -> outs``: the block's tangents of the outputs
        (``p``: a `_Pass`; ``step``: the equation's `_Step`; ``args``: constants or
        `_ConeVal`).
      carry: ``(eqn, ins, shapes) -> (outs, channels)``: per output axis the input axis
        it carries unchanged (-1: none), from the operands' (None for constants), and the
        input axes contracted as channels. None: an output of its operand's rank carries
        the operand's axes (elementwise and windowed operations).
      prepare: ``(p, eqn, step, args) -> data``: loop-invariant data computed once,
        outside the loop over blocks (a convolution's cone matrices), or None.
      elementwise: the operation maps each element to itself alone (a cast, a negation),
        so it also takes a flattened feature map (e.g. the cast to a dense layer's dtype
        between a flatten and that layer).
    """

    name: str
    geometry: Callable
    tangent: Callable
    carry: Callable | None = None
    prepare: Callable | None = None
    elementwise: bool = False


class _Step(NamedTuple):
    """One operation of the geometry: its index into ``program.eqns``, its rule, operand
    and output geometries, and the rule's static data."""

    index: int
    rule: ConeRule
    ins: tuple
    outs: tuple
    data: Any


@dataclasses.dataclass(frozen=True)
class ConeGeometry:
    """Static layout of the cone route for one program (`cone_geometry`).

    Input elements are processed in *blocks* of ``sigma_tot`` consecutive elements per
    spatial axis (``sigma_tot``: the total stride at the end), elements
    ``j = sigma_tot B + r``. In a value of geometry ``g`` the cone of offset ``r`` of
    block ``B`` starts at ``rho B + d(r)`` with ``rho = sigma_tot / g.sigma`` and a
    static ``d(r)``.

    Attributes:
      spatial: input axes that are spatial (``k`` = position in this tuple).
      sigma_tot: per spatial axis, the block size.
      in_shape: the input's shape.
      blocks: int ``(n_blocks, K)``, the block indices ``B``.
      end: index into ``program.eqns`` where the route stops (the cut or the last ReLU).
      order: indices of the operations walked (those the end and the ReLUs before it
        need), in program order, ``end`` last.
      steps: per walked input-dependent operation, its `_Step`.
      values: per value id, its `_Geom`, `_Flat` or `_Global` (input-dependent values).
      shapes: per value id, its shape.
      dtypes: per value id, its dtype: the block's tangents of a value are in the value's
        own dtype (a network that casts, e.g. to bfloat16 or float64, casts its tangents).
    """

    spatial: tuple[int, ...]
    sigma_tot: tuple[int, ...]
    in_shape: tuple[int, ...]
    blocks: np.ndarray
    end: int
    order: tuple[int, ...]
    steps: Mapping[int, _Step]
    values: Mapping[int, Any]
    shapes: Mapping[int, tuple[int, ...]]
    dtypes: Mapping[int, Any] = dataclasses.field(default_factory=dict)

    def starts(self, g: _Geom, k: int) -> tuple[int, np.ndarray]:
        """``(rho, d)``: cone start ``rho B + d[r]`` of element offset ``r`` along ``k``."""
        rho = self.sigma_tot[k] // g.sigma[k]
        r = np.arange(self.sigma_tot[k])
        return rho, np.floor_divide(r - g.beta[k], g.sigma[k]) - g.width[k] + 1

    def shift(self, g: _Geom, ng: _Geom, k: int, stride: int = 1, pad: int = 0) -> np.ndarray:
        """Per element offset ``r``: ``kappa`` such that slot ``e`` of the cone in ``ng``
        (a window of ``g`` with ``stride`` and leading ``pad``, e.g. a pooling or a
        convolution) starts at slot ``stride e + kappa`` of the cone in ``g``:
        ``stride (rho' B + d'[r]) - pad - (rho B + d[r])`` with ``stride rho' = rho``."""
        return stride * self.starts(ng, k)[1] - pad - self.starts(g, k)[1]


class _GeoCtx(NamedTuple):
    """What a geometry rule reads besides its operands: ``nk`` spatial axes, value shapes."""

    nk: int
    shapes: Mapping[int, tuple[int, ...]]

    def shape(self, a) -> tuple[int, ...]:
        """Shape of operand ``a`` (a value id or a literal)."""
        return self.shapes[a] if isinstance(a, int) else tuple(np.shape(a.val))


def _single(eqn, ins, what: str):
    """The one input-dependent operand, or a `_primitives.Refusal`."""
    deps = [v for v, d in zip(ins, eqn.dep, strict=True) if d]
    if len(deps) != 1 or eqn.primitive.multiple_results:
        return _primitives.Refusal(f"{what} with several input-dependent operands")
    return deps[0]


def _needed(program, end: int) -> tuple[int, ...]:
    """Indices of the operations that the end and the ReLUs before it read, in order."""
    eqns = program.eqns
    producer = {o: i for i, e in enumerate(eqns[: end + 1]) for o in e.outputs}
    todo = [end] + [i for i, e in enumerate(eqns[:end]) if e.kind == "relu"]
    seen: set[int] = set()
    while todo:
        i = todo.pop()
        if i in seen:
            continue
        seen.add(i)
        todo += [producer[a] for a in eqns[i].inputs if isinstance(a, int) and a in producer]
    return tuple(sorted(seen))


def _avals(program, order) -> dict[int, jax.ShapeDtypeStruct]:
    """The shape and dtype of every value the operations ``order`` read or make
    (abstractly)."""

    def run(x):
        env = dict(program.consts)
        env[program.input_id] = x
        for i in order:
            eqn = program.eqns[i]
            env.update(zip(eqn.outputs, eqn.apply(*eqn.args(env)), strict=True))
        return env

    x = jax.ShapeDtypeStruct(program.input_shape, program.input_dtype)
    return jax.eval_shape(run, x)


def _rule_of(eqn) -> ConeRule | _primitives.Refusal:
    decl = _primitives.lookup(eqn.primitive)
    return _primitives.Refusal("not in the primitive registry") if decl is None else decl.cone


def _same_rank_carry(eqn, ins, shapes):
    """An output of its operand's rank carries the operand's axes (elementwise, windows)."""
    src = next(c for c in ins if c is not None)
    outs = [src if len(shapes[o]) == len(src) else (-1,) * len(shapes[o]) for o in eqn.outputs]
    return outs, set()


def _channel_axes(program, shapes, order, end: int) -> dict[int, int]:
    """Input axes that an operation before ``end`` contracts as channels (a convolution's
    input features, a dense layer over channels), followed through relabelling operations
    (transposes, reshapes that add or drop unit axes), each with the index of the first
    operation that contracts it."""
    carry = {program.input_id: tuple(range(len(program.input_shape)))}
    channels: dict[int, int] = {}
    for i in order:
        eqn = program.eqns[i]
        if i >= end or eqn.kind == "const":
            continue
        ins = [carry.get(a) if d else None for a, d in zip(eqn.inputs, eqn.dep, strict=True)]
        if all(c is None for c in ins):
            continue
        rule = _rule_of(eqn)
        fn = rule.carry if isinstance(rule, ConeRule) and rule.carry else _same_rank_carry
        outs, found = fn(eqn, ins, shapes)
        for a in found:
            if a >= 0:
                channels.setdefault(a, i)
        carry.update(zip(eqn.outputs, outs, strict=True))
    return channels


def cone_geometry(program, x_shape, end: int) -> ConeGeometry | ConeRefusal:
    """The cone route's geometry for ``program`` at inputs of shape ``x_shape``.

    Args:
      program: the traced network (`slp._src.network.Program`).
      x_shape: the input shape.
      end: index into ``program.eqns`` of the cut (a dense layer over the whole input) or
        of the last ReLU; the route stops there.

    Returns:
      The `ConeGeometry`, or a `ConeRefusal` naming what rules the route out.
    """
    x_shape = tuple(x_shape)
    order = _needed(program, end)
    avals = _avals(program, order)
    shapes = {i: tuple(v.shape) for i, v in avals.items()}
    channels = _channel_axes(program, shapes, order, end)
    spatial = tuple(a for a, n in enumerate(x_shape) if n > 1 and a not in channels)
    if not spatial:
        mixed = sorted((i, a) for a, i in channels.items() if x_shape[a] > 1)
        if mixed:  # e.g. an image resize: dense matrices over the height and the width
            i = mixed[0][0]
            axes = [str(a) for j, a in mixed if j == i]
            return _refused_at(
                i,
                program.eqns[i],
                f"it contracts input axis {', '.join(axes)} (longer than 1) as a dense layer "
                "over channels does, so no spatial axis is left for the route",
            )
        return ConeRefusal(
            "the input has no spatial axis (no axis longer than 1 that is not "
            "contracted as channels)"
        )
    nk = len(spatial)
    ctx = _GeoCtx(nk, shapes)
    link = tuple(spatial.index(a) if a in spatial else -1 for a in range(len(x_shape)))
    ones, zeros = (1,) * nk, (0,) * nk
    values: dict[int, Any] = {program.input_id: _Geom(x_shape, link, ones, zeros, ones, ones)}
    steps: dict[int, _Step] = {}
    convs, last = 0, None

    for i in order:
        eqn = program.eqns[i]
        if eqn.kind == "const":
            continue
        rule = _rule_of(eqn)
        if isinstance(rule, _primitives.Refusal):
            return _refused_at(i, eqn, rule.reason)
        ins = tuple(values[a] if d else None for a, d in zip(eqn.inputs, eqn.dep, strict=True))
        if i == end and eqn.kind != "relu":  # the cut takes a flattened or pooled value too
            z = _single(eqn, ins, "the first dense layer")
            if isinstance(z, _primitives.Refusal):
                return _refused_at(i, eqn, z.reason)
            steps[i] = _Step(i, rule, ins, (), None)
            last = z if isinstance(z, _Geom) else z.geom
            break
        if any(isinstance(v, _Flat) for v in ins) and not rule.elementwise:
            return _refused_at(
                i,
                eqn,
                "applied to a flattened feature map (only the first dense layer over "
                "the whole input may take one)",
            )
        res = rule.geometry(ctx, eqn, ins)
        if isinstance(res, _primitives.Refusal):
            return _refused_at(i, eqn, res.reason)
        outs, data = res
        for o in outs:
            if isinstance(o, _Geom) and sorted(k for k in o.link if k >= 0) != list(range(nk)):
                return _refused_at(i, eqn, "a value that does not keep every spatial axis")
        values.update(zip(eqn.outputs, outs, strict=True))
        steps[i] = _Step(i, rule, ins, tuple(outs), data)
        convs += rule is CONV
        if i == end:
            last = next(v for v in ins if v is not None)
    if convs == 0:
        return ConeRefusal("no convolution before the first dense layer over the whole input")
    sigma_tot = last.sigma
    ranges = [np.arange(-(-x_shape[a] // s)) for a, s in zip(spatial, sigma_tot, strict=True)]
    blocks = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, nk)
    dtypes = {i: v.dtype for i, v in avals.items()}
    return ConeGeometry(
        spatial, sigma_tot, x_shape, blocks, end, order, steps, values, shapes, dtypes
    )


# ----------------------------------------------------------------------------------
# Tangents.


class _ConeVal(NamedTuple):
    """The block's tangents of one value (its geometry is in the `ConeGeometry`).

    For a `_Geom` value, ``t`` has shape ``(r_0, ..., r_{K-1}, f) + geom.window_shape()``:
    one Jacobian column per input element of the current block (spatial offsets ``r_k``
    inside the block, ``f`` the flat index over the free input axes), restricted to the
    element's cone. Two factors may still be pending (applied when a consumer needs
    them): ``mask``, a value-shaped array that multiplies the value (a ReLU's 0/1 state),
    and, if ``valid`` is False, the zeroing of cone slots outside the value. For a `_Flat`
    value ``t`` is laid out as its geometry's (both applied); for a `_Global` one it is
    ``(r..., f) + shape``.
    """

    t: Any
    mask: Any = None
    valid: bool = True


class _Pass(NamedTuple):
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

    def union(self, g: _Geom, k: int):
        """Start (traced), static ``d - min(d)``, length and start range of the block's cones."""
        rho, d = self.geo.starts(g, k)
        dmin = int(d.min())
        span = g.width[k] + int(d.max()) - dmin
        b = self.geo.blocks[:, k]
        rng = (rho * int(b.min()) + dmin, rho * int(b.max()) + dmin)
        return rho * self.block[k] + dmin, d - dmin, span, rng

    def windows(self, arr, g: _Geom, fill=0):
        """``arr`` (value-shaped; free axes may have size 1) cut into the block's cones.

        Returns ``(r_0, ..., r_{K-1}) + window shape`` (free axes as in ``arr``).
        """
        out = arr
        for k in range(self.nk):
            pos = k + g.axis_of(k)  # earlier r axes were put in front
            start, rel, span, rng = self.union(g, k)
            shifted = _shift(out, pos, start, span, rng, fill)
            w = g.width[k]
            pieces = [lax.slice_in_dim(shifted, int(o), int(o) + w, axis=pos) for o in rel]
            out = jnp.moveaxis(jnp.stack(pieces, axis=pos), pos, k)
        return out

    def overlap_add(self, t, g: _Geom):
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

    def materialize(self, z: _ConeVal, g: _Geom):
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
        along spatial axis ``k``, periodic (`_kappa_runs`); each ``r_k`` is split into
        ``(q, rho)`` and ``fn(sub, kappa, n_lead, extra_sub)`` gets the slice of ``t``
        (and of ``extra``, laid out like ``t``'s leading axes) for one run per axis,
        ``kappa`` the tuple of its shifts and ``n_lead = 2 K`` leading axes. Its results
        are reassembled and returned with the ``r`` axes merged back.
        """
        nk = self.nk
        runs, lead = [None] * nk, []
        for k in range(nk):
            period, runs[k] = _kappa_runs(kappas[k])
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


def _shift(arr, axis: int, c, length: int, c_range: tuple[int, int], fill=0):
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


def _kappa_runs(kappa: np.ndarray):
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


def _input_tangents(p: _Pass, g: _Geom) -> _ConeVal:
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
    return _ConeVal(t.reshape(t.shape[: nk + 1] + tuple(win)))


def _constants(program, geo: ConeGeometry) -> dict[int, Any]:
    """Values of the constants the walked operations read (computed once per call)."""
    env = dict(program.consts)
    for i in geo.order:
        eqn = program.eqns[i]
        if eqn.kind == "const":
            env.update(zip(eqn.outputs, eqn.apply(*eqn.args(env)), strict=True))
    return env


def _args(p: _Pass, eqn, env) -> list:
    return [a.val if not isinstance(a, int) else env.get(a, p.consts.get(a)) for a in eqn.inputs]


def _in_dtype(v: _ConeVal, dtype) -> _ConeVal:
    """``v`` with its tangents in ``dtype``, its value's own (None: as they are): where the
    network casts (``convert_element_type``, a product with a wider result type) the
    tangents are cast alike, so that a sum adds tangents of one dtype as the network adds
    values of one."""
    return v if dtype is None or v.t.dtype == dtype else v._replace(t=v.t.astype(dtype))


def _tangents(program, p: _Pass):
    """Walks the geometry's operations with the block's tangents.

    Returns ``(relu_in, cut)``: per ReLU layer up to the end, ``(t, geom)`` of its input
    (its pending mask applied), and the tangents of the cut's operand (None without a cut).
    """
    geo = p.geo
    env: dict[int, Any] = {program.input_id: _input_tangents(p, geo.values[program.input_id])}
    relu_in = {}
    for i in geo.order:
        eqn = program.eqns[i]
        if eqn.kind == "const":
            continue
        step = geo.steps[i]
        args = _args(p, eqn, env)
        j = eqn.dep.index(True)
        if i == geo.end and eqn.kind != "relu":  # the cut
            g = step.ins[j]
            return relu_in, p.materialize(args[j], g) if isinstance(g, _Geom) else args[j].t
        if eqn.kind == "relu":
            # The norms need the ReLU's input itself: apply a mask still pending from an
            # earlier ReLU. (Cone slots outside the value need no zeroing: the norms only
            # sum onto real positions, and the ReLU mask's cones are zero outside.)
            z, g = args[j], step.ins[j]
            if z.mask is not None:
                z = _ConeVal(p.materialize(z, g), valid=z.valid)
            relu_in[eqn.site] = (z.t, g)
            if i == geo.end:
                return relu_in, None
            args[j] = z
        outs = step.rule.tangent(p, eqn, step, args)
        for o, v in zip(eqn.outputs, outs, strict=True):
            env[o] = _in_dtype(v, geo.dtypes.get(o))
    raise AssertionError("the geometry ends at its last operation")


def _cut_columns(program, geo: ConeGeometry, p0: _Pass, plan):
    """``cols(t, b)``: the cut's exact Jacobian columns from the block's tangents ``t`` of its
    operand (one product with the slice of the dense weights that the block's cones cover)."""

    cut_eqn = program.eqns[plan.cut]
    hp = p0.precision
    nk = p0.nk
    op_id = cut_eqn.inputs[cut_eqn.dep.index(True)]
    weight = _args(p0, cut_eqn, {})[cut_eqn.dep.index(False)]
    w_mat = _cut.cut_matrix(cut_eqn, weight, geo.shapes[op_id])
    pet = cut_eqn.params.get("preferred_element_type")
    n_out = w_mat.shape[1]
    kind = geo.values[op_id]
    if isinstance(kind, _Global):  # after global pooling: the same weights for every element
        w_cut = _matmul.split(w_mat, hp)  # once, outside the loop
        return lambda t, b: _matmul.dot(t.reshape(-1, w_mat.shape[0]), w_cut, hp, pet)
    g = kind if isinstance(kind, _Geom) else kind.geom
    # The dense weights with their rows laid out as the cut's operand before flattening.
    # Elements of a block whose cones at the cut start at the same place share one slice
    # of the weights: split the block's offsets r by that start.
    w_full = w_mat.reshape(g.shape + (n_out,))
    groups = []
    for k in range(nk):
        _, d = geo.starts(g, k)
        groups.append([(int(u), np.nonzero(d == u)[0]) for u in np.unique(d)])
    pad = [(0, 0)] * w_full.ndim
    sizes = list(w_full.shape)
    for k in range(nk):
        ax = g.axis_of(k)
        us = [u for u, _ in groups[k]]
        b_max = int(geo.blocks[:, k].max())
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
                starts[ax] = (b[k] + u + pad[ax][0]).astype(jnp.int32)
                part = lax.slice_in_dim(part, int(members[0]), int(members[-1]) + 1, axis=k)
            w_win = _matmul.each(
                lambda w, s=starts: lax.dynamic_slice(w, s, sizes).reshape(-1, n_out), w_cut
            )
            out.append(_matmul.dot(part.reshape(-1, w_win.shape[0]), w_win, hp, pet))
        return jnp.concatenate(out, 0)

    return cols


def norms(program, state, x, plan, precision) -> list:
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

    Returns:
      Per ReLU layer, the squared norms ``|w_hat_i|^2`` in the layer's shape (None for
      layers in neither ``plan.pre_sites`` nor ``plan.post_sites``).
    """

    geo = plan.cone
    nk = len(geo.spatial)
    p0 = _Pass(geo, None, state, precision, _constants(program, geo), {}, x.dtype)
    prepared = {}
    for i, step in geo.steps.items():
        if step.rule.prepare is not None:
            eqn = program.eqns[i]
            prepared[i] = step.rule.prepare(p0, eqn, step, _args(p0, eqn, {}))
    p0 = p0._replace(prepared=prepared)
    cols_of = _cut_columns(program, geo, p0, plan) if plan.cut is not None else None

    def step(b):
        p = p0._replace(block=b)
        relu_in, cut_t = _tangents(program, p)
        sums = []
        for s in plan.pre_sites:
            t, g = relu_in[s]
            # over the free axis f, in at least float32 (`_matmul.accumulator`)
            sums.append(p.overlap_add(_matmul.square_sum(t, nk), g))
        if cols_of is None:
            return sums
        cols = cols_of(cut_t, b)
        cols = cols.reshape((cols.shape[0],) + plan.cut_out_shape)
        return sums + _cut.post_norms(program, state, x, plan, cols)

    blocks = jnp.asarray(geo.blocks, jnp.int32)
    sums = _cut.scan_sum(step, blocks, len(geo.blocks))
    by_site = dict(zip(plan.pre_sites + plan.post_sites, sums, strict=True))
    # None for a layer the plan does not ask for (an estimate's exact first layers).
    return [by_site.get(s) for s in range(len(program.relu_shapes))]


# ----------------------------------------------------------------------------------
# The rules, one per kind of primitive (registered in `slp._src.primitives`).


def _dep_arg(eqn, args):
    return args[eqn.dep.index(True)]


def _scaled(p: _Pass, z: _ConeVal, v, c) -> _ConeVal:
    """``z`` (geometry ``v``) times a constant ``c``: a scalar or broadcastable to the value,
    e.g. a per-channel scale such as an inference-mode batch norm's."""
    if np.ndim(c) == 0:
        return z._replace(t=z.t * c)
    c = jnp.asarray(c, z.t.dtype)
    c = c.reshape((1,) * (len(v.shape) - c.ndim) + c.shape)
    if isinstance(v, _Global) or all(c.shape[a] == 1 for a, k in enumerate(v.link) if k >= 0):
        # the same at every position: broadcasts over the cone slots as it is
        return z._replace(t=z.t * c.reshape((1,) * p.n_pre + c.shape))
    # varies with the position: cut into the cones like a ReLU mask
    shape = tuple(n if k < 0 else m for n, k, m in zip(c.shape, v.link, v.shape, strict=True))
    return z._replace(t=p.apply(z.t, p.windows(jnp.broadcast_to(c, shape), v)))


# -- identity: the value as it is ------------------------------------------------------


def _identity_geometry(ctx, eqn, ins):
    z = _single(eqn, ins, eqn.primitive.name)
    return z if isinstance(z, _primitives.Refusal) else ([z], None)


def _identity_tangent(p, eqn, step, args):
    return [_dep_arg(eqn, args)]


IDENTITY = ConeRule("identity", _identity_geometry, _identity_tangent, elementwise=True)


def _neg_tangent(p, eqn, step, args):
    return [_dep_arg(eqn, args)._replace(t=-_dep_arg(eqn, args).t)]


NEG = ConeRule("neg", _identity_geometry, _neg_tangent, elementwise=True)


# -- sums: bias adds, residual connections --------------------------------------------


def _union_geom(nk: int, vals, shape, what: str) -> _Geom | _primitives.Refusal:
    """The geometry of a value built elementwise from several cone values (a sum, a
    concatenation along a channel axis): its cone covers every operand's."""
    g0 = vals[0]
    for v in vals:
        if (
            v.link != g0.link
            or v.sigma != g0.sigma
            or any(v.shape[a] != g0.shape[a] for a, k in enumerate(g0.link) if k >= 0)
        ):
            return _primitives.Refusal(f"{what} of values with different positions or strides")
    beta = [min(v.beta[k] for v in vals) for k in range(nk)]
    recep = [max(v.beta[k] + v.recep[k] for v in vals) - beta[k] for k in range(nk)]
    width = [-(-recep[k] // g0.sigma[k]) for k in range(nk)]
    return _Geom(tuple(shape), g0.link, g0.sigma, tuple(beta), tuple(recep), tuple(width))


def _embed(p: _Pass, v: _ConeVal, g: _Geom, ng: _Geom):
    """``v``'s cone tangents (geometry ``g``) placed into the wider cone of ``ng``, at a
    static offset per element offset ``r``; slots of ``v``'s cone beyond ``ng``'s are ones
    that ``v`` does not reach (zero). Materialised: zero at slots outside the value."""
    nk = p.nk
    # slot s of v's cone is slot s + offset of ng's
    offsets = {k: -p.geo.shift(g, ng, k) for k in range(nk)}

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


def _add_geometry(ctx, eqn, ins):
    deps = [v for v, d in zip(ins, eqn.dep, strict=True) if d]
    if len(deps) == 2:  # e.g. a residual connection
        a, b = deps
        if not (isinstance(a, _Geom) and isinstance(b, _Geom)):
            return _primitives.Refusal(
                "a sum of a globally pooled value and another input-dependent value"
            )
        if a.shape != b.shape:
            return _primitives.Refusal("a sum that broadcasts an input-dependent value")
        ng = _union_geom(ctx.nk, deps, a.shape, "a sum")
        return ng if isinstance(ng, _primitives.Refusal) else ([ng], None)
    z = _single(eqn, ins, "a sum")
    if isinstance(z, _primitives.Refusal):
        return z
    if ctx.shapes[eqn.outputs[0]] != z.shape:
        return _primitives.Refusal("a sum that broadcasts an input-dependent value")
    return [z], None


def _add_tangent(p, eqn, step, args):
    negate = eqn.primitive is lax.sub_p
    if all(eqn.dep):
        (ng,) = step.outs
        ta, tb = (_embed(p, a, g, ng) for a, g in zip(args, step.ins, strict=True))
        return [_ConeVal(ta - tb if negate else ta + tb)]
    z = _dep_arg(eqn, args)
    return [z._replace(t=-z.t) if (negate and eqn.dep[1]) else z]


ADD = ConeRule("add", _add_geometry, _add_tangent)


# -- products with constants: scales, divisions ---------------------------------------


def _scale_geometry(ctx, eqn, ins):
    z = _single(eqn, ins, "a product")
    if isinstance(z, _primitives.Refusal):
        return z
    if eqn.primitive is lax.div_p and not eqn.dep[0]:
        return _primitives.Refusal("a division by an input-dependent value")
    const = eqn.inputs[1 - eqn.dep.index(True)]
    if tuple(np.broadcast_shapes(ctx.shape(const), z.shape)) != z.shape:
        return _primitives.Refusal(
            f"a {eqn.primitive.name} that broadcasts an input-dependent value"
        )
    return [z], None


def _scale_tangent(p, eqn, step, args):
    j = eqn.dep.index(True)
    c = args[1 - j]
    return [_scaled(p, args[j], step.ins[j], c if eqn.primitive is lax.mul_p else 1 / c)]


SCALE = ConeRule("scale", _scale_geometry, _scale_tangent)


# -- shape changes: reshape, squeeze, broadcast_in_dim ----------------------------------


def _core(shape, link=None):
    """Axes that a reshape cannot add or drop: all but free axes of size 1."""
    link = link or (-1,) * len(shape)
    return [a for a, n in enumerate(shape) if not (n == 1 and link[a] < 0)]


def _reshape_geometry(ctx, eqn, ins):
    z = _single(eqn, ins, eqn.primitive.name)
    if isinstance(z, _primitives.Refusal):
        return z
    new_shape = ctx.shapes[eqn.outputs[0]]
    if int(np.prod(new_shape)) != int(np.prod(z.shape)):
        return _primitives.Refusal(
            f"a {eqn.primitive.name} that broadcasts an input-dependent value"
        )
    if isinstance(z, _Global):
        return [_Global(z.geom, new_shape)], "global"
    if any(z.shape[a] == 1 for a, k in enumerate(z.link) if k >= 0):
        if all(z.shape[a] == 1 for a, k in enumerate(z.link) if k >= 0):  # e.g. 1x1 flattened
            return [_Global(z, new_shape)], "pool"
        return _primitives.Refusal("a reshape of a value with a spatial axis of size 1")
    old = _core(z.shape, z.link)
    new = [a for a, n in enumerate(new_shape) if n != 1]
    if [z.shape[a] for a in old] != [new_shape[a] for a in new]:
        return [_Flat(z)], "flat"
    link = [-1] * len(new_shape)
    for a_old, a_new in zip(old, new, strict=True):
        link[a_new] = z.link[a_old]
    return [dataclasses.replace(z, shape=new_shape, link=tuple(link))], "relabel"


def _reshape_tangent(p, eqn, step, args):
    z, g, (ng,) = _dep_arg(eqn, args), next(v for v in step.ins if v is not None), step.outs
    n_pre = p.n_pre
    if step.data == "relabel":
        mask = None if z.mask is None else z.mask.reshape(ng.shape)
        return [_ConeVal(z.t.reshape(z.t.shape[:n_pre] + ng.window_shape()), mask, z.valid)]
    if step.data == "flat":
        return [_ConeVal(p.materialize(z, g))]
    if step.data == "pool":  # a value with one position: pooled (zero outside the value)
        t = p.materialize(z, g)
        t = jnp.sum(t, axis=tuple(n_pre + a for a, k in enumerate(g.link) if k >= 0))
        return [_ConeVal(t.reshape(t.shape[:n_pre] + ng.shape))]
    return [_ConeVal(z.t.reshape(z.t.shape[:n_pre] + ng.shape))]


def _reshape_carry(eqn, ins, shapes):
    src = next(c for c in ins if c is not None)
    old_shape, new_shape = shapes[eqn.inputs[0]], shapes[eqn.outputs[0]]
    old, new = _core(old_shape), _core(new_shape)
    out = [-1] * len(new_shape)
    if [old_shape[a] for a in old] == [new_shape[a] for a in new]:
        for a_old, a_new in zip(old, new, strict=True):
            out[a_new] = src[a_old]
    return [tuple(out)], set()


SHAPE = ConeRule("shape", _reshape_geometry, _reshape_tangent, carry=_reshape_carry)


# -- transposes: a relabelling of the axes ---------------------------------------------


def _transpose_geometry(ctx, eqn, ins):
    (z,) = ins
    perm = tuple(eqn.params["permutation"])
    shape = tuple(z.shape[a] for a in perm)
    if isinstance(z, _Global):
        return [_Global(z.geom, shape)], perm
    link = tuple(z.link[a] for a in perm)
    return [dataclasses.replace(z, shape=shape, link=link)], perm


def _transpose_tangent(p, eqn, step, args):
    (z,), perm = args, step.data
    n_pre = p.n_pre
    t = jnp.transpose(z.t, tuple(range(n_pre)) + tuple(n_pre + a for a in perm))
    mask = None if z.mask is None else jnp.transpose(z.mask, perm)
    return [_ConeVal(t, mask, z.valid)]


def _transpose_carry(eqn, ins, shapes):
    (src,) = ins
    return [tuple(src[a] for a in eqn.params["permutation"])], set()


TRANSPOSE = ConeRule("transpose", _transpose_geometry, _transpose_tangent, carry=_transpose_carry)


# -- convolutions ------------------------------------------------------------------------


class _ConvData(NamedTuple):
    """Static data of a convolution in the cone route (per spatial input axis ``k``)."""

    ks: tuple[int, ...]  # per spatial dimension i of the convolution: its axis k
    strides: tuple[int, ...]  # per k
    pads: tuple[int, ...]  # per k: leading padding
    dilation: tuple[int, ...]  # per k: kernel (rhs) dilation
    kernel_shape: tuple[int, ...]


def _conv_geometry(ctx, eqn, ins):
    z = ins[0]
    if not isinstance(z, _Geom):
        return _primitives.Refusal("a convolution of a globally pooled value")
    prm = eqn.params
    dn = prm["dimension_numbers"]
    nsp = len(dn.lhs_spec) - 2
    if any(d != 1 for d in (prm.get("lhs_dilation") or ())):
        return _primitives.Refusal("an input-dilated (transposed) convolution")
    if prm.get("batch_group_count", 1) != 1:
        return _primitives.Refusal("a convolution with batch groups")
    b_ax, f_ax = dn.lhs_spec[0], dn.lhs_spec[1]
    if z.link[f_ax] >= 0:
        return _primitives.Refusal("a convolution over a spatial axis as features")
    if z.link[b_ax] >= 0 or z.shape[b_ax] != 1:
        return _primitives.Refusal("a convolution with a batch axis")
    ks = [z.link[dn.lhs_spec[2 + i]] for i in range(nsp)]
    if sorted(ks) != list(range(ctx.nk)):
        return _primitives.Refusal("a convolution that does not slide along every spatial axis")
    kshape = ctx.shape(eqn.inputs[1])
    dil = prm.get("rhs_dilation") or (1,) * nsp
    sigma, beta, recep, width = map(list, (z.sigma, z.beta, z.recep, z.width))
    strides, pads, dils = [0] * ctx.nk, [0] * ctx.nk, [0] * ctx.nk
    for i, k in enumerate(ks):
        size = kshape[dn.rhs_spec[2 + i]]
        strides[k], pads[k], dils[k] = prm["window_strides"][i], prm["padding"][i][0], dil[i]
        beta[k] = beta[k] - sigma[k] * pads[k]
        recep[k] = recep[k] + sigma[k] * dils[k] * (size - 1)
        sigma[k] = sigma[k] * strides[k]
        width[k] = -(-recep[k] // sigma[k])
    out_shape = ctx.shapes[eqn.outputs[0]]
    link = [-1] * len(out_shape)
    for i in range(nsp):
        link[dn.out_spec[2 + i]] = ks[i]
    ng = _Geom(out_shape, tuple(link), tuple(sigma), tuple(beta), tuple(recep), tuple(width))
    return [ng], _ConvData(tuple(ks), tuple(strides), tuple(pads), tuple(dils), kshape)


def _conv_kappas(p: _Pass, step) -> dict[int, np.ndarray]:
    (g, _), (ng,), d = step.ins, step.outs, step.data
    return {k: p.geo.shift(g, ng, k, d.strides[k], d.pads[k]) for k in range(p.nk)}


def _conv_prepare(p: _Pass, eqn, step, args):
    """The convolution as explicit matrices from an input cone to the output cone, one
    per group of element offsets ``r`` with the same shifts (`_kappa_runs`; a single one
    at stride 1), split for the chosen precision: built once, outside the loop."""
    kernel = args[1]
    (g, _), (ng,), d = step.ins, step.outs, step.data
    runs = [_kappa_runs(kap)[1] for kap in _conv_kappas(p, step).values()]
    mats = {}
    for combo in itertools.product(*runs):
        kap = tuple(c[2] for c in combo)
        big = _cone_matrix(
            kernel,
            eqn.params["dimension_numbers"],
            d,
            g.width,
            ng.width,
            kap,
            eqn.params.get("feature_group_count", 1),
        )
        mats[kap] = _matmul.split(big, p.precision)  # in the kernel's dtype
    return mats


def _conv_tangent(p, eqn, step, args):
    # Output slot e reads input slot stride e + kappa + dilation d for kernel tap d.
    z = args[0]
    (g, _), (ng,), d = step.ins, step.outs, step.data
    mats = p.prepared[step.index]
    dn = eqn.params["dimension_numbers"]
    nk, nsp = p.nk, len(d.ks)
    t = p.materialize(z, g)
    cout = d.kernel_shape[dn.rhs_spec[0]]
    # lhs axes -> (batch, spatial in the order of k, feature)
    lhs_order = [dn.lhs_spec[0]] + [dn.lhs_spec[2 + d.ks.index(k)] for k in range(nk)]
    lhs_order += [dn.lhs_spec[1]]

    def conv_run(sub, kap, n_lead):
        m = n_lead + 1  # and the free-input axis f
        big = mats[kap]
        tt = jnp.transpose(sub, list(range(m)) + [m + a for a in lhs_order])
        lead = tt.shape[: m + 1]
        pet = eqn.params.get("preferred_element_type")
        out = _matmul.dot(tt.reshape(-1, big.shape[0]), big, p.precision, pet)
        out = out.reshape(lead + tuple(ng.width) + (cout,))
        # (lead..., batch, spatial by k..., cout) -> the output's axis order
        src = {0: m, 1: m + 1 + nk}
        for i in range(nsp):
            src[2 + i] = m + 1 + d.ks[i]
        perm = list(range(m)) + [0] * len(g.shape)
        for logical, pos in enumerate(dn.out_spec):
            perm[m + pos] = src[logical]
        return jnp.transpose(out, perm)

    out = p.by_runs(t, _conv_kappas(p, step), conv_run)
    return [_ConeVal(out.reshape(t.shape[: p.n_pre] + ng.window_shape()), valid=False)]


def _cone_matrix(kernel, dn, d: _ConvData, w_in, w_out, kappa, groups=1):
    """A convolution as a matrix from an input cone to the output cone.

    Per spatial input axis ``k`` (cone widths ``w_in[k]``, ``w_out[k]``): rows
    ``(s..., c)``, columns ``(e..., o)``, kernel tap ``(s - stride_k e - kappa_k) /
    dilation_k``, zero where that is not a tap of the kernel. A grouped convolution
    (``groups`` feature groups, e.g. depthwise) becomes its dense equivalent: zero
    between channels of different groups.
    """
    nk = len(w_in)
    ax = [dn.rhs_spec[2 + d.ks.index(k)] for k in range(nk)]  # kernel axis of k
    ksz = [d.kernel_shape[a] for a in ax]
    kern = jnp.transpose(kernel, ax + [dn.rhs_spec[1], dn.rhs_spec[0]])
    if groups > 1:  # (k..., cin / groups, cout) -> block-diagonal (k..., cin, cout)
        ci, cout = kern.shape[-2], kern.shape[-1]
        same = np.arange(ci * groups)[:, None] // ci == np.arange(cout)[None] // (cout // groups)
        kern = jnp.tile(kern, (1,) * nk + (groups, 1)) * jnp.asarray(same, kern.dtype)[(None,) * nk]
    idx, ok = [], np.ones(tuple(w_in) + tuple(w_out), bool)
    for i in range(nk):
        s_ = np.arange(w_in[i]).reshape([-1 if a == i else 1 for a in range(nk)] + [1] * nk)
        e_ = np.arange(w_out[i]).reshape([1] * nk + [-1 if a == i else 1 for a in range(nk)])
        off = s_ - d.strides[i] * e_ - kappa[i]
        tap, rem = np.divmod(off, d.dilation[i])
        ok = ok & (rem == 0) & (tap >= 0) & (tap < ksz[i])
        idx.append(np.broadcast_to(np.clip(tap, 0, ksz[i] - 1), ok.shape))
    big = kern[tuple(idx)] * jnp.asarray(ok, kern.dtype)[..., None, None]
    # (w_in..., w_out..., cin, cout) -> (w_in..., cin, w_out..., cout)
    perm = list(range(nk)) + [2 * nk] + list(range(nk, 2 * nk)) + [2 * nk + 1]
    return jnp.transpose(big, perm).reshape(int(np.prod(w_in)) * kern.shape[-2], -1)


def _conv_carry(eqn, ins, shapes):
    src = ins[0]
    dn = eqn.params["dimension_numbers"]
    out = [-1] * len(shapes[eqn.outputs[0]])
    for i in range(len(dn.lhs_spec) - 2):
        out[dn.out_spec[2 + i]] = src[dn.lhs_spec[2 + i]]
    return [tuple(out)], {src[dn.lhs_spec[1]]}


CONV = ConeRule("conv", _conv_geometry, _conv_tangent, carry=_conv_carry, prepare=_conv_prepare)


# -- pooling and strided slicing: windows along spatial axes --------------------------


class _WindowData(NamedTuple):
    """Static data of a windowed operation (pooling, slicing), per value axis."""

    window: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]  # leading padding (a slice's start: minus it)


def _window_geom(g: _Geom, w: _WindowData, out_shape) -> _Geom | None:
    """The geometry of windows of ``g`` along its spatial axes; None if a window spans
    a free axis."""
    sigma, beta, recep, width = map(list, (g.sigma, g.beta, g.recep, g.width))
    for ax, k in enumerate(g.link):
        if k < 0:
            if w.window[ax] != 1 or w.strides[ax] != 1 or out_shape[ax] != g.shape[ax]:
                return None
            continue
        beta[k] = beta[k] - sigma[k] * w.pads[ax]
        recep[k] = recep[k] + sigma[k] * (w.window[ax] - 1)
        sigma[k] = sigma[k] * w.strides[ax]
        width[k] = -(-recep[k] // sigma[k])
    return _Geom(tuple(out_shape), g.link, tuple(sigma), tuple(beta), tuple(recep), tuple(width))


def _pool_geometry(ctx, eqn, ins):
    z = ins[0]
    if not isinstance(z, _Geom):
        return _primitives.Refusal("pooling of a globally pooled value")
    prm = eqn.params
    if any(d != 1 for d in (prm.get("base_dilation") or ())) or any(
        d != 1 for d in (prm.get("window_dilation") or ())
    ):
        return _primitives.Refusal("dilated pooling")
    out_shape = ctx.shapes[eqn.outputs[0]]
    w = _WindowData(
        tuple(prm["window_dimensions"]),
        tuple(prm["window_strides"]),
        tuple(lo for lo, _ in prm["padding"]),
    )
    ng = _window_geom(z, w, out_shape)
    if ng is None:
        return _primitives.Refusal("pooling across a free (channel or batch) axis")
    if eqn.primitive is lax.reduce_window_max_p and all(
        out_shape[a] == 1 for a, k in enumerate(z.link) if k >= 0
    ):  # global max pooling: every element reaches the single position
        return [_Global(z, out_shape)], w
    return [ng], w


def _window_tangent(p: _Pass, t, g: _Geom, ng: _Geom, w: _WindowData, code=None):
    """Tangents ``t`` (geometry ``g``) through windows ``w``: per group of element offsets
    ``r`` with the same shift kappa and window offset delta, one strided slice of the input
    cone (clipped to it, zeros elsewhere). Without ``code`` the slices of every delta are
    summed (sum pooling; a slice has a single delta); with it (max pooling: per output
    cone slot the winner's delta, -1 if none), the winner's is selected. Slices, pads and
    selections are elementwise: they fuse."""
    lin = [(ax, k) for ax, k in enumerate(g.link) if k >= 0]
    # Output cone slot e' of element r reads input cone slot st e' + delta + kappa[r].
    kappas = {k: p.geo.shift(g, ng, k, w.strides[ax], w.pads[ax]) for ax, k in lin}
    deltas = list(np.ndindex(*[w.window[ax] for ax, _ in lin]))

    def run(sub, kap, n_lead, csub=None):
        out = 0
        for i, delta in enumerate(deltas):
            piece = sub
            for (ax, k), dd in zip(lin, delta, strict=True):
                st = w.strides[ax]
                first = kap[k] + dd  # input slot of output slot 0
                pos = n_lead + 1 + ax
                n_in, n_out = piece.shape[pos], ng.width[k]
                e0 = max(0, -(first // st))
                e1 = max(e0, min(n_out, (n_in - 1 - first) // st + 1))
                start = first + st * e0 if e1 > e0 else 0  # (an empty slice anywhere)
                stop = start + st * (e1 - e0 - 1) + 1 if e1 > e0 else 0
                piece = lax.slice_in_dim(piece, start, stop, st, pos)
                widths = [(0, 0)] * piece.ndim
                widths[pos] = (e0, n_out - e1)
                piece = jnp.pad(piece, widths)
            if csub is None:
                out = out + piece
            else:
                out = jnp.where(jnp.expand_dims(csub, n_lead) == i, piece, out)
        return out

    out = p.by_runs(t, kappas, run, extra=code)
    return out.reshape(t.shape[: p.n_pre] + ng.window_shape())


def _window_sum_tangent(p, eqn, step, args):
    (g,), (ng,) = step.ins, step.outs
    t = p.materialize(args[0], g)  # sum pooling reads every position
    return [_ConeVal(_window_tangent(p, t, g, ng, step.data), valid=False)]


def _max_pool_tangent(p, eqn, step, args):
    """Max pooling reads only the frozen winners; a pending ReLU mask folds into the
    selection."""
    z, (g,), (ng,), w = args[0], step.ins, step.outs, step.data
    winners = p.state.winners[eqn.site]
    if isinstance(ng, _Global):  # global: the winner's tangents, one position per channel
        won = jnp.zeros(int(np.prod(g.shape)), z.t.dtype).at[winners.reshape(-1)].set(1)
        won = won.reshape(g.shape)
        if z.mask is not None:
            won = won * z.mask.astype(won.dtype)
        t = p.apply(z.t, p.windows(won, g))  # zero outside the value
        axes = tuple(p.n_pre + a for a, k in enumerate(g.link) if k >= 0)
        return [_ConeVal(jnp.sum(t, axis=axes, keepdims=True))]
    lin = [(ax, k) for ax, k in enumerate(g.link) if k >= 0]
    coords = jnp.unravel_index(winners, g.shape)
    base = jnp.indices(ng.shape)
    code = jnp.zeros(ng.shape, jnp.int32)  # the winner's window offset delta (-1: masked)
    for ax, _ in lin:
        off = coords[ax] - (base[ax] * w.strides[ax] - w.pads[ax])
        code = code * w.window[ax] + off.astype(jnp.int32)
    if z.mask is not None:
        mask = z.mask.reshape(-1)[winners.reshape(-1)].reshape(ng.shape)
        code = jnp.where(mask, code, -1)
    code = p.windows(code, ng, fill=-1)  # (r..., window shape)
    return [_ConeVal(_window_tangent(p, z.t, g, ng, w, code))]


WINDOW_SUM = ConeRule("window_sum", _pool_geometry, _window_sum_tangent)
MAX_POOL = ConeRule("max_pool", _pool_geometry, _max_pool_tangent)


def _slice_geometry(ctx, eqn, ins):
    (z,) = ins
    if not isinstance(z, _Geom):
        return _primitives.Refusal("a slice of a globally pooled value")
    prm = eqn.params
    starts = tuple(prm["start_indices"])
    strides = tuple(prm["strides"] or (1,) * len(starts))
    out_shape = ctx.shapes[eqn.outputs[0]]
    # Free axes are sliced as they are; spatial ones are windows of size 1.
    free = tuple(n if k < 0 else m for n, m, k in zip(out_shape, z.shape, z.link, strict=True))
    gf = dataclasses.replace(z, shape=free)
    w = _WindowData(
        (1,) * len(starts),
        tuple(s if k >= 0 else 1 for s, k in zip(strides, z.link, strict=True)),
        tuple(-a if k >= 0 else 0 for a, k in zip(starts, z.link, strict=True)),
    )
    return [_window_geom(gf, w, out_shape)], (gf, w)


def _slice_tangent(p, eqn, step, args):
    (g,), (ng,), (gf, w) = step.ins, step.outs, step.data
    prm = eqn.params
    t = p.materialize(args[0], g)
    strides = prm["strides"] or (1,) * len(g.shape)
    for ax, k in enumerate(g.link):
        a, b = prm["start_indices"][ax], prm["limit_indices"][ax]
        if k < 0 and (a, b, strides[ax]) != (0, g.shape[ax], 1):
            t = lax.slice_in_dim(t, a, b, strides[ax], p.n_pre + ax)
    return [_ConeVal(_window_tangent(p, t, gf, ng, w), valid=False)]


SLICE = ConeRule("slice", _slice_geometry, _slice_tangent)


# -- dense layers over channel axes -----------------------------------------------------


def _channel_dot_geometry(ctx, eqn, ins):
    """A dense layer over free (channel) axes only, e.g. flax's ``Dense`` on a feature
    map: the same at every position, like a 1x1 convolution."""
    z = _single(eqn, ins, "a product")
    if isinstance(z, _primitives.Refusal):
        return z
    if not isinstance(z, _Geom):
        return _primitives.Refusal(
            "a dense layer over a globally pooled value before the first dense "
            "layer over the whole input"
        )
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    z_lhs = eqn.dep[0]
    c_z, c_w = (lc, rc) if z_lhs else (rc, lc)
    if lb or rb or any(z.link[a] >= 0 for a in c_z):
        return _primitives.Refusal(
            "a dense layer over spatial axes before the first dense layer over the whole input"
        )
    keep = [a for a in range(len(z.shape)) if a not in c_z]
    w_shape = ctx.shape(eqn.inputs[1] if z_lhs else eqn.inputs[0])
    n_w = len([a for a in range(len(w_shape)) if a not in c_w])
    link = [z.link[a] for a in keep]
    link = link + [-1] * n_w if z_lhs else [-1] * n_w + link
    return [dataclasses.replace(z, shape=ctx.shapes[eqn.outputs[0]], link=tuple(link))], None


def _channel_dot_tangent(p, eqn, step, args):
    (lc, rc), _ = eqn.params["dimension_numbers"]
    z_lhs = eqn.dep[0]
    c_z, c_w = (lc, rc) if z_lhs else (rc, lc)
    z, g = _dep_arg(eqn, args), next(v for v in step.ins if v is not None)
    w = args[1] if z_lhs else args[0]
    t = p.materialize(z, g)  # a pending mask does not commute with mixing channels
    n_pre = p.n_pre
    t, w = _matmul.widen(t, jnp.asarray(w, t.dtype), eqn.params.get("preferred_element_type"))
    out = lax.dot_general(
        t,
        w,
        (([n_pre + a for a in c_z], list(c_w)), ((), ())),
        precision=_matmul.plain(p.precision),
    )
    if not z_lhs:  # (pre..., kept..., w free...) -> (pre..., w free..., kept...)
        n_keep = len(g.shape) - len(c_z)
        n_free = out.ndim - n_pre - n_keep
        perm = list(range(n_pre))
        perm += [n_pre + n_keep + i for i in range(n_free)]
        perm += [n_pre + i for i in range(n_keep)]
        out = jnp.transpose(out, perm)
    return [_ConeVal(out, valid=z.valid)]


def _channel_dot_carry(eqn, ins, shapes):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    z_lhs = eqn.dep[0]
    src = ins[0] if z_lhs else ins[1]
    c_z = lc if z_lhs else rc
    n_out = len(shapes[eqn.outputs[0]])
    if lb or rb:
        return [(-1,) * n_out], set()
    kept = [src[a] for a in range(len(src)) if a not in c_z]
    n_w = n_out - len(kept)
    out = kept + [-1] * n_w if z_lhs else [-1] * n_w + kept
    return [tuple(out)], {src[a] for a in c_z}


CHANNEL_DOT = ConeRule(
    "channel_dot", _channel_dot_geometry, _channel_dot_tangent, carry=_channel_dot_carry
)


# -- global sum pooling -------------------------------------------------------------------


def _reduce_sum_geometry(ctx, eqn, ins):
    (z,) = ins
    if not isinstance(z, _Geom):
        return _primitives.Refusal("a sum of a globally pooled value")
    axes = tuple(eqn.params["axes"])
    if any(a not in axes for a, k in enumerate(z.link) if k >= 0):
        return _primitives.Refusal("a sum over some of the spatial axes")
    return [_Global(z, ctx.shapes[eqn.outputs[0]])], axes


def _reduce_sum_tangent(p, eqn, step, args):
    (g,) = step.ins
    t = p.materialize(args[0], g)  # zero at cone slots outside the value
    return [_ConeVal(jnp.sum(t, axis=tuple(p.n_pre + a for a in step.data)))]


def _reduce_sum_carry(eqn, ins, shapes):
    (src,) = ins
    axes = eqn.params["axes"]
    return [tuple(c for a, c in enumerate(src) if a not in axes)], set()


REDUCE_SUM = ConeRule(
    "reduce_sum", _reduce_sum_geometry, _reduce_sum_tangent, carry=_reduce_sum_carry
)


# -- concatenations along channel axes ------------------------------------------------


def _concat_geometry(ctx, eqn, ins):
    """Cone values concatenated along a channel axis (e.g. Inception or DenseNet)."""
    if not all(eqn.dep):
        return _primitives.Refusal("a concatenation of input-dependent values with constants")
    if not all(isinstance(v, _Geom) for v in ins):
        return _primitives.Refusal("a concatenation of globally pooled values")
    d = eqn.params["dimension"]
    if ins[0].link[d] >= 0:
        return _primitives.Refusal("a concatenation along a spatial axis")
    ng = _union_geom(ctx.nk, ins, ctx.shapes[eqn.outputs[0]], "a concatenation")
    return ng if isinstance(ng, _primitives.Refusal) else ([ng], None)


def _concat_tangent(p, eqn, step, args):
    (ng,) = step.outs
    ts = [_embed(p, v, g, ng) for v, g in zip(args, step.ins, strict=True)]
    return [_ConeVal(jnp.concatenate(ts, p.n_pre + eqn.params["dimension"]))]


CONCATENATE = ConeRule("concatenate", _concat_geometry, _concat_tangent)


def _stack_geometry(ctx, eqn, ins):
    """Cone values stacked along a new (free) axis, e.g. ``jnp.stack`` of two branches."""
    if not all(eqn.dep):
        return _primitives.Refusal("a stack of input-dependent values with constants")
    if not all(isinstance(v, _Geom) for v in ins):
        return _primitives.Refusal("a stack of globally pooled values")
    ng = _union_geom(ctx.nk, ins, ins[0].shape, "a stack")
    if isinstance(ng, _primitives.Refusal):
        return ng
    ax = eqn.params["axis"]
    link = ng.link[:ax] + (-1,) + ng.link[ax:]
    return [dataclasses.replace(ng, shape=ctx.shapes[eqn.outputs[0]], link=link)], ng


def _stack_tangent(p, eqn, step, args):
    ts = [_embed(p, v, g, step.data) for v, g in zip(args, step.ins, strict=True)]
    return [_ConeVal(jnp.stack(ts, p.n_pre + eqn.params["axis"]))]


def _stack_carry(eqn, ins, shapes):
    src = next(c for c in ins if c is not None)
    ax = eqn.params["axis"]
    return [tuple(src[:ax]) + (-1,) + tuple(src[ax:])], set()


STACK = ConeRule("stack", _stack_geometry, _stack_tangent, carry=_stack_carry)


def _split_geometry(ctx, eqn, ins):
    """A cone value split along a free (channel) axis, e.g. ``jnp.split`` of the channels."""
    (z,) = ins  # split has one operand
    if not isinstance(z, _Geom):
        return _primitives.Refusal("a split of a globally pooled value")
    if z.link[eqn.params["axis"]] >= 0:
        return _primitives.Refusal("a split along a spatial axis")
    return [dataclasses.replace(z, shape=ctx.shapes[o]) for o in eqn.outputs], None


def _split_tangent(p, eqn, step, args):
    t = p.materialize(args[0], step.ins[0])
    bounds = np.cumsum(eqn.params["sizes"])[:-1]
    return [_ConeVal(piece) for piece in jnp.split(t, bounds, p.n_pre + eqn.params["axis"])]


SPLIT = ConeRule("split", _split_geometry, _split_tangent)


def _tile_geometry(ctx, eqn, ins):
    """A cone value repeated along free (channel) axes, e.g. ``jnp.tile`` of the channels."""
    (z,) = ins
    if not isinstance(z, _Geom):
        return _primitives.Refusal("a tile of a globally pooled value")
    reps = tuple(eqn.params["reps"])
    if len(reps) != len(z.shape) or any(
        r != 1 and k >= 0 for r, k in zip(reps, z.link, strict=True)
    ):
        return _primitives.Refusal("a tile along a spatial axis")
    return [dataclasses.replace(z, shape=ctx.shapes[eqn.outputs[0]])], None


def _tile_tangent(p, eqn, step, args):
    t = p.materialize(args[0], step.ins[0])
    return [_ConeVal(jnp.tile(t, (1,) * p.n_pre + tuple(eqn.params["reps"])))]


TILE = ConeRule("tile", _tile_geometry, _tile_tangent)


# -- ReLU ---------------------------------------------------------------------------------


def _relu_geometry(ctx, eqn, ins):
    z = _single(eqn, ins, "a ReLU")
    if isinstance(z, _primitives.Refusal):
        return z
    if not isinstance(z, _Geom):
        return _primitives.Refusal("a ReLU of a globally pooled value before the first dense layer")
    return [z], None


def _relu_tangent(p, eqn, step, args):
    # The state multiplies the value: kept pending until a consumer needs it.
    z = _dep_arg(eqn, args)
    return [z._replace(mask=p.state.activities[eqn.site] > 0)]


RELU = ConeRule("relu", _relu_geometry, _relu_tangent)

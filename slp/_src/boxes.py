"""Receptive-field boxes of the probe route of `slp.insens`, propagated from shapes.

Every value of the traced program gets, per element, the bounding box of the input
elements it can depend on; operations without a box rule give the whole input (safe).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from slp._src import interpreter as interp
from slp._src.interpreter import Refusal


class Box(NamedTuple):
    """Per element of a value (shape ``V``): lowest/highest input coordinate it depends on.

    ``lo``, ``hi``: float arrays ``V + (x.ndim,)``; an element that depends on no
    input has ``lo = +inf``, ``hi = -inf``. ``dtype`` is the dtype of the value itself.
    """

    lo: Any
    hi: Any
    dtype: Any


class NotConcrete(Exception):
    """A box depends on a traced value (e.g. gather indices computed under jit)."""


_BOX_DTYPE = np.float32  # coordinates are exact up to 2**24


class _BoxRules(interp.Rules):
    """Walks a program propagating `Box` values; records the operand/output of each dot."""

    def __init__(self, program: interp.Program, visit=None):
        self.visit = visit
        self.in_shape = program.input_shape
        self.nx = len(program.input_shape)
        self.producers = program.producers
        self.dots: dict[int, tuple[Box, Box]] = {}
        # Per operation index: total box volume of its input-dependent operand and of its
        # output (the sum over elements of the number of input elements each depends on).
        self.volumes: dict[int, tuple[float, float]] = {}

    def input(self, x):
        grid = np.stack(np.indices(self.in_shape), -1).astype(_BOX_DTYPE)
        return Box(grid, grid, jnp.result_type(x))

    def _full(self, shape, dtype) -> Box:
        lo = np.zeros(tuple(shape) + (self.nx,), _BOX_DTYPE)
        hi = np.broadcast_to(np.asarray(self.in_shape, _BOX_DTYPE) - 1, lo.shape)
        return Box(lo, hi, dtype)

    def at(self, eqn) -> int:
        """The index of ``eqn`` into ``program.eqns`` (that of the operation making its
        first output)."""
        return self.producers[eqn.outputs[0]]

    def _record(self, eqn, z: Box, out: Box):
        i = self.at(eqn)
        self.volumes[i] = (_volume(z), _volume(out))
        if self.visit is not None:
            self.visit(i, eqn)

    def relu(self, eqn, z):
        self._record(eqn, z, z)
        return z

    def max_pool(self, eqn, z):
        out = self._window(eqn.params, z, z.dtype)
        self._record(eqn, z, out)
        return out

    def _window(self, p, z: Box, dtype) -> Box:
        def red(a, init, op):
            return lax.reduce_window(
                jnp.asarray(a),
                np.array(init, _BOX_DTYPE),
                op,
                tuple(p["window_dimensions"]) + (1,),
                tuple(p["window_strides"]) + (1,),
                tuple(tuple(q) for q in p["padding"]) + ((0, 0),),
                tuple(p.get("base_dilation") or (1,) * (z.lo.ndim - 1)) + (1,),
                tuple(p.get("window_dilation") or (1,) * (z.lo.ndim - 1)) + (1,),
            )

        return Box(red(z.lo, np.inf, lax.min), red(z.hi, -np.inf, lax.max), dtype)

    def linear(self, eqn, args):
        avals = self._out_avals(eqn, args)
        rule = eqn.decl.boxes
        # A primitive without a box rule (a `Refusal`) or a case its rule does not take
        # (None) depends on the whole input: always safe.
        outs = None if isinstance(rule, Refusal) else rule(self, eqn, args, avals)
        if outs is None or any(
            tuple(o.lo.shape) != tuple(a.shape) + (self.nx,)
            for o, a in zip(outs, avals, strict=True)
        ):
            outs = [self._full(a.shape, a.dtype) for a in avals]
        for o in outs:
            if isinstance(o.lo, jax.core.Tracer) or isinstance(o.hi, jax.core.Tracer):
                raise NotConcrete
        self._record(eqn, args[eqn.dep.index(True)], outs[0])
        return outs

    def _out_avals(self, eqn, args):
        specs = []
        for a, d in zip(args, eqn.dep, strict=True):
            if d:
                specs.append(jax.ShapeDtypeStruct(a.lo.shape[:-1], a.dtype))
            else:
                specs.append(jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)))
        return jax.eval_shape(eqn.apply, *specs)

    def _empty(self, shape, dtype) -> Box:
        s = tuple(shape) + (self.nx,)
        return Box(np.full(s, np.inf, _BOX_DTYPE), np.full(s, -np.inf, _BOX_DTYPE), dtype)

    def _moving(self, eqn, args, avals):
        n = len(args)
        # Indices and predicates (integer or boolean operands that may not depend on the
        # input: the declaration's ``input_operands``) are kept as they are; data operands,
        # a padding value among them, move with their boxes.
        taken = eqn.decl.input_operands
        fixed = set() if taken is None else set(range(n)) - set(taken(n))
        index_ops = {i for i in fixed if not jnp.issubdtype(jnp.result_type(args[i]), jnp.inexact)}
        in_axes = [None if (i in index_ops) else -1 for i in range(n)]

        def coords(which: str, fill: float):
            ops = []
            for i, (a, d) in enumerate(zip(args, eqn.dep, strict=True)):
                if d:
                    ops.append(jnp.asarray(getattr(a, which)))
                elif i in index_ops:
                    ops.append(a)
                else:  # data that does not depend on the input (incl. pad values)
                    ops.append(jnp.full(np.shape(a) + (self.nx,), fill, _BOX_DTYPE))
            return jax.vmap(eqn.apply, in_axes=in_axes, out_axes=-1)(*ops)

        los, his = coords("lo", np.inf), coords("hi", -np.inf)
        return [Box(lo, hi, av.dtype) for lo, hi, av in zip(los, his, avals, strict=True)]

    def _dot(self, eqn, args, aval) -> Box:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        if sum(eqn.dep) != 1:
            return None
        dep_lhs = eqn.dep[0]
        z, other = (args[0], args[1]) if dep_lhs else (args[1], args[0])
        c_ax, b_ax = (lc, lb) if dep_lhs else (rc, rb)
        o_c, o_b = (rc, rb) if dep_lhs else (lc, lb)
        nd = z.lo.ndim - 1
        free = [a for a in range(nd) if a not in c_ax and a not in b_ax]
        perm = list(b_ax) + free + list(c_ax) + [nd]
        red = tuple(range(len(b_ax) + len(free), nd))
        lo = np.min(np.transpose(np.asarray(z.lo), perm), axis=red)
        hi = np.max(np.transpose(np.asarray(z.hi), perm), axis=red)
        o_shape = np.shape(other)
        o_free = [o_shape[a] for a in range(len(o_shape)) if a not in o_c and a not in o_b]
        nb, nf = len(b_ax), len(free)
        if dep_lhs:
            new = lo.shape[: nb + nf] + (1,) * len(o_free) + lo.shape[nb + nf :]
        else:
            new = lo.shape[:nb] + (1,) * len(o_free) + lo.shape[nb:]
        shape = tuple(aval.shape) + (self.nx,)
        return Box(
            np.broadcast_to(lo.reshape(new), shape),
            np.broadcast_to(hi.reshape(new), shape),
            aval.dtype,
        )

    def _conv(self, eqn, args, aval) -> Box:
        p = eqn.params
        if not eqn.dep[0] or eqn.dep[1] or p.get("batch_group_count", 1) != 1:
            return None
        dn = p["dimension_numbers"]
        z = args[0]
        nd = z.lo.ndim - 1
        rshape = np.shape(args[1])
        window, strides = [1] * nd, [1] * nd
        pads, base, wdil = [(0, 0)] * nd, [1] * nd, [1] * nd
        window[dn.lhs_spec[1]] = z.lo.shape[dn.lhs_spec[1]]  # every input feature
        for i in range(nd - 2):
            ax = dn.lhs_spec[2 + i]
            window[ax] = rshape[dn.rhs_spec[2 + i]]
            strides[ax] = p["window_strides"][i]
            pads[ax] = tuple(p["padding"][i])
            base[ax] = (p.get("lhs_dilation") or (1,) * (nd - 2))[i]
            wdil[ax] = (p.get("rhs_dilation") or (1,) * (nd - 2))[i]
        params = dict(
            window_dimensions=window,
            window_strides=strides,
            padding=pads,
            base_dilation=base,
            window_dilation=wdil,
        )
        red = self._window(params, z, aval.dtype)
        # Logical dims (batch, feature, spatial...) from the lhs layout to the out layout.
        perm = [0] * nd
        for k, pos in enumerate(dn.out_spec):
            perm[pos] = dn.lhs_spec[k]
        lo = np.transpose(np.asarray(red.lo), perm + [nd])
        hi = np.transpose(np.asarray(red.hi), perm + [nd])
        shape = tuple(aval.shape) + (self.nx,)
        return Box(np.broadcast_to(lo, shape), np.broadcast_to(hi, shape), aval.dtype)


def _same(rules, eqn, args, avals):
    return [Box(args[0].lo, args[0].hi, avals[0].dtype)]


def _barrier(rules, eqn, args, avals):
    return [
        a if d else rules._empty(av.shape, av.dtype)
        for a, d, av in zip(args, eqn.dep, avals, strict=True)
    ]


def _elementwise(rules, eqn, args, avals):
    shape = tuple(avals[0].shape) + (rules.nx,)
    boxes = [a for a, d in zip(args, eqn.dep, strict=True) if d]
    lo = np.minimum.reduce([np.broadcast_to(np.asarray(b.lo), shape) for b in boxes])
    hi = np.maximum.reduce([np.broadcast_to(np.asarray(b.hi), shape) for b in boxes])
    return [Box(lo, hi, avals[0].dtype)]


def _reduce_sum(rules, eqn, args, avals):
    axes = tuple(eqn.params["axes"])
    z = args[0]
    return [Box(np.min(z.lo, axis=axes), np.max(z.hi, axis=axes), avals[0].dtype)]


def _cumsum(rules, eqn, args, avals):
    z, p = args[0], eqn.params
    lo = lax.cummin(jnp.asarray(z.lo), p["axis"], reverse=p["reverse"])
    hi = lax.cummax(jnp.asarray(z.hi), p["axis"], reverse=p["reverse"])
    return [Box(lo, hi, avals[0].dtype)]


def _scatter(rules, eqn, args, avals):
    """``x.at[idx].set / add``: an element's box is the union of the operand's and of every
    update's that may land on it (a superset for ``set``; safe with repeated indices)."""
    operand, indices, updates = args
    p = eqn.params
    dep = (eqn.dep[0], eqn.dep[2])

    def coords(which: str, fill: float, scatter):
        ops = [
            jnp.asarray(getattr(a, which))
            if d
            else jnp.full(np.shape(a) + (rules.nx,), fill, _BOX_DTYPE)
            for a, d in zip((operand, updates), dep, strict=True)
        ]

        def one(o, u):
            return scatter(
                o,
                indices,
                u,
                p["dimension_numbers"],
                indices_are_sorted=p["indices_are_sorted"],
                unique_indices=p["unique_indices"],
                mode=p["mode"],
            )

        return jax.vmap(one, in_axes=-1, out_axes=-1)(*ops)

    lo, hi = coords("lo", np.inf, lax.scatter_min), coords("hi", -np.inf, lax.scatter_max)
    return [Box(lo, hi, avals[0].dtype)]


def _volume(b: Box) -> float:
    """Sum over the elements of ``b`` of its box volume (0 for an empty box)."""
    lo, hi = np.asarray(b.lo), np.asarray(b.hi)
    return float(np.sum(np.prod(np.maximum(hi - lo + 1, 0), axis=-1)))


def _one(box):
    return None if box is None else [box]


# -- the box rules, one callable each, named in the registry (`slp._src.primitives`) --------
# Each is ``(rules, eqn, args, avals) -> [Box, ...]`` (one per output), or None for a case
# it does not take (the output then depends on the whole input).

SAME = _same
BARRIER = _barrier
ELEMENTWISE = _elementwise
REDUCE_SUM = _reduce_sum
CUMSUM = _cumsum
SCATTER = _scatter


def MOVING(rules, eqn, args, avals):
    """Elements move (reshape, slice, gather, pad...): their boxes move with them."""
    return rules._moving(eqn, args, avals)


def WINDOW(rules, eqn, args, avals):
    """A window reduction (sum or max pooling): the union of the window's boxes."""
    return [rules._window(eqn.params, args[0], avals[0].dtype)]


def DOT(rules, eqn, args, avals):
    """A dense layer; records its operand's and output's boxes (the probe route's cut)."""
    out = rules._dot(eqn, args, avals[0])
    if out is None:  # a product it does not take: the whole input
        out = rules._full(avals[0].shape, avals[0].dtype)
    rules.dots[rules.at(eqn)] = (args[eqn.dep.index(True)], out)
    return [out]


def CONV(rules, eqn, args, avals):
    """A convolution: the union of the boxes under the kernel's window."""
    return _one(rules._conv(eqn, args, avals[0]))


def receptive_boxes(program: interp.Program, x, visit: Callable | None = None):
    """Boxes of every ReLU layer's input and of every dot_general's operand and output, and
    the box volumes of every input-dependent operation (`_BoxRules.volumes`).

    ``visit(i, eqn)``: called at every input-dependent operation as the walk passes it, in
    program order, so that what else is read per operation comes from the same pass (the
    planner's shapes and FLOPs); None: nothing.
    """
    rules = _BoxRules(program, visit)
    with jax.ensure_compile_time_eval():
        res = interp.interpret(program, x, rules, kind="boxes")
    relu = tuple(Box(np.asarray(b.lo), np.asarray(b.hi), b.dtype) for b in res.relu_inputs)
    dots = {
        i: tuple(Box(np.asarray(b.lo), np.asarray(b.hi), b.dtype) for b in pair)
        for i, pair in rules.dots.items()
    }
    return relu, dots, rules.volumes


def whole_boxes(program: interp.Program, dots: dict, sizes: dict):
    """`receptive_boxes`'s result when no structure is known (everything depends on all).

    ``dots``: per dot_general (index into ``program.eqns``), the shapes of its
    input-dependent operand and of its output; ``sizes``: per input-dependent operation,
    the size of its output.
    """
    shape = tuple(program.input_shape)
    nx, d = len(shape), int(np.prod(shape))
    full = np.zeros(nx), np.asarray(shape) - 1.0

    def whole(s):
        lo = np.broadcast_to(full[0], tuple(s) + (nx,))
        return Box(lo, np.broadcast_to(full[1], lo.shape), None)

    relu_boxes = tuple(whole(s) for s in program.relu_shapes)
    dot_boxes = {i: (whole(a), whole(o)) for i, (a, o) in dots.items()}
    volumes = {i: (float(d) * d, float(d) * n) for i, n in sizes.items()}
    return relu_boxes, dot_boxes, volumes

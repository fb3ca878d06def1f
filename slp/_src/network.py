"""The network walker: finds the affine maps, ReLUs and max-pools in any JAX function.

Every method of this library (switched linear projections, Insens, the LRP family)
needs the same thing: the network written as a sequence of operations in which each
operation that depends on the input is either

* a **ReLU** ``max(z, 0)`` -- its input ``z`` is a layer of neurons,
* a **max-pool** ``reduce_window_max`` -- only the winner of each window passes on,
* a **linear/affine** operation (dense, conv, bias add, reshape, average pooling, ...).

`trace` turns a per-example function ``f(x) -> y`` into such a `Program` by tracing
it with `jax.make_jaxpr`, inlining every nested call (``jit``, ``custom_jvp_call``
such as `jax.nn.relu`, ``custom_vjp_call``, ``remat``) and unrolling every ``scan``
(`jax.lax.scan`, `flax.linen.scan`, `jax.lax.fori_loop` with Python-int bounds: the
length is known when tracing). Anything that depends on the input and is not taken
(``tanh``, ``exp`` of a softmax, the clamp of a hard tanh, ``sort``, a ``while`` loop)
raises `UnsupportedOperationError` -- never a silently wrong projection. The error names
the operation, the user's function or module it came from and the source line, and says
whether the operation is not piecewise linear (no switched projection exists) or only
not implemented here (`slp._src.primitives`, `Refusal.nature`).

The `Program` and the interpreter that evaluates it live in `slp._src.interpreter`; this
module re-exports them, so that the routes above it find the network in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core

from slp._src import guards as _guards
from slp._src import primitives as _primitives
from slp._src import provenance as _provenance
from slp._src.interpreter import (
    NOT_IMPLEMENTED,
    NOT_PIECEWISE_LINEAR,
    Eqn,
    ForwardRules,
    FrozenRules,
    Lit,
    NetworkState,
    Program,
    Refusal,
    Rules,
    UnsupportedOperationError,
    WalkResult,
    count_interpretations,
    defined,
    forward,
    forward_and_vjp,
    frozen_network,
    interpret,
    operand_value,
    pool_winners,
    program_tables,
    select_winners,
    walked,
)

__all__ = [
    "trace",
    "check_input",
    # the interpreter (`slp._src.interpreter`), for the routes built on the traced program
    "Eqn",
    "Program",
    "Lit",
    "Rules",
    "WalkResult",
    "interpret",
    "count_interpretations",
    "walked",
    "operand_value",
    "NetworkState",
    "UnsupportedOperationError",
    "ForwardRules",
    "FrozenRules",
    "defined",
    "forward",
    "forward_and_vjp",
    "frozen_network",
    "pool_winners",
    "select_winners",
]


_CALL_JAXPR_PARAMS = ("jaxpr", "call_jaxpr", "fun_jaxpr")
_CALLS = frozenset(
    {
        "pjit",
        "jit",
        "closed_call",
        "core_call",
        "custom_jvp_call",
        "custom_vjp_call",
        "custom_vjp_call_jaxpr",
        "remat",
        "checkpoint",
        "remat2",
        "custom_lin",
    }
)
_SCAN = getattr(lax, "scan_p", None)
# Primitives whose two equal-looking applications may differ (a ReLU's operand written twice
# must be one value).
_STATEFUL = frozenset(p for p in (getattr(lax, "rng_uniform_p", None),) if p is not None)
# Primitives that keep an all-zero value all-zero (used to recognise ``max(z, 0)``).
_ZERO_PRESERVING = frozenset(
    {
        lax.broadcast_in_dim_p,
        lax.convert_element_type_p,
        lax.reshape_p,
        lax.squeeze_p,
        lax.copy_p,
    }
)
# Sign tests ``z > 0`` (+1) and ``z < 0`` (-1) with ``z`` as the first operand; a zero
# first operand flips them (``0 < z`` is ``z > 0``). Equality at 0 does not matter to a
# ReLU spelling (both branches are 0 there).
_SIGN_TESTS = {lax.gt_p: 1, lax.ge_p: 1, lax.lt_p: -1, lax.le_p: -1}
# Comparisons are reported after every other refusal: the select or product that consumes
# one names a non-ReLU spelling better.
_COMPARISONS = frozenset(_SIGN_TESTS) | {lax.eq_p, lax.ne_p}
# What to write instead of a refused operation.
_HINTS = {
    lax.abs_p: "abs(z) = relu(z) + relu(-z) is two ReLUs: write it so if that is the intent",
    lax.min_p: (
        "min(z, c) is not a ReLU; e.g. relu6(z) = min(max(z, 0), 6) can be written "
        "relu(z) - relu(z - 6) with two ReLUs"
    ),
    lax.max_p: "only max(z, 0) (a ReLU) is supported; max(z, c) = relu(z - c) + c is one too",
    lax.select_n_p: (
        "where(cond, a, b) with an input-dependent condition is supported only as a ReLU: "
        "where(z > 0, z, 0) or where(z <= 0, 0, z); a leaky ReLU where(z >= 0, z, a * z) "
        "can be written relu(z) - a * relu(-z)"
    ),
    lax.mul_p: (
        "a product of two input-dependent values is not linear; z * (z > 0) is a ReLU only "
        "when both factors are the same z"
    ),
    lax.dot_general_p: "a product of two input-dependent values is not linear",
    lax.reduce_max_p: "only maxima over a floating-point value (max pooling) are supported",
    lax.argmax_p: "argmax is piecewise constant, not linear: use it outside the network",
}
for _p in _SIGN_TESTS:
    _HINTS[_p] = (
        "comparisons of input-dependent values are supported only inside a ReLU spelling: "
        "where(z > 0, z, 0), where(z <= 0, 0, z) or z * (z > 0)"
    )
_HINTS[lax.sort_p] = "sort outside the network, or use max pooling if the maximum is meant"


def _is_literal(v) -> bool:
    return isinstance(v, jex_core.Literal)


def _concrete_zero(val) -> bool:
    if isinstance(val, jax.core.Tracer):
        return False
    try:
        return bool(np.all(np.asarray(val) == 0))
    except (TypeError, ValueError):  # no NumPy view (a PRNG key array): not a known zero
        return False


class _Flattener:
    """Inlines nested calls into one flat list of operations (not yet classified)."""

    def __init__(self):
        self.ids = itertools.count()
        self.eqns: list[Eqn] = []
        self.consts: dict[int, Any] = {}
        self.avals: dict[int, Any] = {}
        self.zero: set[int] = set()

    def const(self, value) -> int:
        i = next(self.ids)
        self.consts[i] = value
        if _concrete_zero(value):
            self.zero.add(i)
        return i

    def inline(
        self,
        jaxpr,
        consts,
        args: Sequence,
        where: tuple[str, ...],
        source: tuple = (),
        generated: bool = False,
    ) -> list:
        """Adds ``jaxpr``'s operations; returns its outputs (ids or `Lit`).

        ``source``: the source infos of the calls it sits in; ``generated``: the jaxpr is
        slp's own (a global max-pool, a scan's slices), whose operations take the calling
        operation's ``source`` as theirs.
        """
        env: dict[Any, Any] = {}
        for var, c in zip(jaxpr.constvars, consts, strict=True):
            env[var] = self.const(c)
        for var, a in zip(jaxpr.invars, args, strict=True):
            env[var] = a

        def read(v):
            return Lit(v.val, v.aval) if _is_literal(v) else env[v]

        for e in jaxpr.eqns:
            ins = [read(v) for v in e.invars]
            src = source if generated else source + (e.source_info,)
            sub = _sub_jaxpr(e)
            if e.primitive.name in _CALLS and sub is not None:
                inner, inner_consts = sub
                label = e.params.get("name", e.primitive.name)
                label = getattr(label, "__name__", label)
                outs = self.inline(inner, inner_consts, ins, where + (str(label),), src)
            elif e.primitive is _SCAN and sub is not None:
                outs = self.unroll(e, ins, where + ("scan",), src)
            elif e.primitive is lax.reduce_max_p and _global_max_pool(e) is not None:
                # A maximum over axes of a feature map (global max pooling) is the max-pool
                # whose window covers those axes.
                outs = self.inline(*_global_max_pool(e), ins, where, src, generated=True)
            else:
                outs = self.add(e, ins, where, src)
            for var, o in zip(e.outvars, outs, strict=True):
                if type(var).__name__ != "DropVar":
                    env[var] = o
        return [read(v) for v in jaxpr.outvars]

    def unroll(self, e, ins: list, where: tuple[str, ...], source: tuple) -> list:
        """A ``scan`` as its ``length`` steps, one after the other (the length is static).

        The scanned-over operands are sliced step by step and the per-step outputs stacked,
        both by operations of the flat program, so a scan over layers is those layers.
        """
        p = e.params
        body, body_consts = _sub_jaxpr(e)
        n_consts, n_carry, length = p["num_consts"], p["num_carry"], int(p["length"])
        consts, carry = list(ins[:n_consts]), list(ins[n_consts : n_consts + n_carry])
        xs = [self.generated(_unstack_jaxpr, [a], where, source) for a in ins[n_consts + n_carry :]]
        ys: list = [None] * length
        for i in reversed(range(length)) if p["reverse"] else range(length):
            step = consts + carry + [x[i] for x in xs]
            outs = self.inline(body, body_consts, step, where, source)
            carry, ys[i] = outs[:n_carry], outs[n_carry:]
        stacked = []
        for j, var in enumerate(e.outvars[n_carry:]):
            if length == 0:
                stacked.append(self.const(jnp.zeros(var.aval.shape, var.aval.dtype)))
            else:
                stacked += self.generated(_stack_jaxpr, [y[j] for y in ys], where, source)
        return carry + stacked

    def generated(self, make: Callable, args: list, where, source) -> list:
        """Inlines slp's own jaxpr ``make(*avals)`` (cached) applied to ``args``."""
        avals = tuple(self.aval(a) for a in args)
        closed = make(*((tuple(a.shape), np.dtype(a.dtype)) for a in avals))
        return self.inline(closed.jaxpr, closed.consts, args, where, source, generated=True)

    def aval(self, a) -> jax.ShapeDtypeStruct:
        """Shape and dtype of an operand (an id or a `Lit`)."""
        if isinstance(a, Lit):
            dtype = a.aval.dtype if a.aval is not None else np.result_type(a.val)
            return jax.ShapeDtypeStruct(np.shape(a.val), dtype)
        if a in self.avals:
            return self.avals[a]
        c = self.consts[a]
        return jax.ShapeDtypeStruct(np.shape(c), getattr(c, "dtype", None) or np.result_type(c))

    def add(self, e, ins: list, where: tuple[str, ...], source: tuple = ()) -> list[int]:
        outs = tuple(next(self.ids) for _ in e.outvars)
        for o, v in zip(outs, e.outvars, strict=True):
            self.avals[o] = v.aval
        if e.primitive in _ZERO_PRESERVING and all(self.is_zero(a) for a in ins):
            self.zero.update(outs)
        self.eqns.append(
            Eqn(e.primitive, dict(e.params), tuple(ins), outs, where=where, source=source)
        )
        return list(outs)

    def is_zero(self, a) -> bool:
        if isinstance(a, Lit):
            return bool(np.all(np.asarray(a.val) == 0))
        return a in self.zero


def _unstack_jaxpr(spec):
    """The jaxpr of ``v -> [v[0], v[1], ...]`` for ``v`` of ``spec = (shape, dtype)``."""
    return _cached_unstack(spec, _x64())


def _stack_jaxpr(*specs):
    """The jaxpr of ``jnp.stack`` of values of ``specs`` (``(shape, dtype)`` each)."""
    return _cached_stack(specs, _x64())


def _x64() -> bool:
    """Whether 64-bit types are on (part of the cache key of slp's own jaxprs)."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


@functools.lru_cache(maxsize=256)
def _cached_unstack(spec, x64: bool):
    shape, dtype = spec
    return jax.make_jaxpr(
        lambda v: [lax.index_in_dim(v, i, 0, keepdims=False) for i in range(shape[0])]
    )(jax.ShapeDtypeStruct(shape, dtype))


@functools.lru_cache(maxsize=256)
def _cached_stack(specs, x64: bool):
    return jax.make_jaxpr(lambda *vs: jnp.stack(vs))(
        *(jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in specs)
    )


def _global_max_pool(e):
    """``reduce_max`` of a float value as a ``reduce_window_max`` and a reshape (a jaxpr and
    its consts), or None."""
    aval = e.invars[0].aval
    if not jnp.issubdtype(aval.dtype, jnp.floating):
        return None
    axes = tuple(e.params["axes"])
    win = tuple(n if a in axes else 1 for a, n in enumerate(aval.shape))
    out_shape = tuple(e.outvars[0].aval.shape)

    def pooled(z):
        m = lax.reduce_window(z, -jnp.inf, lax.max, win, (1,) * len(win), "VALID")
        return m.reshape(out_shape)

    closed = jax.make_jaxpr(pooled)(jax.ShapeDtypeStruct(aval.shape, aval.dtype))
    return closed.jaxpr, closed.consts


def _sign_test(e: Eqn, fl: _Flattener):
    """``(z, sign)`` if ``e`` compares ``z`` with 0 (``sign`` +1: ``z > 0``), else None."""
    sign = _SIGN_TESTS.get(e.primitive)
    if sign is None:
        return None
    a, b = e.inputs
    if fl.is_zero(b) and not isinstance(a, Lit):
        return a, sign
    if fl.is_zero(a) and not isinstance(b, Lit):
        return b, -sign
    return None


def _same_params(pa: dict, pb: dict) -> bool:
    if pa.keys() != pb.keys():
        return False
    for k, va in pa.items():
        vb = pb[k]
        if va is vb:
            continue
        try:
            if not bool(va == vb):
                return False
        except Exception:  # noqa: BLE001 - arrays, jaxprs: equal only when identical
            return False
    return True


def _same_literal(a: Lit, b: Lit) -> bool:
    va, vb = np.asarray(a.val), np.asarray(b.val)
    return va.shape == vb.shape and va.dtype == vb.dtype and bool(np.all(va == vb))


def _same_constant(ca, cb) -> bool:
    if ca is cb:
        return True
    if isinstance(ca, jax.core.Tracer) or isinstance(cb, jax.core.Tracer):
        return False  # values not known while tracing
    try:
        va, vb = np.asarray(ca), np.asarray(cb)
    except (TypeError, ValueError):  # no NumPy view (a PRNG key array)
        return False
    return va.shape == vb.shape and va.dtype == vb.dtype and bool(np.array_equal(va, vb))


def _same_value(a, b, fl: _Flattener, producer: dict[int, Eqn]) -> bool:
    """Whether operands ``a`` and ``b`` compute the same expression: the same id, equal
    literals or constants, or the same primitive with the same parameters applied to
    (recursively) the same operands -- e.g. the two ``z - 0.5`` of
    ``where(z - 0.5 <= 0, 0, z - 0.5)``."""
    todo, seen = [(a, b)], set()
    while todo:
        a, b = todo.pop()
        if isinstance(a, Lit) or isinstance(b, Lit):
            if not (isinstance(a, Lit) and isinstance(b, Lit) and _same_literal(a, b)):
                return False
            continue
        if a == b or (a, b) in seen:
            continue
        seen.add((a, b))
        ea, eb = producer.get(a), producer.get(b)
        if ea is None or eb is None:  # the input, or constants: equal if their values are
            if a in fl.consts and b in fl.consts and _same_constant(fl.consts[a], fl.consts[b]):
                continue
            return False
        if (
            ea.primitive is not eb.primitive
            or ea.primitive in _STATEFUL
            or len(ea.inputs) != len(eb.inputs)
            or ea.outputs.index(a) != eb.outputs.index(b)
            or not _same_params(ea.params, eb.params)
        ):
            return False
        todo.extend(zip(ea.inputs, eb.inputs, strict=True))
    return True


def _relu_operand(e: Eqn, fl: _Flattener, producer: dict[int, Eqn], dep: set[int]):
    """The ``z`` of a ReLU spelled ``e``, or None.

    Spellings: ``max(z, 0)`` in either order (also ``jnp.clip(z, 0)``), ``where(z > 0, z, 0)``
    and ``where(z <= 0, 0, z)`` (``select_n``; any of ``> >= < <=``, either operand order),
    ``z * (z > 0)`` in either order. All are ``max(z, 0)`` exactly, at ``z = 0`` too. ``z``
    may be any expression, written once or twice (`_same_value`).
    """
    ins = e.inputs
    on = [isinstance(a, int) and a in dep for a in ins]
    if e.primitive is lax.max_p and sum(on) == 1 and fl.is_zero(ins[1 - on.index(True)]):
        return ins[on.index(True)]
    if e.primitive is lax.select_n_p and len(ins) == 3 and on[0]:
        test = producer.get(ins[0])
        found = test is not None and _sign_test(test, fl)
        if found:
            z, sign = found
            off, kept = (ins[1], ins[2]) if sign > 0 else (ins[2], ins[1])
            if fl.is_zero(off) and _same_value(kept, z, fl, producer):
                return kept
        return None
    if e.primitive is lax.mul_p and all(on):
        for z, m in (ins, ins[::-1]):
            conv = producer.get(m)
            if conv is None or conv.primitive is not lax.convert_element_type_p:
                continue
            test = producer.get(conv.inputs[0])
            found = test is not None and _sign_test(test, fl)
            if found and found[1] == 1 and _same_value(found[0], z, fl, producer):
                return z
    return None


def _resolve(fl: _Flattener, in_id: int, out, where_out=()) -> tuple[list[Eqn], dict]:
    """ReLU spellings made canonical, dead code removed, every operation classified.

    Returns the live operations (kind, input dependence and sites filled in) and the
    constants they use.
    """
    dep = {in_id}
    producer: dict[int, Eqn] = {}
    eqns = []
    for e in fl.eqns:
        for o in e.outputs:
            producer[o] = e
        if any(isinstance(a, int) and a in dep for a in e.inputs):
            z = _relu_operand(e, fl, producer, dep)
            if z is not None:
                zero = Lit(np.zeros((), fl.avals[e.outputs[0]].dtype))
                e = dataclasses.replace(e, primitive=lax.max_p, params={}, inputs=(z, zero))
                e = dataclasses.replace(e, kind="relu")
            dep.update(e.outputs)
        eqns.append(e)
    # Dead code: operations whose values do not reach the output.
    live = {out} if isinstance(out, int) else set()
    kept = []
    for e in reversed(eqns):
        if any(o in live for o in e.outputs):
            kept.append(e)
            live.update(a for a in e.inputs if isinstance(a, int))
    kept.reverse()
    return kept, {i: c for i, c in fl.consts.items() if i in live}


def _classify(e: Eqn, dep: tuple[bool, ...], avals) -> tuple[str, Refusal | None]:
    """The kind of a live operation with input-dependent operands ``dep``, and why slp
    refuses it (None when it is taken)."""
    if e.kind == "relu":
        return "relu", None
    decl = _primitives.lookup(e.primitive)
    if decl is None:
        return "", _primitives.why_not(e.primitive)
    refusal = decl.refusal(len(e.inputs), dep, e.params, [a.dtype for a in avals])
    if decl.role == "relu" and refusal is None:
        refusal = Refusal(
            "max(z, c) is piecewise linear, but slp takes a max only as a ReLU max(z, 0) of "
            "one input-dependent value: not implemented",
            NOT_IMPLEMENTED,
        )
    if (
        refusal is None
        and decl.role == "max_pool"
        and any(d != 1 for d in e.params.get("base_dilation", ()))
    ):
        refusal = Refusal("max pooling with base dilation is not implemented")
    return ("", refusal) if refusal is not None else (decl.role, None)


def _priority(e: Eqn, refusal: Refusal) -> int:
    """Which refusal to report first (lowest): a primitive that is not piecewise linear (the
    exp of a softmax) names the cause better than one it makes non-linear on the way (the
    max of that softmax); comparisons come last."""
    if e.primitive in _COMPARISONS:
        return 3
    if _primitives.lookup(e.primitive) is not None:
        return 2
    return 0 if refusal.nature == NOT_PIECEWISE_LINEAR else 1


def _error(e: Eqn, refusal: Refusal) -> UnsupportedOperationError:
    """The error that refuses ``e``, in the user's terms (`slp._src.provenance`)."""
    name = e.primitive.name
    where = _provenance.describe(e.source, e.where, name)
    if where.label is None and e.where:
        what = f"'{name}' (inside {' > '.join(e.where)})"
    else:
        what = where.phrase(name)
    hint = where.hint or _HINTS.get(e.primitive)
    return UnsupportedOperationError(
        f"unsupported operation {what}, applied to a value that depends on the network "
        f"input: {refusal.reason}" + (f". Hint: {hint}" if hint else ""),
        primitive=name,
        nature=refusal.nature,
        label=where.label,
    )


def _sub_jaxpr(e):
    for key in _CALL_JAXPR_PARAMS:
        sub = e.params.get(key)
        if sub is None:
            continue
        if isinstance(sub, jex_core.ClosedJaxpr):
            return sub.jaxpr, sub.consts
        if isinstance(sub, jex_core.Jaxpr):
            return sub, ()
    return None


def check_input(x, what: str = "one example") -> None:
    """Raises TypeError unless ``x`` is an array (anything with a shape and a dtype).

    Every public entry of slp passes here (through `trace`, or before batching), so a
    Python list or dict gets this error rather than one from deep inside a transform.

    Args:
      x: the network input given to slp.
      what: what ``x`` should hold, for the message.
    """
    if not (hasattr(x, "shape") and hasattr(x, "dtype")):
        raise TypeError(
            f"the network input x must be an array (a jax.Array or a NumPy array holding "
            f"{what}); got a {type(x).__name__}. Convert it with jnp.asarray(x) first"
        )


def _classified(live: list[Eqn], avals: dict, in_id: int) -> tuple[list[Eqn], tuple]:
    """Every live operation with its kind, input dependence, site and declaration filled in.

    Returns ``(eqns, (relu_shapes, pool_shapes, pool_sources, pool_input_shapes))``.

    Raises:
      UnsupportedOperationError: for the refused operation that names the cause best
        (`_priority`), the first in forward order among equals.
    """
    dep_ids = {in_id}
    eqns: list[Eqn] = []
    relu_out: dict[int, int] = {}  # id of a ReLU output -> ReLU layer
    relu_shapes, pool_shapes, pool_in_shapes, pool_sources = [], [], [], []
    refused = []  # (priority, position, operation, refusal); the first one is reported
    for e in live:
        dep = tuple(isinstance(a, int) and a in dep_ids for a in e.inputs)
        kind, site, source = "const", -1, -1
        if any(dep):
            kind, refusal = _classify(e, dep, [avals[o] for o in e.outputs])
            if refusal is not None:
                refused.append((_priority(e, refusal), len(eqns), e, refusal))
            dep_ids.update(e.outputs)
            if kind == "relu":
                site = len(relu_shapes)
                relu_shapes.append(tuple(avals[e.outputs[0]].shape))
                relu_out[e.outputs[0]] = site
            elif kind == "max_pool":
                site = len(pool_shapes)
                pool_shapes.append(tuple(avals[e.outputs[0]].shape))
                pool_in_shapes.append(tuple(avals[e.inputs[0]].shape))
                source = relu_out.get(e.inputs[0], -1)
                pool_sources.append(source)
        decl = _primitives.lookup(e.primitive) if kind not in ("", "const") else None
        eqns.append(
            dataclasses.replace(e, kind=kind, dep=dep, site=site, pool_source=source, decl=decl)
        )
    if refused:
        _, _, e, refusal = min(refused, key=lambda r: r[:2])
        raise _error(e, refusal)
    return eqns, (relu_shapes, pool_shapes, pool_sources, pool_in_shapes)


def trace(f: Callable, x: jax.Array) -> Program:
    """Traces a per-example function into a flat `Program`.

    Args:
      f: ``f(x) -> y``, one example in, one array out, built from affine maps, ReLUs
        and pooling.
      x: an example input (only its shape and dtype are used; may be a tracer).

    Returns:
      The flattened `Program`.

    Raises:
      UnsupportedOperationError: if ``f`` applies an operation that slp does not follow
        (not piecewise linear, or not implemented) to a value that depends on ``x``.
      TypeError: if ``x`` is not an array (a list, a dict, a Python number).
      ValueError: if ``f`` cannot be called on an input of ``x``'s shape, or does not
        return a single array.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2
      >>> program = slp.network.trace(f, jnp.zeros(4))  # slp follows f: no error
      >>> try:  # a tanh network has no switched linear projections
      ...     slp.network.trace(lambda x: jnp.tanh(x @ W1) @ W2, jnp.zeros(4))
      ... except slp.network.UnsupportedOperationError as err:
      ...     print(err.primitive, "|", err.nature)
      tanh | not piecewise linear
    """
    check_input(x)
    walked("trace")
    x_aval = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    if not jnp.issubdtype(x_aval.dtype, jnp.floating):
        raise ValueError(f"the network input must be a floating-point array; got {x_aval.dtype}")
    try:
        closed, out_shape = jax.make_jaxpr(f, return_shape=True)(x_aval)
    except Exception as err:  # noqa: BLE001 - flax raises its own error types for shapes
        raise ValueError(
            f"calling the network on one input of shape {x_aval.shape} and dtype "
            f"{x_aval.dtype} failed. slp transforms take a function of a single example (no "
            "batch axis): to explain a batch, map over it with jax.vmap; for a model that "
            "expects a batch axis, pass lambda x: f(x[None])[0]. Original error: "
            f"{err}"
        ) from err
    if not isinstance(out_shape, jax.ShapeDtypeStruct):
        raise ValueError(
            "the network must return a single array (e.g. the logits); got "
            f"{jax.tree_util.tree_structure(out_shape)}"
        )
    _guards.check_one_example(f, x_aval, out_shape)
    fl = _Flattener()
    in_id = next(fl.ids)
    fl.avals[in_id] = x_aval
    (out,) = fl.inline(closed.jaxpr, closed.consts, [in_id], ())
    live, consts = _resolve(fl, in_id, out)
    eqns, sites = _classified(live, fl.avals, in_id)
    relu_shapes, pool_shapes, pool_sources, pool_in_shapes = sites
    tables = program_tables(eqns, [in_id, *consts], fl.aval, out)
    return Program(
        eqns=tuple(eqns),
        consts=consts,
        input_id=in_id,
        output_id=out,
        input_shape=tuple(x_aval.shape),
        input_dtype=x_aval.dtype,
        output_shape=tuple(out_shape.shape),
        relu_shapes=tuple(relu_shapes),
        pool_shapes=tuple(pool_shapes),
        pool_sources=tuple(pool_sources),
        pool_input_shapes=tuple(pool_in_shapes),
        **tables,
    )

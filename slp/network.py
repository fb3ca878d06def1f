"""The network walker: finds the affine maps, ReLUs and max-pools in any JAX function.

Every method of this library (switched linear projections, Insens, the LRP family)
needs the same thing: the network written as a sequence of operations in which each
operation that depends on the input is either

* a **ReLU** ``max(z, 0)`` -- its input ``z`` is a layer of neurons,
* a **max-pool** ``reduce_window_max`` -- only the winner of each window passes on,
* a **linear/affine** operation (dense, conv, bias add, reshape, average pooling, ...).

`trace` turns a per-example function ``f(x) -> y`` into such a `Program` by tracing
it with `jax.make_jaxpr` and inlining every nested call (``jit``, ``custom_jvp_call``
such as `jax.nn.relu`, ``custom_vjp_call``, ``remat``). Anything that depends on the
input and is not piecewise linear in the supported way (``tanh``, ``exp`` of a
softmax, comparisons of a leaky ReLU, ...) raises `UnsupportedOperationError` naming
the operation -- never a silently wrong projection.

`walk` evaluates a program under a set of `Rules`: the rules decide what a ReLU,
a max-pool and a linear operation do to the values flowing through them. The plain
forward pass, the frozen-state (switched) network, the explicit matrix route and
the LRP rules are all such rule sets over the same walker.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.extend import core as jex_core

__all__ = [
    "Eqn",
    "Program",
    "Rules",
    "NetworkState",
    "UnsupportedOperationError",
    "trace",
    "walk",
    "WalkResult",
    "ForwardRules",
    "FrozenRules",
    "forward",
    "frozen_network",
    "pool_winners",
    "select_winners",
]


class UnsupportedOperationError(ValueError):
    """The traced function applies an operation that no switched projection describes."""


# Primitives that are linear in the operands marked as input-dependent (the others are
# constants such as weights, biases, indices). Checked per primitive in `_classify`.
_STRUCTURAL = frozenset(
    {
        "reshape",
        "transpose",
        "broadcast_in_dim",
        "squeeze",
        "expand_dims",
        "reduce_sum",
        "reduce_window_sum",
        "convert_element_type",
        "copy",
        "copy_p",
        "slice",
        "dynamic_slice",
        "dynamic_update_slice",
        "concatenate",
        "pad",
        "rev",
        "select_n",
        "gather",
        "scatter-add",
        "scatter_add",
        "cumsum",
        "reduce_precision",
        "sharding_constraint",
        "neg",
        "add",
        "sub",
        "add_any",
        "mul",
        "div",
        "dot_general",
        "conv_general_dilated",
        "optimization_barrier",
    }
)
# Operands of these primitives that must be constant (not depend on the input).
_CONST_OPERANDS = {
    "dynamic_slice": lambda n: range(1, n),
    "dynamic_update_slice": lambda n: range(2, n),
    "pad": lambda n: (1,),
    "select_n": lambda n: (0,),
    "gather": lambda n: (1,),
    "scatter-add": lambda n: (1,),
    "scatter_add": lambda n: (1,),
    "conv_general_dilated": lambda n: (1,),
    "div": lambda n: (1,),
}
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
# Primitives that keep an all-zero value all-zero (used to recognise ``max(z, 0)``).
_ZERO_PRESERVING = frozenset(
    {"broadcast_in_dim", "convert_element_type", "reshape", "squeeze", "expand_dims", "copy"}
)


@dataclasses.dataclass(frozen=True)
class Lit:
    """A literal operand of an equation (a Python/NumPy scalar baked into the program)."""

    val: Any


@dataclasses.dataclass(frozen=True)
class Eqn:
    """One operation of a flattened program.

    Attributes:
      primitive: the JAX primitive.
      params: its parameters.
      inputs: operand ids (`int`) or literals (`Lit`).
      outputs: result ids.
      kind: ``"const"`` (no input dependence), ``"relu"``, ``"max_pool"`` or ``"linear"``.
      dep: per operand, whether it depends on the network input.
      site: for ReLUs the ReLU-layer index, for max-pools the pool index, else -1.
      pool_source: for max-pools, the ReLU layer whose output is pooled (or -1).
      where: the names of the nested calls the operation sits in, for error messages.
    """

    primitive: Any
    params: dict
    inputs: tuple
    outputs: tuple[int, ...]
    kind: str
    dep: tuple[bool, ...]
    site: int = -1
    pool_source: int = -1
    where: tuple[str, ...] = ()

    def bind(self, *args, precision: Any = None):
        """Applies the primitive to ``args``; `precision` overrides matmul/conv precision."""
        params = self.params
        if precision is not None and "precision" in params:
            params = dict(params, precision=(precision, precision))
        return self.primitive.bind(*args, **params)


@dataclasses.dataclass(frozen=True)
class Program:
    """A per-example network as a flat list of operations.

    Attributes:
      eqns: the operations in forward order.
      consts: values of the constant ids (weights, biases, ...).
      input_id: id of the network input ``x``.
      output_id: id (or `Lit`) of the network output.
      input_shape, input_dtype: of ``x``.
      output_shape: of ``f(x)``.
      relu_shapes: shape of every ReLU layer, in forward order.
      pool_shapes: output shape of every max-pool, in forward order.
      pool_sources: per max-pool, the ReLU layer it pools (-1 if its operand is not
        directly a ReLU output).
    """

    eqns: tuple[Eqn, ...]
    consts: dict
    input_id: int
    output_id: Any
    input_shape: tuple[int, ...]
    input_dtype: Any
    output_shape: tuple[int, ...]
    relu_shapes: tuple[tuple[int, ...], ...]
    pool_shapes: tuple[tuple[int, ...], ...]
    pool_sources: tuple[int, ...]
    pool_input_shapes: tuple[tuple[int, ...], ...]


def _is_literal(v) -> bool:
    return isinstance(v, jex_core.Literal)


def _concrete_zero(val) -> bool:
    if isinstance(val, jax.core.Tracer):
        return False
    try:
        return bool(np.all(np.asarray(val) == 0))
    except Exception:  # noqa: BLE001 - anything we cannot inspect is not a known zero
        return False


class _Flattener:
    def __init__(self):
        self.ids = itertools.count()
        self.eqns: list[Eqn] = []
        self.consts: dict[int, Any] = {}
        self.dep: set[int] = set()
        self.zero: set[int] = set()
        self.relu_out: dict[int, int] = {}  # id of a ReLU output -> ReLU layer
        self.relu_shapes: list[tuple[int, ...]] = []
        self.pool_shapes: list[tuple[int, ...]] = []
        self.pool_in_shapes: list[tuple[int, ...]] = []
        self.pool_sources: list[int] = []

    def const(self, value) -> int:
        i = next(self.ids)
        self.consts[i] = value
        if _concrete_zero(value):
            self.zero.add(i)
        return i

    def inline(self, jaxpr, consts, args: Sequence, where: tuple[str, ...]) -> list:
        env: dict[Any, Any] = {}
        for var, c in zip(jaxpr.constvars, consts, strict=True):
            env[var] = self.const(c)
        for var, a in zip(jaxpr.invars, args, strict=True):
            env[var] = a

        def read(v):
            return Lit(v.val) if _is_literal(v) else env[v]

        for e in jaxpr.eqns:
            ins = [read(v) for v in e.invars]
            name = e.primitive.name
            sub = _sub_jaxpr(e)
            if name in _CALLS and sub is not None:
                inner, inner_consts = sub
                label = e.params.get("name", name)
                label = getattr(label, "__name__", label)
                outs = self.inline(inner, inner_consts, ins, where + (str(label),))
            else:
                outs = self.add(e, ins, where)
            for var, o in zip(e.outvars, outs, strict=True):
                if type(var).__name__ != "DropVar":
                    env[var] = o
        return [read(v) for v in jaxpr.outvars]

    def add(self, e, ins: list, where: tuple[str, ...]) -> list[int]:
        name = e.primitive.name
        dep = tuple((not isinstance(a, Lit)) and a in self.dep for a in ins)
        outs = tuple(next(self.ids) for _ in e.outvars)
        kind, site, source = "const", -1, -1
        if any(dep):
            kind = self._classify(e, ins, dep, where)
            if kind == "relu":
                site = len(self.relu_shapes)
                self.relu_shapes.append(tuple(e.outvars[0].aval.shape))
                self.relu_out[outs[0]] = site
            elif kind == "max_pool":
                site = len(self.pool_shapes)
                self.pool_shapes.append(tuple(e.outvars[0].aval.shape))
                self.pool_in_shapes.append(tuple(e.invars[0].aval.shape))
                source = self.relu_out.get(ins[0], -1)
                self.pool_sources.append(source)
            self.dep.update(outs)
        elif name in _ZERO_PRESERVING and all(self._is_zero(a) for a in ins):
            self.zero.update(outs)
        self.eqns.append(
            Eqn(e.primitive, dict(e.params), tuple(ins), outs, kind, dep, site, source, where)
        )
        return list(outs)

    def _is_zero(self, a) -> bool:
        if isinstance(a, Lit):
            return bool(np.all(np.asarray(a.val) == 0))
        return a in self.zero

    def _classify(self, e, ins, dep, where) -> str:
        name = e.primitive.name
        ctx = f" (inside {' > '.join(where)})" if where else ""
        if name == "max":
            if sum(dep) == 1 and self._is_zero(ins[1 - dep.index(True)]):
                return "relu"
            raise UnsupportedOperationError(
                f"unsupported operation 'max'{ctx}: only max(z, 0) (a ReLU) is supported on "
                "values that depend on the network input; max with a non-zero or "
                "input-dependent second operand is not a ReLU"
            )
        if name == "reduce_window_max":
            if any(d != 1 for d in e.params.get("base_dilation", ())):
                raise UnsupportedOperationError(
                    f"unsupported operation 'reduce_window_max'{ctx}: "
                    "base dilation is not supported"
                )
            return "max_pool"
        if name not in _STRUCTURAL:
            raise UnsupportedOperationError(
                f"unsupported operation '{name}'{ctx} applied to a value that depends on the "
                "network input: switched linear projections exist only for networks of affine "
                "maps, ReLUs and max/average pooling (tanh, sigmoid, softmax, gelu, ... inside "
                "the network are not piecewise linear)"
            )
        if name in ("mul", "dot_general") and all(dep):
            raise UnsupportedOperationError(
                f"unsupported operation '{name}'{ctx}: a product of two input-dependent values "
                "is not linear"
            )
        if name == "convert_element_type" and not jnp.issubdtype(
            e.outvars[0].aval.dtype, jnp.floating
        ):
            raise UnsupportedOperationError(
                f"unsupported operation 'convert_element_type'{ctx}: converting an "
                f"input-dependent value to {e.outvars[0].aval.dtype} is not linear"
            )
        const_ops = _CONST_OPERANDS.get(name)
        if const_ops is not None:
            for i in const_ops(len(ins)):
                if dep[i]:
                    raise UnsupportedOperationError(
                        f"unsupported operation '{name}'{ctx}: operand {i} depends on the network "
                        "input, which makes the operation non-linear"
                    )
        return "linear"


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


def trace(f: Callable, x: jax.Array) -> Program:
    """Traces a per-example function into a flat `Program`.

    Args:
      f: ``f(x) -> y``, one example in, one array out, built from affine maps, ReLUs
        and pooling.
      x: an example input (only its shape and dtype are used; may be a tracer).

    Returns:
      The flattened `Program`.

    Raises:
      UnsupportedOperationError: if ``f`` applies a non-piecewise-linear operation to
        a value that depends on ``x``.
      ValueError: if ``f`` cannot be called on an input of ``x``'s shape, or does not
        return a single array.
    """
    x_aval = jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x))
    if not jnp.issubdtype(x_aval.dtype, jnp.floating):
        raise ValueError(f"the network input must be a floating-point array; got {x_aval.dtype}")
    try:
        closed, out_shape = jax.make_jaxpr(f, return_shape=True)(x_aval)
    except Exception as err:  # noqa: BLE001 - flax raises its own error types for shapes
        raise ValueError(
            f"calling the network on one input of shape {x_aval.shape} and dtype "
            f"{x_aval.dtype} failed. slp transforms take a function of a single example; "
            f"batch with jax.vmap. Original error: {err}"
        ) from err
    if not isinstance(out_shape, jax.ShapeDtypeStruct):
        raise ValueError(
            "the network must return a single array (e.g. the logits); got "
            f"{jax.tree_util.tree_structure(out_shape)}"
        )
    fl = _Flattener()
    in_id = next(fl.ids)
    fl.dep.add(in_id)
    (out,) = fl.inline(closed.jaxpr, closed.consts, [in_id], ())
    return Program(
        eqns=tuple(fl.eqns),
        consts=fl.consts,
        input_id=in_id,
        output_id=out,
        input_shape=tuple(x_aval.shape),
        input_dtype=x_aval.dtype,
        output_shape=tuple(out_shape.shape),
        relu_shapes=tuple(fl.relu_shapes),
        pool_shapes=tuple(fl.pool_shapes),
        pool_sources=tuple(fl.pool_sources),
        pool_input_shapes=tuple(fl.pool_in_shapes),
    )


class Rules:
    """What a walk does at each kind of operation. Subclass and override.

    Values of input-dependent variables are whatever the rules make them (arrays for
    a forward pass, (matrix, offset) pairs for the explicit route, ...); constants are
    always plain arrays.
    """

    #: matmul/conv precision used when re-binding linear operations.
    precision: Any = lax.Precision.HIGHEST

    def input(self, x):
        """The value given to the network input."""
        return x

    def relu(self, eqn: Eqn, z):
        """Value of ``max(z, 0)`` at ReLU layer ``eqn.site``."""
        raise NotImplementedError

    def max_pool(self, eqn: Eqn, z):
        """Value of the max-pool ``eqn`` (pool index ``eqn.site``) applied to ``z``."""
        raise NotImplementedError

    def linear(self, eqn: Eqn, args: list):
        """Values of a linear/affine operation; ``eqn.dep`` marks input-dependent args."""
        out = eqn.bind(*args, precision=self.precision)
        return out if eqn.primitive.multiple_results else [out]


class WalkResult(NamedTuple):
    """What a walk returns.

    Attributes:
      output: value of the network output (shape `Program.output_shape` for arrays).
      relu_inputs: per ReLU layer, the value that entered it (the layer's activity).
      pool_inputs: per max-pool, the value that entered it.
    """

    output: Any
    relu_inputs: tuple
    pool_inputs: tuple


def walk(program: Program, x, rules: Rules) -> WalkResult:
    """Evaluates ``program`` on ``x`` with ``rules`` deciding the input-dependent steps."""
    env = dict(program.consts)
    env[program.input_id] = rules.input(x)
    relu_in: list = [None] * len(program.relu_shapes)
    pool_in: list = [None] * len(program.pool_shapes)

    def read(a):
        return a.val if isinstance(a, Lit) else env[a]

    for eqn in program.eqns:
        args = [read(a) for a in eqn.inputs]
        if eqn.kind == "const":
            out = eqn.primitive.bind(*args, **eqn.params)
            outs = out if eqn.primitive.multiple_results else [out]
        elif eqn.kind == "relu":
            z = args[eqn.dep.index(True)]
            relu_in[eqn.site] = z
            outs = [rules.relu(eqn, z)]
        elif eqn.kind == "max_pool":
            pool_in[eqn.site] = args[0]
            outs = [rules.max_pool(eqn, args[0])]
        else:
            outs = rules.linear(eqn, args)
        for i, o in zip(eqn.outputs, outs, strict=True):
            env[i] = o
    return WalkResult(read(program.output_id), tuple(relu_in), tuple(pool_in))


def _tiled_window(eqn: Eqn, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The window of a max-pool whose windows tile its input (stride = window, no padding,
    no dilation, sizes divisible), else None."""
    p = eqn.params
    win, strides = tuple(p["window_dimensions"]), tuple(p["window_strides"])
    dil = tuple(p.get("window_dilation") or (1,) * len(win))
    base = tuple(p.get("base_dilation") or (1,) * len(win))
    if (
        win == strides
        and all(lo == 0 and hi == 0 for lo, hi in p["padding"])
        and all(d == 1 for d in dil + base)
        and all(n % w == 0 for n, w in zip(shape, win, strict=True))
    ):
        return win
    return None


def _windows(z: jax.Array, win: tuple[int, ...]) -> jax.Array:
    """Tiled windows of ``z`` laid out along a trailing axis: ``out_shape + (prod(win),)``,
    each window in row-major order."""
    split = [s for n, w in zip(z.shape, win, strict=True) for s in (n // w, w)]
    nd = z.ndim
    perm = list(range(0, 2 * nd, 2)) + list(range(1, 2 * nd, 2))
    out_shape = tuple(n // w for n, w in zip(z.shape, win, strict=True))
    return z.reshape(split).transpose(perm).reshape(out_shape + (int(np.prod(win)),))


def pool_winners(eqn: Eqn, z: jax.Array) -> jax.Array:
    """Flat index into ``z`` of the winner of every window of the max-pool ``eqn``.

    Ties go to the lowest flat index. Returns an int32 array of the pool's output shape.
    """
    win = _tiled_window(eqn, z.shape)
    if win is not None:
        # Row-major order inside a window is flat-index order, so argmax's first maximum
        # is the lowest flat index among ties.
        pos = jnp.argmax(_windows(z, win), axis=-1)
        offsets = jnp.unravel_index(pos, win)
        coords = [
            lax.broadcasted_iota(jnp.int32, pos.shape, d) * w + o.astype(jnp.int32)
            for d, (w, o) in enumerate(zip(win, offsets, strict=True))
        ]
        return jnp.ravel_multi_index(tuple(coords), z.shape, mode="clip").astype(jnp.int32)
    p = eqn.params
    idx = jnp.arange(z.size, dtype=jnp.int32).reshape(z.shape)

    def pick(a, b):
        (va, ia), (vb, ib) = a, b
        take_b = (vb > va) | ((vb == va) & (ib < ia))
        return jnp.where(take_b, vb, va), jnp.where(take_b, ib, ia)

    init = (jnp.array(-jnp.inf, z.dtype), jnp.array(np.iinfo(np.int32).max, jnp.int32))
    _, winners = lax.reduce_window(
        (z, idx),
        init,
        pick,
        p["window_dimensions"],
        p["window_strides"],
        p["padding"],
        p.get("base_dilation"),
        p.get("window_dilation"),
    )
    return winners


def select_winners(eqn: Eqn, z: jax.Array, winners: jax.Array) -> jax.Array:
    """The values of ``z`` at ``winners`` (flat indices, pool output shape); linear in ``z``.

    For tiled windows (the usual 2x2 stride-2 pool) the winner is picked by a mask along
    the window axis, so the derivative is elementwise -- far cheaper on CPU than the
    scatter-add that transposes a gather.
    """
    win = _tiled_window(eqn, z.shape)
    if win is None:
        return z.reshape(-1)[winners.reshape(-1)].reshape(winners.shape)
    coords = jnp.unravel_index(winners, z.shape)
    pos = jnp.ravel_multi_index(
        tuple(c % w for c, w in zip(coords, win, strict=True)), win, mode="clip"
    )
    zt = _windows(z, win)
    won = lax.broadcasted_iota(pos.dtype, zt.shape, zt.ndim - 1) == pos[..., None]
    return jnp.sum(jnp.where(won, zt, jnp.zeros_like(zt)), axis=-1)


class NetworkState(NamedTuple):
    """The state of a network at one input: which neurons are on, which pool inputs win.

    Attributes:
      activities: per ReLU layer, the activity ``v`` (pre-activation), layer shape.
      winners: per max-pool, int32 flat indices into the pool's input, pool output shape.
      output: the network output ``f(x)``, output shape.
    """

    activities: tuple[jax.Array, ...]
    winners: tuple[jax.Array, ...]
    output: jax.Array

    def pattern(self) -> tuple[jax.Array, ...]:
        """Active neurons (``v > 0``) per ReLU layer."""
        return tuple(v > 0 for v in self.activities)


class ForwardRules(Rules):
    """The ordinary forward pass; records each max-pool's winners."""

    def __init__(self):
        self.winners: dict[int, jax.Array] = {}

    def relu(self, eqn, z):
        return jnp.where(z > 0, z, jnp.zeros_like(z))

    def max_pool(self, eqn, z):
        # Winners are chosen on a value cut off from differentiation (the choice is
        # piecewise constant), so the forward pass can be differentiated: the
        # derivative of a pool routes to its winners.
        w = pool_winners(eqn, lax.stop_gradient(z))
        self.winners[eqn.site] = w
        return select_winners(eqn, z, w)


def forward(program: Program, x: jax.Array) -> NetworkState:
    """Runs the network on ``x`` and returns its `NetworkState`."""
    rules = ForwardRules()
    res = walk(program, x, rules)
    winners = tuple(rules.winners[i] for i in range(len(program.pool_shapes)))
    return NetworkState(res.relu_inputs, winners, res.output)


class FrozenRules(Rules):
    """The switched network: ReLUs multiply by the frozen pattern, pools take the frozen winners.

    With these rules the walk is an affine function of its input whose value at the
    state's own input equals the network's (Theorem 1).
    """

    def __init__(self, state: NetworkState):
        self.masks = tuple((v > 0).astype(v.dtype) for v in state.activities)
        self.winners = state.winners

    def relu(self, eqn, z):
        return z * self.masks[eqn.site].astype(z.dtype)

    def max_pool(self, eqn, z):
        return select_winners(eqn, z, self.winners[eqn.site])


def frozen_network(program: Program, state: NetworkState) -> Callable[[jax.Array], WalkResult]:
    """The affine map ``x' -> walk(program, x', FrozenRules(state))`` (the switched network)."""
    rules = FrozenRules(state)
    return lambda xp: walk(program, xp, rules)

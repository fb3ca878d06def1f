"""The interpreter: a traced network as a flat `Program`, and the one loop that evaluates it.

Every method of this library (switched linear projections, Insens, the LRP family) reads
the network as a sequence of operations in which each operation that depends on the input
is either

* a **ReLU** ``max(z, 0)`` -- its input ``z`` is a layer of neurons,
* a **max-pool** ``reduce_window_max`` -- only the winner of each window passes on,
* a **linear/affine** operation (dense, conv, bias add, reshape, average pooling, ...).

`slp._src.network.trace` builds the `Program`; `interpret` evaluates it under a set of
`Rules`, which decide what a ReLU, a max-pool and a linear operation do to the values
flowing through them. The plain forward pass (`ForwardRules`), the frozen-state (switched)
network (`FrozenRules`), the explicit matrix route, the receptive-field boxes, the cut and
the LRP rules are all such rule sets over this one interpreter. Each operation of a
program carries its primitive's declaration (`Eqn.decl`, from `slp._src.primitives`), so
a rule set reads its rule from there: nothing in this module or in the rule sets imports
the registry, which is built on top of them.

This module is the ground floor of ``slp._src``: it imports nothing else of slp but the
non-finite guards and the max-pool helpers (`slp._src.pooling`).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from slp._src import guards as _guards
from slp._src.pooling import pick_winners, pool_winners, select_winners

__all__ = [
    "Eqn",
    "Program",
    "Lit",
    "Refusal",
    "NOT_PIECEWISE_LINEAR",
    "NOT_IMPLEMENTED",
    "UnsupportedOperationError",
    "Rules",
    "WalkResult",
    "interpret",
    "constant_values",
    "constant_value",
    "count_interpretations",
    "walked",
    "operand_value",
    "NetworkState",
    "defined",
    "ForwardRules",
    "FrozenRules",
    "forward",
    "forward_and_vjp",
    "forward_walk",
    "CutTap",
    "frozen_network",
    "pool_winners",
    "select_winners",
]


class UnsupportedOperationError(ValueError):
    """The traced function applies an operation that slp does not follow.

    Attributes:
      primitive: name of the JAX primitive (e.g. ``"exp"``).
      nature: ``"not piecewise linear"`` (no switched linear projection exists) or
        ``"not implemented"`` (slp has no rule for it).
      label: the user-level function or module it came from (e.g. ``"softmax"``,
        ``"LayerNorm_0"``), or None.

    Examples:
      >>> W = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)))
      >>> f = lambda x: jax.nn.softmax(x @ W)  # probabilities rather than logits
      >>> try:
      ...     slp.insens(f)(jnp.ones(4))
      ... except slp.UnsupportedOperationError as err:
      ...     print(err.primitive, "|", err.nature, "|", err.label)
      exp | not piecewise linear | softmax
      >>> issubclass(slp.UnsupportedOperationError, ValueError)
      True
    """

    def __init__(self, message: str, *, primitive: str = "", nature: str = "", label=None):
        super().__init__(message)
        self.primitive = primitive
        self.nature = nature
        self.label = label


#: `Refusal.nature`: the operation is not piecewise linear (no switched projection exists).
NOT_PIECEWISE_LINEAR = "not piecewise linear"
#: `Refusal.nature`: the operation is (piecewise) linear, but slp has no rule for it.
NOT_IMPLEMENTED = "not implemented"


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A rule set, or slp as a whole, does not take a primitive.

    Attributes:
      reason: why, as a sentence about the operation.
      nature: `NOT_PIECEWISE_LINEAR` (the maths rules it out) or `NOT_IMPLEMENTED`
        (slp has no rule for it).
    """

    reason: str
    nature: str = NOT_IMPLEMENTED


@dataclasses.dataclass(frozen=True)
class Eqn:
    """One operation of a flattened program.

    Attributes:
      primitive: the JAX primitive.
      params: its parameters.
      inputs: operand ids (`int`) or literals (`Lit`).
      outputs: result ids.
      kind: ``"const"`` (no input dependence), ``"relu"``, ``"max_pool"`` or ``"linear"``;
        ``""`` until the operation is classified.
      dep: per operand, whether it depends on the network input (empty until classified).
      site: for ReLUs the ReLU-layer index, for max-pools the pool index, else -1.
      pool_source: for max-pools, the ReLU layer whose output is pooled (or -1).
      where: the names of the nested calls the operation sits in, for error messages.
      source: JAX's source infos (name stack, traceback) of the calls the operation
        sits in and of the operation itself, outermost first, for error messages
        (`slp._src.provenance`).
      decl: the primitive's declaration (`slp._src.primitives.Declaration`: its role and
        its rule in every rule set) for an input-dependent operation; None for constants.
    """

    primitive: Any
    params: dict
    inputs: tuple
    outputs: tuple[int, ...]
    kind: str = ""
    dep: tuple[bool, ...] = ()
    site: int = -1
    pool_source: int = -1
    where: tuple[str, ...] = ()
    source: tuple = dataclasses.field(default=(), compare=False, repr=False)
    decl: Any = dataclasses.field(default=None, compare=False, repr=False)

    def bind(self, *args, precision: Any = None):
        """Applies the primitive to ``args``; `precision` overrides matmul/conv precision."""
        params = self.params
        if precision is not None and "precision" in params:
            params = dict(params, precision=(precision, precision))
        return self.primitive.bind(*args, **params)

    def apply(self, *args, precision: Any = None) -> list:
        """`bind`, with the results always as a list (one value per id of ``outputs``)."""
        out = self.bind(*args, precision=precision)
        return list(out) if self.primitive.multiple_results else [out]

    def args(self, env: Mapping[int, Any]) -> list:
        """The operand values: a literal's own value, an operand id's value in ``env``."""
        return [operand_value(a, env) for a in self.inputs]


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
      pool_input_shapes: per max-pool, the shape of its operand.
      avals: per value id (the input, every constant and every operation's output), its
        shape and dtype as traced: the routes read shapes here rather than walking the
        program again.
      producers: per id of an operation's output, the operation's index into ``eqns``
        (recorded when traced, so that no route walks the program to find them).
      relu_eqns: the indices into ``eqns`` of the ReLUs, in forward order (ReLU layer
        ``l`` is ``eqns[relu_eqns[l]]``).
      ancestors: per operation, a bit set (an int, bit ``j`` for ``eqns[j]``) of itself and
        every operation whose output it reads, directly or through others (recorded when
        traced: `reads`).
      uses: per id, how many operand slots read it (the program's output counts as one).
      consumers: per id read by an operation, the index of the last operation reading it.
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
    avals: Mapping[int, Any] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    producers: Mapping[int, int] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )
    relu_eqns: tuple[int, ...] = ()
    ancestors: tuple[int, ...] = dataclasses.field(default=(), compare=False, repr=False)
    uses: Mapping[int, int] = dataclasses.field(default_factory=dict, compare=False, repr=False)
    consumers: Mapping[int, int] = dataclasses.field(
        default_factory=dict, compare=False, repr=False
    )

    def reads(self, ends) -> tuple[int, ...]:
        """The indices of the operations ``ends`` and of every operation they read from,
        directly or through others, in program order (from `ancestors`: no walk)."""
        mask = 0
        for i in ends:
            mask |= self.ancestors[i]
        bits = bin(mask)[:1:-1]  # bit j at position j
        return tuple(j for j, b in enumerate(bits) if b == "1")


def program_tables(eqns, known, aval: Callable, output) -> dict[str, Any]:
    """`Program`'s tables of values, from one loop over ``eqns`` (the trace's, when it
    builds the program): ``avals``, ``producers``, ``relu_eqns``, ``ancestors``, ``uses``
    and ``consumers`` (see `Program`).

    Args:
      eqns: the operations, in program order.
      known: the ids with a value before the first operation (the input, the constants).
      aval: id -> its shape and dtype.
      output: the program's output (an id or a `Lit`).
    """
    avals = {i: aval(i) for i in known}
    producers: dict[int, int] = {}
    uses: dict[int, int] = {}
    consumers: dict[int, int] = {}
    relu_eqns, ancestors = [], []
    for k, e in enumerate(eqns):
        ids = [a for a in e.inputs if isinstance(a, int)]
        ins = [ancestors[producers[a]] for a in ids if a in producers]
        ancestors.append(functools.reduce(int.__or__, ins, 1 << k))
        for a in ids:
            uses[a] = uses.get(a, 0) + 1
            consumers[a] = k
        for o in e.outputs:
            avals[o] = aval(o)
            producers[o] = k
        if e.kind == "relu":
            relu_eqns.append(k)
    if isinstance(output, int):
        uses[output] = uses.get(output, 0) + 1
    return dict(
        avals=avals,
        producers=producers,
        relu_eqns=tuple(relu_eqns),
        ancestors=tuple(ancestors),
        uses=uses,
        consumers=consumers,
    )


@dataclasses.dataclass(frozen=True)
class Lit:
    """A literal operand of an equation (a Python/NumPy scalar baked into the program).

    ``aval``: its JAX abstract value (shape, dtype), or None.
    """

    val: Any
    aval: Any = dataclasses.field(default=None, compare=False, repr=False)


def operand_value(a: int | Lit, env: Mapping[int, Any]) -> Any:
    """The value of an operand: a literal's own value, an id's value in ``env``."""
    return a.val if isinstance(a, Lit) else env[a]


class Rules:
    """What a walk does at each kind of operation. Subclass and override.

    Values of input-dependent variables are whatever the rules make them (arrays for
    a forward pass, (matrix, offset) pairs for the explicit route, ...); constants are
    always plain arrays.
    """

    #: matmul/conv precision used when re-binding linear operations.
    precision: Any = lax.Precision.HIGHEST
    #: what a walk with these rules is for (`count_interpretations`; None: the class name).
    walk: str | None = None

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
        return eqn.apply(*args, precision=self.precision)


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


#: The counters of the open `count_interpretations` blocks (none: counting is off).
_COUNTERS: list[collections.Counter] = []


@contextlib.contextmanager
def count_interpretations():
    """Counts the passes over a program's operations made inside the block, per kind.

    Every loop over ``program.eqns`` (or over the operations a route walks, in program
    order) is one pass, labelled by what it is for: ``"trace"`` (building the program),
    ``"shapes"``, ``"boxes"``, ``"needed"``, ``"geometry"``, ``"tangents"``, ... (`walked`);
    every `interpret` is one, labelled by its rule set (``"forward-vjp"``, ``"frozen"``,
    ``"pre-cut"``, ...). Lookups from one value back through the operations that make it
    (`constant_value`) are not passes. Passes are counted while tracing (under
    `jax.jit` a walk runs once per compilation), so counting costs nothing in compiled code;
    outside such a block it costs nothing at all. Blocks nest: each counts what runs in it.

    Yields:
      A `collections.Counter`, kind -> passes, filled as the block runs.

    Examples:
      >>> from slp._src import interpreter
      >>> f = lambda x: jnp.maximum(x @ jnp.ones((4, 3)), 0) @ jnp.ones((3, 2))
      >>> program = slp.network.trace(f, jnp.ones(4))
      >>> with interpreter.count_interpretations() as passes:
      ...     _ = interpreter.forward(program, jnp.ones(4))
      >>> dict(passes)
      {'forward': 1}
    """
    counter: collections.Counter = collections.Counter()
    _COUNTERS.append(counter)
    try:
        yield counter
    finally:
        _COUNTERS.pop(next(i for i, c in enumerate(_COUNTERS) if c is counter))


def walked(kind: str) -> None:
    """Records one pass over a program's operations, of ``kind``, in every open
    `count_interpretations` block (nothing when none is open)."""
    for counter in _COUNTERS:
        counter[kind] += 1


def interpret(program: Program, x, rules: Rules, *, kind: str | None = None) -> WalkResult:
    """Evaluates ``program`` on ``x`` with ``rules`` deciding the input-dependent steps.

    The one loop over a program's operations: constants are computed as they are, ReLUs and
    max-pools go to ``rules.relu`` / ``rules.max_pool``, every other input-dependent
    operation to ``rules.linear``.

    Args:
      program: the traced network.
      x: the value given to the network input (``rules.input`` maps it first).
      rules: the rule set.
      kind: what the pass is for, as `count_interpretations` counts it (None:
        ``rules.walk``).

    Returns:
      `WalkResult`: the output and the values that entered every ReLU and max-pool.
    """
    walked(kind or rules.walk or type(rules).__name__)
    env = dict(program.consts)
    env[program.input_id] = rules.input(x)
    relu_in: list = [None] * len(program.relu_shapes)
    pool_in: list = [None] * len(program.pool_shapes)

    for eqn in program.eqns:
        args = eqn.args(env)
        if eqn.kind == "const":
            outs = eqn.apply(*args)
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
    return WalkResult(operand_value(program.output_id, env), tuple(relu_in), tuple(pool_in))


def constant_values(program: Program, order, visit: Callable | None = None) -> dict[int, Any]:
    """The program's constants and the values of its input-independent operations among
    ``order`` (indices, in program order), by id.

    Args:
      program: the traced network.
      order: indices into ``program.eqns``, in program order.
      visit: ``visit(i, env)``, called at every input-dependent operation ``i`` among
        ``order`` with the values computed so far (those of every operation before it), so
        that data built from them (the cone route's convolution matrices) comes from the
        same pass; None: nothing.

    Returns:
      The values by id.
    """
    env = dict(program.consts)
    for i in order:
        eqn = program.eqns[i]
        if eqn.kind == "const":
            env.update(zip(eqn.outputs, eqn.apply(*eqn.args(env)), strict=True))
        elif visit is not None:
            visit(i, env)
    return env


def constant_value(program: Program, a: int | Lit) -> Any:
    """The value of a constant operand ``a`` of ``program`` (e.g. a dense layer's weights).

    Computed from the program's constants through the input-independent operations that make
    it, found back from ``a`` by `Program.producers`: a few lookups, no pass over the
    program (`count_interpretations` counts none).

    Raises:
      KeyError: if ``a`` depends on the network input.
    """
    if isinstance(a, Lit):
        return a.val
    needed, todo = set(), [a]
    while todo:  # the operations that compute ``a``, back to the program's constants
        i = program.producers.get(todo.pop())
        if i is not None and i not in needed:
            needed.add(i)
            todo += [u for u in program.eqns[i].inputs if isinstance(u, int)]
    return constant_values(program, sorted(needed))[a]


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


def defined(x: jax.Array, state: NetworkState) -> jax.Array:
    """Whether the state at ``x`` is defined: ``x``, every activity and the output finite.

    A NaN or inf anywhere (in ``x``, or from a non-finite weight) makes some activity
    NaN, which is neither active nor inactive; every map built on the state is then
    undefined. Returns a bool scalar.
    """
    return _guards.all_finite(x, state.activities, state.output)


class ForwardRules(Rules):
    """The ordinary forward pass; records each max-pool's winners.

    ``visit(eqn, args)``, if given, is called at every input-dependent linear operation with
    its operands, so that data built from the constants it reads (the cone route's) comes
    from this pass.
    """

    walk = "forward"

    def __init__(self, visit: Callable | None = None):
        self.winners: dict[int, jax.Array] = {}
        self.visit = visit

    def linear(self, eqn, args):
        if self.visit is not None:
            self.visit(eqn, args)
        return super().linear(eqn, args)

    def relu(self, eqn, z):
        return jnp.where(z > 0, z, jnp.zeros_like(z))

    def max_pool(self, eqn, z):
        # Winners are chosen on a value cut off from differentiation (the choice is
        # piecewise constant), so the forward pass can be differentiated: the
        # derivative of a pool routes to its winners.
        out, self.winners[eqn.site] = pick_winners(eqn, z)
        return out


def forward(program: Program, x: jax.Array) -> NetworkState:
    """Runs the network on ``x`` and returns its `NetworkState`."""
    rules = ForwardRules()
    res = interpret(program, x, rules)
    winners = tuple(rules.winners[i] for i in range(len(program.pool_shapes)))
    return NetworkState(res.relu_inputs, winners, res.output)


class CutTap(Rules):
    """The rules ``inner``, and at the cut (``cut``, an operation of the program) its operand
    recorded (``operand``) and ``tap`` added to its output: a tangent of ``tap`` enters the
    network there."""

    def __init__(self, inner: Rules, cut: Eqn, tap: jax.Array):
        self.inner, self.cut, self.tap = inner, cut, tap
        self.walk, self.precision = inner.walk, inner.precision
        self.operand = None

    def input(self, x):
        return self.inner.input(x)

    def relu(self, eqn, z):
        return self.inner.relu(eqn, z)

    def max_pool(self, eqn, z):
        return self.inner.max_pool(eqn, z)

    def linear(self, eqn, args):
        outs = self.inner.linear(eqn, args)
        if eqn is not self.cut:
            return outs
        self.operand = args[eqn.dep.index(True)]
        return [outs[0] + self.tap]


@jax.custom_jvp
def switched_relu(z: jax.Array) -> jax.Array:
    """``max(z, 0)`` as ``where(z > 0, z, 0)``, whose derivative multiplies a tangent by the
    mask ``z > 0`` in ``z``'s dtype: the switched network's ReLU (`FrozenRules`). The same
    numbers as the derivative of the ``where`` (a select), but in a loop over tangents (the
    structured routes' probes) XLA's CPU backend runs the product faster: 7-15% on a
    DenseNet-like network's probe route at batch 1."""
    return jnp.where(z > 0, z, jnp.zeros_like(z))


@switched_relu.defjvp
def _switched_relu_jvp(primals, tangents):
    (z,), (t,) = primals, tangents
    return jnp.where(z > 0, z, jnp.zeros_like(z)), t * (z > 0).astype(t.dtype)


class _SwitchedForwardRules(ForwardRules):
    """`ForwardRules` with the ReLU's derivative the switched network's (`switched_relu`)."""

    def relu(self, eqn, z):
        return switched_relu(z)


def forward_walk(
    program: Program,
    *,
    visit: Callable | None = None,
    state: NetworkState | None = None,
    cut: int | None = None,
) -> Callable:
    """``(x', *tap) -> (relu_inputs, (output, winners))``, the walk that a transform
    (`jax.vjp`, `jax.linearize`) differentiates.

    By the forward rules (`ForwardRules`, with ``visit``; the ReLU's derivative the
    switched network's product with the mask, `switched_relu`) or, given the ``state``, the
    switched network's (`FrozenRules`; output and winners then the state's). With ``cut``
    (an index into ``program.eqns``), a ``tap`` is added to the cut's output and the cut's
    operand follows the ReLU inputs (`CutTap`)."""
    cut_eqn = None if cut is None else program.eqns[cut]

    def run(xp, *tap):
        inner = _SwitchedForwardRules(visit) if state is None else FrozenRules(state)
        rules = inner if cut_eqn is None else CutTap(inner, cut_eqn, tap[0])
        res = interpret(program, xp, rules, kind="forward-vjp" if state is None else "frozen")
        if state is None:
            aux = (res.output, tuple(inner.winners[i] for i in range(len(program.pool_shapes))))
        else:
            aux = (state.output, state.winners)
        return res.relu_inputs + (() if cut_eqn is None else (rules.operand,)), aux

    return run


def forward_and_vjp(
    program: Program, x: jax.Array, visit: Callable | None = None
) -> tuple[NetworkState, Callable]:
    """The state at ``x`` and the VJP of the switched network's ReLU inputs, in one pass.

    The forward rules have the switched network's derivative at ``x``: a ReLU
    ``where(z > 0, z, 0)`` passes a cotangent where its neuron is on (the state's mask), and
    a max-pool picks its winners on a value cut off from differentiation. So one pass gives
    both what `forward` and the VJP of `frozen_network` would.

    Args:
      program: the traced network.
      x: its input.
      visit: ``visit(eqn, args)`` at every input-dependent linear operation (`ForwardRules`);
        None: nothing.

    Returns:
      ``(state, vjp)``: the `NetworkState`, and ``vjp(cotangents) -> (x_cotangent,)`` with
      one cotangent per ReLU layer (its shape).
    """

    activities, vjp, (output, winners) = jax.vjp(
        forward_walk(program, visit=visit), x, has_aux=True
    )
    return NetworkState(activities, winners, output), vjp


class FrozenRules(Rules):
    """The switched network: ReLUs multiply by the frozen pattern, pools take the frozen winners.

    With these rules the walk is an affine function of its input whose value at the
    state's own input equals the network's (Theorem 1).
    """

    walk = "frozen"

    def __init__(self, state: NetworkState):
        self.masks = tuple((v > 0).astype(v.dtype) for v in state.activities)
        self.winners = state.winners

    def relu(self, eqn, z):
        return z * self.masks[eqn.site].astype(z.dtype)

    def max_pool(self, eqn, z):
        return select_winners(eqn, z, self.winners[eqn.site])


def frozen_network(program: Program, state: NetworkState) -> Callable[[jax.Array], WalkResult]:
    """The switched network: ``x' -> interpret(program, x', FrozenRules(state))``."""
    rules = FrozenRules(state)
    return lambda xp: interpret(program, xp, rules)

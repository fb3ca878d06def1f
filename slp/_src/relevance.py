"""The machinery of the LRP rules: the dense/conv layers of a program and the walk whose
layers carry a rule's vector-Jacobian product (the public methods are in
`slp.attributions.relevance`, whose docstring states the conventions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from slp._src import interpreter as interp

__all__ = [
    "Part",
    "WEIGHT",
    "ADD",
    "REARRANGE",
    "TRANSPOSE",
    "SWITCH",
    "AffineLayer",
    "affine_layers",
    "Epsilon",
    "AlphaBeta",
    "ZBox",
    "LrpRules",
    "FromInput",
    "Pending",
    "divide",
]


class Part(NamedTuple):
    """An operation's part in the LRP rules: the ``relevance`` entry of its declaration in
    `slp._src.primitives`.

    Attributes:
      name: for messages.
      weight: a dense/conv layer (``dot_general``, ``conv_general_dilated``) that carries a
        rule.
      bias: may add a layer's bias (an ``add`` with a constant).
      rearranges: only moves, drops or relabels elements: between a layer and its bias add
        it is part of the layer's linear map.
    """

    name: str
    weight: bool = False
    bias: bool = False
    rearranges: bool = False


#: A dense or convolution layer: the walk gives it the rule's vector-Jacobian product.
WEIGHT = Part("weight", weight=True)
#: A sum that may add a layer's bias.
ADD = Part("add", bias=True)
#: Moves elements only (reshape, transpose, slice, cast).
REARRANGE = Part("rearrange", rearranges=True)
#: Any other linear operation: relevance flows back through its own transpose.
TRANSPOSE = Part("transpose")
#: A ReLU or max-pool: the walk's own switches (relevance passes to active neurons, winners).
SWITCH = Part("switch")


def _part(eqn) -> Part:
    """The part of an input-dependent operation (`Part`)."""
    return eqn.decl.relevance


# --- finding the dense/conv layers of a program ---------------------------------------------


class AffineLayer(NamedTuple):
    """One dense/conv layer of a `slp._src.network.Program`: ``z = chain(lin(a, W)) + b``.

    Attributes:
      weight_eqn: index into ``program.eqns`` of the ``dot_general``/``conv_general_dilated``.
      operand: position (0 or 1) of its input-dependent operand ``a``; the other is ``W``.
      chain: indices of the rearranging operations (reshape, squeeze, transpose, ...)
        between it and its bias add, e.g. the ``[0]`` of ``conv(x[None])[0] + b``.
      bias_eqn: index of the add with a constant ``b`` that follows, or -1 (no bias).
      bias_operand: position of ``b`` in that add (-1 when there is none).
      nonnegative_input: ``a`` is a ReLU output (possibly max-pooled and rearranged),
        so ``a >= 0`` for every input; rules may skip the terms of negative inputs.
    """

    weight_eqn: int
    operand: int
    chain: tuple[int, ...]
    bias_eqn: int
    bias_operand: int
    nonnegative_input: bool = False


def affine_layers(program: interp.Program) -> tuple[AffineLayer, ...]:
    """The dense/conv layers of ``program`` in forward order, each with its bias add.

    A layer is a ``dot_general`` or ``conv_general_dilated`` with exactly one
    input-dependent operand. Its bias is the constant of an ``add`` reached from the
    layer's output through operations that only rearrange elements, each the only
    consumer of the previous value; an output used anywhere else has no bias here (a
    later addition is then an ordinary linear operation).

    Args:
      program: a traced network.

    Returns:
      Tuple of `AffineLayer`, one per layer, in forward order.
    """
    uses, consumer, producer = program.uses, program.consumers, program.producers
    layers = []
    interp.walked("affine-layers")
    for i, e in enumerate(program.eqns):
        if e.kind != "linear" or not _part(e).weight or sum(e.dep) != 1:
            continue
        out, chain = e.outputs[0], []
        bias_eqn, bias_operand = -1, -1
        while uses.get(out, 0) == 1 and out in consumer:
            j = consumer[out]
            c = program.eqns[j]
            if c.kind != "linear" or sum(c.dep) != 1:
                break
            if _part(c).bias:
                bias_eqn, bias_operand = j, c.dep.index(False)
                break
            if not _part(c).rearranges or len(c.outputs) != 1:
                break
            chain.append(j)
            out = c.outputs[0]
        if bias_eqn < 0:
            chain = []
        op = e.dep.index(True)
        nonneg = _nonnegative(program, producer, e.inputs[op])
        layers.append(AffineLayer(i, op, tuple(chain), bias_eqn, bias_operand, nonneg))
    return tuple(layers)


def _nonnegative(program: interp.Program, producer: dict[int, int], var) -> bool:
    """Whether ``var`` is a ReLU output, possibly max-pooled and rearranged."""
    while isinstance(var, int) and var in producer:
        e = program.eqns[producer[var]]
        if e.kind == "relu":
            return True
        if e.kind == "max_pool" or (e.kind == "linear" and _part(e).rearranges and sum(e.dep) == 1):
            var = e.inputs[e.dep.index(True)]
            continue
        return False
    return False


# --- the rules ---------------------------------------------------------------------------------


def _stabilize(z: jax.Array, eps: float) -> jax.Array:
    """``z + eps * sign(z)`` with sign(0) = +1 (iNNvestigate's and Zennit's convention)."""
    return z + jnp.where(z >= 0, eps, -eps).astype(z.dtype)


def divide(r: jax.Array, d: jax.Array) -> jax.Array:
    """``r / d``, 0 where ``d == 0`` (no relevance can flow through a zero denominator)."""
    nz = d != 0
    return jnp.where(nz, r / jnp.where(nz, d, 1), 0)


def _transpose(lin: Callable, a: jax.Array, w: jax.Array, c: jax.Array) -> jax.Array:
    """``W^T c``: the transpose of ``t -> lin(t, w)`` applied to ``c``."""
    return jax.vjp(lambda t: lin(t, w), a)[1](c)[0]


def _pos(v):
    return jnp.maximum(v, 0)


def _neg(v):
    return jnp.minimum(v, 0)


@dataclasses.dataclass(frozen=True)
class Epsilon:
    """LRP-epsilon: ``R_j = sum_k a_j w_jk / (z_k + eps sign z_k) R_k``, bias in ``z_k``.

    With ``epsilon = 0`` this is LRP-0 (zero denominators pass no relevance).

    Attributes:
      epsilon: the stabiliser added to every layer output with its sign (sign(0) = +1).
    """

    epsilon: float = 1e-7
    needs_bounds = False

    def backward(self, lin, inputs, w, b, z, s, *, nonnegative=False):
        (a,) = inputs
        c = divide(z * s, _stabilize(z, self.epsilon))
        return (_transpose(lin, a, w, c),)


@dataclasses.dataclass(frozen=True)
class AlphaBeta:
    """LRP-alpha-beta: positive and negative contributions redistributed separately.

    ``R_j = sum_k (alpha (a_j w_jk)^+ / z_k^+ - beta (a_j w_jk)^- / z_k^-) R_k`` with
    ``z_k^+ = sum_j (a_j w_jk)^+`` and ``z_k^- = sum_j (a_j w_jk)^-`` plus, by ``bias``:

    * ``"split"``: ``b_k^+`` in ``z_k^+`` and ``b_k^-`` in ``z_k^-`` (Montavon et al. 2019,
      Zennit's ``AlphaBeta``/``ZPlus``);
    * ``"none"``: no bias (the z+ rule when ``alpha=1, beta=0``);
    * ``"full"``: the whole ``b_k`` in both denominators (what iNNvestigate 1.0.x's
      ``AlphaBetaRule(bias=True)`` computes: its positive and negative layer copies keep
      ``b^+`` and ``b^-`` and their outputs are added).

    Attributes:
      alpha, beta: weights of the positive and negative parts.
      bias: ``"split"``, ``"none"`` or ``"full"``.
      stabilizer: added to each denominator with its sign (Zennit's default 1e-6); 0 means
        a zero denominator passes no relevance.
    """

    alpha: float = 1.0
    beta: float = 0.0
    bias: str = "split"
    stabilizer: float = 1e-6
    needs_bounds = False

    def __post_init__(self):
        if self.bias not in ("split", "none", "full"):
            raise ValueError(f"AlphaBeta bias must be 'split', 'none' or 'full'; got {self.bias!r}")
        if self.alpha < 0 or self.beta < 0:
            raise ValueError(
                f"alpha and beta must be >= 0; got alpha={self.alpha}, beta={self.beta}"
            )

    def _biases(self, b):
        if self.bias == "split":
            return _pos(b), _neg(b)
        if self.bias == "full":
            return b, b
        return jnp.zeros_like(b), jnp.zeros_like(b)

    def backward(self, lin, inputs, w, b, z, s, *, nonnegative=False):
        (a,) = inputs
        r = z * s
        wp, wn = _pos(w), _neg(w)
        ap, an = _pos(a), _neg(a)
        on, off = a > 0, a < 0
        bp, bn = self._biases(b)

        if nonnegative:
            # Inputs known to be >= 0 (ReLU outputs) have no negative part: (a w)^+ is
            # a w^+ and (a w)^- is a w^-; half the work, the same values.
            zp = lin(a, wp)
            out = self.alpha * self._pass(lin, a, wp, on, r, zp + bp)
            if self.beta != 0:
                zn = (z - b) - zp  # = lin(a, wn), one convolution fewer
                out = out - self.beta * self._pass(lin, a, wn, on, r, zn + bn)
            return (out,)

        def part(w_on_pos, w_on_neg, bias):
            # (a w)^+ pairs positive inputs with positive weights and negative with negative;
            # (a w)^- pairs them the other way round.
            denom = lin(ap, w_on_pos) + lin(an, w_on_neg) + bias
            c = divide(r, _stabilize(denom, self.stabilizer))
            return jnp.where(on, _transpose(lin, a, w_on_pos, c), 0) + jnp.where(
                off, _transpose(lin, a, w_on_neg, c), 0
            )

        out = self.alpha * part(wp, wn, bp)
        if self.beta != 0:
            out = out - self.beta * part(wn, wp, bn)
        return (out,)

    def _pass(self, lin, a, w, mask, r, denom):
        c = divide(r, _stabilize(denom, self.stabilizer))
        return jnp.where(mask, _transpose(lin, a, w, c), 0)


@dataclasses.dataclass(frozen=True)
class ZBox:
    """The zB rule of Deep Taylor decomposition for inputs bounded by ``low <= x <= high``.

    ``R_i = sum_k (x_i w_ik - l_i w_ik^+ - h_i w_ik^-) / z_k^B R_k`` with
    ``z_k^B = sum_i (x_i w_ik - l_i w_ik^+ - h_i w_ik^-)`` (bias not involved). The bounds
    travel through the linear operations before the layer with the input (e.g. a
    normalisation ``(x - m) / s`` inside the network maps them too).

    Attributes:
      low, high: the bounds, scalars or arrays broadcastable to the input's shape.
      stabilizer: added to ``z^B`` with its sign (Zennit's default 1e-6).
    """

    low: Any = 0.0
    high: Any = 1.0
    stabilizer: float = 1e-6
    needs_bounds = True

    def backward(self, lin, inputs, w, b, z, s, *, nonnegative=False):
        x, low, high = inputs
        wp, wn = _pos(w), _neg(w)
        zb = lin(x, w) - lin(low, wp) - lin(high, wn)
        c = divide(z * s, _stabilize(zb, self.stabilizer))
        return (_transpose(lin, x, w, c), -_transpose(lin, x, wp, c), -_transpose(lin, x, wn, c))


# --- the walk ----------------------------------------------------------------------------------


class FromInput(NamedTuple):
    """Values that are the input and its bounds mapped by linear operations only."""

    values: tuple


class Pending(NamedTuple):
    """A layer's ``(a, W)`` waiting for its bias add, with the rearrangements met so far."""

    layer: int
    a: Any
    w: jax.Array
    chain: tuple = ()


def _layer_fn(rule, lin: Callable, n_inputs: int, nonnegative: bool) -> Callable:
    """``(*inputs, w, b) -> lin(inputs[0], w) + b`` whose VJP is ``rule.backward``."""

    @jax.custom_vjp
    def layer(*args):
        return lin(args[0], args[n_inputs]) + args[n_inputs + 1]

    def fwd(*args):
        z = lin(args[0], args[n_inputs]) + args[n_inputs + 1]
        return z, (args, z)

    def bwd(res, s):
        args, z = res
        inputs, w, b = args[:n_inputs], args[n_inputs], args[n_inputs + 1]
        grads = rule.backward(lin, inputs, w, b, z, s, nonnegative=nonnegative)
        return (*grads, None, None)

    layer.defvjp(fwd, bwd)
    return layer


class LrpRules(interp.ForwardRules):
    """Forward pass whose dense/conv layers backpropagate by LRP rules.

    Args:
      program: the traced network.
      layers: its `affine_layers`.
      rule: the rule of every layer.
      first_rule: the rule of the layers fed by the input through linear operations only
        (None: ``rule``). If it `needs_bounds`, the walk's input is ``(x, low, high)``.
    """

    walk = "lrp"

    def __init__(self, program: interp.Program, layers, rule, first_rule=None):
        super().__init__()
        self.program = program
        self.layers = layers
        self.rule = rule
        self.first_rule = first_rule
        self.by_weight = {program.eqns[l.weight_eqn].outputs[0]: k for k, l in enumerate(layers)}
        self.by_bias = {
            program.eqns[l.bias_eqn].outputs[0]: k for k, l in enumerate(layers) if l.bias_eqn >= 0
        }
        self.in_chain = {program.eqns[j].outputs[0] for l in layers for j in l.chain}

    def input(self, x):
        return FromInput(tuple(x)) if self.first_rule is not None else x

    def _plain(self, eqn, z):
        if isinstance(z, FromInput):
            raise ValueError(
                f"the first-layer rule needs a dense/conv layer before any ReLU or max-pool, but "
                f"the network applies '{eqn.primitive.name}' to its input first"
            )
        return z

    def relu(self, eqn, z):
        return super().relu(eqn, self._plain(eqn, z))

    def max_pool(self, eqn, z):
        return super().max_pool(eqn, self._plain(eqn, z))

    def linear(self, eqn, args):
        key = eqn.outputs[0]
        if key in self.by_weight:
            k = self.by_weight[key]
            op = self.layers[k].operand
            if self.layers[k].bias_eqn >= 0:
                return [Pending(k, args[op], args[1 - op])]
            return [self._layer(k, args[op], args[1 - op], None)]
        if key in self.in_chain:
            pending = args[eqn.dep.index(True)]
            return [pending._replace(chain=pending.chain + ((eqn, args),))]
        if key in self.by_bias:
            k = self.by_bias[key]
            bop = self.layers[k].bias_operand
            pending = args[1 - bop]
            return [self._layer(k, pending.a, pending.w, args[bop], pending.chain)]
        if any(isinstance(a, FromInput) for a in args):
            # Linear operations on the input map its bounds alongside it.
            n = next(len(a.values) for a in args if isinstance(a, FromInput))
            per = [
                super(LrpRules, self).linear(
                    eqn, [a.values[i] if isinstance(a, FromInput) else a for a in args]
                )
                for i in range(n)
            ]
            return [FromInput(tuple(vals)) for vals in zip(*per, strict=True)]
        return super().linear(eqn, args)

    def _layer(self, k: int, a, w, b, chain=()):
        eqn = self.program.eqns[self.layers[k].weight_eqn]
        op = self.layers[k].operand
        precision = self.precision

        def lin(t, w_):
            ops = (t, w_) if op == 0 else (w_, t)
            v = eqn.bind(*ops, precision=precision)
            for e, e_args in chain:
                pos = e.dep.index(True)
                v = e.bind(*e_args[:pos], v, *e_args[pos + 1 :])
            return v

        if isinstance(a, FromInput):
            rule, inputs = self.first_rule, a.values
        else:
            rule, inputs = self.rule, (a,)
        if rule.needs_bounds and len(inputs) != 3:
            raise ValueError(f"{type(rule).__name__} applies only to the first layer (first_rule)")
        # The bias in the dtype of the layer's output, which the network adds it to (a
        # bfloat16 layer with float32 sums, or a cast in the chain, differs from its input's).
        dtype = jax.eval_shape(lin, inputs[0], w).dtype
        b = jnp.zeros((), dtype) if b is None else jnp.asarray(b, dtype)
        nonneg = self.layers[k].nonnegative_input
        return _layer_fn(rule, lin, len(inputs), nonneg)(*inputs, w, b)

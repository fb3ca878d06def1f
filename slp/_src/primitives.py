"""The primitive registry: every JAX primitive that slp follows through a network, declared once.

A declaration says, for one primitive (keyed by the primitive object, never its name):

* ``role``: what the walker makes of it when it is applied to an input-dependent value:
  ``"linear"`` (affine in its input-dependent operands), ``"relu"`` or ``"max_pool"``;
* ``input_operands``: which operands may depend on the network input (the others --
  weights, indices, predicates, divisors -- must be constants, else the operation is not
  linear); ``check`` adds any further condition (e.g. a ``mul`` of two input-dependent
  values is not linear);
* what it does under every rule set of the library, each a callable defined beside the
  other rules of its set (or a `Refusal`):

  - ``matrices``: the explicit-matrix route of `slp.explicit_projections`
    (`slp._src.matrices`): ``COLUMNS`` (the primitive's own linear map applied to every
    column of the switched map) or a rule of its own (``DOT``, ``CONV``).
  - ``boxes``: the receptive-field box rule of the probe route (`slp._src.boxes`).
  - ``cone``: the cone route's rule (`slp._src.cone`).
  - ``cost``: the planner's FLOPs per tangent column (`slp._src.flops.Cost`: ``ELEMENTS``,
    ``DOT``, ``CONV``), which also says whether the cone route builds a matrix for it and
    whether it may be the cut.
  - ``relevance``: the primitive's part in the LRP rules (`slp._src.relevance.Part`):
    ``WEIGHT`` (a dense/conv layer that carries a rule), ``ADD`` (may add a bias),
    ``REARRANGE`` (only moves elements; part of a layer's linear map) or ``TRANSPOSE``
    (relevance flows back through its own transpose).

  The ordinary forward pass and the switched (frozen) network need no entry: a linear
  primitive is re-bound as it is, and ReLUs and max-pools are the interpreter's own
  switches (`slp._src.interpreter.Rules.relu` / ``max_pool``).

The tracer attaches each operation's declaration to it (`slp._src.interpreter.Eqn.decl`):
a rule set reads its rule from there and never asks which primitive it was given.

A rule set that does not take a primitive holds a `Refusal` naming why; the route or
method then falls back to a general path (boxes: the whole input; cone: another route)
or, where there is none, raises an error that names the operation. Adding a primitive is
one `declare` call in this file (and its rules beside the others of their sets);
`tests/library/test_primitives.py` walks the registry and fails for any declaration that
leaves a rule set empty.

Primitives that slp does not follow are declared too, with `refuse`: each `Refusal` says
whether the operation is **not piecewise linear** (a property of the maths: ``exp``,
``tanh``, a product of two input-dependent values; no switched linear projection
describes it) or **not implemented** (a property of slp: ``sort``, ``min``, a ``while``
loop, complex values), so that the error a user sees tells the two apart
(`Refusal.nature`). A primitive declared nowhere is "not implemented" (`why_not`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import jax.numpy as jnp
from jax import lax
from jax._src.ad_util import add_jaxvals_p as add_any_p  # the sum of cotangents ("add_any")

from slp._src import boxes as _boxes
from slp._src import cone as _cone
from slp._src import flops as _flops
from slp._src import matrices as _matrices
from slp._src import relevance as _relevance
from slp._src.interpreter import NOT_IMPLEMENTED, NOT_PIECEWISE_LINEAR, Refusal

__all__ = [
    "Refusal",
    "Declaration",
    "REGISTRY",
    "REFUSED",
    "RULE_SETS",
    "NOT_PIECEWISE_LINEAR",
    "NOT_IMPLEMENTED",
    "declare",
    "refuse",
    "lookup",
    "why_not",
]

#: The rule sets every declaration fills (with a rule or a `Refusal`).
RULE_SETS = ("matrices", "boxes", "cone", "relevance", "cost")


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What slp knows about one primitive (module docstring).

    Attributes:
      primitive: the JAX primitive object.
      role: ``"linear"``, ``"relu"`` or ``"max_pool"``.
      input_operands: ``n -> positions`` of the operands (out of ``n``) that may depend on
        the network input; None: all of them.
      operands_refusal: the `Refusal` of an input-dependent operand outside
        ``input_operands`` (a weight: not piecewise linear; an index: not implemented);
        ``{i}`` in its reason is the operand's position.
      check: ``(params, dep, out_dtypes) -> Refusal or None``: a further condition for
        the operation to be linear (None: no condition).
      matrices, boxes, cone, relevance, cost: the primitive's rule in each rule set
        (`RULE_SETS`), a callable (relevance: a `slp._src.relevance.Part`; cost: a
        `slp._src.flops.Cost`), or a `Refusal`.
    """

    primitive: Any
    role: str
    input_operands: Callable[[int], Iterable[int]] | None
    operands_refusal: Refusal
    check: Callable | None
    matrices: Any
    boxes: Any
    cone: Any
    relevance: Any
    cost: Any

    def refusal(self, n_operands: int, dep, params, out_dtypes) -> Refusal | None:
        """Why slp does not take the primitive with operands ``dep`` (input-dependent
        flags), or None."""
        if self.input_operands is not None:
            allowed = set(self.input_operands(n_operands))
            bad = [i for i, d in enumerate(dep) if d and i not in allowed]
            if bad:
                r = self.operands_refusal
                return Refusal(r.reason.format(i=bad[0]), r.nature)
        if self.check is not None:
            return self.check(params, dep, out_dtypes)
        return None


REGISTRY: dict[Any, Declaration] = {}
#: Primitives slp does not follow when they are applied to an input-dependent value.
REFUSED: dict[Any, Refusal] = {}


def declare(
    primitive,
    *,
    boxes,
    cone,
    relevance=_relevance.TRANSPOSE,
    role="linear",
    input_operands=None,
    operands_refusal: Refusal | None = None,
    check=None,
    matrices=_matrices.COLUMNS,
    cost=_flops.ELEMENTS,
) -> Declaration:
    """Adds one primitive to `REGISTRY` (see `Declaration`)."""
    if primitive is None:  # not in this JAX version
        return None
    switch = role in ("relu", "max_pool")
    decl = Declaration(
        primitive=primitive,
        role=role,
        input_operands=input_operands,
        operands_refusal=operands_refusal
        or Refusal(
            f"'{primitive.name}' with an input-dependent operand {{i}} (a weight) is not "
            "piecewise linear",
            NOT_PIECEWISE_LINEAR,
        ),
        check=check,
        matrices=_SWITCH if switch else matrices,
        boxes=boxes,
        cone=cone,
        relevance=relevance,
        cost=cost,
    )
    REGISTRY[primitive] = decl
    return decl


def refuse(primitives, *, nature: str, reason: str) -> None:
    """Declares that slp does not follow ``primitives`` (one or several) on input-dependent
    values; ``reason`` (may name the primitive as ``{name}``) and ``nature`` go into the
    error (`Refusal`)."""
    if nature not in (NOT_PIECEWISE_LINEAR, NOT_IMPLEMENTED):
        raise ValueError(f"unknown nature {nature!r}")
    for p in primitives if isinstance(primitives, (tuple, list)) else (primitives,):
        if p is not None:  # not in this JAX version
            REFUSED[p] = Refusal(reason.format(name=p.name), nature)


def lookup(primitive) -> Declaration | None:
    """The declaration of ``primitive``, or None."""
    return REGISTRY.get(primitive)


def why_not(primitive) -> Refusal:
    """Why slp does not follow ``primitive`` (declared with `refuse`, or not declared)."""
    found = REFUSED.get(primitive)
    if found is not None:
        return found
    return Refusal(f"slp has no rule for '{primitive.name}' (not implemented)", NOT_IMPLEMENTED)


def _operands(*positions: int) -> Callable[[int], Iterable[int]]:
    return lambda n: positions


def _first(n: int) -> Iterable[int]:
    return (0,)


def _not_both(what: str):
    def check(params, dep, out_dtypes):
        if all(dep):
            return Refusal(
                f"a {what} of two input-dependent values is not piecewise linear",
                NOT_PIECEWISE_LINEAR,
            )
        return None

    return check


def _not_implemented(what: str) -> Refusal:
    return Refusal(f"{what} is not implemented", NOT_IMPLEMENTED)


def _float_result(params, dep, out_dtypes):
    d = out_dtypes[0]
    if jnp.issubdtype(d, jnp.complexfloating):
        return Refusal(f"converting to {d}: complex values are not implemented", NOT_IMPLEMENTED)
    if not jnp.issubdtype(d, jnp.floating):
        return Refusal(
            f"converting an input-dependent value to {d} rounds it (a step function), which is "
            "not piecewise linear",
            NOT_PIECEWISE_LINEAR,
        )
    return None


# The explicit-matrix route meets ReLUs and max-pools in its own relu/max_pool hooks.
_SWITCH = Refusal("a switch: the rule set's relu or max_pool hook, not a linear rule")
_GENERIC = Refusal("no rule of its own: the route treats the value as depending on all inputs")
_NO_CONE = Refusal("not in the cone route's operations")

# The rules themselves live in the modules of their rule sets, beside each other; the table
# names them. Box rules (`slp._src.boxes`) are ``(rules, eqn, args, avals) -> boxes``; cone
# rules are `slp._src.cone.ConeRule` objects (a geometry part and a tangent part); matrix
# rules (`slp._src.matrices`) are ``(rules, eqn, args) -> [(M, c)]``.

# -- pass-through ---------------------------------------------------------------------
for _p in (
    lax.convert_element_type_p,
    lax.reduce_precision_p,
    getattr(lax, "copy_p", None),
):
    declare(
        _p,
        boxes=_boxes.SAME,
        cone=_cone.IDENTITY,
        relevance=_relevance.REARRANGE,
        check=_float_result if _p is lax.convert_element_type_p else None,
    )
declare(lax.sharding_constraint_p, boxes=_boxes.SAME, cone=_cone.IDENTITY)
declare(lax.optimization_barrier_p, boxes=_boxes.BARRIER, cone=_NO_CONE)
declare(lax.neg_p, boxes=_boxes.SAME, cone=_cone.NEG)

# -- moving elements ------------------------------------------------------------------
_DYNAMIC_SHAPE = _not_implemented("a shape that depends on the network input (operand {i})")
for _p in (lax.reshape_p, lax.squeeze_p, lax.broadcast_in_dim_p):
    declare(
        _p,
        boxes=_boxes.MOVING,
        cone=_cone.BROADCAST if _p is lax.broadcast_in_dim_p else _cone.SHAPE,
        relevance=_relevance.REARRANGE
        if _p is not lax.broadcast_in_dim_p
        else _relevance.TRANSPOSE,
        input_operands=_first,
        operands_refusal=_DYNAMIC_SHAPE,
    )
declare(lax.transpose_p, boxes=_boxes.MOVING, cone=_cone.TRANSPOSE, relevance=_relevance.REARRANGE)
declare(lax.slice_p, boxes=_boxes.MOVING, cone=_cone.SLICE, relevance=_relevance.REARRANGE)
declare(lax.rev_p, boxes=_boxes.MOVING, cone=_cone.REV, relevance=_relevance.REARRANGE)
declare(
    lax.dynamic_slice_p,
    boxes=_boxes.MOVING,
    cone=_NO_CONE,
    relevance=_relevance.REARRANGE,
    input_operands=_first,
    operands_refusal=_not_implemented("a dynamic slice at input-dependent indices (operand {i})"),
)
declare(
    lax.dynamic_update_slice_p,
    boxes=_boxes.MOVING,
    cone=_NO_CONE,
    input_operands=_operands(0, 1),
    operands_refusal=_not_implemented("an update at input-dependent indices (operand {i})"),
)
declare(lax.concatenate_p, boxes=_boxes.MOVING, cone=_cone.CONCATENATE)
# jnp.stack, jnp.split, jnp.tile, jnp.unstack (primitives of their own in newer JAX).
declare(getattr(lax, "stack_p", None), boxes=_boxes.MOVING, cone=_cone.STACK)
declare(getattr(lax, "unstack_p", None), boxes=_boxes.MOVING, cone=_NO_CONE)
declare(getattr(lax, "split_p", None), boxes=_boxes.MOVING, cone=_cone.SPLIT)
declare(getattr(lax, "tile_p", None), boxes=_boxes.MOVING, cone=_cone.TILE)
declare(
    lax.pad_p,
    boxes=_boxes.MOVING,
    cone=_cone.PAD,
    input_operands=_first,
    operands_refusal=_not_implemented("an input-dependent padding value"),
)
declare(
    lax.select_n_p,
    boxes=_boxes.MOVING,
    cone=_NO_CONE,
    input_operands=lambda n: range(1, n),
    operands_refusal=Refusal(
        "where/select with an input-dependent condition is piecewise linear only in some "
        "spellings, and slp takes it only as a ReLU (where(z > 0, z, 0)): not implemented",
        NOT_IMPLEMENTED,
    ),
)
_INDICES = _not_implemented("indexing with input-dependent indices (operand {i})")
declare(
    lax.gather_p,
    boxes=_boxes.MOVING,
    cone=_cone.GATHER,
    input_operands=_first,
    operands_refusal=_INDICES,
)
# x.at[idx].set / .add / .subtract with constant indices: linear in the operand and the
# updates. The box of an element is the union of the operand's and every update's that
# may land there (safe also with repeated indices).
for _p in (lax.scatter_p, lax.scatter_add_p, getattr(lax, "scatter_sub_p", None)):
    declare(
        _p,
        boxes=_boxes.SCATTER,
        cone=_NO_CONE,
        input_operands=_operands(0, 2),
        operands_refusal=_INDICES,
    )
declare(lax.cumsum_p, boxes=_boxes.CUMSUM, cone=_NO_CONE)

# -- sums -----------------------------------------------------------------------------
declare(lax.add_p, boxes=_boxes.ELEMENTWISE, cone=_cone.ADD, relevance=_relevance.ADD)
declare(add_any_p, boxes=_boxes.ELEMENTWISE, cone=_cone.ADD, relevance=_relevance.ADD)
declare(lax.sub_p, boxes=_boxes.ELEMENTWISE, cone=_cone.SUB)
declare(lax.reduce_sum_p, boxes=_boxes.REDUCE_SUM, cone=_cone.REDUCE_SUM)
declare(lax.reduce_window_sum_p, boxes=_boxes.WINDOW, cone=_cone.WINDOW_SUM)

# -- products with constants ----------------------------------------------------------
declare(lax.mul_p, boxes=_boxes.ELEMENTWISE, cone=_cone.SCALE, check=_not_both("product"))
declare(
    lax.div_p,
    boxes=_boxes.ELEMENTWISE,
    cone=_cone.DIVIDE,
    input_operands=_first,
    operands_refusal=Refusal(
        "a division by an input-dependent value is not piecewise linear", NOT_PIECEWISE_LINEAR
    ),
)
declare(
    lax.dot_general_p,
    boxes=_boxes.DOT,
    cone=_cone.CHANNEL_DOT,
    relevance=_relevance.WEIGHT,
    check=_not_both("product"),
    matrices=_matrices.DOT,
    cost=_flops.DOT,
)
declare(
    lax.conv_general_dilated_p,
    boxes=_boxes.CONV,
    cone=_cone.CONV,
    relevance=_relevance.WEIGHT,
    input_operands=_first,
    operands_refusal=Refusal(
        "a convolution with an input-dependent kernel (a product of two input-dependent "
        "values) is not piecewise linear",
        NOT_PIECEWISE_LINEAR,
    ),
    matrices=_matrices.CONV,
    cost=_flops.CONV,
)

# -- the switches ---------------------------------------------------------------------
declare(lax.max_p, role="relu", boxes=_boxes.SAME, cone=_cone.RELU, relevance=_relevance.SWITCH)
declare(
    lax.reduce_window_max_p,
    role="max_pool",
    boxes=_boxes.WINDOW,
    cone=_cone.MAX_POOL,
    relevance=_relevance.SWITCH,
    input_operands=_first,
    operands_refusal=_not_implemented("max pooling with an input-dependent initial value"),
)

# -- refused: not piecewise linear ----------------------------------------------------
_SMOOTH = "'{name}' is a smooth nonlinearity, not piecewise linear"
refuse(
    [
        getattr(lax, n + "_p", None)
        for n in (
            "exp", "exp2", "expm1", "log", "log1p", "tanh", "logistic", "sin", "cos", "tan",
            "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "atan2",
            "erf", "erfc", "erf_inv", "lgamma", "digamma", "igamma", "igammac",
            "igamma_grad_a", "polygamma", "zeta", "bessel_i0e", "bessel_i1e",
            "regularized_incomplete_beta", "cumlogsumexp",
        )
    ],
    nature=NOT_PIECEWISE_LINEAR,
    reason=_SMOOTH,
)  # fmt: skip
refuse(
    [lax.sqrt_p, lax.rsqrt_p, lax.cbrt_p, lax.pow_p, lax.integer_pow_p, lax.square_p],
    nature=NOT_PIECEWISE_LINEAR,
    reason="'{name}' is a power of its input, not piecewise linear",
)
refuse(
    [lax.reduce_prod_p, lax.cumprod_p],
    nature=NOT_PIECEWISE_LINEAR,
    reason="'{name}' multiplies input-dependent values together, which is not piecewise linear",
)
refuse(
    [
        getattr(lax, n + "_p", None)
        for n in (
            "sign", "floor", "ceil", "round", "rem", "is_finite", "argmax", "argmin",
            "eq", "ne", "lt", "le", "gt", "ge", "and", "or", "not", "xor", "nextafter",
        )
    ],
    nature=NOT_PIECEWISE_LINEAR,
    reason="'{name}' of an input-dependent value is a step function (it jumps), not piecewise "
    "linear",
)  # fmt: skip

# -- refused: (piecewise) linear, but not implemented -----------------------------------
refuse(
    [lax.min_p, lax.abs_p, lax.clamp_p],
    nature=NOT_IMPLEMENTED,
    reason="'{name}' is piecewise linear, but slp takes a maximum only as a ReLU max(z, 0): "
    "'{name}' is not implemented",
)
refuse(
    [
        lax.reduce_min_p,
        lax.reduce_max_p,
        getattr(lax, "reduce_window_min_p", None),
        lax.cummax_p,
        lax.cummin_p,
        lax.sort_p,
        lax.top_k_p,
        getattr(lax, "approx_top_k_p", None),
        lax.scatter_min_p,
        lax.scatter_max_p,
    ],
    nature=NOT_IMPLEMENTED,
    reason="'{name}' is piecewise linear (each output is one of its inputs, chosen by their "
    "order), but not implemented (only max pooling is)",
)
refuse(
    [lax.scatter_mul_p, lax.reduce_p, lax.reduce_window_p, getattr(lax, "reduce_and_p", None)],
    nature=NOT_IMPLEMENTED,
    reason="'{name}' is not implemented",
)
refuse(
    [lax.fft_p, lax.real_p, lax.imag_p, lax.complex_p, lax.conj_p],
    nature=NOT_IMPLEMENTED,
    reason="'{name}' is not implemented for complex values",
)
refuse(
    lax.while_p,
    nature=NOT_IMPLEMENTED,
    reason="a while loop (lax.while_loop, or lax.fori_loop with bounds that are not Python "
    "ints) is not implemented: its trip count is not known when slp traces the network. Write "
    "it as lax.scan or lax.fori_loop with Python-int bounds, which slp unrolls",
)
refuse(
    lax.cond_p,
    nature=NOT_IMPLEMENTED,
    reason="a branch chosen at run time (lax.cond, lax.switch) of an input-dependent value is "
    "not implemented",
)
refuse(
    getattr(lax, "stop_gradient_p", None),
    nature=NOT_IMPLEMENTED,
    reason="stop_gradient of an input-dependent value is not implemented: it hides the "
    "value's dependence on the input from the derivatives that slp's maps are made of",
)

"""The primitive registry: every JAX primitive that slp follows through a network, declared once.

A declaration says, for one primitive (keyed by the primitive object, never its name):

* ``role``: what the walker makes of it when it is applied to an input-dependent value:
  ``"linear"`` (affine in its input-dependent operands), ``"relu"`` or ``"max_pool"``;
* ``input_operands``: which operands may depend on the network input (the others --
  weights, indices, predicates, divisors -- must be constants, else the operation is not
  linear); ``check`` adds any further condition (e.g. a ``mul`` of two input-dependent
  values is not linear);
* what it does under every rule set of the library:

  - ``forward`` / ``frozen``: the ordinary forward pass and the switched (frozen) network.
    A linear primitive is re-bound as it is in both (``"bind"``); ReLUs and max-pools are
    the walker's own switches (``"switch"``: `slp.network.Rules.relu` / ``max_pool``).
  - ``matrices``: the explicit-matrix route of `slp.explicit_projections`: ``"columns"``
    (the primitive's own linear map applied to every column of the switched map) or a
    rule of its own.
  - ``boxes``: the receptive-field box rule of the probe route (`_slp.boxes`).
  - ``cone``: the cone route's rule (`_slp.cone`).
  - ``relevance``: the primitive's part in the LRP rules (`slp.attributions.relevance`):
    ``"weight"`` (a dense/conv layer that carries a rule), ``"add"`` (may add a bias),
    ``"rearrange"`` (only moves elements; part of a layer's linear map) or
    ``"transpose"`` (relevance flows back through its own transpose).

A rule set that does not take a primitive holds a `Refusal` naming why; the route or
method then falls back to a general path (boxes: the whole input; cone: another route)
or, where there is none, raises an error that names the operation. Adding a primitive is
one `declare` call in this file; `tests/test_primitives.py` walks the registry and fails
for any declaration that leaves a rule set empty.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import jax.numpy as jnp
from jax import lax
from jax._src.ad_util import add_jaxvals_p as add_any_p  # the sum of cotangents ("add_any")

from _slp import cone as _cone

__all__ = ["Refusal", "Declaration", "REGISTRY", "RULE_SETS", "declare", "lookup"]

#: The rule sets every declaration fills (with a rule or a `Refusal`).
RULE_SETS = ("forward", "frozen", "matrices", "boxes", "cone", "relevance")


@dataclasses.dataclass(frozen=True)
class Refusal:
    """A rule set that does not take a primitive; ``reason`` says why."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Declaration:
    """What slp knows about one primitive (module docstring).

    Attributes:
      primitive: the JAX primitive object.
      role: ``"linear"``, ``"relu"`` or ``"max_pool"``.
      input_operands: ``n -> positions`` of the operands (out of ``n``) that may depend on
        the network input; None: all of them.
      check: ``(params, dep, out_dtypes) -> reason or None``: a further condition for
        the operation to be linear (None: no condition).
      forward, frozen, matrices, boxes, cone, relevance: the primitive's rule in each rule
        set (`RULE_SETS`), or a `Refusal`.
    """

    primitive: Any
    role: str
    input_operands: Callable[[int], Iterable[int]] | None
    check: Callable | None
    forward: Any
    frozen: Any
    matrices: Any
    boxes: Any
    cone: Any
    relevance: Any

    def refusal(self, n_operands: int, dep, params, out_dtypes) -> str | None:
        """Why the primitive is not linear with operands ``dep`` (input-dependent flags)."""
        if self.input_operands is not None:
            allowed = set(self.input_operands(n_operands))
            bad = [i for i, d in enumerate(dep) if d and i not in allowed]
            if bad:
                return (
                    f"operand {bad[0]} depends on the network input, which makes the "
                    "operation non-linear"
                )
        if self.check is not None:
            return self.check(params, dep, out_dtypes)
        return None


REGISTRY: dict[Any, Declaration] = {}


def declare(
    primitive,
    *,
    boxes,
    cone,
    relevance="transpose",
    role="linear",
    input_operands=None,
    check=None,
    matrices="columns",
) -> Declaration:
    """Adds one primitive to `REGISTRY` (see `Declaration`)."""
    if primitive is None:  # not in this JAX version
        return None
    switch = role in ("relu", "max_pool")
    decl = Declaration(
        primitive=primitive,
        role=role,
        input_operands=input_operands,
        check=check,
        forward="switch" if switch else "bind",
        frozen="switch" if switch else "bind",
        matrices="switch" if switch else matrices,
        boxes=boxes,
        cone=cone,
        relevance=relevance,
    )
    REGISTRY[primitive] = decl
    return decl


def lookup(primitive) -> Declaration | None:
    """The declaration of ``primitive``, or None."""
    return REGISTRY.get(primitive)


def _operands(*positions: int) -> Callable[[int], Iterable[int]]:
    return lambda n: positions


def _first(n: int) -> Iterable[int]:
    return (0,)


def _not_both(what: str):
    def check(params, dep, out_dtypes):
        if all(dep):
            return f"a {what} of two input-dependent values is not linear"
        return None

    return check


def _float_result(params, dep, out_dtypes):
    if not all(jnp.issubdtype(d, jnp.floating) for d in out_dtypes):
        return f"converting an input-dependent value to {out_dtypes[0]} is not linear"
    return None


_GENERIC = Refusal("no rule of its own: the route treats the value as depending on all inputs")
_NO_CONE = Refusal("not in the cone route's operations")

# The rules themselves live in the modules of their rule sets; the registry names them.
# Box rules (`_slp.boxes`): "same" (box unchanged), "moving" (indices move, boxes follow),
# "elementwise", "reduce_sum", "cumsum", "window_sum", "dot", "conv", "barrier".
# Cone rules are `_slp.cone.ConeRule` objects (a geometry part and a tangent part).

# -- pass-through ---------------------------------------------------------------------
for _p in (
    lax.convert_element_type_p,
    lax.reduce_precision_p,
    getattr(lax, "copy_p", None),
):
    declare(
        _p,
        boxes="same",
        cone=_cone.IDENTITY,
        relevance="rearrange",
        check=_float_result if _p is lax.convert_element_type_p else None,
    )
declare(lax.sharding_constraint_p, boxes="same", cone=_cone.IDENTITY)
declare(lax.optimization_barrier_p, boxes="barrier", cone=_NO_CONE)
declare(lax.neg_p, boxes="same", cone=_cone.NEG)

# -- moving elements ------------------------------------------------------------------
for _p in (lax.reshape_p, lax.squeeze_p, lax.broadcast_in_dim_p):
    declare(
        _p,
        boxes="moving",
        cone=_cone.SHAPE,
        relevance="rearrange" if _p is not lax.broadcast_in_dim_p else "transpose",
        input_operands=_first,
    )
declare(lax.transpose_p, boxes="moving", cone=_cone.TRANSPOSE, relevance="rearrange")
declare(lax.slice_p, boxes="moving", cone=_cone.SLICE, relevance="rearrange")
declare(lax.rev_p, boxes="moving", cone=_NO_CONE, relevance="rearrange")
declare(
    lax.dynamic_slice_p,
    boxes="moving",
    cone=_NO_CONE,
    relevance="rearrange",
    input_operands=_first,
)
declare(
    lax.dynamic_update_slice_p,
    boxes="moving",
    cone=_NO_CONE,
    input_operands=_operands(0, 1),
)
declare(lax.concatenate_p, boxes="moving", cone=_cone.CONCATENATE)
declare(lax.pad_p, boxes="moving", cone=_NO_CONE, input_operands=_first)
declare(
    lax.select_n_p,
    boxes="moving",
    cone=_NO_CONE,
    input_operands=lambda n: range(1, n),
)
declare(lax.gather_p, boxes="moving", cone=_NO_CONE, input_operands=_first)
declare(lax.scatter_add_p, boxes=_GENERIC, cone=_NO_CONE, input_operands=_operands(0, 2))
declare(lax.cumsum_p, boxes="cumsum", cone=_NO_CONE)

# -- sums -----------------------------------------------------------------------------
declare(lax.add_p, boxes="elementwise", cone=_cone.ADD, relevance="add")
declare(add_any_p, boxes="elementwise", cone=_cone.ADD, relevance="add")
declare(lax.sub_p, boxes="elementwise", cone=_cone.ADD)
declare(lax.reduce_sum_p, boxes="reduce_sum", cone=_cone.REDUCE_SUM)
declare(lax.reduce_window_sum_p, boxes="window_sum", cone=_cone.WINDOW_SUM)

# -- products with constants ----------------------------------------------------------
declare(lax.mul_p, boxes="elementwise", cone=_cone.SCALE, check=_not_both("product"))
declare(lax.div_p, boxes="elementwise", cone=_cone.SCALE, input_operands=_first)
declare(
    lax.dot_general_p,
    boxes="dot",
    cone=_cone.CHANNEL_DOT,
    relevance="weight",
    check=_not_both("product"),
    matrices="dot",
)
declare(
    lax.conv_general_dilated_p,
    boxes="conv",
    cone=_cone.CONV,
    relevance="weight",
    input_operands=_first,
    matrices="conv",
)

# -- the switches ---------------------------------------------------------------------
declare(lax.max_p, role="relu", boxes="same", cone=_cone.RELU, relevance="switch")
declare(
    lax.reduce_window_max_p,
    role="max_pool",
    boxes="window_max",
    cone=_cone.MAX_POOL,
    relevance="switch",
    input_operands=_first,
)

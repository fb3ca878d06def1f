"""The planner's cost rules: FLOPs per tangent column of one operation, per primitive.

Each is a `Cost`, named in the primitive registry (`slp._src.primitives`, the ``cost``
field): the planner (`slp._src.planner`) sums them over the program to predict every
route's FLOPs, and reads ``matrix`` (the cone route builds an explicit matrix for it) and
``cut`` (it can be the dense layer where the structured routes hand over to explicit
Jacobian columns) from it rather than asking which primitive an operation is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

__all__ = ["Cost", "ELEMENTS", "DOT", "CONV"]


class Cost(NamedTuple):
    """The planner's rule for one primitive.

    Attributes:
      flops: ``(eqn, arg_shapes, out_shape) -> float``, FLOPs per tangent column
        (multiply-adds count 2).
      matrix: the operation carries weights that the cone route turns into a cone matrix
        (a convolution, a dense layer).
      cut: the operation may be the cut (a dense layer over most of the input).
    """

    flops: Callable
    matrix: bool = False
    cut: bool = False


def _elements(eqn, arg_shapes, out_shape) -> float:
    """One per output element (elementwise, moving, pooling, ...)."""
    return float(np.prod(out_shape))


def _dot(eqn, arg_shapes, out_shape) -> float:
    """Two per output element and contracted element of the input-dependent operand."""
    (lc, rc), _ = eqn.params["dimension_numbers"]
    ops = (lc, 0) if eqn.dep[0] else (rc, 1)
    return 2 * float(np.prod(out_shape)) * float(np.prod([arg_shapes[ops[1]][a] for a in ops[0]]))


def _conv(eqn, arg_shapes, out_shape) -> float:
    """Two per output element and kernel tap of one output feature."""
    kernel = arg_shapes[1]
    o_axis = eqn.params["dimension_numbers"].rhs_spec[0]
    return 2 * float(np.prod(out_shape)) * float(np.prod(kernel)) / kernel[o_axis]


ELEMENTS = Cost(_elements)
DOT = Cost(_dot, matrix=True, cut=True)
CONV = Cost(_conv, matrix=True)

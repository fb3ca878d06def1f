"""Matrix products of the Insens norms at a chosen precision (`slp.insens`'s ``precision``),
and the dtype their sums of squares accumulate in."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

# Matrix products of the Insens norms (the walker's own: `slp._src.network.Rules.precision`). The
# highest precision keeps GPUs from rounding operands to TF32, which would break exactness.
PRECISION = lax.Precision.HIGHEST

# Split-operand products (Ootomo & Yokota 2022; Henry et al. 2019): each float32 operand
# is split into pieces of a narrower type (a = a1 + a2 [+ a3]) and the product is the sum
# of the piece products that carry float32-level information, as ONE matrix product over
# a concatenated contraction axis on the tensor cores, accumulated in float32. Values:
# (piece type, number of pieces, piece pairs).
SPLIT_PRODUCTS = {
    "tf32x3": ("tf32", 2, ((0, 0), (0, 1), (1, 0))),
    "bf16x6": ("bf16", 3, ((0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0))),
    "bf16x9": ("bf16", 3, tuple(itertools.product(range(3), range(3)))),
}


def pieces(a: jax.Array, kind: str, n: int) -> list[jax.Array]:
    """``a`` (float32) as ``n`` pieces of decreasing magnitude whose sum is ``a``."""
    # Rounding by reduce_precision, not by a float32 -> bfloat16 -> float32 round trip,
    # which a compiler allowed excess precision may remove.
    out, rest = [], a
    for _ in range(n):
        piece = lax.reduce_precision(
            rest, exponent_bits=8, mantissa_bits=7 if kind == "bf16" else 10
        )
        rest = rest - piece
        out.append(piece.astype(jnp.bfloat16) if kind == "bf16" else piece)  # exact
    return out


class Pieces(NamedTuple):
    """A float32 right operand split once (`split`) for repeated split-operand products.

    Attributes:
      parts: the pieces, each shaped like the operand, largest first.
    """

    parts: tuple[jax.Array, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.parts[0].shape


def each(fn: Callable[[jax.Array], jax.Array], b: jax.Array | Pieces) -> jax.Array | Pieces:
    """``fn`` (a slice, a reshape) applied to ``b``, or to every piece of a split ``b``."""
    return Pieces(tuple(fn(p) for p in b.parts)) if isinstance(b, Pieces) else fn(b)


def split(b: jax.Array, precision) -> jax.Array | Pieces:
    """``b`` split once for `dot` at ``precision`` (outside a loop that reuses it); ``b``
    itself where ``precision`` is not a split product or ``b`` is not float32."""
    if not is_split(precision) or b.dtype != jnp.float32:
        return b
    kind, n, _ = SPLIT_PRODUCTS[precision]
    return Pieces(tuple(pieces(b, kind, n)))


def dot(a: jax.Array, b: jax.Array | Pieces, precision, preferred_element_type=None) -> jax.Array:
    """``a @ b`` for 2-D ``a, b`` at ``precision`` (anything `jnp.dot` takes, or a key of
    `SPLIT_PRODUCTS`; split products apply to float32 operands only). ``b`` may come
    split already (`split`). ``preferred_element_type``: the result type of the network's
    own product, if it asks for one (`widen`)."""
    if preferred_element_type is not None and not isinstance(b, Pieces):
        a, b = widen(a, b, preferred_element_type)
    if isinstance(b, Pieces):
        pb = b.parts
    elif is_split(precision) and a.dtype == b.dtype == jnp.float32:
        pb = split(b, precision).parts
    else:
        return jnp.dot(a, b, precision=PRECISION if is_split(precision) else precision)
    kind, n, pairs = SPLIT_PRODUCTS[precision]
    pa = pieces(a, kind, n)
    lhs = jnp.concatenate([pa[i] for i, _ in pairs], axis=1)
    rhs = jnp.concatenate([pb[j] for _, j in pairs], axis=0)
    # TF32 pieces are exact in TF32, so default precision (TF32 on GPUs) multiplies them
    # exactly; bfloat16 pieces go to a bfloat16 product with a float32 result.
    return jnp.dot(lhs, rhs, precision=lax.Precision.DEFAULT, preferred_element_type=a.dtype)


def widen(a: jax.Array, b: jax.Array, preferred_element_type) -> tuple[jax.Array, jax.Array]:
    """``a, b`` cast to the wider of their dtype and ``preferred_element_type``.

    A product that the network takes with a wider result type (bfloat16 operands, float32
    sums: ``preferred_element_type``) is taken here in that type: the products of the
    narrower numbers are exact in it, so the sums are the network's (XLA on CPU has no
    bfloat16 x bfloat16 = float32 batched product).
    """
    extra = () if preferred_element_type is None else (preferred_element_type,)
    dt = jnp.result_type(a.dtype, b.dtype, *extra)
    return a.astype(dt), b.astype(dt)


def accumulator(dtype) -> jnp.dtype:
    """The dtype that sums of squared derivatives (``|w_hat|^2``) accumulate in: ``dtype``,
    but at least float32.

    A float16 or bfloat16 network's derivatives are its own (computed in its dtype); their
    squares are not: a float16 square overflows above 256 and loses everything below
    2^-12, and a sum over thousands of inputs in bfloat16 keeps 8 bits. The squares of
    float16/bfloat16 numbers are exact in float32.
    """
    return jnp.promote_types(dtype, jnp.float32)


def square_sum(t: jax.Array, axis) -> jax.Array:
    """``sum(t * t, axis)`` accumulated in `accumulator` ``(t.dtype)``."""
    t = t.astype(accumulator(t.dtype))
    return jnp.sum(t * t, axis=axis)


def is_split(precision) -> bool:
    """Whether ``precision`` names a split-operand product (`SPLIT_PRODUCTS`)."""
    return isinstance(precision, str) and precision in SPLIT_PRODUCTS


def plain(precision):
    """``precision`` for a product that cannot take split operands (split kinds fall back
    to `PRECISION`, float32)."""
    return PRECISION if is_split(precision) else precision


def resolve(precision):
    """`slp.insens`'s ``precision`` checked: None gives `PRECISION`; unknown ones raise."""
    if precision is None:
        return PRECISION
    if is_split(precision):
        return precision
    try:  # the matmul precisions JAX knows (strings, lax.Precision, DotAlgorithmPreset)
        jax.eval_shape(
            lambda a: jnp.dot(a, a, precision=precision), jax.ShapeDtypeStruct((1, 1), jnp.float32)
        )
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"unknown precision {precision!r}: use None, one of {sorted(SPLIT_PRODUCTS)} "
            f"or a precision jax.numpy.dot accepts ({err})"
        ) from None
    return precision

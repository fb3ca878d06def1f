"""Guards against silently wrong maps: a batch where one example is expected, non-finite values.

Every slp transform explains one example. A function of a batch (``model.apply(p, xb)``
on ``xb`` of shape ``(B, ...)``) still traces, but Insens would then average over the
inactive neurons of the whole batch, each example's map about ``1/B`` of its own. The
check here runs when slp traces ``f``: if ``f``'s output keeps the input's leading size
as its own leading axis and row 0 of the output does not move when inputs ``1:`` change,
``f`` maps a batch, and slp says so instead of returning scaled maps.

Non-finite values: when ``x``, the input of any ReLU or the output of ``f`` holds a NaN or
an inf, the network's state (which neurons are active) is undefined, and so is every map
built on it. Every slp transform then returns NaN in every floating-point array, and
`slp.activation_pattern`, whose output is boolean, raises.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["per_example", "single_example", "check_one_example", "all_finite", "nan_unless"]

_MARK = "_slp_single_example"


def per_example(f_batch: Callable) -> Callable:
    """A per-example function from a function of a batch: ``x -> f_batch(x[None])[0]``.

    For models whose ``apply`` expects a leading batch axis (flax ``Dense`` after a
    ``reshape((x.shape[0], -1))``, most torch-style ports)::

        f = slp.per_example(lambda xb: model.apply(params, xb))
        maps = jax.vmap(slp.insens(f))(images)          # images: (B, ...)

    Args:
      f_batch: ``f_batch(xb) -> yb`` with a leading batch axis on both sides.

    Returns:
      ``f(x) -> y`` for one example, marked so that slp's batch check does not run on it.
    """

    @functools.wraps(f_batch)
    def f(x):
        return f_batch(jnp.expand_dims(x, 0))[0]

    setattr(f, _MARK, True)
    return f


def single_example(f: Callable) -> Callable:
    """``f`` itself, declared to map one example: slp's batch check is skipped for it.

    Use it for a per-example function whose output's leading axis has the input's
    leading size and whose output rows depend each on one input row only (a
    position-wise network on a sequence, say), which the check would take for a batch.
    """

    @functools.wraps(f)
    def g(x):
        return f(x)

    setattr(g, _MARK, True)
    return g


_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
)


def _maps_a_batch(f: Callable, x_aval) -> bool:
    """Whether ``f`` evaluates the rows of its input independently (a function of a batch).

    Two concrete evaluations at trace time: a random input, and the same input with rows
    ``1:`` replaced. Undecidable (False) when ``f`` closes over traced values.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal(x_aval.shape).astype(x_aval.dtype)
    b = a.copy()
    b[1:] = rng.standard_normal(b[1:].shape).astype(x_aval.dtype)
    try:
        with jax.ensure_compile_time_eval():
            ya, yb = np.asarray(f(jnp.asarray(a))), np.asarray(f(jnp.asarray(b)))
    except _TRACER_ERRORS:
        return False
    return bool(np.array_equal(ya[0], yb[0]) and not np.array_equal(ya[1:], yb[1:]))


def check_one_example(f: Callable, x_aval, out_aval) -> None:
    """Raises when ``f`` is a function of a batch (see the module docstring).

    Args:
      f: the function slp was given.
      x_aval, out_aval: shapes and dtypes of its input and output.

    Raises:
      ValueError: naming the batch size and what to write instead.
    """
    xs, ys = tuple(x_aval.shape), tuple(out_aval.shape)
    if getattr(f, _MARK, False) or len(xs) < 2 or len(ys) < 2 or ys[0] != xs[0] or xs[0] < 2:
        return
    if not _maps_a_batch(f, x_aval):
        return
    raise ValueError(
        f"f looks like a function of a batch: on an input of shape {xs} it returns {ys}, "
        f"and output row 0 depends on input row 0 only. slp explains one example at a time "
        f"(on a batch, Insens would average over the inactive neurons of all {xs[0]} "
        "examples, each map about 1/B of its own). Use f = slp.per_example(f_batch) and "
        "jax.vmap over the batch, or slp.insens(f_batch, batched=True) / "
        "slp.attribute(f_batch, xb, method, batched=True). If f does map one example whose "
        "rows are independent, pass slp.single_example(f)."
    )


def all_finite(*trees) -> jax.Array:
    """True (a bool scalar) when every floating-point leaf of ``trees`` is finite."""
    leaves = [
        jnp.all(jnp.isfinite(v))
        for t in trees
        for v in jax.tree_util.tree_leaves(t)
        if jnp.issubdtype(jnp.result_type(v), jnp.inexact)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def nan_unless(ok: jax.Array, tree):
    """``tree`` with every floating-point leaf replaced by NaN where ``ok`` is False."""

    def fill(v):
        if not jnp.issubdtype(jnp.result_type(v), jnp.inexact):
            return v
        return jnp.where(ok, v, jnp.asarray(jnp.nan, jnp.result_type(v)))

    return jax.tree_util.tree_map(fill, tree)


def _checked(ok):
    """``ok`` itself; raises FloatingPointError unless every entry is True."""
    ok = np.asarray(ok)
    if not np.all(ok):
        raise FloatingPointError(
            "the input, a ReLU input or the output of f is NaN or inf: which neurons are "
            "active is undefined, so there is no activation pattern"
        )
    return ok


def raise_unless(ok: jax.Array) -> jax.Array:
    """``ok``, after raising FloatingPointError where it is False (also under jit and vmap).

    Under a trace the check is a host callback that sees a whole batch at once; use the
    returned value (``pattern & ok``) so that it is not removed as dead code.
    """
    if not isinstance(ok, jax.core.Tracer):
        return jnp.asarray(_checked(ok))
    return jax.pure_callback(
        _checked, jax.ShapeDtypeStruct(jnp.shape(ok), jnp.bool_), ok, vmap_method="expand_dims"
    )

"""Guards against silently wrong maps: a batch where one example is expected, non-finite values.

Every slp transform explains one example. A function of a batch (``model.apply(p, xb)``
on ``xb`` of shape ``(B, ...)``) still traces, but Insens would then average over the
inactive neurons of the whole batch, each example's map about ``1/B`` of its own, and a
gradient would pick one example's output as if it were a class. The check here runs when
slp traces ``f`` (and once per call of `slp.attribute_dataset`). It refuses ``f`` when

- the input has at least two axes and a leading size ``B >= 2``, and the output's leading
  axis also has size ``B`` (logits ``(B, C)``, but also one number per example ``(B,)``,
  e.g. ``lambda xb: model.apply(p, xb)[..., 3]``); and
- on three concrete random inputs (``a``; ``a`` with rows ``1:`` redrawn; ``a`` with row 0
  redrawn) output row 0 moves with input row 0 and not with rows ``1:``, and output rows
  ``1:`` move with input rows ``1:`` and not with row 0: the rows are evaluated
  independently.

What it cannot detect:

- A function of a batch whose rows are not independent: a model that mixes its batch
  axis (BatchNorm in training mode, an average over the batch axis) applied to a batch.
  Its output rows depend on every input row, like the positions of a per-example
  sequence or segmentation network, and nothing outside ``f`` tells the two apart.
- A per-example ``f`` that mixes a batch itself, e.g. ``lambda x: m.apply(v, x[None])[0]``
  with BatchNorm in training mode or a model that averages over its batch axis, or one
  that stacks ``x`` with other examples. It is a function of ``x`` alone, and every map is
  exact for it; but it is not the network used at inference (on a batch of one, BatchNorm
  normalises by the example's own statistics). Undecidable from ``f``'s inputs and
  outputs: apply such models in inference mode. (BatchNorm in training mode squares
  values that depend on the input, so Insens and the projections refuse it either way,
  naming the operation; the gradient-based methods run on it.)
- Any ``f`` that closes over traced values (weights passed as ``jit`` arguments): the
  check needs concrete evaluations and is skipped. `slp.attribute_dataset` runs it with
  its concrete ``params`` before compiling.
- A batch function whose output row 0 does not move with input row 0 at the random
  inputs (e.g. a dead or constant output): taken for a per-example function, so that a
  per-example network with a constant output (a fixed zero logit) is not refused.

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

__all__ = [
    "per_example",
    "single_example",
    "is_single_example",
    "check_one_example",
    "all_finite",
    "nan_unless",
]

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

    Examples:
      >>> model = slp.models.MLP(hidden=(8,), num_classes=2)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4)))
      >>> f_batch = lambda xb: model.apply(params, xb)  # (B, 4) -> (B, 2)
      >>> xb = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)))
      >>> f = slp.per_example(f_batch)
      >>> f(xb[0]).shape
      (2,)
      >>> jax.vmap(slp.insens(f))(xb).shape  # one map per example
      (3, 4)
      >>> slp.insens(f_batch)(xb)  # refused: it would mix the examples
      Traceback (most recent call last):
      ...
      ValueError: f looks like a function of a batch: on an input of shape (3, 4) it returns ...
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
    ``f(params, x)`` for `slp.attribute_dataset` with ``params`` works the same way.

    Args:
      f: ``f(x) -> y`` (or ``f(params, x) -> y``) that maps one example.

    Returns:
      A function computing the same as ``f``, marked so that slp's batch check does not
      run on it.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> token_net = lambda t: jnp.maximum(t @ W1 + b1, 0) @ W2  # one token: (4,) -> (2,)
      >>> per_token = jax.vmap(token_net)  # one sequence: (5, 4) -> (5, 2), position-wise
      >>> sequence = jnp.asarray(rng.normal(size=(5, 4)))
      >>> slp.insens(slp.single_example(per_token))(sequence).shape
      (5, 4)
      >>> slp.insens(per_token)(sequence)  # taken for a function of a batch of 5
      Traceback (most recent call last):
      ...
      ValueError: f looks like a function of a batch: ...
    """

    @functools.wraps(f)
    def g(*args):
        return f(*args)

    setattr(g, _MARK, True)
    return g


def is_single_example(f: Callable) -> bool:
    """Whether ``f`` was declared to map one example (`per_example`, `single_example`)."""
    return bool(getattr(f, _MARK, False))


_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
)


def _maps_a_batch(f: Callable, x_aval) -> bool:
    """Whether ``f`` evaluates the rows of its input independently (a function of a batch).

    Three concrete evaluations at trace time: a random input ``a``, ``a`` with rows ``1:``
    redrawn (``b``), ``a`` with row 0 redrawn (``c``). Undecidable (False) when ``f``
    closes over traced values.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal(x_aval.shape).astype(x_aval.dtype)
    b, c = a.copy(), a.copy()
    b[1:] = rng.standard_normal(b[1:].shape).astype(x_aval.dtype)
    c[0] = rng.standard_normal(c[0].shape).astype(x_aval.dtype)
    try:
        with jax.ensure_compile_time_eval():
            ya, yb, yc = (np.asarray(f(jnp.asarray(v))) for v in (a, b, c))
    except _TRACER_ERRORS:
        return False
    same = np.array_equal
    row0_alone = same(ya[0], yb[0]) and not same(ya[0], yc[0])
    rest_alone = same(ya[1:], yc[1:]) and not same(ya[1:], yb[1:])
    return bool(row0_alone and rest_alone)


def check_one_example(f: Callable, x_aval, out_aval) -> None:
    """Raises when ``f`` is a function of a batch (see the module docstring).

    Args:
      f: the function slp was given.
      x_aval, out_aval: shapes and dtypes of its input and output.

    Raises:
      ValueError: naming the batch size and what to write instead.
    """
    xs, ys = tuple(x_aval.shape), tuple(out_aval.shape)
    if is_single_example(f) or len(xs) < 2 or len(ys) < 1 or ys[0] != xs[0] or xs[0] < 2:
        return
    if not _maps_a_batch(f, x_aval):
        return
    raise ValueError(
        f"f looks like a function of a batch: on an input of shape {xs} it returns {ys}, "
        "and each output row depends on its own input row only. slp explains one example at "
        f"a time (on a batch, Insens would average over the inactive neurons of all {xs[0]} "
        "examples, each map about 1/B of its own, and a gradient would take an example's "
        "output for a class). Use f = slp.per_example(f_batch) and "
        "jax.vmap over the batch, or slp.insens(f_batch, batched=True) / "
        "slp.attribute(f_batch, xb, method, batched=True). If f does map one example whose "
        "rows are independent, pass slp.single_example(f)."
    )


def check_key(key, who: str) -> None:
    """Raises TypeError where a seed (a Python number or string) is given as ``who``'s PRNG
    key, which JAX would refuse with "invalid PRNG key data"."""
    if isinstance(key, int | float | str | np.integer | np.floating):
        raise TypeError(f"{who}: key must be a PRNG key, jax.random.key({key!r}); got {key!r}")


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


def is_count(value, minimum: int = 1) -> bool:
    """Whether ``value`` is an integer (Python or NumPy, not a bool) of at least ``minimum``:
    the test of every count option (sizes, steps, samples, probes), so that 2.5 or True is
    refused rather than rounded or read as 1."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= minimum


def check_chunk_size(chunk_size) -> None:
    """Raises ValueError unless ``chunk_size`` (of `insens` and `insens_plan`) is None or an
    integer >= 1 (`is_count`)."""
    if chunk_size is not None and not is_count(chunk_size):
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size!r}")


def check_has_neurons(program, pool_losers: bool = True) -> None:
    """Raises ValueError when Insens has nothing to average: an input with no element or no
    axis (the receptive boxes index the input's axes), or a network with no ReLU layer (no
    hidden neuron can be inactive, so every map would be the zero of an empty mean), unless
    ``pool_losers`` and the network max-pools (the losers are averaged over then)."""
    shape = tuple(program.input_shape)
    if not shape or not int(np.prod(shape)):
        raise ValueError(
            f"Insens needs an input with at least one axis and one element; got shape {shape}"
            + (" (reshape a scalar input to (1,))" if not shape else "")
        )
    if not program.relu_shapes and not (pool_losers and program.pool_shapes):
        raise ValueError(
            "the network has no ReLU layer: no hidden neuron can be inactive, so Insens (the "
            "mean over inactive ReLU neurons) has nothing to average. A gradient-based method "
            "(slp.available_methods()) explains a network without ReLUs"
        )

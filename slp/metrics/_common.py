"""What the Quantus-named metrics share: map checks, normalisation, layout, baselines.

Quantus prepares every map the same way before a metric sees it (its ``Metric`` base
class): a pixel map gets a channel axis, then it is normalised (``normalise``), then its
absolute value taken (``abs``). It counts *features* in the channel-first layout of the
input (``C, H, W``, flattened); for an image ``(H, W, C)`` this module flattens in that
order too (`flat`), so that feature groups and raster ties match. Orders are stable
sorts: ties keep that raster order. Quantus sorts with NumPy's default ``argsort``,
which does not promise any order among ties, so the two agree exactly on maps without ties.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import custom_batching
from jax.extend import core as jex_core

from slp._src.guards import check_key
from slp.attributions.registry import attribute, get_method, resolve_target

STEP_BATCH = 16
"""Perturbed inputs one example sends through the network at once (`map_steps`).

Under a `jax.vmap` over B examples a network call runs on ``B * STEP_BATCH`` inputs. XLA on
CPU ran the 2CONV's gradient at 2,812 inputs/s in calls of 32, 1,668 in calls of 512 and
1,603 in calls of 2,048: smaller calls are faster. MaxSensitivity (200 copies) on 32 digits
per call ran 1.16x faster with 16 than with 64 and 1.28x faster with 8, but compiled in
1.6x and 2x the time (the chunks are unrolled)."""

BASELINES = ("black", "white", "mean")


def normalise_by_max(a: jax.Array) -> jax.Array:
    """``a / max|a|`` (Quantus's default normalisation); an all-zero map stays zero.

    Args:
      a: one map, any shape.

    Returns:
      Array shaped like ``a``, in [-1, 1].

    Examples:
      >>> slp.metrics.normalise_by_max(jnp.array([-2.0, 1.0, 4.0]))
      Array([-0.5 ,  0.25,  1.  ], dtype=float32)
    """
    m = jnp.max(jnp.abs(a))
    return jnp.where(m > 0, a / jnp.where(m > 0, m, 1), a)


def normalise_by_average_second_moment_estimate(a: jax.Array) -> jax.Array:
    """``a / sqrt(mean(a^2))`` (Binder et al. 2022); an all-zero map stays zero.

    Args:
      a: one map, any shape.

    Returns:
      Array shaped like ``a`` whose mean square is 1.

    Examples:
      >>> slp.metrics.normalise_by_average_second_moment_estimate(jnp.array([3.0, -3.0]))
      Array([ 1., -1.], dtype=float32)
    """
    r = jnp.sqrt(jnp.mean(a * a))
    return jnp.where(r > 0, a / jnp.where(r > 0, r, 1), a)


def as_input(x: Any) -> jax.Array:
    """``x`` as a floating JAX array of at least one dimension."""
    x = jnp.asarray(x)
    if x.ndim == 0:
        raise ValueError("x must be one input with at least one axis, got a scalar")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.result_type(float))
    return x


def check_map(attribution: Any, x: jax.Array, what: str = "attribution") -> jax.Array:
    """The map, checked against ``x``; a pixel map of an ``(H, W, C)`` image gets ``C = 1``.

    Args:
      attribution: shaped like ``x``, or ``(H, W)`` / ``(H, W, 1)`` for ``x`` ``(H, W, C)``.
      x: the input.
      what: the map's name in the error message.

    Returns:
      Floating array shaped like ``x`` or ``(H, W, 1)``.
    """
    a = jnp.asarray(attribution)
    pixels = x.shape[:2] if x.ndim == 3 else None
    if pixels is not None and a.shape == pixels:
        a = a[..., None]
    elif a.shape != x.shape and (pixels is None or a.shape != (*pixels, 1)):
        also = f" or its pixels {pixels}" if pixels else ""
        raise ValueError(
            f"{what} shaped {a.shape} does not fit x shaped {x.shape}: expected {x.shape}{also}"
        )
    return as_map(a)


def as_map(a: Any) -> jax.Array:
    """``a`` as a floating JAX array."""
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    return a


def prepare(
    attribution: Any, x: jax.Array | None, *, abs: bool, normalise: bool, normalise_func: Callable
) -> jax.Array:
    """`check_map` (no check when ``x`` is None), then Quantus's ``normalise`` (with
    ``normalise_func``), then ``abs``."""
    a = as_map(attribution) if x is None else check_map(attribution, x)
    if a.ndim == 0:
        raise ValueError("attribution must be a map with at least one axis, got a scalar")
    if normalise:
        a = normalise_func(a)
    if abs:
        a = jnp.abs(a)
    return a


def flat(v: jax.Array) -> jax.Array:
    """Features of ``v`` in Quantus's channel-first order (``(H, W, C)`` as ``C, H, W``)."""
    if v.ndim == 3:
        v = jnp.moveaxis(v, -1, 0)
    return jnp.ravel(v)


def unflat(v: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Inverse of `flat`: features back into ``shape``."""
    if len(shape) == 3:
        return jnp.moveaxis(v.reshape(shape[2], shape[0], shape[1]), 0, -1)
    return v.reshape(shape)


def rank(v: jax.Array) -> jax.Array:
    """Position of every entry of the 1-D ``v`` in ``argsort(v)`` (stable: ties by index)."""
    order = jnp.argsort(v, stable=True)
    return jnp.zeros(order.shape, jnp.int32).at[order].set(jnp.arange(v.size, dtype=jnp.int32))


def smallest(keys: jax.Array, size: int) -> jax.Array:
    """Mask of the ``size`` smallest entries of the 1-D unsigned ``keys``, ties by index:
    the first ``size`` of ``argsort(keys, stable=True)``, without the sort.

    A binary search over the key's bits finds the ``size``-th smallest value (one pass over
    ``keys`` per bit); XLA on CPU sorts slowly.
    """
    bits = jnp.iinfo(keys.dtype).bits

    def halve(_, bounds):
        lo, hi = bounds
        mid = lo + (hi - lo) // 2
        enough = jnp.sum(keys <= mid) >= size
        return jnp.where(enough, lo, mid + 1), jnp.where(enough, mid, hi)

    top = jnp.asarray(jnp.iinfo(keys.dtype).max, keys.dtype)
    value, _ = jax.lax.fori_loop(0, bits, halve, (jnp.zeros((), keys.dtype), top))
    tie = keys == value
    return (keys < value) | (tie & (jnp.cumsum(tie) <= size - jnp.sum(keys < value)))


def random_subset(key: jax.Array, n: int, size: int) -> jax.Array:
    """``(n,)`` mask of ``jax.random.choice(key, n, (size,), replace=False)``, the same
    draw.

    That choice sorts one fresh 32-bit key per entry (`jax.random.permutation`, one round
    of sorting up to about 1,600 entries) and keeps the first ``size``: `smallest` of those
    keys, without the sort. Larger ``n`` (more rounds) calls `jax.random.choice` itself.
    """
    rounds = math.ceil(3 * math.log(max(1, n)) / math.log(2**32 - 1))
    if rounds != 1:
        return jnp.zeros(n, bool).at[jax.random.choice(key, n, (size,), False)].set(True)
    _, sub = jax.random.split(key)
    return smallest(jax.random.bits(sub, (n,), jnp.uint32), size)


def baseline_value(perturb_baseline: Any, x: jax.Array) -> jax.Array:
    """The value a perturbed feature takes: ``"black"`` (``x``'s minimum), ``"white"``
    (maximum), ``"mean"`` or a number (Quantus's ``perturb_baseline``)."""
    if isinstance(perturb_baseline, str):
        name = perturb_baseline.lower()
        if name == "black":
            return jnp.min(x)
        if name == "white":
            return jnp.max(x)
        if name == "mean":
            return jnp.mean(x)
        raise ValueError(
            f"perturb_baseline {perturb_baseline!r} is not supported; use a number or one of "
            f"{', '.join(repr(b) for b in BASELINES)}"
        )
    value = jnp.asarray(perturb_baseline, x.dtype)
    if value.ndim:
        raise ValueError(f"perturb_baseline must be a scalar or a name, got shape {value.shape}")
    return value


def score_function(
    f: Callable, x: jax.Array, target, *, softmax: bool
) -> tuple[jax.Array, Callable[[jax.Array], jax.Array]]:
    """``(t, score)``: the target class at ``x`` and ``z -> f(z)[t]`` (or its softmax)."""
    if not callable(f):
        raise TypeError(f"f must be a network f(x) -> logits, got {type(f).__name__}")
    t = resolve_target(f(x), target)

    def score(z):
        y = f(z)
        return (jax.nn.softmax(y) if softmax else y)[t]

    return t, score


def map_steps(fn: Callable, xs: Any) -> Any:
    """``fn`` over the leading axis of ``xs``: `steps_vmap` of `STEP_BATCH` entries at a time.

    The chunks are unrolled rather than looped (``jax.lax.map``): XLA on CPU runs a network
    inside a loop 2-3 times slower than the same network unrolled.
    """
    n = jax.tree.leaves(xs)[0].shape[0]
    run = _stepper(fn, xs)  # fn traced once, for every chunk
    parts = [
        run(jax.tree.map(lambda v, i=i: v[i : i + STEP_BATCH], xs)) for i in range(0, n, STEP_BATCH)
    ]
    return jax.tree.map(lambda *p: jnp.concatenate(p), *parts)


def steps_vmap(fn: Callable, xs: Any) -> Any:
    """``jax.vmap(fn)(xs)``, with the batch axes of every `jax.vmap` around it merged into one.

    A metric runs under a vmap over examples and maps its steps inside: the network then sees
    inputs with two batch axes, ``(examples, steps, ...)``. XLA on CPU (jaxlib 0.10.2) ran the
    2CONV's forward pass 3x slower on 32 x 16 inputs with two batch axes than on the same 512
    inputs with one (it fuses the whole network and works through it by the leading axis).
    Here ``fn`` is traced once, for one step; under a vmap, the values it closes over that
    carry the examples' axis (the target, the input) are repeated per step and everything is
    mapped over one axis of examples x steps. That repetition is skipped (two batch axes, as
    `jax.vmap`) where it would exceed the largest value ``fn`` computes per step: a network's
    weights randomised per example stay one copy per example. The values are `jax.vmap`'s up
    to rounding (XLA may sum in another order); gradients go through ``jax.vmap(fn)`` itself.
    """
    return _stepper(fn, xs)(xs)


def _stepper(fn: Callable, xs: Any) -> Callable:
    """`steps_vmap` of ``fn`` for step batches shaped like ``xs`` (any number of steps):
    ``fn`` is traced here, once, for one step."""
    leaves, tree = jax.tree.flatten(xs)
    one = jax.tree.unflatten(tree, [jax.ShapeDtypeStruct(v.shape[1:], v.dtype) for v in leaves])
    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(one)
    jaxpr, consts = closed.jaxpr, list(closed.consts)
    largest = max((math.prod(v.aval.shape) for v in _outvars(jaxpr)), default=0)
    unmapped = (False,) * len(consts)

    @jax.custom_jvp
    def run(consts, leaves):
        return _merged(jaxpr, unmapped, largest)(consts, leaves)

    @run.defjvp
    def run_jvp(primals, tangents):
        return jax.jvp(_mapped(jaxpr, unmapped), primals, tangents)

    def apply(xs):
        out = run(consts, jax.tree.leaves(xs))
        return jax.tree.unflatten(jax.tree.structure(out_shape), out)

    return apply


def _outvars(jaxpr):
    """Every value ``jaxpr`` computes, inside the jaxprs of its operations too (a network
    applied through `jax.jit` is one operation at the top)."""
    for e in jaxpr.eqns:
        yield from e.outvars
        for sub in jex_core.jaxprs_in_params(e.params):
            yield from _outvars(sub)


def _mapped(jaxpr, mapped: tuple[bool, ...]) -> Callable:
    """``(consts, leaves) -> jaxpr`` mapped over the leaves' leading axis, and over that of
    the ``consts`` flagged in ``mapped``."""
    run = lambda c, v: jex_core.jaxpr_as_fun(jex_core.ClosedJaxpr(jaxpr, c))(*v)  # noqa: E731
    return jax.vmap(run, in_axes=([0 if m else None for m in mapped], 0))


def _merged(jaxpr, mapped: tuple[bool, ...], largest: int) -> Callable:
    """`_mapped`, whose `jax.vmap` maps the same over the merged axes (`steps_vmap`)."""
    call = custom_batching.custom_vmap(_mapped(jaxpr, mapped))

    @call.def_vmap
    def merged(size, in_batched, consts, leaves):
        consts_b, leaves_b = in_batched
        flags = list(zip(consts, consts_b, mapped, strict=True))
        repeated = sum(v[0].size for v, b, m in flags if b and not m)
        if repeated > largest:  # two batch axes
            axes = [0 if b else None for b in consts_b], [0 if b else None for b in leaves_b]
            out = jax.vmap(_mapped(jaxpr, mapped), in_axes=axes)(consts, leaves)
            return out, [True] * len(out)
        steps = leaves[0].shape[1 if leaves_b[0] else 0]
        consts = [_one_axis(v, size, steps, b, m) for v, b, m in flags]
        leaves = [_one_axis(v, size, steps, b, True) for v, b in zip(leaves, leaves_b, strict=True)]
        now = tuple(b or m for b, m in zip(consts_b, mapped, strict=True))
        out = _merged(jaxpr, now, largest)(consts, leaves)
        return [o.reshape(size, steps, *o.shape[1:]) for o in out], [True] * len(out)

    return call


def _one_axis(v, size: int, steps: int, batched: bool, mapped: bool):
    """``v`` with its examples' axis (``batched``) and steps' axis (``mapped``) as one
    leading axis of ``size * steps``; unchanged if it has neither."""
    if not batched and not mapped:
        return v
    if not batched:  # (steps, ...): the same steps for every example
        v = jnp.broadcast_to(v[None], (size, *v.shape))
    elif not mapped:  # (size, ...): the same value at every step
        v = jnp.broadcast_to(v[:, None], (size, steps, *v.shape[1:]))
    return v.reshape(size * steps, *v.shape[2:])


def explainer(explain: Callable | None, method: str) -> Callable:
    """``explain(f, x, target, key) -> map``: the one given, or `slp.attribute`'s ``method``.

    A registered method that takes a ``key`` (SmoothGrad) gets the key it is given.
    """
    if explain is not None:
        if isinstance(explain, str):
            raise TypeError(
                f"explain must be a function (f, x, target, key) -> map, got the string "
                f"{explain!r}; a registered method is named by method={explain!r}"
            )
        if not callable(explain):
            raise TypeError(
                f"explain must be a function (f, x, target, key) -> map, "
                f"got {type(explain).__name__}"
            )
        return explain
    takes_key = "key" in inspect.signature(get_method(method)).parameters

    def run(f, x, target, key):
        extra = {"key": key} if takes_key and key is not None else {}
        return attribute(f, x, method, target=target, **extra)

    return run


def require_key(key: Any, name: str) -> jax.Array:
    """``key``, or a clear error for the random metric ``name``."""
    if key is None:
        raise ValueError(f"{name} draws random numbers: pass key=jax.random.key(seed)")
    check_key(key, name)
    return key


def positive(name: str, value: Any) -> int:
    """``value`` as an int >= 1, or a clear error naming the option."""
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)

"""One table of evaluation metrics, keyed by Quantus's class names, and `evaluate`.

Every metric is declared once, with `metric`, on the function that computes it: its
Quantus class name, its group, whether a good map scores high, and its reference. The
options it takes, with their defaults, are read from that function's keyword-only
parameters, so the table and the function cannot disagree. `evaluate` runs any metric by
name; the snake_case functions (`slp.metrics.pixel_flipping`, ...) are the same code.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from slp._src.guards import all_finite, nan_unless
from slp.attributions.registry import check_target

__all__ = [
    "GROUPS",
    "MetricSpec",
    "metric",
    "available_metrics",
    "get_metric",
    "evaluate",
]

GROUPS = ("faithfulness", "robustness", "randomisation", "complexity", "localisation", "axiomatic")
"""Quantus's six groups of metrics, in the order its documentation lists them."""

_INPUTS = ("f", "x", "attribution")
_PER_EXAMPLE = ("target", "mask", "key")


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    """One registered metric.

    Attributes:
      name: Quantus's class name, e.g. ``"PixelFlipping"``.
      group: one of `GROUPS`.
      function: the snake_case function that computes it.
      options: ``{option: default}`` in the function's order (Quantus's names and
        defaults).
      higher_is_better: True when a better map scores higher.
      reference: the paper the metric comes from.
      inputs: which of ``f``, ``x``, ``attribution`` the function takes, in order.
      per_example: which of ``target``, ``mask``, ``key`` it takes.

    Examples:
      >>> spec = slp.metrics.get_metric("Sparseness")
      >>> spec.group, spec.higher_is_better, spec.inputs, list(spec.options)
      ('complexity', True, ('attribution',), ['abs', 'normalise', 'normalise_func'])
      >>> spec.function is slp.metrics.sparseness
      True
    """

    name: str
    group: str
    function: Callable
    options: Mapping[str, Any]
    higher_is_better: bool
    reference: str
    inputs: tuple[str, ...]
    per_example: tuple[str, ...]


_METRICS: dict[str, MetricSpec] = {}


def metric(
    name: str, *, group: str, higher_is_better: bool, reference: str
) -> Callable[[Callable], Callable]:
    """Decorator registering the function it decorates as the metric ``name``.

    The function's positional parameters must be among ``f, x, attribution`` (in that
    order), its keyword-only parameters ``target``, ``mask``, ``key`` and the options.

    Args:
      name: Quantus's class name.
      group: one of `GROUPS`.
      higher_is_better: True when a better map scores higher.
      reference: the paper the metric comes from.

    Returns:
      The decorator. The function it returns is the one decorated, except for the checks
      of `guard_inputs`: a map with a NaN or inf entry, or a ``target`` out of range, raises
      (concrete) or gives a NaN score (traced).
    """
    if group not in GROUPS:
        raise ValueError(f"group {group!r} is not one of {GROUPS}")

    def deco(fn: Callable) -> Callable:
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        params = inspect.signature(fn).parameters.values()
        inputs = tuple(p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD)
        if inputs != tuple(n for n in _INPUTS if n in inputs):
            raise TypeError(f"{fn.__name__}: positional parameters {inputs} not among {_INPUTS}")
        keyword = [p for p in params if p.kind is p.KEYWORD_ONLY]
        fn = guard_inputs(fn, inputs, takes_target=any(p.name == "target" for p in keyword))
        _METRICS[name] = MetricSpec(
            name=name,
            group=group,
            function=fn,
            options=types.MappingProxyType(
                {p.name: p.default for p in keyword if p.name not in _PER_EXAMPLE}
            ),
            higher_is_better=higher_is_better,
            reference=reference,
            inputs=inputs,
            per_example=tuple(p.name for p in keyword if p.name in _PER_EXAMPLE),
        )
        return fn

    return deco


def guard_inputs(fn: Callable, inputs: tuple[str, ...], *, takes_target: bool) -> Callable:
    """``fn`` that refuses a map with a NaN or inf entry and, if it takes one, a ``target``
    out of range: a concrete one raises, a traced one gives a NaN score.

    A map with a non-finite entry is undefined (`slp.insens` and the registered methods
    return NaN maps for a NaN input or a traced target out of range); sorting or summing
    it would give a plausible-looking score. A concrete ``target`` out of range raises the
    ValueError of `slp.attributions.registry.check_target` inside ``fn``; a traced one
    (``vmap`` or ``jit`` over targets) cannot raise, and indexing with it would read a
    clamped logit. Under a trace the score is NaN instead, as the methods' maps are; bool
    and integer scores (Monotonicity, Completeness, NonSensitivity, InputInvariance)
    become float32 there, so that they can hold that NaN (True is 1.0).

    Args:
      fn: a metric function ``fn(f, x, ..., *, target, ...)`` where ``f(x)`` (or, with a
        ``params`` option, ``f(params, x)``) returns the logits.
      inputs: ``fn``'s positional parameters (among ``f``, ``x``, ``attribution``).
      takes_target: whether ``fn`` takes ``target``.

    Returns:
      The guarded function, with ``fn``'s name, signature and docstring.
    """
    if "attribution" not in inputs and not takes_target:
        return fn

    @functools.wraps(fn)
    def guarded(*args, **kwargs):
        given = {**dict(zip(inputs, args, strict=False)), **kwargs}  # positional or by name
        checks = []
        if "attribution" in inputs:
            finite = _finite_map(given["attribution"])
            if finite is not None:
                checks.append(finite)
        out = fn(*args, **kwargs)
        target = kwargs.get("target")
        if takes_target and isinstance(target, jax.core.Tracer):
            f, x = given["f"], given["x"]
            p = kwargs.get("params")
            logits = jax.eval_shape(f, p, x) if p is not None else jax.eval_shape(f, x)
            checks.append(check_target(target, logits.shape[-1]))
        if not checks:
            return out
        ok = functools.reduce(jnp.logical_and, checks)

        def floating(v):
            v = jnp.asarray(v)
            return v if jnp.issubdtype(v.dtype, jnp.inexact) else v.astype(jnp.float32)

        return nan_unless(ok, jax.tree.map(floating, out))

    return guarded


def _finite_map(a) -> jax.Array | None:
    """Whether every entry of the map ``a`` is finite, for a traced map (a traced bool); for
    a concrete one, raises ValueError unless it is, and returns None."""
    if isinstance(a, jax.core.Tracer):
        return all_finite(a)
    arr = np.asarray(a)
    if arr.dtype.kind in "fc" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise ValueError(
            f"the attribution map has {bad} NaN or inf entr{'y' if bad == 1 else 'ies'} of "
            f"{arr.size}: its score is undefined (a NaN map comes from a NaN or inf input, "
            "or from a traced target out of range)"
        )
    return None


def available_metrics(group: str | None = None) -> tuple[str, ...]:
    """Quantus class names of the registered metrics (of one group, or all), by group.

    Args:
      group: one of `GROUPS`, or None for every metric.

    Returns:
      The names, grouped in the order of `GROUPS`, in registration order within a group.

    Raises:
      ValueError: if ``group`` is not None and not one of `GROUPS`.

    Examples:
      >>> slp.metrics.available_metrics("axiomatic")
      ('Completeness', 'NonSensitivity', 'InputInvariance')
      >>> len(slp.metrics.available_metrics())
      27
    """
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; groups: {', '.join(GROUPS)}")
    groups = GROUPS if group is None else (group,)
    return tuple(n for g in groups for n, s in _METRICS.items() if s.group == g)


def get_metric(name: str) -> MetricSpec:
    """The registered metric ``name`` (Quantus's class name); a clear error otherwise.

    Args:
      name: Quantus's class name, e.g. ``"PixelFlipping"`` (`available_metrics` lists them).

    Returns:
      Its `MetricSpec`: group, direction, reference, function and options with defaults.

    Raises:
      ValueError: for a name that is not registered (the message lists those that are).
      TypeError: for a name that is not a string.

    Examples:
      >>> spec = slp.metrics.get_metric("PixelFlipping")
      >>> spec.function is slp.metrics.pixel_flipping, spec.higher_is_better
      (True, False)
      >>> spec.options["features_in_step"], spec.options["perturb_baseline"]
      (1, 'black')
    """
    if not isinstance(name, str):
        raise TypeError(
            f"a metric is named by Quantus's class name, a string from "
            f"slp.metrics.available_metrics(); got {type(name).__name__} (the call is "
            "slp.metrics.evaluate(name, f, x, attribution))"
        )
    try:
        return _METRICS[name]
    except KeyError:
        raise ValueError(
            f"unknown metric {name!r}; available: {', '.join(available_metrics())}"
        ) from None


def evaluate(
    name: str,
    f: Callable | None,
    x: Any,
    attribution: Any,
    *,
    target=None,
    mask=None,
    key=None,
    **options,
) -> Any:
    """Score one attribution map with the metric Quantus calls ``name``.

    The score is what Quantus returns for this example (see the metric's function for
    where and why it differs). Nothing is compiled here: ``jax.jit(evaluate,
    static_argnames=("name", "f", ...))`` with the options that are not arrays static, and
    ``jax.vmap`` over ``x``, ``attribution``, ``target``, ``mask`` and ``key``, work.
    Arguments a metric does not use (a mask for a faithfulness metric, a key for a
    deterministic one) are ignored, as Quantus ignores them.

    Args:
      name: Quantus's class name (`available_metrics` lists them).
      f: per-example network ``f(x) -> logits`` (for the parameter randomisation tests
        ``f(params, x) -> logits``, see `slp.metrics.mprt`); None for the metrics of a map
        alone (complexity, localisation).
      x: one input: an image ``(H, W)`` or ``(H, W, C)`` (channels last), or any shape
        for metrics that do not cut images into patches.
      attribution: the map, shaped like ``x`` or, for ``(H, W, C)`` images, ``(H, W)``.
      target: the class explained; None: the arg-max logit at ``x``.
      mask: the localisation metrics' segmentation mask (bool, the map's pixels);
        Focus: the four quadrant flags.
      key: PRNG key of the random metrics.
      **options: the metric's options, by Quantus's keyword names (``get_metric(name)
        .options`` lists them with their defaults).

    Returns:
      The metric's score for this example: a scalar, or an array (a curve) whose shape
      the metric's function documents.

    Raises:
      TypeError: for an option the metric does not take (the message lists those it does),
        or a ``name`` that is not a string.
      ValueError: for an unknown ``name`` (from `get_metric`), or a concrete map with a NaN
        or inf entry (a traced one gives a NaN score, `guard_inputs`).

    Examples:
      A linear two-class network on a 4x4 one-channel image; for it, gradient x input is
      ``x`` itself:

      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> float(slp.metrics.evaluate("FaithfulnessEstimate", f, x, x, features_in_step=4))
      1.0
      >>> float(slp.metrics.faithfulness_estimate(f, x, x, features_in_step=4))  # the same
      1.0
      >>> mask = jnp.zeros((4, 4), bool).at[2:].set(True)  # the bottom half
      >>> float(slp.metrics.evaluate("PointingGame", None, x, x, mask=mask))
      1.0
      >>> slp.metrics.evaluate("Sparseness", None, x, x, k=3)
      Traceback (most recent call last):
      ...
      TypeError: Sparseness got unknown option(s) ['k']; its options are: abs, normalise, ...
    """
    spec = get_metric(name)
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise TypeError(
            f"{name} got unknown option(s) {unknown}; its options are: "
            f"{', '.join(spec.options) or 'none'}"
        )
    given = {"f": f, "x": x, "attribution": attribution}
    per_example = {"target": target, "mask": mask, "key": key}
    return spec.function(
        *(given[n] for n in spec.inputs),
        **{n: per_example[n] for n in spec.per_example},
        **options,
    )

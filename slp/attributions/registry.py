"""One registry of attribution methods and one call to run any of them.

Every method is a function ``method(f, x, *, target=None, **options) -> map`` on one
example: ``f`` is a per-example network ``f(x) -> logits``, ``x`` one input, the map
has ``x``'s shape. ``target`` is a class index (None: the arg-max logit).

Every registered method returns a map of NaN when ``x``, a ReLU input or the output of
``f`` is NaN or inf (a non-finite input or weight): the network's state, and with it
every map, is then undefined.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from _slp import guards as _guards
from slp import network as net
from slp.attributions.conventions import convention_options

__all__ = [
    "register",
    "attribute",
    "available_methods",
    "get_method",
    "resolve_target",
    "target_logit",
]

_METHODS: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator adding an attribution method to the registry under ``name``."""

    def deco(fn: Callable) -> Callable:
        if name in _METHODS:
            raise ValueError(f"attribution method {name!r} is already registered")

        @functools.wraps(fn)
        def method(f, x, *args, **kwargs):
            return _guards.nan_unless(_defined(f, x), fn(f, x, *args, **kwargs))

        _METHODS[name] = method
        return method

    return deco


def _defined(f: Callable, x: jax.Array) -> jax.Array:
    """Whether ``x``, every ReLU input and the output of ``f`` are finite (bool scalar)."""
    try:
        program = net.trace(f, x)
    except net.UnsupportedOperationError:  # not a network the walker describes (tanh)
        return _guards.all_finite(x, f(x))
    return net.defined(x, net.forward(program, x))


def available_methods() -> tuple[str, ...]:
    """Names of the registered attribution methods, in registration order."""
    return tuple(_METHODS)


def get_method(name: str) -> Callable:
    """The registered method ``name``; a clear error listing what exists otherwise."""
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown attribution method {name!r}; available: {', '.join(_METHODS)}"
        ) from None


def attribute(
    f: Callable,
    x: jax.Array,
    method: str,
    *,
    target=None,
    convention: str | None = None,
    batched: bool = False,
    **options,
) -> jax.Array:
    """Attribution map of ``method`` for the network ``f`` at one input ``x``.

    Args:
      f: per-example network ``f(x) -> logits`` (shape ``(classes,)``).
      x: one input, any shape ``X``.
      method: a name from `available_methods`.
      target: class index whose logit is explained; None means the arg-max logit. With
        ``batched``: None, one index for all examples, or an integer array ``(B,)``.
      convention: None (this library's defaults), ``"innvestigate"``, ``"zennit"`` or
        ``"captum"``: the start value, quadrature, bias handling and stabiliser of that
        toolbox (`slp.attributions.conventions`); explicit ``options`` still win.
      batched: ``f`` is a function of a batch (``model.apply(params, xb)``) and ``x`` a
        batch ``(B, ...)``; the result is one map per example, ``(B, ...)``. Methods that
        take a ``key`` get one key per example, split from the one given.
      **options: the method's keyword options (see its docstring).

    Returns:
      Array of shape ``X`` (with ``batched``: ``x``'s shape).
    """
    fn = get_method(method)
    options = {**convention_options(convention, method), **options}
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known) - {"target"})
    if unknown and not accepts_any:
        raise TypeError(
            f"method {method!r} got unknown option(s) {unknown}; its options are: "
            f"{', '.join(n for n in known if n != 'target') or 'none'}"
        )
    if not batched:
        return fn(f, x, target=target, **options)
    return _batched(fn, f, x, target, options)


def _batched(fn: Callable, f: Callable, xb: jax.Array, target, options: dict) -> jax.Array:
    """``fn`` on every example of the batch ``xb`` for a function of a batch ``f``."""
    net.check_input(xb, "a batch of examples")
    xb = jnp.asarray(xb)
    if xb.ndim < 1 or xb.shape[0] < 1:
        raise ValueError(f"batched=True needs x with a leading batch axis; got shape {xb.shape}")
    n = xb.shape[0]
    one = _guards.per_example(f)
    t = target if target is None else jnp.broadcast_to(jnp.asarray(target), (n,))
    key = options.pop("key", None)
    keys = None if key is None else jax.random.split(key, n)

    def each(x, t, k):
        extra = {} if k is None else {"key": k}
        return fn(one, x, target=t, **extra, **options)

    return jax.vmap(each, in_axes=(0, None if t is None else 0, None if keys is None else 0))(
        xb, t, keys
    )


def resolve_target(y: jax.Array, target):
    """The class whose logit is explained, for the logits ``y`` of one example.

    ``target`` itself when given (a Python or NumPy integer is checked against the number
    of logits; a traced index cannot be), else the arg-max of ``y`` (never differentiated).

    Raises:
      ValueError: if ``y`` is not a vector, or an integer ``target`` is out of range.
    """
    if y.ndim != 1:
        raise ValueError(f"attribution needs f(x) to be a vector of logits; got {y.shape}")
    if target is None:
        return jnp.argmax(jax.lax.stop_gradient(y))
    if isinstance(target, (int, np.integer)) and not 0 <= int(target) < y.shape[0]:
        raise ValueError(f"target {target} is out of range for {y.shape[0]} output logits")
    return target


def target_logit(f: Callable, target) -> Callable[[jax.Array], jax.Array]:
    """``x -> f(x)[target]`` (arg-max logit at ``x`` when ``target`` is None)."""

    def g(x):
        y = f(x)
        return y[resolve_target(y, target)]

    return g

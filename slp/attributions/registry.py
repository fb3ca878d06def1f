"""One registry of attribution methods and one call to run any of them.

Every method is a function ``method(f, x, *, target=None, **options) -> map`` on one
example: ``f`` is a per-example network ``f(x) -> logits``, ``x`` one input, the map
has ``x``'s shape. ``target`` is a class index (None: the arg-max logit).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp

__all__ = ["register", "attribute", "available_methods", "get_method", "target_logit"]

_METHODS: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator adding an attribution method to the registry under ``name``."""

    def deco(fn: Callable) -> Callable:
        if name in _METHODS:
            raise ValueError(f"attribution method {name!r} is already registered")
        _METHODS[name] = fn
        return fn

    return deco


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


def attribute(f: Callable, x: jax.Array, method: str, *, target=None, **options) -> jax.Array:
    """Attribution map of ``method`` for the network ``f`` at one input ``x``.

    Args:
      f: per-example network ``f(x) -> logits`` (shape ``(classes,)``).
      x: one input, any shape ``X``.
      method: a name from `available_methods`.
      target: class index whose logit is explained; None means the arg-max logit.
      **options: the method's keyword options (see its docstring).

    Returns:
      Array of shape ``X``.
    """
    fn = get_method(method)
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known) - {"target"})
    if unknown and not accepts_any:
        raise TypeError(
            f"method {method!r} got unknown option(s) {unknown}; its options are: "
            f"{', '.join(n for n in known if n != 'target') or 'none'}"
        )
    return fn(f, x, target=target, **options)


def target_logit(f: Callable, target) -> Callable[[jax.Array], jax.Array]:
    """``x -> f(x)[target]`` (arg-max logit at ``x`` when ``target`` is None)."""

    def g(x):
        y = f(x)
        if y.ndim != 1:
            raise ValueError(f"attribution needs f(x) to be a vector of logits; got {y.shape}")
        t = jnp.argmax(jax.lax.stop_gradient(y)) if target is None else target
        return y[t]

    return g

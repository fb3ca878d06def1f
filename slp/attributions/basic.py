"""Gradient sensitivity and Insens as registered attribution methods."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from slp._src.insens import insens as _insens
from slp.attributions._walk import walker_function
from slp.attributions.registry import register, target_logit

__all__ = ["gradient", "insens_attribution"]


@register("insens")
def insens_attribution(
    f: Callable,
    x: jax.Array,
    *,
    target=None,
    include_pool_losers: bool = False,
    precision: Any = None,
    probes: int | None = None,
    key: jax.Array | None = None,
    exact_layers: int = 0,
) -> jax.Array:
    """Insens (eq. 8) as an attribution method: ``slp.attribute(f, x, "insens")``.

    The same map as ``slp.insens(f)(x)`` (the transform), in the methods' calling convention
    ``(f, x, *, target, ...)``. Independent of ``target``: it explains the network's state.

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: ignored (accepted for the methods' calling convention).
      include_pool_losers: also count max-pool losers with ``v > 0`` as inactive, as in
        `slp.insens`.
      precision: of the norm products, as in `slp.insens` (None: float32 exact).
      probes, key, exact_layers: the unbiased estimate from ``probes`` Gaussian
        forward-mode probes drawn with ``key``, the first ``exact_layers`` ReLU layers
        exact, as in `slp.insens` (``probes=None``: the exact map).

    Returns:
      The Insens map ``Omega_hat``, shape ``X``.

    Raises:
      ValueError: if ``probes`` is given without a ``key``; and `slp.insens`'s errors.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> m = slp.attribute(f, x, "insens")  # by its registered name
      >>> bool(jnp.allclose(m, slp.insens(f)(x)))
      True
      >>> slp.attributions.insens_attribution(f, x, probes=16, key=jax.random.key(0)).shape
      (4,)
    """
    del target
    if probes is None:
        return _insens(f, include_pool_losers=include_pool_losers, precision=precision)(x)
    if key is None:
        raise ValueError(
            "insens with probes=k needs an explicit PRNG key, e.g. key=jax.random.key(0)"
        )
    return _insens(
        f,
        include_pool_losers=include_pool_losers,
        precision=precision,
        probes=probes,
        key=key,
        exact_layers=exact_layers,
    )(x, key)


@register("gradient")
def gradient(f: Callable, x: jax.Array, *, target=None, absolute: bool = False) -> jax.Array:
    """Gradient sensitivity ``d f_target / d x`` (Simonyan et al. 2014).

    Equals the switched weight vector of the target output neuron. ``absolute=True``
    returns ``|d f_target / d x|`` (Captum's ``Saliency`` default, ``abs=True``).

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit.
      absolute: return the gradient's absolute value.

    Returns:
      Array of shape ``X``.

    Examples:
      >>> W1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
      >>> f = lambda x: jax.nn.relu(x @ W1) @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
      >>> slp.attributions.gradient(f, jnp.array([1.0, 2.0]), target=0)
      Array([1. , 0.5], dtype=float32)
    """
    # Through the walker where it describes f: its max-pool derivative is cheaper on CPU.
    g = jax.grad(target_logit(walker_function(f, x), target))(x)
    return jnp.abs(g) if absolute else g

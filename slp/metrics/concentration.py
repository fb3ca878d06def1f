"""Complexity: how concentrated a map is (few large entries read more easily).

These metrics look at the map alone; the network is not called. (Quantus's complexity
group; the module has another name so that it does not shadow the function
`slp.metrics.complexity`.)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from slp.metrics._common import normalise_by_max, prepare
from slp.metrics.registry import metric

__all__ = ["sparseness", "complexity", "effective_complexity"]


@metric(
    "Sparseness",
    group="complexity",
    higher_is_better=True,
    reference='Chalasani et al., "Concise explanations of neural networks using adversarial '
    'training", ICML 2020',
)
def sparseness(
    attribution: jax.Array,
    *,
    abs: bool = True,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Gini index of the map's entries: 0 for a uniform map, near 1 for one non-zero entry.

    With ``a`` the ``n`` entries (plus ``1e-7``, as Quantus adds) sorted increasingly,
    ``sum_i (2 i - n - 1) a_i / (n sum_i a_i)``, ``i = 1..n``.

    Args:
      attribution: one map, any shape.
      abs, normalise, normalise_func: Quantus's preparation of the map (see `slp.metrics`).

    Returns:
      Scalar in [0, 1) for a non-negative map.

    Examples:
      >>> float(slp.metrics.sparseness(jnp.ones(4)))  # uniform
      0.0
      >>> a = jnp.array([0.0, 0.0, 0.0, 1.0])  # one non-zero entry
      >>> round(float(slp.metrics.sparseness(a)), 4)
      0.75
      >>> round(float(slp.metrics.evaluate("Sparseness", None, None, a)), 4)  # the same
      0.75
    """
    a = jnp.sort(
        jnp.ravel(
            prepare(attribution, None, abs=abs, normalise=normalise, normalise_func=normalise_func)
        )
        + 1e-7
    )
    n = a.size
    i = jnp.arange(1, n + 1, dtype=a.dtype)
    return jnp.sum((2 * i - n - 1) * a) / (n * jnp.sum(a))


@metric(
    "Complexity",
    group="complexity",
    higher_is_better=False,
    reference='Bhatt, Weller, Moura, "Evaluating and aggregating feature-based model '
    'explanations", IJCAI 2020',
)
def complexity(
    attribution: jax.Array,
    *,
    abs: bool = True,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Entropy of the map's share of mass per entry: ``-sum p log(p + 1e-12)``, ``p = a / sum|a|``.

    Args:
      attribution: one map, any shape.
      abs, normalise, normalise_func: Quantus's preparation of the map.

    Returns:
      Scalar in [0, log n] for ``n`` entries (log n: a uniform map).

    Examples:
      >>> round(float(slp.metrics.complexity(jnp.ones(4))), 4)  # log 4
      1.3863
      >>> round(float(slp.metrics.complexity(jnp.array([0.0, 0.0, 1.0, 1.0]))), 4)  # log 2
      0.6931
    """
    a = jnp.ravel(
        prepare(attribution, None, abs=abs, normalise=normalise, normalise_func=normalise_func)
    )
    p = a / jnp.sum(jnp.abs(a))
    return -jnp.sum(p * jnp.log(p + 1e-12))


@metric(
    "EffectiveComplexity",
    group="complexity",
    higher_is_better=False,
    reference='Nguyen, Rodríguez Martínez, "On quantitative aspects of model '
    'interpretability", arXiv:2007.07584, 2020',
)
def effective_complexity(
    attribution: jax.Array,
    *,
    eps: float = 1e-5,
    abs: bool = True,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Number of the map's entries above ``eps`` (after Quantus's preparation).

    Args:
      attribution: one map, any shape.
      eps: the threshold.
      abs, normalise, normalise_func: Quantus's preparation of the map.

    Returns:
      int32 scalar.

    Examples:
      >>> int(slp.metrics.effective_complexity(jnp.array([0.0, 0.0, 0.5, 1.0])))
      2
      >>> int(slp.metrics.effective_complexity(jnp.array([0.0, 0.0, 0.5, 1.0]), eps=0.6))
      1
    """
    a = prepare(attribution, None, abs=abs, normalise=normalise, normalise_func=normalise_func)
    return jnp.sum(a > eps, dtype=jnp.int32)

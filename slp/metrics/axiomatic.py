"""Axiomatic: does a map have a property every map should have?

Completeness (the map sums to the output's change from a baseline), non-sensitivity
(features the output ignores get no attribution) and input invariance (a shift of the input
that the network's first layer undoes leaves the map alone).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from slp.attributions.registry import resolve_target
from slp.metrics._common import (
    as_input,
    baseline_value,
    explainer,
    flat,
    map_steps,
    normalise_by_max,
    positive,
    prepare,
    score_function,
    unflat,
)
from slp.metrics.registry import metric

__all__ = ["completeness", "non_sensitivity", "input_invariance"]

_NGUYEN = (
    'Nguyen, Rodríguez Martínez, "On quantitative aspects of model interpretability", '
    "arXiv:2007.07584, 2020"
)


@metric(
    "Completeness",
    group="axiomatic",
    higher_is_better=True,
    reference='Sundararajan, Taly, Yan, "Axiomatic attribution for deep networks", ICML 2017',
)
def completeness(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    perturb_baseline="black",
    output_func: Callable | None = None,
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
    softmax: bool = False,
    rtol: float = 0.0,
) -> jax.Array:
    """Whether the map sums to the output's change from the baseline input.

    The test is ``sum(a) == output_func(y(x) - y(baseline))``. The baseline input has
    every feature at ``perturb_baseline`` (see `slp.metrics.faithfulness`). Quantus
    compares the two floats exactly, which rounding breaks for almost any network (and its
    default ``normalise=True`` rescales the map): ``rtol`` accepts
    ``|sum(a) - change| <= rtol |change|`` instead (0: Quantus's test).

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input.
      attribution: the map (``x``'s shape, or its pixels for an image).
      target: class followed; None: the arg-max logit at ``x``.
      perturb_baseline: the baseline value.
      output_func: applied to the change (default: none).
      abs, normalise, normalise_func: Quantus's preparation of the map.
      softmax: follow the probability (True) or the logit.
      rtol: relative tolerance of the comparison.

    Returns:
      bool scalar.

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])  # linear: gradient x input is x
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> bool(slp.metrics.completeness(f, x, x, normalise=False))  # 7.5 = f(x)[0] - f(0)[0]
      True
      >>> bool(slp.metrics.evaluate("Completeness", f, x, x))  # normalised by default: sum 8
      False
    """
    x = as_input(x)
    _, score = score_function(f, x, target, softmax=softmax)
    a = prepare(attribution, x, abs=abs, normalise=normalise, normalise_func=normalise_func)
    change = score(x) - score(jnp.full(x.shape, baseline_value(perturb_baseline, x)))
    if output_func is not None:
        change = output_func(change)
    total = jnp.sum(a)
    if rtol:
        return jnp.abs(total - change) <= rtol * jnp.abs(change)
    return total == change


@metric("NonSensitivity", group="axiomatic", higher_is_better=False, reference=_NGUYEN)
def non_sensitivity(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    eps: float = 1e-5,
    features_in_step: int = 1,
    perturb_baseline="black",
    abs: bool = True,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
    softmax: bool = True,
) -> jax.Array:
    """Number of features whose attribution disagrees with the output's sensitivity to them.

    Features are set to the baseline one group of ``features_in_step`` at a time (in
    Quantus's feature order); a feature violates the axiom when the output moves by less
    than ``eps`` but its attribution is at least ``eps``, or the output moves and its
    attribution is below ``eps``. (Quantus 0.6.0 compares groups with features and fails
    for ``features_in_step > 1``; each feature here takes its group's answer.)

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input of ``n`` features.
      attribution: the map (``x``'s shape, or its pixels for an image).
      target: class followed; None: the arg-max logit at ``x``.
      eps: the threshold of "no change" and of "no attribution".
      features_in_step: features set to the baseline together (divides ``n``).
      perturb_baseline: the baseline value (see `slp.metrics.faithfulness`).
      abs, normalise, normalise_func: Quantus's preparation of the map.
      softmax: follow the probability (True) or the logit.

    Returns:
      int32 scalar in ``[0, n]``.

    Raises:
      ValueError: if ``features_in_step`` does not divide ``n`` (or is not an integer >= 1).

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])  # linear: gradient x input is x
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> int(slp.metrics.non_sensitivity(f, x, x, softmax=False))
      0
      >>> int(slp.metrics.non_sensitivity(f, x, x))  # the saturated softmax hardly moves
      15
    """
    x = as_input(x)
    _, score = score_function(f, x, target, softmax=softmax)
    a = prepare(attribution, x, abs=abs, normalise=normalise, normalise_func=normalise_func)
    a = flat(jnp.broadcast_to(a, x.shape))
    k = positive("features_in_step", features_in_step)
    if a.size % k:
        raise ValueError(f"features_in_step={k} must divide the input's {a.size} features")
    group = jnp.arange(a.size) // k
    b, xf, y = baseline_value(perturb_baseline, x), flat(x), score(x)
    moved = map_steps(
        lambda g: jnp.abs(score(unflat(jnp.where(group == g, b, xf), x.shape)) - y) >= eps,
        jnp.arange(a.size // k),
    )
    return jnp.sum(moved[group] == (a < eps), dtype=jnp.int32)


@metric(
    "InputInvariance",
    group="axiomatic",
    higher_is_better=True,
    reference='Kindermans et al., "The (un)reliability of saliency methods", in Explainable '
    "AI: Interpreting, Explaining and Visualizing Deep Learning, LNCS 11700, 2019",
)
def input_invariance(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    input_shift: float = -1,
    explain: Callable | None = None,
    method: str = "gradient",
    abs: bool = False,
    normalise: bool = False,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Whether the map stays put when a shift of the input is undone by the network.

    The shifted input is ``x + input_shift`` and the network ``z -> f(z - input_shift)``,
    which computes the same function of it. Both maps must agree to NumPy's ``isclose``
    (``atol=1e-4``, ``rtol=1e-5``) everywhere. Quantus builds the shifted network by
    changing the bias of the first layer, which undoes the shift exactly for a dense layer
    or an unpadded convolution; here the network is composed with the shift, exact for any
    first layer (a padded convolution too). The map of a gradient, and Insens's (its
    activities and switched weights do not change), pass; gradient x input does not.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input.
      attribution: the map of ``x`` (``x``'s shape, or its pixels for an image).
      target: class explained; None: the arg-max logit at ``x``.
      key: PRNG key, for explanations that draw numbers.
      input_shift: the shift, added to every feature.
      explain: ``explain(f, x, target, key) -> map``; None: ``method``.
      method: a registered slp method (`slp.available_methods`), used without ``explain``.
      abs, normalise, normalise_func: Quantus's preparation of both maps.

    Returns:
      bool scalar.

    Raises:
      ValueError: if the map of the shifted input is not shaped like the (prepared)
        ``attribution``.

    Examples:
      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])  # linear: gradient x input is x
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> g = slp.attribute(f, x, "gradient")
      >>> bool(slp.metrics.input_invariance(f, x, g))
      True
      >>> bool(slp.metrics.input_invariance(f, x, x, method="gradient_x_input"))
      False
    """
    x = as_input(x)
    t = resolve_target(f(x), target)
    a = prepare(attribution, x, abs=abs, normalise=normalise, normalise_func=normalise_func)

    def shifted(z):
        return f(z - input_shift)

    moved = explainer(explain, method)(shifted, x + input_shift, t, key)
    b = prepare(moved, x, abs=abs, normalise=normalise, normalise_func=normalise_func)
    if b.shape != a.shape:
        raise ValueError(
            f"the maps explain returns are shaped {b.shape}, the attribution {a.shape}: give "
            "the attribution in the shape the explanation has"
        )
    return jnp.all(jnp.abs(a - b) <= 1e-4 + 1e-5 * jnp.abs(b))

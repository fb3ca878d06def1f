"""Robustness: does a map stay put when the input moves a little?

Each metric explains ``x`` again at ``nr_samples`` noisy copies of it and compares those
maps with the given one. Sample ``i`` draws its noise from ``jax.random.split(key,
nr_samples)[i]`` (``jax.random.uniform`` or ``jax.random.normal`` over ``x``'s shape) and
explains with ``jax.random.fold_in`` of that key and 1 (for methods that draw numbers).
The maps are made by ``explain(f, x, target, key)``, by default the registered slp method
``method`` (`slp.attribute`), and prepared as the given map is (``abs``, ``normalise``).

With ``return_nan_when_prediction_changes`` a sample whose arg-max class differs from the
one at ``x`` counts as NaN, and so does the score (Quantus's ``np.max`` / ``np.mean``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from slp.attributions.registry import resolve_target
from slp.metrics._common import (
    as_input,
    explainer,
    flat,
    map_steps,
    normalise_by_average_second_moment_estimate,
    normalise_by_max,
    positive,
    prepare,
    require_key,
)
from slp.metrics.registry import metric

__all__ = [
    "max_sensitivity",
    "avg_sensitivity",
    "local_lipschitz_estimate",
    "relative_input_stability",
]

_YEH = 'Yeh et al., "On the (in)fidelity and sensitivity of explanations", NeurIPS 2019'


def _samples(
    f,
    x,
    attribution,
    target,
    key,
    *,
    name,
    nr_samples,
    noise,
    explain,
    method,
    prepared,
    nan_on_change,
    compare,
):
    """``compare(a, a_i, x, x_i)`` for every noisy sample ``x_i = x + noise(k_i)``:
    ``(nr_samples,)``, NaN where the prediction changed (when ``nan_on_change``)."""
    key = require_key(key, name)
    x = as_input(x)
    y = f(x)
    t = resolve_target(y, target)
    explain = explainer(explain, method)
    a = prepared(attribution, x)

    def one(k):
        xi = x + noise(k, x)
        ai = prepared(explain(f, xi, t, jax.random.fold_in(k, 1)), x)
        if ai.shape != a.shape:
            raise ValueError(
                f"the maps explain returns are shaped {ai.shape}, the attribution {a.shape}: "
                "give the attribution in the shape the explanation has"
            )
        value = compare(flat(a), flat(ai), flat(x), flat(xi))
        if nan_on_change:
            value = jnp.where(jnp.argmax(f(xi)) == jnp.argmax(y), value, jnp.nan)
        return value

    return map_steps(one, jax.random.split(key, positive("nr_samples", nr_samples)))


def _uniform(lower_bound, upper_bound):
    """Quantus's uniform noise: ``U(-lower, lower)`` without ``upper_bound``."""
    lo, hi = (-lower_bound, lower_bound) if upper_bound is None else (lower_bound, upper_bound)
    if not hi > lo:
        raise ValueError(f"the noise needs upper_bound > lower_bound, got {lo} and {hi}")
    return lambda k, x: jax.random.uniform(k, x.shape, x.dtype, lo, hi)


def _preparation(abs, normalise, normalise_func):
    def prepared(m, x):
        return prepare(m, x, abs=abs, normalise=normalise, normalise_func=normalise_func)

    return prepared


def _sensitivity(
    f, x, attribution, target, key, *, name, reduce, lower_bound, upper_bound, **common
):
    def relative_change(a, ai, _x, _xi):
        return jnp.linalg.norm(a - ai) / jnp.linalg.norm(a)

    values = _samples(
        f,
        x,
        attribution,
        target,
        key,
        name=name,
        noise=_uniform(lower_bound, upper_bound),
        compare=relative_change,
        **common,
    )
    return reduce(values)


_SENSITIVITY_ARGS = """
    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input.
      attribution: the map (``x``'s shape, or its pixels for an image).
      target: class explained; None: the arg-max logit at ``x``.
      key: PRNG key of the noise (see `slp.metrics.robustness`).
      nr_samples: noisy copies.
      lower_bound, upper_bound: the noise is ``U(-lower_bound, lower_bound)`` per feature,
        or ``U(lower_bound, upper_bound)`` when ``upper_bound`` is given.
      return_nan_when_prediction_changes: NaN when a copy changes the predicted class.
      explain: ``explain(f, x, target, key) -> map``; None: ``method``.
      method: a registered slp method (`slp.available_methods`), used without ``explain``.
      abs, normalise, normalise_func: Quantus's preparation of every map.

    Returns:
      Scalar.
    """


@metric("MaxSensitivity", group="robustness", higher_is_better=False, reference=_YEH)
def max_sensitivity(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    return_nan_when_prediction_changes: bool = False,
    explain: Callable | None = None,
    method: str = "gradient",
    abs: bool = False,
    normalise: bool = False,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    return _sensitivity(
        f,
        x,
        attribution,
        target,
        key,
        name="MaxSensitivity",
        reduce=jnp.max,
        lower_bound=lower_bound,
        upper_bound=upper_bound,
        nr_samples=nr_samples,
        explain=explain,
        method=method,
        prepared=_preparation(abs, normalise, normalise_func),
        nan_on_change=return_nan_when_prediction_changes,
    )


max_sensitivity.__doc__ = (
    """Largest relative change of the map over noisy copies of the input.

    The score is ``max_i ||a - a_i|| / ||a||`` (Frobenius norms).
    """
    + _SENSITIVITY_ARGS
    + """
    Examples:
      >>> f = lambda x: jnp.stack([jax.nn.relu(x - 0.5).sum(), 0.0 * x.sum()])  # ReLU
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> g = slp.attribute(f, x, "gradient")  # 1 where x > 0.5: the noise moves it
      >>> k = jax.random.key(0)
      >>> round(float(slp.metrics.max_sensitivity(f, x, g, key=k, nr_samples=8)), 4)
      0.6547
      >>> round(float(slp.metrics.evaluate("MaxSensitivity", f, x, g, key=k, nr_samples=8)), 4)
      0.6547
    """
)


@metric("AvgSensitivity", group="robustness", higher_is_better=False, reference=_YEH)
def avg_sensitivity(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    nr_samples: int = 200,
    lower_bound: float = 0.2,
    upper_bound: float | None = None,
    return_nan_when_prediction_changes: bool = False,
    explain: Callable | None = None,
    method: str = "gradient",
    abs: bool = False,
    normalise: bool = False,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    return _sensitivity(
        f,
        x,
        attribution,
        target,
        key,
        name="AvgSensitivity",
        reduce=jnp.mean,
        lower_bound=lower_bound,
        upper_bound=upper_bound,
        nr_samples=nr_samples,
        explain=explain,
        method=method,
        prepared=_preparation(abs, normalise, normalise_func),
        nan_on_change=return_nan_when_prediction_changes,
    )


avg_sensitivity.__doc__ = (
    """Mean relative change of the map over noisy copies of the input.

    The score is ``mean_i ||a - a_i|| / ||a||`` (Frobenius norms).
    """
    + _SENSITIVITY_ARGS
    + """
    Examples:
      >>> f = lambda x: jnp.stack([jax.nn.relu(x - 0.5).sum(), 0.0 * x.sum()])  # ReLU
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> g = slp.attribute(f, x, "gradient")  # 1 where x > 0.5: the noise moves it
      >>> k = jax.random.key(0)
      >>> round(float(slp.metrics.avg_sensitivity(f, x, g, key=k, nr_samples=8)), 4)
      0.454
    """
)


@metric(
    "LocalLipschitzEstimate",
    group="robustness",
    higher_is_better=False,
    reference='Alvarez-Melis, Jaakkola, "On the robustness of interpretability methods", '
    "arXiv:1806.08049, 2018",
)
def local_lipschitz_estimate(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    nr_samples: int = 200,
    perturb_mean: float = 0.0,
    perturb_std: float = 0.1,
    return_nan_when_prediction_changes: bool = False,
    explain: Callable | None = None,
    method: str = "gradient",
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Largest ratio of the map's change to the input's over Gaussian noisy copies.

    The score is ``max_i ||a - a_i|| / (||x - x_i|| + 1e-10)``.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input.
      attribution: the map (``x``'s shape, or its pixels for an image).
      target: class explained; None: the arg-max logit at ``x``.
      key: PRNG key of the noise (see `slp.metrics.robustness`).
      nr_samples: noisy copies.
      perturb_mean, perturb_std: the noise is ``N(perturb_mean, perturb_std^2)`` per feature.
      return_nan_when_prediction_changes: NaN when a copy changes the predicted class.
      explain: ``explain(f, x, target, key) -> map``; None: ``method``.
      method: a registered slp method, used without ``explain``.
      abs, normalise, normalise_func: Quantus's preparation of every map.

    Returns:
      Scalar.

    Examples:
      >>> f = lambda x: jnp.stack([jax.nn.relu(x - 0.5).sum(), 0.0 * x.sum()])  # ReLU
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> g = slp.attribute(f, x, "gradient")  # 1 where x > 0.5: the noise moves it
      >>> k = jax.random.key(0)
      >>> lle = slp.metrics.local_lipschitz_estimate(f, x, g, key=k, nr_samples=8)
      >>> round(float(lle), 4)
      3.9585
    """

    def noise(k, x):
        return perturb_mean + perturb_std * jax.random.normal(k, x.shape, x.dtype)

    def lipschitz(a, ai, x, xi):
        return jnp.linalg.norm(a - ai) / (jnp.linalg.norm(x - xi) + 1e-10)

    values = _samples(
        f,
        x,
        attribution,
        target,
        key,
        name="LocalLipschitzEstimate",
        noise=noise,
        compare=lipschitz,
        nr_samples=nr_samples,
        explain=explain,
        method=method,
        prepared=_preparation(abs, normalise, normalise_func),
        nan_on_change=return_nan_when_prediction_changes,
    )
    return jnp.max(values)


@metric(
    "RelativeInputStability",
    group="robustness",
    higher_is_better=False,
    reference='Agarwal et al., "Rethinking stability for attribution-based explanations", '
    "arXiv:2203.06877, 2022",
)
def relative_input_stability(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    nr_samples: int = 200,
    lower_bound: float = 0.02,
    upper_bound: float | None = 0.2,
    eps_min: float = 1e-6,
    return_nan_when_prediction_changes: bool = True,
    explain: Callable | None = None,
    method: str = "gradient",
    abs: bool = False,
    normalise: bool = False,
    normalise_func: Callable = normalise_by_average_second_moment_estimate,
) -> jax.Array:
    """Largest ratio of the map's relative change to the input's relative change.

    ``max_i ||(a - a_i) / a|| / ||(x - x_i) / x||``, where a zero entry of ``a`` or ``x``
    divides by ``eps_min`` instead and a zero denominator becomes ``eps_min``.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input.
      attribution: the map (``x``'s shape, or its pixels for an image).
      target: class explained; None: the arg-max logit at ``x``.
      key: PRNG key of the noise (see `slp.metrics.robustness`).
      nr_samples: noisy copies.
      lower_bound, upper_bound: the noise, ``U(lower_bound, upper_bound)`` per feature
        (Quantus sets them through ``perturb_func_kwargs``; its defaults are these).
      eps_min: the stand-in for a zero divisor.
      return_nan_when_prediction_changes: NaN when a copy changes the predicted class
        (on by default, as in Quantus).
      explain: ``explain(f, x, target, key) -> map``; None: ``method``.
      method: a registered slp method, used without ``explain``.
      abs, normalise, normalise_func: Quantus's preparation of every map.

    Returns:
      Scalar.

    Examples:
      >>> f = lambda x: jnp.stack([jax.nn.relu(x - 0.5).sum(), 0.0 * x.sum()])  # ReLU
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> g = slp.attribute(f, x, "gradient")  # 1 where x > 0.5: the noise moves it
      >>> k = jax.random.key(0)
      >>> ris = slp.metrics.relative_input_stability(f, x, g, key=k, nr_samples=8)
      >>> round(float(ris), 2)  # large: zero entries of the map and of x divide by eps_min
      66.35
    """

    def stability(a, ai, x, xi):
        top = jnp.linalg.norm((a - ai) / (a + (a == 0) * eps_min))
        bottom = jnp.linalg.norm((x - xi) / (x + (x == 0) * eps_min))
        return top / (bottom + (bottom == 0) * eps_min)

    values = _samples(
        f,
        x,
        attribution,
        target,
        key,
        name="RelativeInputStability",
        noise=_uniform(lower_bound, upper_bound),
        compare=stability,
        nr_samples=nr_samples,
        explain=explain,
        method=method,
        prepared=_preparation(abs, normalise, normalise_func),
        nan_on_change=return_nan_when_prediction_changes,
    )
    return jnp.max(values)

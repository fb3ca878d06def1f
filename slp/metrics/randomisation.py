"""Randomisation: does a map change when the model's parameters or the target change?

Model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"): `layer_order`
and `cascading_randomization` re-initialise the layers of a flax parameter tree one by one
from the top (output) layer down.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence

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
from slp.metrics.similarity import spearman, ssim

__all__ = [
    "layer_order",
    "cascading_randomization",
    "random_logit",
    "mprt",
    "smooth_mprt",
    "efficient_mprt",
]


def _layers(params: Mapping) -> Mapping:
    if not isinstance(params, Mapping) or "params" not in params:
        raise ValueError(
            "expected a flax variables dict with a 'params' collection, e.g. model.init(...); "
            f"got {type(params).__name__}"
            + (f" with keys {sorted(params)}" if isinstance(params, Mapping) else "")
        )
    return params["params"]


def layer_order(params: Mapping) -> tuple[str, ...]:
    """Names of the top-level layers of a flax parameter tree, output layer first.

    flax records submodules in the order they were created, which for a sequential
    network (e.g. `slp.models.TwoConv`) is input to output; this is that order reversed.

    Args:
      params: flax variables ``{"params": {layer_name: {...}, ...}}``.

    Returns:
      Layer names, top (output) layer first.

    Examples:
      >>> model = slp.models.MLP(hidden=(8,), num_classes=3)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
      >>> slp.metrics.layer_order(params)
      ('Dense_1', 'Dense_0')
    """
    return tuple(reversed(tuple(_layers(params))))


def cascading_randomization(
    params: Mapping, random_params: Mapping, *, order: Sequence[str] | None = None
) -> list[tuple[str, Mapping]]:
    """Cascading model randomisation: re-initialise layers one by one from the top down.

    Step ``k`` (``k = 1..L``) replaces the first ``k`` layers of ``order`` with their
    values in ``random_params`` (a fresh initialisation of the same network, e.g.
    ``model.init`` with another key) and keeps the others trained.

    Args:
      params: trained flax variables ``{"params": {layer: subtree}}``.
      random_params: freshly initialised variables with the same structure.
      order: layer names to randomise, in order; default `layer_order` (output first).

    Returns:
      ``L`` pairs ``(name of the layer randomised last, variables)``.

    Raises:
      ValueError: if a layer of ``order`` is missing from either tree or differs in
        structure between them (or a tree is not a flax variables dict).

    Examples:
      >>> model = slp.models.MLP(hidden=(8,), num_classes=3)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
      >>> fresh = model.init(jax.random.key(1), jnp.zeros((1, 4, 4, 1)))  # another draw
      >>> steps = slp.metrics.cascading_randomization(params, fresh)
      >>> [name for name, _ in steps]
      ['Dense_1', 'Dense_0']
      >>> top_only = steps[0][1]["params"]
      >>> top_only["Dense_1"] is fresh["params"]["Dense_1"]  # the output layer randomised
      True
      >>> top_only["Dense_0"] is params["params"]["Dense_0"]  # the input layer still trained
      True
    """
    trained, fresh = _layers(params), _layers(random_params)
    order = layer_order(params) if order is None else tuple(order)
    unknown = [n for n in order if n not in trained or n not in fresh]
    if unknown:
        raise ValueError(f"layers {unknown} are not in both parameter trees; have {list(trained)}")
    for name in order:
        a, b = jax.tree.structure(trained[name]), jax.tree.structure(fresh[name])
        if a != b or jax.tree.map(jnp.shape, trained[name]) != jax.tree.map(jnp.shape, fresh[name]):
            raise ValueError(f"layer {name!r} differs in structure between the two trees")
    steps = []
    current = dict(trained)
    for name in order:
        current[name] = fresh[name]
        steps.append((name, {**dict(params), "params": dict(current)}))
    return steps


_HEDSTROM = (
    'Hedström et al., "Sanity checks revisited: an exploration to repair the model parameter '
    'randomisation test", XAI in Action workshop, NeurIPS 2023'
)
_ORDERS = ("top_down", "bottom_up", "independent")


@metric(
    "RandomLogit",
    group="randomisation",
    higher_is_better=False,
    reference='Sixt, Granz, Landgraf, "When explanations lie: why many modified BP '
    'attributions fail", ICML 2020',
)
def random_logit(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    num_classes: int = 1000,
    similarity_func: Callable = ssim,
    explain: Callable | None = None,
    method: str = "gradient",
    abs: bool = False,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    """Similarity of the map to the map of another class, drawn at random.

    The other class is ``o + (o >= target)`` with ``o = jax.random.randint(key, (), 0,
    num_classes - 1)`` (uniform over the classes but the target, as Quantus draws it); its
    map is explained with ``jax.random.fold_in(key, 1)``. A map that does not depend on the
    class explained (Insens's) scores the maximum similarity, 1 with `ssim`.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input.
      attribution: the map of ``target`` (``x``'s shape, or its pixels for an image).
      target: class explained; None: the arg-max logit at ``x``.
      key: PRNG key of the draw.
      num_classes: classes drawn from (at most the number of logits; Quantus's 1000 is
        ImageNet's).
      similarity_func: ``(a, b) -> scalar`` on the flattened maps, default `ssim`.
      explain: ``explain(f, x, target, key) -> map``; None: ``method``.
      method: a registered slp method (`slp.available_methods`), used without ``explain``.
      abs, normalise, normalise_func: Quantus's preparation of both maps.

    Returns:
      Scalar.

    Raises:
      ValueError: if ``num_classes`` is below 2 or above the number of logits.

    Examples:
      A linear two-class network: the gradient of the other class is the opposite map.

      >>> f = lambda x: jnp.stack([x.sum(), -x.sum()])
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> g = slp.attribute(f, x, "gradient")
      >>> k = jax.random.key(0)
      >>> round(float(slp.metrics.random_logit(f, x, g, key=k, num_classes=2)), 4)
      -0.9998
      >>> round(float(slp.metrics.evaluate("RandomLogit", f, x, g, key=k, num_classes=2)), 4)
      -0.9998
    """
    key = require_key(key, "RandomLogit")
    x = as_input(x)
    y = f(x)
    t = resolve_target(y, target)
    n = positive("num_classes", num_classes)
    if n < 2 or n > y.shape[-1]:
        raise ValueError(f"num_classes must be between 2 and the {y.shape[-1]} logits, got {n}")
    other = jax.random.randint(key, (), 0, n - 1)
    other = other + (other >= t)
    a = _prepared(attribution, x, abs, normalise, normalise_func)
    b = _prepared(
        explainer(explain, method)(f, x, other, jax.random.fold_in(key, 1)),
        x,
        abs,
        normalise,
        normalise_func,
    )
    return similarity_func(flat(a), flat(_same_shape(b, a)))


def _prepared(m, x, abs, normalise, normalise_func):
    return prepare(m, x, abs=abs, normalise=normalise, normalise_func=normalise_func)


def _same_shape(b, a):
    if b.shape != a.shape:
        raise ValueError(
            f"the maps explain returns are shaped {b.shape}, the attribution {a.shape}: give "
            "the attribution in the shape the explanation has"
        )
    return b


def _check_params(params, random_params):
    if params is None or random_params is None:
        raise ValueError(
            "the parameter randomisation tests need params= (the trained flax variables) and "
            "random_params= (a fresh initialisation, e.g. model.init with another key)"
        )


def _networks(params: Mapping, random_params: Mapping, order: str, skip_layers: bool):
    """``[(k, variables)]``: the trained network (``k = 0``) and the randomised ones of
    Quantus's ``layer_order`` named ``order`` (``k = 1..L``; only the last with
    ``skip_layers``)."""
    upward = tuple(reversed(layer_order(params)))  # input layer first
    if order == "top_down":
        steps = cascading_randomization(params, random_params)
    elif order == "bottom_up":
        steps = cascading_randomization(params, random_params, order=upward)
    elif order == "independent":
        steps = [cascading_randomization(params, random_params, order=[n])[0] for n in upward]
    else:
        raise ValueError(f"layer_order must be one of {_ORDERS}, got {order!r}")
    numbered = [(k, p) for k, (_, p) in enumerate(steps, start=1)]
    return [(0, params)] + (numbered[-1:] if skip_layers else numbered)


def _check_returns(return_average_correlation, return_last_correlation, skip_layers):
    if return_average_correlation and return_last_correlation:
        raise ValueError(
            "return_average_correlation and return_last_correlation exclude each other"
        )
    if return_average_correlation and skip_layers:
        raise ValueError("return_average_correlation needs every layer: skip_layers=False")


def _summary(similarities, *, average, last, include_original):
    if average:
        return jnp.mean(similarities if include_original else similarities[1:])
    if last:
        return similarities[-1]
    return similarities


_MPRT_ARGS = """
    Args:
      f: ``f(params, x) -> logits``, the network on one example for any parameters.
      x: one input.
      attribution: the map of the trained network (``x``'s shape, or its pixels).
      target: class explained; None: the arg-max logit of ``f(params, x)``.
      key: PRNG key, for explanations that draw numbers{key_extra}.
      params: the trained flax variables ``{{"params": {{layer: ...}}}}``.
      random_params: a fresh initialisation of the same network (``model.init`` with
        another key): randomising a layer takes its values from here. (Quantus draws them
        with torch's initialisers; its ``seed`` is this choice.)
      layer_order: ``"top_down"`` (output layer first, cumulative), ``"bottom_up"`` (input
        layer first, cumulative) or ``"independent"`` (one layer at a time, input first);
        the layers are the top-level entries of ``params["params"]`` (`layer_order`).
"""


def _explained(f, x, t, key, networks, explain, smooth):
    """The maps of the `_networks` (a Python list); network ``k`` explains with
    ``jax.random.fold_in(key, k)``."""
    maps = []
    for k, p in networks:
        kk = None if key is None else jax.random.fold_in(key, k)
        maps.append(smooth(functools.partial(f, p), x, t, kk, explain))
    return maps


def _plain(g, x, t, key, explain):
    return explain(g, x, t, key)


def _parameter_test(
    f,
    x,
    attribution,
    target,
    key,
    *,
    params,
    random_params,
    layer_order,
    skip_layers,
    explain,
    method,
    prepared,
    similarity_func,
    smooth,
):
    _check_params(params, random_params)
    x = as_input(x)
    t = resolve_target(f(params, x), target)
    networks = _networks(params, random_params, layer_order, skip_layers)
    a = prepared(attribution, x)
    maps = _explained(f, x, t, key, networks, explainer(explain, method), smooth)
    return jnp.stack([similarity_func(flat(a), flat(_same_shape(prepared(m, x), a))) for m in maps])


@metric(
    "MPRT",
    group="randomisation",
    higher_is_better=False,
    reference='Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018',
)
def mprt(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    params: Mapping | None = None,
    random_params: Mapping | None = None,
    layer_order: str = "top_down",
    similarity_func: Callable = spearman,
    return_average_correlation: bool = False,
    return_last_correlation: bool = False,
    skip_layers: bool = False,
    average_includes_original: bool = False,
    explain: Callable | None = None,
    method: str = "gradient",
    abs: bool = True,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_max,
) -> jax.Array:
    _check_returns(return_average_correlation, return_last_correlation, skip_layers)
    similarities = _parameter_test(
        f,
        x,
        attribution,
        target,
        key,
        params=params,
        random_params=random_params,
        layer_order=layer_order,
        skip_layers=skip_layers,
        explain=explain,
        method=method,
        prepared=lambda m, x: _prepared(m, x, abs, normalise, normalise_func),
        similarity_func=similarity_func,
        smooth=_plain,
    )
    return _summary(
        similarities,
        average=return_average_correlation,
        last=return_last_correlation,
        include_original=average_includes_original,
    )


_RETURNS = """      similarity_func: ``(a, b) -> scalar`` on the flattened maps, default `spearman`.
      return_average_correlation: return the mean similarity over the randomised models.
      return_last_correlation: return the similarity of the last randomised model.
      skip_layers: explain only the trained and the last randomised model.
      average_includes_original: the mean also counts the trained network's similarity, as
        Quantus 0.6.0 does (it means to skip that entry but looks for the key "orig").
      explain: ``explain(f, x, target, key) -> map``; None: ``method``.
      method: a registered slp method (`slp.available_methods`), used without ``explain``.
      abs, normalise, normalise_func: Quantus's preparation of every map.

    Returns:
      ``(1 + L,)`` similarities of the given map to the maps of the trained network and of
      the ``L`` randomised ones in order (``(2,)`` with ``skip_layers``), or a scalar with
      ``return_average_correlation`` / ``return_last_correlation``.
    """

mprt.__doc__ = (
    """Model Parameter Randomisation Test: similarity to the maps of randomised networks.

    The networks have more and more of their layers re-initialised. A map that explains
    the model changes as its weights are randomised: a low similarity is good. Quantus
    returns a dict of lists keyed by layer; the array here holds the same numbers in the
    same order, "original" first.
"""
    + _MPRT_ARGS.format(key_extra="")
    + _RETURNS
    + """
    Examples:
      >>> model = slp.models.MLP(hidden=(8,), num_classes=3)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
      >>> fresh = model.init(jax.random.key(1), jnp.zeros((1, 4, 4, 1)))  # another draw
      >>> f = lambda p, x: model.apply(p, x[None])[0]  # one example, any parameters
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> g = slp.attribute(lambda x: f(params, x), x, "gradient")  # the trained map
      >>> s = slp.metrics.mprt(f, x, g, params=params, random_params=fresh)
      >>> s.shape, float(s[0]), bool(jnp.all(s[1:] < 1))  # trained, Dense_1, then Dense_0 too
      ((3,), 1.0, True)
      >>> last = slp.metrics.evaluate(
      ...     "MPRT", f, x, g, params=params, random_params=fresh, return_last_correlation=True
      ... )
      >>> bool(last == s[-1])
      True
    """
)


@metric("SmoothMPRT", group="randomisation", higher_is_better=False, reference=_HEDSTROM)
def smooth_mprt(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    params: Mapping | None = None,
    random_params: Mapping | None = None,
    layer_order: str = "bottom_up",
    nr_samples: int = 50,
    noise_magnitude: float = 0.1,
    similarity_func: Callable = spearman,
    return_average_correlation: bool = False,
    return_last_correlation: bool = False,
    skip_layers: bool = False,
    average_includes_original: bool = False,
    explain: Callable | None = None,
    method: str = "gradient",
    abs: bool = True,
    normalise: bool = True,
    normalise_func: Callable = normalise_by_average_second_moment_estimate,
) -> jax.Array:
    _check_returns(return_average_correlation, return_last_correlation, skip_layers)
    key = require_key(key, "SmoothMPRT")
    n = positive("nr_samples", nr_samples)

    def smooth(g, x, t, k, explain):
        std = noise_magnitude * (jnp.max(x) - jnp.min(x))
        keys = jax.random.split(k, n)
        noise = jax.vmap(lambda kk: std * jax.random.normal(kk, x.shape, x.dtype))(keys[:-1])
        noisy = jnp.concatenate([x[None] + noise, x[None]])  # the last copy is x itself
        maps = map_steps(lambda c: explain(g, c[0], t, jax.random.fold_in(c[1], 1)), (noisy, keys))
        return jnp.mean(maps, axis=0)

    similarities = _parameter_test(
        f,
        x,
        attribution,
        target,
        key,
        params=params,
        random_params=random_params,
        layer_order=layer_order,
        skip_layers=skip_layers,
        explain=explain,
        method=method,
        prepared=lambda m, x: _prepared(m, x, abs, normalise, normalise_func),
        similarity_func=similarity_func,
        smooth=smooth,
    )
    return _summary(
        similarities,
        average=return_average_correlation,
        last=return_last_correlation,
        include_original=average_includes_original,
    )


smooth_mprt.__doc__ = (
    """MPRT on SmoothGrad-style averaged maps.

    Each network's map is the mean of its maps at ``nr_samples`` copies of ``x``, all but
    the last with Gaussian noise of standard deviation ``noise_magnitude * (max x - min x)``.

    The noise of network ``k`` (0: the trained one; 1..L: the randomised ones in order,
    whether or not ``skip_layers`` leaves some out) comes from
    ``jax.random.split(jax.random.fold_in(key, k), nr_samples)``, its copy ``j`` from
    entry ``j``. Quantus averages its own ``quantus.explain`` maps here whatever
    ``explain_func`` it is given; slp averages the maps of ``explain``.
"""
    + _MPRT_ARGS.format(key_extra=" (required: it draws the noise)")
    + """      nr_samples: copies averaged per network (the last without noise).
      noise_magnitude: the noise's standard deviation, as a share of ``x``'s range.
"""
    + _RETURNS
    + """
    Examples:
      >>> model = slp.models.MLP(hidden=(8,), num_classes=3)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
      >>> fresh = model.init(jax.random.key(1), jnp.zeros((1, 4, 4, 1)))  # another draw
      >>> f = lambda p, x: model.apply(p, x[None])[0]  # one example, any parameters
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> g = slp.attribute(lambda x: f(params, x), x, "gradient")  # the trained map
      >>> s = slp.metrics.smooth_mprt(
      ...     f, x, g, key=jax.random.key(0), params=params, random_params=fresh, nr_samples=4
      ... )
      >>> s.shape, bool(s[0] > s[-1])  # input layer first (bottom_up): Dense_0, then Dense_1
      ((3,), True)
    """
)


def _histogram_entropy(v: jax.Array, n_bins: int) -> jax.Array:
    """Entropy of the histogram of ``v`` in ``n_bins`` equal bins over its range (NumPy's
    ``histogram`` binning, SciPy's ``entropy`` of the counts)."""
    v = jnp.ravel(v)
    lo, hi = jnp.min(v), jnp.max(v)
    lo, hi = jnp.where(lo == hi, lo - 0.5, lo), jnp.where(lo == hi, hi + 0.5, hi)
    edges = jnp.linspace(lo, hi, n_bins + 1)
    index = ((v - lo) / (hi - lo) * n_bins).astype(jnp.int32)
    index = jnp.where(index == n_bins, n_bins - 1, index)
    index = jnp.where(v < edges[index], index - 1, index)  # NumPy's one-ulp corrections
    index = jnp.where((v >= edges[index + 1]) & (index != n_bins - 1), index + 1, index)
    counts = jnp.zeros(n_bins, v.dtype).at[index].add(1)
    p = counts / counts.sum()
    return -jnp.sum(jax.scipy.special.xlogy(p, p))


@metric("EfficientMPRT", group="randomisation", higher_is_better=True, reference=_HEDSTROM)
def efficient_mprt(
    f: Callable,
    x: jax.Array,
    attribution: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    params: Mapping | None = None,
    random_params: Mapping | None = None,
    layer_order: str = "bottom_up",
    n_bins: int = 100,
    skip_layers: bool = True,
    explain: Callable | None = None,
    method: str = "gradient",
    abs: bool = False,
    normalise: bool = False,
    normalise_func: Callable = normalise_by_average_second_moment_estimate,
) -> jax.Array:
    """Relative rise in the complexity of the map when the network is fully randomised.

    ``(H(e_random) - H(e)) / H(e)``, with ``e`` the map of the trained network, ``e_random``
    that of the last randomised one (all layers, in the cumulative orders) and ``H`` the
    entropy of a map's histogram in ``n_bins`` bins (Quantus's ``discrete_entropy``). A map
    that explains the model loses its structure: a high score is good. As in Quantus, the
    given ``attribution`` is only checked: both maps are explained here.

    Args:
      f: ``f(params, x) -> logits``, the network on one example for any parameters.
      x: one input.
      attribution: a map of ``x`` (checked, not used).
      target: class explained; None: the arg-max logit of ``f(params, x)``.
      key: PRNG key, for explanations that draw numbers.
      params: the trained flax variables.
      random_params: a fresh initialisation of the same network.
      layer_order: ``"bottom_up"``, ``"top_down"`` or ``"independent"`` (see `mprt`).
      n_bins: histogram bins (Quantus's ``complexity_func_kwargs["n_bins"]``).
      skip_layers: explain only the trained and the last randomised network (the score
        needs no other).
      explain: ``explain(f, x, target, key) -> map``; None: ``method``.
      method: a registered slp method, used without ``explain``.
      abs, normalise, normalise_func: Quantus's preparation of both maps.

    Returns:
      Scalar.

    Examples:
      >>> model = slp.models.MLP(hidden=(8,), num_classes=3)
      >>> params = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 1)))
      >>> fresh = model.init(jax.random.key(1), jnp.zeros((1, 4, 4, 1)))  # another draw
      >>> f = lambda p, x: model.apply(p, x[None])[0]  # one example, any parameters
      >>> x = jnp.arange(16.0).reshape(4, 4, 1) / 16
      >>> g = slp.attribute(lambda x: f(params, x), x, "gradient")  # the trained map
      >>> e = slp.metrics.efficient_mprt(f, x, g, params=params, random_params=fresh, n_bins=8)
      >>> round(float(e), 2)
      0.12
    """
    del skip_layers  # only the first and the last network count
    _check_params(params, random_params)
    x = as_input(x)
    a = _prepared(attribution, x, abs, normalise, normalise_func)
    t = resolve_target(f(params, x), target)
    networks = _networks(params, random_params, layer_order, True)
    maps = _explained(f, x, t, key, networks, explainer(explain, method), _plain)
    bins = positive("n_bins", n_bins)
    before, after = (
        _histogram_entropy(_same_shape(_prepared(m, x, abs, normalise, normalise_func), a), bins)
        for m in maps
    )
    return (after - before) / before

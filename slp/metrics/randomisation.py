"""Randomisation: does a map change when the model's parameters or the target change?

Model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"): `layer_order`
and `cascading_randomization` re-initialise the layers of a flax parameter tree one by one
from the top (output) layer down.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp

__all__ = ["layer_order", "cascading_randomization"]


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

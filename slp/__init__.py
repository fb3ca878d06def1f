"""slp: switched linear projections and Insens for ReLU networks in JAX.

For a ReLU network ``f`` and an input ``x``, every neuron's activity is one affine map of
``x``, ``v = x . w_hat + b_hat`` (Theorem 1, eq. 2); ``slp.switched_projections(f)(x)``
returns ``w_hat``, ``b_hat`` and ``v`` of every neuron, ``slp.insens(f)(x)`` the Insens map
(eq. 8), shaped like ``x``. ``f`` is any per-example JAX function of affine maps, ReLUs and
pooling (flax, equinox, dm-haiku or plain ``jnp``); ``slp.insens_plan(f, x)`` says how
Insens will be computed.

First contact, with a small trained network and MNIST digits shipped in the package::

    import slp
    from slp.data import example_digits, example_model

    net, digits = example_model(), example_digits()
    f = lambda x: net.model.apply(net.params, x[None])[0]
    omega = slp.insens(f)(digits.images[7])  # (28, 28, 1)

Public modules:

- ``slp.projections``: the paper's objects (switched projections, centres, activities);
  their functions and Insens (``slp.insens``, ``slp.insens_plan``, ...) are at the top level.
- ``slp.attributions``: Insens and the baselines (gradients, LRP, Deep Taylor, ...) behind
  ``slp.attribute(f, x, method)``.
- ``slp.metrics``: the field's evaluation metrics under Quantus's names
  (``slp.metrics.evaluate``), similarity, locality, deletion/insertion, model randomisation.
- ``slp.maps``: attribution maps of a whole data set (``python -m slp maps``).
- ``slp.models``: the paper's networks (2CONV, the Q-network, ...); ``slp.torchvision``
  loads torchvision weights into them.
- ``slp.network``: `trace`, the check that slp follows ``f`` (its affine maps, ReLUs and
  pools), and the error that names an operation it does not.
- ``slp.checkpoints``: the one checkpoint format (a msgpack array file and a JSON sidecar,
  format and shapes checked on loading).
- ``slp.training``: training and checkpoints of 2CONV; its `TrainConfig` is defined in
  ``slp.config``, which imports no jax (so that command lines answer ``--help`` at once).
- ``slp.noise``: the paper's noisy MNIST variants.
- ``slp.plotting``: heatmaps with a colour key.
- ``slp.data``: MNIST, Fashion-MNIST, CIFAR-10, smallNORB and the bundled example.
- Atari Pong and DQN are not part of the library: that scaffolding lives in
  ``experiments/lab/rl`` (the ``rl`` extra installs its dependencies).

Public names, by module (each module's ``__all__``; a name not listed here is not public
API and may change):

``slp``
    ``activation_pattern``, ``activities``, ``attribute``, ``attribute_dataset``,
    ``available_methods``, ``ChunkedMaps``, ``explicit_projections``, ``insens``,
    ``insens_plan``, ``InsensEstimate``, ``InsensPlan``, ``LayerInsens``,
    ``ManifestMismatchError``, ``per_example``, ``Projection``, ``read_maps``,
    ``single_example``, ``switched_centres``, ``switched_projections``,
    ``UnsupportedOperationError``
``slp.attributions``
    ``attribute``, ``available_methods``, ``conventions``, ``deconvnet``, ``deep_taylor``,
    ``deep_taylor_bounded``, ``get_method``, ``gradient``, ``gradient_x_input``,
    ``guided_backprop``, ``insens_attribution``, ``integrated_gradients``, ``lrp``,
    ``lrp_alpha1_beta0``, ``lrp_alpha2_beta1``, ``lrp_alpha_beta``, ``lrp_epsilon``,
    ``lrp_zplus``, ``register``, ``smoothgrad``
``slp.checkpoints``
    ``Checkpoint``, ``FORMAT``, ``load``, ``read_metadata``, ``save``
``slp.config``
    ``DEFAULT_SIGMA``, ``TrainConfig``
``slp.data``
    ``CorruptDataError``, ``data_dir``, ``Dataset``, ``DatasetNotFoundError``,
    ``example_digits``, ``example_model``, ``ExampleDigits``, ``fetch_cifar10``,
    ``fetch_fashion_mnist``, ``fetch_mnist``, ``load_cifar10``, ``load_fashion_mnist``,
    ``load_mnist``, ``load_smallnorb``, ``read_idx``
``slp.maps``
    ``attribute_dataset``, ``ChunkedMaps``, ``IncompleteMapsError``,
    ``ManifestMismatchError``, ``read_maps``
``slp.metrics``
    ``attribution_localisation``, ``available_metrics``, ``average_ranks``,
    ``avg_sensitivity``, ``cascading_randomization``, ``completeness``, ``complexity``,
    ``cosine_similarity``, ``curve_area``, ``deletion_curve``, ``effective_complexity``,
    ``efficient_mprt``, ``evaluate``, ``faithfulness_correlation``,
    ``faithfulness_estimate``, ``focus``, ``get_metric``, ``GROUPS``,
    ``input_invariance``, ``insertion_curve``, ``layer_order``,
    ``local_lipschitz_estimate``, ``mass_on_mask``, ``max_sensitivity``, ``MetricSpec``,
    ``monotonicity``, ``mprt``, ``noisy_linear_imputation``, ``non_sensitivity``,
    ``normalise_by_average_second_moment_estimate``, ``normalise_by_max``, ``pearson``,
    ``PerturbationCurve``, ``pixel_flipping``, ``pixel_map``, ``pixel_order``,
    ``pointing_game``, ``random_logit``, ``random_scores``, ``region_perturbation``,
    ``relative_input_stability``, ``relevance_mass_accuracy``,
    ``relevance_rank_accuracy``, ``road``, ``selectivity``, ``smooth_mprt``,
    ``sparseness``, ``spearman``, ``ssim``, ``top_k_intersection``
``slp.models``
    ``as_single_example``, ``MLP``, ``QNetwork``, ``ResNet50``, ``TwoConv``, ``VGG16``
``slp.network``
    ``trace``, ``UnsupportedOperationError``
``slp.noise``
    ``add_noise``, ``background``, ``bordered``, ``clean_mask``, ``DEFAULT_SIGMA``,
    ``digit_mask``, ``DIGIT_THRESHOLD``, ``frame_mask``, ``framed``, ``make_noisy``,
    ``make_noisy_batch``, ``outline_mask``, ``OUTLINE_RADIUS``, ``VARIANTS``
``slp.plotting``
    ``canvas``, ``colour_bar``, ``colour_key``, ``grid_figure``, ``heatmap``,
    ``HEATMAP_CMAP``, ``mark_undefined``, ``save_figure``, ``show_image``,
    ``symmetric_limit``, ``undefined_reason``, ``UNDEFINED_MARK``
``slp.projections``
    ``activation_pattern``, ``activities``, ``explicit_projections``, ``Projection``,
    ``switched_centres``, ``switched_projections``
``slp.torchvision``
    ``convert``, ``to_state_dict``
``slp.training``
    ``accuracy``, ``init_params``, ``load_checkpoint``, ``load_mnist_float``,
    ``load_or_train``, ``load_or_train_mnist``, ``make_model``, ``predict_logits``,
    ``save_checkpoint``, ``to_float_images``, ``train``, ``TrainConfig``, ``TrainOutput``

The implementation behind the top-level functions lives in the private package ``slp._src``
(as in ``jax._src`` and ``optax._src``); nothing in it is public API.
``import slp`` is cheap: each public module (and jax) is imported on first use.

Reference: L. Szymanski, B. McCane, C. Atkinson, "Switched linear projections and
inactive state sensitivity for deep neural network interpretability",
arXiv:1909.11275.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public modules, imported on first attribute access (PEP 562), so that ``import slp`` and
# ``import slp.config`` do not import jax.
_MODULES = frozenset(
    {
        "attributions",
        "checkpoints",
        "config",
        "data",
        "maps",
        "metrics",
        "models",
        "network",
        "noise",
        "plotting",
        "projections",
        "torchvision",
        "training",
    }
)
# Top-level names and the module that defines each.
_NAMES = {
    "per_example": "slp._src.guards",
    "single_example": "slp._src.guards",
    "attribute": "slp.attributions",
    "available_methods": "slp.attributions",
    "InsensEstimate": "slp._src.insens",
    "InsensPlan": "slp._src.insens",
    "LayerInsens": "slp._src.insens",
    "insens": "slp._src.insens",
    "insens_plan": "slp._src.insens",
    "ChunkedMaps": "slp.maps",
    "ManifestMismatchError": "slp.maps",
    "attribute_dataset": "slp.maps",
    "read_maps": "slp.maps",
    "UnsupportedOperationError": "slp.network",
    "Projection": "slp.projections",
    "activation_pattern": "slp.projections",
    "activities": "slp.projections",
    "explicit_projections": "slp.projections",
    "switched_centres": "slp.projections",
    "switched_projections": "slp.projections",
}

__all__ = [
    "ChunkedMaps",
    "InsensEstimate",
    "InsensPlan",
    "LayerInsens",
    "ManifestMismatchError",
    "Projection",
    "UnsupportedOperationError",
    "activation_pattern",
    "activities",
    "attribute",
    "attribute_dataset",
    "available_methods",
    "explicit_projections",
    "insens",
    "insens_plan",
    "per_example",
    "read_maps",
    "single_example",
    "switched_centres",
    "switched_projections",
]


def __getattr__(name: str):
    if name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name]), name)
    elif name in _MODULES:
        value = importlib.import_module(f"slp.{name}")
    else:
        raise AttributeError(f"module 'slp' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_NAMES, *_MODULES})


if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from slp._src.guards import per_example, single_example
    from slp._src.insens import InsensEstimate, InsensPlan, LayerInsens, insens, insens_plan
    from slp.attributions import attribute, available_methods
    from slp.maps import ChunkedMaps, ManifestMismatchError, attribute_dataset, read_maps
    from slp.network import UnsupportedOperationError
    from slp.projections import (
        Projection,
        activation_pattern,
        activities,
        explicit_projections,
        switched_centres,
        switched_projections,
    )

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

- ``slp.projections`` and the module ``slp.insens``: the paper's objects; their functions
  are at the top level (``slp.switched_projections``, ``slp.insens``, ``slp.insens_plan``, ...).
- ``slp.attributions``: Insens and the baselines (gradients, LRP, Deep Taylor, ...) behind
  ``slp.attribute(f, x, method)``.
- ``slp.metrics``: robustness, locality, deletion/insertion, model randomisation.
- ``slp.maps``: attribution maps of a whole data set (``python -m slp maps``).
- ``slp.models``: the paper's networks (2CONV, the Q-network, ...); ``slp.torchvision``
  loads torchvision weights into them.
- ``slp.network``: the walker that finds the affine maps, ReLUs and pools in ``f``.
- ``slp.training``: training and checkpoints of 2CONV.
- ``slp.noise``: the paper's noisy MNIST variants.
- ``slp.plotting``: heatmaps with a colour key.
- ``slp.data``: MNIST, Fashion-MNIST, CIFAR-10, smallNORB and the bundled example.
- Atari Pong and DQN are not part of the library: that scaffolding lives in
  ``experiments/lab/rl`` (the ``rl`` extra installs its dependencies).

Modules whose names start with an underscore are internal (``help(slp)`` lists them under
PACKAGE CONTENTS too, as it lists every file of a package).

Reference: L. Szymanski, B. McCane, C. Atkinson, "Switched linear projections and
inactive state sensitivity for deep neural network interpretability",
arXiv:1909.11275.
"""

from slp import attributions, metrics, models, network
from slp._guards import per_example, single_example
from slp.attributions import attribute, available_methods
from slp.insens import InsensEstimate, InsensPlan, LayerInsens, insens, insens_plan
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

__version__ = "0.1.0"

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
    "attributions",
    "available_methods",
    "explicit_projections",
    "insens",
    "insens_plan",
    "metrics",
    "models",
    "network",
    "per_example",
    "single_example",
    "read_maps",
    "switched_centres",
    "switched_projections",
]

"""slp: switched linear projections and Insens for ReLU networks in JAX.

Reference: L. Szymanski, B. McCane, C. Atkinson, "Switched linear projections and
inactive state sensitivity for deep neural network interpretability",
arXiv:1909.11275.
"""

from slp import attributions, metrics, models, network
from slp._guards import per_example, single_example
from slp.attributions import attribute, available_methods
from slp.insens import InsensPlan, LayerInsens, insens, insens_plan
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

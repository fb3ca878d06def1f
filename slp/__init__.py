"""slp: switched linear projections and Insens for ReLU networks in JAX.

Reference: L. Szymanski, B. McCane, C. Atkinson, "Switched linear projections and
inactive state sensitivity for deep neural network interpretability",
arXiv:1909.11275.
"""

from slp import attributions, metrics, models, network
from slp.attributions import attribute, available_methods
from slp.insens import InsensPlan, LayerInsens, insens, insens_plan
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
    "InsensPlan",
    "LayerInsens",
    "Projection",
    "UnsupportedOperationError",
    "activation_pattern",
    "activities",
    "attribute",
    "attributions",
    "available_methods",
    "explicit_projections",
    "insens",
    "insens_plan",
    "metrics",
    "models",
    "network",
    "switched_centres",
    "switched_projections",
]

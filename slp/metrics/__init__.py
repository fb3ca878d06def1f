"""Measures of attribution maps: similarity, locality, faithfulness, model dependence.

The paper compares methods visually; these functions measure what its figures show.
All are pure functions of one example (batch them with `jax.vmap`) unless they say
otherwise; none compiles anything itself.

- Similarity of two maps: `spearman` (rank correlation, ties get their average rank),
  `pearson`, `cosine_similarity`.
- Locality: `mass_on_mask`, the share of a map's absolute mass on a region (for MNIST
  the digit and its 3-pixel outline, `slp.noise.clean_mask("bordered", x)`).
- Faithfulness: `deletion_curve` and `insertion_curve` (Samek et al. 2017, "Evaluating
  the visualization of what a deep neural network has learned"; Petsiuk et al. 2018,
  RISE) and their areas `curve_area`; `random_scores` gives the random-order reference.
  **Replacement baseline**: a perturbed pixel takes the value of ``baseline`` (a scalar,
  or an array shaped like the image); the experiments use 0 for MNIST (the background's
  value) and the training set's mean colour for CIFAR-10. A pixel is all channels of one
  image position: they are removed together.
- Model randomisation (Adebayo et al. 2018, "Sanity checks for saliency maps"):
  `layer_order` and `cascading_randomization` re-initialise the layers of a flax
  parameter tree one by one from the top (output) layer down.

Maps with a channel axis ``(H, W, C)`` become pixel maps ``(H, W)`` with `pixel_map`
(channels summed, keeping the signed total per pixel, as `slp.plotting` draws them).
Undefined values (the correlation of a constant map, the share of an all-zero map) are
NaN, so that callers can drop them explicitly instead of averaging in a made-up number.
"""

from __future__ import annotations

from slp.metrics._common import (
    normalise_by_average_second_moment_estimate,
    normalise_by_max,
)
from slp.metrics.axiomatic import completeness, input_invariance, non_sensitivity
from slp.metrics.complexity import complexity, effective_complexity, sparseness
from slp.metrics.curves import (
    PerturbationCurve,
    curve_area,
    deletion_curve,
    insertion_curve,
    pixel_order,
    random_scores,
)
from slp.metrics.faithfulness import (
    faithfulness_correlation,
    faithfulness_estimate,
    monotonicity,
    noisy_linear_imputation,
    pixel_flipping,
    region_perturbation,
    road,
    selectivity,
)
from slp.metrics.localisation import (
    attribution_localisation,
    focus,
    mass_on_mask,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_k_intersection,
)
from slp.metrics.randomisation import (
    cascading_randomization,
    efficient_mprt,
    layer_order,
    mprt,
    random_logit,
    smooth_mprt,
)
from slp.metrics.registry import (
    GROUPS,
    MetricSpec,
    available_metrics,
    evaluate,
    get_metric,
)
from slp.metrics.robustness import (
    avg_sensitivity,
    local_lipschitz_estimate,
    max_sensitivity,
    relative_input_stability,
)
from slp.metrics.similarity import (
    average_ranks,
    cosine_similarity,
    pearson,
    pixel_map,
    spearman,
    ssim,
)

__all__ = [
    "PerturbationCurve",
    "pixel_map",
    "average_ranks",
    "pearson",
    "spearman",
    "cosine_similarity",
    "ssim",
    "mass_on_mask",
    "pixel_order",
    "random_scores",
    "deletion_curve",
    "insertion_curve",
    "curve_area",
    "layer_order",
    "cascading_randomization",
    "GROUPS",
    "MetricSpec",
    "available_metrics",
    "get_metric",
    "evaluate",
    "normalise_by_max",
    "normalise_by_average_second_moment_estimate",
    "pixel_flipping",
    "faithfulness_correlation",
    "faithfulness_estimate",
    "monotonicity",
    "region_perturbation",
    "selectivity",
    "road",
    "noisy_linear_imputation",
    "max_sensitivity",
    "avg_sensitivity",
    "local_lipschitz_estimate",
    "relative_input_stability",
    "sparseness",
    "complexity",
    "effective_complexity",
    "random_logit",
    "mprt",
    "smooth_mprt",
    "efficient_mprt",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "top_k_intersection",
    "pointing_game",
    "attribution_localisation",
    "focus",
    "completeness",
    "non_sensitivity",
    "input_invariance",
]

"""Measures of attribution maps: the field's evaluation metrics, similarity, locality.

All are pure functions of one example (batch them with `jax.vmap`); none compiles
anything itself.

**The field's metrics under Quantus's names.** ``evaluate(name, f, x, attribution, *,
target=None, mask=None, key=None, **options)`` scores one example with the metric that
Quantus (Hedström et al. 2023, version 0.6.0) calls ``name``, and returns what Quantus
returns for that example; the snake_case function of each metric is the same code.
``options`` are Quantus's keyword names with Quantus's defaults (``get_metric(name)
.options`` lists them); one a metric does not take raises, naming those it does. ``mask``
is the localisation metrics' segmentation mask, ``key`` drives every random draw, and the
metrics that explain again take ``explain=lambda f, x, target, key: map`` or, by default,
a registered slp method by name (``method="gradient"``; ``method="insens"`` scores
Insens). ``jax.jit(evaluate, static_argnames=("name", "f", ...))`` with the non-array
options static, and ``jax.vmap`` over ``x``, ``attribution``, ``target``, ``mask`` and
``key``, work. The parameter randomisation tests take ``f(params, x)`` with ``params=``
(a flax parameter tree) and ``random_params=`` (a fresh initialisation).

======================= ============= ====== ======================== ============================
Quantus name            group         good   function                 reference
======================= ============= ====== ======================== ============================
PixelFlipping           faithfulness  lower  pixel_flipping           Bach et al. 2015
FaithfulnessCorrelation faithfulness  higher faithfulness_correlation Bhatt et al. 2020
FaithfulnessEstimate    faithfulness  higher faithfulness_estimate    Alvarez-Melis, Jaakkola 2018
Monotonicity            faithfulness  higher monotonicity             Arya et al. 2019
RegionPerturbation      faithfulness  higher region_perturbation      Samek et al. 2017
Selectivity             faithfulness  lower  selectivity              Montavon et al. 2018
ROAD                    faithfulness  lower  road                     Rong et al. 2022
MaxSensitivity          robustness    lower  max_sensitivity          Yeh et al. 2019
AvgSensitivity          robustness    lower  avg_sensitivity          Yeh et al. 2019
LocalLipschitzEstimate  robustness    lower  local_lipschitz_estimate Alvarez-Melis, Jaakkola 2018
RelativeInputStability  robustness    lower  relative_input_stability Agarwal et al. 2022
RandomLogit             randomisation lower  random_logit             Sixt et al. 2020
MPRT                    randomisation lower  mprt                     Adebayo et al. 2018
SmoothMPRT              randomisation lower  smooth_mprt              Hedström et al. 2023
EfficientMPRT           randomisation higher efficient_mprt           Hedström et al. 2023
Sparseness              complexity    higher sparseness               Chalasani et al. 2020
Complexity              complexity    lower  complexity               Bhatt et al. 2020
EffectiveComplexity     complexity    lower  effective_complexity     Nguyen, Martínez 2020
RelevanceMassAccuracy   localisation  higher relevance_mass_accuracy  Arras et al. 2022
RelevanceRankAccuracy   localisation  higher relevance_rank_accuracy  Arras et al. 2022
TopKIntersection        localisation  higher top_k_intersection       Theiner et al. 2021
PointingGame            localisation  higher pointing_game            Zhang et al. 2018
AttributionLocalisation localisation  higher attribution_localisation Kohlbrenner et al. 2020
Focus                   localisation  higher focus                    Arias-Duart et al. 2022
Completeness            axiomatic     higher completeness             Sundararajan et al. 2017
NonSensitivity          axiomatic     lower  non_sensitivity          Nguyen, Martínez 2020
InputInvariance         axiomatic     higher input_invariance         Kindermans et al. 2019
======================= ============= ====== ======================== ============================

"good" is the direction of a better map (``get_metric(name).higher_is_better``; the full
reference is ``get_metric(name).reference``). For RegionPerturbation Quantus declares
"lower", though its curve holds drops in the output, which a good map makes large.

**What they mean for Insens.** Insens's map does not depend on the class explained: a
map of one input serves every target. RandomLogit therefore cannot separate classes by
construction (its map of another class is the same map: SSIM 1, the worst score). The
faithfulness metrics follow one target's output (the arg-max by default), so they measure
how much of that output Insens's map accounts for. Completeness is not a property Insens
claims (its map does not sum to an output). Insens is input invariant (a shift that the
first layer undoes changes no activity and no switched weight), and it depends on every
layer's weights, so the parameter randomisation tests apply as to any method. The
localisation and complexity metrics look at the map alone.

**Where slp differs from Quantus 0.6.0** (each metric's docstring says more):
normalisation is per example (Quantus normalises by the batch it is given: the same for a
batch of one); ties in a map keep raster order (Quantus's NumPy ``argsort`` promises no
order among ties); ``perturb_baseline="mean"`` is the mean of ``x`` (Quantus recomputes it
on the partly perturbed image in its cumulative metrics); random draws come from ``key``.
Quantus bugs, each documented with a reproducer in ``tests/library/test_metrics_quantus.py`` and
Quantus's behaviour available as an option where it is a behaviour: Monotonicity never
restores the input (``insert_baseline=True``); the MPRT averages count the trained network
(``average_includes_original=True``); PointingGame stores scores in a bool array;
AttributionLocalisation's weighted score depends on the batch size; NonSensitivity fails
for ``features_in_step > 1``; ROAD averages its first batch only; InputInvariance's bias
shift is inexact after a padded convolution; SmoothMPRT ignores its ``explain_func``.

**Similarity of two maps**: `spearman` (rank correlation, ties get their average rank),
`pearson`, `cosine_similarity`, `ssim`.

**Locality**: `mass_on_mask`, the share of a map's absolute mass on a region (for MNIST
the digit and its 3-pixel outline, `slp.noise.clean_mask("bordered", x)`).

**Deletion and insertion**: `deletion_curve` and `insertion_curve` (Samek et al. 2017,
"Evaluating the visualization of what a deep neural network has learned"; Petsiuk et al.
2018, RISE) and their areas `curve_area`; `random_scores` gives the random-order
reference. A perturbed pixel takes the value of ``baseline`` (a scalar, or an array shaped
like the image); the experiments use 0 for MNIST (the background's value) and the
training set's mean colour for CIFAR-10. A pixel is all channels of one image position:
they are removed together. (PixelFlipping is the same walk over features.)

**Model randomisation** (Adebayo et al. 2018, "Sanity checks for saliency maps"):
`layer_order` and `cascading_randomization` re-initialise the layers of a flax parameter
tree one by one from the top (output) layer down; `mprt` scores maps along that walk.

Maps with a channel axis ``(H, W, C)`` become pixel maps ``(H, W)`` with `pixel_map`
(channels summed, keeping the signed total per pixel, as `slp.plotting` draws them).
Undefined values (the correlation of a constant map, the share of an all-zero map) are
NaN, so that callers can drop them explicitly instead of averaging in a made-up number.
A map with a NaN or inf entry (slp's maps are NaN where they are undefined) has no score:
`evaluate` raises for a concrete one and gives NaN under `jax.jit` or `jax.vmap`, and the
curves and `spearman` are NaN.
"""

from __future__ import annotations

from slp.metrics._common import (
    normalise_by_average_second_moment_estimate,
    normalise_by_max,
)
from slp.metrics.axiomatic import completeness, input_invariance, non_sensitivity
from slp.metrics.concentration import complexity, effective_complexity, sparseness
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

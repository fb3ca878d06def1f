"""Attribution methods, all on one registry: ``slp.attribute(f, x, method, ...)``."""

from slp.attributions import conventions
from slp.attributions.basic import gradient, insens_attribution
from slp.attributions.gradients import (
    deconvnet,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
)
from slp.attributions.registry import attribute, available_methods, get_method, register
from slp.attributions.relevance import (
    deep_taylor,
    deep_taylor_bounded,
    lrp,
    lrp_alpha1_beta0,
    lrp_alpha2_beta1,
    lrp_alpha_beta,
    lrp_epsilon,
    lrp_zplus,
)

__all__ = [
    "attribute",
    "available_methods",
    "conventions",
    "deconvnet",
    "deep_taylor",
    "deep_taylor_bounded",
    "get_method",
    "gradient",
    "gradient_x_input",
    "guided_backprop",
    "insens_attribution",
    "integrated_gradients",
    "lrp",
    "lrp_alpha1_beta0",
    "lrp_alpha2_beta1",
    "lrp_alpha_beta",
    "lrp_epsilon",
    "lrp_zplus",
    "register",
    "smoothgrad",
]

"""Toolbox conventions: the options iNNvestigate, Zennit or Captum would use, per method.

The methods of this library have one set of defaults. The toolboxes differ from them,
and from each other, in four things: the signal that starts the backward pass (1 or the
target logit f_t), the quadrature of integrated gradients, where the bias goes in the
alpha-beta rules, and the stabiliser added to denominators.
``slp.attribute(f, x, method, convention=name)`` sets all four to the toolbox's, so the
map equals the toolbox's on the same weights; options passed explicitly still win.

This library's defaults: gradient methods start from 1; integrated gradients 64 points,
``linspace``; SmoothGrad 32 samples at 0.15 x the input's range; guided backprop and
DeconvNet start from 1; LRP starts from f_t (Deep Taylor from max(f_t, 0)); LRP-epsilon
1e-7; alpha-beta with the split bias and stabiliser 1e-6; z+ without bias, 1e-6; Deep
Taylor (iNNvestigate's) with the full bias, no stabiliser; bounded Deep Taylor zB and z+,
both 1e-6.

``"innvestigate"`` (1.0.x): integrated gradients 64 points, ``riemann_left``; guided
backprop and DeconvNet start from f_t; LRP-epsilon 1e-7; alpha-beta with the full bias in
both denominators and no stabiliser (a zero denominator passes nothing); z+ without bias,
no stabiliser; Deep Taylor as the default; bounded Deep Taylor zB and full-bias alpha1-beta0,
no stabiliser, from max(f_t, 0).

``"zennit"`` (0.5, one-hot ``attr_output``): everything starts from 1; integrated
gradients 20 points, ``riemann_right``; SmoothGrad 20 samples at 0.1 x range; LRP-epsilon
1e-6; alpha-beta and z+ with the split bias (its ``ZPlus`` keeps b+), stabiliser 1e-6;
bounded Deep Taylor zB and split-bias z+, 1e-6.

``"captum"``: gradient ``absolute=True`` (``Saliency``'s default); integrated gradients 50
points, ``gausslegendre``; SmoothGrad 5 samples, noise standard deviation 1.0
(``NoiseTunnel``); guided backprop and DeconvNet from 1; LRP-epsilon 1e-9 from f_t
(``LRP`` with its default ``EpsilonRule``).

"--": the toolbox has no such method (Zennit has no gradient x input attributor and no
iNNvestigate-style Deep Taylor; Captum has no alpha-beta or Deep Taylor rule set, and its
``Alpha1_Beta0_Rule`` clamps weights, not contributions, so it differs on inputs of either
sign); `attribute` raises for these. iNNvestigate's SmoothGrad noise is not set here (give
``samples`` and ``noise_scale``). ``insens`` is this library's own method: every
convention leaves it unchanged. Random methods (SmoothGrad) match a toolbox in
distribution only, and Zennit's SmoothGrad also keeps one noise-free sample.

Sources: iNNvestigate 1.0.x rule definitions (Alber et al., JMLR 2019); Zennit 0.5
(``zennit.rules``, ``zennit.attribution``) with the one-hot ``attr_output`` of its
documentation; Captum 0.7+ (``captum.attr``: ``Saliency``, ``IntegratedGradients``,
``NoiseTunnel``, ``LRP`` with its default ``EpsilonRule``).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["CONVENTIONS", "convention_options"]

_LOGIT = {"start": "logit"}
_ONE = {"start": "one"}
#: the modified-backpropagation methods, which take a toolbox's initial relevance alike
_BACKPROP_METHODS = ("guided_backprop", "deconvnet")
#: the methods built on LRP's alpha-beta rule, which take one toolbox's rule options alike
#: (iNNvestigate: the first three; its z+ and bounded Deep Taylor differ)
_ALPHA_BETA_METHODS = (
    "lrp_alpha_beta",
    "lrp_alpha1_beta0",
    "lrp_alpha2_beta1",
    "lrp_zplus",
    "deep_taylor_bounded",
)


def _frozen(d: dict[str, dict[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return MappingProxyType({k: MappingProxyType(v) for k, v in d.items()})


_ALPHA_BETA_INNVESTIGATE = {"bias": "full", "stabilizer": 0.0, "start": "logit"}
_ALPHA_BETA_ZENNIT = {"bias": "split", "stabilizer": 1e-6, "start": "one"}

#: convention name -> method -> options. A method missing from a convention is one the
#: toolbox does not have.
CONVENTIONS: Mapping[str, Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "innvestigate": _frozen(
            {
                "gradient": {},
                "gradient_x_input": {},
                "integrated_gradients": {"steps": 64, "quadrature": "riemann_left"},
                "smoothgrad": {},
                **dict.fromkeys(_BACKPROP_METHODS, _LOGIT),
                "lrp_epsilon": {"epsilon": 1e-7, "start": "logit"},
                **dict.fromkeys(_ALPHA_BETA_METHODS[:3], _ALPHA_BETA_INNVESTIGATE),
                "lrp_zplus": {"bias": "none", "stabilizer": 0.0, "start": "logit"},
                "deep_taylor": {"start": "positive_logit"},
                "deep_taylor_bounded": {**_ALPHA_BETA_INNVESTIGATE, "start": "positive_logit"},
            }
        ),
        "zennit": _frozen(
            {
                "gradient": {},
                "integrated_gradients": {"steps": 20, "quadrature": "riemann_right"},
                "smoothgrad": {"samples": 20, "noise_level": 0.1},
                **dict.fromkeys(_BACKPROP_METHODS, _ONE),
                "lrp_epsilon": {"epsilon": 1e-6, "start": "one"},
                **dict.fromkeys(_ALPHA_BETA_METHODS, _ALPHA_BETA_ZENNIT),
            }
        ),
        "captum": _frozen(
            {
                "gradient": {"absolute": True},
                "gradient_x_input": {},
                "integrated_gradients": {"steps": 50, "quadrature": "gausslegendre"},
                "smoothgrad": {"samples": 5, "noise_scale": 1.0},
                **dict.fromkeys(_BACKPROP_METHODS, _ONE),
                "lrp_epsilon": {"epsilon": 1e-9, "start": "logit"},
            }
        ),
    }
)

#: methods of this library's own that no toolbox has; every convention leaves them alone.
_OWN = ("insens",)


def convention_options(convention: str | None, method: str) -> dict[str, Any]:
    """The options that ``convention`` sets for ``method`` (empty for None).

    Raises:
      ValueError: for an unknown convention, or a method the toolbox does not have.
    """
    if convention is None or method in _OWN:
        if convention is not None and convention not in CONVENTIONS:
            raise ValueError(_unknown(convention))
        return {}
    if convention not in CONVENTIONS:
        raise ValueError(_unknown(convention))
    table = CONVENTIONS[convention]
    if method not in table:
        raise ValueError(
            f"{convention} has no method matching {method!r}; with convention="
            f"{convention!r} choose one of {', '.join(table)} (or insens), or drop the "
            "convention to use this library's defaults"
        )
    return dict(table[method])


def _unknown(convention: str) -> str:
    return f"unknown convention {convention!r}; choose one of {', '.join(CONVENTIONS)} or None"

"""Attribution methods, all on one registry: ``slp.attribute(f, x, method, ...)``."""

from slp.attributions.basic import gradient, insens
from slp.attributions.registry import attribute, available_methods, get_method, register

__all__ = [
    "attribute",
    "available_methods",
    "get_method",
    "gradient",
    "insens",
    "register",
]

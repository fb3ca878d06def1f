"""Where an operation of a traced network came from, in the user's terms.

When slp refuses an operation, the primitive's name alone (``square``, ``stop_gradient``,
``integer_pow``) rarely tells the user which part of their network is at fault. JAX
records with every equation the names of the modules it ran in (its *name stack*: flax
linen's ``Model/LayerNorm_0``, haiku's ``layer_norm``, equinox's ``eqx.nn.LayerNorm``) and
the Python call stack that traced it. From them `describe` finds

* the user-level function or module: the first one, going inwards from the user's code,
  that slp recognises (softmax, gelu, layer normalisation, ...), else the innermost
  module of the name stack, else the library function the user's code called;
* the user's source line: the innermost frame outside JAX, flax, equinox, haiku, slp and
  the Python standard library;
* a hint for the functions slp recognises (`FUNCTION_HINTS`).

Everything here is best effort: a JAX version whose tracebacks or name stacks look
different gives a shorter description, never an error.
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig
from collections.abc import Sequence
from typing import Any, NamedTuple

__all__ = ["Provenance", "describe", "FUNCTION_HINTS"]

_SMOOTH = (
    "{name} is a smooth activation, not piecewise linear: switched linear projections "
    "exist for networks of affine maps, ReLUs and max pooling. Train with relu (a leaky "
    "ReLU can be written relu(z) - a * relu(-z)); applied to the output, leave it out of f"
)
_NORM = (
    "{name} divides by a norm of its input, which is not piecewise linear. Batch "
    "normalisation with fixed statistics (inference mode) is an affine map and is "
    "supported; otherwise leave the normalisation out"
)
_SOFTMAX = (
    "{name} normalises exponentials of the logits, which is not piecewise linear: "
    "explain the logits, i.e. pass f without the final {name} (the arg-max class is the same)"
)

#: Hints by user-level function or module, keyed by the normalised name (`_key`).
FUNCTION_HINTS: dict[str, str] = {
    "softmax": _SOFTMAX,
    "logsoftmax": _SOFTMAX,
    "logsumexp": _SOFTMAX,
    "gelu": _SMOOTH,
    "sigmoid": _SMOOTH,
    "logistic": _SMOOTH,
    "tanh": _SMOOTH,
    "silu": _SMOOTH,
    "swish": _SMOOTH,
    "elu": _SMOOTH,
    "celu": _SMOOTH,
    "selu": _SMOOTH,
    "softplus": _SMOOTH,
    "mish": _SMOOTH,
    "logsigmoid": _SMOOTH,
    "hardswish": "{name}(z) = z * relu6(z + 3) / 6 multiplies two input-dependent values, "
    "which is not piecewise linear",
    "hardsilu": "{name}(z) = z * relu6(z + 3) / 6 multiplies two input-dependent values, "
    "which is not piecewise linear",
    "layernorm": _NORM,
    "groupnorm": _NORM,
    "rmsnorm": _NORM,
    "instancenorm": _NORM,
    "standardize": _NORM,
    "hardtanh": "{name} is piecewise linear, but slp does not implement its clamp; write it "
    "with two ReLUs: hard_tanh(z) = relu(z + 1) - relu(z - 1) - 1",
    "relu6": "{name} is piecewise linear, but slp does not implement its min; write it with "
    "two ReLUs: relu6(z) = relu(z) - relu(z - 6)",
    "hardsigmoid": "{name} is piecewise linear, but slp does not implement its clamp; write "
    "it with two ReLUs: hard_sigmoid(z) = (relu(z + 3) - relu(z - 3)) / 6",
    "leakyrelu": "{name} is piecewise linear, but slp does not implement its where(z >= 0, "
    "z, a * z); write it with two ReLUs: leaky_relu(z) = relu(z) - a * relu(-z)",
}


class Provenance(NamedTuple):
    """Where an operation came from.

    Attributes:
      label: the user-level function or module (e.g. ``"LayerNorm_0"``, ``"softmax"``),
        or None when nothing is known.
      module: the innermost module of the name stack (e.g. ``"Model"``), or None.
      location: ``"file.py:12"``, the user's source line, or None.
      hint: what to write instead, for a recognised function, or None.
    """

    label: str | None
    module: str | None
    location: str | None
    hint: str | None

    def phrase(self, primitive: str) -> str:
        """``"'square' inside LayerNorm_0 (model.py:12)"`` (as much as is known)."""
        out = f"'{primitive}'"
        if self.label and self.label != primitive:
            out += f" inside {self.label}"
        extra = []
        if self.module and self.module != self.label:
            extra.append(f"in {self.module}")
        if self.location:
            extra.append(self.location)
        return out + (f" ({', '.join(extra)})" if extra else "")


class _Frame(NamedTuple):
    file: str
    line: int
    function: str


def _library_dirs() -> tuple[str, ...]:
    """Folders whose frames are library code, not the user's."""
    dirs = []
    for name in ("jax", "jaxlib", "flax", "equinox", "haiku", "slp", "numpy"):
        f = getattr(sys.modules.get(name), "__file__", None)
        if f:
            dirs.append(os.path.dirname(os.path.abspath(f)) + os.sep)
    for key in ("stdlib", "platstdlib"):
        try:
            dirs.append(os.path.abspath(sysconfig.get_paths()[key]) + os.sep)
        except (KeyError, OSError):
            pass
    return tuple(dirs)


def _is_library(file: str, dirs: tuple[str, ...]) -> bool:
    if file.startswith("<"):  # <frozen runpy> is Python's; <stdin>, <string> the user's
        return file.startswith("<frozen")
    return os.path.abspath(file).startswith(dirs)


def _frames(source_info) -> list[_Frame]:
    """The call stack that traced an equation, innermost first ([] if unknown)."""
    tb = getattr(source_info, "traceback", None)
    if tb is None:
        return []
    try:
        codes, lasti = tb.raw_frames()
    except Exception:  # noqa: BLE001 - older jaxlib: a list of frame records
        try:
            return [_Frame(f.file_name, f.line_num, f.function_name) for f in tb.frames]
        except Exception:  # noqa: BLE001 - no frames in this JAX version
            return []
    out = []
    for code, i in zip(codes, lasti, strict=False):
        try:
            from jax._src import source_info_util

            line = source_info_util.raw_frame_to_frame(code, i).start_line
        except Exception:  # noqa: BLE001 - private API; the function's first line instead
            line = code.co_firstlineno
        out.append(_Frame(code.co_filename, line, getattr(code, "co_qualname", code.co_name)))
    return out


_TRANSFORM = re.compile(r"^\w+\((.*)\)$")


def _scopes(source_info) -> list[str]:
    """The module names of an equation's name stack, outermost first."""
    try:
        text = str(source_info.name_stack)
    except Exception:  # noqa: BLE001 - no name stack in this JAX version
        return []
    out = []
    for part in text.split("/"):
        while _TRANSFORM.match(part):  # jvp(Model) -> Model
            part = _TRANSFORM.match(part).group(1)
        if part:
            out.append(part)
    return out


def _key(name: str) -> str:
    """``"LayerNorm_0"``, ``"eqx.nn.LayerNorm"``, ``"LayerNorm.__call__"``, ``"layer_norm"``
    -> ``"layernorm"``."""
    name = name.removesuffix(".__call__").rsplit(".", 1)[-1]
    name = re.sub(r"_\d+$", "", name)
    return name.replace("_", "").lower()


# The user-level name of a function that reaches the program as a primitive of its own.
_USER_NAMES = {"logistic": "sigmoid"}


def _display(name: str) -> str:
    name = name.removesuffix(".__call__")
    return _USER_NAMES.get(name, name)


def _public(name: str) -> bool:
    """A function name worth showing: not private, not a local, not JAX's ufunc wrapper."""
    parts = _display(name).split(".")
    return "<" not in name and not any(p.startswith("_") for p in parts) and parts[0] != "ufunc"


def describe(sources: Sequence[Any], calls: Sequence[str], primitive: str = "") -> Provenance:
    """The `Provenance` of an equation.

    Args:
      sources: the JAX source infos of the equation and of the calls it is nested in,
        outermost first (`slp._src.network.Eqn.source`).
      calls: the names of those calls (`slp._src.network.Eqn.where`), outermost first.
      primitive: the equation's primitive name (``tanh``, ``logistic`` have hints too).

    Returns:
      Its `Provenance` (fields None where nothing is known).
    """
    dirs = _library_dirs()
    names: list[str] = []  # candidate user-level names, from the user's code inwards
    modules: list[str] = []
    location = first_function = None
    for level, si in enumerate(sources):
        scopes = _scopes(si)
        names += scopes
        modules += scopes
        frames = _frames(si)
        user = next((k for k, f in enumerate(frames) if not _is_library(f.file, dirs)), None)
        if user is not None:
            location = f"{os.path.basename(frames[user].file)}:{frames[user].line}"
            library = [f.function for f in reversed(frames[:user])]
            if library and first_function is None and _public(library[0]):
                first_function = _display(library[0])
            names += [n for n in library if "<" not in n]
        if level < len(calls):
            names.append(calls[level])
    names.append(primitive)
    found = next((n for n in names if _key(n) in FUNCTION_HINTS), None)
    module = modules[-1] if modules else None
    if found is not None:
        label = _display(found)
        hint = FUNCTION_HINTS[_key(found)].format(name=label)
    else:
        public_calls = [c for c in calls if _public(c)]
        label = public_calls[-1] if public_calls else first_function or module
        hint = None
    return Provenance(label, module, location, hint)

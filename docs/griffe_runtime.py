"""A griffe extension for the API reference: public functions made by a factory.

``lrp_zplus = _fixed_alpha_beta(...)`` or ``deletion_curve = _curve_function(...)`` are,
read statically, module attributes without a docstring, so the reference would leave them
out. For each name a module exports (``__all__``) that is such an attribute, this
extension imports the module and, when the name is a function at run time, documents it
as that function: its signature and its docstring.
"""

from __future__ import annotations

import importlib
import inspect

import griffe


def _annotation(value) -> str | None:
    if value is inspect.Parameter.empty:
        return None
    return value if isinstance(value, str) else getattr(value, "__name__", repr(value))


def _function(attr: griffe.Attribute, fn) -> griffe.Function:
    sig = inspect.signature(fn)
    params = griffe.Parameters(
        *(
            griffe.Parameter(
                p.name,
                annotation=_annotation(p.annotation),
                kind=griffe.ParameterKind(p.kind.description),
                default=None if p.default is inspect.Parameter.empty else repr(p.default),
            )
            for p in sig.parameters.values()
        )
    )
    out = griffe.Function(
        attr.name,
        lineno=attr.lineno,
        endlineno=attr.endlineno,
        parameters=params,
        returns=_annotation(sig.return_annotation),
    )
    out.docstring = griffe.Docstring(inspect.cleandoc(fn.__doc__), parent=out)
    return out


class FactoryFunctions(griffe.Extension):
    def on_module_members(self, *, mod: griffe.Module, **kwargs) -> None:
        exports = {e if isinstance(e, str) else e.name for e in (mod.exports or ())}
        for name in sorted(exports):
            attr = mod.members.get(name)
            if isinstance(attr, griffe.Alias):
                try:
                    attr = attr.final_target
                except Exception:  # an alias griffe cannot resolve: leave it
                    continue
            if isinstance(attr, griffe.Function) and attr.docstring is None:
                # a function whose docstring is assigned after it (``f.__doc__ = ...``)
                try:
                    fn = getattr(importlib.import_module(mod.path), name)
                except (ImportError, AttributeError):
                    continue
                if fn.__doc__:
                    attr.docstring = griffe.Docstring(inspect.cleandoc(fn.__doc__), parent=attr)
                continue
            if isinstance(attr, griffe.Module):
                # a function exported under the name of its own submodule
                try:
                    fn = getattr(importlib.import_module(mod.path), name)
                except (ImportError, AttributeError):
                    continue
                inner = attr.members.get(name)
                if inspect.isfunction(fn) and isinstance(inner, griffe.Function):
                    if inner.docstring is None and fn.__doc__:
                        inner.docstring = griffe.Docstring(
                            inspect.cleandoc(fn.__doc__), parent=inner
                        )
                continue
            if not isinstance(attr, griffe.Attribute) or attr.docstring is not None:
                continue
            try:
                fn = getattr(importlib.import_module(mod.path), name)
            except (ImportError, AttributeError):
                continue
            if inspect.isfunction(inspect.unwrap(fn)) and fn.__doc__:
                mod.set_member(name, _function(attr, fn))

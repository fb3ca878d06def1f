"""A traced program of `slp.insens`'s routes: the state at an input and one route's squared
norms, with the weights as arguments (`TracedRoute`), as the planner traced it to count its
work (`slp._src.planner`); `insens` runs it rather than walk the network again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
from jax.extend import core as jex_core

__all__ = ["TracedRoute", "pruned"]


class TracedRoute(NamedTuple):
    """A route for one input, traced once while its work was counted: the state at ``x``
    and the route's squared norms, with the weights as arguments.

    Attributes:
      route: the route (``"cone"``, ``"probes"`` or ``"dense"``).
      program: the closed jaxpr of ``(x, consts) -> (state, norms)`` (inputs and outputs
        flattened in that order; ``consts`` the network's weights by equation), without the
        operations whose results it does not return.
      state_tree: the tree structure of the state (a `NetworkState`).
      norms_tree: the tree structure of the norms (a list, one array per ReLU layer).
    """

    route: str
    program: Any
    state_tree: Any
    norms_tree: Any

    @classmethod
    def of(cls, route: str, closed, outputs: Sequence[int], shapes) -> TracedRoute:
        """The traced route: the outputs ``outputs`` of the closed jaxpr ``closed`` (the
        state's, then the norms'), whose shapes are ``shapes = (state, norms)``."""
        state_tree, norms_tree = (jax.tree.structure(s) for s in shapes)
        return cls(route, pruned(closed, outputs), state_tree, norms_tree)

    def __repr__(self):  # the program's text runs to hundreds of lines
        return f"TracedRoute(route={self.route!r}, {len(self.program.eqns)} operations)"

    def _run(self, outputs: range, x, consts) -> list:
        program = pruned(self.program, outputs)
        return jex_core.jaxpr_as_fun(program)(*jax.tree.leaves((x, consts)))

    def state(self, x, consts) -> tuple:
        """``(activities, (output, winners))`` at ``x`` by the operations that compute the
        state only (what `jax.vjp` differentiates, with ``has_aux``)."""
        n = self.state_tree.num_leaves
        state = jax.tree.unflatten(self.state_tree, self._run(range(n), x, consts))
        return state.activities, (state.output, state.winners)

    def norms(self, x, consts) -> list:
        """The squared norms per ReLU layer at ``x`` (from a state of their own)."""
        n, n_out = self.state_tree.num_leaves, len(self.program.jaxpr.outvars)
        return jax.tree.unflatten(self.norms_tree, self._run(range(n, n_out), x, consts))


def pruned(closed, outputs: Sequence[int]):
    """``closed`` (a closed jaxpr) returning only its outputs ``outputs`` (positions), without
    the operations none of them needs (effects kept)."""
    jaxpr = closed.jaxpr
    outvars = [jaxpr.outvars[i] for i in outputs]
    live = {v for v in outvars if isinstance(v, jex_core.Var)}
    kept = []
    for eqn in reversed(jaxpr.eqns):
        if eqn.effects or any(v in live for v in eqn.outvars):
            kept.append(eqn)
            live.update(v for v in eqn.invars if isinstance(v, jex_core.Var))
    info = jaxpr.debug_info
    if info is not None and info.result_paths is not None:
        info = info._replace(result_paths=tuple(info.result_paths[i] for i in outputs))
    pruned = jaxpr.replace(eqns=kept[::-1], outvars=outvars, debug_info=info)
    return jex_core.ClosedJaxpr(pruned, closed.consts)

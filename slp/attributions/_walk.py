"""What the walker-based attribution methods share."""

from __future__ import annotations

from collections.abc import Callable

import jax

from slp._src import network as net


def walker_function(f: Callable, x: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """``f`` re-evaluated by the walker's forward rules (same values).

    The walker's max-pools pick their winners on a value cut off from differentiation
    and select them with an elementwise mask, so their derivative is cheaper on CPU than
    XLA's select-and-scatter. Falls back to ``f`` itself when the network is not one the
    walker describes (e.g. a tanh inside): gradient methods do not need the walker.
    """
    try:
        program = net.trace(f, x)
    except net.UnsupportedOperationError:
        return f
    return lambda xp: net.interpret(program, xp, net.ForwardRules()).output

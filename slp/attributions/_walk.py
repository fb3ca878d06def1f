"""What the walker-based attribution methods share."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from slp import network as net


def _tiles(eqn: net.Eqn, shape: tuple[int, ...]) -> bool:
    """Whether the max-pool's windows tile its input: stride = window, no padding, no dilation."""
    p = eqn.params
    win, strides = tuple(p["window_dimensions"]), tuple(p["window_strides"])
    dil = tuple(p.get("window_dilation") or (1,) * len(win))
    return (
        win == strides
        and all(lo == 0 and hi == 0 for lo, hi in p["padding"])
        and all(d == 1 for d in dil)
        and all(n % w == 0 for n, w in zip(shape, win, strict=True))
    )


class DifferentiableForward(net.ForwardRules):
    """`slp.network.ForwardRules` that can be differentiated, quickly, through its max-pools.

    The winner of each window is the first maximum in row-major window order (as
    `slp.network.pool_winners`), chosen on a value cut off from differentiation, so the
    derivative of a pool routes to its winners. When the windows tile the input (the
    usual 2x2 stride-2 pool) they are laid out along a trailing axis and the winner is
    selected by a mask: the derivative is then elementwise, far cheaper on CPU than
    XLA's select-and-scatter or a scatter-add of gathered winners. Winners are not
    recorded (use `slp.network.forward` for the state).
    """

    def max_pool(self, eqn, z):
        if not _tiles(eqn, z.shape):
            w = net.pool_winners(eqn, jax.lax.stop_gradient(z))
            return z.reshape(-1)[w.reshape(-1)].reshape(w.shape)
        win = tuple(eqn.params["window_dimensions"])
        split = [s for n, w in zip(z.shape, win, strict=True) for s in (n // w, w)]
        nd = z.ndim
        perm = list(range(0, 2 * nd, 2)) + list(range(1, 2 * nd, 2))
        out_shape = tuple(n // w for n, w in zip(z.shape, win, strict=True))
        zt = z.reshape(split).transpose(perm).reshape(out_shape + (int(np.prod(win)),))
        first = jnp.argmax(jax.lax.stop_gradient(zt), axis=-1)
        k = zt.shape[-1]
        won = jnp.arange(k).reshape((1,) * first.ndim + (k,)) == first[..., None]
        return jnp.sum(jnp.where(won, zt, jnp.zeros_like(zt)), axis=-1)


def walker_function(f: Callable, x: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """``f`` re-evaluated by the walker with `DifferentiableForward` (same values).

    Falls back to ``f`` itself when the network is not one the walker describes (e.g. a
    tanh inside): gradient methods do not need the walker, it only makes max-pool
    derivatives cheaper.
    """
    try:
        program = net.trace(f, x)
    except net.UnsupportedOperationError:
        return f
    return lambda xp: net.walk(program, xp, DifferentiableForward()).output

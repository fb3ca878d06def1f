"""Max-pools: which input of each window wins, and the value or derivative it passes on.

A max-pool is the one piecewise-linear operation besides the ReLU: at an input it passes on
the winner of each window, so its derivative routes to the winners. `pool_winners` finds
them (ties go to the lowest flat index), `select_winners` takes them from any value (the
switched network), and `pick_winners` is the forward pass's own pool: the windows' maxima,
whose derivative routes to the winners found on the same values.

The usual pool, whose windows tile its input (a 2x2 pool of stride 2), is computed on the
windows laid out along a trailing axis (`_windows`): the winner is picked by a mask along
that axis, so the derivative is elementwise -- far cheaper on CPU than the scatter-add that
transposes a gather.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["pool_winners", "select_winners", "pick_winners"]


def _tiled_window(eqn: Any, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The window of a max-pool whose windows tile its input (stride = window, no padding,
    no dilation, sizes divisible), else None."""
    p = eqn.params
    win, strides = tuple(p["window_dimensions"]), tuple(p["window_strides"])
    dil = tuple(p.get("window_dilation") or (1,) * len(win))
    base = tuple(p.get("base_dilation") or (1,) * len(win))
    if (
        win == strides
        and all(lo == 0 and hi == 0 for lo, hi in p["padding"])
        and all(d == 1 for d in dil + base)
        and all(n % w == 0 for n, w in zip(shape, win, strict=True))
    ):
        return win
    return None


def _split(z: jax.Array, win: tuple[int, ...]) -> jax.Array:
    """``z`` with each axis split into (window, offset in the window): axes ``2d`` count
    the windows along axis ``d``, axes ``2d + 1`` the offsets."""
    return z.reshape([s for n, w in zip(z.shape, win, strict=True) for s in (n // w, w)])


def _windows(z: jax.Array, win: tuple[int, ...]) -> jax.Array:
    """Tiled windows of ``z`` laid out along a trailing axis: ``out_shape + (prod(win),)``,
    each window in row-major order."""
    nd = z.ndim
    perm = list(range(0, 2 * nd, 2)) + list(range(1, 2 * nd, 2))
    out_shape = tuple(n // w for n, w in zip(z.shape, win, strict=True))
    return _split(z, win).transpose(perm).reshape(out_shape + (int(np.prod(win)),))


def pool_winners(eqn: Any, z: jax.Array) -> jax.Array:
    """Flat index into ``z`` of the winner of every window of the max-pool ``eqn``.

    Ties go to the lowest flat index. Returns an int32 array of the pool's output shape.
    """
    win = _tiled_window(eqn, z.shape)
    if win is not None:
        # Row-major order inside a window is flat-index order, so argmax's first maximum
        # is the lowest flat index among ties.
        return _flat_winners(_window_positions(_windows(z, win)), win, z.shape)
    p = eqn.params
    idx = jnp.arange(z.size, dtype=jnp.int32).reshape(z.shape)

    def pick(a, b):
        (va, ia), (vb, ib) = a, b
        take_b = (vb > va) | ((vb == va) & (ib < ia))
        return jnp.where(take_b, vb, va), jnp.where(take_b, ib, ia)

    init = (jnp.array(-jnp.inf, z.dtype), jnp.array(np.iinfo(np.int32).max, jnp.int32))
    _, winners = lax.reduce_window(
        (z, idx),
        init,
        pick,
        p["window_dimensions"],
        p["window_strides"],
        p["padding"],
        p.get("base_dilation"),
        p.get("window_dilation"),
    )
    return winners


def select_winners(eqn: Any, z: jax.Array, winners: jax.Array) -> jax.Array:
    """The values of ``z`` at ``winners`` (flat indices, pool output shape); linear in ``z``.

    For tiled windows (the usual 2x2 stride-2 pool) the winner is picked by a mask along
    the window axis, so the derivative is elementwise -- far cheaper on CPU than the
    scatter-add that transposes a gather.
    """
    win = _tiled_window(eqn, z.shape)
    if win is None:
        return z.reshape(-1)[winners.reshape(-1)].reshape(winners.shape)
    coords = jnp.unravel_index(winners, z.shape)
    pos = jnp.ravel_multi_index(
        tuple(c % w for c, w in zip(coords, win, strict=True)), win, mode="clip"
    )
    zt = _windows(z, win)
    won = lax.broadcasted_iota(pos.dtype, zt.shape, zt.ndim - 1) == pos[..., None]
    return jnp.sum(jnp.where(won, zt, jnp.zeros_like(zt)), axis=-1)


def _window_positions(zt: jax.Array) -> jax.Array:
    """Position of each window's winner along the trailing axis of `_windows` output (the
    first maximum: row-major order inside a window is flat-index order)."""
    return jnp.argmax(zt, axis=-1).astype(jnp.int32)


def _flat_winners(pos: jax.Array, win: tuple[int, ...], shape: tuple[int, ...]) -> jax.Array:
    """Flat indices into an input of ``shape`` of the winners at window positions ``pos``."""
    offsets = jnp.unravel_index(pos, win)
    coords = [
        lax.broadcasted_iota(jnp.int32, pos.shape, d) * w + o.astype(jnp.int32)
        for d, (w, o) in enumerate(zip(win, offsets, strict=True))
    ]
    return jnp.ravel_multi_index(tuple(coords), shape, mode="clip").astype(jnp.int32)


def _window_maxima(z: jax.Array, win: tuple[int, ...]) -> jax.Array:
    """The maximum of each tiled window of ``z`` (pool output shape), on `_split` without
    the transpose of `_windows`."""
    return jnp.max(_split(z, win), axis=tuple(range(1, 2 * z.ndim, 2)))


@jax.custom_jvp
def _route(zt: jax.Array, pos: jax.Array) -> jax.Array:
    """Zero, whose derivative is the tangent of ``zt`` at ``pos`` (the winners)."""
    return jnp.zeros(pos.shape, zt.dtype)


@_route.defjvp
def _route_jvp(primals, tangents):
    (zt, pos), (dzt, _) = primals, tangents
    won = lax.broadcasted_iota(pos.dtype, zt.shape, zt.ndim - 1) == pos[..., None]
    return _route(zt, pos), jnp.sum(jnp.where(won, dzt, jnp.zeros_like(dzt)), axis=-1)


def pick_winners(eqn: Any, z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The max-pool ``eqn`` of ``z`` as the forward pass computes it: ``(out, winners)``.

    ``winners`` is `pool_winners` of ``z`` (chosen on a value cut off from
    differentiation: the choice is piecewise constant) and ``out`` equals `select_winners`
    of ``z`` at them, whose derivative routes to the winners. For tiled windows ``out`` is
    the windows' maximum and its derivative a mask on the winners' positions: no index
    arithmetic, and a reduction XLA keeps apart from the next layer.
    """
    win = _tiled_window(eqn, z.shape)
    if win is None:
        winners = pool_winners(eqn, lax.stop_gradient(z))
        return select_winners(eqn, z, winners), winners
    zt = _windows(z, win)
    pos = _window_positions(lax.stop_gradient(zt))
    # The maximum carries the value and `_route` the derivative, so that the value is the
    # same computation with or without a derivative: XLA merges this pass with another
    # forward pass of the same network (a guard's).
    out = lax.stop_gradient(_window_maxima(z, win)) + _route(zt, pos)
    return out, _flat_winners(pos, win, z.shape)

"""Parts of a linear map: the operations that some of its inputs reach and some of its outputs
read, and no others.

A tangent map from `jax.linearize` is one program for every input and output. The structured
Insens routes use pieces of it: the probes' tangents up to the cut (input: the network's;
outputs: the layers before the cut), and the cut's columns through the rest (input: a
tangent added at the cut; outputs: the layers after it). `linear_part` cuts such a piece
out of the map's program, so that the rest of the network is neither computed on zero
tangents nor walked again.

`linearized` runs the network once under `jax.linearize` and returns the state with the
switched network's tangent map and its transpose (`Linearized`); with a cut, it also gives
those two pieces.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.extend import core as jex_core

from slp._src import interpreter as interp

__all__ = ["Linearized", "cut_linearized", "linear_part", "linearized"]


def _is_var(v) -> bool:
    return isinstance(v, jex_core.Var) and not isinstance(v, jex_core.DropVar)


def _bind(eqn, args):
    """The operation ``eqn`` of a jaxpr applied to ``args``, as `jax.core.eval_jaxpr` does
    (``get_bind_params`` gives the parameters, and in older JAX also sub-functions first)."""
    params = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = params if isinstance(params, tuple) else ((), params)
    return eqn.primitive.bind(*subfuns, *args, **params)


def linear_part(
    fn: Callable,
    shapes: Sequence[jax.ShapeDtypeStruct],
    live: Sequence[int],
    outputs: Sequence[int],
) -> Callable:
    """``fn`` with only the inputs ``live`` (the others zero) and only the outputs ``outputs``.

    Args:
      fn: a linear function of arrays (e.g. the tangent map of `jax.linearize`), returning a
        tuple of arrays.
      shapes: the shape and dtype of each of its inputs.
      live: the positions of the inputs that the part takes, in order.
      outputs: the positions of the outputs that it returns, in order.

    Returns:
      ``part(*live_inputs) -> tuple``: those outputs of ``fn`` at those inputs and zeros for
      the others. It evaluates only the operations of ``fn``'s program that a live input
      reaches (an operation whose every tangent operand is zero gives zero: ``fn`` is
      linear) or that compute values they read, among those that the outputs read. ``fn``
      is traced once, here.

    Examples:
      >>> from slp._src.linear import linear_part
      >>> fn = lambda a, b: (2.0 * a, a + 3.0 * b)
      >>> s = jax.ShapeDtypeStruct((2,), jnp.float32)
      >>> linear_part(fn, (s, s), live=[1], outputs=[1])(jnp.ones(2))
      (Array([3., 3.], dtype=float32),)
    """
    closed = jax.make_jaxpr(fn)(*shapes)
    jaxpr = closed.jaxpr
    live_vars = {jaxpr.invars[k] for k in live}
    tangent = set(jaxpr.invars)  # values that depend on an input of fn
    zero = tangent - live_vars  # ... on zero inputs only
    kept = []
    for eqn in jaxpr.eqns:
        ins = [v for v in eqn.invars if _is_var(v) and v in tangent]
        if ins:
            tangent.update(eqn.outvars)
            if not any(v in live_vars for v in ins):
                zero.update(eqn.outvars)  # linear in zero tangents
                continue
            live_vars.update(eqn.outvars)
        kept.append(eqn)
    outvars = [jaxpr.outvars[k] for k in outputs]
    needed = {v for v in outvars if _is_var(v)}
    used = []
    for eqn in reversed(kept):  # only what the outputs read
        if any(_is_var(v) and v in needed for v in eqn.outvars):
            used.append(eqn)
            needed.update(v for v in eqn.invars if _is_var(v))
    used.reverse()
    in_vars = [jaxpr.invars[k] for k in live]

    def part(*args):
        env = dict(zip(jaxpr.constvars, closed.consts, strict=True))
        env.update(zip(in_vars, args, strict=True))

        def read(v):
            if not _is_var(v):
                return v.val
            if v in zero:
                return jnp.zeros(v.aval.shape, v.aval.dtype)
            return env[v]

        for eqn in used:
            out = _bind(eqn, [read(v) for v in eqn.invars])
            outs = out if eqn.primitive.multiple_results else [out]
            env.update(zip(eqn.outvars, outs, strict=True))
        return tuple(read(v) for v in outvars)

    return part


class Linearized(NamedTuple):
    """The state of a network at ``x`` with its switched network's tangent map and VJP.

    Attributes:
      state: the `slp._src.interpreter.NetworkState` at ``x``.
      tangent_map: the tangent map of the walk: ``(t,)`` or, with a cut, ``(t, t_cut)`` (a
        tangent added to the cut's output) to one tangent per ReLU layer and, with a cut, the
        cut operand's.
      shapes: the shape and dtype of each of its inputs.
      vjp: ``vjp(cotangents) -> (x_cotangent,)``, one cotangent per ReLU layer (a tuple).
    """

    state: interp.NetworkState
    tangent_map: Callable
    shapes: tuple
    vjp: Callable

    def jvp(self, t: jax.Array) -> tuple:
        """The tangent of every ReLU layer's input for an input tangent ``t``."""
        if len(self.shapes) == 1:
            return self.tangent_map(t)
        return self.tangent_map(t, jnp.zeros(self.shapes[1].shape, self.shapes[1].dtype))[:-1]

    def before_cut(self, sites: Sequence[int]) -> Callable:
        """``t -> (tangents of the ReLU layers sites..., the cut operand's)``: the network up to
        the cut, for an input tangent ``t`` (without a cut: the sites' tangents alone)."""
        cut = [len(self.state.activities)] if len(self.shapes) > 1 else []
        return linear_part(self.tangent_map, self.shapes, [0], [*sites, *cut])

    def after_cut(self, sites: Sequence[int]) -> Callable:
        """``t_cut -> tangents of the ReLU layers sites``: the network after the cut, for a
        tangent ``t_cut`` of the cut's output (its dtype)."""
        return linear_part(self.tangent_map, self.shapes, [1], list(sites))


def linearized(
    program: interp.Program,
    x: jax.Array,
    *,
    state: interp.NetworkState | None = None,
    visit: Callable | None = None,
    cut: int | None = None,
) -> Linearized:
    """The state at ``x`` with the switched network's tangent map and VJP, in one pass.

    The forward rules have the switched network's derivative at ``x`` (see
    `slp._src.interpreter.forward_and_vjp`), so one walk under `jax.linearize` gives the
    state, the tangent map, and by `jax.linear_transpose` the VJP.

    Args:
      program: the traced network.
      x: its input.
      state: the state at ``x`` if known: then the walk is the switched network's
        (`slp._src.interpreter.FrozenRules`) and gives that state back.
      visit: ``visit(eqn, args)`` at every input-dependent linear operation of the forward
        walk (`slp._src.interpreter.ForwardRules`); None: nothing.
      cut: index into ``program.eqns`` of an operation with one output where a tangent may
        enter the network (`slp._src.interpreter.CutTap`), for `Linearized.before_cut` and
        `Linearized.after_cut`; None: none.

    Returns:
      The `Linearized`.
    """
    run = interp.forward_walk(program, visit=visit, state=state, cut=cut)
    primals = (x,)
    if cut is not None:
        out = program.avals[program.eqns[cut].outputs[0]]
        primals += (jnp.zeros(out.shape, out.dtype),)
    acts, tangent_map, (output, winners) = jax.linearize(run, *primals, has_aux=True)
    transpose = jax.linear_transpose(tangent_map, *primals)
    shapes = tuple(jax.ShapeDtypeStruct(p.shape, p.dtype) for p in primals)
    if cut is None:
        vjp = transpose
    else:
        pad = (jnp.zeros(acts[-1].shape, acts[-1].dtype),)
        acts = acts[:-1]

        def vjp(cts):
            return transpose(tuple(cts) + pad)[:1]

    new_state = interp.NetworkState(acts, winners, output) if state is None else state
    return Linearized(new_state, tangent_map, shapes, vjp)


def cut_linearized(program, state, x, cut: int, lin: Linearized | None = None) -> Linearized:
    """``lin`` (linearized with the cut ``cut``) or, None, the switched network at ``state``
    linearized with it: one walk gives the tangents before the cut and after it."""
    return lin if lin is not None else linearized(program, x, state=state, cut=cut)

"""Inactive state sensitivity, Insens (eqs. 7-8).

For each neuron, ``omega_hat_i = x - c_hat_i = v_i w_hat_i / |w_hat_i|^2`` (eq. 7).
Insens averages it over the set ``I`` of inactive hidden neurons (``v <= 0``):

    Omega_hat(x) = (1/|I|) sum_{i in I} omega_hat_i                      (eq. 8)

Reference: Szymanski, McCane & Atkinson, arXiv:1909.11275, section 4.

Computation. The sum over ``I`` of ``(v_i / |w_hat_i|^2) w_hat_i`` is one
vector-Jacobian product of the switched network with cotangent ``v_i/|w_hat_i|^2``
on inactive neurons and 0 elsewhere, so the switched weight vectors are never
materialised. The work is in the squared norms ``|w_hat_i|^2``, the squared row
norms of the switched network's Jacobian. They are computed exactly, with memory
bounded independently of ``neurons x inputs``, by one of two routes (`insens_plan`
says which one a network gets):

* **Cone route** (networks whose input-dependent part up to the first global dense
  layer is stride-1 convolutions, bias adds, ReLUs and max/sum pooling): input
  element ``j`` reaches only a small window of each layer (its *cone*: e.g. 7x7
  positions of 2CONV's second conv layer). The Jacobian column of ``j`` restricted to
  its cone is propagated exactly, layer by layer: a convolution is one explicit matrix
  from input cone to output cone (the same for every ``j``), a ReLU multiplies by the
  state, a max-pool picks the frozen winners. Input elements are processed in blocks
  (one scan step each); squared columns are summed onto every layer's positions.
* **Probe route** (any other network): every value gets, per element, the bounding
  box of the input elements it can depend on (from shapes alone; operations without a
  box rule get the whole input, which is always safe). Input elements whose
  coordinates agree modulo the largest box width never share a box (column colouring,
  Curtis, Powell & Reid 1974), so one Jacobian-vector product with the sum of their
  one-hot directions (a *probe*) gives each neuron's derivative with respect to the
  one of them it depends on. Without structure the probes are one-hot directions
  (plain chunked forward mode).

Both routes stop at the first dense layer that depends on (most of) the whole input
(the *cut*): its Jacobian columns are the block's (or probe's) columns of its operand
times the slice of the dense weights that they touch, and are pushed through the rest
of the network by forward mode. The numbers equal the naive route (``jax.jacfwd`` of
every pre-activation) up to floating-point rounding; by default all products use the
highest matmul precision (no TF32 on GPUs; `insens`'s ``precision`` trades exactness
for speed).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from slp import network as net

__all__ = ["insens", "insens_plan", "InsensPlan", "inactive_sets", "switched_sq_norms"]

# Matrix products of this module (the walker's own: `slp.network.Rules.precision`). The
# highest precision keeps GPUs from rounding operands to TF32, which would break exactness.
_PRECISION = lax.Precision.HIGHEST

# Split-operand products (Ootomo & Yokota 2022; Henry et al. 2019): each float32 operand
# is split into pieces of a narrower type (a = a1 + a2 [+ a3]) and the product is the sum
# of the piece products that carry float32-level information, as ONE matrix product over
# a concatenated contraction axis on the tensor cores, accumulated in float32. Values:
# (piece type, number of pieces, piece pairs).
_SPLIT_PRODUCTS = {
    "tf32x3": ("tf32", 2, ((0, 0), (0, 1), (1, 0))),
    "bf16x6": ("bf16", 3, ((0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0))),
    "bf16x9": ("bf16", 3, tuple(itertools.product(range(3), range(3)))),
}


def _pieces(a: jax.Array, kind: str, n: int) -> list[jax.Array]:
    """``a`` (float32) as ``n`` pieces of decreasing magnitude whose sum is ``a``."""
    # Rounding by reduce_precision, not by a float32 -> bfloat16 -> float32 round trip,
    # which a compiler allowed excess precision may remove.
    out, rest = [], a
    for _ in range(n):
        piece = lax.reduce_precision(
            rest, exponent_bits=8, mantissa_bits=7 if kind == "bf16" else 10
        )
        rest = rest - piece
        out.append(piece.astype(jnp.bfloat16) if kind == "bf16" else piece)  # exact
    return out


def _dot(a: jax.Array, b: jax.Array, precision) -> jax.Array:
    """``a @ b`` for 2-D ``a, b`` at ``precision`` (anything `jnp.dot` takes, or a key of
    `_SPLIT_PRODUCTS`; split products apply to float32 operands only)."""
    split = _SPLIT_PRODUCTS.get(precision) if isinstance(precision, str) else None
    if split is None or a.dtype != jnp.float32 or b.dtype != jnp.float32:
        return jnp.dot(a, b, precision=_PRECISION if split is not None else precision)
    kind, n, pairs = split
    pa, pb = _pieces(a, kind, n), _pieces(b, kind, n)
    lhs = jnp.concatenate([pa[i] for i, _ in pairs], axis=1)
    rhs = jnp.concatenate([pb[j] for _, j in pairs], axis=0)
    # TF32 pieces are exact in TF32, so default precision (TF32 on GPUs) multiplies them
    # exactly; bfloat16 pieces go to a bfloat16 product with a float32 result.
    return jnp.dot(lhs, rhs, precision=lax.Precision.DEFAULT, preferred_element_type=a.dtype)


def switched_sq_norms(
    linear_fn: Callable, x: jax.Array, *, chunk_size: int | None = 128
) -> tuple[jax.Array, ...]:
    """Squared norms ``|w_hat_i|^2`` of the rows of a linear map's Jacobian, by one-hot probes.

    The structure-blind route: one Jacobian-vector product per input element.

    Args:
      linear_fn: the tangent map of the switched network, ``t (shape X) -> tuple`` of
        layer tangents (e.g. from `jax.linearize`).
      x: an input, shape ``X`` (only shape and dtype are used).
      chunk_size: input directions per step; None means all at once.

    Returns:
      Tuple of arrays, per layer, ``sum_j (d v_i / d x_j)^2`` in the layer's shape.
    """
    d = int(np.prod(x.shape))
    chunk = d if chunk_size is None else max(1, min(int(chunk_size), d))
    n_chunks = -(-d // chunk)

    def one_chunk(k):
        idx = k * chunk + jnp.arange(chunk)
        basis = jax.nn.one_hot(idx, d, dtype=x.dtype).reshape((chunk,) + x.shape)
        tangents = jax.vmap(linear_fn)(basis)
        return tuple(jnp.sum(t * t, axis=0) for t in tangents)

    if n_chunks == 1:
        return one_chunk(0)

    def body(acc, k):
        return tuple(a + s for a, s in zip(acc, one_chunk(k), strict=True)), None

    shapes = jax.eval_shape(one_chunk, 0)
    init = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)
    # The last chunk may run past d: one_hot of an out-of-range index is all zeros.
    out, _ = jax.lax.scan(body, init, jnp.arange(n_chunks))
    return out


def inactive_sets(
    program: net.Program, state: net.NetworkState, *, include_pool_losers: bool = False
) -> tuple[jax.Array, ...]:
    """The set ``I`` of eq. 8 per ReLU layer, as bool arrays in each layer's shape.

    A neuron is inactive when ``v <= 0``. With ``include_pool_losers``, neurons whose
    ReLU output loses every max-pool window it is in are counted as inactive too.
    """
    inactive = [v <= 0 for v in state.activities]
    if include_pool_losers:
        for k, src in enumerate(program.pool_sources):
            if src < 0:
                raise ValueError(
                    f"include_pool_losers: max-pool {k} does not pool a ReLU output "
                    "directly, so its losers are not neurons of a ReLU layer"
                )
            shape = program.pool_input_shapes[k]
            won = jnp.zeros(int(np.prod(shape)), bool).at[state.winners[k].reshape(-1)].set(True)
            inactive[src] = inactive[src] | ~won.reshape(shape)
    return tuple(inactive)


# ----------------------------------------------------------------------------------
# Receptive-field boxes, propagated from shapes.


class _Box(NamedTuple):
    """Per element of a value (shape ``V``): lowest/highest input coordinate it depends on.

    ``lo``, ``hi``: float arrays ``V + (x.ndim,)``; an element that depends on no
    input has ``lo = +inf``, ``hi = -inf``. ``dtype`` is the dtype of the value itself.
    """

    lo: Any
    hi: Any
    dtype: Any


class _NotConcrete(Exception):
    """A box depends on a traced value (e.g. gather indices computed under jit)."""


# Index-moving primitives: applying them to the coordinate arrays moves the boxes exactly.
_MOVING = frozenset(
    {
        "reshape",
        "transpose",
        "broadcast_in_dim",
        "squeeze",
        "expand_dims",
        "slice",
        "dynamic_slice",
        "dynamic_update_slice",
        "rev",
        "gather",
        "concatenate",
        "select_n",
        "pad",
    }
)
_SAME_BOX = frozenset(
    {
        "convert_element_type",
        "reduce_precision",
        "copy",
        "copy_p",
        "neg",
        "sharding_constraint",
    }
)
_ELEMENTWISE = frozenset({"add", "sub", "add_any", "mul", "div"})
# Operands that are indices/predicates rather than data (kept as they are).
_INDEX_OPERANDS = {
    "dynamic_slice": lambda n: range(1, n),
    "dynamic_update_slice": lambda n: range(2, n),
    "gather": lambda n: (1,),
    "select_n": lambda n: (0,),
}
_BOX_DTYPE = np.float32  # coordinates are exact up to 2**24


class _BoxRules(net.Rules):
    """Walks a program propagating `_Box` values; records the operand/output of each dot."""

    def __init__(self, program: net.Program):
        self.in_shape = program.input_shape
        self.nx = len(program.input_shape)
        self.index = {id(e): i for i, e in enumerate(program.eqns)}
        self.dots: dict[int, tuple[_Box, _Box]] = {}

    def input(self, x):
        grid = np.stack(np.indices(self.in_shape), -1).astype(_BOX_DTYPE)
        return _Box(grid, grid, jnp.result_type(x))

    def _full(self, shape, dtype) -> _Box:
        lo = np.zeros(tuple(shape) + (self.nx,), _BOX_DTYPE)
        hi = np.broadcast_to(np.asarray(self.in_shape, _BOX_DTYPE) - 1, lo.shape)
        return _Box(lo, hi, dtype)

    def relu(self, eqn, z):
        return z

    def max_pool(self, eqn, z):
        return self._window(eqn.params, z, z.dtype)

    def _window(self, p, z: _Box, dtype) -> _Box:
        def red(a, init, op):
            return lax.reduce_window(
                jnp.asarray(a),
                np.array(init, _BOX_DTYPE),
                op,
                tuple(p["window_dimensions"]) + (1,),
                tuple(p["window_strides"]) + (1,),
                tuple(tuple(q) for q in p["padding"]) + ((0, 0),),
                tuple(p.get("base_dilation") or (1,) * (z.lo.ndim - 1)) + (1,),
                tuple(p.get("window_dilation") or (1,) * (z.lo.ndim - 1)) + (1,),
            )

        return _Box(red(z.lo, np.inf, lax.min), red(z.hi, -np.inf, lax.max), dtype)

    def linear(self, eqn, args):
        avals = self._out_avals(eqn, args)
        try:
            outs = self._rule(eqn, args, avals)
        except _NotConcrete:
            raise
        except Exception:  # noqa: BLE001 - no box rule applies: depend on everything (safe)
            outs = None
        if outs is None or any(
            tuple(o.lo.shape) != tuple(a.shape) + (self.nx,)
            for o, a in zip(outs, avals, strict=True)
        ):
            outs = [self._full(a.shape, a.dtype) for a in avals]
        for o in outs:
            if isinstance(o.lo, jax.core.Tracer) or isinstance(o.hi, jax.core.Tracer):
                raise _NotConcrete
        if eqn.primitive.name == "dot_general":
            self.dots[self.index[id(eqn)]] = (args[eqn.dep.index(True)], outs[0])
        return outs

    def _out_avals(self, eqn, args):
        specs = []
        for a, d in zip(args, eqn.dep, strict=True):
            if d:
                specs.append(jax.ShapeDtypeStruct(a.lo.shape[:-1], a.dtype))
            else:
                specs.append(jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)))
        out = jax.eval_shape(lambda *s: eqn.primitive.bind(*s, **eqn.params), *specs)
        return list(out) if eqn.primitive.multiple_results else [out]

    def _rule(self, eqn, args, avals):
        name = eqn.primitive.name
        dep = eqn.dep
        if name in _SAME_BOX:
            return [_Box(args[0].lo, args[0].hi, avals[0].dtype)]
        if name == "optimization_barrier":
            return [
                a if d else self._empty(av.shape, av.dtype)
                for a, d, av in zip(args, dep, avals, strict=True)
            ]
        if name in _ELEMENTWISE:
            shape = tuple(avals[0].shape) + (self.nx,)
            boxes = [a for a, d in zip(args, dep, strict=True) if d]
            lo = np.minimum.reduce([np.broadcast_to(np.asarray(b.lo), shape) for b in boxes])
            hi = np.maximum.reduce([np.broadcast_to(np.asarray(b.hi), shape) for b in boxes])
            return [_Box(lo, hi, avals[0].dtype)]
        if name in _MOVING:
            return self._moving(eqn, args, avals)
        if name == "reduce_sum":
            axes = tuple(eqn.params["axes"])
            z = args[0]
            return [_Box(np.min(z.lo, axis=axes), np.max(z.hi, axis=axes), avals[0].dtype)]
        if name == "cumsum":
            z, p = args[0], eqn.params
            lo = lax.cummin(jnp.asarray(z.lo), p["axis"], reverse=p["reverse"])
            hi = lax.cummax(jnp.asarray(z.hi), p["axis"], reverse=p["reverse"])
            return [_Box(lo, hi, avals[0].dtype)]
        if name == "reduce_window_sum":
            return [self._window(eqn.params, args[0], avals[0].dtype)]
        if name == "dot_general":
            return [self._dot(eqn, args, avals[0])]
        if name == "conv_general_dilated":
            return [self._conv(eqn, args, avals[0])]
        return None

    def _empty(self, shape, dtype) -> _Box:
        s = tuple(shape) + (self.nx,)
        return _Box(np.full(s, np.inf, _BOX_DTYPE), np.full(s, -np.inf, _BOX_DTYPE), dtype)

    def _moving(self, eqn, args, avals):
        n = len(args)
        index_ops = set(_INDEX_OPERANDS.get(eqn.primitive.name, lambda n: ())(n))
        in_axes = [None if (i in index_ops) else -1 for i in range(n)]

        def coords(which: str, fill: float):
            ops = []
            for i, (a, d) in enumerate(zip(args, eqn.dep, strict=True)):
                if d:
                    ops.append(jnp.asarray(getattr(a, which)))
                elif i in index_ops:
                    ops.append(a)
                else:  # data that does not depend on the input (incl. pad values)
                    ops.append(jnp.full(np.shape(a) + (self.nx,), fill, _BOX_DTYPE))
            out = jax.vmap(
                lambda *o: eqn.primitive.bind(*o, **eqn.params), in_axes=in_axes, out_axes=-1
            )(*ops)
            return out if eqn.primitive.multiple_results else [out]

        los, his = coords("lo", np.inf), coords("hi", -np.inf)
        return [_Box(lo, hi, av.dtype) for lo, hi, av in zip(los, his, avals, strict=True)]

    def _dot(self, eqn, args, aval) -> _Box:
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        if sum(eqn.dep) != 1:
            return None
        dep_lhs = eqn.dep[0]
        z, other = (args[0], args[1]) if dep_lhs else (args[1], args[0])
        c_ax, b_ax = (lc, lb) if dep_lhs else (rc, rb)
        o_c, o_b = (rc, rb) if dep_lhs else (lc, lb)
        nd = z.lo.ndim - 1
        free = [a for a in range(nd) if a not in c_ax and a not in b_ax]
        perm = list(b_ax) + free + list(c_ax) + [nd]
        red = tuple(range(len(b_ax) + len(free), nd))
        lo = np.min(np.transpose(np.asarray(z.lo), perm), axis=red)
        hi = np.max(np.transpose(np.asarray(z.hi), perm), axis=red)
        o_shape = np.shape(other)
        o_free = [o_shape[a] for a in range(len(o_shape)) if a not in o_c and a not in o_b]
        nb, nf = len(b_ax), len(free)
        if dep_lhs:
            new = lo.shape[: nb + nf] + (1,) * len(o_free) + lo.shape[nb + nf :]
        else:
            new = lo.shape[:nb] + (1,) * len(o_free) + lo.shape[nb:]
        shape = tuple(aval.shape) + (self.nx,)
        return _Box(
            np.broadcast_to(lo.reshape(new), shape),
            np.broadcast_to(hi.reshape(new), shape),
            aval.dtype,
        )

    def _conv(self, eqn, args, aval) -> _Box:
        p = eqn.params
        if not eqn.dep[0] or eqn.dep[1] or p.get("batch_group_count", 1) != 1:
            return None
        dn = p["dimension_numbers"]
        z = args[0]
        nd = z.lo.ndim - 1
        rshape = np.shape(args[1])
        window, strides = [1] * nd, [1] * nd
        pads, base, wdil = [(0, 0)] * nd, [1] * nd, [1] * nd
        window[dn.lhs_spec[1]] = z.lo.shape[dn.lhs_spec[1]]  # every input feature
        for i in range(nd - 2):
            ax = dn.lhs_spec[2 + i]
            window[ax] = rshape[dn.rhs_spec[2 + i]]
            strides[ax] = p["window_strides"][i]
            pads[ax] = tuple(p["padding"][i])
            base[ax] = (p.get("lhs_dilation") or (1,) * (nd - 2))[i]
            wdil[ax] = (p.get("rhs_dilation") or (1,) * (nd - 2))[i]
        params = dict(
            window_dimensions=window,
            window_strides=strides,
            padding=pads,
            base_dilation=base,
            window_dilation=wdil,
        )
        red = self._window(params, z, aval.dtype)
        # Logical dims (batch, feature, spatial...) from the lhs layout to the out layout.
        perm = [0] * nd
        for k, pos in enumerate(dn.out_spec):
            perm[pos] = dn.lhs_spec[k]
        lo = np.transpose(np.asarray(red.lo), perm + [nd])
        hi = np.transpose(np.asarray(red.hi), perm + [nd])
        shape = tuple(aval.shape) + (self.nx,)
        return _Box(np.broadcast_to(lo, shape), np.broadcast_to(hi, shape), aval.dtype)


def _boxes(program: net.Program, x) -> tuple[tuple[_Box, ...], dict[int, tuple[_Box, _Box]]]:
    """Boxes of every ReLU layer's input and of every dot_general's operand and output."""
    rules = _BoxRules(program)
    with jax.ensure_compile_time_eval():
        res = net.walk(program, x, rules)
    relu = tuple(_Box(np.asarray(b.lo), np.asarray(b.hi), b.dtype) for b in res.relu_inputs)
    dots = {
        i: tuple(_Box(np.asarray(b.lo), np.asarray(b.hi), b.dtype) for b in pair)
        for i, pair in rules.dots.items()
    }
    return relu, dots


# ----------------------------------------------------------------------------------
# The cone route: exact Jacobian columns restricted to each input element's cone.


class _Unsupported(Exception):
    """The program is outside what the cone route handles (the probe route takes over)."""


class _Restart(Exception):
    """An input axis assumed spatial is a channel axis (contracted by a convolution)."""

    def __init__(self, axis: int):
        super().__init__(axis)
        self.axis = axis


class _Stop(Exception):
    """The walk reached the end of the part the cone route computes."""


@dataclasses.dataclass(frozen=True)
class _Geom:
    """Where a value's elements sit relative to the input, in the cone route.

    Along every spatial input axis ``k``, element ``p`` of the value's axis linked to
    ``k`` depends on input coordinates ``sigma_k p + beta_k ... + recep_k - 1``, so
    input coordinate ``j`` reaches at most ``width_k`` consecutive elements, starting
    at ``floor((j - beta_k) / sigma_k) - width_k + 1`` (the element's *cone*).

    Attributes:
      shape: the value's shape.
      link: per value axis, the spatial input axis ``k`` it follows, or -1 (free axis:
        batch, channels).
      sigma, beta, recep, width: per spatial input axis.
    """

    shape: tuple[int, ...]
    link: tuple[int, ...]
    sigma: tuple[int, ...]
    beta: tuple[int, ...]
    recep: tuple[int, ...]
    width: tuple[int, ...]

    def window_shape(self) -> tuple[int, ...]:
        return tuple(
            self.width[k] if k >= 0 else n for n, k in zip(self.shape, self.link, strict=True)
        )

    def axis_of(self, k: int) -> int:
        return self.link.index(k)


@dataclasses.dataclass(frozen=True)
class _Flat:
    """A cone value reshaped so that spatial and free axes merge (the operand of a cut)."""

    geom: _Geom
    t: Any


class _ConeVal(NamedTuple):
    """A value in the cone route: geometry and, when computing, its cone tangents ``t``.

    ``t`` has shape ``(r_0, ..., r_{K-1}, f) + geom.window_shape()``: one Jacobian
    column per input element of the current block (spatial offsets ``r_k`` inside the
    block, ``f`` the flat index over the free input axes), restricted to the element's
    cone. Two factors may still be pending (applied when a consumer needs them):
    ``mask``, a value-shaped array that multiplies the value (a ReLU's 0/1 state), and,
    if ``valid`` is False, the zeroing of cone slots outside the value.
    """

    geom: _Geom
    t: Any
    mask: Any = None
    valid: bool = True


class _ConeSetup(NamedTuple):
    """Static layout of the cone route for one program (from the geometry pass).

    Input elements are processed in *blocks* of ``sigma_tot`` consecutive elements per
    spatial axis (``sigma_tot``: the total stride of the deepest value), elements
    ``j = sigma_tot B + r``. In a value of geometry ``g`` the cone of offset ``r`` of
    block ``B`` starts at ``rho B + d(r)`` with ``rho = sigma_tot / g.sigma`` and a
    static ``d(r)``.
    """

    spatial: tuple[int, ...]  # input axes that are spatial (k = position)
    sigma_tot: tuple[int, ...]
    in_shape: tuple[int, ...]
    blocks: np.ndarray  # (n_blocks, K) block indices B

    def starts(self, g: _Geom, k: int) -> tuple[int, np.ndarray]:
        """``(rho, d)``: cone start ``rho B + d[r]`` of element offset ``r`` along ``k``."""
        rho = self.sigma_tot[k] // g.sigma[k]
        r = np.arange(self.sigma_tot[k])
        return rho, np.floor_divide(r - g.beta[k], g.sigma[k]) - g.width[k] + 1


class _ConeRules(net.Rules):
    """Walks the program up to ``end`` propagating `_ConeVal`; geometry only if not computing.

    Supported on input-dependent values: insertion/removal of free unit axes,
    convolutions with stride 1 and no dilation, bias adds and scalings by constants,
    ReLU, max and sum pooling (reduce_window) along spatial axes, and at ``end`` the
    cut (a dense layer on a flattened cone value) or the last ReLU.
    """

    def __init__(
        self,
        program: net.Program,
        spatial: tuple[int, ...],
        end: int,
        *,
        setup=None,
        state=None,
        block=None,
        mats=None,
        precision=None,
    ):
        self.program = program
        self.precision = _PRECISION if precision is None else precision
        self.spatial = spatial  # input axes that are spatial, in order (k = position)
        self.end = end
        self.index = {id(e): i for i, e in enumerate(program.eqns)}
        self.setup = setup  # _ConeSetup when computing, None for the geometry pass
        self.state = state
        self.block = block  # (K,) int32 index B of the current block
        self.mats: dict[int, Any] = dict(mats or {})  # cone matrices of the convolutions
        self.relu_vals: dict[int, _ConeVal] = {}
        self.convs = 0
        self.cut_operand = None
        self.end_geom = None
        self.geoms: list[_Geom] = []

    # -- helpers --------------------------------------------------------------------

    @property
    def computing(self) -> bool:
        return self.setup is not None

    @property
    def n_pre(self) -> int:
        """Leading axes of ``t`` that index the block's input elements."""
        return len(self.spatial) + 1

    def _shift(self, arr, axis: int, c, length: int, c_range: tuple[int, int], fill=0):
        """``out[i] = arr[i + c]`` along ``axis`` for ``i < length`` (``fill`` outside).

        ``c`` is traced (it depends on the block); ``c_range`` is its range over blocks.
        """
        n = arr.shape[axis]
        lo = max(0, -c_range[0])
        hi = max(0, c_range[1] + length - n)
        pad = [(0, 0)] * arr.ndim
        pad[axis] = (lo, hi)
        padded = jnp.pad(arr, pad, constant_values=fill)
        return lax.dynamic_slice_in_dim(padded, c + lo, length, axis)

    def _union(self, g: _Geom, k: int):
        """Start (traced), static ``d - min(d)``, length and start range of the block's cones."""
        rho, d = self.setup.starts(g, k)
        dmin = int(d.min())
        span = g.width[k] + int(d.max()) - dmin
        b = self.setup.blocks[:, k]
        rng = (rho * int(b.min()) + dmin, rho * int(b.max()) + dmin)
        return rho * self.block[k] + dmin, d - dmin, span, rng

    def _windows(self, arr, g: _Geom, fill=0):
        """``arr`` (value-shaped; free axes may have size 1) cut into the block's cones.

        Returns ``(r_0, ..., r_{K-1}) + window shape`` (free axes as in ``arr``).
        """
        out = arr
        for k in range(len(self.spatial)):
            pos = k + g.axis_of(k)  # earlier r axes were put in front
            start, rel, span, rng = self._union(g, k)
            shifted = self._shift(out, pos, start, span, rng, fill)
            w = g.width[k]
            pieces = [lax.slice_in_dim(shifted, int(o), int(o) + w, axis=pos) for o in rel]
            out = jnp.moveaxis(jnp.stack(pieces, axis=pos), pos, k)
        return out

    def _overlap_add(self, t, g: _Geom):
        """Transpose of `_windows` for ``t`` with one ``r`` axis per spatial axis in front."""
        out = t
        nk = len(self.spatial)
        for k in range(nk):
            ax = (nk - k - 1) + g.axis_of(k)  # window axis after the remaining r axes
            start, rel, span, rng = self._union(g, k)
            w = g.width[k]
            v = jnp.moveaxis(out, 0, ax)  # r axis of k right before its window axis
            shape = list(v.shape)
            del shape[ax]
            shape[ax] = span
            acc = jnp.zeros(shape, v.dtype)
            for i, o in enumerate(rel):
                idx = [slice(None)] * len(shape)
                idx[ax] = slice(int(o), int(o) + w)
                acc = acc.at[tuple(idx)].add(lax.index_in_dim(v, i, ax, keepdims=False))
            # Back onto the value's positions: acc[i] is position start + i.
            n = g.shape[g.axis_of(k)]
            lo = max(0, rng[1])
            hi = max(0, n - rng[0] - span)
            pad = [(0, 0)] * acc.ndim
            pad[ax] = (lo, hi)
            out = lax.dynamic_slice_in_dim(jnp.pad(acc, pad), lo - start, n, ax)
        return out

    def _valid_windows(self, g: _Geom, dtype):
        shape = tuple(n if k >= 0 else 1 for n, k in zip(g.shape, g.link, strict=True))
        return self._windows(jnp.ones(shape, dtype), g)

    def _apply(self, t, win):
        """``t`` times cone windows ``win`` (no ``f`` axis: the same for every channel)."""
        nk = len(self.spatial)
        return t * jnp.expand_dims(win, nk)

    def _materialize(self, z: _ConeVal):
        """``z.t`` with its pending mask / validity applied."""
        if z.t is None:
            return None
        if z.mask is not None:
            return self._apply(z.t, self._windows(z.mask.astype(z.t.dtype), z.geom))
        if not z.valid:
            return self._apply(z.t, self._valid_windows(z.geom, z.t.dtype))
        return z.t

    # -- the walk -------------------------------------------------------------------

    def input(self, x):
        shape = tuple(x.shape)
        kk = {a: i for i, a in enumerate(self.spatial)}
        link = tuple(kk.get(a, -1) for a in range(len(shape)))
        nk = len(self.spatial)
        g = _Geom(shape, link, (1,) * nk, (0,) * nk, (1,) * nk, (1,) * nk)
        self.geoms.append(g)
        if not self.computing:
            return _ConeVal(g, None)
        s = self.setup
        # One-hot over the free input axes: element f of the block is channel f.
        free_shape = tuple(n for n, k in zip(shape, link, strict=True) if k < 0)
        nf = int(np.prod(free_shape))
        eye = jnp.eye(nf, dtype=x.dtype).reshape((nf,) + free_shape)
        ok = jnp.ones((), x.dtype)
        for k in range(nk):
            j = s.sigma_tot[k] * self.block[k] + jnp.arange(s.sigma_tot[k])
            inside = (j >= 0) & (j < shape[self.spatial[k]])
            ok = ok.reshape(ok.shape + (1,)) * inside.astype(x.dtype).reshape(
                (1,) * ok.ndim + (-1,)
            )
        t = ok.reshape(ok.shape + (1,) * (1 + len(free_shape))) * eye.reshape(
            (1,) * nk + (nf,) + free_shape
        )
        # Put the window axes (size 1) of the spatial axes in place.
        win = [1 if k >= 0 else n for n, k in zip(shape, link, strict=True)]
        return _ConeVal(g, t.reshape(t.shape[: nk + 1] + tuple(win)))

    def relu(self, eqn, z):
        if not isinstance(z, _ConeVal):
            raise _Unsupported("ReLU of a flattened value")
        if self.computing:
            # Cone slots outside the value need no zeroing here: the norms only sum onto
            # real positions, and the ReLU mask's cones are zero outside.
            t = self._materialize(z) if z.mask is not None else z.t
            z = _ConeVal(z.geom, t, valid=z.valid)
            out = _ConeVal(z.geom, t, self.state.activities[eqn.site] > 0)
        else:
            out = z
        self.relu_vals[eqn.site] = z
        if self.index[id(eqn)] >= self.end:
            self.end_geom = z.geom
            raise _Stop
        return out

    def max_pool(self, eqn, z):
        if self.index[id(eqn)] >= self.end:
            raise _Stop
        return self._pool(eqn, z, winners=self.state.winners[eqn.site] if self.computing else 0)

    def linear(self, eqn, args):
        i = self.index[id(eqn)]
        name = eqn.primitive.name
        dep = eqn.dep
        if i == self.end:  # the cut
            op = args[dep.index(True)]
            if isinstance(op, _ConeVal):
                op = _Flat(op.geom, self._materialize(op))
            self.cut_operand = op
            self.end_geom = op.geom
            raise _Stop
        if i > self.end:
            raise _Stop
        vals = [a for a, d in zip(args, dep, strict=True) if d]
        if len(vals) != 1 or eqn.primitive.multiple_results:
            raise _Unsupported(f"{name} with several input-dependent operands")
        (z,) = vals
        if isinstance(z, _Flat):
            raise _Unsupported(f"{name} of a flattened value")
        if name in (
            "convert_element_type",
            "copy",
            "copy_p",
            "reduce_precision",
            "sharding_constraint",
        ):
            return [z]
        if name == "neg":
            return [self._scale(z, -1)]
        if name in ("add", "sub", "add_any"):
            out_shape = np.broadcast_shapes(
                *(a.geom.shape if d else np.shape(a) for a, d in zip(args, dep, strict=True))
            )
            if tuple(out_shape) != z.geom.shape:
                raise _Unsupported("an add that broadcasts an input-dependent value")
            return [self._scale(z, -1) if (name == "sub" and dep[1]) else z]
        if name in ("mul", "div"):
            if name == "div" and not dep[0]:
                raise _Unsupported("division by an input-dependent value")
            const = args[1 - dep.index(True)]
            if np.ndim(const) != 0:
                raise _Unsupported(f"{name} by a non-scalar constant")
            return [self._scale(z, const if name == "mul" else 1 / const)]
        if name in ("broadcast_in_dim", "reshape", "expand_dims", "squeeze"):
            return [self._reshape(eqn, args, z)]
        if name == "conv_general_dilated":
            return [self._conv(eqn, z, args[1])]
        if name == "reduce_window_sum":
            return [self._pool(eqn, z, winners=None)]
        raise _Unsupported(name)

    def _scale(self, z: _ConeVal, c):
        return z if z.t is None else z._replace(t=z.t * c)

    def _reshape(self, eqn, args, z: _ConeVal):
        g = z.geom
        new_shape = tuple(
            jax.eval_shape(
                lambda a: eqn.primitive.bind(a, *args[1:], **eqn.params),
                jax.ShapeDtypeStruct(g.shape, jnp.float32),
            ).shape
        )
        core_old = [(ax, n) for ax, n in enumerate(g.shape) if not (n == 1 and g.link[ax] < 0)]
        if any(n == 1 for _, n in core_old):
            raise _Unsupported("a spatial axis of size 1")
        core_new = [ax for ax, n in enumerate(new_shape) if n != 1]
        t = self._materialize(z)
        if [n for _, n in core_old] != [new_shape[ax] for ax in core_new]:
            return _Flat(g, t)
        link = [-1] * len(new_shape)
        for (ax_old, _), ax_new in zip(core_old, core_new, strict=True):
            link[ax_new] = g.link[ax_old]
        ng = dataclasses.replace(g, shape=new_shape, link=tuple(link))
        self.geoms.append(ng)
        if t is None:
            return _ConeVal(ng, None)
        return _ConeVal(ng, t.reshape(t.shape[: self.n_pre] + ng.window_shape()))

    def _conv(self, eqn, z: _ConeVal, kernel):
        p = eqn.params
        g = z.geom
        dn = p["dimension_numbers"]
        nsp = len(dn.lhs_spec) - 2
        if (
            any(s != 1 for s in p["window_strides"])
            or any(d != 1 for d in (p.get("lhs_dilation") or ()))
            or any(d != 1 for d in (p.get("rhs_dilation") or ()))
            or p.get("feature_group_count", 1) != 1
            or p.get("batch_group_count", 1) != 1
        ):
            raise _Unsupported("a strided, dilated or grouped convolution")
        b_ax, f_ax = dn.lhs_spec[0], dn.lhs_spec[1]
        if g.link[f_ax] >= 0:
            k = g.link[f_ax]
            if g.sigma[k] == 1 and g.width[k] == 1 and g.recep[k] == 1:
                raise _Restart(self.spatial[k])
            raise _Unsupported("a convolution over a spatial axis as features")
        if g.link[b_ax] >= 0 or g.shape[b_ax] != 1:
            raise _Unsupported("a convolution with a batch axis")
        sp = [dn.lhs_spec[2 + i] for i in range(nsp)]
        ks = [g.link[ax] for ax in sp]
        if any(k < 0 for k in ks) or sorted(ks) != list(range(len(self.spatial))):
            raise _Unsupported("a convolution that does not slide along every spatial axis")
        rshape = np.shape(kernel)
        ksz = [rshape[dn.rhs_spec[2 + i]] for i in range(nsp)]
        sigma, beta, recep, width = map(list, (g.sigma, g.beta, g.recep, g.width))
        for i, k in enumerate(ks):
            beta[k] = beta[k] - sigma[k] * p["padding"][i][0]
            recep[k] = recep[k] + sigma[k] * (ksz[i] - 1)
            width[k] = width[k] + ksz[i] - 1
        n_out = jax.eval_shape(
            lambda a, w: eqn.bind(a, w),
            jax.ShapeDtypeStruct(g.shape, jnp.float32),
            jax.ShapeDtypeStruct(rshape, jnp.float32),
        ).shape
        out_link = [-1] * len(g.shape)
        for logical, pos in enumerate(dn.out_spec):
            if logical >= 2:
                out_link[pos] = ks[logical - 2]
        ng = _Geom(
            tuple(n_out), tuple(out_link), tuple(sigma), tuple(beta), tuple(recep), tuple(width)
        )
        self.geoms.append(ng)
        self.convs += 1
        if not self.computing:
            return _ConeVal(ng, None)
        # The convolution as one explicit matrix from an input cone to the output cone
        # (stride 1: the same for every input element): tap d = s - e + k - 1.
        t = self._materialize(z)
        npre = self.n_pre
        cout = rshape[dn.rhs_spec[0]]
        cin = g.shape[f_ax]
        key = self.index[id(eqn)]
        big = self.mats.get(key)
        if big is None:
            big = self._cone_matrix(kernel, dn, [g.width[k] for k in ks], cin).astype(t.dtype)
            self.mats[key] = big
        # t: (pre..., lhs axes) -> (pre..., batch, spatial..., feature)
        lhs_order = [npre + b_ax] + [npre + ax for ax in sp] + [npre + f_ax]
        tt = jnp.transpose(t, list(range(npre)) + lhs_order)
        lead = tt.shape[: npre + 1]
        out = _dot(tt.reshape(-1, big.shape[0]), big, self.precision)
        out = out.reshape(lead + tuple(width[k] for k in ks) + (cout,))
        src = {0: npre, 1: npre + 1 + nsp}
        for i in range(nsp):
            src[2 + i] = npre + 1 + i
        perm = list(range(npre)) + [0] * len(g.shape)
        for logical, pos in enumerate(dn.out_spec):
            perm[npre + pos] = src[logical]
        return _ConeVal(ng, jnp.transpose(out, perm), valid=False)

    @staticmethod
    def _cone_matrix(kernel, dn, w_in: list[int], cin: int):
        """A stride-1 convolution as a matrix from an input cone to the output cone.

        Rows ``(s..., c)``, columns ``(e..., o)``: tap ``d = s - e + k - 1`` (the same for
        every input element), zero where ``d`` is outside the kernel.
        """
        nsp = len(w_in)
        rshape = np.shape(kernel)
        ksz = [rshape[dn.rhs_spec[2 + i]] for i in range(nsp)]
        w_out = [w + k - 1 for w, k in zip(w_in, ksz, strict=True)]
        kern = jnp.transpose(
            kernel, [dn.rhs_spec[2 + i] for i in range(nsp)] + [dn.rhs_spec[1], dn.rhs_spec[0]]
        )
        idx, ok = [], np.ones(tuple(w_in) + tuple(w_out), bool)
        for i in range(nsp):
            s_ = np.arange(w_in[i]).reshape([-1 if a == i else 1 for a in range(nsp)] + [1] * nsp)
            e_ = np.arange(w_out[i]).reshape([1] * nsp + [-1 if a == i else 1 for a in range(nsp)])
            d = s_ - e_ + ksz[i] - 1
            ok = ok & (d >= 0) & (d < ksz[i])
            idx.append(np.broadcast_to(np.clip(d, 0, ksz[i] - 1), ok.shape))
        big = kern[tuple(idx)] * jnp.asarray(ok, kern.dtype)[..., None, None]
        # (w_in..., w_out..., cin, cout) -> (w_in..., cin, w_out..., cout)
        perm = list(range(nsp)) + [2 * nsp] + list(range(nsp, 2 * nsp)) + [2 * nsp + 1]
        return jnp.transpose(big, perm).reshape(int(np.prod(w_in)) * cin, -1)

    def _pool(self, eqn, z, *, winners):
        if not isinstance(z, _ConeVal):
            raise _Unsupported("pooling of a flattened value")
        p = eqn.params
        g = z.geom
        wd, st, pads = p["window_dimensions"], p["window_strides"], p["padding"]
        if any(d != 1 for d in (p.get("base_dilation") or ())) or any(
            d != 1 for d in (p.get("window_dilation") or ())
        ):
            raise _Unsupported("dilated pooling")
        sigma, beta, recep, width = map(list, (g.sigma, g.beta, g.recep, g.width))
        for ax, k in enumerate(g.link):
            if k < 0:
                if wd[ax] != 1 or st[ax] != 1:
                    raise _Unsupported("pooling across a free axis")
                continue
            beta[k] = beta[k] - sigma[k] * pads[ax][0]
            recep[k] = recep[k] + sigma[k] * (wd[ax] - 1)
            sigma[k] = sigma[k] * st[ax]
            width[k] = -(-recep[k] // sigma[k])
        out_shape = tuple(
            (n + pl + ph - w) // s + 1
            for n, (pl, ph), w, s in zip(g.shape, pads, wd, st, strict=True)
        )
        ng = _Geom(out_shape, g.link, tuple(sigma), tuple(beta), tuple(recep), tuple(width))
        self.geoms.append(ng)
        if not self.computing:
            return _ConeVal(ng, None)
        nk, npre = len(self.spatial), self.n_pre
        lin = [(ax, k) for ax, k in enumerate(g.link) if k >= 0]
        if winners is None:  # sum pooling reads every position: apply pending factors
            t, mask = self._materialize(z), None
        else:  # max pooling reads only winners: fold a pending ReLU mask into the selection
            t, mask = z.t, z.mask
            if mask is not None:
                mask = mask.reshape(-1)[winners.reshape(-1)].reshape(out_shape)
            coords = jnp.unravel_index(winners, g.shape)
            base = jnp.indices(out_shape)
            offs = {ax: coords[ax] - (base[ax] * st[ax] - pads[ax][0]) for ax, _ in lin}
        # Output cone slot e' of element r reads input cone slot st e' + delta + kappa[r],
        # kappa static: st (rho' b + d'[r]) - pad - (rho b + d[r]) with st rho' = rho.
        kappas = {}
        for ax, k in lin:
            _, d_in = self.setup.starts(g, k)
            _, d_out = self.setup.starts(ng, k)
            kappas[ax] = st[ax] * d_out - pads[ax][0] - d_in

        def gather(arr, ax, k, extra: int, length: int, stride: int):
            """Per element offset r_k: window slots ``stride i + extra + kappa[r]``."""
            kap = kappas[ax] + extra
            lo = max(0, -int(kap.min()))
            hi = max(0, int(kap.max()) + length - arr.shape[npre + ax])
            pad = [(0, 0)] * arr.ndim
            pad[npre + ax] = (lo, hi)
            arr = jnp.pad(arr, pad)
            pieces = []
            for r, kk in enumerate(kap):
                row = lax.index_in_dim(arr, r, k, keepdims=True)
                start = int(kk) + lo
                pieces.append(lax.slice_in_dim(row, start, start + length, stride, npre + ax))
            return jnp.concatenate(pieces, axis=k)

        if winners is not None and all(wd[ax] == st[ax] for ax, _ in lin):
            # Non-overlapping windows: one slice per element offset, a reshape exposes delta.
            piece = t
            for ax, k in lin:
                piece = gather(piece, ax, k, 0, st[ax] * ng.width[k], 1)
            split = list(piece.shape[:npre])
            for ax, n in enumerate(piece.shape[npre:]):
                split += [ng.width[g.link[ax]], st[ax]] if g.link[ax] >= 0 else [n]
            piece = piece.reshape(split)
            code = jnp.zeros(out_shape, jnp.int32)
            for ax, _ in lin:
                code = code * wd[ax] + offs[ax].astype(jnp.int32)
            if mask is not None:
                code = jnp.where(mask, code, -1)
            code = jnp.expand_dims(self._windows(code, ng, fill=-1), nk)
            out = 0
            for i, delta in enumerate(np.ndindex(*[wd[ax] for ax, _ in lin])):
                idx = [slice(None)] * npre
                it = iter(delta)
                for ax in range(len(g.shape)):
                    idx += [slice(None), next(it)] if g.link[ax] >= 0 else [slice(None)]
                out = out + jnp.where(code == i, piece[tuple(idx)], 0)
            return _ConeVal(ng, out)
        out = 0
        for delta in np.ndindex(*[wd[ax] for ax, _ in lin]):
            piece = t
            for (ax, k), dd in zip(lin, delta, strict=True):
                piece = gather(piece, ax, k, dd, st[ax] * (ng.width[k] - 1) + 1, st[ax])
            if winners is None:
                out = out + piece
                continue
            sel = jnp.ones(out_shape, bool)
            for (ax, _), dd in zip(lin, delta, strict=True):
                sel = sel & (offs[ax] == dd)
            if mask is not None:
                sel = sel & mask
            out = self._apply(piece, self._windows(sel.astype(t.dtype), ng)) + out
        return _ConeVal(ng, out, valid=winners is not None)


# ----------------------------------------------------------------------------------
# The plan.


class InsensPlan(NamedTuple):
    """How `insens` computes the squared norms for one network and input shape.

    Attributes:
      route: ``"cone"`` (exact Jacobian columns restricted to each input element's cone,
        then the cut) or ``"probes"`` (coloured probes, then the cut).
      cut: index into ``program.eqns`` of the dense layer (dot_general) at which the
        structured part stops and explicit products take over, or None.
      pre_sites: ReLU layers whose norms come from the structured part.
      post_sites: ReLU layers after the cut (norms from exact Jacobian columns).
      cut_out_shape: shape of the cut's output value (None without a cut).
      lattice: probe route: per input axis ``a``, the colouring period ``k_a``: input
        elements with equal coordinates modulo ``k_a`` share a probe (a colour).
      n_colours: probe route: number of probe directions (colours) in total.
      n_chunks: probe route: steps of the loop over probes.
      colours_per_chunk: probe route: probes per step.
      pixels_per_chunk: probe route: input elements covered per step.
      n_groups: probe route: row groups of the cut's operand (rows with one box).
      rows_per_group: probe route: rows in the largest group.
      colour: probe route: int32, input shape, the colour of every input element.
      group_rows: probe route: int32 ``(n_groups, rows_per_group)``, flat operand rows
        of each group; padding rows point one past the operand's end.
      slots: probe route: int32 ``(n_chunks, n_groups, colours_per_chunk)``, for each
        group and colour of a step, the slot (column of the step) of the input element
        of that colour inside the group's box; ``pixels_per_chunk`` where there is none.
      cone: cone route: its `_ConeSetup` (spatial axes, block layout), else None.
    """

    route: str
    cut: int | None
    pre_sites: tuple[int, ...]
    post_sites: tuple[int, ...]
    cut_out_shape: tuple[int, ...] | None
    lattice: tuple[int, ...]
    n_colours: int
    n_chunks: int
    colours_per_chunk: int
    pixels_per_chunk: int
    n_groups: int
    rows_per_group: int
    colour: np.ndarray
    group_rows: np.ndarray | None
    slots: np.ndarray | None
    cone: Any = None


def _widths(boxes) -> np.ndarray | None:
    """Largest box width per input axis over the non-empty rows of ``boxes``."""
    best = None
    for b in boxes:
        lo = b.lo.reshape(-1, b.lo.shape[-1])
        hi = b.hi.reshape(-1, b.hi.shape[-1])
        keep = np.all(hi >= lo, axis=1)
        if not keep.any():
            continue
        w = np.max(hi[keep] - lo[keep] + 1, axis=0)
        best = w if best is None else np.maximum(best, w)
    return best


def _cut_candidate(program: net.Program, dots, relu_eqn_idx) -> int | None:
    """First dense layer that depends on most of the input and that all later use goes through."""
    d = int(np.prod(program.input_shape))
    producer = {program.input_id: -1}
    for i, e in enumerate(program.eqns):
        for o in e.outputs:
            producer[o] = i
    last_relu = max(relu_eqn_idx, default=-1)
    for i, e in enumerate(program.eqns):
        if i >= last_relu:
            return None
        if e.primitive.name != "dot_general" or e.kind != "linear" or sum(e.dep) != 1:
            continue
        (lc, rc), (lb, rb) = e.params["dimension_numbers"]
        if lb or rb:
            continue
        operand, out = dots[i]
        shape = operand.lo.shape[:-1]
        c_ax = lc if e.dep[0] else rc
        if any(shape[a] != 1 for a in range(len(shape)) if a not in c_ax):
            continue
        vol = np.prod(np.maximum(out.hi - out.lo + 1, 0), axis=-1)
        if vol.size == 0 or vol.max() * 2 < d:
            continue
        # Everything after the cut must depend on the input only through its output.
        later_ok = all(
            producer.get(a, i) >= i
            for later in program.eqns[i + 1 :]
            if later.kind != "const"
            for a, dd in zip(later.inputs, later.dep, strict=True)
            if dd
        )
        if later_ok:
            return i
    return None


class _DotShapes(net.ForwardRules):
    """Forward pass that records the operand and output shape of every dot_general."""

    def __init__(self, program: net.Program):
        super().__init__()
        self.index = {id(e): i for i, e in enumerate(program.eqns)}
        self.shapes: dict[int, tuple] = {}

    def linear(self, eqn, args):
        outs = super().linear(eqn, args)
        if eqn.primitive.name == "dot_general" and any(eqn.dep):
            operand = args[eqn.dep.index(True)]
            self.shapes[self.index[id(eqn)]] = (tuple(operand.shape), tuple(outs[0].shape))
        return outs


def _cone_setup(program: net.Program, x, end: int):
    """Geometry pass of the cone route; None where it does not apply."""
    shape = tuple(program.input_shape)
    spatial = tuple(a for a, n in enumerate(shape) if n > 1)
    while True:
        rules = _ConeRules(program, spatial, end)
        try:
            net.walk(program, x, rules)
        except _Stop:
            pass
        except _Restart as r:
            spatial = tuple(a for a in spatial if a != r.axis)
            continue
        except _Unsupported:
            return None
        break
    g = rules.end_geom
    if rules.convs == 0 or not spatial or g is None:
        return None
    nk = len(spatial)
    if any(len([a for a in gg.link if a >= 0]) != nk for gg in rules.geoms):
        return None
    sigma_tot = g.sigma
    ranges = [np.arange(-(-shape[a] // s)) for a, s in zip(spatial, sigma_tot, strict=True)]
    blocks = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, nk)
    return _ConeSetup(spatial, sigma_tot, shape, blocks)


def _plan(program: net.Program, x, chunk_size: int, route: str = "auto") -> InsensPlan:
    shape = tuple(program.input_shape)
    nx, d = len(shape), int(np.prod(shape))
    relu_eqn_idx = [i for i, e in enumerate(program.eqns) if e.kind == "relu"]
    try:
        relu_boxes, dots = _boxes(program, x)
    except _NotConcrete:
        relu_boxes, dots = None, None
    if relu_boxes is None:  # no structure known: every element depends on everything
        full = np.zeros(nx), np.asarray(shape) - 1.0

        def whole(s):
            lo = np.broadcast_to(full[0], tuple(s) + (nx,))
            return _Box(lo, np.broadcast_to(full[1], lo.shape), None)

        relu_boxes = tuple(whole(s) for s in program.relu_shapes)
        rules = _DotShapes(program)
        jax.eval_shape(lambda xp: net.walk(program, xp, rules).output, x)
        dots = {i: (whole(a), whole(o)) for i, (a, o) in rules.shapes.items()}
    cut = _cut_candidate(program, dots, relu_eqn_idx)
    cut_pos = cut if cut is not None else len(program.eqns)
    pre = tuple(s for s, i in enumerate(relu_eqn_idx) if i < cut_pos)
    post = tuple(s for s, i in enumerate(relu_eqn_idx) if i > cut_pos)
    cut_out_shape = None if cut is None else tuple(dots[cut][1].lo.shape[:-1])
    common = dict(cut=cut, pre_sites=pre, post_sites=post, cut_out_shape=cut_out_shape)
    if route in ("auto", "cone") and relu_eqn_idx:
        end = cut if cut is not None else relu_eqn_idx[-1]
        cone = _cone_setup(program, x, end)
        if cone is not None:
            return InsensPlan(
                "cone",
                **common,
                lattice=(),
                n_colours=0,
                n_chunks=0,
                colours_per_chunk=0,
                pixels_per_chunk=0,
                n_groups=0,
                rows_per_group=0,
                colour=np.zeros(shape, np.int32),
                group_rows=None,
                slots=None,
                cone=cone,
            )
        if route == "cone":
            raise ValueError("the cone route does not apply to this network")
    needed = [relu_boxes[s] for s in pre] + ([dots[cut][0]] if cut is not None else [])
    w = _widths(needed)
    lattice = tuple(int(k) for k in (np.ones(nx) if w is None else np.minimum(w, shape)))
    coords = np.indices(shape).reshape(nx, -1)
    lat = np.ravel_multi_index(tuple(coords[a] % lattice[a] for a in range(nx)), lattice)
    n_lat = int(np.prod(lattice))
    chunk = max(1, int(chunk_size))
    if cut is None:
        kc = min(chunk, n_lat)
        return InsensPlan(
            "probes",
            **common,
            lattice=lattice,
            n_colours=n_lat,
            n_chunks=-(-n_lat // kc),
            colours_per_chunk=kc,
            pixels_per_chunk=0,
            n_groups=0,
            rows_per_group=0,
            colour=lat.reshape(shape).astype(np.int32),
            group_rows=None,
            slots=None,
        )
    # Split colour classes larger than a chunk (probes are cheap before a dense cut).
    order = np.argsort(lat, kind="stable")
    first = np.searchsorted(lat[order], np.arange(n_lat))
    rank = np.empty(d, np.int64)
    rank[order] = np.arange(d) - first[lat[order]]
    ppc = int(np.bincount(lat, minlength=n_lat).max())
    n_split = -(-ppc // chunk)
    piece = -(-ppc // n_split)
    colour = lat * n_split + rank // piece
    n_colours = n_lat * n_split
    kc = max(1, min(chunk // piece, n_colours))
    n_chunks = -(-n_colours // kc)
    # Slot of every input element inside its chunk.
    order = np.argsort(colour, kind="stable")
    step = colour[order] // kc
    starts = np.searchsorted(step, np.arange(n_chunks))
    slot = np.empty(d, np.int64)
    slot[order] = np.arange(d) - starts[step]
    n_slots = int(np.bincount(step, minlength=n_chunks).max())
    # Row groups of the cut's operand: rows with the same box.
    operand = dots[cut][0]
    lo = operand.lo.reshape(-1, nx)
    hi = operand.hi.reshape(-1, nx)
    rows_all = np.nonzero(np.all(hi >= lo, axis=1))[0]
    boxes = np.concatenate([lo[rows_all], hi[rows_all]], axis=1)
    uniq, inv = np.unique(boxes, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    n_groups = len(uniq)
    counts = np.bincount(inv, minlength=n_groups)
    r_max = int(counts.max())
    group_rows = np.full((n_groups, r_max), lo.shape[0], np.int64)
    o = np.argsort(inv, kind="stable")
    g_sorted = inv[o]
    pos_in_group = np.arange(len(o)) - np.searchsorted(g_sorted, g_sorted)
    group_rows[g_sorted, pos_in_group] = rows_all[o]
    # For each group and lattice colour: the (unique) input element of that colour in the box.
    glo, ghi = uniq[:, :nx].astype(np.int64), uniq[:, nx:].astype(np.int64)
    valid = np.ones((n_groups,) + lattice, bool)
    flat = np.zeros((n_groups,) + lattice, np.int64)
    strides = np.cumprod((shape[1:] + (1,))[::-1])[::-1]
    for a in range(nx):
        tau = np.arange(lattice[a])
        j = glo[:, a : a + 1] + (tau[None] - glo[:, a : a + 1]) % lattice[a]  # (G, k_a)
        bshape = [n_groups] + [1] * nx
        bshape[1 + a] = lattice[a]
        valid = valid & (j <= ghi[:, a : a + 1]).reshape(bshape)
        flat = flat + (j * strides[a]).reshape(bshape)
    valid = valid.reshape(n_groups, -1)
    flat = np.where(valid, flat.reshape(n_groups, -1), 0)
    table = np.full((n_groups, n_chunks * kc), n_slots, np.int64)
    gi, ti = np.nonzero(valid)
    pix = flat[gi, ti]
    table[gi, colour[pix]] = slot[pix]
    slots = table.reshape(n_groups, n_chunks, kc).transpose(1, 0, 2)
    return InsensPlan(
        "probes",
        **common,
        lattice=lattice,
        n_colours=n_colours,
        n_chunks=n_chunks,
        colours_per_chunk=kc,
        pixels_per_chunk=n_slots,
        n_groups=n_groups,
        rows_per_group=r_max,
        colour=colour.reshape(shape).astype(np.int32),
        group_rows=group_rows.astype(np.int32),
        slots=slots.astype(np.int32),
    )


_ROUTES = ("auto", "cone", "probes")


def insens_plan(
    f: Callable, x: jax.Array, *, chunk_size: int = 128, route: str = "auto"
) -> InsensPlan:
    """The `InsensPlan` that `insens` uses for ``f`` at inputs shaped like ``x``.

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: an example input (only shape and dtype are used).
      chunk_size: as in `insens`.
      route: as in `insens`.

    Returns:
      The plan (route, cut, colouring, chunking); see `InsensPlan`.
    """
    if route not in _ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {_ROUTES}")
    return _plan(net.trace(f, x), x, chunk_size, route)


# ----------------------------------------------------------------------------------
# The computation.


class _PreCut(net.FrozenRules):
    """The switched network; records the operand and weights of the cut."""

    def __init__(self, state, cut_eqn):
        super().__init__(state)
        self.cut_eqn = cut_eqn
        self.operand = None
        self.weight = None

    def linear(self, eqn, args):
        if eqn is self.cut_eqn:
            self.operand = args[eqn.dep.index(True)]
            self.weight = args[eqn.dep.index(False)]
        return super().linear(eqn, args)


class _PostCut(net.FrozenRules):
    """The switched network with the cut's output replaced by ``z``."""

    def __init__(self, state, cut_eqn, z):
        super().__init__(state)
        self.cut_eqn = cut_eqn
        self.z = z

    def linear(self, eqn, args):
        if eqn is self.cut_eqn:
            return [self.z]
        return super().linear(eqn, args)


def _cut_matrix(eqn: net.Eqn, weight: jax.Array, operand_shape) -> jax.Array:
    """The cut's weights as a ``(operand size, output size)`` matrix (row-major rows).

    Valid when the operand's non-contracted axes all have size 1 and there are no batch
    axes (checked by `_cut_candidate`).
    """
    (lc, rc), _ = eqn.params["dimension_numbers"]
    c_op, c_w = (lc, rc) if eqn.dep[0] else (rc, lc)
    # Operand rows enumerate its contracted axes in axis order; match the weight's axes.
    pairs = sorted(zip(c_op, c_w, strict=True))
    w_c = [b for _, b in pairs]
    w_free = [a for a in range(weight.ndim) if a not in c_w]
    k = int(np.prod([operand_shape[a] for a, _ in pairs]))
    return jnp.transpose(weight, w_c + w_free).reshape(k, -1)


def _post_norms(program, state, x, plan: InsensPlan, cols) -> list:
    """Sums of squares at the post-cut ReLU layers of exact columns ``cols`` of the cut."""
    cut_eqn = program.eqns[plan.cut]
    z0 = jnp.zeros(plan.cut_out_shape, x.dtype)

    def post(z):
        res = net.walk(program, x, _PostCut(state, cut_eqn, z))
        return tuple(res.relu_inputs[s] for s in plan.post_sites)

    post_t = jax.vmap(lambda t: jax.jvp(post, (z0,), (t,))[1])(cols)
    return [jnp.sum(t * t, axis=0) for t in post_t]


def _scan_sum(step, xs, n: int):
    """``sum_i step(xs[i])`` for lists of arrays, as a scan (one step: no loop)."""
    if n == 1:
        return step(jax.tree.map(lambda a: a[0], xs))
    first = jax.eval_shape(step, jax.tree.map(lambda a: a[0], xs))
    init = [jnp.zeros(s.shape, s.dtype) for s in first]

    def body(acc, xi):
        return [a + s for a, s in zip(acc, step(xi), strict=True)], None

    out, _ = lax.scan(body, init, xs)
    return out


def _probe_norms(program, state, x, plan: InsensPlan, precision) -> list:
    """``|w_hat|^2`` per ReLU layer by the probe route (module docstring)."""
    kc = plan.colours_per_chunk
    colour = jnp.asarray(plan.colour)
    cut_eqn = program.eqns[plan.cut] if plan.cut is not None else None
    # The grouped product below is an einsum: split products fall back to float32.
    hp = _PRECISION if isinstance(precision, str) and precision in _SPLIT_PRODUCTS else precision

    def pre(xp):
        rules = _PreCut(state, cut_eqn)
        res = net.walk(program, xp, rules)
        return tuple(res.relu_inputs[s] for s in plan.pre_sites), rules.operand

    if cut_eqn is not None:
        probe_rules = _PreCut(state, cut_eqn)
        net.walk(program, x, probe_rules)
        w_mat = _cut_matrix(cut_eqn, probe_rules.weight, probe_rules.operand.shape)
        w_mat = w_mat.astype(x.dtype)
        w_mat = jnp.concatenate([w_mat, jnp.zeros((1, w_mat.shape[1]), w_mat.dtype)], 0)
        group_rows = jnp.asarray(plan.group_rows)
        w_groups = w_mat[group_rows]  # (G, R, M)
        slots = jnp.asarray(plan.slots)

    def step(c):
        ids = c * kc + jnp.arange(kc, dtype=jnp.int32)
        probes = (colour[None] == ids.reshape((kc,) + (1,) * x.ndim)).astype(x.dtype)
        pre_t, cut_t = jax.vmap(lambda t: jax.jvp(pre, (x,), (t,))[1])(probes)
        sums = [jnp.sum(t * t, axis=0) for t in pre_t]
        if cut_eqn is None:
            return sums
        comp = cut_t.reshape(kc, -1)
        comp = jnp.concatenate([comp, jnp.zeros((kc, 1), comp.dtype)], 1)
        parts = jnp.einsum("kgr,grm->gkm", comp[:, group_rows], w_groups, precision=hp)
        cols = jnp.zeros((plan.pixels_per_chunk + 1, parts.shape[-1]), parts.dtype)
        cols = cols.at[slots[c]].add(parts)[:-1]
        cols = cols.reshape((plan.pixels_per_chunk,) + plan.cut_out_shape)
        return sums + _post_norms(program, state, x, plan, cols)

    sums = _scan_sum(step, jnp.arange(plan.n_chunks), plan.n_chunks)
    by_site = dict(zip(plan.pre_sites + plan.post_sites, sums, strict=True))
    return [by_site[s] for s in range(len(program.relu_shapes))]


def _cone_norms(program, state, x, plan: InsensPlan, precision) -> list:
    """``|w_hat|^2`` per ReLU layer by the cone route (module docstring).

    One scan step per block of input elements: their cone tangents through the
    convolutional part (norms summed onto each layer), then, at the cut, their exact
    Jacobian columns as one product with the slice of the dense weights that the
    block's cones cover, pushed through the rest of the network.
    """
    setup = plan.cone
    spatial = setup.spatial
    nk = len(spatial)
    relu_idx = [i for i, e in enumerate(program.eqns) if e.kind == "relu"]
    end = plan.cut if plan.cut is not None else relu_idx[-1]
    hp = precision

    def walk_block(b, mats=None):
        rules = _ConeRules(
            program, spatial, end, setup=setup, state=state, block=b, mats=mats, precision=hp
        )
        try:
            net.walk(program, x, rules)
        except _Stop:
            pass
        return rules

    # The convolutions' cone matrices, built once outside the loop over blocks (the rest of
    # this walk is unused and compiled away).
    mats = walk_block(jnp.zeros((nk,), jnp.int32)).mats

    if plan.cut is not None:
        # The dense weights, with their rows laid out as the cut operand (before flattening).
        probe = {}

        def grab(b):
            probe["geom"] = walk_block(b).cut_operand.geom
            return jnp.zeros(())

        jax.eval_shape(grab, jnp.zeros((nk,), jnp.int32))
        g = probe["geom"]
        cut_eqn = program.eqns[plan.cut]
        weight_rules = _PreCut(state, cut_eqn)
        net.walk(program, x, weight_rules)
        w_mat = _cut_matrix(cut_eqn, weight_rules.weight, weight_rules.operand.shape)
        n_out = w_mat.shape[1]
        w_full = w_mat.astype(x.dtype).reshape(g.shape + (n_out,))
        # Elements of a block whose cones at the cut start at the same place share one
        # slice of the weights: split the block's offsets r by that start.
        groups = []
        for k in range(nk):
            _, d = setup.starts(g, k)
            groups.append([(int(u), np.nonzero(d == u)[0]) for u in np.unique(d)])
        pad = [(0, 0)] * w_full.ndim
        sizes = list(w_full.shape)
        for k in range(nk):
            ax = g.axis_of(k)
            us = [u for u, _ in groups[k]]
            b_max = int(setup.blocks[:, k].max())
            pad[ax] = (max(0, -min(us)), max(0, b_max + max(us) + g.width[k] - g.shape[ax]))
            sizes[ax] = g.width[k]
        w_pad = jnp.pad(w_full, pad)

    def step(b):
        rules = walk_block(b, mats)
        sums = []
        for s in plan.pre_sites:
            v = rules.relu_vals[s]
            sq = jnp.sum(v.t * v.t, axis=nk)  # over the free-channel axis f
            sums.append(rules._overlap_add(sq, v.geom))
        if plan.cut is None:
            return sums
        t = rules.cut_operand.t
        cols = []
        for combo in itertools.product(*groups):
            starts = [jnp.zeros((), jnp.int32)] * w_pad.ndim
            part = t
            for k, (u, members) in enumerate(combo):
                ax = g.axis_of(k)
                starts[ax] = (b[k] + u + pad[ax][0]).astype(jnp.int32)
                part = lax.slice_in_dim(part, int(members[0]), int(members[-1]) + 1, axis=k)
            w_win = lax.dynamic_slice(w_pad, starts, sizes).reshape(-1, n_out)
            cols.append(_dot(part.reshape(-1, w_win.shape[0]), w_win, hp))
        cols = jnp.concatenate(cols, 0)
        cols = cols.reshape((cols.shape[0],) + plan.cut_out_shape)
        return sums + _post_norms(program, state, x, plan, cols)

    blocks = jnp.asarray(setup.blocks, jnp.int32)
    sums = _scan_sum(step, blocks, len(setup.blocks))
    by_site = dict(zip(plan.pre_sites + plan.post_sites, sums, strict=True))
    return [by_site[s] for s in range(len(program.relu_shapes))]


def insens(
    f: Callable,
    *,
    include_pool_losers: bool = False,
    chunk_size: int | None = 128,
    route: str = "auto",
    precision: Any = None,
) -> Callable:
    """Inactive state sensitivity ``Omega_hat(x)`` (eq. 8). Jit-compiled.

    The mean over every inactive hidden neuron (``v <= 0``, all ReLU layers) of
    ``omega_hat_i = v_i w_hat_i / |w_hat_i|^2`` (eq. 7). Output neurons are not in
    ``I``; max-pool units are not neurons of their own. A neuron with ``w_hat = 0``
    contributes 0 and is still counted in ``|I|``. If no neuron is inactive the
    result is 0.

    The squared norms ``|w_hat|^2`` are computed exactly from the network's structure
    (module docstring; `insens_plan` tells which route a network gets).

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      include_pool_losers: also count max-pool losers with ``v > 0`` as inactive.
      chunk_size: probe route: probes and input elements per step; bounds memory.
        None: a single step. (The cone route works one block of input elements at a
        time; its memory is bounded by the network's structure.)
      route: ``"auto"`` (the cone route where it applies, else the probe route),
        ``"cone"`` (error where it does not apply) or ``"probes"``.
      precision: matrix-product precision of the squared norms (the bulk of the work;
        the forward pass and the final vector-Jacobian product always run at the
        highest precision). None: ``lax.Precision.HIGHEST`` (true float32 products, also
        on GPUs). ``"tf32x3"``, ``"bf16x6"``, ``"bf16x9"``: split-operand products on
        the tensor cores (each float32 operand split into 2 TF32 or 3 bfloat16 pieces;
        3, 6 or 9 piece products in one matrix product): on an H100 1.2-1.6x faster
        than float32 (tf32x3 fastest) with about 10x its rounding error (relative
        4e-6 vs 4e-7); on CPU several times slower than float32. Or anything
        `jax.numpy.dot` takes, e.g. ``"default"`` (TF32 on GPUs: 2.6x faster,
        relative error 3e-5).

    Returns:
      ``fn(x) -> Omega_hat``, shaped like ``x``; batch with `jax.vmap`.
    """
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size}")
    if route not in _ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {_ROUTES}")

    prec = _PRECISION if precision is None else precision
    if not (isinstance(prec, str) and prec in _SPLIT_PRODUCTS):
        try:  # the matmul precisions JAX knows (strings, lax.Precision, DotAlgorithmPreset)
            jax.eval_shape(
                lambda a: jnp.dot(a, a, precision=prec), jax.ShapeDtypeStruct((1, 1), jnp.float32)
            )
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"unknown precision {precision!r}: use None, one of {sorted(_SPLIT_PRODUCTS)} "
                f"or a precision jax.numpy.dot accepts ({err})"
            ) from None

    def fn(x):
        program = net.trace(f, x)
        chunk = int(np.prod(x.shape)) if chunk_size is None else int(chunk_size)
        plan = _plan(program, x, chunk, route)
        state = net.forward(program, x)
        frozen = net.frozen_network(program, state)

        def acts(xp):
            return frozen(xp).relu_inputs

        if plan.route == "cone":
            sq = _cone_norms(program, state, x, plan, prec)
        else:
            sq = _probe_norms(program, state, x, plan, prec)
        inactive = inactive_sets(program, state, include_pool_losers=include_pool_losers)
        coeffs = tuple(
            jnp.where(i & (s > 0), v / jnp.where(s > 0, s, 1), 0)
            for i, s, v in zip(inactive, sq, state.activities, strict=True)
        )
        _, vjp = jax.vjp(acts, x)
        (total,) = vjp(coeffs)
        count = sum(jnp.sum(i) for i in inactive) if inactive else jnp.zeros((), jnp.int32)
        return jnp.where(count > 0, total / jnp.maximum(count, 1).astype(total.dtype), 0)

    return jax.jit(fn)

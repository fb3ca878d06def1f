"""The cone route of `slp.insens`: exact Jacobian columns restricted to each input
element's cone (the window of each layer that it reaches), for conv/pool nets.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from slp import _matmul
from slp import network as net

# Operations that leave a value's Jacobian columns as they are, or only reshape them.
_IDENTITY_OPS = (
    "convert_element_type",
    "copy",
    "copy_p",
    "reduce_precision",
    "sharding_constraint",
)
_SHAPE_OPS = ("broadcast_in_dim", "reshape", "expand_dims", "squeeze")


class _Unsupported(Exception):
    """The program is outside what the cone route handles (the probe route takes over)."""


class _Restart(Exception):
    """An input axis assumed spatial is a channel axis (contracted by a convolution)."""

    def __init__(self, axis: int):
        super().__init__(axis)
        self.axis = axis


class Stop(Exception):
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


@dataclasses.dataclass(frozen=True)
class _Global:
    """A cone value summed over all its spatial axes (global average or sum pooling).

    ``t``: the block's Jacobian columns, ``(r_0, ..., r_{K-1}, f) + shape`` (exact: every
    position the element reaches was summed). ``geom``: the geometry before the sum.
    """

    geom: _Geom
    shape: tuple[int, ...]
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

    def shift(self, g: _Geom, ng: _Geom, k: int, stride: int = 1, pad: int = 0) -> np.ndarray:
        """Per element offset ``r``: ``kappa`` such that slot ``e`` of the cone in ``ng``
        (a window of ``g`` with ``stride`` and leading ``pad``, e.g. a pooling or a
        convolution) starts at slot ``stride e + kappa`` of the cone in ``g``:
        ``stride (rho' B + d'[r]) - pad - (rho B + d[r])`` with ``stride rho' = rho``."""
        return stride * self.starts(ng, k)[1] - pad - self.starts(g, k)[1]


class ConeRules(net.Rules):
    """Walks the program up to ``end`` propagating `_ConeVal`; geometry only if not computing.

    Supported on input-dependent values: insertion/removal of free unit axes, sums of
    two values (residual connections) and concatenations along channel axes (same
    positions and strides), convolutions (any stride or feature groups, no dilation),
    bias adds, multiplications by constants (scalars, per channel or per position: e.g.
    inference-mode batch norm), dense layers over channel axes only, ReLU, max and sum
    pooling (reduce_window) along spatial axes, global sum/average pooling (a sum over
    every spatial axis, then shape changes and constant scales), and at ``end`` the cut
    (a dense layer on a flattened or globally pooled cone value) or the last ReLU.
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
        self.precision = _matmul.PRECISION if precision is None else precision
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

    def overlap_add(self, t, g: _Geom):
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
            raise Stop
        return out

    def max_pool(self, eqn, z):
        if self.index[id(eqn)] >= self.end:
            raise Stop
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
            raise Stop
        if i > self.end:
            raise Stop
        vals = [a for a, d in zip(args, dep, strict=True) if d]
        if len(vals) > 1 and not all(isinstance(v, _ConeVal) for v in vals):
            raise _Unsupported(f"{name} of several values, one flattened or pooled")
        if len(vals) == 2 and name in ("add", "sub", "add_any"):
            return [self._add(vals, negate=name == "sub")]
        if name == "concatenate" and len(vals) == len(args):
            return [self._concat(eqn, vals)]
        if len(vals) != 1 or eqn.primitive.multiple_results:
            raise _Unsupported(f"{name} with several input-dependent operands")
        (z,) = vals
        if isinstance(z, _Flat):
            raise _Unsupported(f"{name} of a flattened value")
        if isinstance(z, _Global):
            return [self._global_op(eqn, args, z)]
        if name in _IDENTITY_OPS:
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
            if tuple(np.broadcast_shapes(np.shape(const), z.geom.shape)) != z.geom.shape:
                raise _Unsupported(f"a {name} that broadcasts an input-dependent value")
            return [self._scale(z, const if name == "mul" else 1 / const)]
        if name in _SHAPE_OPS:
            return [self._reshape(eqn, args, z)]
        if name == "conv_general_dilated":
            return [self._conv(eqn, z, args[1])]
        if name == "reduce_window_sum":
            return [self._pool(eqn, z, winners=None)]
        if name == "dot_general":
            return [self._channel_dot(eqn, args, z)]
        if name == "reduce_sum":
            return [self._global_sum(eqn, z)]
        raise _Unsupported(name)

    def _union_geom(self, vals, shape, what: str) -> _Geom:
        """The geometry of a value built elementwise from several cone values (a sum, a
        concatenation along a channel axis): its cone covers every operand's."""
        g0 = vals[0].geom
        for v in vals:
            if (
                v.geom.link != g0.link
                or v.geom.sigma != g0.sigma
                or any(v.geom.shape[a] != g0.shape[a] for a, k in enumerate(g0.link) if k >= 0)
            ):
                raise _Unsupported(f"{what} of values with different positions or strides")
        nk = len(self.spatial)
        beta = [min(v.geom.beta[k] for v in vals) for k in range(nk)]
        recep = [max(v.geom.beta[k] + v.geom.recep[k] for v in vals) - beta[k] for k in range(nk)]
        width = [-(-recep[k] // g0.sigma[k]) for k in range(nk)]
        ng = _Geom(tuple(shape), g0.link, g0.sigma, tuple(beta), tuple(recep), tuple(width))
        self.geoms.append(ng)
        return ng

    def _embed(self, v: _ConeVal, ng: _Geom):
        """``v``'s cone tangents placed into the (wider) cone of ``ng``, at a static offset
        per element offset ``r``; slots of ``v``'s cone beyond ``ng``'s are ones that ``v``
        does not reach (zero). Materialised: zero at slots outside the value."""
        g = v.geom
        nk = len(self.spatial)
        # slot s of v's cone is slot s + offset of ng's
        offsets = {k: -self.setup.shift(g, ng, k) for k in range(nk)}

        def embed(sub, off, n_lead):
            for k in range(nk):
                pos = n_lead + 1 + g.axis_of(k)
                lo = max(0, -off[k])
                hi = max(lo, min(g.width[k], ng.width[k] - off[k]))
                sub = lax.slice_in_dim(sub, lo, hi, axis=pos)
                widths = [(0, 0)] * sub.ndim
                left = min(ng.width[k], off[k] + lo)
                widths[pos] = (left, ng.width[k] - left - (hi - lo))
                sub = jnp.pad(sub, widths)
            return sub

        return self._by_runs(self._materialize(v), offsets, embed)

    def _add(self, vals, *, negate: bool):
        """The sum (or difference) of two cone values, e.g. a residual connection."""
        a, b = vals
        if a.geom.shape != b.geom.shape:
            raise _Unsupported("a sum that broadcasts an input-dependent value")
        ng = self._union_geom(vals, a.geom.shape, "a sum")
        if not self.computing:
            return _ConeVal(ng, None)
        ta, tb = self._embed(a, ng), self._embed(b, ng)
        return _ConeVal(ng, ta - tb if negate else ta + tb)

    def _concat(self, eqn, vals):
        """Cone values concatenated along a channel axis (e.g. Inception or DenseNet)."""
        d = eqn.params["dimension"]
        if vals[0].geom.link[d] >= 0:
            raise _Unsupported("a concatenation along a spatial axis")
        shape = list(vals[0].geom.shape)
        shape[d] = sum(v.geom.shape[d] for v in vals)
        ng = self._union_geom(vals, shape, "a concatenation")
        if not self.computing:
            return _ConeVal(ng, None)
        return _ConeVal(ng, jnp.concatenate([self._embed(v, ng) for v in vals], self.n_pre + d))

    def _global_sum(self, eqn, z: _ConeVal):
        """A sum over every spatial axis (and possibly channel axes): global pooling."""
        g = z.geom
        axes = tuple(eqn.params["axes"])
        if any(a not in axes for a, k in enumerate(g.link) if k >= 0):
            raise _Unsupported("a sum over some of the spatial axes")
        return self._pooled(z, axes, keepdims=False)

    def _pooled(self, z: _ConeVal, axes, *, keepdims: bool) -> _Global:
        """``z`` summed over ``axes`` (all its spatial axes; with ``keepdims`` a value with
        a single position, as a globally pooled one)."""
        g = z.geom
        shape = tuple(
            n if a not in axes else 1 for a, n in enumerate(g.shape) if keepdims or a not in axes
        )
        if not self.computing:
            return _Global(g, shape, None)
        t = self._materialize(z)  # zero at cone slots outside the value
        t = jnp.sum(t, axis=tuple(self.n_pre + a for a in axes), keepdims=keepdims)
        return _Global(g, shape, t)

    def _global_op(self, eqn, args, z: _Global):
        """Shape changes and constant scales / shifts of a globally pooled value."""
        name = eqn.primitive.name
        consts = [a for a, d in zip(args, eqn.dep, strict=True) if not d]
        dtype = jnp.result_type(*consts) if consts else jnp.float32  # as the op requires
        out_shape = tuple(
            jax.eval_shape(
                lambda *a: eqn.primitive.bind(*a, **eqn.params),
                *[
                    jax.ShapeDtypeStruct(z.shape, dtype)
                    if d
                    else jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))
                    for a, d in zip(args, eqn.dep, strict=True)
                ],
            ).shape
        )
        if name in _IDENTITY_OPS:
            factor = None
        elif name in _SHAPE_OPS:
            if int(np.prod(out_shape)) != int(np.prod(z.shape)):
                raise _Unsupported(f"a {name} that broadcasts a pooled value")
            factor = None
        elif name in ("add", "sub", "add_any") and out_shape == z.shape:
            factor = -1 if (name == "sub" and eqn.dep[1]) else None
        elif name == "neg":
            factor = -1
        elif name in ("mul", "div") and out_shape == z.shape:
            if name == "div" and not eqn.dep[0]:
                raise _Unsupported("division by an input-dependent value")
            const = args[1 - eqn.dep.index(True)]
            factor = const if name == "mul" else 1 / const
        else:
            raise _Unsupported(f"{name} of a globally pooled value")
        if z.t is None:
            return _Global(z.geom, out_shape, None)
        t = z.t.reshape(z.t.shape[: self.n_pre] + out_shape)
        if factor is not None:
            c = jnp.asarray(factor, t.dtype)
            c = c.reshape((1,) * (t.ndim - c.ndim) + c.shape)
            t = t * c
        return _Global(z.geom, out_shape, t)

    def _channel_dot(self, eqn, args, z: _ConeVal):
        """A dense layer over free (channel) axes only, e.g. flax's ``Dense`` on a feature
        map: the same at every position, like a 1x1 convolution."""
        (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
        z_lhs = eqn.dep[0]
        c_z, c_w = (lc, rc) if z_lhs else (rc, lc)
        g = z.geom
        if lb or rb or any(g.link[a] >= 0 for a in c_z):
            raise _Unsupported("a dot_general over spatial axes before the cut")
        w = args[1] if z_lhs else args[0]
        keep = [a for a in range(len(g.shape)) if a not in c_z]
        w_free = [a for a in range(np.ndim(w)) if a not in c_w]
        link_w = [-1] * len(w_free)
        link = [g.link[a] for a in keep] + link_w if z_lhs else link_w + [g.link[a] for a in keep]
        shape = [g.shape[a] for a in keep]
        shape_w = [np.shape(w)[a] for a in w_free]
        ng = dataclasses.replace(
            g,
            shape=tuple(shape + shape_w if z_lhs else shape_w + shape),
            link=tuple(link),
        )
        self.geoms.append(ng)
        if not self.computing:
            return _ConeVal(ng, None)
        t = self._materialize(z)  # a pending mask does not commute with mixing channels
        npre = self.n_pre
        out = lax.dot_general(
            t,
            jnp.asarray(w, t.dtype),
            (([npre + a for a in c_z], list(c_w)), ((), ())),
            precision=_matmul.plain(self.precision),
        )
        if not z_lhs:  # (pre..., kept..., w free...) -> (pre..., w free..., kept...)
            nkeep = len(keep)
            perm = list(range(npre))
            perm += [npre + nkeep + i for i in range(len(w_free))]
            perm += [npre + i for i in range(nkeep)]
            out = jnp.transpose(out, perm)
        return _ConeVal(ng, out, valid=z.valid)

    def _scale(self, z: _ConeVal, c):
        """``z`` times a constant ``c`` (a scalar or broadcastable to the value, e.g. a
        per-channel scale such as an inference-mode batch norm's)."""
        if z.t is None or np.ndim(c) == 0:
            return z if z.t is None else z._replace(t=z.t * c)
        g = z.geom
        c = jnp.asarray(c, z.t.dtype)
        c = c.reshape((1,) * (len(g.shape) - c.ndim) + c.shape)
        if all(c.shape[ax] == 1 for ax, k in enumerate(g.link) if k >= 0):
            # the same at every position: broadcasts over the cone slots as it is
            return z._replace(t=z.t * c.reshape((1,) * self.n_pre + c.shape))
        # varies with the position: cut into the cones like a ReLU mask
        shape = tuple(n if k < 0 else m for n, k, m in zip(c.shape, g.link, g.shape, strict=True))
        return z._replace(t=self._apply(z.t, self._windows(jnp.broadcast_to(c, shape), g)))

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
            if all(g.shape[ax] == 1 for ax, k in enumerate(g.link) if k >= 0):
                spatial = tuple(ax for ax, k in enumerate(g.link) if k >= 0)  # e.g. 1x1 flattened
                return self._global_op(eqn, args, self._pooled(z, spatial, keepdims=True))
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
            any(d != 1 for d in (p.get("lhs_dilation") or ()))
            or any(d != 1 for d in (p.get("rhs_dilation") or ()))
            or p.get("batch_group_count", 1) != 1
        ):
            raise _Unsupported("a dilated convolution")
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
        strides = list(p["window_strides"])
        sigma, beta, recep, width = map(list, (g.sigma, g.beta, g.recep, g.width))
        for i, k in enumerate(ks):
            beta[k] = beta[k] - sigma[k] * p["padding"][i][0]
            recep[k] = recep[k] + sigma[k] * (ksz[i] - 1)
            sigma[k] = sigma[k] * strides[i]
            width[k] = -(-recep[k] // sigma[k])
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
        # The convolution as explicit matrices from an input cone to the output cone: the
        # same for every input element at stride 1, else one per group of element offsets
        # r with the same shift kappa (as for pooling): output slot e reads input slot
        # st e + kappa + d for kernel tap d.
        t = self._materialize(z)
        cout = rshape[dn.rhs_spec[0]]
        key = self.index[id(eqn)]
        kappas = {
            k: self.setup.shift(g, ng, k, strides[i], p["padding"][i][0]) for i, k in enumerate(ks)
        }
        nk = len(self.spatial)
        # lhs axes -> (batch, spatial in the order of k, feature)
        lhs_order = [b_ax] + [sp[ks.index(k)] for k in range(nk)] + [f_ax]
        w_in = [g.width[k] for k in range(nk)]
        w_out = [width[k] for k in range(nk)]

        def conv_run(sub, kap, n_lead):
            m = n_lead + 1  # and the free-input axis f
            big = self.mats.get((key, kap))
            if big is None:
                big = self._cone_matrix(
                    kernel,
                    dn,
                    ks,
                    w_in,
                    w_out,
                    [strides[ks.index(k)] for k in range(nk)],
                    kap,
                    p.get("feature_group_count", 1),
                )
                big = _matmul.split(big.astype(sub.dtype), self.precision)  # once per loop
                self.mats[(key, kap)] = big
            tt = jnp.transpose(sub, list(range(m)) + [m + a for a in lhs_order])
            lead = tt.shape[: m + 1]
            out = _matmul.dot(tt.reshape(-1, big.shape[0]), big, self.precision)
            out = out.reshape(lead + tuple(w_out) + (cout,))
            # (lead..., batch, spatial by k..., cout) -> the output's axis order
            src = {0: m, 1: m + 1 + nk}
            for i in range(nsp):
                src[2 + i] = m + 1 + ks[i]
            perm = list(range(m)) + [0] * len(g.shape)
            for logical, pos in enumerate(dn.out_spec):
                perm[m + pos] = src[logical]
            return jnp.transpose(out, perm)

        out = self._by_runs(t, kappas, conv_run)
        return _ConeVal(ng, out.reshape(t.shape[: self.n_pre] + ng.window_shape()), valid=False)

    @staticmethod
    def _cone_matrix(kernel, dn, ks, w_in, w_out, strides, kappa, groups=1):
        """A convolution as a matrix from an input cone to the output cone.

        Per spatial input axis ``k`` (cone widths ``w_in[k]``, ``w_out[k]``): rows
        ``(s..., c)``, columns ``(e..., o)``, tap ``d = s - strides[k] e - kappa[k]``,
        zero where ``d`` is outside the kernel. A grouped convolution (``groups``
        feature groups, e.g. depthwise) becomes its dense equivalent: zero between
        channels of different groups.
        """
        nk = len(w_in)
        ax = [dn.rhs_spec[2 + ks.index(k)] for k in range(nk)]  # kernel axis of k
        ksz = [np.shape(kernel)[a] for a in ax]
        kern = jnp.transpose(kernel, ax + [dn.rhs_spec[1], dn.rhs_spec[0]])
        if groups > 1:  # (k..., cin / groups, cout) -> block-diagonal (k..., cin, cout)
            ci, cout = kern.shape[-2], kern.shape[-1]
            same = np.arange(ci * groups)[:, None] // ci == np.arange(cout)[None] // (
                cout // groups
            )
            kern = (
                jnp.tile(kern, (1,) * nk + (groups, 1))
                * jnp.asarray(same, kern.dtype)[(None,) * nk]
            )
        idx, ok = [], np.ones(tuple(w_in) + tuple(w_out), bool)
        for i in range(nk):
            s_ = np.arange(w_in[i]).reshape([-1 if a == i else 1 for a in range(nk)] + [1] * nk)
            e_ = np.arange(w_out[i]).reshape([1] * nk + [-1 if a == i else 1 for a in range(nk)])
            d = s_ - strides[i] * e_ - kappa[i]
            ok = ok & (d >= 0) & (d < ksz[i])
            idx.append(np.broadcast_to(np.clip(d, 0, ksz[i] - 1), ok.shape))
        big = kern[tuple(idx)] * jnp.asarray(ok, kern.dtype)[..., None, None]
        # (w_in..., w_out..., cin, cout) -> (w_in..., cin, w_out..., cout)
        perm = list(range(nk)) + [2 * nk] + list(range(nk, 2 * nk)) + [2 * nk + 1]
        return jnp.transpose(big, perm).reshape(int(np.prod(w_in)) * kern.shape[-2], -1)

    def _by_runs(self, t, kappas: dict, fn, extra=None):
        """``fn`` applied per group of element offsets ``r`` with the same shifts.

        ``t``: cone tangents, ``r`` axes in front. ``kappas[k]``: static shift per offset
        along spatial axis ``k``, periodic (`_kappa_runs`); each ``r_k`` is split into
        ``(q, rho)`` and ``fn(sub, kappa, n_lead, extra_sub)`` gets the slice of ``t``
        (and of ``extra``, laid out like ``t``'s leading axes) for one run per axis,
        ``kappa`` the tuple of its shifts and ``n_lead = 2 K`` leading axes. Its results
        are reassembled and returned with the ``r`` axes merged back.
        """
        nk = len(self.spatial)
        runs, lead = [None] * nk, []
        for k in range(nk):
            period, runs[k] = _kappa_runs(kappas[k])
            lead += [t.shape[k] // period, period]
        tt = t.reshape(tuple(lead) + t.shape[nk:])
        ee = None if extra is None else extra.reshape(tuple(lead) + extra.shape[nk:])
        blocks = {}
        for combo in itertools.product(*runs):
            sub, esub = tt, ee
            for k, (rho0, rho1, _) in enumerate(combo):
                sub = lax.slice_in_dim(sub, rho0, rho1, axis=2 * k + 1)
                if esub is not None:
                    esub = lax.slice_in_dim(esub, rho0, rho1, axis=2 * k + 1)
            kap = tuple(c[2] for c in combo)
            blocks[combo] = fn(sub, kap, 2 * nk) if extra is None else fn(sub, kap, 2 * nk, esub)
        # Reassemble along the rho axes (last axis first), then merge (q, rho) back into r.
        for k in reversed(range(nk)):
            blocks = {
                c: jnp.concatenate([blocks[c + (run,)] for run in runs[k]], axis=2 * k + 1)
                for c in itertools.product(*runs[:k])
            }
        out = blocks[()]
        return out.reshape(t.shape[:nk] + out.shape[2 * nk :])

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
        npre = self.n_pre
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
        # Output cone slot e' of element r reads input cone slot st e' + delta + kappa[r].
        kappas = {k: self.setup.shift(g, ng, k, st[ax], pads[ax][0]) for ax, k in lin}

        code = None
        if winners is not None:  # the winner's window offset delta (-1: masked)
            code = jnp.zeros(out_shape, jnp.int32)
            for ax, _ in lin:
                code = code * wd[ax] + offs[ax].astype(jnp.int32)
            if mask is not None:
                code = jnp.where(mask, code, -1)
            code = self._windows(code, ng, fill=-1)  # (r..., window shape)
        # Per group of element offsets r with the same kappa and window offset delta, one
        # strided slice of the input cone (clipped to it, zeros elsewhere); max pooling
        # selects the winner's delta, sum pooling adds them. Slices, pads and selections
        # are elementwise: they fuse.
        deltas = list(np.ndindex(*[wd[ax] for ax, _ in lin]))

        def pool_run(sub, kap, n_lead, csub=None):
            out = 0
            for i, delta in enumerate(deltas):
                piece = sub
                for (ax, k), dd in zip(lin, delta, strict=True):
                    first = kap[k] + dd  # input slot of output slot 0
                    pos = n_lead + 1 + ax
                    n_in, n_out = piece.shape[pos], ng.width[k]
                    e0 = max(0, -(first // st[ax]))
                    e1 = max(e0, min(n_out, (n_in - 1 - first) // st[ax] + 1))
                    start = first + st[ax] * e0
                    stop = start + st[ax] * (e1 - e0 - 1) + 1 if e1 > e0 else start
                    piece = lax.slice_in_dim(piece, start, stop, st[ax], pos)
                    widths = [(0, 0)] * piece.ndim
                    widths[pos] = (e0, n_out - e1)
                    piece = jnp.pad(piece, widths)
                if csub is None:
                    out = out + piece
                else:
                    out = jnp.where(jnp.expand_dims(csub, n_lead) == i, piece, out)
            return out

        out = self._by_runs(t, kappas, pool_run, extra=code)
        return _ConeVal(
            ng, out.reshape(t.shape[:npre] + ng.window_shape()), valid=winners is not None
        )


def _kappa_runs(kappa: np.ndarray):
    """Element offsets ``r`` grouped by equal ``kappa[r]`` (the pooling step's static shift).

    ``kappa`` is periodic in ``r`` with the pooled value's stride, so the groups are found
    in one period as runs of consecutive offsets ``rho`` with equal shift; a group is then
    ``r = q * period + rho`` for every ``q`` and ``rho`` in its run (one rectangular slice
    of ``r`` split into ``(q, rho)``), whatever the network's depth.

    Returns:
      ``(period, runs)``: runs are ``(rho0, rho1, kappa)`` covering ``0 .. period - 1``.
    """
    n = len(kappa)
    period = next(
        p
        for p in range(1, n + 1)
        if n % p == 0 and np.array_equal(kappa, np.tile(kappa[:p], n // p))
    )
    runs, start = [], 0
    for rho in range(1, period + 1):
        if rho == period or kappa[rho] != kappa[start]:
            runs.append((start, rho, int(kappa[start])))
            start = rho
    return period, runs


def cone_setup(program: net.Program, x, end: int):
    """Geometry pass of the cone route; None where it does not apply."""
    shape = tuple(program.input_shape)
    spatial = tuple(a for a, n in enumerate(shape) if n > 1)
    while True:
        rules = ConeRules(program, spatial, end)
        try:
            net.walk(program, x, rules)
        except Stop:
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

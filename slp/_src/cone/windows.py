"""The cone route's rules for operations with windows along spatial axes: convolutions,
pooling, strided slices, and dense layers over channel axes (`ConeRule` each, named in the
primitive registry).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from fractions import Fraction
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from jax import lax

from slp._src import matmul as _matmul
from slp._src.cone.geometry import ConeRule, Geom, Global, single
from slp._src.cone.tangents import ConeVal, Pass, dep_arg, kappa_runs
from slp._src.interpreter import Refusal

# -- convolutions ------------------------------------------------------------------------


class _ConvData(NamedTuple):
    """Static data of a convolution in the cone route (per spatial input axis ``k``)."""

    ks: tuple[int, ...]  # per spatial dimension i of the convolution: its axis k
    strides: tuple[int, ...]  # per k
    pads: tuple[int, ...]  # per k: leading padding
    dilation: tuple[int, ...]  # per k: kernel (rhs) dilation
    kernel_shape: tuple[int, ...]
    lhs_dilation: tuple[int, ...] = ()  # per k: input dilation (a transposed convolution)


def _conv_geometry(ctx, eqn, ins):
    """A convolution: output element ``P`` reads the (input-dilated by ``L``, padded)
    operand at ``stride P - pad + dilation tap``, i.e. operand element ``(stride P - pad
    + dilation tap) / L`` where that is whole: ``sigma`` becomes ``sigma stride / L`` (a
    fraction for a transposed convolution, `Geom`)."""
    z = ins[0]
    if not isinstance(z, Geom):
        return Refusal("a convolution of a globally pooled value")
    prm = eqn.params
    dn = prm["dimension_numbers"]
    nsp = len(dn.lhs_spec) - 2
    if prm.get("batch_group_count", 1) != 1:
        return Refusal("a convolution with batch groups")
    b_ax, f_ax = dn.lhs_spec[0], dn.lhs_spec[1]
    if z.link[f_ax] >= 0:
        return Refusal("a convolution over a spatial axis as features")
    if z.link[b_ax] >= 0 or z.shape[b_ax] != 1:
        return Refusal("a convolution with a batch axis")
    ks = [z.link[dn.lhs_spec[2 + i]] for i in range(nsp)]
    if sorted(ks) != list(range(ctx.nk)):
        return Refusal("a convolution that does not slide along every spatial axis")
    kshape = ctx.shape(eqn.inputs[1])
    dil = prm.get("rhs_dilation") or (1,) * nsp
    lhs_dil = prm.get("lhs_dilation") or (1,) * nsp
    sigma, beta, recep, width = map(list, (z.sigma, z.beta, z.recep, z.width))
    strides, pads, dils, lds = ([0] * ctx.nk for _ in range(4))
    for i, k in enumerate(ks):
        size = kshape[dn.rhs_spec[2 + i]]
        strides[k], pads[k], dils[k] = prm["window_strides"][i], prm["padding"][i][0], dil[i]
        lds[k] = lhs_dil[i]
        unit = Fraction(sigma[k]) / lds[k]  # input coordinates per dilated position
        beta[k] = _whole(beta[k] - unit * pads[k])
        recep[k] = _whole(recep[k] + unit * dils[k] * (size - 1))
        sigma[k] = _whole(unit * strides[k])
        width[k] = math.ceil(Fraction(recep[k]) / Fraction(sigma[k]))
    out_shape = ctx.shapes[eqn.outputs[0]]
    link = [-1] * len(out_shape)
    for i in range(nsp):
        link[dn.out_spec[2 + i]] = ks[i]
    ng = Geom(out_shape, tuple(link), tuple(sigma), tuple(beta), tuple(recep), tuple(width))
    data = _ConvData(tuple(ks), tuple(strides), tuple(pads), tuple(dils), kshape, tuple(lds))
    return [ng], data


def _whole(q):
    """``q`` as an int where it is whole, else as a `fractions.Fraction`."""
    q = Fraction(q)
    return int(q) if q.denominator == 1 else q


def _conv_kappas(p: Pass, step) -> dict[int, np.ndarray]:
    (g, _), (ng,), d = step.ins, step.outs, step.data
    return {
        k: p.geo.shift(g, ng, k, d.strides[k], d.pads[k], d.lhs_dilation[k]) for k in range(p.nk)
    }


def _conv_prepare(p: Pass, eqn, step, args):
    """The convolution as explicit matrices from an input cone to the output cone, one
    per group of element offsets ``r`` with the same shifts (`kappa_runs`; a single one
    at stride 1), split for the chosen precision: built once, outside the loop."""
    kernel = args[1]
    (g, _), (ng,), d = step.ins, step.outs, step.data
    runs = [kappa_runs(kap)[1] for kap in _conv_kappas(p, step).values()]
    mats = {}
    for combo in itertools.product(*runs):
        kap = tuple(c[2] for c in combo)
        big = _cone_matrix(
            kernel,
            eqn.params["dimension_numbers"],
            d,
            g.width,
            ng.width,
            kap,
            eqn.params.get("feature_group_count", 1),
        )
        mats[kap] = _matmul.split(big, p.precision)  # in the kernel's dtype
    return mats


def _conv_tangent(p, eqn, step, args):
    # Output slot e reads input slot stride e + kappa + dilation d for kernel tap d.
    z = args[0]
    (g, _), (ng,), d = step.ins, step.outs, step.data
    mats = p.prepared[step.index]
    dn = eqn.params["dimension_numbers"]
    nk, nsp = p.nk, len(d.ks)
    t = p.materialize(z, g)
    cout = d.kernel_shape[dn.rhs_spec[0]]
    # lhs axes -> (batch, spatial in the order of k, feature)
    lhs_order = [dn.lhs_spec[0]] + [dn.lhs_spec[2 + d.ks.index(k)] for k in range(nk)]
    lhs_order += [dn.lhs_spec[1]]

    def conv_run(sub, kap, n_lead):
        m = n_lead + 1  # and the free-input axis f
        big = mats[kap]
        tt = jnp.transpose(sub, list(range(m)) + [m + a for a in lhs_order])
        lead = tt.shape[: m + 1]
        pet = eqn.params.get("preferred_element_type")
        out = _matmul.dot(tt.reshape(-1, big.shape[0]), big, p.precision, pet)
        out = out.reshape(lead + tuple(ng.width) + (cout,))
        # (lead..., batch, spatial by k..., cout) -> the output's axis order
        src = {0: m, 1: m + 1 + nk}
        for i in range(nsp):
            src[2 + i] = m + 1 + d.ks[i]
        perm = list(range(m)) + [0] * len(g.shape)
        for logical, pos in enumerate(dn.out_spec):
            perm[m + pos] = src[logical]
        return jnp.transpose(out, perm)

    out = p.by_runs(t, _conv_kappas(p, step), conv_run)
    return [ConeVal(out.reshape(t.shape[: p.n_pre] + ng.window_shape()), valid=False)]


def _cone_matrix(kernel, dn, d: _ConvData, w_in, w_out, kappa, groups=1):
    """A convolution as a matrix from an input cone to the output cone.

    Per spatial input axis ``k`` (cone widths ``w_in[k]``, ``w_out[k]``): rows
    ``(s..., c)``, columns ``(e..., o)``, kernel tap ``(L_k s - stride_k e - kappa_k) /
    dilation_k`` (``L_k``: the input dilation), zero where that is not a tap of the
    kernel. A grouped convolution
    (``groups`` feature groups, e.g. depthwise) becomes its dense equivalent: zero
    between channels of different groups.
    """
    nk = len(w_in)
    ax = [dn.rhs_spec[2 + d.ks.index(k)] for k in range(nk)]  # kernel axis of k
    ksz = [d.kernel_shape[a] for a in ax]
    kern = jnp.transpose(kernel, ax + [dn.rhs_spec[1], dn.rhs_spec[0]])
    if groups > 1:  # (k..., cin / groups, cout) -> block-diagonal (k..., cin, cout)
        ci, cout = kern.shape[-2], kern.shape[-1]
        same = np.arange(ci * groups)[:, None] // ci == np.arange(cout)[None] // (cout // groups)
        kern = jnp.tile(kern, (1,) * nk + (groups, 1)) * jnp.asarray(same, kern.dtype)[(None,) * nk]
    idx, ok = [], np.ones(tuple(w_in) + tuple(w_out), bool)
    for i in range(nk):
        s_ = np.arange(w_in[i]).reshape([-1 if a == i else 1 for a in range(nk)] + [1] * nk)
        e_ = np.arange(w_out[i]).reshape([1] * nk + [-1 if a == i else 1 for a in range(nk)])
        off = d.lhs_dilation[i] * s_ - d.strides[i] * e_ - kappa[i]
        tap, rem = np.divmod(off, d.dilation[i])
        ok = ok & (rem == 0) & (tap >= 0) & (tap < ksz[i])
        idx.append(np.broadcast_to(np.clip(tap, 0, ksz[i] - 1), ok.shape))
    big = kern[tuple(idx)] * jnp.asarray(ok, kern.dtype)[..., None, None]
    # (w_in..., w_out..., cin, cout) -> (w_in..., cin, w_out..., cout)
    perm = list(range(nk)) + [2 * nk] + list(range(nk, 2 * nk)) + [2 * nk + 1]
    return jnp.transpose(big, perm).reshape(int(np.prod(w_in)) * kern.shape[-2], -1)


def _conv_carry(eqn, ins, shapes):
    src = ins[0]
    dn = eqn.params["dimension_numbers"]
    out = [-1] * len(shapes[eqn.outputs[0]])
    for i in range(len(dn.lhs_spec) - 2):
        out[dn.out_spec[2 + i]] = src[dn.lhs_spec[2 + i]]
    return [tuple(out)], {src[dn.lhs_spec[1]]}


CONV = ConeRule(
    "conv",
    _conv_geometry,
    _conv_tangent,
    carry=_conv_carry,
    prepare=_conv_prepare,
    convolution=True,
)


# -- pooling and strided slicing: windows along spatial axes --------------------------


class _WindowData(NamedTuple):
    """Static data of a windowed operation (pooling, slicing), per value axis."""

    window: tuple[int, ...]
    strides: tuple[int, ...]
    pads: tuple[int, ...]  # leading padding (a slice's start: minus it)


def _window_geom(g: Geom, w: _WindowData, out_shape) -> Geom | None:
    """The geometry of windows of ``g`` along its spatial axes; None if a window spans
    a free axis."""
    sigma, beta, recep, width = map(list, (g.sigma, g.beta, g.recep, g.width))
    for ax, k in enumerate(g.link):
        if k < 0:
            if w.window[ax] != 1 or w.strides[ax] != 1 or out_shape[ax] != g.shape[ax]:
                return None
            continue
        beta[k] = beta[k] - sigma[k] * w.pads[ax]
        recep[k] = recep[k] + sigma[k] * (w.window[ax] - 1)
        sigma[k] = sigma[k] * w.strides[ax]
        width[k] = -(-recep[k] // sigma[k])
    return Geom(tuple(out_shape), g.link, tuple(sigma), tuple(beta), tuple(recep), tuple(width))


def _pool_geometry(ctx, eqn, ins, *, global_max: bool = False):
    """A pooling window's geometry; ``global_max``: a max-pool whose window covers every
    spatial position gives a globally pooled value."""
    z = ins[0]
    if not isinstance(z, Geom):
        return Refusal("pooling of a globally pooled value")
    prm = eqn.params
    if any(d != 1 for d in (prm.get("base_dilation") or ())) or any(
        d != 1 for d in (prm.get("window_dilation") or ())
    ):
        return Refusal("dilated pooling")
    out_shape = ctx.shapes[eqn.outputs[0]]
    w = _WindowData(
        tuple(prm["window_dimensions"]),
        tuple(prm["window_strides"]),
        tuple(lo for lo, _ in prm["padding"]),
    )
    ng = _window_geom(z, w, out_shape)
    if ng is None:
        return Refusal("pooling across a free (channel or batch) axis")
    if global_max and all(
        out_shape[a] == 1 for a, k in enumerate(z.link) if k >= 0
    ):  # global max pooling: every element reaches the single position
        return [Global(z, out_shape)], w
    return [ng], w


def _window_tangent(p: Pass, t, g: Geom, ng: Geom, w: _WindowData, code=None):
    """Tangents ``t`` (geometry ``g``) through windows ``w``: per group of element offsets
    ``r`` with the same shift kappa and window offset delta, one strided slice of the input
    cone (clipped to it, zeros elsewhere). Without ``code`` the slices of every delta are
    summed (sum pooling; a slice has a single delta); with it (max pooling: per output
    cone slot the winner's delta, -1 if none), the winner's is selected. Slices, pads and
    selections are elementwise: they fuse."""
    lin = [(ax, k) for ax, k in enumerate(g.link) if k >= 0]
    # Output cone slot e' of element r reads input cone slot st e' + delta + kappa[r].
    kappas = {k: p.geo.shift(g, ng, k, w.strides[ax], w.pads[ax]) for ax, k in lin}
    deltas = list(np.ndindex(*[w.window[ax] for ax, _ in lin]))

    def run(sub, kap, n_lead, csub=None):
        out = 0
        for i, delta in enumerate(deltas):
            piece = sub
            for (ax, k), dd in zip(lin, delta, strict=True):
                st = w.strides[ax]
                first = kap[k] + dd  # input slot of output slot 0
                pos = n_lead + 1 + ax
                n_in, n_out = piece.shape[pos], ng.width[k]
                e0 = max(0, -(first // st))
                e1 = max(e0, min(n_out, (n_in - 1 - first) // st + 1))
                start = first + st * e0 if e1 > e0 else 0  # (an empty slice anywhere)
                stop = start + st * (e1 - e0 - 1) + 1 if e1 > e0 else 0
                piece = lax.slice_in_dim(piece, start, stop, st, pos)
                widths = [(0, 0)] * piece.ndim
                widths[pos] = (e0, n_out - e1)
                piece = jnp.pad(piece, widths)
            if csub is None:
                out = out + piece
            else:
                out = jnp.where(jnp.expand_dims(csub, n_lead) == i, piece, out)
        return out

    out = p.by_runs(t, kappas, run, extra=code)
    return out.reshape(t.shape[: p.n_pre] + ng.window_shape())


def _window_sum_tangent(p, eqn, step, args):
    (g,), (ng,) = step.ins, step.outs
    t = p.materialize(args[0], g)  # sum pooling reads every position
    return [ConeVal(_window_tangent(p, t, g, ng, step.data), valid=False)]


def _max_pool_tangent(p, eqn, step, args):
    """Max pooling reads only the frozen winners; a pending ReLU mask folds into the
    selection."""
    z, (g,), (ng,), w = args[0], step.ins, step.outs, step.data
    winners = p.state.winners[eqn.site]
    if isinstance(ng, Global):  # global: the winner's tangents, one position per channel
        won = jnp.zeros(int(np.prod(g.shape)), z.t.dtype).at[winners.reshape(-1)].set(1)
        won = won.reshape(g.shape)
        if z.mask is not None:
            won = won * z.mask.astype(won.dtype)
        t = p.apply(z.t, p.windows(won, g))  # zero outside the value
        axes = tuple(p.n_pre + a for a, k in enumerate(g.link) if k >= 0)
        return [ConeVal(jnp.sum(t, axis=axes, keepdims=True))]
    lin = [(ax, k) for ax, k in enumerate(g.link) if k >= 0]
    coords = jnp.unravel_index(winners, g.shape)
    base = jnp.indices(ng.shape)
    code = jnp.zeros(ng.shape, jnp.int32)  # the winner's window offset delta (-1: masked)
    for ax, _ in lin:
        off = coords[ax] - (base[ax] * w.strides[ax] - w.pads[ax])
        code = code * w.window[ax] + off.astype(jnp.int32)
    if z.mask is not None:
        mask = z.mask.reshape(-1)[winners.reshape(-1)].reshape(ng.shape)
        code = jnp.where(mask, code, -1)
    code = p.windows(code, ng, fill=-1)  # (r..., window shape)
    return [ConeVal(_window_tangent(p, z.t, g, ng, w, code))]


WINDOW_SUM = ConeRule("window_sum", _pool_geometry, _window_sum_tangent)
MAX_POOL = ConeRule(
    "max_pool", functools.partial(_pool_geometry, global_max=True), _max_pool_tangent
)


def _slice_geometry(ctx, eqn, ins):
    (z,) = ins
    if not isinstance(z, Geom):
        return Refusal("a slice of a globally pooled value")
    prm = eqn.params
    starts = tuple(prm["start_indices"])
    strides = tuple(prm["strides"] or (1,) * len(starts))
    out_shape = ctx.shapes[eqn.outputs[0]]
    # Free axes are sliced as they are; spatial ones are windows of size 1.
    free = tuple(n if k < 0 else m for n, m, k in zip(out_shape, z.shape, z.link, strict=True))
    gf = dataclasses.replace(z, shape=free)
    w = _WindowData(
        (1,) * len(starts),
        tuple(s if k >= 0 else 1 for s, k in zip(strides, z.link, strict=True)),
        tuple(-a if k >= 0 else 0 for a, k in zip(starts, z.link, strict=True)),
    )
    return [_window_geom(gf, w, out_shape)], (gf, w)


def _slice_tangent(p, eqn, step, args):
    (g,), (ng,), (gf, w) = step.ins, step.outs, step.data
    prm = eqn.params
    t = p.materialize(args[0], g)
    strides = prm["strides"] or (1,) * len(g.shape)
    for ax, k in enumerate(g.link):
        a, b = prm["start_indices"][ax], prm["limit_indices"][ax]
        if k < 0 and (a, b, strides[ax]) != (0, g.shape[ax], 1):
            t = lax.slice_in_dim(t, a, b, strides[ax], p.n_pre + ax)
    return [ConeVal(_window_tangent(p, t, gf, ng, w), valid=False)]


SLICE = ConeRule("slice", _slice_geometry, _slice_tangent)


def _pad_geometry(ctx, eqn, ins):
    z = ins[0]  # the padding value is a constant (the registry's input operands)
    if not isinstance(z, Geom):
        return Refusal("a pad of a globally pooled value")
    config = tuple(eqn.params["padding_config"])
    if any(interior != 0 for _, _, interior in config):
        return Refusal("interior padding (a dilation) is not implemented on the cone route")
    out_shape = ctx.shapes[eqn.outputs[0]]
    # Free axes are padded as they are; along a spatial one the output is a window of size 1
    # that starts ``lo`` elements before the operand (past its ends: tangents 0, as padding
    # with a constant has no dependence on the input).
    free = tuple(n if k < 0 else m for n, m, k in zip(out_shape, z.shape, z.link, strict=True))
    gf = dataclasses.replace(z, shape=free)
    n = len(config)
    lows = tuple(lo if k >= 0 else 0 for (lo, _, _), k in zip(config, z.link, strict=True))
    w = _WindowData((1,) * n, (1,) * n, lows)
    return [_window_geom(gf, w, out_shape)], (gf, w)


def _pad_tangent(p, eqn, step, args):
    (gf, w), g, (ng,) = step.data, step.ins[0], step.outs
    t = p.materialize(args[0], g)
    for ax, ((lo, hi, _), k) in enumerate(zip(eqn.params["padding_config"], g.link, strict=True)):
        if k < 0 and (lo, hi) != (0, 0):
            t = lax.pad(
                t,
                jnp.zeros((), t.dtype),
                [(0, 0, 0)] * (p.n_pre + ax)
                + [(lo, hi, 0)]
                + [(0, 0, 0)] * (t.ndim - p.n_pre - ax - 1),
            )
    return [ConeVal(_window_tangent(p, t, gf, ng, w), valid=False)]


PAD = ConeRule("pad", _pad_geometry, _pad_tangent)


# -- dense layers over channel axes -----------------------------------------------------


def _channel_dot_geometry(ctx, eqn, ins):
    """A dense layer over free (channel) axes only, e.g. flax's ``Dense`` on a feature
    map: the same at every position, like a 1x1 convolution."""
    z = single(eqn, ins, "a product")
    if isinstance(z, Refusal):
        return z
    if not isinstance(z, Geom):
        return Refusal(
            "a dense layer over a globally pooled value before the first dense "
            "layer over the whole input"
        )
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    z_lhs = eqn.dep[0]
    c_z, c_w = (lc, rc) if z_lhs else (rc, lc)
    if lb or rb or any(z.link[a] >= 0 for a in c_z):
        return Refusal(
            "a dense layer over spatial axes before the first dense layer over the whole input"
        )
    keep = [a for a in range(len(z.shape)) if a not in c_z]
    w_shape = ctx.shape(eqn.inputs[1] if z_lhs else eqn.inputs[0])
    n_w = len([a for a in range(len(w_shape)) if a not in c_w])
    link = [z.link[a] for a in keep]
    link = link + [-1] * n_w if z_lhs else [-1] * n_w + link
    return [dataclasses.replace(z, shape=ctx.shapes[eqn.outputs[0]], link=tuple(link))], None


def _channel_dot_tangent(p, eqn, step, args):
    (lc, rc), _ = eqn.params["dimension_numbers"]
    z_lhs = eqn.dep[0]
    c_z, c_w = (lc, rc) if z_lhs else (rc, lc)
    z, g = dep_arg(eqn, args), next(v for v in step.ins if v is not None)
    w = args[1] if z_lhs else args[0]
    t = p.materialize(z, g)  # a pending mask does not commute with mixing channels
    n_pre = p.n_pre
    t, w = _matmul.widen(t, jnp.asarray(w, t.dtype), eqn.params.get("preferred_element_type"))
    out = lax.dot_general(
        t,
        w,
        (([n_pre + a for a in c_z], list(c_w)), ((), ())),
        precision=_matmul.plain(p.precision),
    )
    if not z_lhs:  # (pre..., kept..., w free...) -> (pre..., w free..., kept...)
        n_keep = len(g.shape) - len(c_z)
        n_free = out.ndim - n_pre - n_keep
        perm = list(range(n_pre))
        perm += [n_pre + n_keep + i for i in range(n_free)]
        perm += [n_pre + i for i in range(n_keep)]
        out = jnp.transpose(out, perm)
    return [ConeVal(out, valid=z.valid)]


def _channel_dot_carry(eqn, ins, shapes):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    z_lhs = eqn.dep[0]
    src = ins[0] if z_lhs else ins[1]
    c_z = lc if z_lhs else rc
    n_out = len(shapes[eqn.outputs[0]])
    if lb or rb:
        return [(-1,) * n_out], set()
    kept = [src[a] for a in range(len(src)) if a not in c_z]
    n_w = n_out - len(kept)
    out = kept + [-1] * n_w if z_lhs else [-1] * n_w + kept
    return [tuple(out)], {src[a] for a in c_z}


CHANNEL_DOT = ConeRule(
    "channel_dot", _channel_dot_geometry, _channel_dot_tangent, carry=_channel_dot_carry
)


# -- gathers with constant indices along one axis (jnp.take, nearest-neighbour resizes) ---


class TakeData(NamedTuple):
    """Static data of a gather that takes ``idx`` along operand axis ``axis`` (-1 in
    ``idx``: no element, the fill value), the taken axis at output axis ``pos``."""

    axis: int
    pos: int
    idx: np.ndarray


def _take_axes(eqn, shape, out_rank: int):
    """``(axis, pos, others)`` of a gather that is a take along one axis (``jnp.take``,
    ``x[idx]``, one axis of ``jax.image.resize``), or None."""
    dn, sizes = eqn.params["dimension_numbers"], tuple(eqn.params["slice_sizes"])
    if getattr(dn, "operand_batching_dims", ()) or len(dn.start_index_map) != 1:
        return None
    a = dn.start_index_map[0]
    others = [b for b in range(len(shape)) if b != a]
    if tuple(dn.collapsed_slice_dims) != (a,) or out_rank != len(shape):
        return None
    if sizes[a] != 1 or any(sizes[b] != shape[b] for b in others):
        return None
    pos = [b for b in range(out_rank) if b not in dn.offset_dims]
    return (a, pos[0], others) if len(pos) == 1 else None


def _gather_geometry(ctx, eqn, ins):
    """A take with constant indices ``idx`` along one axis. Along a spatial axis, output
    element ``P`` is operand element ``idx[P]``, bounded by ``q P + min(idx - q P) ...
    q P + max(idx - q P)`` with ``q = n / M`` (operand over output length): ``sigma``
    becomes ``sigma q`` (a fraction when it upsamples) and the cone widens by the spread
    of ``idx - q P`` (none for a resize by a whole factor beyond one element)."""
    z = ins[0]
    if not isinstance(z, Geom):
        return Refusal("a gather of a globally pooled value")
    out_shape = ctx.shapes[eqn.outputs[0]]
    found = _take_axes(eqn, z.shape, len(out_shape))
    i_shape = ctx.shape(eqn.inputs[1])
    if found is None or len(i_shape) != 2 or i_shape[1] != 1:
        return Refusal(
            "a gather other than a take along one axis (jnp.take, x[idx], a nearest-neighbour "
            "resize) is not implemented on the cone route"
        )
    a, pos, others = found
    idx = ctx.static_value(eqn.inputs[1])
    if idx is None:
        return Refusal("a gather at indices not known when the route is planned")
    n, idx = z.shape[a], np.asarray(idx, np.int64).reshape(-1)
    if eqn.params["mode"] == lax.GatherScatterMode.FILL_OR_DROP:
        idx = np.where((idx >= 0) & (idx < n), idx, -1)
    else:  # clip, or promised in bounds (clipped, as XLA does)
        idx = np.clip(idx, 0, n - 1)
    link = [-1] * len(out_shape)
    for j, b in enumerate(d for d in range(len(out_shape)) if d != pos):
        link[b] = z.link[others[j]]
    link[pos] = z.link[a]
    ng = dataclasses.replace(z, shape=tuple(out_shape), link=tuple(link))
    return [taken(ng, z.link[a], n, idx)], TakeData(a, pos, idx)


def taken(ng: Geom, k: int, n: int, idx: np.ndarray) -> Geom:
    """``ng`` (a take of ``idx`` from ``n`` elements along spatial axis ``k``; -1: none)
    with the bounds of `_gather_geometry` along ``k``."""
    z = ng
    if k >= 0:
        q = Fraction(n, len(idx))
        dev = [Fraction(int(i)) - q * p for p, i in enumerate(idx) if i >= 0] or [Fraction(0)]
        sigma, beta, recep, width = map(list, (z.sigma, z.beta, z.recep, z.width))
        beta[k] = _whole(beta[k] + sigma[k] * min(dev))
        recep[k] = _whole(recep[k] + sigma[k] * (max(dev) - min(dev)))
        sigma[k] = _whole(sigma[k] * q)
        width[k] = math.ceil(Fraction(recep[k]) / Fraction(sigma[k]))
        ng = dataclasses.replace(
            ng, sigma=tuple(sigma), beta=tuple(beta), recep=tuple(recep), width=tuple(width)
        )
    return ng


def _gather_tangent(p, eqn, step, args):
    """Along a spatial axis, output cone slot ``e`` of element offset ``r`` is position
    ``P = rho' B + d'[r] + e``, which reads operand position ``idx[P]``: cone slot
    ``idx[P] - rho B - d[r]`` (traced: it depends on the block), zero where that is
    outside the operand's cone or ``P`` outside the output."""
    g, (ng,), w = step.ins[0], step.outs, step.data
    return [ConeVal(take_tangent(p, p.materialize(args[0], g), g, ng, w))]


def take_tangent(p, t, g: Geom, ng: Geom, w: TakeData):
    """`_gather_tangent` of the tangents ``t`` (geometry ``g``, materialised)."""
    ax, k = p.n_pre + w.axis, g.link[w.axis]
    idx = jnp.asarray(w.idx, jnp.int32)
    if k < 0:  # along a free axis: the same for every cone slot
        out = jnp.take(t, jnp.maximum(idx, 0), axis=ax)
        shape = [1] * t.ndim
        shape[ax] = len(w.idx)
        out = jnp.where((idx >= 0).reshape(shape), out, jnp.zeros((), t.dtype))
        return jnp.moveaxis(out, ax, p.n_pre + w.pos)
    rho, d = p.geo.starts(g, k)
    rho_n, d_n = p.geo.starts(ng, k)
    big = rho_n * p.block[k] + jnp.asarray(d_n)[:, None] + jnp.arange(ng.width[k])[None]
    at = idx[jnp.clip(big, 0, len(w.idx) - 1)]
    slot = at - rho * p.block[k] - jnp.asarray(d)[:, None]
    ok = (big >= 0) & (big < len(w.idx)) & (at >= 0) & (slot >= 0) & (slot < g.width[k])
    shape = [1] * t.ndim
    shape[k], shape[ax] = slot.shape
    slot, ok = jnp.clip(slot, 0, g.width[k] - 1).reshape(shape), ok.reshape(shape)
    out = jnp.where(ok, jnp.take_along_axis(t, slot, axis=ax), jnp.zeros((), t.dtype))
    return jnp.moveaxis(out, ax, p.n_pre + w.pos)


def _gather_carry(eqn, ins, shapes):
    src, out_rank = ins[0], len(shapes[eqn.outputs[0]])
    found = _take_axes(eqn, shapes[eqn.inputs[0]], out_rank)
    if found is None:
        return [(-1,) * out_rank], set()
    a, pos, others = found
    out = [src[b] for b in others]
    out.insert(pos, src[a])
    return [tuple(out)], set()


GATHER = ConeRule("gather", _gather_geometry, _gather_tangent, carry=_gather_carry)


# -- reversals (jnp.flip, reflect padding) ----------------------------------------------


def _rev_geometry(ctx, eqn, ins):
    """A reversal: along free axes and spatial axes of size 1 the same cones; along one
    spatial axis of ``n`` elements a take of ``n - 1 ... 0`` (`_gather_geometry`: the cone
    widens by ``2 (n - 1)`` elements, past the whole axis for a flip of a feature map)."""
    (z,) = ins
    if not isinstance(z, Geom):
        return Refusal("a reversal of a globally pooled value")
    dims = [a for a in eqn.params["dimensions"] if z.shape[a] > 1]  # size 1: unchanged
    spatial = [a for a in dims if z.link[a] >= 0]
    free = tuple(a for a in dims if z.link[a] < 0)
    if len(spatial) > 1:
        return Refusal(
            "a reversal along several spatial axes at once is not implemented on the cone route"
        )
    if not spatial:
        return [z], (None, free)
    a = spatial[0]
    take = TakeData(a, a, np.arange(z.shape[a])[::-1].copy())
    return [taken(z, z.link[a], z.shape[a], take.idx)], (take, free)


def _rev_tangent(p, eqn, step, args):
    (g,), (ng,), (take, free) = step.ins, step.outs, step.data
    if take is None and not free:
        return [args[0]]
    t = p.materialize(args[0], g)
    if free:
        t = lax.rev(t, tuple(p.n_pre + a for a in free))
    return [ConeVal(t if take is None else take_tangent(p, t, g, ng, take))]


REV = ConeRule("rev", _rev_geometry, _rev_tangent)

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

* **Cone route** (networks whose input-dependent part up to the first global dense layer
  is convolutions (also strided or grouped), dense layers over channels, residual
  connections, concatenations along channels, bias adds, constant scales (e.g.
  inference-mode batch norm), ReLUs, max/sum pooling and global average pooling, with
  spatial axes longer than 1 until they are flattened or pooled away): input element
  ``j`` reaches only a small window of each layer (its *cone*: e.g. 7x7 positions of
  2CONV's second conv layer). The Jacobian column of ``j`` restricted to its cone is
  propagated exactly, layer by layer: a convolution is an explicit matrix from input
  cone to output cone (the same for every ``j`` at stride 1; with strides, one per class
  of ``j`` modulo the stride), a ReLU multiplies by the state, a max-pool picks the
  frozen winners. Input elements are processed in blocks (one scan step each); squared
  columns are summed onto every layer's positions.
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

This module holds the public functions, the plan and the computation; the machinery of
the routes lives in private modules: `slp._cone` (the cone route's geometry and walk),
`slp._boxes` (receptive-field boxes for the probe route's colouring) and `slp._matmul`
(the products at the chosen precision).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from slp import _boxes, _cone, _matmul
from slp import network as net

__all__ = ["insens", "insens_plan", "InsensPlan", "inactive_sets", "switched_sq_norms"]


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
      cone: cone route: its `slp._cone.ConeGeometry` (spatial axes, block layout), else None.
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


def _plan(program: net.Program, x, chunk_size: int, route: str = "auto") -> InsensPlan:
    shape = tuple(program.input_shape)
    nx, d = len(shape), int(np.prod(shape))
    relu_eqn_idx = [i for i, e in enumerate(program.eqns) if e.kind == "relu"]
    try:
        relu_boxes, dots = _boxes.receptive_boxes(program, x)
    except _boxes.NotConcrete:
        relu_boxes, dots = None, None
    if relu_boxes is None:  # no structure known: every element depends on everything
        full = np.zeros(nx), np.asarray(shape) - 1.0

        def whole(s):
            lo = np.broadcast_to(full[0], tuple(s) + (nx,))
            return _boxes.Box(lo, np.broadcast_to(full[1], lo.shape), None)

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
        cone = _cone.cone_geometry(program, shape, end)
        if isinstance(cone, _cone.ConeGeometry):
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
            raise ValueError(f"the cone route does not apply to this network: {cone}")
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
    hp = _matmul.plain(precision)

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

    prec = _matmul.resolve(precision)

    def fn(x):
        program = net.trace(f, x)
        chunk = int(np.prod(x.shape)) if chunk_size is None else int(chunk_size)
        plan = _plan(program, x, chunk, route)
        state = net.forward(program, x)
        frozen = net.frozen_network(program, state)

        def acts(xp):
            return frozen(xp).relu_inputs

        if plan.route == "cone":
            sq = _cone.norms(program, state, x, plan, prec)
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

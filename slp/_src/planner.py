"""The plan of `slp.insens`: which exact route a network gets and why not the others.

`build_plan` reads the traced program once for shapes and FLOPs, the receptive-field boxes
(`slp._src.boxes`) and the cone route's geometry (`slp._src.cone`), finds the cut (the dense
layer over most of the input where the structured routes hand over to explicit Jacobian
columns), lays out every route that applies, predicts its FLOPs and memory and, with the
cost model of `slp._src.costs`, its seconds; the route predicted fastest is chosen.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from slp._src import boxes as _boxes
from slp._src import colouring as _colouring
from slp._src import cone as _cone
from slp._src import costs as _costs
from slp._src import guards as _guards
from slp._src import matmul as _matmul
from slp._src import network as net
from slp._src.routes import state_and_every_route
from slp._src.speed import device_flop_rate, device_speed
from slp._src.traced import TracedRoute

__all__ = [
    "TracedRoute",
    "RouteCost",
    "ProbeLayout",
    "DenseLayout",
    "InsensPlan",
    "ROUTES",
    "DENSE_BYTES",
    "build_plan",
    "insens_plan",
    "device_flop_rate",
    "device_speed",
]


class RouteCost(NamedTuple):
    """A route's predicted cost (from shapes, receptive fields and the cone geometry alone).

    Attributes:
      flops: floating-point operations of the squared norms per image (multiply-adds
        count 2): of matrix products and convolutions in the route's traced program
        where counted (`insens_plan`), else estimated from receptive-field boxes.
      peak_bytes: memory of the largest loop step's tangents per image (and of the
        matrices held across the loop): a bound on what the route adds to the forward pass.
      steps: sequential loop steps of the route.
      seconds: predicted wall time of one call of ``jax.jit(jax.vmap(insens(f, route=r)))``
        on the plan's ``batch`` inputs, compile excluded, on the default device
        (`insens_plan`), or None.
      work: the amounts of work behind ``seconds``, counted from the route's traced
        program: coefficient name of `slp._src.costs` -> amount per call (``<route>.call``,
        ``.ops``, ``.setup``) or per image (the others); None for a plan that did not
        count (`insens` with a given route).
    """

    flops: float
    peak_bytes: float
    steps: int
    seconds: float | None = None
    work: dict | None = None

    def predict(self, batch: int, *, speed: float = 1.0) -> float:
        """Predicted seconds of one call on ``batch`` inputs on a device ``speed`` times the
        calibration machine's matrix-product rate (`slp._src.costs.predict_seconds`)."""
        return _costs.predict_seconds(self.work or {}, batch, speed=speed)

    def __str__(self):
        time = "" if self.seconds is None else f", ~{_fmt_seconds(self.seconds)}"
        return (
            f"{self.flops / 1e9:.3g} GFLOP, {self.peak_bytes / 2**20:.3g} MiB, "
            f"{self.steps} step{'s' if self.steps != 1 else ''}{time}"
        )


def _fmt_seconds(t: float) -> str:
    if t < 1:
        return f"{t * 1e3:.3g} ms"
    if t < 120:
        return f"{t:.3g} s"
    if t < 7200:
        return f"{t / 60:.3g} min"
    return f"{t / 3600:.3g} h"


class ProbeLayout(NamedTuple):
    """The probe route's colouring and chunking (module docstring).

    Attributes:
      lattice: per input axis ``a``, the colouring period ``k_a``: input elements with
        equal coordinates modulo ``k_a`` share a probe (a colour).
      n_colours: number of probe directions (colours) in total.
      n_chunks: steps of the loop over probes.
      colours_per_chunk: probes per step.
      pixels_per_chunk: input elements covered per step (0 without a cut).
      n_groups: row groups of the cut's operand (rows with one box; 0 without a cut).
      colour: int32, input shape, the colour of every input element.
      group_rows: int32 ``(n_groups, rows per group)``, flat operand rows of each group;
        padding rows point one past the operand's end (None without a cut).
      slots: int32 ``(n_chunks, n_groups, colours_per_chunk)``, for each group and colour
        of a step, the slot (column of the step) of the input element of that colour
        inside the group's box; ``pixels_per_chunk`` where there is none (None without a
        cut).
    """

    lattice: tuple[int, ...]
    n_colours: int
    n_chunks: int
    colours_per_chunk: int
    pixels_per_chunk: int
    n_groups: int
    colour: np.ndarray
    group_rows: np.ndarray | None
    slots: np.ndarray | None


class DenseLayout(NamedTuple):
    """The dense route's chunking: one-hot input directions, ``columns_per_step`` at a time.

    Attributes:
      columns_per_step: input directions (Jacobian columns) per loop step.
      n_steps: loop steps.
    """

    columns_per_step: int
    n_steps: int


class InsensPlan(NamedTuple):
    """How `insens` computes the squared norms for one network and input shape.

    Attributes:
      route: ``"cone"`` (exact Jacobian columns restricted to each input element's cone,
        then the cut), ``"probes"`` (coloured probes, then the cut) or ``"dense"`` (plain
        forward mode: one-hot input directions through the whole switched network).
      cut: index into ``program.eqns`` of the dense layer (its cost rule says it may be the
        cut, `slp._src.flops.Cost`) at which the structured routes stop and explicit
        products take over, or None.
      pre_sites: ReLU layers whose norms come from the structured part.
      post_sites: ReLU layers after the cut (norms from exact Jacobian columns).
      cut_out_shape: shape of the cut's output value (None without a cut).
      cost: the chosen route's predicted `RouteCost` (FLOPs and peak memory per image,
        loop steps, seconds per call).
      costs: every route that applies -> its predicted `RouteCost`.
      not_taken: every route not taken -> why: the operation that rules it out, or its
        predicted cost against the chosen one.
      cone: the cone route's layout (`slp._src.cone`), when the cone route applies (and
        is asked for: `insens` on a given route builds that route's layout only).
      probes: the probe route's `ProbeLayout` (None likewise).
      dense: the dense route's `DenseLayout`.
      forward_flops: FLOPs of one forward pass (linear operations, ReLUs and pools).
      flop_rate: the default device's measured float32 matrix-product rate (FLOP/s)
        behind the ``seconds`` of every cost (`insens_plan`), or None.
      batch: the inputs per call that every cost's ``seconds`` is predicted for.
      traced: every route whose work was counted -> its squared norms for one input as a
        traced program (`TracedRoute`), which `insens` runs without tracing the route again;
        None when no route was counted.

    Examples:
      >>> plan = slp.insens_plan(lambda x: jnp.maximum(x, 0) @ jnp.ones((4, 2)), jnp.ones(4))
      >>> plan.route, sorted(plan.costs), plan.not_taken["cone"][:26], plan.cost.steps
      ('probes', ['dense', 'probes'], 'cone route: no convolution', 1)
    """

    route: str
    cut: int | None
    pre_sites: tuple[int, ...]
    post_sites: tuple[int, ...]
    cut_out_shape: tuple[int, ...] | None
    cost: RouteCost
    costs: dict
    not_taken: dict
    cone: Any
    probes: ProbeLayout | None
    dense: DenseLayout
    forward_flops: float = 0.0
    flop_rate: float | None = None
    batch: int = 1
    traced: dict | None = None

    def estimate_cost(self, probes: int) -> RouteCost:
        """Predicted cost of ``insens(f, probes=k)`` (no standard error): the forward pass,
        ``k`` tangent passes and one reverse pass (about twice a forward pass)."""
        flops = (int(probes) + 3) * self.forward_flops
        seconds = None if self.flop_rate is None else flops / self.flop_rate
        return RouteCost(flops, 0.0, int(probes), seconds)

    def __str__(self):
        lines = [f"route: {self.route} ({self.cost})"]
        lines += [f"  not {r}: {why}" for r, why in self.not_taken.items()]
        if self.cost.seconds is not None:
            cal = _costs.CALIBRATION
            rate = "" if self.flop_rate is None else f"{self.flop_rate / 1e9:.3g} GFLOP/s here, "
            lines.append(
                f"  (~: one call on {self.batch} input{'s' if self.batch != 1 else ''}, "
                f"compile excluded; cost model fitted on {cal['machine']} "
                f"({rate}{float(cal['flop_rate']) / 1e9:.3g} GFLOP/s there))"
            )
        return "\n".join(lines)


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


def _cut_candidate(program: net.Program, shapes, dots, relu_eqn_idx) -> int | None:
    """First dense layer that depends on most of the input and that all later use goes through
    (from ``shapes.dots`` and ``shapes.first_source``, `_Shapes`: no walk here)."""
    d = int(np.prod(program.input_shape))
    last_relu = max(relu_eqn_idx, default=-1)
    # Per position i: the earliest operation (-1: the input) read by one at i or after.
    later = np.minimum.accumulate(shapes.first_source[::-1])[::-1]
    for i in sorted(shapes.dots):
        if i >= last_relu:
            return None
        e = program.eqns[i]
        if sum(e.dep) != 1:
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
        if i + 1 >= len(later) or later[i + 1] >= i:
            return i
    return None


# Memory per image that the dense route's one-hot directions may take per step.
DENSE_BYTES = 64 * 2**20


class _Shapes(NamedTuple):
    """Per input-dependent operation (index into ``program.eqns``): FLOPs per tangent column
    (its cost rule, `slp._src.flops`), the size of its output, whether it is a matrix product,
    for those that may be the cut the shapes of their input-dependent operand and output, and
    (``first_source``) the earliest operation its input-dependent operands come from (-1: the
    input; the number of operations for a constant)."""

    flops: dict[int, float]
    sizes: dict[int, int]
    dots: dict[int, tuple]
    matrix: dict[int, bool]
    first_source: np.ndarray


def _no_shapes(program: net.Program) -> _Shapes:
    """Empty `_Shapes` tables for ``program``, for `_add_shapes` to fill."""
    n = len(program.eqns)
    return _Shapes({}, {}, {}, {}, np.full(n, n, np.int64))


def _add_shapes(program: net.Program, i: int, eqn: net.Eqn, table: _Shapes) -> None:
    """Fills in the entries of the input-dependent operation ``i`` (``eqn``) of ``table``,
    from the shapes the program recorded when traced."""
    avals = program.avals
    table.first_source[i] = min(
        program.producers.get(a, -1) for a, dd in zip(eqn.inputs, eqn.dep, strict=True) if dd
    )
    table.matrix[i] = bool(eqn.decl.cost.matrix)
    if eqn.kind in ("relu", "max_pool"):
        args = [eqn.inputs[eqn.dep.index(True)]]
    else:
        args = list(eqn.inputs)
    arg_shapes = [np.shape(a.val) if isinstance(a, net.Lit) else avals[a].shape for a in args]
    out_shape = tuple(avals[eqn.outputs[0]].shape)
    table.flops[i] = eqn.decl.cost.flops(eqn, arg_shapes, out_shape)
    table.sizes[i] = int(np.prod(out_shape))
    if eqn.kind == "linear" and eqn.decl.cost.cut:
        operand = eqn.inputs[eqn.dep.index(True)]
        table.dots[i] = (tuple(avals[operand].shape), out_shape)


def _shapes(program: net.Program) -> _Shapes:
    """`_Shapes` from the shapes the program recorded when traced, in one pass of its own
    (where the receptive boxes' walk does not fill them in on its way)."""
    table = _no_shapes(program)
    net.walked("shapes")
    for i, eqn in enumerate(program.eqns):
        if eqn.kind != "const":
            _add_shapes(program, i, eqn, table)
    return table


def _probe_cost(probes: ProbeLayout, cut, flops, sizes, item: int) -> RouteCost:
    """The probe route's `RouteCost`. ``flops``: the network's FLOPs per tangent column,
    those before the cut, the cut's and those after it (for every input element);
    ``sizes``: the values' sizes in all, before and after the cut."""
    flops_all, f_pre, f_cut, f_post = flops
    s_all, s_pre, s_post = sizes
    if cut is None:
        return RouteCost(
            probes.n_colours * flops_all, probes.colours_per_chunk * s_all * item, probes.n_chunks
        )
    peak = (probes.colours_per_chunk * s_pre + probes.pixels_per_chunk * s_post) * item
    return RouteCost(probes.n_colours * f_pre + f_cut + f_post, peak, probes.n_chunks)


def _cone_cost(program, relu_eqn_idx, cut, volumes, before, after_flops, s_post, matrix, carry):
    """``(geometry, RouteCost)`` of the cone route, or why it does not apply (a string).

    ``before``: the input-dependent operations before the cut; ``after_flops``: the FLOPs
    of the cut and of the rest of the network; ``s_post``: the size of the values after it;
    ``matrix``: per operation, whether it is a matrix product (`_Shapes`); ``carry``: the
    channel axes and the geometry found on the boxes' walk (`slp._src.cone.GeometryCarry`),
    or None.
    """
    if not relu_eqn_idx:
        return "no ReLU layer"
    shape = tuple(program.input_shape)
    d = int(np.prod(shape))
    item = np.dtype(program.input_dtype).itemsize
    end = cut if cut is not None else relu_eqn_idx[-1]
    cone = _cone.cone_geometry(program, shape, end, carry)
    if isinstance(cone, _cone.ConeRefusal):  # names the operation that rules it out
        return str(cone)
    per_block = int(np.prod(cone.sigma_tot)) * (d // int(np.prod([shape[a] for a in cone.spatial])))
    flops, mats, cones = after_flops, 0.0, 0.0
    for i in before:
        v_in, v_out = volumes.get(i, (d, d))
        if matrix[i]:
            flops += 2.0 * v_in * v_out / d  # cone matrix products of every element
            mats += v_in * v_out / d**2
        else:
            flops += v_out
        cones += v_out / d
    peak = (per_block * (cones + s_post) + mats) * item
    return cone, RouteCost(flops, peak, len(cone.blocks))


class _Structure(NamedTuple):
    """What `build_plan` reads from the program before costing any route: the ReLUs, the
    receptive boxes, the cut, and the FLOPs and sizes before, at and after it."""

    relu_eqn_idx: list[int]
    relu_boxes: Any
    dots: Any
    volumes: Any
    cut: int | None
    pre: tuple[int, ...]
    post: tuple[int, ...]
    cut_out_shape: tuple[int, ...] | None
    before: list[int]
    flops: tuple[float, float, float, float]  # all, before the cut, after it, at it
    sizes: tuple[int, int, int]  # all (with the input), up to the cut (with it), after it
    matrix: dict[int, bool]  # per input-dependent operation: a matrix product
    carry: Any  # the channel axes and geometry found by the boxes' walk (`GeometryCarry`)


def _structure(program: net.Program, x, boxes: bool = True) -> _Structure:
    """The `_Structure` of ``program`` at inputs like ``x``; without ``boxes`` (the dense
    route alone needs neither them nor a cut), no receptive boxes and no cut."""
    d = int(np.prod(tuple(program.input_shape)))
    relu_eqn_idx = list(program.relu_eqns)
    relu_boxes = dots = volumes = cut = None
    if boxes:
        # The boxes' walk fills in the shapes and finds the channel axes on its way.
        shapes = _no_shapes(program)
        carry = _cone.GeometryCarry(program)

        def visit(i, eqn):
            _add_shapes(program, i, eqn, shapes)
            carry.visit(i, eqn, strict=False)

        try:
            relu_boxes, dots, volumes = _boxes.receptive_boxes(program, x, visit)
        except _boxes.NotConcrete:  # no structure known: every element depends on everything
            shapes, carry = _shapes(program), None
            relu_boxes, dots, volumes = _boxes.whole_boxes(program, shapes.dots, shapes.sizes)
        cut = _cut_candidate(program, shapes, dots, relu_eqn_idx)
    else:
        shapes, carry = _shapes(program), None
    cut_pos = cut if cut is not None else len(program.eqns)
    # FLOPs per tangent column before, at and after the cut; sizes of the values.
    before = [i for i in shapes.flops if i < cut_pos]
    after = [i for i in shapes.flops if i > cut_pos]
    cut_work = 0.0
    if cut is not None:  # each element's operand cone x weights
        cut_work = 2.0 * volumes[cut][0] * int(np.prod(dots[cut][1].lo.shape[:-1]))
    return _Structure(
        relu_eqn_idx,
        relu_boxes,
        dots,
        volumes,
        cut,
        tuple(s for s, i in enumerate(relu_eqn_idx) if i < cut_pos),
        tuple(s for s, i in enumerate(relu_eqn_idx) if i > cut_pos),
        None if cut is None else tuple(dots[cut][1].lo.shape[:-1]),
        before,
        (
            sum(shapes.flops.values()),
            sum(shapes.flops[i] for i in before),
            sum(shapes.flops[i] for i in after),
            cut_work,
        ),
        (
            d + sum(shapes.sizes.values()),
            d + sum(shapes.sizes[i] for i in before),
            sum(shapes.sizes[i] for i in after),
        ),
        shapes.matrix,
        carry,
    )


def build_plan(
    program: net.Program,
    x,
    chunk_size: int,
    route: str = "auto",
    *,
    batch: int = 1,
    speed: float = 1.0,
    precision: Any = None,
    count: bool = True,
) -> InsensPlan:
    """The plan of `insens` (`insens_plan`).

    With ``count`` (always for ``route="auto"``), every route's work is counted from its
    traced program (`slp._src.costs`) and ``seconds`` predicted for one call on ``batch``
    inputs on a device ``speed`` times the calibration machine's matrix-product rate; the
    choice is the least predicted time at ``batch`` (not at ``speed``). Without, a given
    route's layout only (no ``work``, no ``seconds``, no other route's layout: the dense
    route's needs no receptive boxes, and neither it nor the probe route the cone geometry).
    """
    d = int(np.prod(tuple(program.input_shape)))
    item = np.dtype(program.input_dtype).itemsize
    every = count or route == "auto"  # every route's layout and cost
    st = _structure(program, x, boxes=every or route != "dense")
    relu_boxes, dots, volumes, cut = st.relu_boxes, st.dots, st.volumes, st.cut
    chunk = max(1, int(chunk_size))
    flops_all, f_pre, f_post, cut_work = st.flops
    s_all, s_pre, s_post = st.sizes

    costs: dict[str, RouteCost] = {}
    not_taken: dict[str, str] = {}

    # The dense route: one-hot directions through the whole switched network.
    cols = d if chunk_size >= d else max(chunk, min(d, DENSE_BYTES // max(1, s_all * item)))
    dense = DenseLayout(cols, -(-d // cols))
    costs["dense"] = RouteCost(d * flops_all, cols * s_all * item, dense.n_steps)

    # The probe route: always applies (without structure its probes are one-hot).
    probes = cone = None
    if every or route == "probes":
        probes = _probe_layout(program, relu_boxes, dots, cut, st.pre, chunk)
        costs["probes"] = _probe_cost(
            probes, cut, (flops_all, f_pre, cut_work, d * f_post), (s_all, s_pre, s_post), item
        )

    # The cone route: convolutional networks whose operations it takes.
    if every or route == "cone":
        found = _cone_cost(
            program,
            st.relu_eqn_idx,
            cut,
            volumes,
            st.before,
            cut_work + d * f_post,
            s_post,
            st.matrix,
            st.carry,
        )
        if isinstance(found, str):
            not_taken["cone"] = found
        else:
            cone, costs["cone"] = found

    if route != "auto" and route not in costs:
        raise ValueError(f"the {route} route does not apply to this network: {not_taken[route]}")
    plan = InsensPlan(
        route,
        cut,
        st.pre,
        st.post,
        st.cut_out_shape,
        cost=None,
        costs=costs,
        not_taken=not_taken,
        cone=cone,
        probes=probes,
        dense=dense,
        forward_flops=float(flops_all),
        batch=int(batch),
    )
    if every:  # every route's work from its traced program, its time
        costs, traced = _counted_costs(program, x, plan, costs, precision, flops_all)
        costs = {r: c._replace(seconds=c.predict(batch, speed=speed)) for r, c in costs.items()}
        plan = plan._replace(traced=traced)
    return _chosen(plan, route, costs, not_taken, batch)


def _chosen(plan: InsensPlan, route: str, costs: dict, not_taken: dict, batch: int) -> InsensPlan:
    """``plan`` with its route: the given one, or for ``"auto"`` the least predicted time at
    ``batch`` inputs per call, at the calibration machine's speed, so that it does not depend
    on a timing (`slp._src.costs.choose`)."""
    if route == "auto":
        route = _costs.choose({r: c.work for r, c in costs.items()}, batch=batch)
    for r in costs:
        if r != route:
            not_taken[r] = f"predicted {costs[r]} (chosen {route}: {costs[route]})"
    return plan._replace(
        route=route, cost=costs[route], costs=costs, not_taken=dict(sorted(not_taken.items()))
    )


def _counted_costs(program, x, plan: InsensPlan, costs: dict, precision, flops_all):
    """``costs`` with the work of each route for one input, counted in its traced program
    (`slp._src.costs.jaxpr_work`): the forward pass with the state and the route's squared
    norms. Every route is traced in one program, from one walk of the network
    (`state_and_every_route`); each route's part is that program without the operations
    that only the other routes need.

    Returns:
      ``(costs, traced)``: ``traced`` maps each route to its `TracedRoute`, which `insens`
      runs rather than trace the route a second time.
    """
    prec = _matmul.resolve(precision)
    x_struct = jax.ShapeDtypeStruct(x.shape, x.dtype)
    consts = dict(program.consts)
    dependent = [True] * len(jax.tree.leaves(x_struct))
    dependent += [False] * len(jax.tree.leaves(consts))  # the weights: setup work
    run = functools.partial(_every_route, program, plan, prec, tuple(costs))
    closed, (state, sqs) = jax.make_jaxpr(run, return_shape=True)(x_struct, consts)
    n_state = len(jax.tree.leaves(state))
    out, traced, start = {}, {}, n_state
    for (r, c), sq in zip(costs.items(), sqs, strict=True):  # the state's outputs, then
        n = len(jax.tree.leaves(sq))  # each route's norms in turn
        outputs = [*range(n_state), *range(start, start + n)]
        traced[r] = TracedRoute.of(r, closed, outputs, (state, sq))
        work = _costs.jaxpr_work(traced[r].program, dependent)
        out[r] = _counted(c, work, r, flops_all)
        start += n
    return out, traced


def _every_route(program, plan: InsensPlan, prec, routes, x, consts) -> tuple:
    """`state_and_every_route` with the weights ``consts`` as an argument."""
    return state_and_every_route(dataclasses.replace(program, consts=consts), x, plan, prec, routes)


def _counted(cost: RouteCost, work: dict[str, float], route: str, forward: float) -> RouteCost:
    """``cost`` with the counted ``work`` of ``route`` (names of `slp._src.costs.COEFFICIENTS`)
    and its FLOPs per image; the forward pass and the vector-Jacobian product outside the
    squared norms are every route's: ``forward``."""
    named = {f"{route}.call": 1.0}
    named.update({f"{route}.{k}": v for k, v in work.items() if k not in _costs.SHARED})
    named.update({k: work[k] for k in _costs.SHARED})
    named["forward"] = forward
    flops = sum(work[k] for k in ("matmul", "conv", "conv_cf", "conv_grouped"))
    return cost._replace(flops=flops, work=named)


def _probe_layout(program: net.Program, relu_boxes, dots, cut, pre, chunk: int) -> ProbeLayout:
    """Colouring and chunking of the probe route (module docstring)."""
    shape = tuple(program.input_shape)
    nx = len(shape)
    needed = [relu_boxes[s] for s in pre] + ([dots[cut][0]] if cut is not None else [])
    w = _widths(needed)
    lattice = tuple(int(k) for k in (np.ones(nx) if w is None else np.minimum(w, shape)))
    coords = np.indices(shape).reshape(nx, -1)
    lat = np.ravel_multi_index(tuple(coords[a] % lattice[a] for a in range(nx)), lattice)
    n_lat = int(np.prod(lattice))
    if cut is None:
        kc = min(chunk, n_lat)
        return ProbeLayout(
            lattice=lattice,
            n_colours=n_lat,
            n_chunks=-(-n_lat // kc),
            colours_per_chunk=kc,
            pixels_per_chunk=0,
            n_groups=0,
            colour=lat.reshape(shape).astype(np.int32),
            group_rows=None,
            slots=None,
        )
    colour, n_colours, kc, n_chunks, slot, n_slots = _colouring.split_colours(lat, n_lat, chunk)
    uniq, group_rows = _colouring.row_groups(dots[cut][0], nx)
    slots = _colouring.slot_table(uniq, lattice, shape, colour, slot, (n_chunks, kc, n_slots))
    n_groups = len(uniq)
    return ProbeLayout(
        lattice=lattice,
        n_colours=n_colours,
        n_chunks=n_chunks,
        colours_per_chunk=kc,
        pixels_per_chunk=n_slots,
        n_groups=n_groups,
        colour=colour.reshape(shape).astype(np.int32),
        group_rows=group_rows.astype(np.int32),
        slots=slots.astype(np.int32),
    )


ROUTES = ("auto", "cone", "probes", "dense")


def insens_plan(
    f: Callable,
    x: jax.Array,
    *,
    chunk_size: int | None = 128,
    route: str = "auto",
    batch: int = 1,
) -> InsensPlan:
    """The `InsensPlan` that `insens` uses for ``f`` at inputs shaped like ``x``.

    The route is the exact route that applies with the least predicted time for one call on
    ``batch`` inputs; ``insens(f)`` chooses alike at the batch size it runs at (1 on one input,
    ``B`` under ``jax.vmap`` over ``B`` inputs, the innermost where vmaps nest), on any device.

    Predicted seconds (``cost.seconds``, ``~`` in ``str(plan)``): the wall time of one call of
    ``jax.jit(jax.vmap(insens(f, route=r)))`` on ``batch`` inputs like ``x``, compile excluded,
    by a linear model (`slp._src.costs`) of the work counted in each route's traced (not run)
    program, fitted to the benchmark zoo's times on the 2-core x86 CPU that `slp._src.costs`
    names and scaled on other devices by the ratio of matrix-product rates (`device_speed`):
    an order of magnitude on other CPUs, a rough guess on accelerators.

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: an example input (only shape and dtype are used).
      chunk_size: as in `insens`.
      route: as in `insens`.
      batch: inputs per call that the route is chosen and the predicted seconds are for.

    Returns:
      The plan (route, cut, colouring, chunking, every route's predicted cost); see
      `InsensPlan`. ``plan.estimate_cost(k)`` predicts ``insens(f, probes=k)`` (FLOPs at
      the matrix-product rate: a lower bound).

    Raises:
      ValueError: if ``route`` is unknown or inapplicable to ``f``, ``chunk_size`` is not an
        int >= 1 or None, ``batch`` is not an int >= 1, ``x`` has no axis or no element, or
        ``f`` has no ReLU layer.

    Examples:
      >>> f = lambda x: jnp.maximum(x @ jnp.ones((4, 3)), 0) @ jnp.ones((3, 2))
      >>> slp.insens_plan(f, jnp.ones(4), batch=8).route  # no convolution: no cone route
      'dense'
    """
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {ROUTES}")
    if not _guards.is_count(batch):
        raise ValueError(f"batch must be a positive integer (inputs per call); got {batch!r}")
    _guards.check_chunk_size(chunk_size)
    chunk = int(np.prod(np.shape(x))) if chunk_size is None else int(chunk_size)
    speed = device_speed(rate := device_flop_rate())
    program = net.trace(f, x)
    _guards.check_has_neurons(program)
    plan = build_plan(program, x, chunk, route, batch=int(batch), speed=speed)
    return plan._replace(flop_rate=rate)

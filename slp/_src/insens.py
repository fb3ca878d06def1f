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
bounded independently of ``neurons x inputs``, by one of three routes (`insens_plan`
says which one a network gets, and why not the others):

* **Cone route** (networks whose input-dependent part up to the first global dense layer
  is convolutions (also strided, dilated or grouped), dense layers over channels,
  residual connections, concatenations along channels, bias adds, constant scales (e.g.
  inference-mode batch norm), ReLUs, max/sum pooling, global average and max pooling,
  strided slices, and transposes and reshapes between them (channel-first layouts such
  as equinox's), with spatial axes longer than 1 until they are flattened or pooled
  away; `insens_plan` names the operation that rules it out otherwise): input element
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
* **Dense route** (any network): one-hot input directions through the whole switched
  network by forward mode, as many per step as fit in 64 MiB per image: the naive
  Jacobian, without materialising it. No structure to exploit, no overhead either: it
  wins on small inputs.

Choice. `insens_plan` traces every route that applies (without running it) and counts the
work of its program: operations executed (loop bodies once per iteration), matrix-product
and convolution FLOPs, elements written and moved, and what is built once per call from
the weights. A linear cost model fitted to measured timings (`slp._src.costs`) turns the work
into predicted seconds; `insens` takes the route predicted nearest the fastest at 1 and at
8 inputs per call. It also predicts each route's FLOPs and peak memory from shapes and
receptive-field boxes.

The cone and probe routes stop at the first dense layer that depends on (most of) the whole input
(the *cut*): its Jacobian columns are the block's (or probe's) columns of its operand
times the slice of the dense weights that they touch, and are pushed through the rest
of the network by forward mode. The numbers equal the naive route (``jax.jacfwd`` of
every pre-activation) up to floating-point rounding; by default all products use the
highest matmul precision (no TF32 on GPUs; `insens`'s ``precision`` trades exactness
for speed).

Estimate. Where no exact route is affordable (ImageNet classifiers at 224x224:
`insens_plan` predicts hours per image on CPU), ``insens(f, probes=k, key=key)`` gives an
unbiased estimate: the squared norms from ``k`` Gaussian forward-mode probes, their
reciprocal corrected by ``(k - 2)``, the rest exact (`insens`).

This module holds the public functions, the plan and the computation; the machinery of
the routes lives in private modules: `slp._src.cone` (the cone route's geometry and walk),
`slp._src.boxes` (receptive-field boxes for the probe route's colouring) and `slp._src.matmul`
(the products at the chosen precision).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import custom_batching, lax

from slp._src import boxes as _boxes
from slp._src import cone as _cone
from slp._src import costs as _costs
from slp._src import cut as _cut
from slp._src import guards as _guards
from slp._src import matmul as _matmul
from slp._src import network as net

__all__ = [
    "insens",
    "insens_plan",
    "InsensPlan",
    "LayerInsens",
    "InsensEstimate",
    "ProbeLayout",
    "DenseLayout",
    "RouteCost",
    "inactive_sets",
    "switched_sq_norms",
]


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
      Tuple of arrays, per layer, ``sum_j (d v_i / d x_j)^2`` in the layer's shape, in
      the layer's dtype but at least float32 (`slp._src.matmul.accumulator`).
    """
    d = int(np.prod(x.shape))
    chunk = d if chunk_size is None else max(1, min(int(chunk_size), d))
    n_chunks = -(-d // chunk)

    def one_chunk(k):
        idx = k * chunk + jnp.arange(chunk)
        basis = jax.nn.one_hot(idx, d, dtype=x.dtype).reshape((chunk,) + x.shape)
        tangents = jax.vmap(linear_fn)(basis)
        return tuple(_matmul.square_sum(t, 0) for t in tangents)

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
      cut: index into ``program.eqns`` of the dense layer (dot_general) at which the
        structured routes stop and explicit products take over, or None.
      pre_sites: ReLU layers whose norms come from the structured part.
      post_sites: ReLU layers after the cut (norms from exact Jacobian columns).
      cut_out_shape: shape of the cut's output value (None without a cut).
      cost: the chosen route's predicted `RouteCost` (FLOPs and peak memory per image,
        loop steps, seconds per call).
      costs: every route that applies -> its predicted `RouteCost`.
      not_taken: every route not taken -> why: the operation that rules it out, or its
        predicted cost against the chosen one.
      cone: the cone route's layout (`slp._src.cone`), when the cone route applies.
      probes: the probe route's `ProbeLayout`.
      dense: the dense route's `DenseLayout`.
      forward_flops: FLOPs of one forward pass (linear operations, ReLUs and pools).
      flop_rate: the default device's measured float32 matrix-product rate (FLOP/s)
        behind the ``seconds`` of every cost (`insens_plan`), or None.
      batch: the inputs per call that every cost's ``seconds`` is predicted for.
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
    probes: ProbeLayout
    dense: DenseLayout
    forward_flops: float = 0.0
    flop_rate: float | None = None
    batch: int = 1

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


# Memory per image that the dense route's one-hot directions may take per step.
_DENSE_BYTES = 64 * 2**20


def _linear_flops(eqn: net.Eqn, arg_shapes, out_shape) -> float:
    """FLOPs per tangent column of one input-dependent operation (multiply-adds count 2)."""
    n_out = float(np.prod(out_shape))
    if eqn.primitive is lax.conv_general_dilated_p:
        kernel = arg_shapes[1]
        o_axis = eqn.params["dimension_numbers"].rhs_spec[0]
        return 2 * n_out * float(np.prod(kernel)) / kernel[o_axis]
    if eqn.primitive is lax.dot_general_p:
        (lc, rc), _ = eqn.params["dimension_numbers"]
        ops = (lc, 0) if eqn.dep[0] else (rc, 1)
        return 2 * n_out * float(np.prod([arg_shapes[ops[1]][a] for a in ops[0]]))
    return n_out


class _Shapes(net.ForwardRules):
    """Abstract forward pass recording, per input-dependent operation, FLOPs per tangent
    column and the size of its output."""

    def __init__(self, program: net.Program):
        super().__init__()
        self.index = {id(e): i for i, e in enumerate(program.eqns)}
        self.flops: dict[int, float] = {}
        self.sizes: dict[int, int] = {}
        self.dots: dict[int, tuple] = {}

    def _note(self, eqn, args, out):
        i = self.index[id(eqn)]
        self.flops[i] = _linear_flops(eqn, [np.shape(a) for a in args], np.shape(out))
        self.sizes[i] = int(np.size(out))

    def relu(self, eqn, z):
        out = super().relu(eqn, z)
        self._note(eqn, [z], out)
        return out

    def max_pool(self, eqn, z):
        out = super().max_pool(eqn, z)
        self._note(eqn, [z], out)
        return out

    def linear(self, eqn, args):
        outs = super().linear(eqn, args)
        self._note(eqn, args, outs[0])
        if eqn.primitive is lax.dot_general_p:
            operand = args[eqn.dep.index(True)]
            self.dots[self.index[id(eqn)]] = (tuple(operand.shape), tuple(outs[0].shape))
        return outs


def _whole_boxes(program: net.Program, shapes: _Shapes):
    """Boxes, dot boxes and volumes when no structure is known (everything depends on all)."""
    shape = tuple(program.input_shape)
    nx, d = len(shape), int(np.prod(shape))
    full = np.zeros(nx), np.asarray(shape) - 1.0

    def whole(s):
        lo = np.broadcast_to(full[0], tuple(s) + (nx,))
        return _boxes.Box(lo, np.broadcast_to(full[1], lo.shape), None)

    relu_boxes = tuple(whole(s) for s in program.relu_shapes)
    dots = {i: (whole(a), whole(o)) for i, (a, o) in shapes.dots.items()}
    volumes = {i: (float(d) * d, float(d) * n) for i, n in shapes.sizes.items()}
    return relu_boxes, dots, volumes


def _plan(
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
    route's layouts only (no ``work``, no ``seconds``).
    """
    shape = tuple(program.input_shape)
    d = int(np.prod(shape))
    item = np.dtype(program.input_dtype).itemsize
    relu_eqn_idx = [i for i, e in enumerate(program.eqns) if e.kind == "relu"]
    shapes = _Shapes(program)
    jax.eval_shape(lambda xp: net.interpret(program, xp, shapes).output, x)
    try:
        relu_boxes, dots, volumes = _boxes.receptive_boxes(program, x)
    except _boxes.NotConcrete:  # no structure known: every element depends on everything
        relu_boxes, dots, volumes = _whole_boxes(program, shapes)
    cut = _cut_candidate(program, dots, relu_eqn_idx)
    cut_pos = cut if cut is not None else len(program.eqns)
    pre = tuple(s for s, i in enumerate(relu_eqn_idx) if i < cut_pos)
    post = tuple(s for s, i in enumerate(relu_eqn_idx) if i > cut_pos)
    cut_out_shape = None if cut is None else tuple(dots[cut][1].lo.shape[:-1])
    chunk = max(1, int(chunk_size))

    # FLOPs per tangent column before, at and after the cut; sizes of the values.
    flops_all = sum(shapes.flops.values())
    before = [i for i in shapes.flops if i < cut_pos]
    after = [i for i in shapes.flops if i > cut_pos]
    f_pre = sum(shapes.flops[i] for i in before)
    f_post = sum(shapes.flops[i] for i in after)
    s_all = d + sum(shapes.sizes.values())
    s_pre = d + sum(shapes.sizes[i] for i in before)
    s_post = sum(shapes.sizes[i] for i in after)
    if cut is not None:
        n_cut_out = int(np.prod(cut_out_shape))
        cut_work = 2.0 * volumes[cut][0] * n_cut_out  # each element's operand cone x weights
    else:
        n_cut_out, cut_work = 0, 0.0

    costs: dict[str, RouteCost] = {}
    not_taken: dict[str, str] = {}

    # The dense route: one-hot directions through the whole switched network.
    cols = d if chunk_size >= d else max(chunk, min(d, _DENSE_BYTES // max(1, s_all * item)))
    dense = DenseLayout(cols, -(-d // cols))
    costs["dense"] = RouteCost(d * flops_all, cols * s_all * item, dense.n_steps)

    # The probe route: always applies (without structure its probes are one-hot).
    probes = _probe_layout(program, relu_boxes, dots, cut, pre, chunk)
    if cut is None:
        flops = probes.n_colours * flops_all
        peak = probes.colours_per_chunk * s_all * item
    else:
        flops = probes.n_colours * f_pre + cut_work + d * f_post
        peak = (probes.colours_per_chunk * s_pre + probes.pixels_per_chunk * s_post) * item
    costs["probes"] = RouteCost(flops, peak, probes.n_chunks)

    # The cone route: convolutional networks whose operations it takes.
    cone = None
    if not relu_eqn_idx:
        not_taken["cone"] = "no ReLU layer"
    else:
        end = cut if cut is not None else relu_eqn_idx[-1]
        found = _cone.cone_geometry(program, shape, end)
        if isinstance(found, _cone.ConeRefusal):  # names the operation that rules it out
            not_taken["cone"] = str(found)
        else:
            cone = found
            n_blocks = len(cone.blocks)
            per_block = int(np.prod(cone.sigma_tot)) * (
                d // int(np.prod([shape[a] for a in cone.spatial]))
            )
            flops, mats, cones = cut_work + d * f_post, 0.0, 0.0
            for i in before:
                v_in, v_out = volumes.get(i, (d, d))
                e = program.eqns[i]
                if e.primitive in (lax.conv_general_dilated_p, lax.dot_general_p):
                    flops += 2.0 * v_in * v_out / d  # cone matrix products of every element
                    mats += v_in * v_out / d**2
                else:
                    flops += v_out
                cones += v_out / d
            peak = (per_block * (cones + s_post) + mats) * item
            costs["cone"] = RouteCost(flops, peak, n_blocks)

    if route != "auto" and route not in costs:
        raise ValueError(f"the {route} route does not apply to this network: {not_taken[route]}")
    plan = InsensPlan(
        route,
        cut,
        pre,
        post,
        cut_out_shape,
        cost=None,
        costs=costs,
        not_taken=not_taken,
        cone=cone,
        probes=probes,
        dense=dense,
        forward_flops=float(flops_all),
        batch=int(batch),
    )
    if count or route == "auto":  # every route's work from its traced program, its time
        costs = {
            r: _counted(c, _route_work(program, x, plan._replace(route=r), precision), r, flops_all)
            for r, c in costs.items()
        }
        costs = {r: c._replace(seconds=c.predict(batch, speed=speed)) for r, c in costs.items()}
    # The choice: the least predicted time at ``batch`` inputs per call, at the calibration
    # machine's speed, so that it does not depend on a timing (`slp._src.costs.choose`).
    if route == "auto":
        route = _costs.choose({r: c.work for r, c in costs.items()}, batch=batch)
    for r in costs:
        if r != route:
            not_taken[r] = f"predicted {costs[r]} (chosen {route}: {costs[route]})"
    return plan._replace(
        route=route, cost=costs[route], costs=costs, not_taken=dict(sorted(not_taken.items()))
    )


def _route_work(program: net.Program, x, plan: InsensPlan, precision) -> dict[str, float]:
    """The work of ``plan.route``'s squared norms for one input (`slp._src.costs.program_work`):
    the forward pass and the route, as `insens` runs them."""
    prog = _runtime_consts(program)
    prec = _matmul.resolve(precision)

    def norms(xp):
        return _exact_norms(prog, net.forward(prog, xp), xp, plan, prec)

    return _costs.program_work(norms, jax.ShapeDtypeStruct(x.shape, x.dtype))


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
    nx, d = len(shape), int(np.prod(shape))
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


_ROUTES = ("auto", "cone", "probes", "dense")


def insens_plan(
    f: Callable, x: jax.Array, *, chunk_size: int = 128, route: str = "auto", batch: int = 1
) -> InsensPlan:
    """The `InsensPlan` that `insens` uses for ``f`` at inputs shaped like ``x``.

    The route is the one with the least predicted time for one call on ``batch`` inputs,
    of the exact routes that apply. ``insens(f)`` makes the same choice for the batch size
    it runs at: 1 when called on one input, ``B`` under ``jax.vmap`` over ``B`` inputs (the
    innermost vmap's size where vmaps nest). The choice does not depend on the device.

    Predicted seconds (``cost.seconds`` of every route, ``~`` in ``str(plan)``): the wall
    time of one call of ``jax.jit(jax.vmap(insens(f, route=r)))`` on ``batch`` inputs
    shaped like ``x``, compile excluded (per input: divide by ``batch``). Every route is
    traced (not run) and the work of its program counted: operations executed, FLOPs of
    matrix products and convolutions, elements written and moved, work done once per call
    (`slp._src.costs`). A linear model of that work, with coefficients fitted by least
    squares in log space to the measured time of every route on every network of the
    benchmark zoo at batch 1 and 8 (``python experiments/bench_insens.py --zoo --fit``, on
    the machine `slp._src.costs.CALIBRATION` names: a 2-core x86 CPU), predicts the seconds.
    On another device the per-input terms are scaled by the ratio of the matrix-product
    rates (`device_flop_rate`, measured once per process, against the calibration
    machine's): an order of magnitude on other CPUs, a rough guess on accelerators.

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
    """
    if route not in _ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {_ROUTES}")
    if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
        raise ValueError(f"batch must be a positive integer (inputs per call); got {batch!r}")
    rate = device_flop_rate()
    speed = rate / float(_costs.CALIBRATION["flop_rate"])
    plan = _plan(net.trace(f, x), x, chunk_size, route, batch=int(batch), speed=speed)
    return plan._replace(flop_rate=rate)


_FLOP_RATES: dict = {}


def device_flop_rate() -> float:
    """FLOP/s of a float32 matrix product at the highest precision on the default device.

    Measured once per process and device (best of 5 products of two 512x512 matrices on
    CPU, 4096x4096 on accelerators, after one compiling call).
    """
    import time

    dev = jax.devices()[0]
    tag = (dev.platform, dev.device_kind)
    if tag not in _FLOP_RATES:
        n = 512 if dev.platform == "cpu" else 4096
        a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
        prod = jax.jit(lambda p, q: jnp.dot(p, q, precision=lax.Precision.HIGHEST))
        prod(a, a).block_until_ready()
        best = np.inf
        for _ in range(5):
            t0 = time.perf_counter()
            prod(a, a).block_until_ready()
            best = min(best, time.perf_counter() - t0)
        _FLOP_RATES[tag] = 2.0 * n**3 / best
    return _FLOP_RATES[tag]


# ----------------------------------------------------------------------------------
# The computation.


def _probe_norms(program, state, x, plan: InsensPlan, precision) -> list:
    """``|w_hat|^2`` per ReLU layer by the probe route (module docstring)."""
    layout = plan.probes
    kc = layout.colours_per_chunk
    colour = jnp.asarray(layout.colour)
    cut_eqn = program.eqns[plan.cut] if plan.cut is not None else None
    # The grouped product below is an einsum: split products fall back to float32.
    hp = _matmul.plain(precision)

    def pre(xp):
        rules = _cut.PreCut(state, cut_eqn)
        res = net.interpret(program, xp, rules)
        return tuple(res.relu_inputs[s] for s in plan.pre_sites), rules.operand

    if cut_eqn is not None:
        probe_rules = _cut.PreCut(state, cut_eqn)
        net.interpret(program, x, probe_rules)
        # The cut's weights in their own dtype, its product's result type as the network's.
        w_mat = _cut.cut_matrix(cut_eqn, probe_rules.weight, probe_rules.operand.shape)
        pet = cut_eqn.params.get("preferred_element_type")
        w_mat = jnp.concatenate([w_mat, jnp.zeros((1, w_mat.shape[1]), w_mat.dtype)], 0)
        group_rows = jnp.asarray(layout.group_rows)
        w_groups = w_mat[group_rows]  # (G, R, M)
        slots = jnp.asarray(layout.slots)

    def step(c):
        ids = c * kc + jnp.arange(kc, dtype=jnp.int32)
        probes = (colour[None] == ids.reshape((kc,) + (1,) * x.ndim)).astype(x.dtype)
        pre_t, cut_t = jax.vmap(lambda t: jax.jvp(pre, (x,), (t,))[1])(probes)
        sums = [_matmul.square_sum(t, 0) for t in pre_t]
        if cut_eqn is None:
            return sums
        comp = cut_t.reshape(kc, -1)
        comp = jnp.concatenate([comp, jnp.zeros((kc, 1), comp.dtype)], 1)
        comp, w_g = _matmul.widen(comp[:, group_rows], w_groups, pet)
        parts = jnp.einsum("kgr,grm->gkm", comp, w_g, precision=hp)
        cols = jnp.zeros((layout.pixels_per_chunk + 1, parts.shape[-1]), parts.dtype)
        cols = cols.at[slots[c]].add(parts)[:-1]
        cols = cols.reshape((layout.pixels_per_chunk,) + plan.cut_out_shape)
        return sums + _cut.post_norms(program, state, x, plan, cols)

    sums = _cut.scan_sum(step, jnp.arange(layout.n_chunks), layout.n_chunks)
    by_site = dict(zip(plan.pre_sites + plan.post_sites, sums, strict=True))
    return [by_site[s] for s in range(len(program.relu_shapes))]


def _dense_norms(program, state, x, plan: InsensPlan) -> list:
    """``|w_hat|^2`` per ReLU layer by the dense route: one-hot input directions through
    the whole switched network by forward mode, ``plan.dense.columns_per_step`` at a time."""
    frozen = net.frozen_network(program, state)
    _, linear_fn = jax.linearize(lambda xp: frozen(xp).relu_inputs, x)
    return list(switched_sq_norms(linear_fn, x, chunk_size=plan.dense.columns_per_step))


def _runtime_consts(program: net.Program) -> net.Program:
    """``program`` with its constants (weights) behind an optimisation barrier.

    The routes build large arrays from the weights (cone matrices, padded slices of the
    dense weights); as compile-time constants XLA would fold them while compiling, slowly
    and with warnings. Behind the barrier they are computed when the function runs.
    """
    consts = {
        i: lax.optimization_barrier(c) if np.size(c) > 1 else c for i, c in program.consts.items()
    }
    return dataclasses.replace(program, consts=consts)


def _stderr_groups(k: int) -> int:
    """Groups of the delete-a-group jackknife: the largest divisor of ``k`` up to 16 (at
    least 4 groups, else one probe per group)."""
    g = max(d for d in range(1, min(k, 16) + 1) if k % d == 0)
    return g if g >= 4 else k


def _estimated_sq_norms(frozen, x, k: int, key, n_groups: int) -> list:
    """Per ReLU layer, ``(n_groups, *layer)`` sums of squares of Gaussian probe JVPs.

    Probe ``m`` is ``N(0, I)`` drawn with ``fold_in(key, m)`` (the same numbers for any
    chunking) and belongs to group ``m // (k / n_groups)``. ``(J z)_i ~ N(0, |w_hat_i|^2)``,
    so the sum over all groups is ``|w_hat_i|^2`` times a chi-square variable with ``k``
    degrees of freedom.
    """
    _, linear_fn = jax.linearize(lambda xp: frozen(xp).relu_inputs, x)
    shapes = jax.eval_shape(linear_fn, x)
    item = np.dtype(x.dtype).itemsize
    per_probe = (int(np.prod(x.shape)) + sum(int(np.prod(s.shape)) for s in shapes)) * item
    per_group = k // n_groups
    # Probes per step: as many as fit in the dense route's memory budget, whole steps
    # inside one group.
    c = max(1, min(per_group, _DENSE_BYTES // max(1, per_probe)))
    while per_group % c:
        c -= 1
    steps = k // c

    def step(acc, s):
        ids = s * c + jnp.arange(c)
        z = jax.vmap(lambda m: jax.random.normal(jax.random.fold_in(key, m), x.shape, x.dtype))(ids)
        ys = jax.vmap(linear_fn)(z)
        g = (s * c) // per_group
        sq = [_matmul.square_sum(y, 0) for y in ys]
        return [a.at[g].add(q) for a, q in zip(acc, sq, strict=True)], None

    init = [jnp.zeros((n_groups,) + s.shape, _matmul.accumulator(s.dtype)) for s in shapes]
    out, _ = lax.scan(step, init, jnp.arange(steps))
    return out


def _exact_prefix(program, state, x, n: int, precision) -> list:
    """Exact ``|w_hat|^2`` of the first ``n`` ReLU layers by the cone route (None for the
    others)."""
    relu_idx = [i for i, e in enumerate(program.eqns) if e.kind == "relu"]
    if n > len(relu_idx):
        raise ValueError(f"exact_layers={n}, but the network has {len(relu_idx)} ReLU layers")
    geo = _cone.cone_geometry(program, tuple(x.shape), relu_idx[n - 1])
    if isinstance(geo, _cone.ConeRefusal):
        raise ValueError(f"exact_layers={n}: the cone route does not reach layer {n}: {geo}")
    plan = InsensPlan(
        "cone", None, tuple(range(n)), (), None, RouteCost(0.0, 0.0, 0), {}, {}, geo, None, None
    )
    return _cone.norms(program, state, x, plan, precision)


class InsensEstimate(NamedTuple):
    """An estimate of Insens and its standard error (`insens` with ``return_stderr=True``).

    Attributes:
      map: the unbiased estimate of ``Omega_hat``, shaped like ``x``.
      stderr: its per-element standard error (delete-a-group jackknife over the probes),
        shaped like ``x``.
    """

    map: jax.Array
    stderr: jax.Array


class LayerInsens(NamedTuple):
    """Insens per hidden ReLU layer (`insens` with ``by_layer=True``).

    Attributes:
      maps: per ReLU layer ``l`` (forward order), shaped like ``x``: the mean of
        ``omega_hat_i`` over the inactive neurons ``I_l`` of that layer (0 if none).
      counts: per ReLU layer, ``|I_l|`` (int scalar).

    ``sum_l counts[l] * maps[l] / sum_l counts[l]`` is `insens`'s ``Omega_hat``.
    """

    maps: tuple
    counts: tuple

    def total(self) -> jax.Array:
        """The mean over all layers, ``Omega_hat`` (eq. 8), in the maps' dtype (weighted in
        at least float32: ``|I_l|`` times a float16 map overflows on large networks)."""
        if not self.maps:
            raise ValueError("the network has no ReLU layer")
        n = sum(self.counts)
        dtype = self.maps[0].dtype
        acc = _matmul.accumulator(dtype)
        weighted = sum(
            c.astype(acc) * m.astype(acc) for c, m in zip(self.counts, self.maps, strict=True)
        )
        return _mean(weighted, n).astype(dtype)


def _cotangents(inactive, sq, activities, count) -> tuple:
    """The cotangents whose vector-Jacobian product is Insens (eq. 8): per ReLU layer,
    ``v_i / (|w_hat_i|^2 |I|)`` on the neurons ``i`` in ``I`` (``inactive``; 0 where
    ``|w_hat_i| = 0``), 0 elsewhere, each in its activity's dtype.

    The quotient is taken in the norms' dtype (at least float32) and only then cast to the
    activity's, the dtype the network's own backward pass takes. Dividing by ``|I|`` before
    the product rather than after gives the same mean (the product is linear) and keeps the
    backward pass of a float16 network at the size of the map, not of a sum over thousands
    of neurons (float16 overflows at 65504).
    """
    out = []
    for i, s, v in zip(inactive, sq, activities, strict=True):
        dt = jnp.promote_types(v.dtype, s.dtype)
        n = jnp.maximum(count, 1).astype(dt)
        q = v.astype(dt) / (jnp.where(s > 0, s, 1).astype(dt) * n)
        out.append(jnp.where(i & (s > 0), q, 0).astype(v.dtype))
    return tuple(out)


def _mean(total: jax.Array, count) -> jax.Array:
    """``total / count``, 0 where ``count`` is 0."""
    return jnp.where(count > 0, total / jnp.maximum(count, 1).astype(total.dtype), 0)


def _checked_estimator_options(probes, key, return_stderr, by_layer, exact_layers) -> int | None:
    """`insens`'s ``probes`` (an int >= 3, or None) after checking the options that go with it."""
    if probes is not None:
        if isinstance(probes, bool) or not isinstance(probes, (int, np.integer)) or probes < 3:
            raise ValueError(
                f"probes must be an integer >= 3 (the unbiased correction (k - 2)/k needs "
                f"k > 2) or None for the exact map; got {probes!r}"
            )
        probes = int(probes)
        if key is None:
            raise ValueError(
                "probes=k draws random probes: pass a key, e.g. "
                "insens(f, probes=k, key=jax.random.key(0))"
            )
        if return_stderr and probes < 6:
            raise ValueError(f"return_stderr needs probes >= 6; got {probes}")
        if return_stderr and by_layer:
            raise ValueError("return_stderr is not available with by_layer")
        if isinstance(exact_layers, bool) or not isinstance(exact_layers, (int, np.integer)):
            raise ValueError(f"exact_layers must be a non-negative integer; got {exact_layers!r}")
        if exact_layers < 0:
            raise ValueError(f"exact_layers must be a non-negative integer; got {exact_layers}")
    elif exact_layers:
        raise ValueError("exact_layers applies to the estimate (probes=k); exact is exact")
    elif return_stderr:
        raise ValueError("return_stderr needs probes=k (the exact map has no sampling error)")
    return probes


def _exact_norms(program, state, x, plan: InsensPlan, prec) -> list[jax.Array]:
    """``|w_hat|^2`` of every ReLU layer by the route of `plan`."""
    if plan.route == "cone":
        return _cone.norms(program, state, x, plan, prec)
    if plan.route == "dense":
        return _dense_norms(program, state, x, plan)
    return _probe_norms(program, state, x, plan, prec)


def _routed_norms(program, state, x, plan: InsensPlan, prec, *, auto: bool) -> list:
    """`_exact_norms` by ``plan.route`` or, with ``auto``, by the route predicted fastest for
    the batch size it runs at.

    Called on one input, ``plan.route`` (chosen for one input per call). Under `jax.vmap`
    the batching rule sees the batch size and runs the route `slp._src.costs.choose` picks for
    it: at 1 and 8 inputs per call the fastest route often differs (2CONV on a 2-core CPU:
    probes at 1, the cone at 8). The weights are passed as arguments, so a vmap over them
    (or a jit that traces them) batches them too. Differentiation goes through the route
    chosen for one input (every route gives the same numbers up to rounding).
    """
    if not auto:
        return _exact_norms(program, state, x, plan, prec)
    works = {r: c.work for r, c in plan.costs.items()}

    def run(route, xx, st, consts):
        prog = dataclasses.replace(program, consts=consts)
        return _exact_norms(prog, st, xx, plan._replace(route=route), prec)

    @custom_batching.custom_vmap
    def norms(xx, st, consts):
        return run(plan.route, xx, st, consts)

    @norms.def_vmap
    def norms_batched(axis_size, in_batched, xx, st, consts):
        route = _costs.choose(works, batch=axis_size)
        axes = tuple(jax.tree.map(lambda b: 0 if b else None, list(in_batched)))
        out = jax.vmap(lambda a, b, c: run(route, a, b, c), in_axes=axes)(xx, st, consts)
        return out, jax.tree.map(lambda _: True, out)

    @jax.custom_jvp
    def differentiable(xx, st, consts):
        return norms(xx, st, consts)

    @differentiable.defjvp
    def differentiable_jvp(primals, tangents):
        return jax.jvp(lambda a, b, c: run(plan.route, a, b, c), primals, tangents)

    return differentiable(x, state, dict(program.consts))


def _estimated_norms(program, state, frozen, x, probes, key, n_groups, exact_layers, prec):
    """``(sq, sq_groups)``: the unbiased estimate's ``|w_hat|^2`` per layer (each divided by
    ``k - 2``) and the per-group sums of squared probes of the jackknife; the first
    `exact_layers` layers exact, with no sampling error."""
    sq_groups = _estimated_sq_norms(frozen, x, probes, key, n_groups)
    scale = probes - 2.0  # E[(k - 2) / chi2_k] = 1
    sq = [jnp.sum(g, axis=0) / scale for g in sq_groups]
    if exact_layers:
        n_exact = _exact_prefix(program, state, x, exact_layers, prec)
        sq = [e if e is not None else s for e, s in zip(n_exact, sq, strict=True)]
        # Exact layers have no sampling error: drop their probes from the jackknife.
        sq_groups = [
            jnp.broadcast_to(e[None] * scale / n_groups, g.shape) if e is not None else g
            for e, g in zip(n_exact, sq_groups, strict=True)
        ]
    return sq, sq_groups


def insens(
    f: Callable,
    *,
    include_pool_losers: bool = False,
    chunk_size: int | None = 128,
    route: str = "auto",
    precision: Any = None,
    by_layer: bool = False,
    batched: bool = False,
    probes: int | None = None,
    key: jax.Array | None = None,
    return_stderr: bool = False,
    exact_layers: int = 0,
) -> Callable:
    """Inactive state sensitivity ``Omega_hat(x)`` (eq. 8). Jit-compiled.

    The mean over every inactive hidden neuron (``v <= 0``, all ReLU layers) of
    ``omega_hat_i = v_i w_hat_i / |w_hat_i|^2`` (eq. 7). Output neurons are not in
    ``I``; max-pool units are not neurons of their own. A neuron with ``w_hat = 0``
    contributes 0 and is still counted in ``|I|``. If no neuron is inactive the
    result is 0.

    The squared norms ``|w_hat|^2`` are computed exactly from the network's structure
    (module docstring; `insens_plan` tells which route a network gets), or, with
    ``probes=k``, estimated without bias for networks where exact is not affordable
    (e.g. VGG-16 at 224x224; `insens_plan` predicts the exact routes' time and memory).

    The estimator (``probes=k``). Every hidden ReLU layer's ``|w_hat_i|^2`` is estimated
    (no layer keeps exact norms); the set ``I``, the activities ``v_i`` and the final
    vector-Jacobian product stay exact. ``k`` Gaussian probes ``z_m ~ N(0, I)`` go
    through the switched network by forward mode: ``(J z_m)_i ~ N(0, |w_hat_i|^2)``, so
    ``S_i = sum_m (J z_m)_i^2 = |w_hat_i|^2 chi2_k``. Since ``E[1/chi2_k] = 1/(k - 2)``,
    ``(k - 2) / S_i`` is an unbiased estimate of ``1/|w_hat_i|^2`` (the plug-in
    ``k / S_i`` is biased upwards by ``k/(k - 2)``), and, eq. 8 being linear in
    ``v_i/|w_hat_i|^2``, the map is an unbiased estimate of ``Omega_hat``. Its relative
    variance per neuron is ``2/(k - 4)``. Cost: ``k`` forward-mode passes (memory: as
    many probes per step as fit in 64 MiB, at least one) and one reverse pass; with
    ``return_stderr``, one reverse pass more per jackknife group (up to 16 groups; the
    per-group sums are kept, up to 16 times the activations' size).

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      include_pool_losers: also count max-pool losers with ``v > 0`` as inactive.
      chunk_size: probe route: probes and input elements per step; bounds memory.
        None: a single step. Dense route: at least this many input directions per step
        (more where they fit in 64 MiB per image; None: all at once). (The cone route
        works one block of input elements at a time; its memory is bounded by the
        network's structure.)
      route: ``"auto"`` (the route `insens_plan` predicts to be fastest for the batch
        size of the call: 1 on one input, ``B`` under ``jax.vmap`` over ``B`` inputs;
        choosing traces every route once, when compiling), ``"cone"``
        (error naming the operation where it does not apply), ``"probes"`` or
        ``"dense"``. Every route gives the same numbers up to rounding.
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

      by_layer: return Insens per hidden ReLU layer (`LayerInsens`) instead of the mean
        over all layers: the mean of ``omega_hat_i`` over the inactive neurons of each
        layer, and each layer's ``|I_l|``. The ``|I_l|``-weighted mean of the layer maps
        is ``Omega_hat`` (the decomposition per layer of the paper's later version).
      batched: ``f`` is a function of a batch (``model.apply(params, xb)``) and the
        returned function takes a batch ``xb`` of shape ``(B, ...)`` and returns one map
        per example, ``(B, ...)``: ``jax.vmap(insens(slp.per_example(f)))``. Without it, a
        function of a batch is detected where possible and refused (on a batch, Insens
        would average over the inactive neurons of all examples together).
      probes: None (default): exact. An int ``k >= 3``: the unbiased estimate above from
        ``k`` Gaussian forward-mode probes (``route``, ``chunk_size`` and ``precision``
        do not apply). Under `jax.vmap` every example uses the same probes.
      key: a `jax.random.key` for the probes (needed with ``probes``). The returned
        function also takes one as its second argument, ``fn(x, key)``, without
        recompiling (e.g. to average estimates, or `jax.vmap` over keys).
      exact_layers: with ``probes``: the first ``exact_layers`` hidden ReLU layers get
        exact norms from the cone route (stopped at the last of them; an error names
        the operation where it does not apply) and only the later layers are estimated.
        It removes their share of the error: at k = 32 about half of the relative error
        on the trained 2CONV (both conv layers exact) and on ResNet-8 (its first three
        layers). It pays off where the cones are small and the cone route is fast; on
        VGG-16 at 224x224 on CPU its first two layers cost about 8 times the k = 32
        estimate itself, more than the probes they would save
        (`results/imagenet_scale.md`). Default 0: every layer estimated.
      return_stderr: also return the per-element standard error of the estimate
        (`InsensEstimate`): a delete-a-group jackknife over the probes (``k`` split into
        up to 16 equal groups; needs ``k >= 6``). Conservative in expectation
        (Efron-Stein).

    Returns:
      ``fn(x) -> Omega_hat``, shaped like ``x`` (with ``by_layer``: a `LayerInsens`; with
      ``return_stderr``: an `InsensEstimate`); batch with `jax.vmap`. An ``x`` with a
      NaN or inf gives a map of NaN.
    """
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"chunk_size must be a positive integer or None; got {chunk_size}")
    if route not in _ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {_ROUTES}")
    probes = _checked_estimator_options(probes, key, return_stderr, by_layer, exact_layers)
    n_groups = _stderr_groups(probes) if return_stderr else 1
    default_key = key

    prec = _matmul.resolve(precision)
    if batched:
        f = _guards.per_example(f)

    def fn(x, key=None):
        program = net.trace(f, x)
        chunk = int(np.prod(x.shape)) if chunk_size is None else int(chunk_size)
        plan = None
        if probes is None:  # the route's work is counted (traced) only to choose one
            plan = _plan(program, x, chunk, route, precision=prec, count=route == "auto")
        program = _runtime_consts(program)
        # One pass: the state, and the VJP of the switched network (eq. 8's sum over neurons).
        state, vjp = net.forward_and_vjp(program, x)

        if probes is not None:
            probe_key = default_key if key is None else key
            frozen = net.frozen_network(program, state)
            sq, sq_groups = _estimated_norms(
                program, state, frozen, x, probes, probe_key, n_groups, exact_layers, prec
            )
        else:
            sq = _routed_norms(program, state, x, plan, prec, auto=route == "auto")
        inactive = inactive_sets(program, state, include_pool_losers=include_pool_losers)
        count = sum(jnp.sum(i) for i in inactive) if inactive else jnp.zeros((), jnp.int32)
        # A NaN or inf in x, in a ReLU input or in the output (a non-finite weight) leaves
        # the state undefined (NaN is neither active nor inactive): the map is NaN, never a
        # plausible-looking one.
        finite = net.defined(x, state)

        def guard(m):
            return jnp.where(finite, m, jnp.nan)

        if by_layer:
            maps, counts = [], []
            for k, i in enumerate(inactive):
                only = [jnp.zeros_like(i) for i in inactive]
                only[k] = i
                (part,) = vjp(_cotangents(only, sq, state.activities, jnp.sum(i)))
                maps.append(guard(part))
                counts.append(jnp.sum(i))
            return LayerInsens(tuple(maps), tuple(counts))
        (total,) = vjp(_cotangents(inactive, sq, state.activities, count))
        estimate = guard(total)
        if not return_stderr:
            return estimate

        # Delete-a-group jackknife: the estimate without group g (k - k/G probes, its own
        # correction), G reverse passes, one at a time.
        def without(g):
            k_rest = probes - probes // n_groups
            rest = [(jnp.sum(a, axis=0) - a[g]) / (k_rest - 2.0) for a in sq_groups]
            return vjp(_cotangents(inactive, rest, state.activities, count))[0]

        # The spread of the G estimates in at least float32 (a float16 map's deviations
        # squared would underflow).
        loo = lax.map(without, jnp.arange(n_groups)).astype(_matmul.accumulator(x.dtype))
        dev = loo - jnp.mean(loo, axis=0, keepdims=True)
        var = (n_groups - 1) / n_groups * jnp.sum(dev * dev, axis=0)
        return InsensEstimate(estimate, guard(jnp.sqrt(var).astype(x.dtype)))

    if not batched:
        return jax.jit(fn)

    def batch_fn(xb, key=None):
        net.check_input(xb, "a batch of examples")
        return jax.vmap(lambda x: fn(x, key))(xb)

    return jax.jit(batch_fn)

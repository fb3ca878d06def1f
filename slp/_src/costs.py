"""The Insens planner's cost model: predicted seconds of each exact route from counted work.

`slp._src.planner.build_plan` traces every route for one input (the forward pass with the state
and the route's loop, as `slp.insens` runs them, without running them) and counts the
work of the traced program by kind (`program_work`):

* ``ops``: equations executed per call (a loop's body once per iteration; an operation
  that is the same in every iteration once, as XLA hoists it): dispatch overhead;
* ``weights``: elements per call of the operands of matrix products and convolutions
  that do not depend on the input (weights, cone matrices): read once per execution,
  whatever the batch;
* ``matmul``: FLOPs per input of matrix products (multiply-adds count 2);
* ``conv``: FLOPs per input of convolutions; ``conv_taps``: their output elements times
  kernel taps (FLOPs over twice the input channels: what few channels do not amortise);
  ``conv_cf`` and ``conv_grouped``: the FLOPs of
  channel-first (feature axis not last, e.g. equinox's) and grouped (e.g. depthwise)
  convolutions inside a loop, which XLA's CPU backend runs far below its matrix-product
  rate there;
* ``elementwise``: elements per input written by arithmetic (fused by XLA into loops);
* ``memory``: elements per input moved by copies, transposes, gathers, scatters, pads,
  concatenations and reductions (their input), which XLA does not fuse;
* ``setup``: FLOPs and elements per call of the work that does not depend on the input
  (built from the weights alone): under ``jax.vmap`` it is done once, whatever the batch.

Each route's work is keyed by coefficient name (``<route>.<kind>``; ``conv_cf`` and
``conv_grouped`` for every route alike), plus ``<route>.call`` (1 per call) and
``forward`` (the forward pass's FLOPs per input: the forward pass and the final
vector-Jacobian product outside the squared norms, every route's). The predicted wall
time of one jitted call of ``jax.vmap`` of the route on ``batch`` inputs, compile excluded,
is linear in them (`predict_seconds`):

    seconds = sum_k c_k w_k,   w_k = amount per call (``call``, ``ops``, ``weights``,
                                     ``setup``) or batch x amount per input (others)

The coefficients ``c_k >= 0`` (seconds per unit) are fitted by `fit_coefficients_minimax`
(the least worst factor between predicted and measured seconds, with the fastest route of
each network and batch size predicted below every route more than 1.2 times slower; the
least squares of the log errors, `fit_coefficients`, is the alternative) to timings of every
route on every network of the benchmark zoo at batch 1 and 8, at full size and at its small
size (``--tiny``: calls of a millisecond, where the per-call terms decide):
``python experiments/bench_insens.py --zoo --fit`` measures them and prints a new table
(``--fit-write`` writes it here; ``--fit-from`` fits the runs of both sizes together). On
another device the per-input terms are scaled by the ratio of this device's matrix-product
rate to the calibration machine's (`slp.insens_plan`'s ``flop_rate``; 1 on a CPU within 3
times of it, `slp._src.speed.device_speed`); the per-call terms are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

ROUTES = ("cone", "probes", "dense")

PER_CALL = ("call", "ops", "weights", "setup")
"""Kinds of work counted once per call; every other kind is counted per image."""

# BEGIN FITTED: `python experiments/bench_insens.py --zoo --fit --fit-write` rewrites this.
COEFFICIENTS: dict[str, float] = {
    "cone.call": 0.0004809,
    "cone.ops": 4.59e-09,
    "cone.weights": 2.673e-10,
    "cone.setup": 4.198e-11,
    "cone.matmul": 2.341e-12,
    "cone.conv": 3.049e-10,
    "cone.conv_taps": 6.055e-09,
    "cone.elementwise": 3.468e-11,
    "cone.memory": 1.355e-10,
    "probes.call": 0.0,
    "probes.ops": 2.673e-06,
    "probes.weights": 0.0,
    "probes.setup": 5.909e-11,
    "probes.matmul": 3.768e-12,
    "probes.conv": 0.0,
    "probes.conv_taps": 8.268e-10,
    "probes.elementwise": 0.0,
    "probes.memory": 3.959e-10,
    "dense.call": 0.0,
    "dense.ops": 3.686e-06,
    "dense.weights": 0.0,
    "dense.setup": 8.732e-12,
    "dense.matmul": 0.0,
    "dense.conv": 0.0,
    "dense.conv_taps": 8.241e-10,
    "dense.elementwise": 1.145e-09,
    "dense.memory": 0.0,
    "conv_cf": 5.586e-11,
    "conv_grouped": 1.751e-09,
    "forward": 0.0,
}

CALIBRATION: dict[str, object] = {
    "command": (
        "python experiments/bench_insens.py --zoo --no-naive --fit --out runs/fit_full + python "
        "experiments/bench_insens.py --zoo --no-naive --fit --tiny --out runs/fit_tiny + python "
        "experiments/bench_insens.py --zoo --tiny --no-naive --route-batches 64 --route-repeats 9"
        " --out runs/tiny64 + python experiments/bench_insens.py --zoo --no-naive --route-repeats"
        " 5 --route-batches 64 --zoo-only 2conv-linen,mlp,bn-cnn-linen,depthwise-linen,residual-"
        "linen,densenet-linen,convpool-equinox,convpool-haiku --out runs/full64, refitted by "
        "python experiments/bench_insens.py --zoo --fit --fit-from "
        "runs/fit_full/bench_insens_zoo_cpu.json runs/fit_tiny/bench_insens_zoo_cpu.json "
        "runs/tiny64/bench_insens_zoo_cpu.json runs/full64/bench_insens_zoo_cpu.json"
    ),
    "machine": "2-core Intel(R) Xeon(R) Processor (x86_64, cpu)",
    "date": "2026-12-07",
    "flop_rate": 2.876e11,
    "load_average": 1.07,
}
# END FITTED
"""`COEFFICIENTS`: seconds per unit of each kind of work (module docstring) on the
calibration machine. `CALIBRATION`: where they come from: the command, the machine and the
date of the fit, the machine's float32 matrix-product rate then (`slp.device_flop_rate`,
FLOP/s) and its 1-minute load average at the start of the run."""


def is_per_call(name: str) -> bool:
    """Whether work ``name`` (a coefficient name) is counted once per call."""
    return name.rsplit(".", 1)[-1] in PER_CALL


def amounts(work: Mapping[str, float], batch: int) -> dict[str, float]:
    """The work of one call on ``batch`` images: per-image amounts times ``batch``.

    Args:
      work: coefficient name -> amount (per call or per image, `is_per_call`).
      batch: images per call (``jax.vmap`` size).

    Returns:
      coefficient name -> amount in the call.
    """
    return {k: float(v) if is_per_call(k) else float(v) * batch for k, v in work.items()}


def predict_seconds(
    work: Mapping[str, float],
    batch: int,
    *,
    coefficients: Mapping[str, float] | None = None,
    speed: float = 1.0,
) -> float:
    """Predicted seconds of one call on ``batch`` images.

    Args:
      work: coefficient name -> amount (per call or per image, `is_per_call`).
      batch: images per call.
      coefficients: seconds per unit of each kind (default: `COEFFICIENTS`).
      speed: this device's matrix-product rate over the calibration machine's: the
        per-image terms are divided by it.

    Returns:
      Seconds.
    """
    c = COEFFICIENTS if coefficients is None else coefficients
    total = 0.0
    for k, v in amounts(work, batch).items():
        total += c.get(k, 0.0) * v / (1.0 if is_per_call(k) else speed)
    return total


SHARED = ("conv_cf", "conv_grouped")
"""Kinds of work with one coefficient for every route (`program_work`): the convolutions
XLA's CPU backend runs slowly inside a loop."""

CHOICE_BATCHES = (1, 8)
"""Batch sizes the batch-free route choice looks at (`choose` without ``batch``)."""


def choose(
    work: Mapping[str, Mapping[str, float]],
    *,
    batch: int | None = None,
    coefficients: Mapping[str, float] | None = None,
) -> str:
    """The route predicted fastest for calls on ``batch`` inputs.

    Args:
      work: route -> its work (coefficient name -> amount per call or per image).
      batch: inputs per call. ``None``: the route nearest the fastest at every batch size
        of `CHOICE_BATCHES` (for a caller that cannot know its batch size).
      coefficients: as in `predict_seconds`.

    Returns:
      With ``batch``, the route of least predicted seconds at that batch size; without,
      the route whose worst ratio, over `CHOICE_BATCHES`, of its predicted seconds to the
      least predicted seconds is smallest. Ties go to the first in ``work``'s order.
    """
    if not work:
        raise ValueError("no route to choose from")

    def seconds(r, b):
        return predict_seconds(work[r], b, coefficients=coefficients)

    if batch is not None:
        return min(work, key=lambda r: seconds(r, int(batch)))

    def regret(r):
        return max(seconds(r, b) / min(seconds(q, b) for q in work) for b in CHOICE_BATCHES)

    return min(work, key=regret)


def fit_coefficients(
    samples: Sequence[tuple[Mapping[str, float], float]],
    *,
    names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Non-negative coefficients that best predict measured seconds, in log space.

    Minimises ``sum_i (log sum_k c_k a_ik - log t_i)^2`` over ``c >= 0`` (relative errors,
    so fast and slow calls weigh alike), started from the non-negative least-squares
    solution of the relative errors ``sum_i (sum_k c_k a_ik / t_i - 1)^2``.

    Args:
      samples: ``(amounts, seconds)`` per measured call: coefficient name -> amount of that
        work in the call (`amounts`), and its measured wall time.
      names: the coefficients to fit (default: every name in the samples). Work of other
        names is ignored.

    Returns:
      coefficient name -> seconds per unit; 0 for a name no sample uses.
    """
    from scipy import optimize

    names, x, t, scale, used = _fit_matrix(samples, names)
    start, _ = optimize.nnls(x / t[:, None], np.ones(len(t)), maxiter=50 * x.shape[1])
    tiny = 1e-12 * float(np.max(x @ np.maximum(start, 0)) or 1.0)

    def resid(c):
        return np.log(np.maximum(x @ c, tiny)) - np.log(t)

    def jac(c):
        return x / np.maximum(x @ c, tiny)[:, None]

    c0 = np.maximum(start, 1e-9 * max(float(start.max()), 1e-30))
    fit = optimize.least_squares(
        resid, c0, jac=jac, bounds=(0.0, np.inf), method="trf", x_scale="jac", max_nfev=2000
    )
    c = fit.x
    # A coefficient whose term is under 1e-4 of every call's time is noise of the fit: 0.
    share = np.max(x * c[None, :] / t[:, None], axis=0)
    c = np.where(share < 1e-4, 0.0, c)
    coef = np.zeros(len(names))
    coef[used] = c / scale[used]
    return {k: float(v) for k, v in zip(names, coef, strict=True)}


ORDER_MARGIN = 1.05
"""`fit_coefficients_minimax`: how much faster the fastest call of a group must be predicted
than each call that took more than ``slack`` times as long (a tie would be no choice)."""


def fit_coefficients_minimax(
    samples: Sequence[tuple[Mapping[str, float], float]],
    *,
    names: Sequence[str] | None = None,
    groups: Sequence | None = None,
    slack: float = 1.2,
) -> tuple[dict[str, float], float]:
    """Non-negative coefficients whose worst prediction is least wrong, and that rank routes.

    The targets of the planner are worst cases (every prediction within a factor of its
    measurement; the chosen route within ``slack`` of the fastest), so this fit minimises
    the worst factor ``r = max_i max(p_i / t_i, t_i / p_i)`` of the predictions ``p_i = sum_k
    c_k a_ik`` (linear programs, bisection on ``r``). With ``groups`` (one label per sample:
    the calls that compete, one network at one batch size) it also requires the fastest call
    of each group to be predicted `ORDER_MARGIN` times faster than every call of the group
    that took more than ``slack`` times as long, so that a choice by least prediction is
    within ``slack`` of the fastest on these timings (dropped where no coefficients can meet
    it). Among the coefficients within 1.05 r of the least worst factor it takes those of
    least summed relative error ``sum_i |p_i / t_i - 1|``.

    Args:
      samples: ``(amounts, seconds)`` per measured call, as for `fit_coefficients`.
      names: the coefficients to fit (default: every name in the samples).
      groups: None, or a label per sample (calls with the same label compete).
      slack: the ratio to the fastest call of its group above which a call must be
        predicted slower than that fastest one.

    Returns:
      ``(coefficients, worst)``: coefficient name -> seconds per unit (0 for a name no sample
      uses), and the worst factor ``r`` they reach on ``samples``.

    Raises:
      ValueError: as `fit_coefficients`, or ``groups`` is not one label per sample.
    """
    names, x, t, scale, used = _fit_matrix(samples, names)
    order = np.zeros((0, x.shape[1]))
    if groups is not None:
        if len(groups) != len(t):
            raise ValueError(f"groups has {len(groups)} labels for {len(t)} samples")
        rows = []
        for g in dict.fromkeys(groups):
            idx = [i for i, h in enumerate(groups) if h == g]
            fastest = min(idx, key=lambda i: t[i])
            rows += [ORDER_MARGIN * x[fastest] - x[i] for i in idx if t[i] > slack * t[fastest]]
        order = np.array(rows).reshape(-1, x.shape[1])
    if _worst_fit(x, t, 1e6, order) is None:  # no coefficients rank the routes
        order = np.zeros((0, x.shape[1]))
    lo, hi = 1.0, 2.0
    while _worst_fit(x, t, hi, order) is None:
        lo, hi = hi, hi * 4
    while hi / lo > 1.001:
        mid = float(np.sqrt(lo * hi))
        lo, hi = (lo, mid) if _worst_fit(x, t, mid, order) is not None else (mid, hi)
    c = np.maximum(_worst_fit(x, t, 1.05 * hi, order, least_error=True), 0.0)
    pred = x @ c
    worst = float(np.max(np.maximum(pred / t, t / np.maximum(pred, 1e-300))))
    coef = np.zeros(len(names))
    coef[used] = c / scale[used]
    return {k: float(v) for k, v in zip(names, coef, strict=True)}, worst


def _worst_fit(x, t, r, order, least_error: bool = False):
    """Scaled coefficients ``c >= 0`` with every prediction ``x c`` within a factor ``r`` of
    ``t`` and ``order @ c <= 0``, or None where there are none (a linear program). With
    ``least_error``: those of least ``sum_i |(x c)_i / t_i - 1|``."""
    from scipy import optimize

    n, m = x.shape
    rel = x / t[:, None]
    zeros = np.zeros((n, n))
    a_ub = [np.hstack([rel, zeros]), np.hstack([-rel, zeros])]
    b_ub = [np.full(n, r), np.full(n, -1.0 / r)]
    if len(order):
        a_ub.append(np.hstack([order, np.zeros((len(order), n))]))
        b_ub.append(np.zeros(len(order)))
    if least_error:  # e_i >= |rel_i c - 1|
        a_ub += [np.hstack([rel, -np.eye(n)]), np.hstack([-rel, -np.eye(n)])]
        b_ub += [np.ones(n), -np.ones(n)]
    cost = np.concatenate([np.zeros(m), np.full(n, float(least_error))])
    out = optimize.linprog(
        cost, A_ub=np.vstack(a_ub), b_ub=np.concatenate(b_ub), bounds=(0, None), method="highs"
    )
    return out.x[:m] if out.status == 0 else None


def _fit_matrix(samples, names):
    """``(names, x, t, scale, used)``: the samples' work as a matrix ``x`` of the used names'
    columns, each scaled to a largest entry of 1 (``scale``), and their seconds ``t``."""
    if not samples:
        raise ValueError("fit_coefficients needs at least one timed call")
    if names is None:
        names = sorted({k for a, _ in samples for k in a})
    names = list(names)
    a = np.array([[float(s.get(k, 0.0)) for k in names] for s, _ in samples])
    t = np.array([float(sec) for _, sec in samples])
    if np.any(~np.isfinite(a)) or np.any(a < 0):
        raise ValueError("work amounts must be finite and non-negative")
    if np.any(~(t > 0)) or np.any(~np.isfinite(t)):
        raise ValueError("measured seconds must be positive and finite")
    used = np.any(a > 0, axis=0)
    if not used.any():
        raise ValueError("no sample has any work of the names fitted")
    scale = np.where(used, np.max(a, axis=0), 1.0)  # columns of size ~1: a well-posed fit
    return names, a[:, used] / scale[used], t, scale, used


def coefficients_source(coefficients: Mapping[str, float], calibration: Mapping) -> str:
    """Python source of `COEFFICIENTS` and `CALIBRATION` for this module (what ``--fit``
    prints), formatted as ruff formats it."""
    import json
    import textwrap

    def number(v) -> str:
        text = f"{float(v):.4g}".replace("e+", "e")
        return text if any(c in text for c in ".en") else text + ".0"

    lines = ["COEFFICIENTS: dict[str, float] = {"]
    lines += [f'    "{k}": {number(v)},' for k, v in coefficients.items()]
    lines += ["}", "", "CALIBRATION: dict[str, object] = {"]
    for k, v in calibration.items():
        text = json.dumps(v) if isinstance(v, str) else number(v)
        if len(f'    "{k}": {text},') <= 100:
            lines.append(f'    "{k}": {text},')
        elif len(text) <= 92:  # on a line of its own
            lines += [f'    "{k}": (', f"        {text}", "    ),"]
        else:  # in pieces of at most 100 characters a line
            pieces = textwrap.wrap(v, 88, break_long_words=False, drop_whitespace=False)
            lines += [f'    "{k}": (', *[f"        {json.dumps(p)}" for p in pieces], "    ),"]
    lines += ["}"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------
# Work counted from a route's program.

WORK_KINDS = (
    "ops",
    "weights",
    "matmul",
    "conv",
    "conv_cf",
    "conv_grouped",
    "conv_taps",
    "elementwise",
    "memory",
    "setup",
)
"""What `program_work` counts (module docstring)."""

# Operations that only relabel their operand (XLA makes them bitcasts or fuses them into
# their consumer): an op, no work.
_FREE = frozenset(
    {"reshape", "squeeze", "expand_dims", "broadcast_in_dim", "convert_element_type", "iota"}
)
# Operations that move data XLA does not fuse into a neighbour's loop (copies, gathers,
# scatters, reductions): their elements (a reduction's input) count as ``memory``.
_MEMORY = frozenset(
    {
        "transpose",
        "gather",
        "scatter",
        "scatter-add",
        "scatter_add",
        "dynamic_slice",
        "dynamic_update_slice",
        "concatenate",
        "pad",
        "sort",
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "argmax",
        "argmin",
        "reduce_window_sum",
        "reduce_window_max",
        "reduce_window",
        "select_and_scatter_add",
        "cumsum",
    }
)
_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min", "argmax", "argmin"})


def _sub_jaxprs(eqn):
    """The sub-programs of a call-like equation whose inputs are the equation's (in order):
    jit, custom_jvp / custom_vjp calls, checkpoint; empty for a leaf."""
    out = []
    for name in ("jaxpr", "call_jaxpr", "fun_jaxpr"):
        sub = eqn.params.get(name)
        if sub is not None and eqn.primitive.name not in ("scan", "while", "cond"):
            out.append(sub.jaxpr if hasattr(sub, "jaxpr") else sub)
            break
    return out


def _size(avals) -> float:
    return float(sum(np.prod(a.shape) for a in avals if hasattr(a, "shape")))


def _leaf_work(eqn, dep_in, mult: float, acc: dict, in_loop: bool) -> None:
    """Adds one leaf equation's work, executed ``mult`` times per call, to ``acc``
    (``dep_in``: which operands depend on the network's input)."""
    from jax import lax

    acc["ops"] += mult
    name = eqn.primitive.name
    dep = any(dep_in)
    out_size = _size([v.aval for v in eqn.outvars])
    if dep and name in ("dot_general", "conv_general_dilated"):
        # an operand that does not depend on the input (a weight matrix, a cone matrix) is
        # read once per execution whatever the batch
        fixed = [a for a, d in zip(eqn.invars, dep_in, strict=True) if not d]
        acc["weights"] += mult * _size([a.aval for a in fixed])
    if eqn.primitive is lax.dot_general_p:
        (lc, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        kind, amount = "matmul", 2.0 * out_size * float(np.prod([lhs[a] for a in lc]))
    elif eqn.primitive is lax.conv_general_dilated_p:
        dn = eqn.params["dimension_numbers"]
        kernel = eqn.invars[1].aval.shape
        amount = 2.0 * out_size * float(np.prod(kernel)) / kernel[dn.rhs_spec[0]]
        kind = "conv"
        if dep:  # output elements times kernel taps: what few channels do not amortise
            taps = float(np.prod([kernel[a] for a in dn.rhs_spec[2:]]))
            acc["conv_taps"] += mult * out_size * taps
        if in_loop:  # outside loops XLA changes the layout to a fast one
            if dn.lhs_spec[1] != len(dn.lhs_spec) - 1:  # feature axis not last (NCHW)
                kind = "conv_cf"
            if eqn.params.get("feature_group_count", 1) > 1:
                kind = "conv_grouped"
            if eqn.params.get("batch_group_count", 1) > 1:
                kind = "conv_grouped"
    elif name in _FREE:
        return
    elif name in _MEMORY:
        kind = "memory"
        amount = _size([v.aval for v in eqn.invars]) if name in _REDUCTIONS else out_size
    else:
        kind, amount = "elementwise", out_size
    if dep:
        acc[kind] += mult * amount
    else:  # does not depend on the input: computed once per call, whatever the batch
        acc["setup"] += mult * amount


class _Loop(NamedTuple):
    """Where an equation runs: ``mult`` executions per call if it changes from one
    iteration of the innermost loop to the next, ``once`` if not (XLA hoists a loop-invariant
    operation out of the loop), ``in_loop`` whether there is a loop at all."""

    mult: float = 1.0
    once: float = 1.0
    in_loop: bool = False


def _walk_jaxpr(jaxpr, dep_in, var_in, loop: _Loop, acc: dict) -> tuple[list, list]:
    """Work of ``jaxpr`` into ``acc``: inputs depending on the network's input where
    ``dep_in``, changing with the innermost loop's iteration where ``var_in``. Returns both
    flags of the outputs."""
    dep = dict(zip(jaxpr.invars, dep_in, strict=True))
    var = dict(zip(jaxpr.invars, var_in, strict=True))

    def flag(table, a):
        return False if hasattr(a, "val") else table.get(a, False)  # literals, constants

    for eqn in jaxpr.eqns:
        d_in = [flag(dep, a) for a in eqn.invars]
        v_in = [flag(var, a) for a in eqn.invars]
        here = loop if any(v_in) or not loop.in_loop else loop._replace(mult=loop.once)
        d_out, v_out = _eqn_work(eqn, d_in, v_in, here, acc)
        for o, d, v in zip(eqn.outvars, d_out, v_out, strict=True):
            dep[o], var[o] = d, v
    return [flag(dep, o) for o in jaxpr.outvars], [flag(var, o) for o in jaxpr.outvars]


def _eqn_work(eqn, d_in, v_in, loop: _Loop, acc: dict) -> tuple[list, list]:
    """One equation's work (a loop's, a call's, a leaf's) into ``acc``; the flags of its
    outputs (`_walk_jaxpr`)."""
    name, n_out = eqn.primitive.name, len(eqn.outvars)
    if name == "scan":
        body = eqn.params["jaxpr"].jaxpr
        n_c, n_carry = eqn.params["num_consts"], eqn.params["num_carry"]
        inner = _Loop(loop.mult * eqn.params["length"], loop.mult, True)
        v_body = [False] * n_c + [True] * (len(d_in) - n_c)  # carries and slices vary
        d_body = list(d_in)
        for _ in range(3):  # carries that come to depend on the input after a step
            out, _ = _walk_jaxpr(
                body,
                d_body,
                v_body,
                inner._replace(mult=0.0, once=0.0),
                {k: 0.0 for k in WORK_KINDS},
            )
            old = d_body[n_c : n_c + n_carry]
            carry = [a or b for a, b in zip(old, out[:n_carry], strict=True)]
            if carry == old:
                break
            d_body[n_c : n_c + n_carry] = carry
        d_out, _ = _walk_jaxpr(body, d_body, v_body, inner, acc)
        return d_out, [any(v_in)] * n_out
    if name in ("while", "cond"):  # trip count unknown: once, every branch
        subs = [eqn.params["body_jaxpr"]] if name == "while" else eqn.params["branches"]
        inner = loop._replace(in_loop=loop.in_loop or name == "while")
        for sub in subs:
            n = len(sub.jaxpr.invars)
            _walk_jaxpr(sub.jaxpr, [any(d_in)] * n, [True] * n, inner, acc)
        return [any(d_in)] * n_out, [any(v_in)] * n_out
    subs = _sub_jaxprs(eqn)
    if subs:
        (sub,) = subs
        same = len(sub.invars) == len(d_in)
        d_sub = d_in if same else [any(d_in)] * len(sub.invars)
        v_sub = v_in if same else [any(v_in)] * len(sub.invars)
        d_out, v_out = _walk_jaxpr(sub, d_sub, v_sub, loop, acc)
        if len(d_out) == n_out:
            return d_out, v_out
        return [any(d_in)] * n_out, [any(v_in)] * n_out
    _leaf_work(eqn, d_in, loop.mult, acc, loop.in_loop and any(v_in))
    return [any(d_in)] * n_out, [any(v_in)] * n_out


def program_work(fn, *args, shapes: bool = False):
    """The work of ``fn(*args)`` (one example; every argument is the network's input or
    depends on it) by kind, from its traced program.

    Every equation counts once per execution (loops: per iteration) as an *op*; its work is
    a dot product's FLOPs (``matmul``), a convolution's FLOPs (``conv``; ``conv_slow`` for
    channel-first and grouped ones inside a loop, which XLA's CPU backend runs far slower
    there), or else the elements it writes (``elementwise``). Work that does not depend on
    the input (built from the weights alone) is computed once per call under ``jax.vmap``
    whatever the batch: it counts, in FLOPs or elements, as ``setup``.

    Returns:
      kind (`WORK_KINDS`) -> amount: ``ops`` and ``setup`` per call, the others per example;
      with ``shapes``, ``(that, the shapes of fn's outputs)`` from the same trace.
    """
    import jax

    closed, out = jax.make_jaxpr(fn, return_shape=True)(*args)
    acc = jaxpr_work(closed, [True] * len(closed.jaxpr.invars))
    return (acc, out) if shapes else acc


def jaxpr_work(closed, dependent) -> dict[str, float]:
    """The work of a traced program (`program_work`) whose inputs depend on the network's
    input where ``dependent`` (one flag per input of ``closed.jaxpr``); the others (weights
    passed as arguments) count like its constants: work built from them alone is setup."""
    acc = {k: 0.0 for k in WORK_KINDS}
    flags = [bool(d) for d in dependent]
    _walk_jaxpr(closed.jaxpr, flags, flags, _Loop(), acc)
    return acc

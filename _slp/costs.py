"""The Insens planner's cost model: predicted seconds of each exact route from counted work.

`_slp.insens._plan` counts, from shapes, receptive-field boxes and the cone geometry
alone, the work of every route for one image as amounts of a few kinds (the *work*
of a `RouteCost`, keyed by coefficient name):

* ``<route>.call``: 1 per call (dispatch, the loop's set-up);
* ``<route>.steps``: sequential loop steps per call;
* ``<route>.setup``: elements of the matrices a route builds from the weights once per call
  (the cone route's cone matrices and weight slices, the probe route's grouped weights);
* ``<route>.matmul``: FLOPs per image of matrix products and feature-last convolutions in
  the route (multiply-adds count 2);
* ``<route>.elementwise``: elements per image of the tangents the route writes (masks,
  squares, sums, slices, one-hot directions);
* ``loop_conv_cf``: FLOPs per image of channel-first convolutions (feature axis not last,
  e.g. equinox's) inside the probe and dense routes' loops, which XLA's CPU backend runs
  far below its matrix-product rate;
* ``forward``: FLOPs per image of the forward pass (the forward pass and the final
  vector-Jacobian product are the same for every route).

The predicted wall time of one jitted call of ``jax.vmap`` of the route on ``batch``
images (compile excluded) is linear in them (`predict_seconds`):

    seconds = sum_k c_k w_k,   w_k = amount per call (``call``, ``steps``, ``setup``)
                                     or batch x amount per image (the others)

The coefficients ``c_k`` (seconds per unit) are fitted by `fit_coefficients` (least squares
of the log of the predicted against the log of the measured seconds, every ``c_k >= 0``)
to timings of every route on every network of the benchmark zoo at batch 1 and 8:
``python experiments/bench_insens.py --zoo --fit`` measures them and prints a new table.
On another device the per-image terms are scaled by the ratio of the calibration machine's
matrix-product rate to this device's (`slp.insens_plan`'s ``flop_rate``); the per-call terms
are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

ROUTES = ("cone", "probes", "dense")

PER_CALL = ("call", "steps", "setup")
"""Kinds of work counted once per call; every other kind is counted per image."""

# BEGIN FITTED: `python experiments/bench_insens.py --zoo --fit --fit-write` rewrites this.
COEFFICIENTS: dict[str, float] = {
    "cone.call": 2e-4,
    "cone.steps": 2e-5,
    "cone.setup": 1e-9,
    "cone.matmul": 2e-11,
    "cone.elementwise": 1e-9,
    "probes.call": 2e-4,
    "probes.steps": 2e-5,
    "probes.setup": 1e-9,
    "probes.matmul": 2e-11,
    "probes.elementwise": 1e-9,
    "dense.call": 2e-4,
    "dense.steps": 2e-5,
    "dense.matmul": 2e-11,
    "dense.elementwise": 1e-9,
    "loop_conv_cf": 1e-9,
    "forward": 3e-11,
}

CALIBRATION: dict[str, object] = {
    "command": "(not yet fitted)",
    "machine": "",
    "date": "",
    "flop_rate": 5e10,
    "load_average": 0.0,
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


CHOICE_BATCHES = (1, 8)
"""Batch sizes the route choice looks at (`choose`)."""


def choose(
    work: Mapping[str, Mapping[str, float]],
    *,
    coefficients: Mapping[str, float] | None = None,
) -> str:
    """The route predicted nearest the fastest at every batch size of `CHOICE_BATCHES`.

    Args:
      work: route -> its work (coefficient name -> amount per call or per image).
      coefficients: as in `predict_seconds`.

    Returns:
      The route whose worst ratio, over the batch sizes, of its predicted seconds to the
      least predicted seconds is smallest (the first such in ``work``'s order).
    """
    if not work:
        raise ValueError("no route to choose from")

    def seconds(r, b):
        return predict_seconds(work[r], b, coefficients=coefficients)

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
    x = a[:, used] / scale[used]
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
    coef = np.zeros(len(names))
    coef[used] = fit.x / scale[used]
    return {k: float(v) for k, v in zip(names, coef, strict=True)}


def coefficients_source(coefficients: Mapping[str, float], calibration: Mapping) -> str:
    """Python source of `COEFFICIENTS` and `CALIBRATION` for this module (what ``--fit``
    prints)."""
    lines = ["COEFFICIENTS: dict[str, float] = {"]
    lines += [f'    "{k}": {v:.4g},' for k, v in coefficients.items()]
    lines += ["}", "", "CALIBRATION: dict[str, object] = {"]
    lines += [f'    "{k}": {v!r},' for k, v in calibration.items()]
    lines += ["}"]
    return "\n".join(lines)


def cone_loop_work(geo) -> dict[str, float]:
    """The cone route's work for one image, from its geometry (`_slp.cone.ConeGeometry`).

    Every block carries ``prod(sigma_tot) * f`` Jacobian columns (``f``: the size of the
    input's free axes), each restricted to its cone: a value of window shape ``W`` holds
    ``prod(W)`` elements per column, a convolution is one product with a
    ``(prod(W_in), prod(W_out))`` cone matrix.

    Returns:
      ``rows``: Jacobian columns carried over all blocks; ``matmul``: FLOPs of the cone
      matrix products; ``elementwise``: tangent elements written; ``setup``: elements of
      the cone matrices; ``cut_window``: elements per column of the cut's operand (0
      without a cut).
    """
    from _slp import cone as _cone

    free = [n for a, n in enumerate(geo.in_shape) if a not in geo.spatial]
    rows = float(len(geo.blocks)) * float(np.prod(geo.sigma_tot)) * float(np.prod(free))

    def window(v) -> float:
        if isinstance(v, _cone._Geom):
            return float(np.prod(v.window_shape()))
        if isinstance(v, _cone._Flat):
            return float(np.prod(v.geom.window_shape()))
        return float(np.prod(v.shape))  # _Global

    matmul = elementwise = setup = cut_window = 0.0
    for step in geo.steps.values():
        ins = [v for v in step.ins if v is not None]
        if not step.outs:  # the cut: its operand's columns times the weights they touch
            cut_window = window(ins[0])
            continue
        out = sum(window(o) for o in step.outs)
        elementwise += rows * out
        if step.rule is _cone.CONV:
            matmul += 2.0 * rows * window(ins[0]) * out
            setup += window(ins[0]) * out
        elif step.rule is _cone.CHANNEL_DOT and isinstance(ins[0], _cone._Geom):
            positions = float(np.prod(ins[0].width))
            matmul += 2.0 * rows * window(ins[0]) * out / positions
    return {
        "rows": rows,
        "matmul": matmul,
        "elementwise": elementwise,
        "setup": setup,
        "cut_window": cut_window,
    }

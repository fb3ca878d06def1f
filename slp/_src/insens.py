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
  strided slices, upsampling (transposed convolutions, nearest resizes, ``jnp.repeat``,
  depth-to-space), padding, and transposes and reshapes between them (channel-first
  layouts such as equinox's), with spatial axes longer than 1 until they are flattened or
  pooled away; `insens_plan` names the operation that rules it out otherwise): input element
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
into predicted seconds; `insens` takes the route predicted fastest for the batch size of the
call, and runs the program traced for its count, which also gives the state and its VJP
(no route is traced twice, and the network is walked for nothing else). It also
predicts each route's FLOPs and peak memory from shapes and receptive-field boxes.

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

This module holds the public functions and the estimator. The plan (the cost model, the cut,
the route choice) is `slp._src.planner`; the probe and dense routes and the route run for the
batch size of the call are `slp._src.routes`; the cone route is `slp._src.cone`, the
receptive-field boxes `slp._src.boxes` and the products at the chosen precision
`slp._src.matmul`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from slp._src import cone as _cone
from slp._src import guards as _guards
from slp._src import matmul as _matmul
from slp._src import network as net
from slp._src.planner import (
    DENSE_BYTES,
    ROUTES,
    DenseLayout,
    InsensPlan,
    ProbeLayout,
    RouteCost,
    build_plan,
    device_flop_rate,
    insens_plan,
)
from slp._src.routes import (
    routed_state,
    runtime_consts,
    state_and_norms,
    switched_sq_norms,
)

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
    "device_flop_rate",
]


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
# The estimator.


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
    c = max(1, min(per_group, DENSE_BYTES // max(1, per_probe)))
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
    relu_idx = program.relu_eqns
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

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> est = slp.insens(f, probes=32, key=jax.random.key(0), return_stderr=True)(x)
      >>> est.map.shape, est.stderr.shape
      ((4,), (4,))
      >>> bool(jnp.all(est.stderr > 0))
      True
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

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, W2, W3 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3, 3), (3, 2)])
      >>> f = lambda x: jnp.maximum(jnp.maximum(x @ W1, 0) @ W2, 0) @ W3  # 2 ReLU layers
      >>> x = jnp.ones(4)
      >>> per_layer = slp.insens(f, by_layer=True)(x)
      >>> len(per_layer.maps), per_layer.maps[0].shape
      (2, (4,))
      >>> [int(c) for c in per_layer.counts]  # inactive neurons per layer
      [1, 2]
      >>> bool(jnp.allclose(per_layer.total(), slp.insens(f)(x), atol=1e-6))
      True
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


def _traced(f: Callable, x, batched: bool, pool_losers: bool) -> net.Program:
    """``f`` traced at ``x`` (`slp._src.network.trace`), checked to have neurons to average
    over (`check_has_neurons`); with ``batched``, an error in calling ``f`` says how the
    batch was read."""
    try:
        program = net.trace(f, x)
    except ValueError as err:
        if not batched:
            raise
        raise ValueError(
            f"{err}\n(batched=True reads x's first axis as the batch: each example has "
            f"shape {tuple(x.shape)})"
        ) from err
    _guards.check_has_neurons(program, pool_losers)
    return program


def _checked_estimator_options(probes, key, return_stderr, by_layer, exact_layers) -> int | None:
    """`insens`'s ``probes`` (an int >= 3, or None) after checking the options that go with it."""
    if probes is not None:
        if not _guards.is_count(probes, 3):
            raise ValueError(
                f"probes must be an integer >= 3 (the unbiased correction (k - 2)/k needs "
                f"k > 2) or None for the exact map; got {probes!r}"
            )
        probes = int(probes)
        _guards.check_key(key, "insens(probes=k)")
        if key is None:
            raise ValueError(
                "probes=k draws random probes: pass a key, e.g. "
                "insens(f, probes=k, key=jax.random.key(0))"
            )
        if return_stderr and probes < 6:
            raise ValueError(f"return_stderr needs probes >= 6; got {probes}")
        if return_stderr and by_layer:
            raise ValueError("return_stderr is not available with by_layer")
        if not _guards.is_count(exact_layers, 0):
            raise ValueError(f"exact_layers must be a non-negative integer; got {exact_layers!r}")
    elif exact_layers:
        raise ValueError("exact_layers applies to the estimate (probes=k); exact is exact")
    elif return_stderr:
        raise ValueError("return_stderr needs probes=k (the exact map has no sampling error)")
    return probes


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


def _layer_maps(vjp, inactive, sq, activities, guard) -> LayerInsens:
    """Eq. 8 restricted to each layer's inactive neurons: one reverse pass per layer."""
    maps, counts = [], []
    for k, i in enumerate(inactive):
        only = [jnp.zeros_like(i) for i in inactive]
        only[k] = i
        (part,) = vjp(_cotangents(only, sq, activities, jnp.sum(i)))
        maps.append(guard(part))
        counts.append(jnp.sum(i))
    return LayerInsens(tuple(maps), tuple(counts))


def _jackknife(vjp, inactive, sq_groups, activities, count, probes: int) -> jax.Array:
    """The delete-a-group jackknife standard error of the estimate (`InsensEstimate`), in at
    least float32: the estimate without group g (k - k/G probes, its own correction), G
    reverse passes, one at a time."""
    n_groups = sq_groups[0].shape[0]
    k_rest = probes - probes // n_groups

    def without(g):
        rest = [(jnp.sum(a, axis=0) - a[g]) / (k_rest - 2.0) for a in sq_groups]
        return vjp(_cotangents(inactive, rest, activities, count))[0]

    loo = lax.map(without, jnp.arange(n_groups))
    # The spread of the G estimates in at least float32 (a float16 map's deviations squared
    # would underflow).
    loo = loo.astype(_matmul.accumulator(loo.dtype))
    dev = loo - jnp.mean(loo, axis=0, keepdims=True)
    return jnp.sqrt((n_groups - 1) / n_groups * jnp.sum(dev * dev, axis=0))


def _exact_state(program, x, plan: InsensPlan, prec, *, auto: bool):
    """The state, the switched network's VJP and the exact ``|w_hat|^2`` per ReLU layer by
    ``plan.route`` (`state_and_norms`), or with ``auto`` by the route chosen for the batch
    size of the call, from the programs traced while the routes' work was counted
    (`routed_state`)."""
    if auto:
        return routed_state(program, x, plan)
    return state_and_norms(program, x, plan, prec)


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
        choosing traces every route once, when compiling, and runs the chosen one's
        traced program), ``"cone"``
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

    Raises:
      ValueError: if ``chunk_size`` is below 1 or ``route`` is not one of ``"auto"``,
        ``"cone"``, ``"probes"``, ``"dense"``; if ``probes`` is neither None nor an integer
        ``>= 3``, or is given without a ``key``; if ``return_stderr`` is asked without
        ``probes``, with ``probes < 6`` or with ``by_layer``; if ``exact_layers`` is not a
        non-negative integer (with ``probes``) or is non-zero without ``probes``. When the
        returned function is called: if the given ``route`` does not apply to ``f`` (the
        message says why), if ``exact_layers`` exceeds ``f``'s ReLU layers or the layers
        the cone route reaches, if ``f`` cannot be called on ``x`` or looks like a function
        of a batch (see ``batched``).
      UnsupportedOperationError: when the returned function is called, if ``f`` applies an
        operation to the input that slp does not follow (``tanh``, a softmax; see
        `slp.network.trace`).
      TypeError: when the returned function is called on something that is not an array.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> omega = slp.insens(f)(x)
      >>> np.asarray(omega).round(3)
      array([-1.057, -0.597,  1.161, -0.068], dtype=float32)
      >>> hidden, _ = slp.switched_projections(f)(x)  # the same map from eq. 7 and 8
      >>> v, w = hidden.activity, hidden.weights
      >>> omega_i = v[:, None] * w / jnp.sum(w**2, axis=1, keepdims=True)  # per neuron
      >>> bool(jnp.allclose(omega, omega_i[v <= 0].mean(axis=0), atol=1e-5))
      True
      >>> jax.vmap(slp.insens(f))(jnp.stack([x, -x])).shape  # a batch of two
      (2, 4)
      >>> slp.insens(f, probes=32)  # the estimator draws random probes
      Traceback (most recent call last):
      ...
      ValueError: probes=k draws random probes: pass a key, ...
    """
    _guards.check_chunk_size(chunk_size)
    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; choose one of {ROUTES}")
    probes = _checked_estimator_options(probes, key, return_stderr, by_layer, exact_layers)
    n_groups = _stderr_groups(probes) if return_stderr else 1
    default_key = key

    prec = _matmul.resolve(precision)
    if batched:
        f = _guards.per_example(f)

    def fn(x, key=None):
        program = _traced(f, x, batched, include_pool_losers)
        chunk = int(np.prod(x.shape)) if chunk_size is None else int(chunk_size)
        plan = None
        if probes is None:  # the route's work is counted (traced) only to choose one
            plan = build_plan(program, x, chunk, route, precision=prec, count=route == "auto")
        program = runtime_consts(program)
        if probes is None:
            state, vjp, sq = _exact_state(program, x, plan, prec, auto=route == "auto")
        else:
            state, vjp = net.forward_and_vjp(program, x)
            probe_key = default_key if key is None else key
            frozen = net.frozen_network(program, state)
            sq, sq_groups = _estimated_norms(
                program, state, frozen, x, probes, probe_key, n_groups, exact_layers, prec
            )
        inactive = inactive_sets(program, state, include_pool_losers=include_pool_losers)
        count = sum(jnp.sum(i) for i in inactive) if inactive else jnp.zeros((), jnp.int32)
        # A NaN or inf in x, in a ReLU input or in the output (a non-finite weight) leaves
        # the state undefined (NaN is neither active nor inactive): the map is NaN, never a
        # plausible-looking one.
        finite = net.defined(x, state)

        def guard(m):
            return jnp.where(finite, m, jnp.nan)

        if by_layer:
            return _layer_maps(vjp, inactive, sq, state.activities, guard)
        (total,) = vjp(_cotangents(inactive, sq, state.activities, count))
        if not return_stderr:
            return guard(total)
        spread = _jackknife(vjp, inactive, sq_groups, state.activities, count, probes)
        return InsensEstimate(guard(total), guard(spread.astype(x.dtype)))

    if not batched:
        return jax.jit(fn)

    def batch_fn(xb, key=None):
        net.check_input(xb, "a batch of examples")
        return jax.vmap(lambda x: fn(x, key))(xb)

    return jax.jit(batch_fn)

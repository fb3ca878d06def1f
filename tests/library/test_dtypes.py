"""Mixed precision: every Insens route and every transform on networks that compute in
several dtypes, against the same network with every value in float64.

The networks (`Net`, a flax model: conv, ReLU, max-pool, conv, ReLU, average pool, dense,
ReLU, dense) come in the mixtures users write:

* float32 input and weights with a float64 value inside (64-bit floats enabled): flax's
  ``avg_pool(..., count_include_pad=False)`` divides by a float64 count, or an explicit
  float64 scale; everything after it is float64;
* bfloat16 parameters with float32 compute (flax ``param_dtype=bfloat16, dtype=float32``)
  and the reverse (float32 parameters, ``dtype=bfloat16``: the input is cast to bfloat16);
* float16 input and weights throughout;
* a float64 network on a float32 input and a float32 network on a float64 input.

Reference: the same weights (the values the network holds, cast to float64) in the
brute-force dense matrices of ``tests/reference.py`` (NumPy float64, no autodiff) for the
switched projections, centres, activities and Insens; for the attribution methods, each
method on the float64 network. Every map must come out in the input's dtype.

Tolerances: by the lowest dtype the network computes in (the input's included), relative
to the largest entry of the reference: ``RTOL_EPS = 16`` times that dtype's machine
epsilon (float32 1.9e-6, float16 1.6e-2, bfloat16 0.125: loose, as bfloat16 keeps 8
bits). Each value here is a few layers of sums of a few dozen terms, each operation
rounding once, then one division by ``|w_hat|^2``; the largest error seen over every case
and transform was 3.5 epsilon (the float32 estimator's jackknife), most are below 2.

Ties: a ReLU input that is 0, or a max-pool window with two equal largest inputs, in one
precision and not in the other makes the map of the two networks genuinely different (a
different state). Each case's input is drawn with a seed for which the state of the
mixed-precision network (`slp.activation_pattern`, the pool winners) equals the float64
reference's; `test_state_matches_reference` checks that for every case, so a tie shows up
as that failure, not only as a numerical mismatch. (With seed 0 the bfloat16-compute
cases have a first-layer ReLU input of 5e-4, at a scale of 1, that bfloat16 rounds to 0:
they use seed 1.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from reference import dense_model, init_params

import slp
from slp._src import network as net

SHAPE = (8, 8, 1)
# The reference's layer specs of `Net` (tests/reference.py).
SPEC = [
    ("conv", 3, 3, 1, "SAME"),
    ("relu",),
    ("maxpool", 2, 2),
    ("conv", 4, 3, 1, "SAME"),
    ("relu",),
    ("avgpool", 2, 2),
    ("flatten",),
    ("dense", 8),
    ("relu",),
    ("dense", 3),
]
LAYERS = ("Conv_0", None, None, "Conv_1", None, None, None, "Dense_0", None, "Dense_1")


class Net(nn.Module):
    """`SPEC` in flax. ``scale``: a float64 factor after the first ReLU (None: none);
    ``accumulate``: the result type of every product (None: the operands')."""

    dtype: object = None
    param_dtype: object = jnp.float32
    exclude_pad: bool = False
    scale: float | None = None
    accumulate: object = None

    @nn.compact
    def __call__(self, x):
        kw = {"dtype": self.dtype, "param_dtype": self.param_dtype}
        ckw, dkw = dict(kw), dict(kw)
        if self.accumulate is not None:
            pet = {"preferred_element_type": self.accumulate}
            ckw["conv_general_dilated"] = functools.partial(lax.conv_general_dilated, **pet)
            dkw["dot_general"] = functools.partial(lax.dot_general, **pet)
        h = nn.relu(nn.Conv(3, (3, 3), **ckw)(x))
        if self.scale is not None:
            h = h * np.float64(self.scale)  # a NumPy float64: not weakly typed
        h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = nn.relu(nn.Conv(4, (3, 3), **ckw)(h))
        h = nn.avg_pool(
            h, (2, 2), strides=(2, 2), padding="SAME", count_include_pad=not self.exclude_pad
        )
        h = nn.relu(nn.Dense(8, **dkw)(h.reshape(-1)))
        return nn.Dense(3, **dkw)(h)


@dataclasses.dataclass(frozen=True)
class Case:
    """A mixed-precision network: input dtype, `Net` options, whether 64-bit floats are on,
    the lowest dtype it computes in, and the seed of an input without ties."""

    x_dtype: object
    net: dict
    x64: bool
    lowest: object
    seed: int = 0


CASES = {
    "f64_avg_pool": Case(jnp.float32, {"exclude_pad": True}, True, jnp.float32),
    "f64_scale": Case(jnp.float32, {"scale": 0.5}, True, jnp.float32),
    "bf16_params": Case(
        jnp.float32, {"param_dtype": jnp.bfloat16, "dtype": jnp.float32}, False, jnp.float32
    ),
    "bf16_compute": Case(jnp.float32, {"dtype": jnp.bfloat16}, False, jnp.bfloat16, seed=1),
    "bf16_f32_accumulate": Case(
        jnp.float32, {"dtype": jnp.bfloat16, "accumulate": jnp.float32}, False, jnp.bfloat16, 1
    ),
    "float16": Case(
        jnp.float16, {"param_dtype": jnp.float16, "dtype": jnp.float16}, False, jnp.float16
    ),
    "f64_net_f32_input": Case(jnp.float32, {"param_dtype": jnp.float64}, True, jnp.float32),
    "f32_net_f64_input": Case(jnp.float64, {"dtype": jnp.float32}, True, jnp.float32),
}

# Relative tolerance in units of the lowest dtype's epsilon (module docstring).
RTOL_EPS = 16


def rtol(case: Case) -> float:
    return RTOL_EPS * float(jnp.finfo(case.lowest).eps)


@dataclasses.dataclass
class Setup:
    """One case built: the network ``f`` and input ``x`` as the case has them, the float64
    network ``f64`` and input ``x64``, and the brute-force reference ``ref``."""

    case: Case
    f: object
    x: jax.Array
    f64: object
    x64: np.ndarray
    ref: object

    def precision(self):
        """The 64-bit mode the mixed network is written for."""
        return jax.enable_x64(True) if self.case.x64 else contextlib.nullcontext()


def _params(case: Case, seed: int):
    """Random weights (biases too, not flax's zeros) in the case's parameter dtype, and the
    same values in float64 as the reference's list."""
    rng = np.random.default_rng(seed)
    raw = init_params(SPEC, SHAPE, rng)
    pdt = case.net.get("param_dtype", jnp.float32)
    tree, ref = {}, []
    for name, p in zip(LAYERS, raw, strict=True):
        if name is None:
            ref.append(None)
            continue
        k, b = (np.asarray(jnp.asarray(a, pdt)) for a in p)
        tree[name] = {"kernel": k, "bias": b}
        scale = case.net.get("scale") if name == "Conv_1" else None
        k64, b64 = k.astype(np.float64), b.astype(np.float64)
        # A scale after the first ReLU is the second convolution's kernel scaled.
        ref.append((k64 * scale if scale is not None else k64, b64))
    return {"params": tree}, ref


def build(name: str) -> Setup:
    case = CASES[name]
    with jax.enable_x64(True):  # the float64 network needs 64-bit floats on
        params, ref_params = _params(case, case.seed)
        rng = np.random.default_rng(100 + case.seed)
        x_np = rng.uniform(0.0, 1.0, SHAPE)
    with jax.enable_x64(case.x64):
        x = jnp.asarray(x_np, case.x_dtype)
    x64 = np.asarray(x).astype(np.float64)  # the values the network sees
    model = Net(**case.net)
    model64 = Net(
        dtype=jnp.float64,
        param_dtype=jnp.float64,
        exclude_pad=case.net.get("exclude_pad", False),
        scale=case.net.get("scale"),
    )
    p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    return Setup(
        case,
        lambda xp: model.apply(params, xp),
        x,
        lambda xp: model64.apply(p64, xp),
        x64,
        dense_model(SPEC, ref_params, x64),
    )


@functools.cache
def built(name: str) -> Setup:
    """`build`, once per case and test process."""
    return build(name)


# Cases of the default run: the reported failure (a float64 count in float32 flax), a
# bfloat16 network with float32 sums and casts at every layer, float16 throughout; for
# Insens's routes also the float64 network on a float32 input and the reverse. The other
# cases run with the slow tests.
FAST = ("f64_avg_pool", "bf16_f32_accumulate", "float16")
FAST_ROUTES = FAST + ("f64_net_f32_input", "f32_net_f64_input")


def cases(fast=FAST) -> list:
    return [c if c in fast else pytest.param(c, marks=pytest.mark.slow) for c in sorted(CASES)]


def rel_err(got, want) -> float:
    """Largest absolute difference relative to the largest entry of ``want``."""
    got = np.asarray(got).astype(np.float64)
    want = np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def _check(s: Setup, got, want, what: str) -> None:
    err = rel_err(got, want)
    assert err <= rtol(s.case), f"{what}: relative error {err:.3g} > {rtol(s.case):.3g}"


# --- the state first: ties would make every comparison meaningless ----------------------


def _state_matches(s: Setup):
    """The mixed network's state (ReLU pattern and pool winners) is the float64 one's."""
    with s.precision():
        pattern = slp.activation_pattern(s.f)(s.x)
        program = net.trace(s.f, s.x)
        winners = net.forward(program, s.x).winners
    acts = s.ref.activities[:-1]
    assert len(pattern) == len(acts)
    for k, (p, v) in enumerate(zip(pattern, acts, strict=True)):
        np.testing.assert_array_equal(np.asarray(p).reshape(-1), v > 0, err_msg=f"layer {k}")
    won = np.zeros(int(np.prod(program.pool_input_shapes[0])), bool)
    won[np.asarray(winners[0]).reshape(-1)] = True
    np.testing.assert_array_equal(~won, s.ref.relu_pool_losers[0])


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_matches_reference(case):
    _state_matches(built(case))


# --- Insens ---------------------------------------------------------------------------------


def _layer_terms(ref, k: int, sq=None):
    """Per inactive neuron of ReLU layer ``k``: ``v_i w_hat_i / |w_hat_i|^2`` summed, and
    ``|I_k|`` (``sq``: the squared norms to use, default the exact ones)."""
    w, v = ref.weights[k], ref.activities[k]
    sq = np.sum(w * w, axis=1) if sq is None else sq
    on = (v <= 0) & (sq > 0)
    coef = np.where(on, v / np.where(sq > 0, sq, 1), 0)
    return coef @ w, int(np.sum(v <= 0))


def _insens_with(ref, sqs=None) -> np.ndarray:
    """Eq. 8 from the reference's switched weights, with squared norms ``sqs`` per layer."""
    n = len(ref.weights) - 1
    parts = [_layer_terms(ref, k, None if sqs is None else sqs[k]) for k in range(n)]
    total = sum(p[0] for p in parts)
    return (total / max(1, sum(p[1] for p in parts))).reshape(SHAPE)


@pytest.mark.parametrize(
    "route", ["cone", "probes", "dense", pytest.param("auto", marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("case", cases(FAST_ROUTES))
def test_insens_routes(case, route):
    setup = built(case)
    with setup.precision():
        got = slp.insens(setup.f, route=route)(setup.x)
    assert got.dtype == setup.x.dtype and got.shape == SHAPE
    _check(setup, got, setup.ref.insens().reshape(SHAPE), f"insens route={route}")


@pytest.mark.parametrize("case", cases())
def test_insens_by_layer(case):
    setup = built(case)
    with setup.precision():
        got = slp.insens(setup.f, by_layer=True)(setup.x)
        total = got.total()
    for k, m in enumerate(got.maps):
        part, count = _layer_terms(setup.ref, k)
        assert m.dtype == setup.x.dtype
        assert int(got.counts[k]) == count
        if count:
            _check(setup, m, (part / count).reshape(SHAPE), f"by_layer layer {k}")
    assert total.dtype == setup.x.dtype
    _check(setup, total, setup.ref.insens().reshape(SHAPE), "by_layer total")


def _probes(x, k: int, key) -> np.ndarray:
    """The estimator's probes as `slp.insens` documents them: ``N(0, I)`` in x's dtype drawn
    with ``fold_in(key, m)``; float64, ``(k, d)``."""
    z = [jax.random.normal(jax.random.fold_in(key, m), x.shape, x.dtype) for m in range(k)]
    return np.stack([np.asarray(a, np.float64).reshape(-1) for a in z])


@pytest.mark.parametrize("case", cases())
def test_insens_estimator(case):
    """The unbiased estimate from k probes, against eq. 8 with the same probes' squared
    norms in float64, and its jackknife standard error (one probe per group at k = 8)."""
    setup = built(case)
    k, key = 8, jax.random.key(3)
    with setup.precision():
        est = slp.insens(setup.f, probes=k, key=key, return_stderr=True)(setup.x)
        z = _probes(setup.x, k, key)
    ref, n = setup.ref, len(setup.ref.weights) - 1
    proj = [(ref.weights[j] @ z.T) ** 2 for j in range(n)]  # (neurons, k) per layer
    want = _insens_with(ref, [p.sum(1) / (k - 2) for p in proj])
    loo = np.stack([
        _insens_with(ref, [(p.sum(1) - p[:, g]) / (k - 3) for p in proj]) for g in range(k)
    ])  # fmt: skip
    stderr = np.sqrt((k - 1) / k * np.sum((loo - loo.mean(0)) ** 2, axis=0))
    assert est.map.dtype == est.stderr.dtype == setup.x.dtype
    _check(setup, est.map, want, "estimate")
    _check(setup, est.stderr, stderr, "stderr")


@pytest.mark.parametrize("case", cases())
def test_insens_estimator_exact_layers(case):
    """``exact_layers``: the cone route's exact norms for the conv layers, probes after."""
    setup = built(case)
    k, key = 6, jax.random.key(4)
    with setup.precision():
        got = slp.insens(setup.f, probes=k, key=key, exact_layers=2)(setup.x)
        z = _probes(setup.x, k, key)
    ref = setup.ref
    sqs = [None, None, np.sum((ref.weights[2] @ z.T) ** 2, axis=1) / (k - 2)]
    assert got.dtype == setup.x.dtype
    _check(setup, got, _insens_with(ref, sqs), "estimate, exact_layers=2")


# --- switched projections, centres, activities -----------------------------------------------


@pytest.mark.parametrize("method", ["jacfwd", "explicit"])
@pytest.mark.parametrize("case", cases())
def test_switched_projections(case, method):
    setup = built(case)
    with setup.precision():
        proj = slp.switched_projections(setup.f, method=method)(setup.x)
    ref = setup.ref
    assert len(proj) == len(ref.weights)
    for k, p in enumerate(proj):
        assert p.weights.dtype == setup.x.dtype, f"layer {k}: weights not in x's dtype"
        n = ref.weights[k].shape[0]
        _check(setup, p.weights.reshape(n, -1), ref.weights[k], f"w_hat, layer {k}")
        _check(setup, p.bias.reshape(n), ref.biases[k], f"b_hat, layer {k}")
        _check(setup, p.activity.reshape(n), ref.activities[k], f"v, layer {k}")


@pytest.mark.parametrize("case", cases())
def test_switched_centres_and_activities(case):
    setup = built(case)
    with setup.precision():
        centres = slp.switched_centres(setup.f)(setup.x)
        acts = slp.activities(setup.f)(setup.x)
    ref, x = setup.ref, setup.x64.reshape(-1)
    for k, c in enumerate(centres):
        w, v = ref.weights[k], ref.activities[k]
        sq = np.sum(w * w, axis=1, keepdims=True)
        want = x - np.where(sq > 0, v[:, None] / np.where(sq > 0, sq, 1), 0) * w
        assert c.dtype == setup.x.dtype
        _check(setup, c.reshape(want.shape), want, f"centres, layer {k}")
    for k, a in enumerate(acts):
        _check(setup, a.reshape(-1), ref.activities[k], f"activities, layer {k}")


# --- attribution methods ----------------------------------------------------------------------


def _options(method: str) -> dict:
    # A key whose noisy copies avoid ties: with key 5 one float16 copy has a ReLU input
    # that rounds to the other side of 0 (a different state, 12 epsilon off).
    return {"key": jax.random.key(0)} if method == "smoothgrad" else {}


# One method per mechanism in the default run: the gradient through the walker, a
# modified ReLU backward pass, LRP's layer rules with their bias adds.
FAST_METHODS = ("gradient_x_input", "guided_backprop", "lrp_alpha1_beta0")


@pytest.mark.parametrize(
    "method",
    [m if m in FAST_METHODS else pytest.param(m, marks=pytest.mark.slow) for m in
     slp.available_methods()],
)  # fmt: skip
@pytest.mark.parametrize("case", cases())
def test_attribution_methods(case, method):
    """Every registered method on the mixed network against the same method on the float64
    network (smoothgrad: on x in its own dtype, so that both draw the same noise)."""
    setup = built(case)
    with jax.enable_x64(True):
        x_ref = setup.x if method == "smoothgrad" else jnp.asarray(setup.x64)
        y = np.asarray(setup.f64(jnp.asarray(setup.x64)))
        target = int(np.argmax(y))
        want = slp.attribute(setup.f64, x_ref, method, target=target, **_options(method))
        want = np.asarray(want, np.float64)
    with setup.precision():
        got = slp.attribute(setup.f, setup.x, method, target=target, **_options(method))
    assert got.dtype == setup.x.dtype
    _check(setup, got, want, method)


def test_float16_mean_over_many_neurons():
    """A float16 network with 4096 inactive neurons whose ``omega_hat`` sum far beyond
    float16's range (65504) while their mean (eq. 8) is about -30: the mean comes out
    right, by every exact route and by ``by_layer``'s total."""
    spec = [("dense", 4096), ("relu",), ("dense", 2)]
    rng = np.random.default_rng(0)
    w = np.zeros((4, 4096))
    w[0] = 0.5 + rng.uniform(0, 0.25, 4096)  # every neuron: w_hat = w[:, i], v < 0
    params = [(w, np.full(4096, -20.0)), None, (rng.normal(size=(4096, 2)), np.zeros(2))]
    x = rng.uniform(0, 1, 4).astype(np.float16)
    ref = dense_model(spec, params, x.astype(np.float64)).insens()
    assert np.abs(ref).max() * 4096 > float(jnp.finfo(jnp.float16).max)  # the sum overflows

    def f(xp):
        h = jax.nn.relu(xp @ jnp.asarray(w, jnp.float16) + jnp.float16(-20.0))
        return h @ jnp.asarray(params[2][0], jnp.float16)

    xj = jnp.asarray(x)
    s = Setup(CASES["float16"], f, xj, None, x.astype(np.float64), None)
    for route in ("dense", "probes"):
        got = slp.insens(f, route=route)(xj)
        assert got.dtype == jnp.float16
        _check(s, got, ref, f"insens route={route}")
    _check(s, slp.insens(f, by_layer=True)(xj).total(), ref, "by_layer total")

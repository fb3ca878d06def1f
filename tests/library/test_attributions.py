"""Attribution methods against independent references and their defining properties.

The reference (`Reference`) writes every layer of a small network as an explicit matrix
in float64 NumPy -- convolutions by applying the convolution to every basis vector,
average pooling as a matrix of 1/k^2, max pooling as NumPy's first arg-max per window --
and runs each LRP rule in relevance space from its textbook formula with explicit
contribution matrices ``a_j w_jk``, and guided backprop / DeconvNet as explicit
backward passes. None of it uses the walker or autodiff.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from experiment_helpers import run_script
from jax import lax

import slp
from slp import attributions as A
from slp.models import MLP, TwoConv, as_single_example

# --- a small network written twice: as a jnp function and as explicit matrices -----------

# ("conv", cout, k, pad) | ("dense", n) | ("relu",) | ("maxpool", 2) | ("avgpool", 2) | ("flatten",)
CONV_SPEC = (
    ("conv", 3, 3, "SAME"), ("relu",), ("maxpool", 2),
    ("conv", 4, 3, "SAME"), ("relu",), ("avgpool", 2),
    ("flatten",), ("dense", 6), ("relu",), ("dense", 3),
)  # fmt: skip
MLP_SPEC = (("flatten",), ("dense", 7), ("relu",), ("dense", 5), ("relu",), ("dense", 3))
IN_SHAPE = (8, 8, 2)


def make_params(spec, in_shape, seed, *, bias: bool = True):
    rng = np.random.default_rng(seed)
    params, shape = [], tuple(in_shape)
    for layer in spec:
        if layer[0] == "conv":
            _, cout, k, _ = layer
            kern = rng.normal(0, 1 / np.sqrt(k * k * shape[-1]), (k, k, shape[-1], cout))
            params.append((kern, rng.normal(0, 0.2, cout) if bias else np.zeros(cout)))
            shape = shape[:2] + (cout,)
        elif layer[0] == "dense":
            n = int(np.prod(shape))
            w = rng.normal(0, 1 / np.sqrt(n), (n, layer[1]))
            params.append((w, rng.normal(0, 0.2, layer[1]) if bias else np.zeros(layer[1])))
            shape = (layer[1],)
        elif layer[0] in ("maxpool", "avgpool"):
            params.append(None)
            shape = (shape[0] // 2, shape[1] // 2, shape[2])
        elif layer[0] == "flatten":
            params.append(None)
            shape = (int(np.prod(shape)),)
        else:
            params.append(None)
    return params


def _conv(h, kern, pad):
    return lax.conv_general_dilated(
        h[None], kern, (1, 1), pad, dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


def jnp_net(spec, params):
    """The network as a plain-jnp per-example function."""

    def f(x):
        h = x
        for layer, p in zip(spec, params, strict=True):
            kind = layer[0]
            if kind == "conv":
                h = _conv(h, jnp.asarray(p[0], x.dtype), layer[3])
                h = h + jnp.asarray(p[1], x.dtype)[None, None, :]
            elif kind == "dense":
                h = h @ jnp.asarray(p[0], x.dtype) + jnp.asarray(p[1], x.dtype)
            elif kind == "relu":
                h = jax.nn.relu(h)
            elif kind == "maxpool":
                h = lax.reduce_window(h, -jnp.inf, lax.max, (2, 2, 1), (2, 2, 1), "VALID")
            elif kind == "avgpool":
                h = lax.reduce_window(h, 0.0, lax.add, (2, 2, 1), (2, 2, 1), "VALID") / 4
            elif kind == "flatten":
                h = h.reshape(-1)
        return h

    return f


def _pool_winners(a_HWC):
    """Flat indices (into a_HWC) of the first maximum of every 2x2 window."""
    h, w, c = a_HWC.shape
    idx = np.arange(a_HWC.size).reshape(a_HWC.shape)
    out = np.zeros((h // 2, w // 2, c), int)
    for i in range(h // 2):
        for j in range(w // 2):
            for ch in range(c):
                vals = a_HWC[2 * i : 2 * i + 2, 2 * j : 2 * j + 2, ch].reshape(-1)
                ids = idx[2 * i : 2 * i + 2, 2 * j : 2 * j + 2, ch].reshape(-1)
                out[i, j, ch] = ids[int(np.argmax(vals))]
    return out.reshape(-1)


class Reference:
    """Forward pass of ``spec`` as explicit float64 matrices, recording every layer."""

    def __init__(self, spec, params, x):
        self.records = []
        a, shape = np.asarray(x, np.float64).reshape(-1), tuple(x.shape)
        for layer, p in zip(spec, params, strict=True):
            kind = layer[0]
            if kind == "conv":
                n = a.size
                basis = jnp.eye(n, dtype=jnp.float64).reshape((n,) + shape)
                cols = jax.vmap(lambda e, k=p[0], pad=layer[3]: _conv(e, k, pad))(basis)
                out_shape = tuple(cols.shape[1:])
                m = np.asarray(cols).reshape(n, -1)
                b = np.broadcast_to(p[1], out_shape).reshape(-1)
                z = a @ m + b
                self.records.append(("affine", a, z, m, b))
                shape = out_shape
            elif kind == "dense":
                m, b = np.asarray(p[0]), np.asarray(p[1])
                z = a @ m + b
                self.records.append(("affine", a, z, m, b))
                shape = (m.shape[1],)
            elif kind == "avgpool":
                h, w, c = shape
                out_shape = (h // 2, w // 2, c)
                m = np.zeros((a.size, int(np.prod(out_shape))))
                for i in range(h):
                    for j in range(w):
                        for ch in range(c):
                            row = (i * w + j) * c + ch
                            m[row, ((i // 2) * (w // 2) + j // 2) * c + ch] = 0.25
                z = a @ m
                self.records.append(("avgpool", a, z, m, None))
                shape = out_shape
            elif kind == "maxpool":
                win = _pool_winners(a.reshape(shape))
                z = a[win]
                self.records.append(("maxpool", a, z, win, None))
                shape = (shape[0] // 2, shape[1] // 2, shape[2])
            elif kind == "relu":
                z = np.maximum(a, 0)
                self.records.append(("relu", a, z, None, None))
            elif kind == "flatten":
                z = a
                shape = (a.size,)
            a = z
        self.output = a
        self.x_shape = tuple(x.shape)

    def lrp(self, rule, *, target, first=None, positive_output=False):
        """Relevance-space LRP: ``rule(a, m, b, R) -> R_in`` for affine layers."""
        y = self.output
        r = np.zeros_like(y)
        r[target] = max(y[target], 0) if positive_output else y[target]
        first_affine = min(i for i, rec in enumerate(self.records) if rec[0] == "affine")
        for i in reversed(range(len(self.records))):
            kind, a, z, m, b = self.records[i]
            if kind == "affine":
                r = (first if first is not None and i == first_affine else rule)(a, m, b, r)
            elif kind == "avgpool":
                contrib = a[:, None] * m
                r = contrib @ _safe_div(r, contrib.sum(0))
            elif kind == "maxpool":
                r_in = np.zeros_like(a)
                np.add.at(r_in, m, r)
                r = r_in
            elif kind == "relu":
                r = r * (a > 0)
        return r.reshape(self.x_shape)

    def backward(self, relu_mode, *, target):
        """Gradient-space backward pass with a modified ReLU (plain, guided, deconvnet)."""
        g = np.zeros_like(self.output)
        g[target] = 1.0
        for kind, a, _, m, _ in reversed(self.records):
            if kind in ("affine", "avgpool"):
                g = m @ g
            elif kind == "maxpool":
                g_in = np.zeros_like(a)
                np.add.at(g_in, m, g)
                g = g_in
            elif kind == "relu":
                if relu_mode == "plain":
                    g = g * (a > 0)
                elif relu_mode == "guided":
                    g = g * (a > 0) * (g > 0)
                else:
                    g = np.maximum(g, 0)
        return g.reshape(self.x_shape)


def _safe_div(r, d):
    out = np.zeros_like(r)
    nz = d != 0
    out[nz] = r[nz] / d[nz]
    return out


def _stab(z, eps):
    return z + np.where(z >= 0, eps, -eps)


def ref_epsilon(eps):
    def rule(a, m, b, r):
        contrib = a[:, None] * m  # a_j w_jk
        return contrib @ _safe_div(r, _stab(contrib.sum(0) + b, eps))

    return rule


def ref_alpha_beta(alpha, beta, bias, stabilizer=0.0):
    def rule(a, m, b, r):
        contrib = a[:, None] * m
        cp, cn = np.maximum(contrib, 0), np.minimum(contrib, 0)
        bp, bn = {
            "split": (np.maximum(b, 0), np.minimum(b, 0)),
            "none": (0 * b, 0 * b),
            "full": (b, b),
        }[bias]
        out = alpha * cp @ _safe_div(r, _stab(cp.sum(0) + bp, stabilizer))
        if beta:
            out = out - beta * cn @ _safe_div(r, _stab(cn.sum(0) + bn, stabilizer))
        return out

    return rule


def ref_zbox(low, high, stabilizer=0.0):
    def rule(x, m, b, r):
        lo = np.broadcast_to(low, x.shape)
        hi = np.broadcast_to(high, x.shape)
        contrib = x[:, None] * m - lo[:, None] * np.maximum(m, 0) - hi[:, None] * np.minimum(m, 0)
        return contrib @ _safe_div(r, _stab(contrib.sum(0), stabilizer))

    return rule


def _f64(params):
    return [None if p is None else tuple(np.asarray(q, np.float64) for q in p) for p in params]


@pytest.fixture
def conv_case(x64):
    params = _f64(make_params(CONV_SPEC, IN_SHAPE, seed=0))
    x = np.random.default_rng(1).uniform(0, 1, IN_SHAPE)
    return jnp_net(CONV_SPEC, params), jnp.asarray(x), Reference(CONV_SPEC, params, x)


@pytest.fixture
def mlp_case(x64):
    params = _f64(make_params(MLP_SPEC, (3, 4), seed=2))
    x = np.random.default_rng(3).normal(0, 1, (3, 4))
    return jnp_net(MLP_SPEC, params), jnp.asarray(x), Reference(MLP_SPEC, params, x)


# --- every LRP rule and ReLU-modified backward pass against the explicit reference ---------

LRP_CASES = [
    ("lrp_epsilon", {"epsilon": 1e-7}, lambda: (ref_epsilon(1e-7), None, False)),
    ("lrp_epsilon", {"epsilon": 0.5}, lambda: (ref_epsilon(0.5), None, False)),
    (
        "lrp_alpha_beta",
        {"alpha": 2.0, "beta": 1.0, "stabilizer": 0.0},
        lambda: (ref_alpha_beta(2, 1, "split"), None, False),
    ),
    (
        "lrp_alpha_beta",
        {"alpha": 1.0, "beta": 0.0, "bias": "none", "stabilizer": 0.0},
        lambda: (ref_alpha_beta(1, 0, "none"), None, False),
    ),
    ("lrp_alpha1_beta0", {}, lambda: (ref_alpha_beta(1, 0, "split", 1e-6), None, False)),
    ("lrp_alpha2_beta1", {}, lambda: (ref_alpha_beta(2, 1, "split", 1e-6), None, False)),
    ("lrp_zplus", {"stabilizer": 0.0}, lambda: (ref_alpha_beta(1, 0, "none"), None, False)),
    ("deep_taylor", {}, lambda: (ref_alpha_beta(1, 0, "full"), None, True)),
    (
        "deep_taylor_bounded",
        {"low": -0.5, "high": 1.5, "stabilizer": 0.0},
        lambda: (ref_alpha_beta(1, 0, "none"), ref_zbox(-0.5, 1.5), True),
    ),
]


@pytest.mark.parametrize("case", ["conv", "mlp"])
@pytest.mark.parametrize("method,options,ref", LRP_CASES, ids=[f"{m}-{o}" for m, o, _ in LRP_CASES])
def test_lrp_matches_reference(case, method, options, ref, request):
    f, x, reference = request.getfixturevalue(f"{case}_case")
    rule, first, positive = ref()
    for target in (None, 1):
        t = int(np.argmax(reference.output)) if target is None else target
        expected = reference.lrp(rule, target=t, first=first, positive_output=positive)
        got = slp.attribute(f, x, method, target=target, **options)
        assert got.shape == x.shape and got.dtype == x.dtype
        scale = np.max(np.abs(expected)) + 1e-300
        np.testing.assert_allclose(got, expected, atol=tol(np.float64) * scale, rtol=0)


@pytest.mark.parametrize("case", ["conv", "mlp"])
@pytest.mark.parametrize("method,mode", [("guided_backprop", "guided"), ("deconvnet", "deconv")])
def test_modified_relu_backward_matches_reference(case, method, mode, request):
    f, x, reference = request.getfixturevalue(f"{case}_case")
    for target in (0, 2):
        got = slp.attribute(f, x, method, target=target)
        np.testing.assert_allclose(
            got, reference.backward(mode, target=target), atol=tol(np.float64)
        )
    # The plain backward pass of the reference is the gradient: the reference itself is right.
    np.testing.assert_allclose(
        slp.attribute(f, x, "gradient", target=1),
        reference.backward("plain", target=1),
        atol=tol(np.float64),
    )


def test_deep_taylor_negative_logit_gives_zero(conv_case):
    f, x, reference = conv_case
    t = int(np.argmin(reference.output))
    assert reference.output[t] < 0
    for method in ("deep_taylor", "deep_taylor_bounded"):
        np.testing.assert_array_equal(slp.attribute(f, x, method, target=t), 0)


# --- properties ----------------------------------------------------------------------------


def _bias_free(spec, in_shape, seed):
    return jnp_net(spec, _f64(make_params(spec, in_shape, seed, bias=False)))


@pytest.mark.parametrize("spec,shape", [(CONV_SPEC, IN_SHAPE), (MLP_SPEC, (3, 4))])
def test_lrp0_is_gradient_times_input_without_bias(x64, spec, shape):
    f = _bias_free(spec, shape, seed=4)
    x = jax.random.normal(jax.random.PRNGKey(5), shape, jnp.float64)
    gxi = A.gradient_x_input(f, x)
    np.testing.assert_allclose(A.lrp_epsilon(f, x, epsilon=0.0), gxi, atol=tol(np.float64))
    # epsilon -> 0 approaches it continuously
    err = [np.max(np.abs(A.lrp_epsilon(f, x, epsilon=e) - gxi)) for e in (1e-2, 1e-4, 1e-6)]
    assert err[0] > err[1] > err[2] and err[2] < 1e-5


@pytest.mark.parametrize("spec,shape", [(CONV_SPEC, IN_SHAPE), (MLP_SPEC, (3, 4))])
def test_conservation_without_bias(x64, spec, shape):
    f = _bias_free(spec, shape, seed=6)
    x = jax.random.uniform(jax.random.PRNGKey(7), shape, jnp.float64)
    y = f(x)
    t = int(jnp.argmax(y))
    atol = tol(np.float64)
    np.testing.assert_allclose(jnp.sum(A.lrp_zplus(f, x, stabilizer=0.0)), y[t], atol=atol)
    np.testing.assert_allclose(jnp.sum(A.deep_taylor(f, x)), max(y[t], 0), atol=atol)
    np.testing.assert_allclose(
        jnp.sum(A.deep_taylor_bounded(f, x, stabilizer=0.0)), max(y[t], 0), atol=atol
    )
    # LRP-0 and gradient x input: f is positively homogeneous, so sum = f(x)
    np.testing.assert_allclose(jnp.sum(A.lrp_epsilon(f, x, epsilon=0.0)), y[t], atol=atol)
    np.testing.assert_allclose(jnp.sum(A.gradient_x_input(f, x)), y[t], atol=atol)


def test_bias_absorbs_relevance(conv_case):
    """With biases, z+ with the bias kept is not conservative; ignoring it is per layer."""
    f, x, reference = conv_case
    t = int(np.argmax(reference.output))
    kept = float(jnp.sum(A.lrp_alpha_beta(f, x, bias="split", stabilizer=0.0)))
    assert abs(kept - reference.output[t]) > 1e-3


def test_gradient_is_output_switched_weight_vector(x64):
    f = jnp_net(CONV_SPEC, _f64(make_params(CONV_SPEC, IN_SHAPE, seed=8)))
    x = jax.random.normal(jax.random.PRNGKey(9), IN_SHAPE, jnp.float64)
    w_hat = slp.switched_projections(f)(x)[-1].weights
    for t in range(3):
        np.testing.assert_allclose(A.gradient(f, x, target=t), w_hat[t], atol=tol(np.float64))


@pytest.mark.slow
def test_integrated_gradients_completeness(conv_case):
    f, x, reference = conv_case
    y, y0 = f(x), f(jnp.zeros_like(x))
    t = 1
    ig = A.integrated_gradients(f, x, target=t, steps=512, quadrature="riemann_middle")
    assert abs(float(jnp.sum(ig)) - float(y[t] - y0[t])) < 2e-3 * max(1.0, abs(y[t]))
    # iNNvestigate's default (64 points, 0 and 1 included) is close, not exact
    ig = A.integrated_gradients(f, x, target=t)
    assert abs(float(jnp.sum(ig)) - float(y[t] - y0[t])) < 5e-2 * max(1.0, abs(y[t]))
    # a baseline other than 0
    base = jnp.full_like(x, 0.3)
    ig = A.integrated_gradients(
        f, x, baseline=base, target=0, steps=512, quadrature="gausslegendre"
    )
    assert abs(float(jnp.sum(ig)) - float(y[0] - f(base)[0])) < 2e-3 * max(1.0, abs(y[0]))


@pytest.mark.slow
def test_integrated_gradients_exact_on_a_ray(x64):
    """Without bias the state is constant on the ray from 0, so IG = gradient x input."""
    f = _bias_free(CONV_SPEC, IN_SHAPE, seed=10)
    x = jax.random.normal(jax.random.PRNGKey(11), IN_SHAPE, jnp.float64)
    gxi = A.gradient_x_input(f, x)
    for quadrature in ("riemann_middle", "gausslegendre"):
        ig = A.integrated_gradients(f, x, steps=5, quadrature=quadrature)
        np.testing.assert_allclose(ig, gxi, atol=tol(np.float64))
    # the chunked evaluation gives the same
    ig = A.integrated_gradients(f, x, steps=5, quadrature="riemann_middle", batch_size=2)
    np.testing.assert_allclose(ig, gxi, atol=tol(np.float64))


def test_path_points():
    a, w = A.gradients.path_points(4, "linspace")
    np.testing.assert_allclose(a, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_allclose(w, [0.25] * 4)
    a, w = A.gradients.path_points(3, "riemann_trapezoid")
    np.testing.assert_allclose(a, [0, 0.5, 1])
    np.testing.assert_allclose(w, [0.25, 0.5, 0.25])
    a, w = A.gradients.path_points(4, "riemann_left")
    np.testing.assert_allclose(a, [0, 0.25, 0.5, 0.75])
    a, w = A.gradients.path_points(2, "riemann_middle")
    np.testing.assert_allclose(a, [0.25, 0.75])
    # Gauss-Legendre with 3 points integrates a degree-5 polynomial exactly
    a, w = A.gradients.path_points(3, "gausslegendre")
    np.testing.assert_allclose(np.sum(w * a**5), 1 / 6)
    with pytest.raises(ValueError, match="unknown quadrature"):
        A.gradients.path_points(4, "simpson")
    with pytest.raises(ValueError, match="steps"):
        A.gradients.path_points(0, "riemann_left")


@pytest.mark.slow
def test_smoothgrad():
    # On a ReLU at its kink the average gradient is the probability of being active.
    def f(x):
        return jnp.stack([jax.nn.relu(x[0]), jnp.zeros(())])

    x = jnp.array([0.0, 1.0])  # value range 1: sigma = noise_level
    sg = A.smoothgrad(f, x, target=0, key=jax.random.PRNGKey(0), samples=4000, noise_level=0.5)
    assert abs(float(sg[0]) - 0.5) < 0.05 and float(sg[1]) == 0.0
    # Far from the kink (3 sigma away) it is nearly the gradient.
    x = jnp.array([1.5, 0.0])
    sg = A.smoothgrad(f, x, target=0, key=jax.random.PRNGKey(1), samples=4000, noise_level=0.1)
    assert float(sg[0]) > 0.99
    # Same key, same map; other key, other map; no noise is the gradient.
    g = TwoConv(num_classes=3, features=(2, 3), hidden=5)
    xs = jax.random.normal(jax.random.PRNGKey(2), (8, 8, 1))
    fm = as_single_example(g, g.init(jax.random.PRNGKey(3), xs[None]))
    sg = jax.jit(lambda x, k, level: A.smoothgrad(fm, x, key=k, noise_level=level))
    k = jax.random.PRNGKey(4)
    np.testing.assert_array_equal(sg(xs, k, 0.15), sg(xs, k, 0.15))
    assert not np.allclose(sg(xs, k, 0.15), sg(xs, k + 1, 0.15))
    np.testing.assert_allclose(sg(xs, k, 0.0), A.gradient(fm, xs), atol=1e-6)
    with pytest.raises(ValueError, match="PRNG key"):
        A.smoothgrad(fm, xs)


# --- zB bounds travel with the input through linear operations ---------------------------


def test_zbox_bounds_follow_normalisation(x64):
    """A network that normalises its input inside gets the same map as one fed normalised data."""
    params = _f64(make_params(CONV_SPEC, IN_SHAPE, seed=12))
    g = jnp_net(CONV_SPEC, params)
    mean, std = 0.4, 0.3

    def f(x):
        return g((x - mean) / std)

    x = jax.random.uniform(jax.random.PRNGKey(13), IN_SHAPE, jnp.float64)
    inner = A.deep_taylor_bounded(g, (x - mean) / std, low=-mean / std, high=(1 - mean) / std)
    outer = A.deep_taylor_bounded(f, x, low=0.0, high=1.0)
    np.testing.assert_allclose(outer, inner, atol=tol(np.float64))


def test_first_rule_needs_a_layer_before_relu():
    def f(x):
        return jax.nn.relu(x) @ np.ones((4, 2), np.float32)

    with pytest.raises(ValueError, match="before any ReLU"):
        A.deep_taylor_bounded(f, jnp.ones(4))


# --- flax and plain jnp, vmap, jit -------------------------------------------------------

ALL_OPTIONS = {"smoothgrad": {"key": jax.random.PRNGKey(0), "samples": 4}}


def _flax_and_jnp():
    model = TwoConv(num_classes=3, features=(2, 3), hidden=5)
    x = jax.random.uniform(jax.random.PRNGKey(0), (3, 8, 8, 1))
    params = model.init(jax.random.PRNGKey(1), x[:1])
    # non-zero biases so that every bias path is exercised
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: p + 0.1 if "bias" in jax.tree_util.keystr(path) else p, params
    )
    p = params["params"]
    spec = (
        ("conv", 2, 5, "SAME"), ("relu",), ("maxpool", 2),
        ("conv", 3, 5, "SAME"), ("relu",), ("maxpool", 2),
        ("flatten",), ("dense", 5), ("relu",), ("dense", 3),
    )  # fmt: skip
    # flax's layers in the order of the spec's conv and dense layers
    layers = iter(
        (p[n]["kernel"], p[n]["bias"]) for n in ("Conv_0", "Conv_1", "Dense_0", "Dense_1")
    )
    plist = [next(layers) if layer[0] in ("conv", "dense") else None for layer in spec]
    return as_single_example(model, params), jnp_net(spec, plist), x


@pytest.mark.parametrize(
    "method",
    [
        pytest.param(m, marks=pytest.mark.slow)
        if m in ("integrated_gradients", "smoothgrad", "lrp_alpha2_beta1")
        else m
        for m in slp.available_methods()
        if m != "insens"
    ],
)
def test_flax_jnp_vmap_jit(method):
    f_flax, f_jnp, xs = _flax_and_jnp()
    opts = ALL_OPTIONS.get(method, {})
    ts = (jnp.argmax(jax.vmap(f_flax)(xs), axis=1) + 1) % 3  # not the default target

    def attr(f, x, t=None):
        return slp.attribute(f, x, method, target=t, **opts)

    @jax.jit
    def batched(xs, ts):
        return (
            jax.vmap(lambda x: attr(f_flax, x))(xs),
            jax.vmap(lambda x, t: attr(f_flax, x, t))(xs, ts),
            jax.vmap(lambda x: attr(f_jnp, x))(xs),
        )

    default, targeted, plain = batched(xs, ts)
    # one by one, not jitted
    one_default = np.stack([attr(f_flax, x) for x in xs])
    one_targeted = np.stack([attr(f_flax, x, int(t)) for x, t in zip(xs, ts, strict=True)])
    for got, want in ((default, one_default), (targeted, one_targeted), (plain, one_default)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_mlp_flax_model():
    model = MLP(hidden=(6, 5), num_classes=3)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3))
    f = as_single_example(model, model.init(jax.random.PRNGKey(1), x[None]))
    methods = slp.available_methods()
    maps = jax.jit(lambda x: [slp.attribute(f, x, m, **ALL_OPTIONS.get(m, {})) for m in methods])(x)
    for method, r in zip(methods, maps, strict=True):
        assert r.shape == x.shape and bool(jnp.all(jnp.isfinite(r))), method
    # an MLP with zero biases (flax's initialisation): LRP-0 is gradient x input
    np.testing.assert_allclose(
        maps[methods.index("lrp_epsilon")], maps[methods.index("gradient_x_input")], atol=1e-5
    )


def test_no_recompile_on_second_call():
    # Counted by traces, not by the jit's C++ cache: whether a call takes that cache's fast
    # path depends on what ran before in the process (the test failed in some orders).
    f, _, xs = _flax_and_jnp()
    traces = []

    def one(x):
        traces.append(1)  # runs only while the function is traced
        return A.lrp_epsilon(f, x)

    fn = jax.jit(jax.vmap(one))
    fn(xs)
    second = fn(xs + 1.0)
    assert len(traces) == 1
    np.testing.assert_allclose(second, jax.vmap(one)(xs + 1.0), rtol=1e-5, atol=1e-6)


# --- errors --------------------------------------------------------------------------------


def test_errors_name_the_problem():
    f, _, xs = _flax_and_jnp()
    with pytest.raises(ValueError, match="unknown attribution method 'lrp_magic'.*lrp_epsilon"):
        slp.attribute(f, xs[0], "lrp_magic")
    with pytest.raises(TypeError, match="unknown option.*'eps'.*epsilon"):
        slp.attribute(f, xs[0], "lrp_epsilon", eps=0.1)
    with pytest.raises(ValueError, match="alpha - beta = 1"):
        A.lrp_alpha_beta(f, xs[0], alpha=2.0, beta=0.5)
    with pytest.raises(ValueError, match="out of range"):
        A.lrp_epsilon(f, xs[0], target=3)
    with pytest.raises(ValueError, match="out of range"):
        A.guided_backprop(f, xs[0], target=-1)
    with pytest.raises(ValueError, match="vector of logits"):
        A.lrp_epsilon(lambda x: x.T, jnp.ones((2, 2)))
    # the two usual causes get their fix: a batch axis of one left in, a scalar score
    with pytest.raises(ValueError, match=r"got \(1, 3\) \(a batch axis .*f\(x\)\[0\]"):
        slp.attribute(lambda x: f(x)[None], xs[0], "gradient")
    with pytest.raises(ValueError, match=r"got \(1, 3\) \(a batch axis"):
        A.lrp_epsilon(lambda x: f(x)[None], xs[0])
    with pytest.raises(ValueError, match=r"got \(\) \(a scalar output.*f\(x\)\[None\]"):
        slp.attribute(lambda x: f(x)[0], xs[0], "integrated_gradients")
    with pytest.raises(ValueError, match="at least one dense or convolution"):
        A.lrp_epsilon(lambda x: jax.nn.relu(x), jnp.ones(3))
    with pytest.raises(ValueError, match="unknown precision 'fast'"):
        slp.attribute(f, xs[0], "insens", precision="fast")
    # the arguments in another order (Quantus and Captum put the method or the input first)
    with pytest.raises(TypeError, match=r"takes the network function first; got 'gradient'"):
        slp.attribute("gradient", f, xs[0])
    with pytest.raises(TypeError, match="takes the network function first; got a ArrayImpl"):
        slp.attribute(xs[0], f, "gradient")
    with pytest.raises(TypeError, match="named by a string.*got function"):
        slp.attributions.get_method(f)
    with pytest.raises(TypeError, match="option steps takes a number .*64.* got the string '32'"):
        slp.attribute(f, xs[0], "integrated_gradients", steps="32")
    with pytest.raises(TypeError, match="option epsilon takes a number"):
        A.lrp_epsilon(f, xs[0], epsilon="1e-6")
    with pytest.raises(ValueError, match=r"baseline must be a scalar or .* got shape \(3,\)"):
        slp.attribute(f, xs[0], "integrated_gradients", baseline=jnp.zeros(3))
    with pytest.raises(TypeError, match=r"smoothgrad: key must be a PRNG key"):
        slp.attribute(f, xs[0], "smoothgrad", key=7)


@pytest.mark.slow
def test_insens_method_passes_precision():
    """The registered method takes `slp.insens`'s precision (float32 maps, same map)."""
    f, _, xs = _flax_and_jnp()
    ref = np.asarray(slp.insens(f)(xs[0]))
    got = np.asarray(slp.attribute(f, xs[0], "insens", precision="bf16x6"))
    assert np.abs(ref).max() > 0
    assert np.max(np.abs(got - ref)) <= 1e-5 * np.abs(ref).max()


def test_unsupported_network_is_named():
    class Tanh(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(2)(jnp.tanh(nn.Dense(3)(x)))

    m = Tanh()
    x = jnp.ones((1, 4))
    f = as_single_example(m, m.init(jax.random.PRNGKey(0), x))
    for method in ("lrp_epsilon", "guided_backprop"):
        with pytest.raises(slp.UnsupportedOperationError, match="tanh"):
            slp.attribute(f, x[0], method)


# --- the benchmark script -----------------------------------------------------------------


@pytest.mark.slow
def test_bench_script_smoke(tmp_path):
    argv = ["--tiny", "--batch", "2", "--repeats", "1", "--no-torch", "--out", str(tmp_path)]
    bench, result, written = run_script(
        "bench_attributions.py",
        argv + ["--methods", "gradient", "lrp_epsilon", "smoothgrad"],
        tmp_path / "bench_attributions.json",
    )
    assert set(written["library"]) == {"gradient", "lrp_epsilon", "smoothgrad"}
    for res in result["library"].values():
        assert res["images_per_s"] > 0 and len(res["runs_s"]) == 1
    with pytest.raises(ValueError, match="unknown methods"):
        bench.main(argv + ["--methods", "magic"])


def test_affine_layers_of_twoconv():
    """Four layers, each with its bias; all but the first read ReLU outputs."""
    model = TwoConv(num_classes=3, features=(2, 3), hidden=5)
    x = jnp.ones((8, 8, 1))
    f = as_single_example(model, model.init(jax.random.PRNGKey(0), x[None]))
    program = slp.network.trace(f, x)
    layers = A.relevance.affine_layers(program)
    names = [program.eqns[layer.weight_eqn].primitive.name for layer in layers]
    assert names == ["conv_general_dilated"] * 2 + ["dot_general"] * 2
    assert all(layer.bias_eqn > layer.weight_eqn for layer in layers)
    assert [layer.nonnegative_input for layer in layers] == [False, True, True, True]
    # a layer whose output is used twice has no bias of its own
    w = np.ones((4, 3), np.float32)
    used_twice = slp.network.trace(lambda v: (lambda h: (h + 1.0) * 2 + h)(v @ w), jnp.ones(4))
    assert [layer.bias_eqn for layer in A.relevance.affine_layers(used_twice)] == [-1]
    two = slp.network.trace(lambda v: (v @ w + 1.0) + (v @ w), jnp.ones(4))
    assert [layer.bias_eqn >= 0 for layer in A.relevance.affine_layers(two)] == [True, False]


def test_weights_traced_by_outer_jit():
    """The walker-based methods work when the weights themselves are tracers."""
    model = TwoConv(num_classes=3, features=(2, 3), hidden=5)
    x = jax.random.uniform(jax.random.PRNGKey(0), (8, 8, 1))
    params = model.init(jax.random.PRNGKey(1), x[None])
    methods = ("lrp_epsilon", "lrp_alpha2_beta1", "deep_taylor_bounded", "guided_backprop")

    @jax.jit
    def run(p, x):
        return [slp.attribute(as_single_example(model, p), x, m) for m in methods]

    for got, m in zip(run(params, x), methods, strict=True):
        want = slp.attribute(as_single_example(model, params), x, m)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_registered_insens_takes_the_estimator_options(mlp_case):
    """slp.attribute(..., "insens", probes=k, key=key) is slp.insens's estimate for that key."""
    f, x, _ = mlp_case
    xs = x[None]
    key = jax.random.key(7)
    got = slp.attribute(f, xs[0], "insens", probes=16, key=key)
    want = slp.insens(f, probes=16, key=key)(xs[0], key)
    np.testing.assert_array_equal(got, want)
    assert not np.array_equal(got, slp.attribute(f, xs[0], "insens"))
    with pytest.raises(ValueError, match="explicit PRNG key"):
        slp.attribute(f, xs[0], "insens", probes=16)

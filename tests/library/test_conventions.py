"""The ``convention=`` presets of `slp.attribute`: iNNvestigate's rules written out in NumPy.

iNNvestigate (1.0.x, the toolbox behind the paper's baselines) needs TensorFlow <= 2.14
and numpy < 2, so this test writes its published rule formulas out instead, on a ReLU MLP
with biases of both signs and an input of both signs (which exercises the sign split of
the alpha-beta rules on the first layer). The Zennit and Captum presets are checked against
those packages in tests/library/test_crosscheck.py.

iNNvestigate's conventions, as its analyzers compute them:
* LRP and Deep Taylor start from the target's output value (Deep Taylor: max(y_t, 0));
  guided backprop and DeconvNet start their reverse pass from it too;
* epsilon rule: ``R_j = sum_k a_j w_jk / (z_k + eps * s(z_k)) R_k``, ``s(z) = 1 if z >= 0
  else -1``, bias inside ``z``, eps = 1e-7;
* alpha-beta with bias: the positive copy of a layer keeps (W+, b+) and reads the positive
  inputs, the negative copy keeps (W-, b-) and reads the negative inputs, and their outputs
  are added, so the "positive" denominator is ``sum_j (a_j w_jk)^+ + b_k`` and the negative
  one ``sum_j (a_j w_jk)^- + b_k``; a zero denominator passes nothing (safe division);
* z+ is alpha = 1, beta = 0 with the bias ignored; Deep Taylor is alpha1-beta0 with bias on
  every layer; bounded Deep Taylor uses the zB rule (no bias) on the first layer;
* integrated gradients: 64 points ``alpha = k / 64``, ``k = 0 .. 63`` (left Riemann sum).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import slp
from slp.attributions.conventions import CONVENTIONS


@pytest.fixture(scope="module")
def mlp():
    rng = np.random.default_rng(0)
    sizes = (7, 9, 6, 4)
    layers = [
        (rng.normal(0, 0.6, (a, b)), rng.normal(0, 0.3, b))
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]
    x = rng.normal(0, 1, sizes[0])
    w, b = layers[-1]
    layers[-1] = (w, b + 1.5)  # positive logits to compare (Deep Taylor starts at max(y_t, 0))

    def f(x):
        h = x
        for i, (w, b) in enumerate(layers):
            h = h @ jnp.asarray(w) + jnp.asarray(b)
            if i < len(layers) - 1:
                h = jax.nn.relu(h)
        return h

    return layers, x, f


def _forward(layers, x):
    """Inputs ``a`` and pre-activations ``z`` of every layer."""
    acts, zs, h = [], [], x
    for i, (w, b) in enumerate(layers):
        acts.append(h)
        z = h @ w + b
        zs.append(z)
        h = np.maximum(z, 0) if i < len(layers) - 1 else z
    return acts, zs, h


def _safe(r, d):
    return np.where(d != 0, r / np.where(d != 0, d, 1), 0.0)


def _pos(v):
    return np.maximum(v, 0)


def _neg(v):
    return np.minimum(v, 0)


def _alpha_beta(a, w, b, r, alpha, beta, bias):
    bb = b if bias else np.zeros_like(b)
    zp = _pos(a) @ _pos(w) + _neg(a) @ _neg(w) + bb
    zn = _pos(a) @ _neg(w) + _neg(a) @ _pos(w) + bb
    cp, cn = _safe(r, zp), _safe(r, zn)
    out = alpha * (_pos(a) * (_pos(w) @ cp) + _neg(a) * (_neg(w) @ cp))
    if beta:
        out = out - beta * (_pos(a) * (_neg(w) @ cn) + _neg(a) * (_pos(w) @ cn))
    return out


def _epsilon(a, w, b, r, eps):
    z = a @ w + b
    return a * (w @ (r / (z + eps * np.where(z >= 0, 1.0, -1.0))))


def _zbox(x, w, r, low, high):
    zb = x @ w - low @ _pos(w) - high @ _neg(w)
    c = _safe(r, zb)
    return x * (w @ c) - low * (_pos(w) @ c) - high * (_neg(w) @ c)


def _lrp(layers, x, t, rule, start, first=None):
    acts, zs, y = _forward(layers, x)
    r = np.zeros_like(y)
    r[t] = {"logit": y[t], "positive_logit": max(y[t], 0.0)}[start]
    for i in reversed(range(len(layers))):
        w, b = layers[i]
        if i < len(layers) - 1:
            r = r * (zs[i] > 0)  # relevance through a ReLU: to active neurons
        r = first(acts[i], w, b, r) if (i == 0 and first is not None) else rule(acts[i], w, b, r)
    return r


def _backward(layers, x, t, start_value, relu_back):
    """A reverse pass from ``start_value`` on the target through modified ReLUs."""
    _, zs, y = _forward(layers, x)
    g = np.zeros_like(y)
    g[t] = start_value(y[t])
    for i in reversed(range(len(layers))):
        w, _ = layers[i]
        if i < len(layers) - 1:
            g = relu_back(zs[i], g)
        g = w @ g
    return g


def _grad(layers, x, t):
    return _backward(layers, x, t, lambda _: 1.0, lambda z, g: g * (z > 0))


EPS = 1e-7
INNVESTIGATE = {
    "gradient": lambda L, x, t: _grad(L, x, t),
    "gradient_x_input": lambda L, x, t: x * _grad(L, x, t),
    "integrated_gradients": lambda L, x, t: (
        x * np.mean([_grad(L, k / 64 * x, t) for k in range(64)], axis=0)
    ),
    "guided_backprop": lambda L, x, t: _backward(
        L, x, t, lambda y: y, lambda z, g: g * (z > 0) * (g > 0)
    ),
    "deconvnet": lambda L, x, t: _backward(L, x, t, lambda y: y, lambda z, g: _pos(g)),
    "lrp_epsilon": lambda L, x, t: _lrp(
        L, x, t, lambda a, w, b, r: _epsilon(a, w, b, r, EPS), "logit"
    ),
    "lrp_alpha_beta": lambda L, x, t: _lrp(
        L, x, t, lambda a, w, b, r: _alpha_beta(a, w, b, r, 1, 0, True), "logit"
    ),
    "lrp_alpha1_beta0": lambda L, x, t: _lrp(
        L, x, t, lambda a, w, b, r: _alpha_beta(a, w, b, r, 1, 0, True), "logit"
    ),
    "lrp_alpha2_beta1": lambda L, x, t: _lrp(
        L, x, t, lambda a, w, b, r: _alpha_beta(a, w, b, r, 2, 1, True), "logit"
    ),
    "lrp_zplus": lambda L, x, t: _lrp(
        L, x, t, lambda a, w, b, r: _alpha_beta(a, w, b, r, 1, 0, False), "logit"
    ),
    "deep_taylor": lambda L, x, t: _lrp(
        L, x, t, lambda a, w, b, r: _alpha_beta(a, w, b, r, 1, 0, True), "positive_logit"
    ),
    "deep_taylor_bounded": lambda L, x, t: _lrp(
        L,
        x,
        t,
        lambda a, w, b, r: _alpha_beta(a, w, b, r, 1, 0, True),
        "positive_logit",
        first=lambda a, w, b, r: _zbox(a, w, r, np.full_like(a, -3.0), np.full_like(a, 3.0)),
    ),
}
BOUNDS = {"deep_taylor_bounded": {"low": -3.0, "high": 3.0}}


def test_every_deterministic_innvestigate_method_is_written_out():
    assert set(INNVESTIGATE) == set(CONVENTIONS["innvestigate"]) - {"smoothgrad"}


@pytest.mark.parametrize("method", list(INNVESTIGATE))
def test_innvestigate_convention(x64, mlp, method):
    layers, x, f = mlp
    y = _forward(layers, x)[2]
    assert np.all(y[np.argsort(y)[-2:]] > 0), "the compared logits should be positive"
    for t in (int(np.argmax(y)), int(np.argsort(y)[-2])):
        want = INNVESTIGATE[method](layers, x, t)
        assert np.max(np.abs(want)) > 0
        got = slp.attribute(
            f, jnp.asarray(x), method, target=t, convention="innvestigate", **BOUNDS.get(method, {})
        )
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-12)


def test_innvestigate_differs_from_the_defaults_where_it_should(x64, mlp):
    """The preset matters: with this library's defaults the same formulas are not met."""
    layers, x, f = mlp
    t = int(np.argmax(_forward(layers, x)[2]))
    for method in ("guided_backprop", "lrp_alpha2_beta1", "deep_taylor_bounded"):
        want = INNVESTIGATE[method](layers, x, t)
        opts = BOUNDS.get(method, {})
        got = np.asarray(slp.attribute(f, jnp.asarray(x), method, target=t, **opts))
        assert np.max(np.abs(got - want)) > 1e-6 * np.max(np.abs(want)), method


def test_convention_errors(x64, mlp):
    _, x, f = mlp
    with pytest.raises(ValueError, match="zennit has no method matching 'deep_taylor'"):
        slp.attribute(f, jnp.asarray(x), "deep_taylor", convention="zennit")
    with pytest.raises(ValueError, match="unknown convention 'lime'"):
        slp.attribute(f, jnp.asarray(x), "gradient", convention="lime")
    with pytest.raises(TypeError, match="bias is a string"):
        slp.attribute(f, jnp.asarray(x), "lrp_alpha_beta", bias=True)
    # explicit options win over the preset
    a = slp.attribute(f, jnp.asarray(x), "lrp_epsilon", convention="zennit", start="logit")
    b = slp.attribute(f, jnp.asarray(x), "lrp_epsilon", epsilon=1e-6)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # Insens is this library's own method: every convention leaves it as it is
    np.testing.assert_array_equal(
        slp.attribute(f, jnp.asarray(x), "insens", convention="captum"),
        slp.attribute(f, jnp.asarray(x), "insens"),
    )

"""Operations beyond dense/conv/ReLU/pool, written the way users write them.

Linear ones (``jnp.stack``, ``jnp.split``, ``jnp.tile``, ``jnp.unstack``, ``.at[].set``,
``.at[].add``, ``lax.scan``, ``lax.fori_loop``, ``flax.linen.scan``) are followed on every
route; everything else is refused with an error in the user's terms.

References: per network, the same maths written with a Python loop and concatenations
(``alt``), differentiated by ``jax.jacfwd`` with the pre-activations captured from its own
ReLU calls -- away from kinks the switched weight vectors (Theorem 1: the bias is
``v - x . w_hat``), and Insens from them by `reference.Reference.insens`. Nothing of slp is
used to build the reference. The LRP rules are compared with the same rules on ``alt``.
"""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from jax import lax
from reference import Reference

import slp
from slp._src import network as net

N = 6  # input size of the dense networks
X_CONV = (6, 6, 2)  # input shape of the convolutional one


def _normal(seed, *shape, scale=None):
    """Normal weights as a JAX array of the default float type (float64 under ``x64``)."""
    rng = np.random.default_rng(seed)
    scale = 1 / np.sqrt(shape[-2]) if scale is None else scale
    return jnp.asarray(rng.normal(0, scale, shape))


def _conv(h, k):
    return lax.conv_general_dilated(
        h[None], k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )[0]


# Each network: make(relu, alt) -> f; ``alt`` spells the same maths without the operation
# under test. Weights are created inside (under x64).


def stack(relu, alt):
    w1, w2, wo = _normal(1, N, 5), _normal(2, N, 5), _normal(3, 10, 3)

    def f(x):
        a, b = relu(x @ w1 + 0.1), relu(x @ w2 - 0.1)
        s = jnp.concatenate([a[None], b[None]]) if alt else jnp.stack([a, b])
        return s.reshape(-1) @ wo

    return f


def split(relu, alt):
    w1, wo = _normal(4, N, 6), _normal(5, 6, 3)

    def f(x):
        h = x @ w1
        a, b = (h[:3], h[3:]) if alt else jnp.split(h, 2)
        return jnp.concatenate([relu(a + 0.2), relu(2 * b)]) @ wo

    return f


def tile(relu, alt):
    w1, w2, wo = _normal(6, N, 4), _normal(7, 8, 5), _normal(8, 5, 3)

    def f(x):
        h = relu(x @ w1)
        t = jnp.concatenate([h, h]) if alt else jnp.tile(h, 2)
        return relu(t @ w2 - 0.3) @ wo

    return f


def unstack(relu, alt):
    w1, wo = _normal(9, N, 8), _normal(10, 4, 3)

    def f(x):
        h = (x @ w1).reshape(2, 4)
        rows = [h[0], h[1]] if alt else jnp.unstack(h)
        return (relu(rows[0]) + relu(rows[1] - 0.1)) @ wo

    return f


def scatter_set(relu, alt):
    w1, w2, wo = _normal(11, N, 4), _normal(12, 8, 5), _normal(44, 5, 3)

    def f(x):
        h = relu(x @ w1)
        if alt:
            z = jnp.concatenate([h[:, None], jnp.zeros((4, 1))], 1).reshape(-1)
            z = jnp.concatenate([z[:3], jnp.ones(1), z[4:]])
        else:
            z = jnp.zeros(8).at[::2].set(h).at[3].set(1.0)
        return relu(z @ w2 - 0.2) @ wo

    return f


def scatter_add(relu, alt):
    w1, wo = _normal(13, N, 5), _normal(14, 5, 3)
    idx = np.array([0, 2, 2])
    m = np.zeros((5, 3))
    m[idx, np.arange(3)] = 1  # repeated index 2: both updates are added

    def f(x):
        h = x @ w1
        h = h + jnp.asarray(m) @ x[:3] if alt else h.at[idx].add(x[:3])
        return relu(h) @ wo

    return f


def scan(relu, alt):
    ws, bs, wo = _normal(15, 3, N, N), _normal(16, 3, N, scale=0.3), _normal(17, 3 * N, 3)

    def layer(h, wb):
        return relu(h @ wb[0] + wb[1]), h

    def f(x):
        if alt:
            h, seen = x, []
            for i in range(3):
                h, y = layer(h, (ws[i], bs[i]))
                seen.append(y)
            hs = jnp.concatenate([s[None] for s in seen])
        else:
            h, hs = lax.scan(layer, x, (ws, bs))
        return hs.reshape(-1) @ wo + h[:3]

    return f


def reverse_scan(relu, alt):
    ws, wo = _normal(18, 3, N, N), _normal(19, N, 3)

    def f(x):
        if alt:
            h = x
            for i in (2, 1, 0):
                h = relu(h @ ws[i] - 0.1)
        else:
            h, _ = lax.scan(lambda h, w: (relu(h @ w - 0.1), None), x, ws, reverse=True)
        return h @ wo

    return f


def fori_loop(relu, alt):
    ws, wo = _normal(20, 4, N, N), _normal(21, N, 3)

    def f(x):
        if alt:
            h = x
            for i in range(4):
                h = relu(h @ ws[i] + 0.1)
            return h @ wo
        return lax.fori_loop(0, 4, lambda i, h: relu(h @ ws[i] + 0.1), x) @ wo

    return f


class _Block(nn.Module):
    act: object

    @nn.compact
    def __call__(self, h, _):
        return self.act(nn.Dense(N)(h)), None


class _Scanned(nn.Module):
    act: object

    @nn.compact
    def __call__(self, x):
        blocks = nn.scan(_Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        h, _ = blocks(self.act)(x, None)
        return nn.Dense(3)(h)


def linen_scan(relu, alt):
    model = _Scanned(relu)
    params = model.init(jax.random.key(0), jnp.ones(N, jnp.float64))
    params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)["params"]

    def f(x):
        if not alt:
            return model.apply({"params": params}, x)
        h, blocks = x, next(v for k, v in params.items() if k.startswith("Scan"))["Dense_0"]
        for i in range(3):
            h = relu(h @ blocks["kernel"][i] + blocks["bias"][i])
        return h @ params["Dense_0"]["kernel"] + params["Dense_0"]["bias"]

    return f


def conv_channels(relu, alt):
    k1, k2 = _normal(22, 3, 3, 2, 4, scale=0.4), _normal(23, 3, 3, 2, 3, scale=0.4)
    mix, dense = _normal(24, 3, 2, 6), _normal(25, 6 * 6 * 6, 3, scale=0.1)

    def f(x):
        h = relu(_conv(x, k1) - 0.1)
        a, b = (h[..., :2], h[..., 2:]) if alt else jnp.split(h, 2, axis=-1)
        pair = [_conv(a, k2), _conv(b, k2)]
        s = jnp.concatenate([p[..., None] for p in pair], -1) if alt else jnp.stack(pair, -1)
        h = relu(jnp.tensordot(s, mix, axes=2))
        h = jnp.concatenate([h[..., :3]] * 2, -1) if alt else jnp.tile(h[..., :3], (1, 1, 2))
        return relu(h.reshape(-1) @ dense) @ jnp.eye(3)

    return f


LINEAR = {
    f.__name__: f
    for f in (
        stack, split, tile, unstack, scatter_set, scatter_add, scan, reverse_scan,
        fori_loop, linen_scan, conv_channels,
    )
}  # fmt: skip


def _reference(make, x) -> Reference:
    """Switched projections of ``make(.., alt=True)`` from ``jax.jacfwd`` of the
    pre-activations that its ReLU calls receive (module docstring)."""
    captured = []

    def recording_relu(z):
        captured.append(z)
        return jax.nn.relu(z)

    f = make(recording_relu, True)

    def pre(xp):
        captured.clear()
        out = f(xp)
        return [z.reshape(-1) for z in captured] + [out.reshape(-1)]

    jac, acts = jax.jacfwd(pre)(x), pre(x)
    d = x.size
    weights = [np.asarray(j).reshape(-1, d) for j in jac]
    acts = [np.asarray(a) for a in acts]
    xf = np.asarray(x).reshape(-1)
    biases = [a - w @ xf for w, a in zip(weights, acts, strict=True)]
    assert all(np.min(np.abs(a)) > 1e-8 for a in acts[:-1])  # no neuron at its kink
    return Reference(weights, biases, acts, [np.zeros(a.size, bool) for a in acts])


def _input(name):
    shape = X_CONV if name == "conv_channels" else (N,)
    return jnp.asarray(np.random.default_rng(99).normal(size=shape), jnp.float64)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n == "conv_channels" else n
        for n in sorted(LINEAR)
    ],
)
def test_linear_operations_exact_on_every_route(x64, name):
    make, x = LINEAR[name], _input(name)
    want = _reference(make, x)
    f = make(jax.nn.relu, False)
    atol = tol(np.float64)
    for how in (slp.switched_projections, slp.explicit_projections):
        got = how(f)(x)
        assert len(got) == len(want.weights), how.__name__
        for p, w, b, v in zip(got, want.weights, want.biases, want.activities, strict=True):
            np.testing.assert_allclose(np.asarray(p.weights).reshape(w.shape), w, atol=atol)
            np.testing.assert_allclose(np.asarray(p.bias).reshape(-1), b, atol=atol)
            np.testing.assert_allclose(np.asarray(p.activity).reshape(-1), v, atol=atol)
    omega = want.insens()
    assert np.max(np.abs(omega)) > 0  # some neuron is inactive: not vacuous
    plan = slp.insens_plan(f, x)
    if name == "conv_channels":
        assert "cone" in plan.costs, plan.not_taken
    for route in plan.costs:
        got = np.asarray(slp.insens(f, route=route)(x)).reshape(-1)
        np.testing.assert_allclose(got, omega, atol=atol, err_msg=route)


def test_channel_operations_on_the_cone_route(x64):
    """Split, stack and tile of a feature map's channels: the cone route takes them."""
    make, x = LINEAR["conv_channels"], _input("conv_channels")
    want = _reference(make, x).insens()
    got = slp.insens(make(jax.nn.relu, False), route="cone")(x)
    np.testing.assert_allclose(np.asarray(got).reshape(-1), want, atol=tol(np.float64))


@pytest.mark.parametrize("name", ["stack", "scatter_set", "scan", "linen_scan", "conv_channels"])
def test_relevance_rules_take_the_operations(x64, name):
    f, alt = LINEAR[name](jax.nn.relu, False), LINEAR[name](jax.nn.relu, True)
    x = _input(name)
    for method in ("lrp_epsilon", "lrp_alpha1_beta0", "deep_taylor"):
        want = np.asarray(slp.attribute(alt, x, method))
        assert np.max(np.abs(want)) > 0
        got = np.asarray(slp.attribute(f, x, method))
        np.testing.assert_allclose(got, want, atol=tol(np.float64), err_msg=method)


def test_scan_is_unrolled_into_its_layers(x64):
    program = net.trace(LINEAR["linen_scan"](jax.nn.relu, False), _input("linen_scan"))
    assert program.relu_shapes == ((N,),) * 3
    assert not any(e.primitive.name == "scan" for e in program.eqns)


# --- refusals ------------------------------------------------------------------------


def _refusal(f, x=None) -> slp.UnsupportedOperationError:
    x = jnp.ones(N) if x is None else x
    with pytest.raises(slp.UnsupportedOperationError) as err:
        slp.switched_projections(f)(x)
    return err.value


def _check(err, *, label, nature, words=()):
    msg = str(err)
    assert err.nature == nature and nature in msg, msg
    assert err.label is not None and label in err.label, msg
    assert re.search(r"test_operations\.py:\d+", msg), msg
    for w in words:
        assert w in msg, (w, msg)


# NumPy weights, made JAX arrays where used (a NumPy argument to a jitted function would
# share one compiled executable between the float32 and the float64 tests).
_W = np.random.default_rng(30).normal(size=(N, N)) / 3


def W_(x):  # noqa: N802 - the weight matrix W in the dtype of x
    return jnp.asarray(_W, x.dtype)


PWL = "not piecewise linear"
NOT_IMPL = "not implemented"


@pytest.mark.parametrize(
    "act, label, nature, words",
    [
        (jax.nn.softmax, "softmax", PWL, ("'exp'", "explain the logits")),
        (jax.nn.log_softmax, "log_softmax", PWL, ("explain the logits",)),
        (jax.nn.gelu, "gelu", PWL, ("smooth",)),
        (lambda z: jax.nn.gelu(z, approximate=False), "gelu", PWL, ("smooth",)),
        (jax.nn.sigmoid, "sigmoid", PWL, ("'logistic'",)),
        (jnp.tanh, "tanh", PWL, ("smooth",)),
        (jax.nn.silu, "silu", PWL, ("smooth",)),
        (jax.nn.elu, "elu", PWL, ("smooth",)),
        (jax.nn.leaky_relu, "leaky_relu", NOT_IMPL, ("relu(z) - a * relu(-z)",)),
        (jax.nn.hard_tanh, "hard_tanh", NOT_IMPL, ("relu(z + 1) - relu(z - 1) - 1",)),
        (jax.nn.relu6, "relu6", NOT_IMPL, ("relu(z) - relu(z - 6)",)),
    ],
)
def test_activation_refusals_name_the_function(act, label, nature, words):
    err = _refusal(lambda x: act(x @ W_(x)) @ W_(x))
    _check(err, label=label, nature=nature, words=words)
    if label == "hard_tanh":
        assert "leaky" not in str(err)


class _Normed(nn.Module):
    norm: str

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(N)(x)[None]
        if self.norm == "ln":
            h = nn.LayerNorm()(h)
        elif self.norm == "gn":
            h = nn.GroupNorm(num_groups=2)(h)
        else:
            h = nn.RMSNorm()(h)
        return nn.Dense(3)(nn.relu(h[0]))


def _linen(norm):
    m = _Normed(norm)
    params = m.init(jax.random.key(0), jnp.ones(N))
    return lambda x: m.apply(params, x)


def _nnx():
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.linear = nnx.Linear(N, N, rngs=rngs)
            self.norm = nnx.LayerNorm(N, rngs=rngs)

        def __call__(self, x):
            return nnx.relu(self.norm(self.linear(x)))

    return Net(nnx.Rngs(0))


def _equinox():
    eqx = pytest.importorskip("equinox")
    lin, norm = eqx.nn.Linear(N, N, key=jax.random.key(0)), eqx.nn.LayerNorm(N)
    return lambda x: jax.nn.relu(norm(lin(x)))


def _haiku():
    hk = pytest.importorskip("haiku")

    def forward(x):
        return jax.nn.relu(hk.LayerNorm(-1, True, True)(hk.Linear(N)(x)))

    t = hk.without_apply_rng(hk.transform(forward))
    params = t.init(jax.random.key(0), jnp.ones(N))
    return lambda x: t.apply(params, x)


@pytest.mark.parametrize(
    "build, label",
    [
        (lambda: _linen("ln"), "LayerNorm_0"),
        (lambda: _linen("gn"), "GroupNorm_0"),
        (lambda: _linen("rms"), "RMSNorm_0"),
        (_nnx, "LayerNorm"),
        (_equinox, "LayerNorm"),
        (_haiku, "layer_norm"),
    ],
)
def test_normalisation_refusals_name_the_module(build, label):
    err = _refusal(build())
    _check(err, label=label, nature=PWL, words=("divides by a norm", "inference mode"))


def test_softmax_at_the_end_of_a_linen_model_is_named():
    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.softmax(nn.Dense(3)(nn.relu(nn.Dense(N)(x))))

    m = Classifier()
    params = m.init(jax.random.key(0), jnp.ones(N))
    err = _refusal(lambda x: m.apply(params, x))
    _check(err, label="softmax", nature=PWL, words=("in Classifier", "explain the logits"))


@pytest.mark.parametrize(
    "f, op, label, words",
    [
        (lambda x: jnp.sort(jax.nn.relu(x @ W_(x))) @ W_(x), "sort", "sort", ("piecewise linear",)),
        (lambda x: jnp.fft.fft(x @ W_(x)).real, "fft", "fft", ("complex values",)),
        (
            lambda x: lax.while_loop(
                lambda c: c[0] < 3, lambda c: (c[0] + 1, jax.nn.relu(c[1] @ W_(c[1]))), (0, x)
            )[1],
            "while",
            None,
            ("lax.scan", "Python-int bounds"),
        ),
        (
            lambda x: lax.fori_loop(0, jnp.asarray(3), lambda i, h: jax.nn.relu(h @ W_(h)), x),
            "while",
            None,
            ("lax.scan",),
        ),
        (lambda x: lax.stop_gradient(x @ W_(x)) + x, "stop_gradient", None, ("derivatives",)),
    ],
)
def test_not_implemented_operations_say_so(f, op, label, words):
    err = _refusal(f)
    msg = str(err)
    assert err.primitive == op and err.nature == NOT_IMPL and NOT_IMPL in msg, msg
    assert PWL not in msg, msg
    assert label is None or err.label == label, msg
    assert re.search(r"test_operations\.py:\d+", msg), msg
    for w in words:
        assert w in msg, (w, msg)


def test_registry_says_what_kind_of_refusal():
    from slp._src import primitives as _primitives

    assert _primitives.REFUSED[lax.exp_p].nature == PWL
    assert _primitives.REFUSED[lax.sort_p].nature == NOT_IMPL
    for p, r in _primitives.REFUSED.items():
        assert r.nature in (PWL, NOT_IMPL), p
        assert r.nature in r.reason, (p, r.reason)  # the message says which
    assert not set(_primitives.REFUSED) & set(_primitives.REGISTRY)
    assert _primitives.why_not(jax.extend.core.Primitive("made_up")).nature == NOT_IMPL


# --- ReLUs spelled on an expression ----------------------------------------------------

_B = np.random.default_rng(31).normal(size=N) / 3
EXPRESSIONS = {
    "z - 0.5": lambda x: x @ W_(x) - 0.5,
    "x @ W + b": lambda x: x @ W_(x) + jnp.asarray(_B, x.dtype),
    "2 * (x @ W_(x))": lambda x: 2 * (x @ W_(x)),
    "sum over an axis": lambda x: jnp.sum((x @ W_(x)).reshape(2, 3), axis=0),
}
SPELLINGS = {
    "where(e <= 0, 0, e)": lambda e, x: jnp.where(e(x) <= 0, 0.0, e(x)),
    "where(e > 0, e, 0)": lambda e, x: jnp.where(e(x) > 0, e(x), 0.0),
    "e * (e > 0)": lambda e, x: e(x) * (e(x) > 0),
    "maximum(e, 0)": lambda e, x: jnp.maximum(e(x), 0.0),
}


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
@pytest.mark.parametrize("expr", sorted(EXPRESSIONS))
def test_relu_spellings_of_any_expression(x64, spelling, expr):
    def f(x):
        return SPELLINGS[spelling](EXPRESSIONS[expr], x)

    x = jnp.asarray(np.random.default_rng(38).normal(size=N))
    program = net.trace(f, x)
    assert [e.kind for e in program.eqns].count("relu") == 1
    # Reference: the expression differentiated by jax.jacfwd (no slp), Insens of its
    # neurons, all of them hidden (the output is the ReLU itself).
    e = EXPRESSIONS[expr]
    w, v = np.asarray(jax.jacfwd(e)(x)), np.asarray(e(x))
    inactive = np.flatnonzero(v <= 0)
    assert 0 < len(inactive) < len(v)
    want = sum(v[i] * w[i] / np.sum(w[i] ** 2) for i in inactive) / len(inactive)
    got = slp.insens(lambda xp: f(xp) @ jnp.eye(len(v)))(x)
    np.testing.assert_allclose(np.asarray(got), want, atol=tol(np.float64))
    np.testing.assert_allclose(np.asarray(slp.activities(f)(x)[0]), v, atol=tol(np.float64))


def test_two_different_expressions_are_not_a_relu():
    err = _refusal(lambda x: jnp.where(x @ W_(x) - 0.5 <= 0, 0.0, x @ W_(x) - 0.6))
    assert err.primitive == "select_n" and err.nature == NOT_IMPL


# --- inputs and plans ----------------------------------------------------------------


@pytest.mark.parametrize("bad", [[1.0, 2.0, 3.0], {"x": np.ones(3)}], ids=["list", "dict"])
def test_non_array_input_is_a_type_error(bad):
    def f(x):
        return jax.nn.relu(x @ jnp.ones((3, 2)))

    entries = [
        lambda x: slp.insens(f)(x),
        lambda x: slp.insens(f, batched=True)(x),
        lambda x: slp.insens_plan(f, x),
        lambda x: slp.switched_projections(f)(x),
        lambda x: slp.explicit_projections(f)(x),
        lambda x: slp.switched_centres(f)(x),
        lambda x: slp.activities(f)(x),
        lambda x: slp.activation_pattern(f)(x),
        lambda x: slp.attribute(f, x, "insens"),
        lambda x: slp.attribute(f, x, "lrp_epsilon"),
        lambda x: slp.attribute(f, x, "gradient"),
        lambda x: slp.attribute(f, x, "gradient", batched=True),
    ]
    for i, entry in enumerate(entries):
        with pytest.raises(TypeError, match="must be an array") as err:
            entry(bad)
        assert type(bad).__name__ in str(err.value), i


def test_plan_names_the_resize_that_leaves_no_spatial_axis():
    k = _normal(40, 3, 3, 1, 2, scale=0.5)
    dense = jnp.ones((16 * 16 * 2, 3))

    def f(x):
        h = jax.nn.relu(_conv(x, k))
        h = jax.image.resize(h, (16, 16, 2), "bilinear")
        return jax.nn.relu(h.reshape(-1) @ dense)

    why = slp.insens_plan(f, jnp.ones((8, 8, 1))).not_taken["cone"]
    assert "no spatial axis" in why and "'dot_general'" in why and "inside resize" in why, why
    assert re.search(r"test_operations\.py:\d+", why), why

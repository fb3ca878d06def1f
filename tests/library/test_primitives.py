"""The primitive registry, ReLU spellings, refusals and dead code.

References: the brute-force dense-matrix network of `tests/reference.py` (NumPy, float64,
no autodiff) for the numbers; the registry is checked for completeness.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import slp
from slp._src import boxes as _boxes
from slp._src import cone as _cone
from slp._src import flops as _flops
from slp._src import network as net
from slp._src import primitives as _primitives
from slp._src import relevance as _relevance
from tests import reference as ref

SPEC = (
    ("conv", 3, 3, 1, "SAME"), ("relu",), ("maxpool", 2, 2),
    ("flatten",), ("dense", 5), ("relu",), ("dense", 3),
)  # fmt: skip
IN_SHAPE = (6, 6, 2)

# Every spelling of max(z, 0) that the walker must take as a ReLU.
RELU_SPELLINGS = {
    "jax.nn.relu": jax.nn.relu,
    "maximum(z, 0)": lambda z: jnp.maximum(z, 0.0),
    "maximum(0, z)": lambda z: jnp.maximum(0.0, z),
    "clip(z, 0)": lambda z: jnp.clip(z, 0.0),
    "where(z > 0, z, 0)": lambda z: jnp.where(z > 0, z, 0.0),
    "where(z >= 0, z, 0)": lambda z: jnp.where(z >= 0, z, 0),
    "where(0 < z, z, 0)": lambda z: jnp.where(0 < z, z, jnp.zeros_like(z)),
    "where(z <= 0, 0, z)": lambda z: jnp.where(z <= 0, 0.0, z),
    "where(z < 0, 0, z)": lambda z: jnp.where(z < 0, 0, z),
    "z * (z > 0)": lambda z: z * (z > 0),
    "(z > 0) * z": lambda z: (z > 0) * z,
    "z * (z > 0).astype(z.dtype)": lambda z: z * (z > 0).astype(z.dtype),
}

# Activations that are not ReLUs: (function, the operation the error must name, a word
# of its hint).
REFUSED = {
    "leaky_relu": (jax.nn.leaky_relu, "select_n", "leaky"),
    "relu6": (jax.nn.relu6, "min", "relu6"),
    "abs": (jnp.abs, "abs", "relu(-z)"),
    "where(z > 0, z, 1)": (lambda z: jnp.where(z > 0, z, 1.0), "select_n", "where"),
    "z * (z < 0)": (lambda z: z * (z < 0), "mul", "product"),
    "tanh": (jnp.tanh, "tanh", "piecewise linear"),
}


def _net(rng, relu=jax.nn.relu):
    params = ref.init_params(SPEC, IN_SHAPE, rng)
    return ref.jax_function(SPEC, params, relu=relu), params


@pytest.mark.parametrize("name", sorted(RELU_SPELLINGS))
def test_relu_spellings_are_relus(x64, name):
    rng = np.random.default_rng(0)
    f, params = _net(rng, RELU_SPELLINGS[name])
    x = rng.normal(size=IN_SHAPE)
    want = ref.dense_model(SPEC, params, x)
    program = net.trace(f, jnp.asarray(x))
    assert [e.kind for e in program.eqns].count("relu") == 2
    acts = slp.activities(f)(jnp.asarray(x))
    for a, b in zip(acts, want.activities[:-1], strict=True):
        np.testing.assert_allclose(np.asarray(a).reshape(-1), b.reshape(-1), atol=1e-10)
    got = slp.insens(f)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got).reshape(-1), want.insens(), atol=1e-10)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_activations_name_their_operation(name):
    act, op, hint = REFUSED[name]
    f, _ = _net(np.random.default_rng(1), act)
    with pytest.raises(slp.UnsupportedOperationError) as err:
        net.trace(f, jnp.ones(IN_SHAPE))
    msg = str(err.value)
    assert f"'{op}'" in msg
    assert hint in msg


def test_dead_code_changes_nothing(x64):
    rng = np.random.default_rng(2)
    f, params = _net(rng)
    kern, bias = (jnp.asarray(a) for a in params[0])

    def with_dead_code(x):
        h = (
            lax.conv_general_dilated(
                x[None], kern, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )[0]
            + bias[None, None]
        )
        features = jnp.concatenate([h.reshape(-1), jnp.tanh(h).reshape(-1)])  # unused
        del features
        _ = jnp.where(h > 0.5, h, 0.1 * h).sum()  # unused, and not a ReLU
        return f(x)

    x = jnp.asarray(rng.normal(size=IN_SHAPE))
    plain, dead = net.trace(f, x), net.trace(with_dead_code, x)
    assert [e.primitive for e in dead.eqns if e.kind != "const"] == [
        e.primitive for e in plain.eqns if e.kind != "const"
    ]
    assert dead.relu_shapes == plain.relu_shapes
    assert slp.insens_plan(with_dead_code, x).route == slp.insens_plan(f, x).route
    want = ref.dense_model(SPEC, params, np.asarray(x)).insens()
    got = np.asarray(slp.insens(with_dead_code)(x)).reshape(-1)
    np.testing.assert_allclose(got, want, atol=1e-10)
    np.testing.assert_array_equal(slp.insens(with_dead_code)(x), slp.insens(f)(x))


def test_global_max_pooling_is_a_max_pool(x64):
    rng = np.random.default_rng(3)
    kern = jnp.asarray(rng.normal(size=(3, 3, 2, 4)))
    w = jnp.asarray(rng.normal(size=(4, 3)))

    def f(x):
        h = lax.conv_general_dilated(
            x[None], kern, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )[0]
        return jnp.max(jax.nn.relu(h), axis=(0, 1)) @ w

    x = jnp.asarray(rng.normal(size=IN_SHAPE))
    program = net.trace(f, x)
    assert [e.kind for e in program.eqns].count("max_pool") == 1
    # Theorem 1 on the output: the switched map reproduces the logits, and its weights are
    # the Jacobian (finite differences of the network itself).
    (*_, out) = slp.switched_projections(f)(x)
    np.testing.assert_allclose(
        np.tensordot(np.asarray(out.weights), np.asarray(x), axes=x.ndim) + out.bias,
        f(x),
        atol=1e-10,
    )
    eps = 1e-6
    e0 = jnp.zeros(IN_SHAPE).at[1, 2, 0].set(eps)
    fd = (f(x + e0) - f(x - e0)) / (2 * eps)
    np.testing.assert_allclose(out.weights[:, 1, 2, 0], fd, atol=1e-6)


# --- the registry -------------------------------------------------------------------


def _resolves(rule_set: str, rule) -> bool:
    """A rule is a callable of its set (cone: a `ConeRule`; relevance: a `Part`) or a
    `Refusal` with a reason; never a name to be looked up elsewhere."""
    if isinstance(rule, _primitives.Refusal):
        return bool(rule.reason)
    if rule_set == "relevance":
        return isinstance(rule, _relevance.Part)
    if rule_set == "cone":
        return isinstance(rule, _cone.ConeRule) and callable(rule.geometry)
    if rule_set == "cost":
        return isinstance(rule, _flops.Cost) and callable(rule.flops)
    return callable(rule) and not isinstance(rule, str)


def test_every_declaration_fills_every_rule_set():
    assert len(_primitives.REGISTRY) >= 30
    missing = []
    for p, decl in _primitives.REGISTRY.items():
        assert decl.primitive is p
        assert decl.role in ("linear", "relu", "max_pool")
        for rule_set in _primitives.RULE_SETS:
            if not _resolves(rule_set, getattr(decl, rule_set)):
                missing.append(f"{p.name}.{rule_set} = {getattr(decl, rule_set)!r}")
    assert not missing, missing


def test_registry_is_keyed_by_primitive_objects():
    assert lax.conv_general_dilated_p in _primitives.REGISTRY
    assert all(isinstance(p, jax.extend.core.Primitive) for p in _primitives.REGISTRY)
    assert _primitives.lookup(lax.tanh_p) is None


def test_declaration_without_box_rule_depends_on_everything(x64, monkeypatch):
    # A declared primitive whose box rule is a Refusal depends on the whole input (safe):
    # the probe route stays exact.
    decl = _primitives.lookup(lax.cumsum_p)
    no_rule = dataclasses.replace(decl, boxes=_primitives.Refusal("none here"))
    monkeypatch.setitem(_primitives.REGISTRY, lax.cumsum_p, no_rule)
    rng = np.random.default_rng(4)
    # z + 0 * cumsum(z) is z exactly, but its box is the cumsum's
    f, params = _net(rng, lambda z: jax.nn.relu(z + 0 * jnp.cumsum(z, axis=0)))
    x = jnp.asarray(rng.normal(size=IN_SHAPE))
    relu_boxes, _, _ = _boxes.receptive_boxes(net.trace(f, x), x)
    assert np.all(relu_boxes[0].lo == 0)  # the conv layer's: the whole input
    assert np.all(relu_boxes[0].hi == np.asarray(IN_SHAPE) - 1)
    want = ref.dense_model(SPEC, params, np.asarray(x)).insens()
    got = slp.insens(f, route="probes")(x)
    np.testing.assert_allclose(np.asarray(got).reshape(-1), want, atol=1e-10)

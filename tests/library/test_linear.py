"""The switched network's tangent map from one walk, and its pieces before and after the cut
(`slp._src.linear`).

References: explicit matrices (a hand-written linear map; the brute-force switched weights of
`tests/reference.py`, built layer by layer in numpy), never the library's own output.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import slp
from slp._src import interpreter, linear
from tests import reference as ref

# `ref.CONV_POOL_DENSE` (conv, ReLU, max-pool, the cut: the first dense layer, ReLU) with one
# more ReLU layer after the cut
SPEC = ref.CONV_POOL_DENSE[:-1] + (("dense", 5), ("relu",), ("dense", 3))


def _primitives(fn, *args) -> list[str]:
    return [e.primitive.name for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns]


def test_a_part_computes_only_what_its_live_inputs_reach():
    rng = np.random.default_rng(0)
    a_mat, b_mat, c_mat = (jnp.asarray(rng.normal(size=(3, 3)), jnp.float32) for _ in range(3))

    def fn(a, b):  # two outputs: A a, and C (B a) + C b
        return a_mat @ a, c_mat @ (b_mat @ a) + c_mat @ b

    s = jax.ShapeDtypeStruct((3,), jnp.float32)
    b = jnp.asarray(rng.normal(size=3), jnp.float32)
    (got,) = linear.linear_part(fn, (s, s), live=[1], outputs=[1])(b)
    np.testing.assert_allclose(got, np.asarray(c_mat) @ np.asarray(b), rtol=1e-6)
    # only the product with b: B a and C (B a) see the zero tangent a and are left out
    assert _primitives(linear.linear_part(fn, (s, s), [1], [1]), b).count("dot_general") == 1
    a = jnp.asarray(rng.normal(size=3), jnp.float32)
    (got,) = linear.linear_part(fn, (s, s), live=[0], outputs=[0])(a)
    np.testing.assert_allclose(got, np.asarray(a_mat) @ np.asarray(a), rtol=1e-6)
    # the second output is not asked for: none of its products
    assert _primitives(linear.linear_part(fn, (s, s), [0], [0]), a).count("dot_general") == 1


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("frozen", [False, True])
def test_linearized_with_a_cut_matches_the_switched_weights(x64, seed, frozen):
    rng = np.random.default_rng(seed)
    params = ref.init_params(list(SPEC), (8, 8, 2), rng)
    f = ref.jax_function(list(SPEC), params)
    x = rng.normal(size=(8, 8, 2))
    want = ref.dense_model(list(SPEC), params, x)
    program = slp.network.trace(f, jnp.asarray(x))
    cut = next(i for i, e in enumerate(program.eqns) if e.primitive.name == "dot_general")
    state = interpreter.forward(program, jnp.asarray(x)) if frozen else None
    lin = linear.linearized(program, jnp.asarray(x), state=state, cut=cut)
    for k in range(3):
        np.testing.assert_allclose(
            np.ravel(lin.state.activities[k]), want.activities[k], atol=1e-10
        )

    t = rng.normal(size=x.shape)
    for k, tk in enumerate(lin.jvp(jnp.asarray(t))):
        np.testing.assert_allclose(np.ravel(tk), want.weights[k] @ t.ravel(), atol=1e-10)
    cts = [rng.normal(size=a.shape) for a in lin.state.activities]
    (got,) = lin.vjp(tuple(jnp.asarray(c) for c in cts))
    expect = sum(w.T @ c.ravel() for w, c in zip(want.weights, cts, strict=False))
    np.testing.assert_allclose(np.ravel(got), expect, atol=1e-10)

    # before the cut: the first layer and the cut's operand (the pooled map, flattened)
    pre = lin.before_cut([0])
    t0, op = pre(jnp.asarray(t))
    np.testing.assert_allclose(np.ravel(t0), want.weights[0] @ t.ravel(), atol=1e-10)
    w_cut = np.asarray(params[4][0]).T  # (6, pooled size)
    np.testing.assert_allclose(w_cut @ np.ravel(op), want.weights[1] @ t.ravel(), atol=1e-10)
    assert "dot_general" not in _primitives(pre, jnp.asarray(t))  # nothing after the cut

    # after the cut: a tangent z of its output reaches layer 1 as z, layer 2 as W (mask z)
    post = linear.linear_part(lin.tangent_map, lin.shapes, [1], [1, 2])
    assert _primitives(post, jnp.zeros(6)) == _primitives(lin.after_cut([1, 2]), jnp.zeros(6))
    z = rng.normal(size=6)
    t1, t2 = lin.after_cut([1, 2])(jnp.asarray(z))
    np.testing.assert_allclose(np.asarray(t1), z, atol=1e-12)
    mask = want.activities[1] > 0
    np.testing.assert_allclose(np.asarray(t2), np.asarray(params[6][0]).T @ (mask * z), atol=1e-10)
    assert "conv_general_dilated" not in _primitives(lin.after_cut([1, 2]), jnp.asarray(z))

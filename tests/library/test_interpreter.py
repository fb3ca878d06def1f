"""The one interpreter (`slp._src.interpreter.interpret`): every pass over a program is one
interpretation, counted while tracing; the count per exact Insens call is pinned.

Reference for the values: the brute-force dense-matrix network of `tests/reference.py`.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import slp
from slp._src import interpreter, network
from tests import reference as ref

# Passes over the program in one exact Insens call on a given route, today: the plan (the
# boxes, the cone geometry's channel axes and geometry; its shapes and FLOPs are read from
# the traced program), the state with the VJP of the switched network (one pass), and the
# route's own (cone: constants, tangents and the post-cut walk; probes: two pre-cut walks
# and the post-cut walk; dense: the switched network under jacfwd). It was 12 when the scan
# over blocks traced its step twice, the planner and the cone geometry walked the program
# for its shapes and the state and the VJP were two walks. Lower it as passes merge; never
# raise it. (``route="auto"`` also traces every route once to count its work.)
MAX_PASSES_EXACT_INSENS = 7


def _conv_net(seed=0, in_shape=(8, 8, 2)):
    rng = np.random.default_rng(seed)
    spec = [
        ("conv", 4, 3, 1, "SAME"),
        ("relu",),
        ("maxpool", 2, 2),
        ("flatten",),
        ("dense", 6),
        ("relu",),
        ("dense", 3),
    ]
    params = ref.init_params(spec, in_shape, rng)
    return spec, params, ref.jax_function(spec, params), rng.normal(size=in_shape)


def test_interpret_counts_one_pass_per_call(x64):
    _, _, f, x = _conv_net()
    program = network.trace(f, jnp.asarray(x))
    before = sum(interpreter.INTERPRETATIONS.values())
    res = interpreter.interpret(program, jnp.asarray(x), interpreter.ForwardRules())
    assert sum(interpreter.INTERPRETATIONS.values()) == before + 1
    np.testing.assert_allclose(np.asarray(res.output), np.asarray(f(jnp.asarray(x))), atol=1e-12)


@pytest.mark.parametrize("route", ["cone", "probes", "dense"])
def test_exact_insens_interprets_the_program_a_bounded_number_of_times(x64, route):
    spec, params, f, x = _conv_net(1)
    interpreter.INTERPRETATIONS.clear()
    got = slp.insens(f, route=route)(jnp.asarray(x))
    passes = sum(interpreter.INTERPRETATIONS.values())
    assert 0 < passes <= MAX_PASSES_EXACT_INSENS, dict(interpreter.INTERPRETATIONS)
    want = ref.dense_model(spec, params, x).insens()
    np.testing.assert_allclose(np.asarray(got).reshape(-1), want, atol=1e-10)

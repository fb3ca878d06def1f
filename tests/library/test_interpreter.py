"""The one interpreter (`slp._src.interpreter.interpret`): every pass over a program is one
interpretation, counted while tracing (`slp._src.interpreter.count_interpretations`; the count
per exact Insens call is pinned in tests/library/test_interpretations.py).

Reference for the values: the brute-force dense-matrix network of `tests/reference.py`.
"""

import jax.numpy as jnp
import numpy as np

from slp._src import interpreter, network
from tests import reference as ref


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
    with interpreter.count_interpretations() as outer:
        with interpreter.count_interpretations() as passes:
            res = interpreter.interpret(program, jnp.asarray(x), interpreter.ForwardRules())
        interpreter.interpret(program, jnp.asarray(x), interpreter.ForwardRules(), kind="again")
    assert dict(passes) == {"forward": 1}
    assert dict(outer) == {"forward": 1, "again": 1}
    np.testing.assert_allclose(np.asarray(res.output), np.asarray(f(jnp.asarray(x))), atol=1e-12)

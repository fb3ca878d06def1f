"""The one interpreter (`slp._src.interpreter.interpret`): every pass over a program is one
interpretation, counted while tracing (`slp._src.interpreter.count_interpretations`; the count
per exact Insens call is pinned in tests/library/test_interpretations.py).

Reference for the values: the brute-force dense-matrix network of `tests/reference.py`.
"""

import jax.numpy as jnp
import numpy as np

from slp._src import interpreter, network
from tests import reference as ref


def test_interpret_counts_one_pass_per_call(x64):
    _, _, f, x = ref.conv_pool_dense(0)
    program = network.trace(f, jnp.asarray(x))
    with interpreter.count_interpretations() as outer:
        with interpreter.count_interpretations() as passes:
            res = interpreter.interpret(program, jnp.asarray(x), interpreter.ForwardRules())
        interpreter.interpret(program, jnp.asarray(x), interpreter.ForwardRules(), kind="again")
    assert dict(passes) == {"forward": 1}
    assert dict(outer) == {"forward": 1, "again": 1}
    np.testing.assert_allclose(np.asarray(res.output), np.asarray(f(jnp.asarray(x))), atol=1e-12)

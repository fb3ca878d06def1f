"""The network as slp sees it: the affine maps, ReLUs and max-pools of any JAX function.

`trace` turns a per-example function ``f(x) -> y`` into the flat program of operations
that every method of slp walks (switched linear projections, Insens, the LRP family). It
inlines nested calls (``jit``, `jax.nn.relu`'s ``custom_jvp_call``, ``remat``) and unrolls
``scan``. Anything that depends on the input and is neither affine, a ReLU nor a max-pool
(``tanh``, the ``exp`` of a softmax, ``sort``, a ``while`` loop) raises
`UnsupportedOperationError`, which names the operation, where it came from and whether it
is not piecewise linear (no switched linear projection exists) or only not implemented.

Calling `trace` yourself is a quick check that slp follows a network::

    slp.network.trace(f, x)  # raises UnsupportedOperationError, or returns the program

The program's type and the walker are internals (they may change).
"""

from __future__ import annotations

from slp._src.network import UnsupportedOperationError, trace

__all__ = [
    "UnsupportedOperationError",
    "trace",
]

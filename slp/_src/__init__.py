"""Internals of slp: the machinery behind the public functions (not public API).

- `network`: the tracer (`network.trace`), the flat `network.Program` and the walker with its
  forward and frozen rule sets.
- `primitives`: the primitive registry; every walker dispatches through it.
- `insens`: Insens, its routes, its plan and the unbiased estimator (public as
  ``slp.insens``, ``slp.insens_plan``, ``slp.InsensPlan``, ...).
- `planner`, `costs`, `speed`: the Insens plan: each route's layout, its work counted in
  its traced program, the cost model that turns work into predicted seconds, and the
  device's matrix-product rate.
- `routes`, `traced`, `linear`: the exact routes (the state, its VJP and the squared norms
  from one walk), the traced programs that the default route runs, and pieces of a tangent
  map.
- `cone`, `boxes`, `cut`, `matmul`: the cone route, receptive-field boxes, the hand-over to
  explicit Jacobian columns, and matrix products at a chosen precision.
- `matrices`, `relevance`: the explicit-matrix route of ``slp.explicit_projections`` and the
  walk of the LRP rules (``slp.attributions``).
- `guards`: the non-finite policy and the batch guard (public as ``slp.per_example`` and
  ``slp.single_example``); `provenance`: where a refused operation came from.
- `cli`: the help layout of every command line.

Nothing here imports a public ``slp`` module. Names here may change without notice; import
from ``slp`` and its public modules.
"""

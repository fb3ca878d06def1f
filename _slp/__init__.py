"""Internals of slp: the machinery behind the public functions (not public API).

- `insens`: Insens, its routes, its plan and the unbiased estimator (public as
  ``slp.insens``, ``slp.insens_plan``, ``slp.InsensPlan``, ...).
- `primitives`: the primitive registry; every walker dispatches through it.
- `cone`, `boxes`, `cut`, `matmul`: the cone route, receptive-field boxes, the hand-over to
  explicit Jacobian columns, and matrix products at a chosen precision.
- `guards`: the non-finite policy and the batch guard (public as ``slp.per_example`` and
  ``slp.single_example``).

Names here may change without notice; import from ``slp`` and its public modules.
"""

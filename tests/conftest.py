"""Strict numerics for every test: rank promotion raises; float64 on request.

The tests' networks are small, so compiling them takes most of the suite's time: XLA's CPU
backend compiles them here at LLVM's lowest optimisation level (about a third less time). The
programs XLA optimises and runs are the same; only their machine code is less tuned, so a
result may differ in its last bits, as it may between two CPUs. Setting
``--xla_backend_optimization_level`` in ``XLA_FLAGS`` yourself overrides this.
"""

import os

if "xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()

import jax  # noqa: E402  (after XLA_FLAGS: the CPU backend reads them when it starts)
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def x64():
    """Runs the test with 64-bit floats enabled (exactness checks)."""
    with jax.enable_x64(True):
        yield


def tol(dtype) -> float:
    """Absolute tolerance for exactness checks at this dtype."""
    import numpy as np

    return 1e-10 if np.dtype(dtype) == np.float64 else 1e-4

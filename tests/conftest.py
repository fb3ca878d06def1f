"""Strict numerics for every test: rank promotion raises; float64 on request."""

import jax
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

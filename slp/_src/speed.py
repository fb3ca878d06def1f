"""The default device's matrix-product rate, and its speed against the machine that the
cost model (`slp._src.costs`) was fitted on: the planner scales predicted seconds by it."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from slp._src import costs as _costs

__all__ = ["SAME_CPU_BAND", "device_flop_rate", "device_speed"]

_FLOP_RATES: dict = {}


SAME_CPU_BAND = 3.0
"""A CPU whose measured matrix-product rate is within this factor of the calibration
machine's is predicted at the calibration machine's speed (`device_speed`)."""


def device_speed(rate: float) -> float:
    """The factor the predicted seconds' per-input terms are divided by on a device whose
    matrix-product rate is ``rate``: ``rate`` over the calibration machine's, or 1 on a CPU
    within `SAME_CPU_BAND` of it. On the shared 2-core calibration CPU the measured rate
    itself came out at 230-275 or 480 GFLOP/s from one process to the next while the routes'
    times did not move, so a ratio that small is noise of the measurement, not speed."""
    ratio = rate / float(_costs.CALIBRATION["flop_rate"])
    same = jax.devices()[0].platform == "cpu" and 1 / SAME_CPU_BAND <= ratio <= SAME_CPU_BAND
    return 1.0 if same else ratio


def device_flop_rate() -> float:
    """FLOP/s of a float32 matrix product at the highest precision on the default device.

    Measured once per process and device: the median time of products of two 1024x1024
    matrices on CPU (4096x4096 on accelerators) over at least 0.3 s and 5 products, after
    two untimed calls. On a shared 2-core CPU the best of a few short products varied 2x
    from one process to the next (192-445 GFLOP/s on one machine); this median varied
    within 20% (231-275) over 8 processes.
    """
    dev = jax.devices()[0]
    tag = (dev.platform, dev.device_kind)
    if tag not in _FLOP_RATES:
        n = 1024 if dev.platform == "cpu" else 4096
        a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), jnp.float32)
        prod = jax.jit(lambda p, q: jnp.dot(p, q, precision=lax.Precision.HIGHEST))
        prod(a, a).block_until_ready()
        prod(a, a).block_until_ready()
        times: list[float] = []
        end = time.perf_counter() + 0.3
        while len(times) < 5 or time.perf_counter() < end:
            t0 = time.perf_counter()
            prod(a, a).block_until_ready()
            times.append(time.perf_counter() - t0)
        _FLOP_RATES[tag] = 2.0 * n**3 / float(np.median(times))
    return _FLOP_RATES[tag]

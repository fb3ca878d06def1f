"""Float32 exactness at full 2CONV size (on a GPU this fails if TF32 matmuls creep in)."""

import jax
import jax.numpy as jnp
import numpy as np

import slp
from slp.models import TwoConv, as_single_example


def test_float32_theorem1_and_insens_close_to_float64():
    model = TwoConv(num_classes=10)
    x32 = jax.random.uniform(jax.random.PRNGKey(0), (28, 28, 1), jnp.float32)
    params32 = model.init(jax.random.PRNGKey(1), x32[None])
    f32 = as_single_example(model, params32)
    proj = slp.switched_projections(f32)(x32)
    for p in proj:
        axes = tuple(range(p.activity.ndim, p.weights.ndim))
        recon = jnp.sum(p.weights * x32.reshape((1,) * p.activity.ndim + x32.shape), axis=axes)
        recon = recon + p.bias
        scale = float(jnp.max(jnp.abs(p.activity))) + 1e-12
        # TF32 (10-bit mantissa) would give errors around 1e-3 of the scale.
        assert float(jnp.max(jnp.abs(recon - p.activity))) / scale < 2e-5
    om32 = np.asarray(slp.insens(f32)(x32))
    with jax.enable_x64(True):
        x64 = jnp.asarray(np.asarray(x32), jnp.float64)
        params64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), params32)
        om64 = np.asarray(slp.insens(as_single_example(model, params64))(x64))
    assert np.max(np.abs(om32 - om64)) / np.max(np.abs(om64)) < 1e-4

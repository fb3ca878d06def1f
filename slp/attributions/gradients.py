"""Gradient-family attribution methods.

Gradient x input, Integrated Gradients and SmoothGrad are built on the ordinary
gradient of the target logit (as in Captum, the backward pass starts from a one-hot
cotangent on the target), taken through the network walker where it describes the
network, whose max-pool derivative is much cheaper on CPU than XLA's. Guided
backpropagation and DeconvNet change only what the ReLUs do on the way back, so they
are `slp._src.network.Rules` over the network walker whose ReLU carries a custom VJP;
max-pools send the signal to each window's winner (the "switches" of Zeiler & Fergus)
and every linear operation keeps its transpose.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from slp._src import guards as _guards
from slp._src import network as net
from slp.attributions._walk import walker_function
from slp.attributions.registry import register, resolve_target

__all__ = [
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "guided_backprop",
    "deconvnet",
    "path_points",
]

_QUADRATURES = (
    "linspace",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "gausslegendre",
)


def _grad_of_target(f: Callable, t) -> Callable:
    return jax.grad(lambda xp: f(xp)[t])


def _target_gradient(f: Callable, x: jax.Array, target, start: str = "one") -> jax.Array:
    """``d f_t / d x`` at ``x`` with one forward pass (the target chosen at ``x``).

    ``start="logit"`` scales the backward signal at the target by ``f(x)[t]``.
    """
    if start not in ("one", "logit"):
        raise ValueError(f"start must be 'one' or 'logit'; got {start!r}")
    y, vjp = jax.vjp(f, x)
    t = resolve_target(y, target)
    s0 = jax.nn.one_hot(t, y.shape[0], dtype=y.dtype)
    if start == "logit":
        s0 = s0 * jax.lax.stop_gradient(y[t])
    return vjp(s0)[0]


@register("gradient_x_input")
def gradient_x_input(f: Callable, x: jax.Array, *, target=None) -> jax.Array:
    """Gradient x input, ``x * d f_t / d x`` (Shrikumar et al. 2016).

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit.

    Returns:
      Array of shape ``X``.

    Examples:
      >>> W1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
      >>> f = lambda x: jax.nn.relu(x @ W1) @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
      >>> slp.attributions.gradient_x_input(f, jnp.array([1.0, 2.0]), target=0)
      Array([1., 1.], dtype=float32)
    """
    return x * _target_gradient(walker_function(f, x), x, target)


def path_points(steps: int, quadrature: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights of a quadrature of ``int_0^1 g(alpha) d alpha``.

    Args:
      steps: number of points (>= 1; >= 2 for ``"linspace"`` and ``"riemann_trapezoid"``).
      quadrature: ``"linspace"`` (``steps`` equally spaced points from 0 to 1 inclusive,
        plain mean), ``"riemann_left"`` (``alpha = k / steps`` for ``k = 0 .. steps - 1``:
        what every iNNvestigate release computes), ``"riemann_right"`` (Zennit's),
        ``"riemann_middle"``,
        ``"riemann_trapezoid"`` (weights summing to 1; Captum's sum to ``1 - 1/steps``) or
        ``"gausslegendre"`` (Captum's default).

    Returns:
      ``(alphas, weights)``, both float64 arrays of shape ``(steps,)``.
    """
    if quadrature not in _QUADRATURES:
        raise ValueError(
            f"unknown quadrature {quadrature!r}; choose one of {', '.join(_QUADRATURES)}"
        )
    if not _guards.is_count(steps):
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    n = int(steps)
    if quadrature in ("linspace", "riemann_trapezoid") and n < 2:
        raise ValueError(f"quadrature {quadrature!r} needs steps >= 2; got {n}")
    k = np.arange(n, dtype=np.float64)
    w = np.full(n, 1.0 / n)
    if quadrature == "linspace":
        a = np.linspace(0.0, 1.0, n)
    elif quadrature == "riemann_left":
        a = k / n
    elif quadrature == "riemann_right":
        a = (k + 1) / n
    elif quadrature == "riemann_middle":
        a = (k + 0.5) / n
    elif quadrature == "riemann_trapezoid":
        a = np.linspace(0.0, 1.0, n)
        w = np.full(n, 1.0 / (n - 1))
        w[[0, -1]] /= 2
    else:
        t, wt = np.polynomial.legendre.leggauss(n)
        a, w = (t + 1) / 2, wt / 2
    return a, w


@register("integrated_gradients")
def integrated_gradients(
    f: Callable,
    x: jax.Array,
    *,
    target=None,
    baseline=0.0,
    steps: int = 64,
    quadrature: str = "linspace",
    batch_size: int | None = None,
) -> jax.Array:
    """Integrated Gradients (Sundararajan et al. 2017).

    ``(x - x') * int_0^1 grad f_t(x' + alpha (x - x')) d alpha`` by a quadrature of
    ``steps`` points; the sum over components approximates ``f_t(x) - f_t(x')``
    (completeness). The target (arg-max when None) is chosen at ``x``.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit at ``x``.
      baseline: ``x'``, a scalar or an array of shape ``X`` (default 0).
      steps: number of points on the path (iNNvestigate's and this default: 64).
      quadrature: how the path integral is approximated, see `path_points` (default
        ``"linspace"``; iNNvestigate's is ``"riemann_left"``; Captum's ``method``).
      batch_size: points evaluated at once (None: all ``steps`` in one batch); bounds
        memory at about ``batch_size`` backward passes.

    Returns:
      Array of shape ``X``.

    Raises:
      ValueError: ``batch_size`` is not a positive integer, or ``steps`` or ``quadrature``
        are not valid (`path_points`).

    Examples:
      >>> W1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
      >>> f = lambda x: jax.nn.relu(x @ W1) @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
      >>> ig = slp.attributions.integrated_gradients(f, jnp.array([1.0, 2.0]), target=0, steps=8)
      >>> ig  # sums to 1.75, near f_0(x) - f_0(0) = 2: the path starts where the ReLU is off
      Array([0.875, 0.875], dtype=float32)
    """
    alphas, weights = path_points(steps, quadrature)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    f = walker_function(f, x)
    t = resolve_target(f(x), target)
    try:
        base = jnp.broadcast_to(jnp.asarray(baseline, x.dtype), x.shape)
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"baseline must be a scalar or an array of x's shape {tuple(x.shape)} (or one "
            f"that broadcasts to it); got shape {np.shape(baseline)}"
        ) from err
    diff = x - base
    grad = _grad_of_target(f, t)
    a = jnp.asarray(alphas, x.dtype)
    wts = jnp.asarray(weights, x.dtype)

    def weighted(aw):
        al, wt = aw
        return wt * grad(base + al * diff)

    if batch_size is None or batch_size >= len(alphas):
        per_point = jax.vmap(weighted)((a, wts))
    else:
        per_point = jax.lax.map(weighted, (a, wts), batch_size=batch_size)
    return diff * jnp.sum(per_point, axis=0)


@register("smoothgrad")
def smoothgrad(
    f: Callable,
    x: jax.Array,
    *,
    target=None,
    key: jax.Array | None = None,
    samples: int = 32,
    noise_level: float = 0.15,
    noise_scale: float | None = None,
) -> jax.Array:
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of ``x``.

    ``mean_k grad f_t(x + e_k)``, ``e_k ~ N(0, sigma^2)``, with
    ``sigma = noise_level * (max(x) - min(x))``. The target (arg-max when None) is
    chosen at ``x``.

    Args:
      f: per-example network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit at ``x``.
      key: a `jax.random` key (required; split it per example when batching).
      samples: number of noisy copies.
      noise_level: noise standard deviation relative to the input's value range
        (Zennit's convention).
      noise_scale: the noise standard deviation itself (Captum's ``stdevs``); when given,
        ``noise_level`` is not used.

    Returns:
      Array of shape ``X``.

    Raises:
      ValueError: no ``key``, or ``samples`` is not a positive integer.

    Examples:
      >>> W1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
      >>> f = lambda x: jax.nn.relu(x @ W1) @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
      >>> sg = slp.attributions.smoothgrad(f, jnp.array([1.0, 2.0]), key=jax.random.key(0))
      >>> sg.shape
      (2,)
    """
    if key is None:
        raise ValueError(
            "smoothgrad needs an explicit PRNG key, e.g. key=jax.random.key(0) "
            "(split it per example when batching with vmap)"
        )
    _guards.check_key(key, "smoothgrad")
    if not _guards.is_count(samples):
        raise ValueError(f"samples must be a positive integer; got {samples!r}")
    f = walker_function(f, x)
    t = resolve_target(f(x), target)
    if noise_scale is not None:
        sigma = jnp.asarray(noise_scale, x.dtype)
    else:
        sigma = noise_level * (jnp.max(x) - jnp.min(x))
    noise = jax.random.normal(key, (int(samples),) + x.shape, x.dtype) * sigma
    grads = jax.vmap(_grad_of_target(f, t))(x[None] + noise)
    return jnp.mean(grads, axis=0)


# --- modified ReLU backward passes on the walker ---------------------------------------------


def _relu(z):
    return jnp.where(z > 0, z, jnp.zeros_like(z))


@jax.custom_vjp
def _guided_relu(z):
    return _relu(z)


def _guided_fwd(z):
    return _relu(z), z > 0


def _guided_bwd(active, g):
    return (jnp.where(active & (g > 0), g, jnp.zeros_like(g)),)


_guided_relu.defvjp(_guided_fwd, _guided_bwd)


@jax.custom_vjp
def _deconv_relu(z):
    return _relu(z)


def _deconv_fwd(z):
    return _relu(z), None


def _deconv_bwd(_, g):
    return (jnp.maximum(g, jnp.zeros_like(g)),)


_deconv_relu.defvjp(_deconv_fwd, _deconv_bwd)


class ReluBackwardRules(net.ForwardRules):
    """The forward pass with every ReLU replaced by ``relu_fn`` (same value, other VJP)."""

    walk = "relu-backward"

    def __init__(self, relu_fn: Callable[[jax.Array], jax.Array]):
        super().__init__()
        self.relu_fn = relu_fn

    def relu(self, eqn, z):
        return self.relu_fn(z)


def _modified_gradient(f: Callable, x: jax.Array, target, relu_fn, start: str) -> jax.Array:
    program = net.trace(f, x)
    return _target_gradient(
        lambda xp: net.interpret(program, xp, ReluBackwardRules(relu_fn)).output, x, target, start
    )


@register("guided_backprop")
def guided_backprop(f: Callable, x: jax.Array, *, target=None, start: str = "one") -> jax.Array:
    """Guided backpropagation (Springenberg et al. 2015).

    Backward through each ReLU only where the neuron is active *and* the incoming
    signal is positive: ``g_in = g_out * [z > 0] * [g_out > 0]``.

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit.
      start: the backward signal at the target logit: ``"one"`` (1, as Zennit and Captum)
        or ``"logit"`` (``f(x)[t]``, as iNNvestigate's reverse analyzers).

    Returns:
      Array of shape ``X``.

    Examples:
      >>> W1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
      >>> f = lambda x: jax.nn.relu(x @ W1) @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
      >>> slp.attributions.guided_backprop(f, jnp.array([1.0, 2.0]))
      Array([1. , 0.5], dtype=float32)
    """
    return _modified_gradient(f, x, target, _guided_relu, start)


@register("deconvnet")
def deconvnet(f: Callable, x: jax.Array, *, target=None, start: str = "one") -> jax.Array:
    """DeconvNet (Zeiler & Fergus 2014).

    Backward through each ReLU by a ReLU of the incoming signal, ``g_in = max(g_out, 0)``,
    whatever the neuron's state; max-pools route to their winners.

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit.
      start: the backward signal at the target logit: ``"one"`` or ``"logit"``, as in
        `guided_backprop`.

    Returns:
      Array of shape ``X``.

    Examples:
      >>> W1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
      >>> f = lambda x: jax.nn.relu(x @ W1) @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
      >>> slp.attributions.deconvnet(f, jnp.array([1.0, 2.0]))  # the inactive neurons pass too
      Array([ 1.5, -0.5], dtype=float32)
    """
    return _modified_gradient(f, x, target, _deconv_relu, start)

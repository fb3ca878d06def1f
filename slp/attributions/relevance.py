"""Layer-wise relevance propagation (LRP) and Deep Taylor decomposition on the network walker.

Every method here is one set of the walker's rules over the program that `slp.network.trace`
finds: the forward values are the network's own, and each dense/conv layer (a
``dot_general``/``conv_general_dilated`` equation together with the bias add that follows
it) carries a custom vector-Jacobian product that applies an LRP rule. ReLUs and max-pools
keep their ordinary derivative (relevance passes through active neurons and to the winner
of every pooling window); every other linear operation -- reshapes, transposes, average
pooling, additions of branches -- keeps its own transpose.

The backward signal is the *relevance per unit of value*, ``s = R / value``, the form in
which LRP is "gradient times input" with modified gradients: at every value ``v`` of the
network the relevance is ``R = v * s``. In this form an operation's own transpose is the
LRP-0 (z) rule, which redistributes relevance in proportion to contributions and is
conservative; a reshape passes relevance unchanged, an average pool splits a window's
relevance in proportion to its inputs. The rules divide by the layer outputs ``z``
explicitly and never by an input, so a zero input carries zero relevance without a 0/0.

Convention for the relevance that enters at the output (iNNvestigate's): the target
logit itself, ``R_out = f(x)[t]`` on the target neuron and 0 elsewhere (Deep Taylor:
``max(f(x)[t], 0)``, as iNNvestigate appends a ReLU to the output). With it LRP-0 on a
bias-free ReLU network equals gradient x input, and conservative rules sum to ``f(x)[t]``.
Other libraries differ only by a scale per example, since every map here is linear in
the output relevance for a fixed input:

* Zennit's attributors start from ``attr_output``, by default the whole output vector
  ``f(x)`` (all classes at once); with the usual one-hot ``attr_output`` its maps are
  this library's divided by ``f(x)[t]`` (``start="one"`` here, or
  ``convention="zennit"`` in `slp.attribute`).
* Captum's ``LRP`` multiplies by the target output, as here; Captum's gradient methods
  (and this library's gradient family) start from the gradient of the target logit.

References: Bach et al., "On pixel-wise explanations for non-linear classifier decisions
by layer-wise relevance propagation", PLoS ONE 2015; Montavon et al., "Explaining
nonlinear classification decisions with deep Taylor decomposition", Pattern Recognition
2017; Montavon et al., "Layer-wise relevance propagation: an overview", 2019; Alber et al.,
"iNNvestigate neural networks!", JMLR 2019.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from slp._src import network as net
from slp._src.relevance import (
    AffineLayer,
    AlphaBeta,
    Epsilon,
    LrpRules,
    ZBox,
    affine_layers,
)
from slp._src.relevance import FromInput as _FromInput
from slp._src.relevance import Pending as _Pending
from slp._src.relevance import divide as _divide
from slp.attributions.registry import check_logits_shape, register, resolve_target

__all__ = [
    "AffineLayer",
    "affine_layers",
    "Epsilon",
    "AlphaBeta",
    "ZBox",
    "lrp",
    "lrp_epsilon",
    "lrp_alpha_beta",
    "lrp_alpha1_beta0",
    "lrp_alpha2_beta1",
    "lrp_zplus",
    "deep_taylor",
    "deep_taylor_bounded",
]


_STARTS = ("logit", "positive_logit", "one")


def _check_start(start: str) -> None:
    if start not in _STARTS:
        raise ValueError(f"start must be one of {', '.join(_STARTS)}; got {start!r}")


def _bias_mode(bias) -> str:
    """The ``bias`` option of the alpha-beta family, checked."""
    if isinstance(bias, bool):
        raise TypeError(
            "bias is a string: 'split' (b+ in the positive, b- in the negative denominator; "
            "what bias=True meant), 'none' (bias=False) or 'full' (iNNvestigate's); "
            f"got {bias!r}"
        )
    if bias not in ("split", "none", "full"):
        raise ValueError(f"bias must be 'split', 'none' or 'full'; got {bias!r}")
    return bias


def lrp(
    f: Callable,
    x: jax.Array,
    *,
    rule,
    first_rule=None,
    target=None,
    start: str = "logit",
) -> jax.Array:
    """Relevance of every input component by LRP with the given layer rules.

    Args:
      f: per-example ReLU network ``f(x) -> logits`` of shape ``(classes,)``.
      x: one input, shape ``X``.
      rule: rule of every dense/conv layer (`Epsilon`, `AlphaBeta`).
      first_rule: rule of the layers fed directly by the input (e.g. `ZBox`); None: ``rule``.
      target: class index; None means the arg-max logit.
      start: the relevance that enters at the target output: ``"logit"`` (``f(x)[t]``;
        iNNvestigate and Captum), ``"positive_logit"`` (``max(f(x)[t], 0)``) or ``"one"``
        (1, Zennit with a one-hot ``attr_output``; 0 where ``f(x)[t] = 0``).

    Returns:
      Relevance, shape ``X`` (see the module docstring for the toolboxes' start values).

    Raises:
      ValueError: if ``start`` is not one of the three above; if ``f(x)`` is not a vector;
        if ``f`` has no dense or convolution layer, or its output is not computed by one;
        if ``rule`` needs input bounds (`ZBox`: only a ``first_rule``).

    Examples:
      >>> from slp.attributions.relevance import Epsilon, ZBox
      >>> rng = np.random.default_rng(0)
      >>> W1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1, 0) @ W2  # no biases
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> r = slp.attributions.lrp(f, x, rule=Epsilon(0.0), target=0)  # LRP-0
      >>> bool(jnp.allclose(r, x * jax.grad(lambda x: f(x)[0])(x), atol=1e-5))  # grad x input
      True
      >>> bool(jnp.allclose(r.sum(), f(x)[0], atol=1e-5))  # conserved: sum R = f(x)[t]
      True
      >>> slp.attributions.lrp(f, x, rule=ZBox(-1.0, 1.0))
      Traceback (most recent call last):
      ...
      ValueError: ZBox can only be the first_rule
    """
    _check_start(start)
    program = net.trace(f, x)
    check_logits_shape(program.output_shape)
    layers = affine_layers(program)
    if not layers:
        raise ValueError("LRP needs at least one dense or convolution layer; the network has none")
    if rule.needs_bounds:
        raise ValueError(f"{type(rule).__name__} can only be the first_rule")
    if first_rule is not None and first_rule.needs_bounds:
        shape = jnp.shape(x)
        dtype = jnp.result_type(x)
        primals = (
            x,
            jnp.broadcast_to(jnp.asarray(first_rule.low, dtype), shape),
            jnp.broadcast_to(jnp.asarray(first_rule.high, dtype), shape),
        )
    else:
        primals = (x,)

    def run(*inputs):
        rules = LrpRules(program, layers, rule, first_rule)
        out = net.interpret(program, inputs if first_rule is not None else inputs[0], rules).output
        if isinstance(out, (_FromInput, _Pending)):
            raise ValueError("the network output is not computed by a dense/conv layer")
        return out

    y, vjp = jax.vjp(run, *primals)
    t = resolve_target(y, target)
    # The cotangent is relevance per unit of value: one_hot gives R_out = f(x)[t].
    s0 = jax.nn.one_hot(t, y.shape[0], dtype=y.dtype)
    if start == "positive_logit":
        s0 = s0 * (y[t] > 0).astype(y.dtype)
    elif start == "one":
        s0 = _divide(s0, y[t])
    cots = vjp(s0)
    return sum(p * c for p, c in zip(primals, cots, strict=True))


@register("lrp_epsilon")
def lrp_epsilon(
    f: Callable, x: jax.Array, *, target=None, epsilon: float = 1e-7, start: str = "logit"
) -> jax.Array:
    """LRP-epsilon on every dense/conv layer (Bach et al. 2015), bias included.

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit.
      epsilon: stabiliser (iNNvestigate's default 1e-7; Zennit's 1e-6, Captum's 1e-9);
        epsilon -> 0 gives gradient x input.
      start: the relevance that enters at the target output: ``"logit"`` (``f(x)[t]``;
        iNNvestigate and Captum), ``"positive_logit"`` (``max(f(x)[t], 0)``) or ``"one"``
        (1, Zennit with a one-hot ``attr_output``; 0 where ``f(x)[t] = 0``).

    Returns:
      Relevance, shape ``X``.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1, 0) @ W2  # no biases
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> r = slp.attributions.lrp_epsilon(f, x, target=0)
      >>> np.asarray(r).round(3)
      array([-0.128, -0.424, -4.212, -3.719], dtype=float32)
      >>> bool(jnp.allclose(r.sum(), f(x)[0], atol=1e-5))  # without biases: sum R = f(x)[t]
      True
      >>> bool(jnp.allclose(slp.attribute(f, x, "lrp_epsilon", target=0), r))  # by name
      True
    """
    return lrp(f, x, rule=Epsilon(epsilon), target=target, start=start)


@register("lrp_alpha_beta")
def lrp_alpha_beta(
    f: Callable,
    x: jax.Array,
    *,
    target=None,
    alpha: float = 1.0,
    beta: float = 0.0,
    bias: str = "split",
    stabilizer: float = 1e-6,
    start: str = "logit",
) -> jax.Array:
    """LRP-alpha-beta on every dense/conv layer (Bach et al. 2015).

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit.
      alpha, beta: weights of positive and negative contributions, ``alpha - beta = 1``.
      bias: ``"split"`` (``b^+`` in the positive and ``b^-`` in the negative denominator,
        as Zennit), ``"none"`` (ignored) or ``"full"`` (the whole ``b`` in both, as
        iNNvestigate); see `AlphaBeta`.
      stabilizer: added to the denominators with their sign (Zennit's 1e-6; 0:
        iNNvestigate's, a zero denominator passes nothing).
      start: the relevance that enters at the target output: ``"logit"`` (``f(x)[t]``;
        iNNvestigate and Captum), ``"positive_logit"`` (``max(f(x)[t], 0)``) or ``"one"``
        (1, Zennit with a one-hot ``attr_output``; 0 where ``f(x)[t] = 0``).

    Returns:
      Relevance, shape ``X``.

    Raises:
      ValueError: if ``alpha - beta`` is not 1, ``alpha`` or ``beta`` is negative, or
        ``bias`` is not one of the three above; and `lrp`'s errors.
      TypeError: if ``bias`` is a bool (it is one of the three strings above).

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> r = slp.attributions.lrp_alpha_beta(f, x, target=1, alpha=2.0, beta=1.0)
      >>> np.asarray(r).round(3)
      array([-0.489,  0.613,  0.48 ,  0.142], dtype=float32)
      >>> slp.attributions.lrp_alpha_beta(f, x, alpha=1.0, beta=1.0)
      Traceback (most recent call last):
      ...
      ValueError: lrp_alpha_beta needs alpha - beta = 1; got alpha=1.0, beta=1.0
    """
    if abs(alpha - beta - 1) > 1e-12:
        raise ValueError(f"lrp_alpha_beta needs alpha - beta = 1; got alpha={alpha}, beta={beta}")
    rule = AlphaBeta(alpha, beta, _bias_mode(bias), stabilizer)
    return lrp(f, x, rule=rule, target=target, start=start)


def _fixed_alpha_beta(
    alpha: float, beta: float, name: str, *, bias: str = "split", doc: str | None = None
) -> Callable:
    """`lrp_alpha_beta` with ``alpha`` and ``beta`` fixed (and ``bias``'s default), as its
    own registered method; ``doc``: its docstring (default: a line naming alpha and beta)."""

    def method(
        f: Callable,
        x: jax.Array,
        *,
        target=None,
        bias: str = bias,
        stabilizer: float = 1e-6,
        start: str = "logit",
    ) -> jax.Array:
        rule = AlphaBeta(alpha, beta, _bias_mode(bias), stabilizer)
        return lrp(f, x, rule=rule, target=target, start=start)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = doc or _FIXED_ALPHA_BETA_DOC.format(name=name, alpha=alpha, beta=beta)
    return register(name)(method)


_FIXED_ALPHA_BETA_DOC = """`lrp_alpha_beta` with ``alpha={alpha:g}, beta={beta:g}``.

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit.
      bias: ``"split"`` (default), ``"none"`` or ``"full"``, as in `lrp_alpha_beta`.
      stabilizer: added to the denominators with their sign.
      start: the relevance that enters at the target output: ``"logit"`` (``f(x)[t]``;
        iNNvestigate and Captum), ``"positive_logit"`` (``max(f(x)[t], 0)``) or ``"one"``
        (1, Zennit with a one-hot ``attr_output``; 0 where ``f(x)[t] = 0``).

    Returns:
      Relevance, shape ``X``.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> r = slp.attributions.{name}(f, x, target=1)
      >>> r.shape
      (4,)
      >>> same = slp.attributions.lrp_alpha_beta(f, x, target=1, alpha={alpha:.1f}, beta={beta:.1f})
      >>> bool(jnp.allclose(r, same))
      True
    """


lrp_alpha1_beta0 = _fixed_alpha_beta(1.0, 0.0, "lrp_alpha1_beta0")
lrp_alpha2_beta1 = _fixed_alpha_beta(2.0, 1.0, "lrp_alpha2_beta1")
lrp_zplus = _fixed_alpha_beta(
    1.0,
    0.0,
    "lrp_zplus",
    bias="none",
    doc="""LRP z+ on every dense/conv layer: ``R_j = sum_k (a_j w_jk)^+ / sum_j (a_j w_jk)^+ R_k``.

    The bias is ignored, so on a bias-free network the relevance is conserved layer by
    layer (up to neurons whose positive contributions are all zero). Equal to
    alpha=1, beta=0 without bias; for ReLU inputs ``(a w)^+ = a w^+``.

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit.
      bias: ``"none"`` (the z+ rule as defined, iNNvestigate's ``ZPlus``) or ``"split"``
        (``b^+`` in the denominator: Zennit's ``ZPlus`` unless ``zero_params="bias"``).
      stabilizer: added to the denominators with their sign.
      start: the relevance that enters at the target output: ``"logit"`` (``f(x)[t]``;
        iNNvestigate and Captum), ``"positive_logit"`` (``max(f(x)[t], 0)``) or ``"one"``
        (1, Zennit with a one-hot ``attr_output``; 0 where ``f(x)[t] = 0``).

    Returns:
      Relevance, shape like ``x``.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> r = slp.attributions.lrp_zplus(f, x, target=1)
      >>> np.asarray(r).round(3)  # f(x)[1] > 0: relevance >= 0
      array([0.   , 0.147, 0.26 , 0.171], dtype=float32)
      >>> bool(jnp.allclose(r.sum(), f(x)[1], atol=1e-5))  # biases ignored: sum R = f(x)[t]
      True
    """,
)


@register("deep_taylor")
def deep_taylor(
    f: Callable, x: jax.Array, *, target=None, start: str = "positive_logit"
) -> jax.Array:
    """Deep Taylor decomposition as iNNvestigate 1.0.x computed it (``DeepTaylor``).

    Its α1β0 rule with the bias kept on every dense/conv layer (in iNNvestigate 1.0.x
    every Keras layer with a kernel "contains an activation", the output layer
    included), where the whole bias enters the positive denominator,
    ``R_j = sum_k (a_j w_jk)^+ / (sum_j (a_j w_jk)^+ + b_k) R_k``; ReLUs and max-pools pass
    relevance by their gradient (to active neurons, to each window's winner); a ReLU on
    the output makes the initial relevance ``max(f(x)[t], 0)``. Zero denominators pass
    nothing (iNNvestigate's safe division).

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: one input, shape ``X``.
      target: class index; None means the arg-max logit.
      start: the relevance that enters at the target output: ``"logit"`` (``f(x)[t]``;
        iNNvestigate and Captum), ``"positive_logit"`` (``max(f(x)[t], 0)``) or ``"one"``
        (1, Zennit with a one-hot ``attr_output``; 0 where ``f(x)[t] = 0``).

    Returns:
      Relevance, shape ``X``.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> x = jnp.array([1.0, -1.0, 1.0, -1.0])
      >>> np.asarray(f(x)).round(3)  # the logits
      array([-0.749,  0.578], dtype=float32)
      >>> np.asarray(slp.attributions.deep_taylor(f, x, target=1)).round(3)
      array([0.   , 0.164, 0.29 , 0.191], dtype=float32)
      >>> np.asarray(slp.attributions.deep_taylor(f, x, target=0))  # logit <= 0: nothing
      array([0., 0., 0., 0.], dtype=float32)
    """
    return lrp(f, x, rule=AlphaBeta(1.0, 0.0, "full", 0.0), target=target, start=start)


@register("deep_taylor_bounded")
def deep_taylor_bounded(
    f: Callable,
    x: jax.Array,
    *,
    target=None,
    stabilizer: float = 1e-6,
    bias: str = "none",
    low: Any = 0.0,
    high: Any = 1.0,
    start: str = "positive_logit",
) -> jax.Array:
    """Deep Taylor decomposition for bounded inputs (Montavon et al. 2017).

    The zB rule on the layers that read the input, z+ (bias ignored) on every other
    dense/conv layer; the initial relevance is ``max(f(x)[t], 0)``. (iNNvestigate 1.0.x's
    ``BoundedDeepTaylor`` used its biased α1β0 rule, `deep_taylor`'s, in the upper layers.)

    Args:
      f: per-example ReLU network ``f(x) -> logits``.
      x: one input, shape ``X``, with ``low <= x <= high``.
      target: class index; None means the arg-max logit.
      stabilizer: added to the denominators with their sign.
      bias: of the upper layers' alpha1-beta0 rule: ``"none"`` (z+), ``"split"`` (Zennit's
        ``ZPlus``) or ``"full"`` (iNNvestigate's ``BoundedDeepTaylor``).
      low, high: the input domain, scalars or arrays broadcastable to ``X``
        (default the [0, 1] pixel range).
      start: the relevance that enters at the target output: ``"logit"`` (``f(x)[t]``;
        iNNvestigate and Captum), ``"positive_logit"`` (``max(f(x)[t], 0)``) or ``"one"``
        (1, Zennit with a one-hot ``attr_output``; 0 where ``f(x)[t] = 0``).

    Returns:
      Relevance, shape ``X``.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> W1, b1, W2 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 3), (3,), (3, 2)])
      >>> f = lambda x: jnp.maximum(x @ W1 + b1, 0) @ W2  # 4 inputs, 3 ReLUs, 2 logits
      >>> pixels = jnp.array([1.0, 0.0, 1.0, 0.0])  # in [0, 1], the default bounds
      >>> r = slp.attributions.deep_taylor_bounded(f, pixels, target=1)
      >>> np.asarray(r).round(3)
      array([0.   , 0.062, 0.11 , 0.073], dtype=float32)
      >>> r2 = slp.attributions.deep_taylor_bounded(f, pixels, target=1, low=-1.0, high=2.0)
      >>> r2.shape  # the same input in a wider domain
      (4,)
    """
    return lrp(
        f,
        x,
        rule=AlphaBeta(1.0, 0.0, _bias_mode(bias), stabilizer),
        first_rule=ZBox(low, high, stabilizer),
        target=target,
        start=start,
    )

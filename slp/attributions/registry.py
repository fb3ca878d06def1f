"""One registry of attribution methods and one call to run any of them.

Every method is a function ``method(f, x, *, target=None, **options) -> map`` on one
example: ``f`` is a per-example network ``f(x) -> logits``, ``x`` one input, the map
has ``x``'s shape. ``target`` is a class index (None: the arg-max logit).

Every registered method returns a map of NaN when ``x``, a ReLU input or the output of
``f`` is NaN or inf (a non-finite input or weight): the network's state, and with it
every map, is then undefined.

Targets are checked by every registered method, Insens included (whose map does not
depend on the target), before the map is computed: a concrete target (a Python or NumPy
integer, a NumPy or JAX array, 0-d included) outside ``[0, C)`` for ``C`` logits raises
ValueError naming it and ``C`` (negative indices are not counted from the end), and a
target that is not an integer (a float, a bool) raises TypeError. A traced target (under
``jit`` or ``vmap``) cannot be checked when the program is built; when it is out of range
the map is NaN, as for a non-finite input, instead of the map of a clamped index (JAX's
indexing) or an all-zero one (a one-hot of an index that does not exist).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from slp._src import guards as _guards
from slp._src import network as net
from slp.attributions.conventions import convention_options

__all__ = [
    "register",
    "attribute",
    "available_methods",
    "get_method",
    "check_target",
    "resolve_target",
    "target_logit",
]

_METHODS: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator adding an attribution method to the registry under ``name``.

    The method is then available to `attribute`, `slp.attribute_dataset` and
    ``python -m slp maps``; it returns NaN where ``x``, a ReLU input or the output is not
    finite, or where a traced ``target`` is out of range.

    Args:
      name: the method's name in `available_methods`.

    Returns:
      A decorator: it registers ``fn(f, x, *, target=None, **options) -> map`` and returns
      the registered (guarded) function.

    Raises:
      ValueError: ``name`` is already registered (raised when the decorator is applied).

    Examples:
      Registering changes the registry for the whole process (not run here):

      >>> @slp.attributions.register("my_gradient")  # doctest: +SKIP
      ... def my_gradient(f, x, *, target=None):
      ...     return jax.grad(lambda x: f(x)[0 if target is None else target])(x)
      >>> slp.attribute(f, x, "my_gradient")  # doctest: +SKIP

      A name can be registered once:

      >>> slp.attributions.register("gradient")(lambda f, x, *, target=None: x)
      Traceback (most recent call last):
      ...
      ValueError: attribution method 'gradient' is already registered
    """

    def deco(fn: Callable) -> Callable:
        if name in _METHODS:
            raise ValueError(f"attribution method {name!r} is already registered")
        numeric = {
            n: p.default
            for n, p in inspect.signature(fn).parameters.items()
            if p.kind is p.KEYWORD_ONLY
            and isinstance(p.default, int | float)
            and not isinstance(p.default, bool)
        }

        @functools.wraps(fn)
        def method(f, x, *args, **kwargs):
            for option, value in kwargs.items():
                if option in numeric and isinstance(value, str):
                    raise TypeError(
                        f"{name}: option {option} takes a number (default "
                        f"{numeric[option]!r}); got the string {value!r}"
                    )
            ok, out_shape = _defined(f, x)
            target = kwargs.get("target")
            if target is not None and len(out_shape) == 1:  # else the method says what f lacks
                ok = ok & check_target(target, out_shape[0])
            return _guards.nan_unless(ok, fn(f, x, *args, **kwargs))

        _METHODS[name] = method
        return method

    return deco


def _defined(f: Callable, x: jax.Array) -> tuple[jax.Array, tuple[int, ...]]:
    """Whether ``x``, every ReLU input and the output of ``f`` are finite (bool scalar), and
    the shape of ``f(x)``."""
    try:
        program = net.trace(f, x)
    except net.UnsupportedOperationError:  # not a network the walker describes (tanh)
        y = f(x)
        return _guards.all_finite(x, y), tuple(jnp.shape(y))
    return net.defined(x, net.forward(program, x)), tuple(program.output_shape)


def available_methods() -> tuple[str, ...]:
    """Names of the registered attribution methods, in registration order.

    Returns:
      A tuple of names, each a valid ``method`` of `attribute`.

    Examples:
      >>> slp.available_methods()[:4]
      ('insens', 'gradient', 'gradient_x_input', 'integrated_gradients')
    """
    return tuple(_METHODS)


def get_method(name: str) -> Callable:
    """The registered method ``name``.

    Args:
      name: a name from `available_methods`.

    Returns:
      The method, ``fn(f, x, *, target=None, **options) -> map``.

    Raises:
      ValueError: no method of that name; the message lists those that exist.
      TypeError: ``name`` is not a string.

    Examples:
      >>> slp.attributions.get_method("gradient").__name__
      'gradient'
    """
    if not isinstance(name, str):
        raise TypeError(
            f"an attribution method is named by a string from slp.available_methods(); got "
            f"{type(name).__name__} (the call is slp.attribute(f, x, method))"
        )
    try:
        return _METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown attribution method {name!r}; available: {', '.join(_METHODS)}"
        ) from None


def attribute(
    f: Callable,
    x: jax.Array,
    method: str,
    *,
    target=None,
    convention: str | None = None,
    batched: bool = False,
    **options,
) -> jax.Array:
    """Attribution map of ``method`` for the network ``f`` at one input ``x``.

    Args:
      f: per-example network ``f(x) -> logits`` (shape ``(classes,)``).
      x: one input, any shape ``X``.
      method: a name from `available_methods`.
      target: class index whose logit is explained, in ``[0, C)`` for ``C`` logits; None
        means the arg-max logit. With ``batched``: None, one index for all examples, or an
        integer array ``(B,)``. A concrete index out of range raises ValueError (the first
        offending example named), a float or bool TypeError; a traced one (under ``jit`` or
        ``vmap``) out of range gives a map of NaN (module docstring).
      convention: None (this library's defaults), ``"innvestigate"``, ``"zennit"`` or
        ``"captum"``: the start value, quadrature, bias handling and stabiliser of that
        toolbox (`slp.attributions.conventions`); explicit ``options`` still win.
      batched: ``f`` is a function of a batch (``model.apply(params, xb)``) and ``x`` a
        batch ``(B, ...)``; the result is one map per example, ``(B, ...)``. Methods that
        take a ``key`` get one key per example, split from the one given.
      **options: the method's keyword options (see its docstring).

    Returns:
      Array of shape ``X`` (with ``batched``: ``x``'s shape).

    Raises:
      ValueError: an unknown method, or a concrete ``target`` out of range or of the wrong
        shape.
      TypeError: an option the method does not take, a ``target`` that is not an integer,
        or ``f`` that is not callable (the arguments in another order).

    Examples:
      >>> W1 = jnp.array([[1.0, -2.0, 0.5], [0.5, 1.0, -1.0]])
      >>> f = lambda x: jax.nn.relu(x @ W1) @ jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
      >>> x = jnp.array([1.0, 2.0])
      >>> slp.attribute(f, x, "lrp_epsilon")  # explains the arg-max logit, f(x)[0] = 2
      Array([1., 1.], dtype=float32)
      >>> slp.attribute(f, x, "integrated_gradients", convention="captum", target=0)
      Array([1., 1.], dtype=float32)
    """
    if not callable(f):
        got = repr(f) if isinstance(f, str) else f"a {type(f).__name__}"
        raise TypeError(
            f"slp.attribute(f, x, method) takes the network function first; got {got} as f"
        )
    fn = get_method(method)
    options = {**convention_options(convention, method), **options}
    params = inspect.signature(fn).parameters
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(known) - {"target"})
    if unknown and not accepts_any:
        raise TypeError(
            f"method {method!r} got unknown option(s) {unknown}; its options are: "
            f"{', '.join(n for n in known if n != 'target') or 'none'}"
        )
    if not batched:
        return fn(f, x, target=target, **options)
    return _batched(fn, f, x, target, options)


def _batched(fn: Callable, f: Callable, xb: jax.Array, target, options: dict) -> jax.Array:
    """``fn`` on every example of the batch ``xb`` for a function of a batch ``f``."""
    net.check_input(xb, "a batch of examples")
    xb = jnp.asarray(xb)
    if xb.ndim < 1 or xb.shape[0] < 1:
        raise ValueError(f"batched=True needs x with a leading batch axis; got shape {xb.shape}")
    n = xb.shape[0]
    one = _guards.per_example(f)
    if target is not None:
        out = jax.eval_shape(one, jax.ShapeDtypeStruct(xb.shape[1:], xb.dtype))
        if len(out.shape) == 1:  # else the method says what f lacks
            check_target(target, out.shape[0], batched=True, num_examples=n)
    t = target if target is None else jnp.broadcast_to(jnp.asarray(target), (n,))
    key = options.pop("key", None)
    keys = None if key is None else jax.random.split(key, n)

    def each(x, t, k):
        extra = {} if k is None else {"key": k}
        return fn(one, x, target=t, **extra, **options)

    return jax.vmap(each, in_axes=(0, None if t is None else 0, None if keys is None else 0))(
        xb, t, keys
    )


def _describe(target, shape: tuple[int, ...], dtype) -> str:
    if isinstance(target, jax.core.Tracer):
        return f"a traced value of dtype {dtype} and shape {shape}"
    if shape == ():
        return f"{target!r} ({type(target).__name__})"
    return f"an array of dtype {dtype} and shape {shape}"


def check_target(
    target, num_logits: int, *, batched: bool = False, num_examples: int | None = None
) -> jax.Array:
    """Checks class indices against the number of logits ``C``; a traced one's verdict.

    Args:
      target: a class index: a Python or NumPy integer, a 0-d NumPy or JAX array, or a
        traced integer; with ``batched`` also an integer array ``(N,)``, one per example.
      num_logits: ``C``, the length of ``f(x)``.
      batched: ``target`` may be one index per example.
      num_examples: with ``batched``, ``N`` (None: any length).

    Returns:
      Bool scalar: True for a concrete ``target`` (which passed the checks); for a traced
      one, whether every entry is in ``[0, C)``.

    Raises:
      TypeError: ``target`` is not an integer (a float, a bool, a string).
      ValueError: a concrete entry is outside ``[0, C)`` (negative indices are not counted
        from the end), naming it (and, for an array, its position); or a wrong shape.
    """
    if isinstance(target, jax.core.Tracer):
        shape, dtype = tuple(target.shape), target.dtype
    elif isinstance(target, int) and not isinstance(target, bool):
        shape, dtype = (), np.dtype(np.int64)  # a Python int of any size
    else:
        arr = np.asarray(target)
        shape, dtype = arr.shape, arr.dtype
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(
            f"target must be an integer class index (or None for the arg-max logit); got "
            f"{_describe(target, shape, dtype)}"
        )
    if shape != () and not (batched and len(shape) == 1 and num_examples in (None, shape[0])):
        if batched and len(shape) == 1:
            raise ValueError(f"target has {shape[0]} entries for {num_examples} examples")
        want = "a class index or (N,) indices" if batched else "one class index for one example"
        raise ValueError(f"target must be {want}; got shape {shape}")
    if isinstance(target, jax.core.Tracer):
        return jnp.all((target >= 0) & (target < num_logits))
    # A Python int may exceed every NumPy integer type: compared as an object.
    values = np.asarray([target], object) if isinstance(target, int) else arr.reshape(-1)
    bad = np.flatnonzero((values < 0) | (values >= num_logits))
    if len(bad):
        i = bad[0]
        where = f"target {values[i]}" if shape == () else f"target[{i}] = {values[i]}"
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(
            f"{where} is out of range for {num_logits} output logits (valid: 0 to "
            f"{num_logits - 1}){more}"
        )
    return jnp.asarray(True)


def check_logits_shape(shape) -> None:
    """Raises ValueError unless ``shape`` (of ``f(x)`` for one example) is a vector's, with
    the usual fix for a scalar output and for a batch axis of one left in."""
    shape = tuple(shape)
    if len(shape) == 1:
        return
    hint = ""
    if not shape:
        hint = " (a scalar output, e.g. one score: explain lambda x: f(x)[None])"
    elif len(shape) == 2 and shape[0] == 1:
        hint = " (a batch axis of one left in: explain lambda x: f(x)[0])"
    raise ValueError(f"attribution needs f(x) to be a vector of logits; got {shape}{hint}")


def resolve_target(y: jax.Array, target):
    """The class whose logit is explained, for the logits ``y`` of one example.

    ``target`` itself when given (checked by `check_target` when concrete; a traced index
    out of range is the registered methods' NaN, see the module docstring), else the
    arg-max of ``y`` (never differentiated).

    Raises:
      ValueError: if ``y`` is not a vector, or a concrete ``target`` is out of range.
      TypeError: if ``target`` is not an integer.
    """
    check_logits_shape(y.shape)
    if target is None:
        return jnp.argmax(jax.lax.stop_gradient(y))
    check_target(target, y.shape[0])
    return target


def target_logit(f: Callable, target) -> Callable[[jax.Array], jax.Array]:
    """``x -> f(x)[target]`` (arg-max logit at ``x`` when ``target`` is None)."""

    def g(x):
        y = f(x)
        return y[resolve_target(y, target)]

    return g

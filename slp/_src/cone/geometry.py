"""The cone route's geometry: where every value's elements sit relative to the input.

`cone_geometry` (static: from the program and shapes alone) first chooses the spatial input
axes: every axis longer than 1 that no convolution or channel-dense layer contracts as
channels (`_channel_axes`). It then computes, operation by operation up to the end of the
structured part, the geometry of every value (`Geom`) and the block layout, asking each
operation's `ConeRule` (its declaration's ``cone`` entry) for its part. It returns a
`ConeGeometry`, or a `ConeRefusal` that names the operation the route does not take.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, NamedTuple

import jax
import numpy as np

from slp._src import interpreter as interp
from slp._src import provenance as _provenance
from slp._src.interpreter import Refusal

# ----------------------------------------------------------------------------------
# Geometry.


@dataclasses.dataclass(frozen=True)
class Geom:
    """Where a value's elements sit relative to the input, in the cone route.

    Along every spatial input axis ``k``, element ``p`` of the value's axis linked to
    ``k`` depends on input coordinates ``sigma_k p + beta_k ... + recep_k - 1``, so
    input coordinate ``j`` reaches at most ``width_k`` consecutive elements, starting
    at ``floor((j - beta_k) / sigma_k) - width_k + 1`` (the element's *cone*).
    ``sigma``, ``beta`` and ``recep`` are integers, or `fractions.Fraction` after an
    upsampling (a transposed convolution, a nearest-neighbour resize: ``sigma < 1``); the
    bounds above then hold as real intervals, and ``width = ceil(recep / sigma)`` still
    bounds the number of elements reached.

    Attributes:
      shape: the value's shape.
      link: per value axis, the spatial input axis ``k`` it follows, or -1 (free axis:
        batch, channels).
      sigma, beta, recep, width: per spatial input axis.
    """

    shape: tuple[int, ...]
    link: tuple[int, ...]
    sigma: tuple[int, ...]
    beta: tuple[int, ...]
    recep: tuple[int, ...]
    width: tuple[int, ...]

    def window_shape(self) -> tuple[int, ...]:
        return tuple(
            self.width[k] if k >= 0 else n for n, k in zip(self.shape, self.link, strict=True)
        )

    def axis_of(self, k: int) -> int:
        return self.link.index(k)


@dataclasses.dataclass(frozen=True)
class Flat:
    """A cone value reshaped so that spatial and free axes merge (only the cut takes it).

    ``geom``: the geometry before the reshape (the block's tangents keep its layout).
    """

    geom: Geom


@dataclasses.dataclass(frozen=True)
class Global:
    """A cone value pooled over all its spatial axes (global sum, average or max pooling).

    Its tangents are ``(r_0, ..., r_{K-1}, f) + shape``, exact: every position an input
    element reaches was pooled. ``geom``: the geometry before the pooling.
    """

    geom: Geom
    shape: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class ConeRefusal:
    """Why the cone route does not take a network.

    Attributes:
      reason: what rules it out.
      primitive: name of the operation that rules it out (None: the network as a whole).
      index: that operation's index into ``program.eqns`` (None: none).
      where: the nested calls the operation sits in (`slp._src.network.Eqn.where`).
      context: where the operation sits in the user's terms, e.g. ``"inside resize,
        model.py:12"`` (`slp._src.provenance`), or "".
    """

    reason: str
    primitive: str | None = None
    index: int | None = None
    where: tuple[str, ...] = ()
    context: str = ""

    def __str__(self) -> str:
        if self.primitive is None:
            return f"cone route: {self.reason}"
        ctx = self.context or (f"inside {' > '.join(self.where)}" if self.where else "")
        ctx = f" ({ctx})" if ctx else ""
        return f"cone route: '{self.primitive}' at equation {self.index}{ctx}: {self.reason}"


def refused_at(i: int, eqn, reason: str) -> ConeRefusal:
    """The `ConeRefusal` of operation ``i`` of the program, named in the user's terms."""
    name = eqn.primitive.name
    found = _provenance.describe(eqn.source, eqn.where, name)
    inside = found.label if found.label not in (None, name) else " > ".join(eqn.where)
    context = [f"inside {inside}"] if inside else []
    context += [found.location] if found.location else []
    return ConeRefusal(reason, name, i, eqn.where, ", ".join(context))


@dataclasses.dataclass(frozen=True)
class ConeRule:
    """The cone route's rule for one primitive (its ``cone`` entry in `slp._src.primitives`).

    Attributes:
      geometry: ``(ctx, eqn, ins) -> (outs, data)`` or a `Refusal`: the geometry of the
        outputs from the operands' (``ins``: per operand a `Geom`, `Flat`, `Global`,
        or None for a constant; ``ctx``: a `GeoCtx`) and static data for the tangents.
      tangent: ``(p, eqn, step, args) -> outs``: the block's tangents of the outputs
        (``p``: a `Pass`; ``step``: the equation's `Step`; ``args``: constants or
        `ConeVal`).
      carry: ``(eqn, ins, shapes) -> (outs, channels)``: per output axis the input axis
        it carries unchanged (-1: none), from the operands' (None for constants), and the
        input axes contracted as channels. None: an output of its operand's rank carries
        the operand's axes (elementwise and windowed operations).
      prepare: ``(p, eqn, step, args) -> data``: loop-invariant data computed once,
        outside the loop over blocks (a convolution's cone matrices), or None.
      elementwise: the operation maps each element to itself alone (a cast, a negation),
        so it also takes a flattened feature map (e.g. the cast to a dense layer's dtype
        between a flatten and that layer).
      convolution: a convolution (the route needs one before its cut).
    """

    name: str
    geometry: Callable
    tangent: Callable
    carry: Callable | None = None
    prepare: Callable | None = None
    elementwise: bool = False
    convolution: bool = False


class Step(NamedTuple):
    """One operation of the geometry: its index into ``program.eqns``, its rule, operand
    and output geometries, and the rule's static data."""

    index: int
    rule: ConeRule
    ins: tuple
    outs: tuple
    data: Any


@dataclasses.dataclass(frozen=True)
class ConeGeometry:
    """Static layout of the cone route for one program (`cone_geometry`).

    Input elements are processed in *blocks* of ``sigma_tot`` consecutive elements per
    spatial axis (``sigma_tot``: the total stride at the end), elements
    ``j = sigma_tot B + r``. In a value of geometry ``g`` the cone of offset ``r`` of
    block ``B`` starts at ``rho B + d(r)`` with ``rho = sigma_tot / g.sigma`` and a
    static ``d(r)``.

    Attributes:
      spatial: input axes that are spatial (``k`` = position in this tuple).
      sigma_tot: per spatial axis, the block size.
      in_shape: the input's shape.
      blocks: int ``(n_blocks, K)``, the block indices ``B``.
      end: index into ``program.eqns`` where the route stops (the cut or the last ReLU).
      order: indices of the operations walked (those the end and the ReLUs before it
        need), in program order, ``end`` last.
      steps: per walked input-dependent operation, its `Step`.
      values: per value id, its `Geom`, `Flat` or `Global` (input-dependent values).
      shapes: per value id, its shape.
      dtypes: per value id, its dtype: the block's tangents of a value are in the value's
        own dtype (a network that casts, e.g. to bfloat16 or float64, casts its tangents).
    """

    spatial: tuple[int, ...]
    sigma_tot: tuple[int, ...]
    in_shape: tuple[int, ...]
    blocks: np.ndarray
    end: int
    order: tuple[int, ...]
    steps: Mapping[int, Step]
    values: Mapping[int, Any]
    shapes: Mapping[int, tuple[int, ...]]
    dtypes: Mapping[int, Any] = dataclasses.field(default_factory=dict)

    def starts(self, g: Geom, k: int) -> tuple[int, np.ndarray]:
        """``(rho, d)``: cone start ``rho B + d[r]`` of element offset ``r`` along ``k``
        (exact rational arithmetic: ``sigma`` may be a fraction)."""
        rho = Fraction(self.sigma_tot[k]) / Fraction(g.sigma[k])
        if rho.denominator != 1:  # the block size is a multiple of every sigma by construction
            raise RuntimeError(f"cone block {self.sigma_tot} is not a multiple of {g.sigma}")
        beta, sigma = Fraction(g.beta[k]), Fraction(g.sigma[k])
        d = [math.floor((r - beta) / sigma) - g.width[k] + 1 for r in range(self.sigma_tot[k])]
        return int(rho), np.asarray(d, np.int64)

    def shift(
        self, g: Geom, ng: Geom, k: int, stride: int = 1, pad: int = 0, scale: int = 1
    ) -> np.ndarray:
        """Per element offset ``r``: ``kappa`` such that slot ``e`` of the cone in ``ng``
        (a window of ``g`` with ``stride`` and leading ``pad``, e.g. a pooling or a
        convolution) starts at slot ``stride e + kappa`` of the cone in ``g``:
        ``stride (rho' B + d'[r]) - pad - (rho B + d[r])`` with ``stride rho' = rho``.
        ``scale``: an input-dilated window (a transposed convolution) reads ``g``'s
        positions spread ``scale`` apart: ``kappa`` counts dilated slots, ``scale`` per slot
        of ``g`` (``stride rho' = scale rho``)."""
        return stride * self.starts(ng, k)[1] - pad - scale * self.starts(g, k)[1]


class GeoCtx(NamedTuple):
    """What a geometry rule reads besides its operands: ``nk`` spatial axes, value shapes,
    and the program (for `static_value`)."""

    nk: int
    shapes: Mapping[int, tuple[int, ...]]
    program: Any

    def shape(self, a) -> tuple[int, ...]:
        """Shape of operand ``a`` (a value id or a literal)."""
        return self.shapes[a] if isinstance(a, int) else tuple(np.shape(a.val))

    def static_value(self, a) -> np.ndarray | None:
        """The value of a constant operand ``a`` (e.g. a gather's indices, computed from
        ``iota``) as a NumPy array, evaluated from the program's constants; None if it is
        not known when the geometry is built (it depends on a traced constant)."""
        try:
            with jax.ensure_compile_time_eval():
                return np.asarray(interp.constant_value(self.program, a))
        except (jax.errors.JAXTypeError, KeyError):  # a traced constant
            return None


def single(eqn, ins, what: str):
    """The one input-dependent operand, or a `Refusal`."""
    deps = [v for v, d in zip(ins, eqn.dep, strict=True) if d]
    if len(deps) != 1 or eqn.primitive.multiple_results:
        return Refusal(f"{what} with several input-dependent operands")
    return deps[0]


def _needed(program, end: int) -> tuple[int, ...]:
    """Indices of the operations that the end and the ReLUs before it read, in order (from
    the program's `ancestors`, recorded when it was traced)."""
    return program.reads([end] + [i for i in program.relu_eqns if i < end])


def _avals(program, order) -> Mapping[int, Any]:
    """The shape and dtype of every value the operations ``order`` read or make (as traced:
    `slp._src.interpreter.Program.avals`)."""
    del order  # the program records every value's
    return program.avals


def _rule_of(eqn) -> ConeRule | Refusal:
    decl = eqn.decl
    return Refusal("not in the primitive registry") if decl is None else decl.cone


def same_rank_carry(eqn, ins, shapes):
    """An output of its operand's rank carries the operand's axes (elementwise, windows)."""
    src = next(c for c in ins if c is not None)
    outs = [src if len(shapes[o]) == len(src) else (-1,) * len(shapes[o]) for o in eqn.outputs]
    return outs, set()


class ChannelCarry:
    """The input axes that operations contract as channels, found as a forward walk passes
    (`visit` at every input-dependent operation, in program order): the receptive boxes'
    walk of the planner, so that `cone_geometry` needs no walk of its own for them.

    Carries, per input-dependent value, the input axis behind each of its axes (-1: none)
    through relabelling operations (transposes, reshapes that add or drop unit axes), and
    records each operation that contracts input axes as channels (a convolution's input
    features, a dense layer over channels). `channels` keeps those of the operations a cone
    route walks.
    """

    def __init__(self, program):
        self.program = program
        self.shapes = {i: tuple(v.shape) for i, v in program.avals.items()}
        self.carry = {program.input_id: tuple(range(len(program.input_shape)))}
        self.found: list[tuple[int, int]] = []  # (operation, input axis), in program order
        self.failed: set[int] = set()  # operations whose carry rule did not take them

    def visit(self, i: int, eqn, *, strict: bool = True) -> None:
        """Carries the axes through operation ``i`` (``eqn``). Without ``strict``, an
        operation its carry rule does not take (one after the route's end, which the rule
        never sees otherwise) is recorded in ``failed`` rather than raising."""
        ins = [self.carry.get(a) if d else None for a, d in zip(eqn.inputs, eqn.dep, strict=True)]
        if all(c is None for c in ins):
            return
        rule = _rule_of(eqn)
        fn = rule.carry if isinstance(rule, ConeRule) and rule.carry else same_rank_carry
        try:
            outs, found = fn(eqn, ins, self.shapes)
        except Exception:
            if strict:
                raise
            self.failed.add(i)
            return
        self.found += [(i, a) for a in found if a >= 0]
        self.carry.update(zip(eqn.outputs, outs, strict=True))

    def channels(self, order, end: int) -> dict[int, int] | None:
        """Input axis -> the first operation among ``order`` before ``end`` that contracts it
        as channels; None if the carry rule failed at one of those operations."""
        keep = {i for i in order if i < end}
        if keep & self.failed:
            return None
        out: dict[int, int] = {}
        for i, a in self.found:
            if i in keep:
                out.setdefault(a, i)
        return out


def _channel_axes(program, order, end: int) -> dict[int, int]:
    """`ChannelCarry.channels` by a walk of its own over the operations ``order`` before
    ``end``."""
    interp.walked("channel-axes")
    carry = ChannelCarry(program)
    for i in order:
        eqn = program.eqns[i]
        if i < end and eqn.kind != "const":
            carry.visit(i, eqn)
    return carry.channels(order, end)


def _spatial_axes(program, x_shape, channels: dict[int, int]) -> tuple[int, ...] | ConeRefusal:
    """The spatial input axes: every axis longer than 1 not contracted as channels."""
    spatial = tuple(a for a, n in enumerate(x_shape) if n > 1 and a not in channels)
    if spatial:
        return spatial
    mixed = sorted((i, a) for a, i in channels.items() if x_shape[a] > 1)
    if mixed:  # e.g. an image resize: dense matrices over the height and the width
        i = mixed[0][0]
        axes = [str(a) for j, a in mixed if j == i]
        return refused_at(
            i,
            program.eqns[i],
            f"it contracts input axis {', '.join(axes)} (longer than 1) as a dense layer "
            "over channels does, so no spatial axis is left for the route",
        )
    return ConeRefusal(
        "the input has no spatial axis (no axis longer than 1 that is not contracted as channels)"
    )


def _cut_step(i: int, eqn, ins: tuple):
    """The cut (the route's end, a dense layer over the whole input; it takes a flattened or
    pooled value too): ``((), step, the geometry of its operand)`` or a `ConeRefusal`."""
    rule = _rule_of(eqn)
    if isinstance(rule, Refusal):
        return refused_at(i, eqn, rule.reason)
    z = single(eqn, ins, "the first dense layer")
    if isinstance(z, Refusal):
        return refused_at(i, eqn, z.reason)
    return (), Step(i, rule, ins, (), None), (z if isinstance(z, Geom) else z.geom)


def _step(ctx: GeoCtx, i: int, eqn, ins: tuple):
    """The geometry of operation ``i`` (not the cut): ``(outs, step, None)`` or a
    `ConeRefusal`."""
    rule = _rule_of(eqn)
    if isinstance(rule, Refusal):
        return refused_at(i, eqn, rule.reason)
    if any(isinstance(v, Flat) for v in ins) and not rule.elementwise:
        return refused_at(
            i,
            eqn,
            "applied to a flattened feature map (only the first dense layer over "
            "the whole input may take one)",
        )
    res = rule.geometry(ctx, eqn, ins)
    if isinstance(res, Refusal):
        return refused_at(i, eqn, res.reason)
    outs, data = res
    for o in outs:
        if isinstance(o, Geom) and sorted(k for k in o.link if k >= 0) != list(range(ctx.nk)):
            return refused_at(i, eqn, "a value that does not keep every spatial axis")
    return tuple(outs), Step(i, rule, ins, tuple(outs), data), None


def _block_sizes(values, last) -> tuple[int, ...]:
    """The block size per spatial axis: the smallest integer that is a whole multiple of
    every value's ``sigma`` (the last value's, unless the network upsamples: then
    ``sigma`` may be a fraction, and the block spans ``sigma_tot / sigma`` elements of
    each value)."""
    geoms = [v.geom if isinstance(v, (Flat, Global)) else v for v in values.values()]
    out = []
    for k, s in enumerate(last):
        n = Fraction(s).numerator
        for g in geoms:
            n = math.lcm(n, Fraction(g.sigma[k]).numerator)
        out.append(int(n))
    return tuple(out)


def cone_geometry(
    program, x_shape, end: int, carry: ChannelCarry | None = None
) -> ConeGeometry | ConeRefusal:
    """The cone route's geometry for ``program`` at inputs of shape ``x_shape``.

    Args:
      program: the traced network (`slp._src.network.Program`).
      x_shape: the input shape.
      end: index into ``program.eqns`` of the cut (a dense layer over the whole input) or
        of the last ReLU; the route stops there.
      carry: what a walk that visited every input-dependent operation found (the planner's
        boxes walk): the channel axes (`ChannelCarry`), and with a `GeometryCarry` the
        geometry of every operation; None: a walk of its own finds them. A walk of its own
        also runs where the carried geometry does not hold for this ``end`` (it assumed
        other spatial axes, or it does not reach an operation the route needs).

    Returns:
      The `ConeGeometry`, or a `ConeRefusal` naming what rules the route out.
    """
    x_shape = tuple(x_shape)
    order = _needed(program, end)
    avals = _avals(program, order)
    shapes = {i: tuple(v.shape) for i, v in avals.items()}
    channels = None if carry is None else carry.channels(order, end)
    if channels is None:
        channels = _channel_axes(program, order, end)
    spatial = _spatial_axes(program, x_shape, channels)
    if isinstance(spatial, ConeRefusal):
        return spatial
    found = None
    if isinstance(carry, GeometryCarry) and carry.holds(x_shape, spatial):
        known = carry.geometry
        found = _assemble(program, x_shape, spatial, order, end, lambda i, *_: known.get(i))
    if found is None:  # the rules' geometry, operation by operation, in a walk of its own
        ctx = GeoCtx(len(spatial), shapes, program)
        interp.walked("geometry")
        found = _assemble(
            program, x_shape, spatial, order, end, lambda i, eqn, ins: _step(ctx, i, eqn, ins)
        )
    if isinstance(found, ConeRefusal):
        return found
    steps, values, last = found
    sigma_tot = _block_sizes(values, (last.geom if isinstance(last, Global) else last).sigma)
    nk = len(spatial)
    ranges = [np.arange(-(-x_shape[a] // s)) for a, s in zip(spatial, sigma_tot, strict=True)]
    blocks = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, nk)
    dtypes = {i: v.dtype for i, v in avals.items()}
    return ConeGeometry(
        spatial, sigma_tot, x_shape, blocks, end, order, steps, values, shapes, dtypes
    )


def _input_geom(x_shape, spatial) -> Geom:
    """The input's geometry: its spatial axes linked in order, unit strides and windows."""
    nk = len(spatial)
    link = tuple(spatial.index(a) if a in spatial else -1 for a in range(len(x_shape)))
    ones, zeros = (1,) * nk, (0,) * nk
    return Geom(tuple(x_shape), link, ones, zeros, ones, ones)


def _assemble(program, x_shape, spatial, order, end: int, step_of: Callable):
    """``(steps, values, last)`` of the operations ``order`` up to ``end``, each
    operation's from ``step_of(i, eqn, ins)`` (`_step`'s result, or None where it is not
    known: then None), the cut's (`_cut_step`) here; or the first `ConeRefusal`.

    ``last``: the geometry of the value the route ends at (the cut's operand or the last
    ReLU's input)."""
    values: dict[int, Any] = {program.input_id: _input_geom(x_shape, spatial)}
    steps: dict[int, Step] = {}
    convs, last = 0, None
    for i in order:
        eqn = program.eqns[i]
        if eqn.kind == "const":
            continue
        ins = tuple(values[a] if d else None for a, d in zip(eqn.inputs, eqn.dep, strict=True))
        cut = i == end and eqn.kind != "relu"
        found = _cut_step(i, eqn, ins) if cut else step_of(i, eqn, ins)
        if found is None or isinstance(found, ConeRefusal):
            return found
        outs, steps[i], cut_operand = found
        if cut_operand is not None:
            last = cut_operand
            break
        values.update(zip(eqn.outputs, outs, strict=True))
        convs += steps[i].rule.convolution
        if i == end:
            last = next(v for v in ins if v is not None)
    if convs == 0:
        return ConeRefusal("no convolution before the first dense layer over the whole input")
    return steps, values, last


class GeometryCarry(ChannelCarry):
    """`ChannelCarry`, and the geometry of every input-dependent operation as the same
    forward walk passes (the planner's boxes walk), so that `cone_geometry` needs no walk of
    its own: each operation's `ConeRule` runs once, on that walk.

    The geometry needs the spatial axes, and so the channel axes, before the route's end is
    known (the cut comes from the boxes). It takes those that the operations up to the first
    convolution contract (the operations before it wait for it; their geometry is computed
    then, once). `cone_geometry` uses it where the axes it finds for its end are the same,
    and walks again otherwise.
    """

    def __init__(self, program):
        super().__init__(program)
        self.spatial: tuple[int, ...] | None = None
        self.waiting: list[tuple[int, Any]] = []  # operations before the first convolution
        self.values: dict[int, Any] = {}
        self.geometry: dict[int, Any] = {}  # per operation reached: `_step`'s result
        self.ctx: GeoCtx | None = None

    def visit(self, i: int, eqn, *, strict: bool = True) -> None:
        super().visit(i, eqn, strict=strict)
        if self.ctx is not None:
            self._geometry(i, eqn)
            return
        self.waiting.append((i, eqn))
        rule = _rule_of(eqn)
        if not (isinstance(rule, ConeRule) and rule.convolution) or i in self.failed:
            return
        channels: dict[int, int] = {}
        for j, a in self.found:
            channels.setdefault(a, j)
        spatial = _spatial_axes(self.program, self.program.input_shape, channels)
        if isinstance(spatial, ConeRefusal):
            self.waiting = []
            return
        self.spatial = spatial
        self.ctx = GeoCtx(len(spatial), self.shapes, self.program)
        self.values[self.program.input_id] = _input_geom(self.program.input_shape, spatial)
        for j, e in self.waiting:
            self._geometry(j, e)
        self.waiting = []

    def _geometry(self, i: int, eqn) -> None:
        """Records operation ``i``'s geometry (not as a cut) where its operands have one."""
        if any(d and a not in self.values for a, d in zip(eqn.inputs, eqn.dep, strict=True)):
            return  # it reads a value the route does not reach
        ins = tuple(self.values[a] if d else None for a, d in zip(eqn.inputs, eqn.dep, strict=True))
        try:
            found = _step(self.ctx, i, eqn, ins)
        except Exception:  # noqa: BLE001 - a walk of its own meets it again if the route needs it
            return
        self.geometry[i] = found
        if not isinstance(found, ConeRefusal):
            self.values.update(zip(eqn.outputs, found[0], strict=True))

    def holds(self, x_shape, spatial) -> bool:
        """Whether the geometry carried is that of inputs ``x_shape`` with ``spatial`` axes."""
        return self.spatial == tuple(spatial) and tuple(x_shape) == tuple(self.program.input_shape)

"""Passes over the program per exact Insens call (`slp._src.interpreter.count_interpretations`).

Every full loop over a program's operations is one pass: the trace, the plan's (shapes,
receptive boxes, the cut and the cone geometry), the state with the VJP of the switched
network, and each route's own walks (a cone geometry that walks on its own counts too).
They are counted while `jax.jit` traces the call, so the count is that of one compilation.
The numbers are pinned per route: a change that adds a pass fails here (lower them as
passes merge; never raise them).

Reference for the values: the brute-force dense-matrix network of `tests/reference.py`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import slp
from slp._src import interpreter
from tests import reference as ref

# Per route: passes over the program in one exact Insens call on a conv + max-pool + dense net.
# Cone: the trace (which also records what each operation reads, so the geometry needs no
# walk back from its end), the boxes (with the planner's shapes, the channel axes and the
# geometry: each operation's cone rule runs as the boxes' walk passes it,
# `slp._src.cone.GeometryCarry`), the state with the tangent map and the VJP (one walk under
# `jax.linearize`, with the constants and the convolution matrices) and the cone tangents, in
# each scan step over blocks. Probes and dense: the trace, the boxes or shapes, and that one
# walk; the tangents before and after the cut are pieces of its tangent map
# (`slp._src.linear.linear_part`), not walks. It was 19, 18 and 16 when the planner, the boxes
# and the geometry looked up producers and ReLUs by walks of their own and a given route built
# every route's layout; then 9, 6 and 4 while the cone route walked the network for the
# channel axes and for the constants, the probe route to read the cut's weights, and the dense
# route walked the switched network again to linearize it; then 7, 5 and 3 while the cone and
# probe routes walked the switched network after the cut (and the probe route before it) in
# each step and the cone route walked back from its end for the operations it needs; then 5
# while the geometry had a walk of its own.
#
# Auto (the default): the trace and the boxes (with the geometry), then every route traced in
# one program to count its work for the choice (`slp._src.costs.jaxpr_work`), from one walk
# of the network linearized at the input with the cut (the cone route's constants collected
# on the way) and the cone route's tangents: each route's part is that program without what
# only the others need. The state with the VJP and the chosen route's norms run those parts
# (`slp._src.planner.TracedRoute`), with no walk of their own: the cone route's own count.
# It was 15 when each route's count traced the forward pass again and the probe and cone
# routes walked before and after the cut, then 11 while the geometry had a walk of its own,
# then 10 while the chosen route was traced again after its count, then 9 while the forward
# pass was traced for the count apart from the routes, each route walked the switched network
# again from the state, and the state with the VJP had a walk of its own, then 6 while each
# route was traced for its count apart (one walk each, and the cone route's tangents).
PASSES = {"cone": 4, "probes": 3, "dense": 3, "auto": 4}


def _breakdown(passes) -> str:
    """The passes per kind, for an assertion message."""
    return ", ".join(f"{k}: {n}" for k, n in sorted(passes.items()))


@pytest.mark.parametrize("route", sorted(PASSES))
def test_exact_insens_passes_over_the_program_are_pinned(x64, route):
    spec, params, f, x = ref.conv_pool_dense(1)
    with interpreter.count_interpretations() as passes:
        got = slp.insens(f, route=route)(jnp.asarray(x))
    total = sum(passes.values())
    assert total == PASSES[route], f"{route}: {total} passes ({_breakdown(passes)})"
    want = ref.dense_model(spec, params, x).insens()
    np.testing.assert_allclose(np.asarray(got).reshape(-1), want, atol=1e-10)


@pytest.mark.parametrize("batch", [2, 64])
def test_auto_under_vmap_runs_a_counted_route_without_walking_it_again(x64, batch):
    # Under vmap the route is chosen for the batch size (it may differ from the one for one
    # input); every route was traced for its count, so none is walked again.
    spec, params, f, x = ref.conv_pool_dense(1)
    xs = np.stack([x * (1 + 0.1 * k) for k in range(batch)])
    with interpreter.count_interpretations() as passes:
        got = jax.vmap(slp.insens(f))(jnp.asarray(xs))
    assert sum(passes.values()) == PASSES["auto"], _breakdown(passes)
    for k in (0, batch - 1):
        want = ref.dense_model(spec, params, xs[k]).insens()
        np.testing.assert_allclose(np.asarray(got[k]).reshape(-1), want, atol=1e-10)


def test_a_compiled_call_does_not_walk_again(x64):
    _, _, f, x = ref.conv_pool_dense(1)
    fn = slp.insens(f, route="cone")
    fn(jnp.asarray(x))
    with interpreter.count_interpretations() as passes:
        fn(jnp.asarray(-x))
    assert not passes, _breakdown(passes)


def test_counting_is_off_outside_a_block(x64):
    _, _, f, x = ref.conv_pool_dense(1)
    program = slp.network.trace(f, jnp.asarray(x))
    with interpreter.count_interpretations() as passes:
        pass
    interpreter.forward(program, jnp.asarray(x))
    assert not passes
    assert not interpreter._COUNTERS


def test_channel_axes_from_the_boxes_walk_match_a_walk_of_their_own(x64):
    from slp._src.cone import geometry

    spec, params, f, x = ref.conv_pool_dense(2)
    program = slp.network.trace(f, jnp.asarray(x))
    carry = geometry.ChannelCarry(program)
    for i, eqn in enumerate(program.eqns):  # every input-dependent operation, as the boxes'
        if any(eqn.dep):
            carry.visit(i, eqn, strict=False)
    for end in program.relu_eqns:
        order = geometry._needed(program, end)
        want = geometry._channel_axes(program, order, end)
        assert carry.channels(order, end) == want
        assert want  # the convolution contracts the input's channel axis
    # a carry rule that failed at an operation the route walks: the geometry walks instead
    order = geometry._needed(program, program.relu_eqns[-1])
    carry.failed.add(next(i for i in order if program.eqns[i].kind != "const"))
    assert carry.channels(order, program.relu_eqns[-1]) is None


def _reads_by_search(program, ends) -> tuple[int, ...]:
    """The operations ``ends`` read from, by a search back through the producers (reference)."""
    seen, todo = set(), list(ends)
    while todo:
        i = todo.pop()
        if i not in seen:
            seen.add(i)
            ins = [a for a in program.eqns[i].inputs if isinstance(a, int)]
            todo += [program.producers[a] for a in ins if a in program.producers]
    return tuple(sorted(seen))


def test_what_an_operation_reads_is_recorded_when_traced(x64):
    rng = np.random.default_rng(0)
    w1, w2, w3, w4 = (jnp.asarray(rng.normal(size=s)) for s in [(4, 5), (5, 3), (3, 2), (4, 2)])

    def f(x):  # a side branch (x @ w4) that only the output reads
        return jax.nn.relu(jax.nn.relu(x @ w1) @ w2) @ w3 + (x @ w4)

    _, _, g, x = ref.conv_pool_dense(0)
    for fn, xx in [(f, jnp.asarray(rng.normal(size=4))), (g, jnp.asarray(x))]:
        program = slp.network.trace(fn, xx)
        for k in range(len(program.eqns)):
            assert program.reads([k]) == _reads_by_search(program, [k])
        ends = list(program.relu_eqns)
        assert program.reads(ends) == _reads_by_search(program, ends)
    side = [i for i, e in enumerate(program.eqns) if i not in program.reads(program.relu_eqns)]
    assert side  # g's last dense layer and f's side branch are read by no ReLU


# LRP (every rule): the trace twice (the non-finite guard's and the method's), the forward
# pass, one loop over the operations for the affine layers (their uses and consumers are
# recorded by the trace; it was two loops when the layers counted them) and the relevance pass.
LRP_PASSES = {"trace": 2, "forward": 1, "affine-layers": 1, "lrp": 1}


@pytest.mark.parametrize("method", ["lrp_epsilon", "lrp_alpha_beta", "deep_taylor"])
def test_relevance_passes_over_the_program_are_pinned(x64, method):
    _, _, f, x = ref.conv_pool_dense(1)
    with interpreter.count_interpretations() as passes:
        slp.attribute(f, jnp.asarray(x), method)
    assert dict(passes) == LRP_PASSES, _breakdown(passes)


def _same(a, b) -> bool:
    """Structural equality of two geometries (dataclasses, tuples, dicts, NumPy arrays)."""
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(
            _same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)
        )
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and bool(np.all(np.asarray(a) == np.asarray(b)))
    return a == b


def _geometry_cases():
    """Networks with and without a cut, pooling and strides (`reference.random_spec`), in
    HWC, and two of the zoo's."""
    from experiment_helpers import load_script

    rng = np.random.default_rng(3)
    for seed in range(8):
        spec = ref.random_spec(rng)
        params = ref.init_params(spec, (8, 8, 2), rng)
        yield (
            f"random-{seed}",
            ref.jax_function(spec, params),
            jnp.asarray(rng.normal(size=(8, 8, 2))),
        )
    zoo = load_script("zoo.py")
    for name in ["2conv-equinox", "resnet8"]:  # channels first; residual adds, global pooling
        m = zoo.ZOO[name](jax.random.key(0), jnp.float64, small=True)
        yield name, m.f, jnp.ones(m.input_shape)


def test_geometry_from_the_boxes_walk_is_that_of_a_walk_of_its_own(x64):
    from slp._src import planner
    from slp._src.cone import geometry

    checked = 0
    for name, f, x in _geometry_cases():
        program = slp.network.trace(f, x)
        carry = planner._structure(program, x).carry
        assert isinstance(carry, geometry.GeometryCarry), name
        for end in program.relu_eqns + tuple(
            i for i, e in enumerate(program.eqns) if e.kind == "linear"
        ):
            own = geometry.cone_geometry(program, x.shape, end)
            with interpreter.count_interpretations() as passes:
                got = geometry.cone_geometry(program, x.shape, end, carry)
            assert _same(got, own), f"{name} at {end}: {got} != {own}"
            if isinstance(own, geometry.ConeGeometry):
                assert not passes, f"{name} at {end}: {_breakdown(passes)}"
                checked += 1
    assert checked >= 20  # routes that the geometry takes, not only refusals


def test_geometry_walks_where_the_carried_one_does_not_hold(x64):
    from slp._src import planner
    from slp._src.cone import geometry

    _, _, f, x = ref.conv_pool_dense(1)
    program = slp.network.trace(f, jnp.asarray(x))
    end = planner._structure(program, jnp.asarray(x)).cut  # the dense layer after the pooling
    own = geometry.cone_geometry(program, x.shape, end)
    assert isinstance(own, geometry.ConeGeometry)
    for spoil in ["spatial", "operation"]:
        carry = planner._structure(program, jnp.asarray(x)).carry
        if spoil == "spatial":  # other spatial axes assumed (e.g. a later channel contraction)
            carry.spatial = carry.spatial[:1]
        else:  # an operation the route needs that the carried geometry does not reach
            del carry.geometry[program.relu_eqns[0]]
        with interpreter.count_interpretations() as passes:
            got = geometry.cone_geometry(program, x.shape, end, carry)
        assert dict(passes) == {"geometry": 1}, spoil
        assert _same(got, own), spoil

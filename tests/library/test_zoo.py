"""The model zoo of ``experiments/zoo.py``: every network, every Insens route that takes it.

Each network at its small size, in float64, against an independent reference: the
brute-force dense matrices of `reference.dense_model` (2CONV in all its spellings, the
MLP), or ``jax.jacfwd`` of the pre-activations captured from the network's own ReLU
calls (ResNet-8, the Q-network). Which routes exist and which one a network gets is
read from `slp.insens` and `slp.insens_plan`, never assumed.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import tol
from experiment_helpers import load_script
from reference import Reference, dense_model

import slp

zoo = load_script("zoo.py")

# Candidate routes; one the library does not know (yet) is skipped, like one that does
# not apply to the network.
ROUTES = ("cone", "probes", "dense")
NOT_APPLICABLE = re.compile(r"unknown route|does not apply")
NEEDS = {"2conv-equinox": "equinox", "2conv-haiku": "haiku"}
CHANNEL_FIRST = {"2conv-equinox"}


def _build(name: str, seed: int = 0):
    if name in NEEDS:
        pytest.importorskip(NEEDS[name])
    return zoo.ZOO[name](jax.random.key(seed), jnp.float64, small=True)


def _jit(f):
    """``jax.jit`` of any per-example network (an equinox module is not hashable)."""
    return jax.jit(lambda x: f(x))


def _input(shape, seed: int = 1) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), shape, jnp.float64)


def _spec_2conv(w) -> tuple[list, list]:
    """`reference` spec and parameters of 2CONV from `zoo.twoconv_weights`."""
    spec, params = [], []
    for kernel, bias in w.convs:
        spec += [
            ("conv", kernel.shape[3], kernel.shape[0], 1, "SAME"),
            ("relu",),
            ("maxpool", 2, 2),
        ]
        params += [(np.asarray(kernel), np.asarray(bias)), None, None]
    spec.append(("flatten",))
    params.append(None)
    for i, (kernel, bias) in enumerate(w.dense):
        spec.append(("dense", kernel.shape[1]))
        params.append((np.asarray(kernel), np.asarray(bias)))
        if i < len(w.dense) - 1:
            spec.append(("relu",))
            params.append(None)
    return spec, params


def _spec_mlp(layers) -> tuple[list, list]:
    spec, params = [("flatten",)], [None]
    for i, (kernel, bias) in enumerate(layers):
        spec.append(("dense", kernel.shape[1]))
        params.append((np.asarray(kernel), np.asarray(bias)))
        if i < len(layers) - 1:
            spec.append(("relu",))
            params.append(None)
    return spec, params


def _captured_relu_reference(f, x, monkeypatch) -> Reference:
    """Switched weights of a flax.linen network from ``jax.jacfwd`` of its pre-activations.

    Every ``flax.linen.relu`` call records its input. Away from ties and zero
    pre-activations the network is affine near ``x``, so the Jacobian of each recorded
    pre-activation is the neuron's switched weight vector ``w_hat``.
    """
    import flax.linen

    relu, captured = flax.linen.relu, []

    def recording_relu(z):
        captured.append(z)
        return relu(z)

    def pre_activations(xp):
        captured.clear()
        out = f(xp)
        return [z.reshape(-1) for z in captured] + [out]

    with monkeypatch.context() as m:
        m.setattr(flax.linen, "relu", recording_relu)
        jac = jax.jit(jax.jacfwd(pre_activations))(x)
        values = pre_activations(x)
    assert len(values) > 1, "no flax.linen.relu call was recorded"
    d = x.size
    weights = [np.asarray(j).reshape(-1, d) for j in jac]
    acts = [np.asarray(v) for v in values]
    return Reference(weights, [None] * len(weights), acts, [np.zeros(v.size, bool) for v in acts])


def _reference_insens(name: str, model, x, monkeypatch) -> np.ndarray:
    """Insens (eq. 8) of zoo network ``name`` at ``x`` from the independent references."""
    key = jax.random.key(0)
    if name.startswith("2conv"):
        spec, params = _spec_2conv(zoo.twoconv_weights(key, jnp.float64, small=True))
    elif name == "mlp":
        spec, params = _spec_mlp(zoo.mlp_weights(key, jnp.float64, small=True)[1])
    else:
        return _captured_relu_reference(model.f, x, monkeypatch).insens().reshape(x.shape)
    x_HWC = np.asarray(x).transpose(1, 2, 0) if name in CHANNEL_FIRST else np.asarray(x)
    omega = dense_model(spec, params, x_HWC).insens().reshape(x_HWC.shape)
    return omega.transpose(2, 0, 1) if name in CHANNEL_FIRST else omega


def _every_route(f, x) -> dict[str, np.ndarray]:
    """`slp.insens` by every route that takes ``f`` (and by ``auto`` when the plan picks a
    route not among the candidates)."""
    maps = {}
    for route in ROUTES:
        try:
            maps[route] = np.asarray(slp.insens(f, route=route)(x))
        except ValueError as err:
            if not NOT_APPLICABLE.search(str(err)):
                raise
    assert maps, f"no route of {ROUTES} takes this network"
    if slp.insens_plan(f, x).route not in maps:
        maps["auto"] = np.asarray(slp.insens(f)(x))
    return maps


@pytest.mark.parametrize("name", list(zoo.ZOO))
@pytest.mark.slow
def test_zoo_insens_every_route_exact(name, x64, monkeypatch):
    """Every route that takes the network agrees with the reference to float64 rounding."""
    model = _build(name)
    x = _input(model.input_shape)
    assert jax.eval_shape(model.f, x).shape in ((10,), (6,))
    want = _reference_insens(name, model, x, monkeypatch)
    assert np.max(np.abs(want)) > 0  # some neuron is inactive: the check is not vacuous
    scale = np.max(np.abs(want))
    for route, got in _every_route(model.f, x).items():
        assert got.shape == x.shape
        err = np.max(np.abs(got - want))
        assert err <= tol(np.float64) * scale, f"{name}, route {route}: {err / scale:.3g}"


def test_captured_relu_reference_matches_dense_matrices(x64, monkeypatch):
    """The reference of ResNet-8 and the Q-network against the brute-force one on 2CONV."""
    model = _build("2conv-linen")
    x = _input(model.input_shape)
    spec, params = _spec_2conv(zoo.twoconv_weights(jax.random.key(0), jnp.float64, small=True))
    dense = dense_model(spec, params, np.asarray(x))
    captured = _captured_relu_reference(model.f, x, monkeypatch)
    for a, b in zip(captured.weights, dense.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=tol(np.float64), rtol=0)
    np.testing.assert_allclose(
        captured.insens(), dense.insens(), atol=tol(np.float64) * np.max(np.abs(dense.insens()))
    )


def test_twoconv_spellings_compute_one_function(x64):
    """For one key, all 2CONV spellings carry the same weights (equinox on CHW input)."""
    x = _input((12, 12, 1))
    want = np.asarray(_jit(_build("2conv-linen").f)(x))
    for name in [n for n in zoo.ZOO if n.startswith("2conv")]:
        model = _build(name)
        xin = x.transpose(2, 0, 1) if name in CHANNEL_FIRST else x
        assert model.input_shape == xin.shape
        np.testing.assert_allclose(_jit(model.f)(xin), want, atol=tol(np.float64), rtol=0)


def test_dead_code_same_insens(x64):
    """An unused value in the traced program does not change Insens."""
    plain, dead = _build("2conv-jnp"), _build("2conv-jnp-deadcode")
    x = _input(plain.input_shape)
    np.testing.assert_array_equal(_jit(plain.f)(x), _jit(dead.f)(x))
    want = np.asarray(slp.insens(plain.f)(x))
    got = np.asarray(slp.insens(dead.f)(x))
    assert np.max(np.abs(got - want)) <= 1e-12 * np.max(np.abs(want))


def test_dead_code_same_route(x64):
    """An unused value in the traced program does not change the route."""
    plain, dead = _build("2conv-jnp"), _build("2conv-jnp-deadcode")
    x = _input(plain.input_shape)
    assert slp.insens_plan(dead.f, x).route == slp.insens_plan(plain.f, x).route


@pytest.mark.slow
def test_bench_zoo_smoke(tmp_path):
    """experiments/bench_insens.py --zoo on two tiny networks: routes, speeds, memory, table."""
    import json

    bench = load_script("bench_insens.py")
    argv = ["--zoo", "--tiny", "--batch", "3", "--naive-batch", "2", "--repeats", "1"]
    result = bench.main(argv + ["--zoo-only", "2conv-jnp,mlp", "--out", str(tmp_path)])
    platform = jax.devices()[0].platform
    saved = json.loads((tmp_path / f"bench_insens_zoo_{platform}.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert list(saved["networks"]) == ["2conv-jnp", "mlp"]
    for name, net in saved["networks"].items():
        assert "error" not in net, (name, net.get("error"))
        assert isinstance(net["route"], str)
        assert net["insens"]["images"] == 3 and net["naive"]["images"] == 2
        assert net["insens"]["images_per_s"] > 0 and net["naive"]["images_per_s"] > 0
        assert net["insens"]["compile_s"] > 0
        assert net["speedup_vs_naive"] > 0 and net["insens"]["xla_temp_bytes_per_image"] >= 0
        assert net["max_rel_diff_vs_naive"] < 1e-4  # float32 rounding
    table = (tmp_path / f"bench_insens_zoo_{platform}.md").read_text()
    assert "| 2conv-jnp |" in table and "| mlp |" in table
    with pytest.raises(ValueError, match="unknown zoo network"):
        bench.main(["--zoo", "--tiny", "--zoo-only", "nope", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--zoo"):
        bench.parse_args(["--zoo", "--data", "mnist"])

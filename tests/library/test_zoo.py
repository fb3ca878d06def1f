"""The model zoo of ``experiments/zoo.py``: every network, every Insens route that takes it.

Each network at its small size, in float64, against an independent reference: the
brute-force dense matrices of `reference.dense_model` (2CONV in all its spellings, the
MLP), or ``jax.jacfwd`` of the pre-activations captured from the network's own ReLU
calls (ResNet-8, the Q-network, the batch-norm, depthwise, residual and DenseNet-style
CNNs, the equinox and dm-haiku conv + max-pool CNNs). Which routes exist and which one a
network gets is read from `slp.insens` and `slp.insens_plan`, never assumed.
"""

from __future__ import annotations

import json
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
NEEDS = {
    "2conv-equinox": "equinox",
    "2conv-haiku": "haiku",
    "convpool-equinox": "equinox",
    "convpool-haiku": "haiku",
}
CHANNEL_FIRST = {"2conv-equinox", "convpool-equinox"}


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
    """Switched weights of a network from ``jax.jacfwd`` of its pre-activations.

    Every ``jax.nn.relu`` call (``flax.linen.relu`` is the same function; equinox and
    dm-haiku models call it by that name) records its input. Away from ties and zero
    pre-activations the network is affine near ``x``, so the Jacobian of each recorded
    pre-activation is the neuron's switched weight vector ``w_hat``.
    """
    import flax.linen

    relu, captured = jax.nn.relu, []

    def recording_relu(z):
        captured.append(z)
        return relu(z)

    def pre_activations(xp):
        captured.clear()
        out = f(xp)
        return [z.reshape(-1) for z in captured] + [out]

    with monkeypatch.context() as m:
        m.setattr(flax.linen, "relu", recording_relu)
        m.setattr(jax.nn, "relu", recording_relu)
        jac = jax.jit(jax.jacfwd(pre_activations))(x)
        values = pre_activations(x)
    assert len(values) > 1, "no jax.nn.relu call was recorded"
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


@pytest.mark.parametrize("name", ["2conv-linen", "2conv-haiku", "2conv-equinox"])
def test_captured_relu_reference_matches_dense_matrices(name, x64, monkeypatch):
    """The captured-ReLU reference (flax.linen's ``relu``, ``jax.nn.relu`` from dm-haiku and
    equinox) against the brute-force one on 2CONV."""
    model = _build(name)
    x = _input(model.input_shape)
    spec, params = _spec_2conv(zoo.twoconv_weights(jax.random.key(0), jnp.float64, small=True))
    x_HWC = np.asarray(x).transpose(1, 2, 0) if name in CHANNEL_FIRST else np.asarray(x)
    dense = dense_model(spec, params, x_HWC)
    captured = _captured_relu_reference(model.f, x, monkeypatch)
    if name in CHANNEL_FIRST:  # columns of (C, H, W) inputs, rows of (C, H, W) layers
        captured = _captured_relu_reference(
            lambda xp: model.f(xp.transpose(2, 0, 1)), jnp.asarray(x_HWC), monkeypatch
        )
        assert [w.shape for w in captured.weights] == [w.shape for w in dense.weights]
        np.testing.assert_allclose(
            captured.insens(), dense.insens(), atol=tol(np.float64) * np.max(np.abs(dense.insens()))
        )
        return
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
    argv += ["--route-batches", "1", "2", "--route-repeats", "2"]
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
        for batch in ("1", "2"):  # every exact route timed against its prediction
            rec = net["routes"][batch]
            assert rec["chosen"] == net["route"] and set(rec["routes"]) >= {"probes", "dense"}
            for r in rec["routes"].values():
                assert r["predicted_s"] > 0 and r["work"]
                assert "skipped" in r or (len(r["runs_s"]) == 2 and r["median_s"] > 0)
    check = saved["route_check"]
    assert [(r["network"], r["batch"]) for r in check["rows"]] == [
        (n, b) for n in ("2conv-jnp", "mlp") for b in (1, 2)
    ]
    assert bench.exit_status(result) == (1 if check["failures"] else 0)
    table = (tmp_path / f"bench_insens_zoo_{platform}.md").read_text()
    assert "| 2conv-jnp |" in table and "| mlp |" in table
    assert "## Every exact route" in table and "| 2conv-jnp | 2 |" in table
    with pytest.raises(ValueError, match="unknown zoo network"):
        bench.main(["--zoo", "--tiny", "--zoo-only", "nope", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--zoo"):
        bench.parse_args(["--zoo", "--data", "mnist"])


def _recorded(times: dict, chosen: str, work: dict | None = None) -> dict:
    """A network's ``routes`` record of bench_insens --zoo at batch 1: route -> (predicted,
    measured or None)."""
    routes = {}
    for r, (pred, meas) in times.items():
        routes[r] = {"predicted_s": pred, "work": (work or {}).get(r, {f"{r}.call": 1.0})}
        if meas is None:
            routes[r]["skipped"] = "predicted too slow"
        else:
            routes[r]["median_s"] = meas
    return {"routes": {"1": {"chosen": chosen, "routes": routes}}}


def test_bench_route_verdicts_and_exit_status():
    """The chosen route against the fastest, and every prediction against its measurement."""
    bench = load_script("bench_insens.py")
    times = {"cone": (1.0, 1.1), "probes": (2.0, 1.2), "dense": (9.0, None)}
    good = {"a": _recorded(times, "cone")}
    check = bench.route_verdicts(good)
    (row,) = check["rows"]
    assert row["fastest"] == "cone" and row["chosen_vs_fastest"] == 1.0
    assert row["predicted_vs_measured"] == pytest.approx({"cone": 1 / 1.1, "probes": 2 / 1.2})
    assert check["failures"] == [] and bench.exit_status({"route_check": check}) == 0
    # chosen 1.25x slower than the fastest; a prediction 4x too low; a network that failed
    bad = {
        "b": _recorded({"cone": (1.0, 1.25), "probes": (2.0, 1.0)}, "cone"),
        "c": _recorded({"cone": (1.0, 4.0)}, "cone"),
        "d": {"error": "ValueError: boom"},
    }
    check = bench.route_verdicts(bad)
    assert len(check["failures"]) == 3, check["failures"]
    assert "1.25x the fastest (probes)" in check["failures"][0]
    assert "predicted 0.25x" in check["failures"][1] and "boom" in check["failures"][2]
    assert check["worst_chosen_vs_fastest"] == 1.25 and check["worst_prediction"] == 4.0
    assert bench.exit_status({"route_check": check}) == 1
    # a chosen route that was not timed: a failure, and no infinite ratio in the JSON
    untimed = {"e": _recorded({"cone": (1.0, None), "probes": (2.0, 1.0)}, "cone")}
    check = bench.route_verdicts(untimed)
    assert check["failures"] == ["e at batch 1: chosen cone was not timed"]
    assert check["worst_chosen_vs_fastest"] is None
    json.dumps(check, allow_nan=False)
    assert bench.exit_status({"route_check": check}) == 1
    # cone 1.3x the fastest at batch 1, probes 2x at batch 8: no one route does better
    # than 1.3x at both, and the failure says so
    flips = _recorded({"cone": (1.0, 1.3), "probes": (1.0, 1.0)}, "cone")
    flips["routes"]["8"] = _recorded({"cone": (1.0, 1.0), "probes": (1.0, 2.0)}, "cone")["routes"][
        "1"
    ]
    check = bench.route_verdicts({"e": flips})
    assert [r["best_possible"] for r in check["rows"]] == [1.3, 1.3]
    (line,) = check["failures"]
    assert "1.30x the fastest (probes); no route is within 1.2x" in line and "1.30x at" in line
    # with other coefficients: their choice and predictions, from the recorded work
    work = {"cone": {"cone.call": 1.0}, "probes": {"probes.call": 1.0}}
    rec = {"b": _recorded({"cone": (1.0, 1.25), "probes": (2.0, 1.0)}, "cone", work)}
    check = bench.route_verdicts(rec, coefficients={"cone.call": 1.3, "probes.call": 1.1})
    assert check["rows"][0]["chosen"] == "probes" and check["failures"] == []


def test_bench_fit_samples_and_write_coefficients(tmp_path):
    """--fit's samples are every timed call's work (per-image work times the batch) and time;
    --fit-write replaces only the table between the markers."""
    bench = load_script("bench_insens.py")
    from slp._src import costs

    rec = _recorded(
        {"cone": (1.0, 2.0), "probes": (1.0, None)},
        "cone",
        {"cone": {"cone.call": 1.0, "cone.matmul": 10.0}, "probes": {"probes.call": 1.0}},
    )
    cone_at_8 = {**rec["routes"]["1"]["routes"]["cone"], "median_s": 3.0}
    rec["routes"]["8"] = {"chosen": "cone", "routes": {"cone": cone_at_8}}
    samples = bench.fit_samples({"n": rec})
    assert samples == [
        ({"cone.call": 1.0, "cone.matmul": 10.0}, 2.0),
        ({"cone.call": 1.0, "cone.matmul": 80.0}, 3.0),
    ]
    fit = costs.fit_coefficients(samples)  # 1 + 10 m = 2, 1 + 80 m = 3: inconsistent; close
    assert fit["cone.call"] > 0 and fit["cone.matmul"] > 0
    module = tmp_path / "costs.py"
    module.write_text("head\n# BEGIN FITTED: marker\nold = 1\n# END FITTED\ntail\n")
    bench.write_coefficients(costs.coefficients_source(fit, {"date": "today"}), module)
    text = module.read_text()
    assert text.startswith("head\n# BEGIN FITTED: marker\nCOEFFICIENTS")
    assert text.endswith("}\n# END FITTED\ntail\n") and "old = 1" not in text
    namespace: dict = {}
    exec(text.split("# BEGIN FITTED: marker\n")[1].split("# END FITTED")[0], namespace)
    assert namespace["COEFFICIENTS"] == pytest.approx(fit, rel=1e-3)
    assert namespace["CALIBRATION"] == {"date": "today"}


def test_bench_fit_from_recounts_each_run_at_its_own_size(tmp_path):
    """--fit-from: the networks of each recorded run get the work of the size that run timed
    (its ``--tiny``), whatever this run's size; the second file's are named ``<name> #2``."""
    import argparse

    bench = load_script("bench_insens.py")
    files = []
    for k, tiny in enumerate((False, True)):
        rec = _recorded({"dense": (1.0, 1.0)}, "dense", {"dense": {"dense.call": 0.0}})
        run = {
            "command": f"run {k}",
            "config": {"tiny": tiny},
            "machine": {"load_at_start": [0.5 + k, 0.0, 0.0], "flop_rate": 2.0 + 2 * k},
            "networks": {"mlp": rec},
        }
        files.append(tmp_path / f"run{k}.json")
        files[-1].write_text(json.dumps(run))
    args = argparse.Namespace(fit_from=files, seed=0, chunk_size=128, tiny=False)
    result = bench.recorded_runs(args)
    assert list(result["networks"]) == ["mlp", "mlp #2"]
    assert result["machine"]["flop_rate"] == 3.0 and result["machine"]["load_at_start"][0] == 1.5
    for name, small in (("mlp", False), ("mlp #2", True)):
        model = zoo.ZOO["mlp"](jax.random.key(0), jnp.float32, small=small)
        plan = slp.insens_plan(model.f, jnp.zeros(model.input_shape), chunk_size=128)
        got = result["networks"][name]["routes"]["1"]["routes"]["dense"]["work"]
        assert got == plan.costs["dense"].work
    full, tiny = (
        result["networks"][n]["routes"]["1"]["routes"]["dense"]["work"] for n in ("mlp", "mlp #2")
    )
    assert full["dense.matmul"] > 10 * tiny["dense.matmul"]  # the two sizes, told apart


@pytest.mark.slow
def test_bench_versions_smoke(tmp_path):
    """experiments/bench_versions.py with this checkout on both sides: one tiny network, the
    same route and the same maps in both workers, the report and the exit status."""
    import json
    import shutil

    bench = load_script("bench_versions.py")
    root = str(bench.HERE.parent)
    # a copy of the library as the before version: its worker must import that copy
    copy = tmp_path / "copy"
    shutil.copytree(bench.HERE.parent / "slp", copy / "slp", ignore=shutil.ignore_patterns("*.pyc"))
    argv = ["--before", str(copy), "--after", root, "--tiny", "--zoo-only", "mlp"]
    argv += ["--batches", "1", "3", "--rounds", "2", "--min-seconds", "0", "--builds", "1"]
    argv += ["--out", str(tmp_path), "--tag", "smoke"]
    result = bench.main(argv)
    saved = json.loads((tmp_path / "bench_versions_smoke.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert [(r["network"], r["batch"]) for r in saved["results"]] == [("mlp", 1), ("mlp", 3)]
    model = zoo.ZOO["mlp"](jax.random.key(0), small=True)
    x = jnp.zeros(model.input_shape)
    for row in saved["results"]:
        chosen = slp.insens_plan(model.f, x, batch=row["batch"]).route
        assert row["routes"] == {"before": chosen, "after": chosen}
        assert row["max_rel_diff"] == 0.0  # one version: the same maps
        assert row["rounds"] == 2
        assert row["before_call_s"] > 0 and row["after_call_s"] > 0
        assert row["call_ratio"] == row["after_call_s"] / row["before_call_s"]
        assert row["before_compile_s"] > 0 and row["compile_ratio"] > 0
    assert saved["config"]["slp"] == {
        "before": str(copy / "slp" / "__init__.py"),
        "after": str(bench.HERE.parent / "slp" / "__init__.py"),
    }
    assert bench.exit_status(result) == int(any(r["call_ratio"] > 1.05 for r in saved["results"]))
    table = (tmp_path / "bench_versions_smoke.md").read_text()
    assert [line.split(" | ")[:3] for line in table.splitlines() if line.startswith("| mlp")] == [
        ["| mlp", str(r["batch"]), f"{r['routes']['before']} / {r['routes']['after']}"]
        for r in saved["results"]
    ]
    with pytest.raises(SystemExit, match="unknown zoo network"):
        bench.main(["--before", root, "--zoo-only", "nope", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a checkout of slp"):
        bench.main(["--before", str(tmp_path), "--out", str(tmp_path)])


def test_bench_versions_marks_slower_networks_and_exits_1():
    """A call ratio over the tolerance is marked in the table and sets the exit status."""
    bench = load_script("bench_versions.py")
    row = {"network": "mlp", "batch": 8, "routes": {"before": "probes", "after": "probes"}}
    row["rounds"] = 9
    row.update(before_call_s=0.010, after_call_s=0.0104, before_compile_s=1.0)
    row.update(after_compile_s=1.2, max_rel_diff=0.0)
    config = {"command": "c", "before": "a", "after": "b", "rounds": 9, "builds": 3}
    config["min_seconds"] = 2.0
    config.update(cpus=2, load_start=1.0, load_end=1.0, tolerance=1.05)
    fine = dict(row, call_ratio=1.04, compile_ratio=1.2)
    slow = dict(row, network="resnet8", call_ratio=1.06, compile_ratio=1.2)
    assert bench.exit_status({"results": [fine], "config": config}) == 0
    result = {"results": [fine, slow], "config": config}
    assert bench.exit_status(result) == 1
    lines = bench.markdown(result).splitlines()
    assert [line for line in lines if "slower" in line and line.startswith("|")] == [
        next(line for line in lines if line.startswith("| resnet8 |"))
    ]
    assert "| 1.040 |" in next(line for line in lines if line.startswith("| mlp |"))

"""Target class indices are checked wherever they come from.

A concrete index outside [0, C) raises ValueError naming it and C (JAX's indexing would
clamp it to C - 1, a one-hot of it would be all zero: another class's map, or none); a
float or a bool raises TypeError; a traced index out of range gives a map of NaN. Checked
for every registered method, `attribute(batched=True)`, `attribute_dataset`, the command
line and the perturbation curves. References: the gradient of the target logit by
`jax.grad`, and each method's own map for the same index given as a Python int.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import slp
from slp import metrics, training
from slp.attributions.registry import check_target

C = 10  # logits
OPTIONS = {
    "smoothgrad": {"key": jax.random.key(0), "samples": 4},
    "integrated_gradients": {"steps": 8},
}


def _net():
    rng = np.random.RandomState(0)
    w1 = jnp.asarray(rng.normal(size=(36, 12)).astype(np.float32) / 6)
    b1 = jnp.asarray(rng.normal(size=12).astype(np.float32) / 4)
    w2 = jnp.asarray(rng.normal(size=(12, C)).astype(np.float32) / 3)
    x = jnp.asarray(rng.uniform(size=(6, 6, 1)).astype(np.float32))
    return (lambda x: jnp.maximum(x.reshape(-1) @ w1 + b1, 0.0) @ w2), x


OUT_OF_RANGE = {
    "int": 12,
    "numpy int": np.int64(12),
    "0-d numpy": np.array(12),
    "0-d jax": jnp.array(12),
    "C itself": C,
    "negative": -1,
    "negative jax": jnp.array(-3, jnp.int32),
}
NOT_INTEGER = {
    "float": 2.0,
    "numpy float": np.float32(3),
    "bool": True,
    "jax float": jnp.array(1.0),
}


@pytest.mark.parametrize("method", slp.available_methods())
def test_every_method_honours_the_target_check(method):
    f, x = _net()
    opts = OPTIONS.get(method, {})
    for t in OUT_OF_RANGE.values():
        shown = int(np.asarray(t))
        with pytest.raises(ValueError, match=rf"target {shown} is out of range for {C} output"):
            slp.attribute(f, x, method, target=t, **opts)
    for t in NOT_INTEGER.values():
        with pytest.raises(TypeError, match="target must be an integer class index"):
            slp.attribute(f, x, method, target=t, **opts)
    with pytest.raises(ValueError, match=r"one class index for one example; got shape \(2,\)"):
        slp.attribute(f, x, method, target=np.array([1, 2]), **opts)

    # Traced targets: the in-range map as with a Python int, the others all NaN.
    targets = jnp.array([3, C, -1, 12, 0], jnp.int32)
    maps = jax.jit(jax.vmap(lambda t: slp.attribute(f, x, method, target=t, **opts)))(targets)
    want = np.asarray(slp.attribute(f, x, method, target=3, **opts))
    assert np.all(np.isfinite(want))
    np.testing.assert_allclose(maps[0], want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
    for i in (1, 2, 3):
        assert np.all(np.isnan(maps[i])), (method, int(targets[i]), maps[i].ravel()[:4])
    assert np.all(np.isfinite(maps[4]))
    one = jax.jit(lambda t: slp.attribute(f, x, method, target=t, **opts))(jnp.array(12))
    assert np.all(np.isnan(one))


def test_traced_gradient_against_jax_grad():
    """The in-range traced map is the target logit's gradient; before the check, target 12
    gave class 9's gradient (a clamped index)."""
    f, x = _net()
    g = jax.jit(lambda t: slp.attribute(f, x, "gradient", target=t))
    np.testing.assert_allclose(g(9), jax.grad(lambda x: f(x)[9])(x), rtol=1e-5, atol=1e-7)
    assert np.all(np.isnan(g(12)))


def test_batched_targets_name_the_first_bad_example():
    f, x = _net()
    xb = jnp.stack([x, 1 - x, x * 0.5])
    fb = jax.vmap(f)
    with pytest.raises(ValueError, match=r"target\[2\] = 11 is out of range for 10 output"):
        slp.attribute(fb, xb, "gradient", batched=True, target=np.array([1, 2, 11]))
    with pytest.raises(ValueError, match=r"target\[0\] = -2 .*\(and 1 more\)"):
        slp.attribute(fb, xb, "lrp_epsilon", batched=True, target=jnp.array([-2, 2, 10]))
    with pytest.raises(ValueError, match="target 10 is out of range"):
        slp.attribute(fb, xb, "insens", batched=True, target=10)
    with pytest.raises(ValueError, match="target has 2 entries for 3 examples"):
        slp.attribute(fb, xb, "gradient", batched=True, target=np.array([1, 2]))
    with pytest.raises(TypeError, match="integer class index"):
        slp.attribute(fb, xb, "gradient", batched=True, target=np.array([1.0, 2.0, 3.0]))
    got = slp.attribute(fb, xb, "gradient", batched=True, target=np.array([1, 2, 9]))
    for i, t in enumerate((1, 2, 9)):
        want = jax.grad(lambda x, t=t: f(x)[t])(xb[i])
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-7)
    traced = jax.jit(lambda t: slp.attribute(fb, xb, "gradient", batched=True, target=t))(
        jnp.array([1, 12, 9])
    )
    traced = np.asarray(traced)
    assert np.all(np.isfinite(traced[[0, 2]])) and np.all(np.isnan(traced[1]))


def test_attribute_dataset_checks_targets_before_any_map(tmp_path):
    f, x = _net()
    xs = np.stack([np.asarray(x) * s for s in np.linspace(0.5, 1.5, 7)])
    out = tmp_path / "maps"
    cases = [
        (12, "target 12 is out of range for 10 output logits"),
        (np.int32(-1), "target -1 is out of range"),
        (np.array(10), "target 10 is out of range"),
        (np.full(7, 10), r"target\[0\] = 10 .*\(and 6 more\)"),
        (np.array([0, 1, 2, 3, 4, 5, 99]), r"target\[6\] = 99 is out of range for 10"),
        (jnp.array([0, 1, 2, -3, 4, 5, 6]), r"target\[3\] = -3"),
    ]
    for t, message in cases:
        with pytest.raises(ValueError, match=message):
            slp.attribute_dataset(
                f, xs, "gradient", batch_size=4, out=out, target=t, progress=False
            )
        assert not list(out.glob("maps-*")), "a chunk was written before the check"
    with pytest.raises(TypeError, match="integer class index"):
        slp.attribute_dataset(
            f, xs, "gradient", batch_size=4, target=np.arange(7.0), progress=False
        )
    with pytest.raises(ValueError, match="target has 6 entries for 7 examples"):
        slp.attribute_dataset(f, xs, "gradient", batch_size=4, target=np.arange(6), progress=False)
    t = np.array([0, 1, 2, 3, 4, 5, 9])
    got = slp.attribute_dataset(f, xs, "gradient", batch_size=4, target=t, progress=False)
    for i in range(7):
        want = jax.grad(lambda x, i=i: f(x)[t[i]])(xs[i])
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-7)


def test_command_line_refuses_an_out_of_range_target(tmp_path, capsys):
    from slp.__main__ import main

    config = training.TrainConfig(features=(2, 3), hidden=8, input_shape=(6, 6, 1))
    params = training.init_params(config)
    ckpt = training.save_checkpoint(tmp_path / "tiny.msgpack", params, {"config": config.to_dict()})
    np.save(tmp_path / "x.npy", np.zeros((4, 6, 6, 1), np.float32))
    argv = [
        "maps", "--checkpoint", str(ckpt), "--data", str(tmp_path / "x.npy"),
        "--out", str(tmp_path / "maps"), "--no-progress", "--method", "gradient", "--target",
    ]  # fmt: skip
    with pytest.raises(SystemExit, match=r"--target 12: the checkpoint has 10 classes; target 12"):
        main([*argv, "12"])
    with pytest.raises(SystemExit, match="--target -1: .*target -1 is out of range"):
        main([*argv, "-1"])
    assert not (tmp_path / "maps").exists()
    with pytest.raises(SystemExit):
        main([*argv, "three"])
    assert "expected 'predicted', 'label' or a class index, got 'three'" in capsys.readouterr().err


def test_command_line_reports_bad_input_in_one_line(tmp_path):
    """The library's errors for bad input (a data file of integers, a missing file, a string
    for a numeric option) end the command with one ``error:`` line naming the problem and
    no output folder; ``--traceback`` raises them as they are."""
    from slp.__main__ import main

    config = training.TrainConfig(features=(2, 3), hidden=8, input_shape=(6, 6, 1))
    params = training.init_params(config)
    ckpt = training.save_checkpoint(tmp_path / "tiny.msgpack", params, {"config": config.to_dict()})
    np.save(tmp_path / "x.npy", np.zeros((4, 6, 6, 1), np.float32))
    np.save(tmp_path / "u8.npy", np.zeros((4, 6, 6, 1), np.uint8))
    out = tmp_path / "maps"
    base = ["maps", "--checkpoint", str(ckpt), "--out", str(out), "--no-progress"]
    cases = [
        (["--data", str(tmp_path / "u8.npy")], "ValueError: images have dtype uint8"),
        (["--data", str(tmp_path / "none.npy")], "FileNotFoundError: .*none.npy"),
        (
            [
                "--data",
                str(tmp_path / "x.npy"),
                "--method",
                "lrp_epsilon",
                "--option",
                "epsilon=abc",
            ],
            "TypeError: lrp_epsilon: option epsilon takes a number .* got the string 'abc'",
        ),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit, match=f"^error: {message}") as err:
            main([*base, *extra])
        assert "--traceback shows where" in str(err.value)
        assert not out.exists()
    with pytest.raises(ValueError, match="images have dtype uint8"):
        main([*base, "--data", str(tmp_path / "u8.npy"), "--traceback"])


def test_perturbation_curves_check_the_target():
    f, x = _net()
    img = x[..., 0]
    g = lambda x: f(x[..., None])  # noqa: E731
    scores = jnp.arange(img.size, dtype=jnp.float32).reshape(img.shape)
    with pytest.raises(ValueError, match="target 10 is out of range"):
        metrics.deletion_curve(g, img, scores, target=10, steps=4)
    curves = jax.jit(jax.vmap(lambda t: metrics.deletion_curve(g, img, scores, target=t, steps=4)))(
        jnp.array([2, 10])
    )
    want = metrics.deletion_curve(g, img, scores, target=2, steps=4)
    np.testing.assert_allclose(curves.logit[0], want.logit, rtol=1e-6)
    assert np.all(np.isnan(curves.logit[1])) and np.all(np.isnan(curves.probability[1]))
    assert np.all(np.isfinite(curves.fraction[1]))


def test_check_target_directly():
    assert bool(check_target(jnp.uint8(3), 4))
    assert bool(check_target(np.array([0, 3]), 4, batched=True, num_examples=2))
    with pytest.raises(ValueError, match=f"target {2**70} is out of range"):
        check_target(2**70, 4)  # larger than any NumPy integer: no overflow on the way
    with pytest.raises(TypeError, match="'3' \\(str\\)"):
        check_target("3", 4)
    verdict = jax.jit(lambda t: check_target(t, 4))
    assert bool(verdict(3)) and not bool(verdict(4)) and not bool(verdict(-1))

"""Cross-checks against Zennit and Captum on the same weights (float64 on both sides).

A small flax TwoConv (through the benchmark's torch port, experiments/bench_attributions.py)
and an MLP are ported to torch: dense kernels (in, out) -> (out, in), conv kernels HWIO ->
OIHW, inputs NHWC -> NCHW, and the torch network flattens after permuting back to NHWC so
that its dense layer reads the same order as flax's.

Scale conventions (see `slp.attributions.relevance`): this library starts LRP from the target
logit ``y_t`` (Deep Taylor: ``max(y_t, 0)``); Zennit is called with the common one-hot
``attr_output``, so its maps are multiplied by ``y_t`` before comparing. Captum's
gradient methods start from the gradient of the target logit, as this library does.

Needs the ``crosscheck`` extra (torch, torchvision, zennit, captum); skipped otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

try:
    import torch
    from captum.attr import LRP as CaptumLRP
    from captum.attr import Deconvolution, InputXGradient, IntegratedGradients, Saliency
    from captum.attr import GuidedBackprop as CaptumGuidedBackprop
    from zennit.attribution import Gradient
    from zennit.attribution import IntegratedGradients as ZennitIG
    from zennit.composites import DeconvNet as ZennitDeconvNet
    from zennit.composites import GuidedBackprop, LayerMapComposite, SpecialFirstLayerMapComposite
    from zennit.rules import AlphaBeta, Epsilon, ZBox, ZPlus
except Exception as err:  # noqa: BLE001 - a broken install raises more than ImportError
    pytest.skip(
        "cross-checks need torch, torchvision, zennit and captum (the crosscheck extra): "
        f"{type(err).__name__}: {err}",
        allow_module_level=True,
    )

from experiment_helpers import load_script  # noqa: E402

import slp  # noqa: E402
from slp.models import MLP, TwoConv, as_single_example  # noqa: E402

pytestmark = [pytest.mark.crosscheck, pytest.mark.slow]  # torch references: minutes

RTOL = 1e-9  # float64 on both sides; differences are summation order only
# The benchmark's torch port of TwoConv (checked against flax by test_ported_networks_agree).
BENCH = load_script("bench_attributions.py")


class TorchMLP(torch.nn.Module):
    def __init__(self, sizes):
        super().__init__()
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(torch.nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(torch.nn.ReLU())
        self.net = torch.nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x.reshape(x.shape[0], -1))


def _t(a):
    return torch.from_numpy(np.array(a, np.float64))


def _with_biases(params, seed):
    """Flax initialises biases to 0; give them values so every bias path is compared."""
    rng = np.random.default_rng(seed)

    def f(path, p):
        if "bias" in jax.tree_util.keystr(path):
            return jnp.asarray(rng.normal(0, 0.1, p.shape), jnp.float64)
        return jnp.asarray(p, jnp.float64)

    return jax.tree_util.tree_map_with_path(f, params)


def _copy_dense(lin, p):
    lin.weight.data = _t(p["kernel"]).T.contiguous()  # (in, out) -> (out, in)
    lin.bias.data = _t(p["bias"])


class Net(NamedTuple):
    """A flax network and its torch port.

    Attributes:
      f: per-example flax network (float64 parameters).
      torch: the torch port (float64).
      x: one input, NumPy float64, the flax layout.
      to_torch: NumPy input -> torch batch of one in torch's layout.
      from_torch: torch batch of one -> NumPy map in the flax layout.
      model, params: the flax module and its parameters.
    """

    f: Callable
    torch: Any
    x: np.ndarray
    to_torch: Callable
    from_torch: Callable
    model: Any
    params: Any


@pytest.fixture(scope="module")
def twoconv():
    with jax.enable_x64(True):
        model = TwoConv(num_classes=5, features=(4, 6), hidden=16, kernel_size=5)
        x = jax.random.uniform(jax.random.PRNGKey(0), (12, 12, 2), jnp.float64)
        params = _with_biases(model.init(jax.random.PRNGKey(1), x[None]), seed=2)
        tm, _ = BENCH.torch_port(model, params, np.asarray(x)[None], dtype=np.float64)
        params = jax.tree.map(np.asarray, params)
    return Net(
        as_single_example(model, params),
        tm,
        np.asarray(x),
        lambda a: _t(a)[None].permute(0, 3, 1, 2).contiguous(),
        lambda r: r[0].permute(1, 2, 0).detach().numpy(),
        model,
        params,
    )


@pytest.fixture(scope="module")
def mlp():
    with jax.enable_x64(True):
        model = MLP(hidden=(16, 12), num_classes=5)
        x = jax.random.normal(jax.random.PRNGKey(3), (4, 5), jnp.float64)
        params = _with_biases(model.init(jax.random.PRNGKey(4), x[None]), seed=5)
        p = params["params"]
        tm = TorchMLP((20, 16, 12, 5)).double().eval()
        for lin, name in zip(tm.net[::2], ("Dense_0", "Dense_1", "Dense_2"), strict=True):
            _copy_dense(lin, p[name])
        params = jax.tree.map(np.asarray, params)
    return Net(
        as_single_example(model, params),
        tm,
        np.asarray(x),
        lambda a: _t(a)[None].contiguous(),
        lambda r: r[0].detach().numpy(),
        model,
        params,
    )


def _case(request, name):
    return request.getfixturevalue(name)


def _close(got, want, rtol=RTOL):
    scale = np.max(np.abs(want))
    assert scale > 0
    np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=rtol * scale)


def test_ported_networks_agree(twoconv, mlp):
    for f, tm, x, to_t, *_ in (twoconv, mlp):
        with jax.enable_x64(True):
            y = np.asarray(f(jnp.asarray(x)))
        np.testing.assert_allclose(tm(to_t(x)).detach().numpy()[0], y, rtol=1e-12, atol=1e-12)


# --- Zennit: LRP rules ------------------------------------------------------------------------

LAYERS = (torch.nn.Conv2d, torch.nn.Linear)

ZENNIT_CASES = {
    "lrp_epsilon": (
        {"epsilon": 1e-3},
        lambda: LayerMapComposite([(LAYERS, Epsilon(epsilon=1e-3))]),
        False,
    ),
    "lrp_zplus": (
        {},
        lambda: LayerMapComposite([(LAYERS, ZPlus(zero_params="bias"))]),
        False,
    ),
    "lrp_alpha2_beta1": (
        {},
        lambda: LayerMapComposite([(LAYERS, AlphaBeta(alpha=2.0, beta=1.0))]),
        False,
    ),
    "deep_taylor_bounded": (
        {"low": 0.0, "high": 1.0},
        lambda: SpecialFirstLayerMapComposite(
            layer_map=[(LAYERS, ZPlus(zero_params="bias"))],
            first_map=[(LAYERS, ZBox(low=0.0, high=1.0))],
        ),
        True,
    ),
}


def _zennit_run(attributor, x_t, target):
    """A Zennit attributor's output and relevance at ``x_t`` for a one-hot ``target``."""
    onehot = torch.zeros((1, 5), dtype=torch.float64)
    onehot[0, target] = 1.0
    x_t = x_t.clone().requires_grad_(True)
    with attributor as active:
        out, relevance = active(x_t, attr_output=onehot)
    return out.detach().numpy()[0], relevance


def _zennit(tm, x_t, target, composite):
    return _zennit_run(Gradient(model=tm, composite=composite), x_t, target)


def _top_two(y) -> tuple[int, int]:
    """The classes of the largest and the second largest logit."""
    y = np.asarray(y)
    return int(np.argmax(y)), int(np.argsort(y)[-2])


@pytest.mark.parametrize("net", ["twoconv", "mlp"])
@pytest.mark.parametrize("method", list(ZENNIT_CASES))
def test_lrp_against_zennit(net, method, request):
    f, tm, x, to_t, from_t, *_ = _case(request, net)
    options, composite, positive = ZENNIT_CASES[method]
    with jax.enable_x64(True):
        y = np.asarray(f(jnp.asarray(x)))
        for target in _top_two(y):
            if positive:
                assert y[target] > 0, "pick a network whose compared logits are positive"
            out, rel = _zennit(tm, to_t(x), target, composite())
            np.testing.assert_allclose(out, y, rtol=1e-12, atol=1e-12)
            scale = max(y[target], 0.0) if positive else y[target]
            got = slp.attribute(f, jnp.asarray(x), method, target=target, **options)
            _close(got, scale * from_t(rel))


@pytest.mark.parametrize("net", ["twoconv", "mlp"])
def test_guided_backprop_against_zennit(net, request):
    f, tm, x, to_t, from_t, *_ = _case(request, net)
    with jax.enable_x64(True):
        for target in (0, 3):
            _, rel = _zennit(tm, to_t(x), target, GuidedBackprop())
            got = slp.attribute(f, jnp.asarray(x), "guided_backprop", target=target)
            _close(got, from_t(rel))


# --- Captum: gradient family and DeconvNet ---------------------------------------------------


def _captum(cls, tm, x_t, target, **kwargs):
    x_t = x_t.clone().requires_grad_(True)
    return cls(tm).attribute(x_t, target=target, **kwargs)


CAPTUM_CASES = [
    ("gradient", {}, Saliency, {"abs": False}),
    ("gradient_x_input", {}, InputXGradient, {}),
    (
        "integrated_gradients",
        {"steps": 16, "quadrature": "riemann_middle"},
        IntegratedGradients,
        {"n_steps": 16, "method": "riemann_middle"},
    ),
    (
        "integrated_gradients",
        {"steps": 9, "quadrature": "gausslegendre", "baseline": 0.25},
        IntegratedGradients,
        {"n_steps": 9, "method": "gausslegendre", "baselines": 0.25},
    ),
    ("deconvnet", {}, Deconvolution, {}),
]


@pytest.mark.parametrize("net", ["twoconv", "mlp"])
@pytest.mark.parametrize(
    "method,options,cls,kwargs",
    CAPTUM_CASES,
    ids=[f"{m}-{o.get('quadrature', '')}" for m, o, _, _ in CAPTUM_CASES],
)
def test_against_captum(net, method, options, cls, kwargs, request):
    f, tm, x, to_t, from_t, *_ = _case(request, net)
    with jax.enable_x64(True):
        for target in (1, 4):
            want = from_t(_captum(cls, tm, to_t(x), target, **kwargs))
            got = slp.attribute(f, jnp.asarray(x), method, target=target, **options)
            # Captum rounds its quadrature weights to float32 (exact for the Riemann
            # rules with a power-of-two number of steps, not for Gauss-Legendre).
            gauss = options.get("quadrature") == "gausslegendre"
            _close(got, want, rtol=1e-6 if gauss else RTOL)


def test_float32_agreement(twoconv):
    """In float32 on both sides the maps agree to float32 precision."""
    params32 = jax.tree.map(lambda a: np.asarray(a, np.float32), twoconv.params)
    f = as_single_example(twoconv.model, params32)
    tm32, _ = BENCH.torch_port(twoconv.model, params32, twoconv.x[None].astype(np.float32))
    x32 = twoconv.x.astype(np.float32)
    y = np.asarray(f(jnp.asarray(x32)))
    t = int(np.argmax(y))
    composite = LayerMapComposite([(LAYERS, Epsilon(epsilon=1e-3))])
    onehot = torch.zeros((1, 5))
    onehot[0, t] = 1.0
    x_t = twoconv.to_torch(x32).float().requires_grad_(True)
    with Gradient(model=tm32, composite=composite) as attributor:
        _, rel = attributor(x_t, attr_output=onehot)
    got = slp.attribute(f, jnp.asarray(x32), "lrp_epsilon", epsilon=1e-3)
    assert got.dtype == jnp.float32
    want = y[t] * twoconv.from_torch(rel)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.max(np.abs(want)))


def test_bench_script_with_torch(tmp_path):
    """The benchmark runs Captum and Zennit on its torch port, which matches the flax net."""
    bench = BENCH
    result = bench.main(
        ["--tiny", "--batch", "2", "--repeats", "1", "--ig-steps", "4", "--out", str(tmp_path)]
        + ["--methods", "gradient", "integrated_gradients", "lrp_epsilon"]
    )
    assert result["torch"]["max_logit_difference_to_jax"] < 1e-4
    assert set(result["ratios"]) == {"gradient", "integrated_gradients", "lrp_epsilon"}
    assert all(r > 0 for r in result["ratios"].values())


# --- convention presets: slp.attribute(..., convention=...) against the toolboxes' defaults ----

# Every toolbox object below is built with its own defaults (no arguments beyond the
# method's identity), so these tests check the presets, not options copied into both sides.
ZENNIT_PRESET_CASES = {
    "gradient": lambda tm: Gradient(model=tm),
    "integrated_gradients": lambda tm: ZennitIG(model=tm),
    "guided_backprop": lambda tm: Gradient(model=tm, composite=GuidedBackprop()),
    "deconvnet": lambda tm: Gradient(model=tm, composite=ZennitDeconvNet()),
    "lrp_epsilon": lambda tm: Gradient(
        model=tm, composite=LayerMapComposite([(LAYERS, Epsilon())])
    ),
    "lrp_alpha2_beta1": lambda tm: Gradient(
        model=tm, composite=LayerMapComposite([(LAYERS, AlphaBeta())])
    ),
    "lrp_alpha1_beta0": lambda tm: Gradient(
        model=tm, composite=LayerMapComposite([(LAYERS, AlphaBeta(alpha=1.0, beta=0.0))])
    ),
    "lrp_zplus": lambda tm: Gradient(model=tm, composite=LayerMapComposite([(LAYERS, ZPlus())])),
    "deep_taylor_bounded": lambda tm: Gradient(
        model=tm,
        composite=SpecialFirstLayerMapComposite(
            layer_map=[(LAYERS, ZPlus())], first_map=[(LAYERS, ZBox(low=0.0, high=1.0))]
        ),
    ),
}


@pytest.mark.parametrize("net", ["twoconv", "mlp"])
@pytest.mark.parametrize("method", list(ZENNIT_PRESET_CASES))
def test_zennit_convention(net, method, request):
    f, tm, x, to_t, from_t, *_ = _case(request, net)
    with jax.enable_x64(True):
        for target in _top_two(f(jnp.asarray(x))):
            _, rel = _zennit_run(ZENNIT_PRESET_CASES[method](tm), to_t(x), target)
            got = slp.attribute(f, jnp.asarray(x), method, target=target, convention="zennit")
            # Zennit's integrated-gradients path points are float32 (torch.linspace).
            _close(got, from_t(rel), rtol=1e-6 if method == "integrated_gradients" else RTOL)


CAPTUM_PRESET_CASES = {
    "gradient": lambda tm: Saliency(tm),
    "gradient_x_input": lambda tm: InputXGradient(tm),
    "integrated_gradients": lambda tm: IntegratedGradients(tm),
    "guided_backprop": lambda tm: CaptumGuidedBackprop(tm),
    "deconvnet": lambda tm: Deconvolution(tm),
    "lrp_epsilon": lambda tm: CaptumLRP(tm),
}


@pytest.mark.parametrize("net", ["twoconv", "mlp"])
@pytest.mark.parametrize("method", list(CAPTUM_PRESET_CASES))
def test_captum_convention(net, method, request):
    f, tm, x, to_t, from_t, *_ = _case(request, net)
    with jax.enable_x64(True):
        for target in (*_top_two(f(jnp.asarray(x))), 1):
            x_t = to_t(x).clone().requires_grad_(True)
            want = from_t(CAPTUM_PRESET_CASES[method](tm).attribute(x_t, target=target))
            got = slp.attribute(f, jnp.asarray(x), method, target=target, convention="captum")
            # Captum rounds Gauss-Legendre weights to float32; its LRP puts the 1e-9
            # stabiliser also on max-pool outputs, which pass relevance to the winner here.
            loose = method in ("integrated_gradients", "lrp_epsilon")
            _close(got, want, rtol=1e-6 if loose else RTOL)


def test_smoothgrad_presets_are_the_toolboxes_defaults():
    """SmoothGrad is random, so its presets are checked against the toolboxes' signatures."""
    from captum.attr import NoiseTunnel
    from zennit.attribution import SmoothGrad

    from slp.attributions.conventions import CONVENTIONS

    nt = inspect.signature(NoiseTunnel.attribute).parameters
    assert CONVENTIONS["captum"]["smoothgrad"] == {
        "samples": nt["nt_samples"].default,
        "noise_scale": nt["stdevs"].default,
    }
    zs = inspect.signature(SmoothGrad.__init__).parameters
    assert CONVENTIONS["zennit"]["smoothgrad"] == {
        "samples": zs["n_iter"].default,
        "noise_level": zs["noise_level"].default,
    }

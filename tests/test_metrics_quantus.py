"""Every Quantus-named metric of slp.metrics against Quantus 0.6.0 on the same network and maps.

The network is a small flax TwoConv behind a torch module (`JaxNet`): torch layers hold the
weights (so that Quantus can re-initialise them for its randomisation tests), and forward
runs the jitted flax network on them, so both libraries score the same function. Quantus's
explanation function is the same slp method (the gradient) on whatever weights the torch
module holds. Everything runs in float64 on both sides.

Quantus is called one example at a time: it normalises maps by the maximum over the whole
batch it is given, slp each example by its own (the same thing for a batch of one).

Maps scored by order (pixel flipping, region perturbation, rank accuracy, ...) are drawn at
random, without ties: Quantus orders with NumPy's default argsort, which promises nothing
among ties, slp with a stable sort.

Where Quantus draws random numbers itself, the test gives it slp's draws: through its
``perturb_func`` option where it has one, otherwise by replacing the NumPy function it
calls for the duration of the call (`_feed`), so that the scores must agree to 1e-5.

Needs the ``crosscheck`` extra (torch and quantus); skipped otherwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

try:
    import quantus
    import torch
except Exception as err:  # noqa: BLE001 - a broken install raises more than ImportError
    pytest.skip(
        f"Quantus cross-checks need torch and quantus (the crosscheck extra): "
        f"{type(err).__name__}: {err}",
        allow_module_level=True,
    )

import slp  # noqa: E402
from slp import metrics  # noqa: E402
from slp.models import TwoConv  # noqa: E402

pytestmark = pytest.mark.crosscheck

RTOL = 1e-5
N = 3  # examples
SIDE = 12


@pytest.fixture(scope="module", autouse=True)
def float64():
    """float64 in JAX and torch (Quantus's ``torch.Tensor(x)`` takes torch's default)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    with jax.enable_x64(True):
        yield
    torch.set_default_dtype(old)


# The flax networks behind the torch modules, by number: a torch module is deep-copied by
# Quantus, and a number copies where a jitted function might not.
_FLAX: dict[int, tuple] = {}


def _to_torch(layer, p):
    if isinstance(layer, torch.nn.Conv2d):  # HWIO -> OIHW
        layer.weight.data = torch.from_numpy(np.array(p["kernel"]).transpose(3, 2, 0, 1).copy())
    else:  # (in, out) -> (out, in)
        layer.weight.data = torch.from_numpy(np.array(p["kernel"]).T.copy())
    layer.bias.data = torch.from_numpy(np.array(p["bias"]))


def _to_flax(layer):
    w = layer.weight.detach().numpy()
    kernel = w.transpose(2, 3, 1, 0) if isinstance(layer, torch.nn.Conv2d) else w.T
    return {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(layer.bias.detach().numpy())}


class JaxNet(torch.nn.Module):
    """A flax network whose weights live in torch layers; forward runs the flax network."""

    def __init__(self, number, params, layers):
        super().__init__()
        self.number = number
        for name, layer in layers:  # flax's order: input to output
            _to_torch(layer, params["params"][name])
            self.add_module(name, layer)

    def flax_params(self):
        return {"params": {name: _to_flax(layer) for name, layer in self.named_children()}}

    def forward(self, x_NCHW):
        apply = _FLAX[self.number][1]
        y = apply(self.flax_params(), jnp.asarray(x_NCHW.detach().numpy()).transpose(0, 2, 3, 1))
        return torch.from_numpy(np.asarray(y))


class Setup:
    """The network (flax and torch), inputs, targets and maps of the cross-checks.

    Attributes:
      f: per-example flax network ``f(x) -> logits`` (float64).
      model_fn: ``model_fn(params, x) -> logits``, one example.
      params: its flax parameters.
      torch: the `JaxNet`.
      x: ``(N, H, W, 1)`` inputs; y: ``(N,)`` targets; a: ``(N, H, W)`` tie-free maps.
    """


@pytest.fixture(scope="module")
def setup():
    model = TwoConv(num_classes=10, features=(2, 3), hidden=8, kernel_size=3)
    kx, kp, kb = jax.random.split(jax.random.key(0), 3)
    x = jax.random.uniform(kx, (N, SIDE, SIDE, 1), jnp.float64)
    params = model.init(kp, x[:1])
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(kb, len(leaves))
    params = jax.tree.unflatten(
        tree,
        [
            p + 0.1 * jax.random.normal(k, p.shape, p.dtype)
            for p, k in zip(leaves, keys, strict=True)
        ],
    )
    number = len(_FLAX)

    def apply(p, xb):
        return model.apply(p, xb)

    def grad_maps(p, xb, t):
        def one(xi, ti):
            return slp.attribute(lambda z: model.apply(p, z[None])[0], xi, "gradient", target=ti)

        return jax.vmap(one)(xb, t)

    _FLAX[number] = (model, jax.jit(apply), jax.jit(grad_maps))
    layers = [
        ("Conv_0", torch.nn.Conv2d(1, 2, 3, padding=1)),
        ("Conv_1", torch.nn.Conv2d(2, 3, 3, padding=1)),
        ("Dense_0", torch.nn.Linear(27, 8)),
        ("Dense_1", torch.nn.Linear(8, 10)),
    ]
    s = Setup()
    s.torch = JaxNet(number, params, layers).eval()
    s.model_fn = lambda p, xi: model.apply(p, xi[None])[0]
    s.params = params
    s.f = lambda xi: model.apply(params, xi[None])[0]
    s.x = np.asarray(x)
    s.y = np.array([3, 0, 7])
    s.a = np.random.default_rng(0).normal(size=(N, SIDE, SIDE))
    s.number = number
    return s


def quantus_explain(model, inputs, targets, **kwargs):
    """Quantus's ``explain_func``: slp's gradient on the weights ``model`` holds now."""
    grad_maps = _FLAX[model.number][2]
    x = jnp.asarray(inputs).transpose(0, 2, 3, 1)
    a = grad_maps(model.flax_params(), x, jnp.asarray(targets))
    return np.asarray(a).transpose(0, 3, 1, 2)


def _nchw(v):
    v = np.asarray(v)
    return v[:, None] if v.ndim == 3 else v.transpose(0, 3, 1, 2)


def run_quantus(metric, s, *, a=None, masks=None, each=True, **call):
    """Quantus's scores for the setup's examples (one call per example when ``each``)."""
    a = s.a if a is None else a
    idx = [[i] for i in range(N)] if each else [list(range(N))]
    out = []
    for i in idx:
        scores = metric(
            model=s.torch,
            x_batch=_nchw(s.x[i]),
            y_batch=s.y[i],
            a_batch=_nchw(a[i]),
            s_batch=None if masks is None else _nchw(masks[i]),
            channel_first=True,
            **call,
        )
        out.extend(scores)
    return out


def masks_of(n=N):
    m = np.zeros((n, SIDE, SIDE), bool)
    m[0, 2:7, 3:9] = True
    m[1, 6:, :5] = True
    m[2, ::3, 1::2] = True
    return m


def slp_scores(name, s, *, a=None, masks=None, keys=None, f=None, **options):
    a = s.a if a is None else a
    out = []
    for i in range(N):
        out.append(
            metrics.evaluate(
                name,
                s.f if f is None else f,
                s.x[i],
                a[i],
                target=int(s.y[i]),
                mask=None if masks is None else masks[i],
                key=None if keys is None else keys[i],
                **options,
            )
        )
    return np.asarray(out)


def close(ours, theirs, rtol=RTOL):
    np.testing.assert_allclose(
        np.asarray(ours, float), np.asarray(theirs, float), rtol=rtol, atol=rtol * 1e-3
    )


# ---------------------------------------------------------------------------- complexity


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("Sparseness", {}),
        ("Complexity", {}),
        ("EffectiveComplexity", {}),
        ("EffectiveComplexity", {"eps": 0.3}),
        ("Sparseness", {"abs": False, "normalise": False}),
    ],
)
def test_complexity(setup, name, options):
    q = getattr(quantus, name)(**options, disable_warnings=True)
    close(slp_scores(name, setup, **options), run_quantus(q, setup))


# ---------------------------------------------------------------------------- localisation


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("RelevanceMassAccuracy", {}),
        ("RelevanceMassAccuracy", {"abs": True}),
        ("RelevanceRankAccuracy", {}),
        ("TopKIntersection", {"k": 20}),
        ("TopKIntersection", {"k": 20, "concept_influence": True}),
        ("PointingGame", {}),
    ],
)
def test_localisation(setup, name, options):
    masks = masks_of()
    q = getattr(quantus, name)(**options, disable_warnings=True)
    close(slp_scores(name, setup, masks=masks, **options), run_quantus(q, setup, masks=masks))


@pytest.mark.parametrize(
    "options", [{}, {"weighted": True}, {"positive_attributions": True, "abs": False}]
)
def test_attribution_localisation(setup, options):
    """Quantus divides the mask's size by that of ``x_batch[2:]``: for a batch of exactly three
    single-channel images that is one image, the size slp uses (a batch of one divides by 0).
    The batch's normalisation changes the share only through Quantus's 1e-9."""
    masks = masks_of()
    q = quantus.AttributionLocalisation(**options, disable_warnings=True)
    theirs = run_quantus(q, setup, masks=masks, each=False)
    close(slp_scores("AttributionLocalisation", setup, masks=masks, **options), theirs)


def test_localisation_batched_without_normalisation(setup):
    """A whole batch at once agrees too when nothing depends on the batch (no normalising)."""
    masks = masks_of()
    for name in ("RelevanceRankAccuracy", "RelevanceMassAccuracy"):
        q = getattr(quantus, name)(normalise=False, disable_warnings=True)
        close(
            slp_scores(name, setup, masks=masks, normalise=False),
            run_quantus(q, setup, masks=masks, each=False),
        )


def test_focus(setup):
    flags = np.array([[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0]])
    theirs = []
    for i in range(N):
        q = quantus.Focus(disable_warnings=True)
        theirs += q(
            model=setup.torch,
            x_batch=_nchw(setup.x[[i]]),
            y_batch=setup.y[[i]],
            a_batch=_nchw(setup.a[[i]]),
            custom_batch=flags[[i]],
            channel_first=True,
        )
    close(slp_scores("Focus", setup, masks=flags), theirs)


def test_pointing_game_quantus_bugs(setup):
    """Quantus 0.6.0 keeps the pointing game in a bool array: the NaN of an empty mask becomes
    True, and ``weighted=True`` fails (a 2-D assignment into it) as soon as an example hits.
    slp returns NaN for an empty mask and the weighted hit the option describes."""
    masks = masks_of()
    masks[1] = False
    hit = slp_scores("PointingGame", setup, masks=masks)
    theirs = run_quantus(quantus.PointingGame(disable_warnings=True), setup, masks=masks)
    assert np.isnan(hit[1]) and bool(theirs[1]) is True  # an empty mask "hits" in Quantus
    assert [bool(t) for t in np.delete(theirs, 1)] == [bool(h) for h in np.delete(hit, 1)]
    assert np.nansum(hit) >= 1, "the reproducer needs a hit"
    with pytest.raises(TypeError, match="boolean array indexing"):
        run_quantus(quantus.PointingGame(weighted=True, disable_warnings=True), setup, masks=masks)
    ours = slp_scores("PointingGame", setup, masks=masks, weighted=True)
    for i in (0, 2):
        assert ours[i] == pytest.approx(hit[i] * (1 - masks[i].sum() / masks[i].size))

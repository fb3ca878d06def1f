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

import copy
import functools

import flax.linen as nn
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

pytestmark = [
    pytest.mark.crosscheck,
    # Quantus warns (always) when a perturbation leaves an input unchanged
    pytest.mark.filterwarnings("ignore:The settings for perturbing input:UserWarning"),
]

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
        return torch.from_numpy(np.array(y))


class Setup:
    """The network (flax and torch), inputs, targets and maps of the cross-checks.

    Attributes:
      f: per-example flax network ``f(x) -> logits`` (float64).
      model_fn: ``model_fn(params, x) -> logits``, one example.
      params: its flax parameters.
      torch: the `JaxNet`.
      x: ``(N, H, W, 1)`` inputs; y: ``(N,)`` targets; a: ``(N, H, W)`` tie-free maps.
    """


def make_setup(model, layers, shape=(SIDE, SIDE, 1), seed=0):
    """A `Setup` for the flax ``model`` whose layers the torch ``layers`` hold."""
    kx, kp, kb = jax.random.split(jax.random.key(seed), 3)
    x = jax.random.uniform(kx, (N, *shape), jnp.float64)
    params = model.init(kp, x[:1])
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(kb, len(leaves))
    params = jax.tree.unflatten(
        tree,
        [
            (p + 0.1 * jax.random.normal(k, p.shape, p.dtype)).astype(jnp.float64)
            for p, k in zip(leaves, keys, strict=True)
        ],
    )
    number = len(_FLAX)
    _FLAX[number] = (model, jax.jit(model.apply))
    s = Setup()
    s.torch = JaxNet(number, params, layers).eval()
    s.model_fn = lambda p, xi: model.apply(p, xi[None])[0]
    s.params = params
    s.f = lambda xi: model.apply(params, xi[None])[0]
    s.x = np.asarray(x)
    s.y = np.array([3, 0, 7])
    s.a = np.random.default_rng(seed).normal(size=(N, *shape[:2]))
    return s


@pytest.fixture(scope="module")
def setup():
    model = TwoConv(num_classes=10, features=(2, 3), hidden=8, kernel_size=3)
    layers = [
        ("Conv_0", torch.nn.Conv2d(1, 2, 3, padding=1)),
        ("Conv_1", torch.nn.Conv2d(2, 3, 3, padding=1)),
        ("Dense_0", torch.nn.Linear(27, 8)),
        ("Dense_1", torch.nn.Linear(8, 10)),
    ]
    return make_setup(model, layers)


@functools.cache
def _explainer(number, method):
    model = _FLAX[number][0]

    def maps(p, xb, t):
        def one(xi, ti):
            return slp.attribute(lambda z: model.apply(p, z[None])[0], xi, method, target=ti)

        return jax.vmap(one)(xb, t)

    return jax.jit(maps)


def quantus_explain(model, inputs, targets, method="gradient", **kwargs):
    """Quantus's ``explain_func``: slp's ``method`` on the weights ``model`` holds now."""
    x = jnp.asarray(inputs).transpose(0, 2, 3, 1)
    a = _explainer(model.number, method)(model.flax_params(), x, jnp.asarray(targets))
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


# ---------------------------------------------------------------------------- faithfulness


class _Feed:
    """Stands in for a NumPy random function: returns the given draws in order."""

    def __init__(self, draws):
        self.draws = list(draws)

    def __call__(self, *args, **kwargs):
        return self.draws.pop(0)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"softmax": False, "features_in_step": 4},
        {"perturb_baseline": "white", "abs": True},
        {"perturb_baseline": 0.25, "return_auc_per_sample": True},
    ],
)
def test_pixel_flipping(setup, options):
    """(Quantus's own ``return_auc_per_sample`` calls ``np.trapz``, gone from NumPy 2.4: the
    area of its curve is taken here.)"""
    options = dict(options)
    softmax = options.pop("softmax", True)
    auc = options.pop("return_auc_per_sample", False)
    q = quantus.PixelFlipping(**options, disable_warnings=True)
    theirs = run_quantus(q, setup, softmax=softmax)
    if auc:
        theirs = np.trapezoid(theirs, axis=1)
    ours = slp_scores("PixelFlipping", setup, softmax=softmax, return_auc_per_sample=auc, **options)
    close(ours, theirs)


def test_pixel_flipping_is_the_deletion_curve(setup):
    """Quantus's curve is slp's deletion curve without its start point (one pixel a step)."""
    q = quantus.PixelFlipping(perturb_baseline=0.0, normalise=False, disable_warnings=True)
    theirs = run_quantus(q, setup, softmax=False)
    n = SIDE * SIDE
    for i in range(N):
        curve = metrics.deletion_curve(
            setup.f, setup.x[i], setup.a[i], target=int(setup.y[i]), steps=n
        )
        close(curve.logit[1:], theirs[i])


@pytest.mark.parametrize("options", [{}, {"features_in_step": 12, "perturb_baseline": "mean"}])
def test_faithfulness_estimate(setup, options):
    q = quantus.FaithfulnessEstimate(**options, disable_warnings=True)
    close(slp_scores("FaithfulnessEstimate", setup, **options), run_quantus(q, setup))


def test_faithfulness_correlation_with_the_same_subsets(setup, monkeypatch):
    runs, size = 12, 20
    keys = jax.random.split(jax.random.key(1), N)
    ours = slp_scores("FaithfulnessCorrelation", setup, keys=keys, nr_runs=runs, subset_size=size)
    theirs = []
    for i in range(N):
        draws = [
            np.asarray(jax.random.choice(k, SIDE * SIDE, (size,), replace=False))
            for k in jax.random.split(keys[i], runs)
        ]
        q = quantus.FaithfulnessCorrelation(nr_runs=runs, subset_size=size, disable_warnings=True)
        with monkeypatch.context() as m:
            m.setattr(np.random, "choice", _Feed(draws))
            theirs += q(
                model=setup.torch,
                x_batch=_nchw(setup.x[[i]]),
                y_batch=setup.y[[i]],
                a_batch=_nchw(setup.a[[i]]),
                channel_first=True,
            )
    close(ours, theirs)


def test_monotonicity_quantus_never_restores_the_input(setup):
    """Quantus 0.6.0 writes the baseline where it should restore ``x``: its input stays the
    baseline image and every map scores True, a reversed map included. slp's
    ``insert_baseline=True`` does the same; by default it restores ``x``."""
    q = quantus.Monotonicity(disable_warnings=True)
    for a in (setup.a, -setup.a):
        theirs = run_quantus(q, setup, a=a)
        assert all(bool(t) for t in theirs)
        close(slp_scores("Monotonicity", setup, a=a, insert_baseline=True), theirs)
    # restoring x, the walk sees the network: not every map passes
    assert not all(slp_scores("Monotonicity", setup, a=a).all() for a in (setup.a, -setup.a))


@pytest.mark.parametrize(
    "options",
    [
        {"patch_size": 4},
        {"patch_size": 4, "order": "lerf", "regions_evaluation": 5, "perturb_baseline": 0.5},
        {"patch_size": 5},  # 12 is padded to 15: one row and column before, two after
        {"patch_size": 5, "perturb_baseline": "white", "softmax": False},
    ],
)
def test_region_perturbation(setup, options):
    options = dict(options)
    softmax = options.pop("softmax", True)
    q = quantus.RegionPerturbation(**options, disable_warnings=True)
    theirs = run_quantus(q, setup, softmax=softmax)
    close(slp_scores("RegionPerturbation", setup, softmax=softmax, **options), theirs)


def test_region_perturbation_random_order(setup, monkeypatch):
    keys = jax.random.split(jax.random.key(2), N)
    ours = slp_scores("RegionPerturbation", setup, keys=keys, patch_size=4, order="random")
    theirs = []
    for i in range(N):
        q = quantus.RegionPerturbation(patch_size=4, order="random", disable_warnings=True)
        with monkeypatch.context() as m:
            m.setattr(
                np.random, "permutation", _Feed([np.asarray(jax.random.permutation(keys[i], 9))])
            )
            theirs += run_quantus_one(q, setup, i)
    close(ours, theirs)


def run_quantus_one(metric, s, i, *, a=None, **call):
    a = s.a if a is None else a
    return metric(
        model=s.torch,
        x_batch=_nchw(s.x[[i]]),
        y_batch=s.y[[i]],
        a_batch=_nchw(a[[i]]),
        channel_first=True,
        **call,
    )


@pytest.mark.parametrize("options", [{"patch_size": 4}, {"patch_size": 5, "softmax": False}])
def test_selectivity(setup, options):
    options = dict(options)
    softmax = options.pop("softmax", True)
    q = quantus.Selectivity(**options, disable_warnings=True)
    theirs = run_quantus(q, setup, softmax=softmax)
    close(slp_scores("Selectivity", setup, softmax=softmax, **options), theirs)


def test_noisy_linear_imputation_matches_quantus():
    from quantus.functions.perturb_func import noisy_linear_imputation

    rng = np.random.default_rng(4)
    for h, w, c, share in [(7, 9, 2, 0.3), (12, 12, 1, 0.99), (6, 5, 3, 0.04), (9, 9, 1, 0.6)]:
        x = rng.uniform(size=(h, w, c))
        idx = rng.permutation(h * w)[: max(1, int(h * w * share))]
        mask = np.zeros(h * w, bool)
        mask[idx] = True
        theirs = noisy_linear_imputation(x.transpose(2, 0, 1).copy(), idx, noise=0.0)
        ours = metrics.noisy_linear_imputation(x, mask.reshape(h, w), noise=0.0)
        np.testing.assert_allclose(np.asarray(ours), theirs.transpose(1, 2, 0), rtol=1e-9)


def test_road(setup, monkeypatch):
    """Quantus returns the mean over its batch per share removed; without noise exactly, with
    noise given slp's draws (it adds them to the imputed pixels in its index order)."""
    shares = (10, 30, 50, 70, 90)
    x, y, a = setup.x, setup.y, setup.a
    q = quantus.ROAD(percentages=list(shares), noise=0.0, disable_warnings=True)
    theirs = q(model=setup.torch, x_batch=_nchw(x), y_batch=y, a_batch=_nchw(a), channel_first=True)
    ours = slp_scores("ROAD", setup, percentages=shares, noise=0.0)
    assert list(theirs) == list(shares)
    close(ours.mean(axis=0), [theirs[p] for p in shares])
    # Quantus 0.6.0 averages its first batch only: with batches of 2 the third image is lost
    first = q(
        model=setup.torch,
        x_batch=_nchw(x),
        y_batch=y,
        a_batch=_nchw(a),
        channel_first=True,
        batch_size=2,
    )
    close(ours[:2].mean(axis=0), [first[p] for p in shares])

    noise = 0.3  # large enough to change some predictions
    keys = jax.random.split(jax.random.key(5), N)
    ours = slp_scores("ROAD", setup, keys=keys, percentages=shares, noise=noise)
    draws = []
    for i in range(N):  # Quantus's order: share outside, example inside
        order = np.argsort(-a[i].ravel(), kind="stable")
        eps = [
            np.asarray(jax.random.normal(k, (SIDE, SIDE, 1), jnp.float64))
            for k in jax.random.split(keys[i], len(shares))
        ]
        draws.append(
            [
                e.reshape(1, -1)[:, order[: int(SIDE * SIDE * p / 100)]]
                for e, p in zip(eps, shares, strict=True)
            ]
        )
    q = quantus.ROAD(percentages=list(shares), noise=noise, disable_warnings=True)
    with monkeypatch.context() as m:
        m.setattr(np.random, "randn", _Feed([d[j] for j in range(len(shares)) for d in draws]))
        theirs = q(
            model=setup.torch, x_batch=_nchw(x), y_batch=y, a_batch=_nchw(a), channel_first=True
        )
    close(ours.mean(axis=0), [theirs[p] for p in shares])
    assert 0 < ours.mean() < 1


# ------------------------------------------------------------------------------ robustness


def _noise_feed(keys, nr, draw):
    """Quantus's ``perturb_func`` giving the batch slp's noise, sample after sample."""
    noises = [[np.asarray(draw(k)).reshape(-1) for k in jax.random.split(key, nr)] for key in keys]
    step = iter(range(nr))

    def perturb(arr, indices, **kwargs):
        s = next(step)
        return arr + np.stack([n[s] for n in noises[: len(arr)]])

    return perturb


_ROBUSTNESS = [
    ("MaxSensitivity", {}, "uniform", (-0.2, 0.2)),
    (
        "MaxSensitivity",
        {"return_nan_when_prediction_changes": True, "lower_bound": 0.5},
        "uniform",
        (-0.5, 0.5),
    ),
    ("AvgSensitivity", {"normalise": True, "abs": True}, "uniform", (-0.2, 0.2)),
    ("LocalLipschitzEstimate", {}, "normal", (0.0, 0.1)),
    ("LocalLipschitzEstimate", {"perturb_std": 0.3, "normalise": False}, "normal", (0.0, 0.3)),
    ("RelativeInputStability", {}, "uniform", (0.02, 0.2)),
    (
        "RelativeInputStability",
        {"return_nan_when_prediction_changes": False},
        "uniform",
        (0.02, 0.2),
    ),
]


@pytest.mark.parametrize(("name", "options", "kind", "bounds"), _ROBUSTNESS)
def test_robustness_with_the_same_noise(setup, name, options, kind, bounds):
    nr = 6
    keys = jax.random.split(jax.random.key(7), N)
    a = np.asarray(quantus_explain(setup.torch, _nchw(setup.x), setup.y))[:, 0]
    ours = slp_scores(name, setup, a=a, keys=keys, nr_samples=nr, **options)

    def draw(k):
        if kind == "normal":
            return bounds[0] + bounds[1] * jax.random.normal(k, (SIDE, SIDE, 1), jnp.float64)
        return jax.random.uniform(k, (SIDE, SIDE, 1), jnp.float64, *bounds)

    theirs = []
    for i in range(N):
        q = getattr(quantus, name)(
            nr_samples=nr,
            perturb_func=_noise_feed([keys[i]], nr, draw),
            **options,
            disable_warnings=True,
        )
        theirs += run_quantus_one(q, setup, i, a=a, explain_func=quantus_explain)
    close(ours, theirs)  # NaN where a prediction changed, on both sides
    if not options.get("return_nan_when_prediction_changes", name == "RelativeInputStability"):
        assert np.isfinite(ours).all()


# --------------------------------------------------------------------------- randomisation


def gradient_maps(s):
    return np.asarray(quantus_explain(s.torch, _nchw(s.x), s.y))[:, 0]


def test_random_logit_with_the_same_class(setup, monkeypatch):
    keys = jax.random.split(jax.random.key(8), N)
    a = gradient_maps(setup)
    ours = slp_scores("RandomLogit", setup, a=a, keys=keys, num_classes=10)
    theirs = []
    for i in range(N):
        draw = np.asarray(jax.random.randint(keys[i], (1,), 0, 9))
        q = quantus.RandomLogit(num_classes=10, disable_warnings=True)
        with monkeypatch.context() as m:
            m.setattr(np.random, "randint", _Feed([draw]))
            theirs += run_quantus_one(q, setup, i, a=a, explain_func=quantus_explain)
    close(ours, theirs)


def random_params(s, seed=42):
    """The weights Quantus's re-initialisation gives every layer (torch, ``seed + 1``)."""
    net = copy.deepcopy(s.torch)
    for layer in net.children():
        torch.manual_seed(seed + 1)
        layer.reset_parameters()
    return net.flax_params()


def quantus_layers(metric, s, i, a, **call):
    """A Quantus parameter randomisation test on example ``i``: ``(layers, scores)``."""
    out = run_quantus_one(metric, s, i, a=a, explain_func=quantus_explain, **call)
    if isinstance(out, dict):
        return list(out), [v[0] for v in out.values()]
    return None, out


def mprt_scores(name, s, a, *, keys=None, **options):
    return slp_scores(
        name,
        s,
        a=a,
        keys=keys,
        f=s.model_fn,
        params=s.params,
        random_params=random_params(s),
        **options,
    )


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"layer_order": "bottom_up", "return_last_correlation": True},
        {"layer_order": "independent", "abs": False},
        {"return_average_correlation": True, "average_includes_original": True},
    ],
)
def test_mprt(setup, options):
    a = gradient_maps(setup)
    ours = mprt_scores("MPRT", setup, a, **options)
    options = {k: v for k, v in options.items() if k != "average_includes_original"}
    theirs = []
    for i in range(N):
        layers, scores = quantus_layers(quantus.MPRT(**options, disable_warnings=True), setup, i, a)
        theirs.append(scores)
        if layers:  # "original", then the layers in the order randomised
            order = {"top_down": ["Dense_1", "Dense_0", "Conv_1", "Conv_0"]}.get(
                options.get("layer_order", "top_down"), ["Conv_0", "Conv_1", "Dense_0", "Dense_1"]
            )
            assert layers == ["original", *order]
    close(ours, np.reshape(theirs, ours.shape))


def test_mprt_average_without_the_original(setup):
    """Quantus 0.6.0 averages the trained network's similarity in too; slp's default
    averages the randomised networks only."""
    a = gradient_maps(setup)
    every = mprt_scores("MPRT", setup, a)
    mean = mprt_scores("MPRT", setup, a, return_average_correlation=True)
    close(mean, every[:, 1:].mean(axis=1))


def test_smooth_mprt_with_the_same_noise(setup, monkeypatch):
    """Quantus's SmoothMPRT averages ``quantus.explain`` whatever ``explain_func`` it has: the
    test points that at the same gradient, and feeds it slp's noise."""
    nr = 4
    keys = jax.random.split(jax.random.key(9), N)
    a = gradient_maps(setup)
    for options in ({}, {"layer_order": "top_down", "skip_layers": True}):
        ours = mprt_scores("SmoothMPRT", setup, a, keys=keys, nr_samples=nr, **options)
        networks = [0, 4] if options.get("skip_layers") else range(5)
        theirs = []
        for i in range(N):
            draws = [
                np.asarray(jax.random.normal(c, (SIDE, SIDE, 1), jnp.float64)).reshape(
                    1, 1, SIDE, SIDE
                )
                for k in networks
                for c in jax.random.split(jax.random.fold_in(keys[i], k), nr)[:-1]
            ]
            q = quantus.SmoothMPRT(nr_samples=nr, **options, disable_warnings=True)
            with monkeypatch.context() as m:
                m.setattr(np.random, "randn", _Feed(draws))
                m.setattr(quantus, "explain", quantus_explain)
                theirs.append(quantus_layers(q, setup, i, a)[1])
        close(ours, np.reshape(theirs, ours.shape))


@pytest.mark.parametrize("options", [{}, {"layer_order": "top_down", "n_bins": 20}])
def test_efficient_mprt(setup, options):
    a = gradient_maps(setup)
    ours = mprt_scores("EfficientMPRT", setup, a, **options)
    bins = options.pop("n_bins", None)
    if bins:
        options["complexity_func_kwargs"] = {"n_bins": bins}
    theirs = []
    for i in range(N):
        q = quantus.EfficientMPRT(**options, disable_warnings=True)
        theirs += quantus_layers(q, setup, i, a)[1]
    close(ours, theirs)


# ------------------------------------------------------------------------------- axiomatic


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"normalise": False, "perturb_baseline": 0.0},
        {"normalise": False, "softmax": True, "perturb_baseline": "white"},
    ],
)
def test_completeness(setup, options):
    """Quantus compares two floats exactly: False here; the sums are compared too."""
    options = dict(options)
    softmax = options.pop("softmax", False)
    a = gradient_maps(setup)
    q = quantus.Completeness(**options, disable_warnings=True)
    theirs = run_quantus(q, setup, a=a, softmax=softmax)
    ours = slp_scores("Completeness", setup, a=a, softmax=softmax, **options)
    np.testing.assert_array_equal(ours, theirs)
    assert not any(theirs)


def test_completeness_of_integrated_gradients_on_a_linear_model():
    """With a tolerance, completeness holds where it should: gradient x input of a linear
    model without bias, from the baseline 0."""
    w = np.random.default_rng(5).normal(size=(4, 4))

    def f(z):
        return jnp.stack([jnp.sum(w * z), jnp.zeros((), z.dtype)])

    x = np.random.default_rng(6).uniform(size=(4, 4))
    opts = {"target": 0, "perturb_baseline": 0.0, "normalise": False}
    assert bool(metrics.completeness(f, x, w * x, rtol=1e-9, **opts))
    assert not bool(metrics.completeness(f, x, 1.01 * w * x, rtol=1e-9, **opts))


@pytest.mark.parametrize("options", [{}, {"eps": 1e-3, "softmax": False}])
def test_non_sensitivity(setup, options):
    options = dict(options)
    softmax = options.pop("softmax", True)
    a = gradient_maps(setup)
    q = quantus.NonSensitivity(**options, disable_warnings=True)
    theirs = run_quantus(q, setup, a=a, softmax=softmax)
    close(slp_scores("NonSensitivity", setup, a=a, softmax=softmax, **options), theirs)


class _ValidNet(nn.Module):
    """An unpadded convolution first, where Quantus's bias shift is exact."""

    @nn.compact
    def __call__(self, x):
        h = nn.relu(nn.Conv(2, (3, 3), padding="VALID")(x))
        return nn.Dense(10)(h.reshape((h.shape[0], -1)))


@pytest.fixture(scope="module")
def valid_setup():
    layers = [("Conv_0", torch.nn.Conv2d(1, 2, 3)), ("Dense_0", torch.nn.Linear(200, 10))]
    return make_setup(_ValidNet(), layers, seed=1)


@pytest.mark.parametrize("method", ["gradient", "gradient_x_input"])
def test_input_invariance(valid_setup, method):
    s = valid_setup
    a = np.asarray(quantus_explain(s.torch, _nchw(s.x), s.y, method=method))[:, 0]
    q = quantus.InputInvariance(disable_warnings=True)
    theirs = run_quantus(
        q, s, a=a, explain_func=quantus_explain, explain_func_kwargs={"method": method}
    )
    ours = slp_scores("InputInvariance", s, a=a, method=method)
    np.testing.assert_array_equal(ours, theirs)
    assert all(ours) == (method == "gradient")


def test_input_invariance_with_padding(setup):
    """Quantus's bias shift cannot undo the shift where a padded convolution reads zeros: it
    then reports gradients as not invariant; composing the network with the shift is exact."""
    a = gradient_maps(setup)
    q = quantus.InputInvariance(disable_warnings=True)
    theirs = run_quantus(q, setup, a=a, explain_func=quantus_explain)
    ours = slp_scores("InputInvariance", setup, a=a)
    assert all(ours) and not all(theirs)

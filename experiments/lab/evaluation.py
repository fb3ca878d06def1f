"""The evaluation of every attribution method on networks trained from several seeds.

One resumable pipeline (experiments/evaluate_mnist.py is its command line):

1. **Maps** of every method on every image, clean and noisy, through `slp.attribute_dataset`
   with an output folder per (seed, method, input condition): a second run reuses every
   finished chunk.
2. **Per-image scores** per (seed, metric, method), each an ``(N,)`` ``.npy`` in a folder
   named after the metric and a hash of everything that decides its values (images,
   checkpoint, the metric's options): a rerun computes only what is missing, and a
   changed option never reuses stale scores.
3. **Statistics** (`lab.stats`): per metric and method the mean over seeds and images with
   its 95% interval (two-way random effects, seeds and images crossed), and the top group:
   the best method and every method that paired, Holm-corrected tests cannot separate from
   it, on the images where every compared method is defined in every seed (the count is
   reported).

**Methods that compute the same map are reported once.** `ALIASES` lists them; each
identity is checked on the trained networks (`identities`) and a name is merged only where
the maps agree to `IDENTITY_TOLERANCE` (largest |difference| over the largest |map|, on
every checked image of every seed). `NEAR_IDENTITIES` are measured and reported but not
merged: they differ by more than float32 rounding on these networks.

**Metrics** (`METRICS`; the families compute several at once):

- ``Deletion`` / ``Insertion``: area under the target's softmax probability as pixels are
  removed (set to 0) or inserted into a black image, most positive map value first
  (`slp.metrics.deletion_curve`); controls: a random order.
- ``OnDigit``: share of |map| on the digit and its 3-pixel outline (clean image).
- ``StateChange-baseline`` / ``StateChange-noise``: the completeness measure of
  `lab.completeness` (pixels by |map|, 1-20% perturbed, share of hidden neurons whose state
  changed, averaged over k); controls: random and blurred-random orders.
- ``Robustness-<variant>-<sigma>``: Spearman rank correlation of the map on the clean image
  with the map on its noisy version (`slp.noise` variant at that sigma), averaged over
  the noise draws of the image.

No figure here: `lab.evaluation_figures` draws them from the results.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import slp
from lab import analysis, completeness, stats
from slp import metrics, noise
from slp.attributions import get_method
from slp.data._files import atomic_writer

__all__ = [
    "ALIASES",
    "CONTROLS",
    "IDENTITY_TOLERANCE",
    "METRICS",
    "NEAR_IDENTITIES",
    "Metric",
    "SeedData",
    "Setting",
    "aggregate",
    "identities",
    "run",
]

ALIASES = {
    "gradient_x_input": ("lrp_epsilon",),
    "lrp_alpha1_beta0": ("lrp_alpha_beta",),
}
"""Reported name -> the registered methods that compute the same map (LRP-epsilon with its
default epsilon = 1e-7 is LRP-0, which is gradient x input; lrp_alpha_beta's defaults are
alpha = 1, beta = 0). tests/test_method_identities.py proves both on random networks."""

NEAR_IDENTITIES = (("lrp_zplus", "lrp_alpha1_beta0"), ("deep_taylor", "lrp_alpha1_beta0"))
"""Pairs that coincide only without positive (z+) or negative (Deep Taylor) biases: measured
on the trained networks and reported, kept as separate methods."""

IDENTITY_TOLERANCE = 5e-3
"""Largest |a - b| / max |b| per image for two float32 maps to count as one computation.

LRP-epsilon (epsilon 1e-7) and gradient x input differ by up to 7e-4 in float32 on 2CONV
(where a neuron's pre-activation is near 0); z+ and alpha1-beta0 by 1.5e-2 (median 8e-3)."""

CONTROLS = ("random", "blurred_random")
"""Pixel orders that know nothing about the network: the references of the perturbation
metrics."""


@dataclasses.dataclass(frozen=True)
class Setting:
    """What one evaluation run computes.

    Attributes:
      seeds: training seeds of the 2CONV networks.
      num_images: N test images (the same for every seed).
      methods: reported method names (aliases are left out by the caller).
      families: metric families to compute (keys of `METRICS`' ``family``).
      variants: noise variants of the robustness sweep (`slp.noise.VARIANTS`, or
        ``"gaussian"``: noise on every pixel, for data without a digit mask).
      sigmas: noise standard deviations of the sweep.
      draws: noise draws per image and (variant, sigma).
      sweep_images: the first images used by the robustness sweep (<= num_images).
      fractions: shares of pixels perturbed by the state-change measure.
      noise_sigma: sigma of the state-change measure's noisy replacement.
      steps: steps of the deletion/insertion curves.
      batch_size: images per compiled call.
      noise_seed: seed of the noise, random orders and per-image keys.
      cache: folder of maps and per-image scores.
      identity_images: images on which the method identities are checked.
      explain_images: the first images scored by the Quantus-named metrics that explain
        again (`EXPLAINING`; <= num_images).
      baseline: the value of a removed pixel (deletion, insertion, the state-change
        measure's baseline replacement): one value, or one per channel.
      dataset: its name in the reports.
    """

    seeds: tuple[int, ...]
    num_images: int
    methods: tuple[str, ...]
    families: tuple[str, ...] = ("curves", "locality", "state_change", "robustness")
    variants: tuple[str, ...] = ("bordered", "background", "framed")
    sigmas: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    draws: int = 3
    sweep_images: int = 100
    explain_images: int = 100
    fractions: tuple[float, ...] = completeness.DEFAULT_FRACTIONS
    noise_sigma: float = 0.5
    steps: int = 28
    batch_size: int = 32
    noise_seed: int = 0
    cache: Path = Path("runs/evaluation_cache")
    identity_images: int = 32
    baseline: tuple[float, ...] = (0.0,)
    dataset: str = "MNIST"


@functools.cache
def shared_apply(model: Any) -> Callable:
    """``apply(params, x) -> logits`` for one image of a flax ``model``, one function per
    distinct model (flax modules of equal configuration are equal): networks of one
    architecture trained from several seeds get the same function, so that every compiled
    program (`slp.attribute_dataset`'s and the metric families') is shared by the seeds."""

    def apply(params, x):
        return model.apply(params, x[None])[0]

    return apply


class SeedData(NamedTuple):
    """One trained network and the images it is scored on.

    Attributes:
      seed: its training seed.
      apply: ``apply(params, x) -> logits (C,)`` for one image ``(28, 28, 1)``.
      params: its parameters.
      checkpoint: the checkpoint's file name (part of every cache key).
      images: float32 ``(N, 28, 28, 1)``.
      labels: int32 ``(N,)``, the explained classes.
      random_params: a fresh initialisation of the network (the parameter randomisation
        tests, MPRT); None leaves those tests out.
    """

    seed: int
    apply: Callable
    params: Any
    checkpoint: str
    images: np.ndarray
    labels: np.ndarray
    random_params: Any = None


class Metric(NamedTuple):
    """One score per image of a map.

    Attributes:
      family: the computation that produces it (with the other metrics of its family).
      higher_is_better: the direction of a better map.
      description: one line for the report.
    """

    family: str
    higher_is_better: bool
    description: str


def robustness_name(variant: str, sigma: float) -> str:
    """The metric name of the robustness to ``variant`` noise at ``sigma``."""
    return f"Robustness-{variant}-{sigma:g}"


QUANTUS = {
    "PixelFlipping": (
        {"features_in_step": 28},
        False,
        "mean target probability as pixels are set to black, one image row per step, highest first",
    ),
    "RegionPerturbation": (
        {"patch_size": 4, "regions_evaluation": 20, "order": "morf"},
        True,  # the mean drop of the output (AOPC): large for a good map
        "mean drop of the target probability, 4x4 patches removed highest first (AOPC)",
    ),
    "FaithfulnessCorrelation": (
        {"nr_runs": 50, "subset_size": 56},
        True,
        "Pearson of the map's sum on random subsets (two image rows' worth of features) with "
        "the output drop",
    ),
    "MaxSensitivity": (
        {"nr_samples": 10},
        False,
        "largest relative change of the map under 10 uniform input perturbations",
    ),
    "AvgSensitivity": (
        {"nr_samples": 10},
        False,
        "mean relative change of the map under 10 uniform input perturbations",
    ),
    "RandomLogit": ({"num_classes": 10}, False, "SSIM of the maps of the class and a random class"),
    "MPRT": (
        {"return_average_correlation": True},
        False,
        "mean Spearman of the map to the maps of the top-down randomised networks",
    ),
    "SmoothMPRT": (
        {"return_average_correlation": True, "nr_samples": 10},
        False,
        "mean Spearman of the 10-sample smoothed map to those of the networks randomised "
        "cumulatively from the input layer up (Quantus's default order)",
    ),
    "Sparseness": ({}, True, "Gini index of |map|"),
    "Complexity": ({}, False, "entropy of |map|'s share per pixel"),
}
"""The Quantus-named metrics (``slp.metrics.evaluate``) of the ``"quantus"`` family: options
(Quantus's names; sample counts cut to what 2 CPU cores afford), whether higher is better
(RegionPerturbation as its drops are read: the area over the perturbation curve), and one
line for the report. A metric that returns a curve is scored by the curve's mean."""


def quantus_options(metric: str, image_shape: Sequence[int]) -> dict[str, Any]:
    """``QUANTUS[metric]``'s options for images of ``image_shape`` ``(H, W, C)``: the step of
    PixelFlipping is one image row (all channels) and FaithfulnessCorrelation's subset two
    rows, so that both divide the image (28 and 56 features on MNIST, 96 and 192 on
    CIFAR-10)."""
    options = dict(QUANTUS[metric][0])
    row = int(np.prod(image_shape)) // int(image_shape[0])
    if "features_in_step" in options:
        options["features_in_step"] = row
    if "subset_size" in options:
        options["subset_size"] = 2 * row
    return options


RANDOMISATION = ("MPRT", "SmoothMPRT")
"""Metrics that need ``random_params`` (skipped for a network without them)."""

EXPLAINING = ("MaxSensitivity", "AvgSensitivity", "RandomLogit", "MPRT", "SmoothMPRT")
"""Metrics that explain again: they are given the method by name (``method=``)."""


def metric_table(setting: Setting) -> dict[str, Metric]:
    """Every metric of the run's families, in report order."""
    out = {}
    if "curves" in setting.families:
        out["Deletion"] = Metric(
            "curves", False, "area under the target probability, pixels set to the baseline"
        )
        out["Insertion"] = Metric(
            "curves", True, "area under the target probability, pixels inserted into the baseline"
        )
    if "locality" in setting.families:
        out["OnDigit"] = Metric("locality", True, "share of |map| on digit + 3-pixel outline")
    if "state_change" in setting.families:
        for r in completeness.REPLACEMENTS:
            out[f"StateChange-{r}"] = Metric(
                "state_change",
                True,
                f"share of hidden neurons switched, top 1-20% pixels by |map|, {r} replacement",
            )
    if "quantus" in setting.families:
        for name, (_, higher, what) in QUANTUS.items():
            out[name] = Metric("quantus", higher, what)
    if "road" in setting.families:
        out["ROAD-MoRF"] = Metric(
            "road", False, "share of 10-90% removals (noisy linear imputation, most relevant "
            "first) after which the class is still predicted",
        )  # fmt: skip
        out["ROAD-LeRF"] = Metric(
            "road", True, "the same, least relevant pixels removed first",
        )  # fmt: skip
    if "robustness" in setting.families:
        for v in setting.variants:
            for s in setting.sigmas:
                out[robustness_name(v, s)] = Metric(
                    "robustness", True, f"Spearman(clean map, map on {v} noise, sigma {s:g})"
                )
    return out


METRICS = metric_table(Setting(seeds=(0,), num_images=2, methods=()))
"""The metrics of a default run."""


def device_label() -> str:
    """Where the run computed: ``"2 CPU cores"`` or the accelerator's kind."""
    import os

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"{os.cpu_count()} CPU cores"
    return f"{jax.device_count()} x {dev.device_kind}"


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _save(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as fh:
        np.save(fh, np.asarray(array))


def _method_options(method: str) -> dict[str, Any]:
    accepted = inspect.signature(get_method(method)).parameters
    return {k: v for k, v in (("low", 0.0), ("high", 1.0)) if k in accepted}


@jax.jit
def _gaussian(keys, images, sigma):
    """Gaussian noise of ``sigma`` on every pixel, clipped to [0, 1]."""
    clean = jnp.zeros(images.shape[1:3], bool)
    return jax.vmap(lambda k, x: noise.add_noise(k, x, clean, sigma=sigma))(keys, images)


class Pipeline:
    """Maps and per-image scores of one seed's network, cached under ``setting.cache``."""

    def __init__(self, setting: Setting, data: SeedData, log: Callable[[str], None]):
        self.setting, self.data, self.log = setting, data, log
        # the network, the images (and their labels) and the noise seed decide every map
        images = hashlib.sha256(np.ascontiguousarray(data.images).tobytes())
        images.update(np.asarray(data.labels, np.int64).tobytes())
        name = f"seed{data.seed}-{data.checkpoint}-n{len(data.images)}-{images.hexdigest()[:8]}"
        self.root = Path(setting.cache) / f"{name}-noise{setting.noise_seed}"
        self._noisy: dict[tuple[str, float, int], np.ndarray] = {}

    # -- inputs and maps ---------------------------------------------------------------
    def noise_keys(self, variant: str, draw: int, n: int) -> jax.Array:
        """One key per image for (variant, draw); the same for every sigma and seed."""
        k = jax.random.fold_in(jax.random.key(self.setting.noise_seed), draw)
        k = jax.random.fold_in(k, (*noise.VARIANTS, "gaussian").index(variant))
        return jax.random.split(k, n)

    def noisy(self, variant: str, sigma: float, draw: int) -> np.ndarray:
        key = (variant, sigma, draw)
        if key not in self._noisy:
            n = min(self.setting.sweep_images, len(self.data.images))
            images = jnp.asarray(self.data.images[:n])
            keys = self.noise_keys(variant, draw, n)
            if variant == "gaussian":
                self._noisy[key] = np.asarray(_gaussian(keys, images, sigma))
            else:
                self._noisy[key] = np.asarray(
                    noise.make_noisy_batch(variant, keys, images, sigma=sigma)
                )
        return self._noisy[key]

    def maps(self, method: str, condition: str = "clean", inputs=None, labels=None) -> np.ndarray:
        """Maps ``(n, *X)`` of ``method`` on the condition's inputs (resumable)."""
        inputs = self.data.images if inputs is None else inputs
        labels = self.data.labels[: len(inputs)] if labels is None else labels
        accepted = inspect.signature(get_method(method)).parameters
        out = slp.attribute_dataset(
            self.data.apply,
            inputs,
            method,
            params=self.data.params,
            target=labels,
            key=jax.random.key(self.setting.noise_seed) if "key" in accepted else None,
            batch_size=min(self.setting.batch_size, len(inputs)),
            out=self.root / "maps" / method / condition,
            progress=False,
            **_method_options(method),
        )
        return slp.read_maps(out.out)

    # -- per-image scores --------------------------------------------------------------
    def score_dir(self, metric: str, options: dict[str, Any]) -> Path:
        return self.root / "scores" / f"{metric}-{_hash(options)}"

    def cached(self, metric: str, options: dict[str, Any], name: str, compute: Callable):
        """``(N,)`` scores of ``name`` for ``metric``, computed by ``compute()`` if missing."""
        path = self.score_dir(metric, options) / f"{name}.npy"
        if path.is_file():
            return np.load(path)
        t0 = time.perf_counter()
        values = np.asarray(compute(), np.float64)
        _save(path, values)
        self.log(f"seed {self.data.seed} {metric} {name}: {time.perf_counter() - t0:.1f} s")
        return values


# -- the metric families -------------------------------------------------------------------


def _random_orders(setting: Setting, n: int, shape, *, blurred: bool) -> np.ndarray:
    base = jax.random.fold_in(jax.random.key(setting.noise_seed + 1), int(blurred))

    def one(i):
        k = jax.random.fold_in(base, i)
        if blurred:
            return completeness.blurred_random_scores(k, shape)
        return metrics.random_scores(k, shape)

    return np.asarray(jax.vmap(one)(jnp.arange(n)))


def _order_scores(p: Pipeline, name: str, *, absolute: bool) -> np.ndarray:
    """Pixel scores ``(N, H, W)`` of a method's clean map or of a control order."""
    n = len(p.data.images)
    if name in CONTROLS:
        shape = p.data.images.shape[1:3]
        return _random_orders(p.setting, n, shape, blurred=name == "blurred_random")
    px = analysis.pixel_maps(p.maps(name))
    return np.abs(px) if absolute else px


def _baseline(setting: Setting) -> np.ndarray:
    """The removed pixels' value: a scalar, or ``(C,)`` per channel."""
    b = np.asarray(setting.baseline, np.float32)
    return b[0] if b.size == 1 else b


_PROGRAMS: dict[tuple, Any] = {}


def _program(key: tuple, build: Callable[[], Any]) -> Any:
    """The compiled program of ``key``, built once per process: the seeds whose networks
    share one ``apply`` (`shared_apply`) share it, and only their parameters change."""
    if key not in _PROGRAMS:
        _PROGRAMS[key] = build()
    return _PROGRAMS[key]


def _curves_family(p: Pipeline, names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    baseline = _baseline(p.setting)
    opts = {"steps": p.setting.steps, "baseline": list(p.setting.baseline), "order": "signed"}
    out: dict[str, dict[str, np.ndarray]] = {"Deletion": {}, "Insertion": {}}
    for name in names:
        cache: dict[str, Any] = {}

        def both(name=name, cache=cache):
            if "r" not in cache:
                runner = _program(
                    ("curves", p.data.apply, p.setting.steps, p.setting.baseline,
                     p.setting.batch_size),
                    lambda: analysis.CurveRunner(
                        p.data.apply, baseline=baseline, steps=p.setting.steps,
                        batch_size=p.setting.batch_size,
                    ),
                )  # fmt: skip
                scores = _order_scores(p, name, absolute=False)
                cache["r"] = runner(p.data.params, p.data.images, scores, p.data.labels)
            return cache["r"]

        out["Deletion"][name] = p.cached(
            "Deletion", opts, name, lambda b=both: b()["deletion"]["auc_probability"]
        )
        out["Insertion"][name] = p.cached(
            "Insertion", opts, name, lambda b=both: b()["insertion"]["auc_probability"]
        )
    return out


def _locality_family(p: Pipeline, names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    images = jnp.asarray(p.data.images)
    region = None
    out = {}
    for name in names:
        if name in CONTROLS:
            continue

        def compute(name=name):
            nonlocal region
            if region is None:
                region = np.asarray(jax.vmap(lambda x: noise.clean_mask("bordered", x))(images))
            return analysis.mass_on(analysis.pixel_maps(p.maps(name)), region)

        out[name] = p.cached("OnDigit", {"region": "bordered"}, name, compute)
    return {"OnDigit": out}


def _state_change_runner(p: Pipeline, replacement: str) -> Callable:
    s = p.setting
    baseline = _baseline(s)

    def one(params, x, scores, key_data):
        key = jax.random.wrap_key_data(key_data)
        changes = completeness.state_changes(
            lambda z: p.data.apply(params, z),
            x,
            scores,
            fractions=s.fractions,
            replacement=replacement,
            baseline=baseline,
            sigma=s.noise_sigma,
            key=key,
        )
        return completeness.area(changes), changes.changed

    fn = _program(
        ("state_change", p.data.apply, replacement, s.fractions, s.baseline, s.noise_sigma),
        lambda: jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0))),
    )
    keys = jax.random.key_data(
        jax.random.split(jax.random.key(s.noise_seed + 2), len(p.data.images))
    )

    def run(scores):
        return analysis._batched(
            lambda x, sc, k: fn(p.data.params, x, sc, k),
            s.batch_size,
            p.data.images,
            np.asarray(scores, np.float32),
            np.asarray(keys),
            desc=None,
        )

    return run


def _state_change_options(setting: Setting, replacement: str) -> dict[str, Any]:
    return {
        "fractions": list(setting.fractions),
        "sigma": setting.noise_sigma,
        "r": replacement,
        "baseline": list(setting.baseline),
    }


def _state_change_family(p: Pipeline, names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    for r in completeness.REPLACEMENTS:
        metric = f"StateChange-{r}"
        opts = _state_change_options(p.setting, r)
        runner = None
        out[metric] = {}
        for name in names:

            def compute(name=name, metric=metric, opts=opts, r=r):
                nonlocal runner
                if runner is None:
                    runner = _state_change_runner(p, r)
                area, changed = runner(_order_scores(p, name, absolute=True))
                _save(p.score_dir(metric, opts) / f"{name}.layers.npy", changed)
                return area

            out[metric][name] = p.cached(metric, opts, name, compute)
    return out


def _robustness_family(p: Pipeline, names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """Spearman of the clean and the noisy maps, per (variant, sigma), mean over draws.

    The noisy images of every (variant, sigma, draw) of a method go through one
    `slp.attribute_dataset` call (one compiled program per method, one resumable folder).
    """
    s = p.setting
    n = min(s.sweep_images, len(p.data.images))
    cases = [(v, sigma, d) for v in s.variants for sigma in s.sigmas for d in range(s.draws)]
    opts = {"n": n, "draws": s.draws, "seed": s.noise_seed}
    tag = _hash([list(c) for c in cases])
    out: dict[str, dict[str, np.ndarray]] = {
        robustness_name(v, sigma): {} for v in s.variants for sigma in s.sigmas
    }
    for name in names:
        if name in CONTROLS:
            continue
        missing = [m for m in out if not (p.score_dir(m, opts) / f"{name}.npy").is_file()]
        rho: dict[str, list[np.ndarray]] = {}
        if missing:
            t0 = time.perf_counter()
            inputs = np.concatenate([p.noisy(v, sigma, d) for v, sigma, d in cases])
            labels = np.tile(p.data.labels[:n], len(cases))
            noisy = analysis.pixel_maps(p.maps(name, f"sweep-{tag}", inputs=inputs, labels=labels))
            clean = analysis.pixel_maps(p.maps(name)[:n])
            for k, (v, sigma, _) in enumerate(cases):
                sims = analysis.similarities(clean, noisy[k * n : (k + 1) * n])["spearman"]
                rho.setdefault(robustness_name(v, sigma), []).append(sims)
            p.log(f"seed {p.data.seed} robustness maps {name}: {time.perf_counter() - t0:.1f} s")
        for metric in out:

            def compute(metric=metric, rho=rho):
                values = np.full(len(p.data.images), np.nan)
                # NaN where a map is constant in some draw (no rank correlation)
                values[:n] = np.mean(rho[metric], axis=0)
                return values

            out[metric][name] = p.cached(metric, opts, name, compute)
    return out


JOINT = (("MaxSensitivity", "AvgSensitivity"),)
"""Metrics computed by one program: with one key they draw the same perturbations, so the
explanations are computed once (XLA merges the identical computations) and the largest
and the mean change come from the same samples."""

EXPLAIN_BATCH = {"SmoothMPRT": 4}
"""Images per compiled call of the metrics whose explanations multiply memory (10 noisy
copies x every randomised network; Integrated Gradients' 64 steps inside)."""


def _quantus_runner(p: Pipeline, group: Sequence[str], method: str) -> Callable:
    """Per-image scores of the metrics of ``group`` for ``method``'s maps, one compiled
    function of the maps returning one ``(n,)`` array per metric (``n`` the images the
    group is scored on, `quantus_images`)."""
    try:
        from slp.metrics import evaluate
    except ImportError as err:  # before the metrics package: say what is missing
        raise RuntimeError(
            "the 'quantus' family needs slp.metrics.evaluate (the Quantus-named metrics)"
        ) from err
    shape = p.data.images.shape[1:]
    options = {m: quantus_options(m, shape) for m in group}
    for m in group:
        if m in EXPLAINING:
            options[m]["method"] = method
    apply = p.data.apply

    def one(params, random_params, x, attribution, target, key_data):
        key = jax.random.wrap_key_data(key_data)
        scores = []
        for m in group:
            if m in RANDOMISATION:
                out = evaluate(
                    m, apply, x, attribution, target=target, key=key, params=params,
                    random_params=random_params, **options[m],
                )  # fmt: skip
            else:
                f = lambda z: apply(params, z)  # noqa: E731
                out = evaluate(m, f, x, attribution, target=target, key=key, **options[m])
            scores.append(jnp.mean(jnp.asarray(out, jnp.float32)))  # a curve: its mean
        return tuple(scores)

    explains = any(m in EXPLAINING for m in group)  # else one program serves every method
    fn = _program(
        ("quantus", apply, tuple(group), method if explains else None, _hash(options)),
        lambda: jax.jit(jax.vmap(one, in_axes=(None, None, 0, 0, 0, 0))),
    )
    n = quantus_images(p.setting, group, len(p.data.images))
    keys = jax.random.key_data(
        jax.random.split(jax.random.key(p.setting.noise_seed + 3), len(p.data.images))
    )
    batch = min([p.setting.batch_size] + [EXPLAIN_BATCH.get(m, n) for m in group])

    def run(maps):
        return analysis._batched(
            lambda x, a, t, k: fn(p.data.params, p.data.random_params, x, a, t, k),
            batch,
            p.data.images[:n],
            np.asarray(maps[:n], np.float32),
            np.asarray(p.data.labels[:n], np.int32),
            np.asarray(keys[:n]),
        )

    return run


EXPLAIN_SHARE = {"SmoothMPRT": 0.5}
"""Share of ``explain_images`` scored by the metrics ten times costlier than the others
(SmoothMPRT explains 10 noisy copies on every randomised network)."""


def quantus_images(setting: Setting, group: Sequence[str], num_images: int) -> int:
    """Images a group of Quantus-named metrics is scored on: the first
    ``setting.explain_images`` (times `EXPLAIN_SHARE`) for the metrics that explain
    again, all others."""
    if any(m in EXPLAINING for m in group):
        share = min(EXPLAIN_SHARE.get(m, 1.0) for m in group)
        return max(2, min(int(setting.explain_images * share), num_images))
    return num_images


def _quantus_family(p: Pipeline, names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    groups = [g for g in JOINT if all(m in QUANTUS for m in g)]
    joint = {m for g in groups for m in g}
    groups += [(m,) for m in QUANTUS if m not in joint]
    if p.data.random_params is None:
        groups = [g for g in groups if not any(m in RANDOMISATION for m in g)]
    out: dict[str, dict[str, np.ndarray]] = {m: {} for g in groups for m in g}
    shape = p.data.images.shape[1:]
    for group in groups:
        n = quantus_images(p.setting, group, len(p.data.images))
        for name in names:
            if name in CONTROLS:
                continue
            cache: dict[str, Any] = {}

            def scores(group=group, name=name, cache=cache, n=n):
                if "r" not in cache:
                    got = _quantus_runner(p, group, name)(p.maps(name))
                    cache["r"] = {}
                    for m, values in zip(group, got, strict=True):
                        full = np.full(len(p.data.images), np.nan)
                        full[:n] = values
                        cache["r"][m] = full
                return cache["r"]

            for m in group:
                opts: dict[str, Any] = {"options": quantus_options(m, shape)}
                if m in EXPLAINING:
                    opts["n"] = n
                out[m][name] = p.cached(m, opts, name, lambda m=m, s=scores: s()[m])
    return out


ROAD_PERCENTAGES = tuple(range(10, 100, 10))
"""Shares of pixels removed by ROAD, in percent (Rong et al. 2022 use 10-90%)."""


def _road_family(p: Pipeline, names: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """ROAD (``slp.metrics.evaluate("ROAD")``) most relevant first (MoRF) and least relevant
    first (LeRF, the map negated), per image the mean over `ROAD_PERCENTAGES` of "the class
    is still predicted"; the control orders are scored like maps."""
    try:
        from slp.metrics import evaluate
    except ImportError as err:
        raise RuntimeError("the 'road' family needs slp.metrics.evaluate (ROAD)") from err
    apply = p.data.apply

    def one(params, x, scores, target, key_data):
        f = lambda z: apply(params, z)  # noqa: E731
        kw = dict(target=target, key=jax.random.wrap_key_data(key_data))
        kw["percentages"] = ROAD_PERCENTAGES
        morf = evaluate("ROAD", f, x, scores, **kw)
        lerf = evaluate("ROAD", f, x, -scores, **kw)
        return jnp.mean(morf.astype(jnp.float32)), jnp.mean(lerf.astype(jnp.float32))

    fn = _program(("road", apply), lambda: jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0, 0))))
    keys = jax.random.key_data(
        jax.random.split(jax.random.key(p.setting.noise_seed + 4), len(p.data.images))
    )
    opts = {"percentages": list(ROAD_PERCENTAGES)}
    out: dict[str, dict[str, np.ndarray]] = {"ROAD-MoRF": {}, "ROAD-LeRF": {}}
    for name in names:
        cache: dict[str, Any] = {}

        def both(name=name, cache=cache):
            if "r" not in cache:
                scores = _order_scores(p, name, absolute=False)
                cache["r"] = analysis._batched(
                    lambda x, sc, t, k: fn(p.data.params, x, sc, t, k),
                    p.setting.batch_size,
                    p.data.images,
                    np.asarray(scores, np.float32),
                    np.asarray(p.data.labels, np.int32),
                    np.asarray(keys),
                )
            return cache["r"]

        out["ROAD-MoRF"][name] = p.cached("ROAD-MoRF", opts, name, lambda b=both: b()[0])
        out["ROAD-LeRF"][name] = p.cached("ROAD-LeRF", opts, name, lambda b=both: b()[1])
    return out


def state_change_curves(setting: Setting, datas: Sequence[SeedData]) -> dict[str, Any]:
    """Mean share of hidden neurons switched at each k, over seeds and images.

    Returns:
      ``{"fraction": (K,), "replacements", "controls", "n_images", <replacement>: {name:
      (K,) list, name + "/ci95": [(K,) low, (K,) high]}}`` for every method and control
      whose layer counts are cached (intervals as in `lab.stats.interval`).
    """
    out: dict[str, Any] = {
        "fraction": list(setting.fractions),
        "replacements": list(completeness.REPLACEMENTS),
        "controls": list(CONTROLS),
        "n_images": setting.num_images,
    }
    pipelines = [Pipeline(setting, d, print) for d in datas]
    neurons = []
    for d in datas:
        shapes = jax.eval_shape(
            slp.activation_pattern(lambda z, d=d: d.apply(d.params, z)), d.images[0]
        )
        neurons.append(sum(int(np.prod(a.shape)) for a in shapes))
    for r in completeness.REPLACEMENTS:
        opts = _state_change_options(setting, r)
        out[r] = {}
        for name in [*setting.methods, *CONTROLS]:
            paths = [
                p.score_dir(f"StateChange-{r}", opts) / f"{name}.layers.npy" for p in pipelines
            ]
            if all(path.is_file() for path in paths):
                shares = np.stack(
                    [np.load(path).sum(-1) / n for path, n in zip(paths, neurons, strict=True)]
                )  # (S, N, K)
                out[r][name] = np.mean(shares, axis=(0, 1)).tolist()
                bounds = [stats.interval(shares[:, :, k]).ci95 for k in range(shares.shape[-1])]
                out[r][f"{name}/ci95"] = [list(b) for b in zip(*bounds, strict=True)]
    return out


FAMILIES = {
    "curves": (_curves_family, CONTROLS[:1]),
    "locality": (_locality_family, ()),
    "state_change": (_state_change_family, CONTROLS),
    "robustness": (_robustness_family, ()),
    "quantus": (_quantus_family, ()),
    "road": (_road_family, CONTROLS),
}
"""Family -> (function(pipeline, names) -> {metric: {name: (N,)}}, its control orders)."""


# -- method identities ---------------------------------------------------------------------


def _relative(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    scale = np.abs(b).max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(scale > 0, np.abs(a - b).max(axis=1) / scale, np.nan)


def identities(pipelines: Sequence[Pipeline]) -> dict[str, dict[str, Any]]:
    """Largest and median relative difference of every alias (and near-identity) pair
    whose reported methods are among the run's.

    Returns:
      ``{"a = b": {"max_relative", "median_relative", "images", "merged", "tolerance"}}``
      over the first ``identity_images`` images of every seed; ``merged`` where the
      largest difference is within `IDENTITY_TOLERANCE` and the pair is in `ALIASES`.
    """
    if not pipelines:
        return {}
    methods = set(pipelines[0].setting.methods)
    pairs = [(a, name) for name, aliases in ALIASES.items() if name in methods for a in aliases]
    pairs += [(a, b) for a, b in NEAR_IDENTITIES if a in methods and b in methods]
    out = {}
    for a, b in pairs:
        rel = []
        for p in pipelines:
            k = min(p.setting.identity_images, len(p.data.images))
            ident = Pipeline(p.setting, p.data._replace(images=p.data.images[:k]), p.log)
            rel.append(_relative(ident.maps(a), ident.maps(b)))
        rel = np.concatenate(rel)
        worst = float(np.nanmax(rel))
        out[f"{a} = {b}"] = {
            "max_relative": worst,
            "median_relative": float(np.nanmedian(rel)),
            "images": int(np.isfinite(rel).sum()),
            "tolerance": IDENTITY_TOLERANCE,
            "merged": bool(worst <= IDENTITY_TOLERANCE and (a, b) not in NEAR_IDENTITIES),
        }
    return out


# -- the run and its statistics ------------------------------------------------------------


def run(setting: Setting, datas: Sequence[SeedData], log: Callable[[str], None] = print):
    """Maps and scores of every (seed, family, method); resumable through ``setting.cache``.

    Returns:
      ``(scores, identity)``: ``scores[metric][name]`` is ``(S, N)`` (seeds in
      ``setting.seeds`` order; NaN where undefined), methods and controls together;
      ``identity`` from `identities`.
    """
    pipelines = [Pipeline(setting, d, log) for d in datas]
    identity = identities(pipelines)
    per_seed = []
    for p in pipelines:
        got: dict[str, dict[str, np.ndarray]] = {}
        for family in setting.families:
            fn, controls = FAMILIES[family]
            got.update(fn(p, [*setting.methods, *controls]))
        per_seed.append(got)
    scores = {
        metric: {name: np.stack([g[metric][name] for g in per_seed]) for name in names}
        for metric, names in per_seed[0].items()
    }
    return scores, identity


def _interval_dict(values: np.ndarray) -> dict[str, Any]:
    keep = stats.complete_images(values)
    if keep.sum() < 2:
        return {"mean": None, "ci95": None, "n_images": int(keep.sum()), "n_seeds": len(values)}
    iv = stats.interval(values)
    return {
        "mean": iv.mean,
        "ci95": [iv.ci95[0], iv.ci95[1]],
        "se": iv.se,
        "n_images": iv.n_images,
        "n_seeds": iv.n_seeds,
    }


def aggregate(
    scores: dict[str, dict[str, np.ndarray]], table: dict[str, Metric], *, alpha: float = 0.05
) -> dict[str, Any]:
    """Intervals, top groups and comparisons with the controls of every metric.

    Returns:
      ``{metric: {"higher_is_better", "description", "methods": {name: interval},
      "controls": {name: interval}, "top_group": {"members", "best", "n_images",
      "adjusted_p", "left_out"}, "vs_control": {control: {name: {"difference", "p_holm"}}}}}``;
      an interval is ``{"mean", "ci95": [low, high], "se", "n_images", "n_seeds"}``.
    """
    out = {}
    for metric, by_name in scores.items():
        info = table[metric]
        methods = {n: v for n, v in by_name.items() if n not in CONTROLS}
        controls = {n: v for n, v in by_name.items() if n in CONTROLS}
        entry: dict[str, Any] = {
            "higher_is_better": info.higher_is_better,
            "description": info.description,
            "methods": {n: _interval_dict(v) for n, v in methods.items()},
            "controls": {n: _interval_dict(v) for n, v in controls.items()},
        }
        # a method defined on fewer than 2 images in every seed (Deep Taylor on randomised
        # networks) would leave no image to compare the others on: it is left out, and named
        ranked = {n: v for n, v in methods.items() if stats.complete_images(v).sum() >= 2}
        left_out = sorted(set(methods) - set(ranked))
        try:
            top = stats.top_group(ranked, higher_is_better=info.higher_is_better, alpha=alpha)
            entry["top_group"] = {
                "best": top.best,
                "members": list(top.members),
                "n_images": top.n_images,
                "adjusted_p": top.adjusted,
                "left_out": left_out,
            }
        except ValueError as err:  # fewer than 2 methods or images: said in the report
            entry["top_group"] = {
                "best": None, "members": [], "n_images": 0, "why": str(err), "left_out": left_out,
            }  # fmt: skip
        entry["vs_control"] = {}
        for c, cv in controls.items():
            comps = {n: stats.compare(v, cv) for n, v in methods.items()}
            ok = [n for n, cmp in comps.items() if np.isfinite(cmp.p_value)]
            adj = stats.holm([comps[n].p_value for n in ok]) if ok else []
            entry["vs_control"][c] = {
                n: {
                    "difference": comps[n].difference.mean,
                    "ci95": list(comps[n].difference.ci95),
                    "p_holm": float(a),
                    "n_images": comps[n].difference.n_images,
                }
                for n, a in zip(ok, adj, strict=True)
            }
        out[metric] = entry
    return out

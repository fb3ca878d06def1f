"""Helpers shared by the experiments (the measurement ones: mnist_noise, mnist_metrics,
encodings, cifar10; the markdown tables of every report).

Not an experiment itself: batched maps of every registered attribution method for a
network given by ``apply(params, x) -> logits``, per-image measures from `slp.metrics`
on top of them, summaries with their spread, the reports' tables and maps figures, and
atomic JSON output.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from tqdm import tqdm

import slp
from slp import metrics, plotting
from slp.attributions import get_method
from slp.data._files import atomic_writer

ORDERS = ("signed", "abs")
"""Pixel orders of deletion/insertion: by the signed map, by |map|."""
MODES = ("deletion", "insertion")
RANDOM = "random"

SUPPLIED_OPTIONS = ("key", "low", "high")
"""Method options the experiments supply: a PRNG key per image, the input range."""


def required_options(method: str) -> list[str]:
    """Keyword-only options of ``method`` that have no default and are not supplied."""
    params = inspect.signature(get_method(method)).parameters.values()
    return [
        p.name
        for p in params
        if p.kind is inspect.Parameter.KEYWORD_ONLY
        and p.default is inspect.Parameter.empty
        and p.name not in SUPPLIED_OPTIONS + ("target",)
    ]


class MethodRunner:
    """Maps of registered methods over batches, for any parameters of one network.

    Each method is compiled once (`jax.jit` of `jax.vmap`) with the parameters as an
    argument, so the same program serves the trained and the randomised networks.
    Options supplied where the method takes them: ``key`` (one PRNG key per image,
    ``fold_in(key(seed), image index)``), ``low``/``high`` (the input range).

    Args:
      apply: ``apply(params, x) -> logits`` for one example ``x``.
      input_range: ``(low, high)`` of the network's input values.
      batch_size: images per compiled call (the last batch is padded).
      seed: seed of the per-image keys.
    """

    def __init__(
        self,
        apply: Callable,
        *,
        input_range: tuple[float, float] = (0.0, 1.0),
        batch_size: int = 25,
        seed: int = 0,
    ):
        self.apply = apply
        self.low, self.high = (float(v) for v in input_range)
        self.batch_size = int(batch_size)
        self.key = jax.random.key(seed)
        self._compiled: dict[str, Callable] = {}

    def _fn(self, method: str) -> Callable:
        if method not in self._compiled:
            accepted = inspect.signature(get_method(method)).parameters
            low, high, key = self.low, self.high, self.key

            def one(params, x, target, index):
                opts = {}
                if "key" in accepted:
                    opts["key"] = jax.random.fold_in(key, index)
                if "low" in accepted:
                    opts["low"] = low
                if "high" in accepted:
                    opts["high"] = high
                return slp.attribute(
                    lambda z: self.apply(params, z), x, method, target=target, **opts
                )

            self._compiled[method] = jax.jit(jax.vmap(one, in_axes=(None, 0, 0, 0)))
        return self._compiled[method]

    def __call__(
        self, method: str, params: Any, inputs: np.ndarray, targets: np.ndarray
    ) -> np.ndarray:
        """Maps ``(N, ...)`` of ``method`` for ``inputs (N, ...)`` and class ``targets (N,)``."""
        fn = self._fn(method)
        return _batched(
            lambda x, t, i: fn(params, x, t, i),
            self.batch_size,
            np.asarray(inputs),
            np.asarray(targets, np.int32),
            np.arange(len(inputs), dtype=np.int32),
            desc=method,
        )


def _batched(fn: Callable, batch_size: int, *arrays: np.ndarray, desc: str | None = None):
    """``fn`` over equal-length arrays in padded batches; outputs concatenated (pytrees too).

    Shows a progress bar named ``desc`` on terminals when there is more than one batch.
    """
    n = len(arrays[0])
    bs = min(batch_size, n)
    outs = []
    starts = range(0, n, bs)
    for start in tqdm(
        starts, desc=desc, unit="batch", leave=False, disable=len(starts) < 2 or None
    ):
        parts = [a[start : start + bs] for a in arrays]
        m = len(parts[0])
        if m < bs:
            parts = [np.concatenate([p, np.repeat(p[-1:], bs - m, axis=0)]) for p in parts]
        out = fn(*(jnp.asarray(p) for p in parts))
        outs.append(jax.tree.map(lambda o, m=m: np.asarray(o)[:m], out))
    return jax.tree.map(lambda *o: np.concatenate(o), *outs)


def usable_methods(
    runner: MethodRunner, params: Any, x: np.ndarray, methods: Sequence[str]
) -> tuple[list[str], dict[str, str]]:
    """The methods that run on one example here, and why each of the others does not.

    Args:
      runner: the `MethodRunner`.
      params: network parameters.
      x: one input.
      methods: candidate method names.

    Returns:
      ``(usable, skipped)``: names, and ``{name: reason}``.
    """
    usable, skipped = [], {}
    for method in methods:
        missing = required_options(method)
        if missing:
            skipped[method] = f"needs option(s) {missing} that this experiment cannot supply"
            continue
        try:
            out = runner(method, params, x[None], np.zeros(1, np.int32))
        except (ValueError, TypeError) as err:  # the method refuses this network: reported
            skipped[method] = f"{type(err).__name__}: {err}"
            continue
        if not np.isfinite(out).all():
            skipped[method] = "non-finite values on a test input"
            continue
        usable.append(method)
    return usable, skipped


def pixel_maps(maps: np.ndarray) -> np.ndarray:
    """``(N, H, W)`` pixel maps from maps ``(N, H, W)`` or ``(N, H, W, C)`` (channels summed)."""
    return np.asarray(jax.vmap(metrics.pixel_map)(jnp.asarray(maps)))


_similarities = jax.jit(
    jax.vmap(
        lambda a, b: {
            "spearman": metrics.spearman(a, b),
            "spearman_abs": metrics.spearman(jnp.abs(a), jnp.abs(b)),
            "pearson": metrics.pearson(a, b),
            "cosine": metrics.cosine_similarity(a, b),
        }
    )
)


def similarities(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image similarities of pixel maps ``a, b (N, H, W)``.

    Returns:
      ``{"spearman", "spearman_abs", "pearson", "cosine"}``, each ``(N,)`` (NaN where
      undefined); ``spearman_abs`` compares ``|a|`` with ``|b|`` (Adebayo et al. 2018).
    """
    return {k: np.asarray(v) for k, v in _similarities(jnp.asarray(a), jnp.asarray(b)).items()}


def mass_on(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per-image share of |map| on ``masks (N, H, W)``, for maps ``(N, H, W[, C])``."""
    return np.asarray(jax.vmap(metrics.mass_on_mask)(jnp.asarray(maps), jnp.asarray(masks)))


class CurveRunner:
    """Deletion and insertion curves over batches (`slp.metrics`), compiled once.

    Args:
      apply: ``apply(params, x) -> logits`` for one example.
      baseline: replacement value, scalar or shaped like one example.
      steps: curve steps after the start.
      batch_size: images per compiled call.
    """

    def __init__(self, apply: Callable, *, baseline: Any, steps: int, batch_size: int = 25):
        self.batch_size = int(batch_size)
        baseline = jnp.asarray(baseline, jnp.float32)

        def both(params, x, scores, target):
            f = lambda z: apply(params, z)  # noqa: E731
            kw = dict(target=target, baseline=baseline, steps=steps)
            d = metrics.deletion_curve(f, x, scores, **kw)
            i = metrics.insertion_curve(f, x, scores, **kw)
            area = lambda c: (  # noqa: E731
                metrics.curve_area(c.fraction, c.logit),
                metrics.curve_area(c.fraction, c.probability),
            )
            return {"deletion": (d, *area(d)), "insertion": (i, *area(i))}

        self._fn = jax.jit(jax.vmap(both, in_axes=(None, 0, 0, 0)))

    def __call__(self, params, inputs, scores, targets) -> dict[str, dict[str, np.ndarray]]:
        """Curves for ``inputs (N, H, W[, C])`` ordered by pixel ``scores (N, H, W)``.

        Returns:
          ``{"deletion"|"insertion": {"fraction" (S+1,), "logit" (N, S+1),
          "probability" (N, S+1), "auc_logit" (N,), "auc_probability" (N,)}}``.
        """
        out = _batched(
            lambda x, s, t: self._fn(params, x, s, t),
            self.batch_size,
            np.asarray(inputs),
            np.asarray(scores, np.float32),
            np.asarray(targets, np.int32),
        )
        result = {}
        for mode, (curve, auc_logit, auc_prob) in out.items():
            result[mode] = {
                "fraction": curve.fraction[0],
                "logit": curve.logit,
                "probability": curve.probability,
                "auc_logit": auc_logit,
                "auc_probability": auc_prob,
            }
        return result


def summary(values: np.ndarray) -> dict[str, float | int | None]:
    """Mean, standard deviation, standard error and count of the finite values.

    Returns:
      ``{"mean", "std", "sem", "n", "n_undefined"}``; statistics are None when no value
      is finite.
    """
    values = np.asarray(values, np.float64).ravel()
    finite = values[np.isfinite(values)]
    n = int(finite.size)
    out: dict[str, float | int | None] = {"n": n, "n_undefined": int(values.size - n)}
    if n == 0:
        return {"mean": None, "std": None, "sem": None, **out}
    std = float(finite.std(ddof=1)) if n > 1 else 0.0
    return {"mean": float(finite.mean()), "std": std, "sem": std / math.sqrt(n), **out}


def fmt(s: dict[str, Any], *, digits: int = 3, spread: str = "std") -> str:
    """``mean ± spread`` of a `summary`; says how many values were undefined (NaN)."""
    undefined = s.get("n_undefined", 0)
    if s.get("mean") is None:
        return f"n/a ({undefined} undefined)"
    text = f"{s['mean']:.{digits}f} ± {s[spread]:.{digits}f}"
    return text + (f" ({undefined} undef.)" if undefined else "")


def ci95(s: dict[str, Any]) -> tuple[float, float]:
    """The 95% t-interval of the mean of a `summary` over its n images (NaN when n < 2).

    ``mean ± t(0.975, n - 1) × sem``: the images as the only random effect (one network).
    """
    n, mean, sem = s.get("n") or 0, s.get("mean"), s.get("sem")
    if mean is None or sem is None or n < 2:
        return (math.nan, math.nan)
    half = float(_t_quantile(n - 1)) * sem
    return (mean - half, mean + half)


def _t_quantile(df: int) -> float:
    from scipy import stats as sps  # only the figures need it

    return float(sps.t.ppf(0.975, df))


def error_bars(summaries: Sequence[dict[str, Any] | None]) -> np.ndarray:
    """``(2, M)`` distances below and above each mean to its `ci95` (0 where undefined), as
    matplotlib's ``yerr`` takes them."""
    lows, highs = [], []
    for s in summaries:
        mean = None if s is None else s.get("mean")
        lo, hi = ci95(s) if mean is not None else (math.nan, math.nan)
        lows.append(0.0 if not math.isfinite(lo) else mean - lo)
        highs.append(0.0 if not math.isfinite(hi) else hi - mean)
    return np.array([lows, highs])


def rank_of(scores: dict[str, float | None], name: str, *, higher_is_better: bool) -> str:
    """``"k of M"``: 1 + the number of methods strictly better than ``name`` (ties share)."""
    defined = {m: v for m, v in scores.items() if v is not None and np.isfinite(v)}
    if name not in defined:
        return "n/a"
    mine = defined[name]
    better = sum((v > mine) if higher_is_better else (v < mine) for v in defined.values())
    return f"{better + 1} of {len(defined)}"


def verdict_line(what: str, scores: dict[str, float | None], *, higher_is_better: bool) -> str:
    """One markdown bullet: Insens's score and rank on a measure, and the best method's."""
    defined = {m: v for m, v in scores.items() if v is not None and np.isfinite(v)}
    if "insens" not in defined or not defined:
        return f"- {what}: Insens n/a."
    pick = max if higher_is_better else min
    top = pick(defined, key=defined.get)
    rank = rank_of(scores, "insens", higher_is_better=higher_is_better)
    return (
        f"- {what}: Insens {defined['insens']:.3f}, rank {rank} (best: {top} {defined[top]:.3f})."
    )


def faithfulness_verdicts(faith: dict[str, Any], methods) -> list[str]:
    """`verdict_line` of the deletion and insertion AUCs of probability, for each order."""
    lines = []
    for order in ORDERS:
        for mode, higher in (("deletion", False), ("insertion", True)):
            lines.append(
                verdict_line(
                    f"{mode} AUC of probability, {order} order ("
                    f"{'higher' if higher else 'lower'} = more faithful; random "
                    f"{faith[RANDOM][mode]['auc_probability']['mean']:.3f})",
                    {m: faith[m][order][mode]["auc_probability"]["mean"] for m in methods},
                    higher_is_better=higher,
                )
            )
    return lines


def randomization_verdicts(rand: dict[str, Any], steps, methods) -> list[str]:
    """`verdict_line` of the |map| Spearman after the first and the last randomisation step."""
    return [
        verdict_line(
            f"Spearman of |map| to the trained map after re-initialising down to {step} "
            "(lower = more dependent on the weights)",
            {m: rand[m][step]["spearman_abs"]["mean"] for m in methods},
            higher_is_better=False,
        )
        for step in (steps[0], steps[-1])
    ]


def with_random_biases(params: Any, key: jax.Array, scale: float = 0.05) -> Any:
    """``params`` with ``scale * N(0, 1)`` added to every bias (flax initialises them to
    zero; benchmarks and cross-checks want every bias path exercised)."""
    leaves, tree = jax.tree.flatten_with_path(params)
    keys = iter(jax.random.split(key, len(leaves)))
    return jax.tree.unflatten(
        tree,
        [
            p + scale * jax.random.normal(next(keys), p.shape, p.dtype)
            if "bias" in jax.tree_util.keystr(path)
            else p
            for path, p in leaves
        ],
    )


def skipped_section(skipped: dict[str, str]) -> list[str]:
    """Markdown lines listing the methods an experiment skipped, and why (none: no lines)."""
    if not skipped:
        return []
    return ["## Methods skipped", "", *(f"- {m}: {why}" for m, why in skipped.items()), ""]


def report_text(lines: Sequence[str], skipped: dict[str, str]) -> str:
    """A report's markdown: its `lines`, then the methods skipped (`skipped_section`)."""
    return "\n".join([*lines, *skipped_section(skipped)])


def table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], *, align: Sequence[str] | None = None
) -> list[str]:
    """The lines of one markdown table: header, separator, one line per row.

    Args:
      header: the column titles.
      rows: each row's cells (``str`` as written, anything else through ``str``), as many
        as there are titles.
      align: per column ``"---"`` (default) or ``"---:"`` (right-aligned).

    Returns:
      ``["| a | b |", "|---|---|", "| 1 | 2 |", ...]``; every result table of the
      experiments is written with it.
    """
    align = list(align) if align is not None else ["---"] * len(header)
    if len(align) != len(header):
        raise ValueError(f"{len(align)} alignments for {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in rows:
        cells = [c if isinstance(c, str) else str(c) for c in row]
        if len(cells) != len(header):
            raise ValueError(f"a row of {len(cells)} cells in a table of {len(header)} columns")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def faithfulness_rows(faith: dict[str, Any], methods, *, logit: bool = False) -> list[list[str]]:
    """Rows of the deletion/insertion table: the random order, then each method and order.

    Columns: method, order, deletion and insertion AUC of the probability with their paired
    difference to the random order, and with `logit` the two AUCs of the logit.
    """

    def cells(e: dict[str, Any], *, random: bool) -> list[str]:
        row = [
            fmt(e["deletion"]["auc_probability"]),
            "0" if random else fmt(e["deletion"]["auc_probability_minus_random"]),
            fmt(e["insertion"]["auc_probability"]),
            "0" if random else fmt(e["insertion"]["auc_probability_minus_random"]),
        ]
        if logit:
            row += [
                fmt(e["deletion"]["auc_logit"], digits=2),
                fmt(e["insertion"]["auc_logit"], digits=2),
            ]
        return row

    rows = [["random", "-", *cells(faith[RANDOM], random=True)]]
    for m in methods:
        for order in ORDERS:
            rows.append([m, order, *cells(faith[m][order], random=False)])
    return rows


def faithfulness_table(faith: dict[str, Any], methods, *, logit: bool = False) -> list[str]:
    """The deletion/insertion table (`table`): the titles of `faithfulness_rows`' columns
    over its rows."""
    titles = ["method", "order", "deletion AUC prob", "Δ random", "insertion AUC prob", "Δ random"]
    if logit:
        titles += ["deletion AUC logit", "insertion AUC logit"]
    return table(titles, faithfulness_rows(faith, methods, logit=logit))


def randomization_cells(rand: dict[str, Any], steps) -> list[str]:
    """One method's ``signed / abs`` Spearman correlation after each randomisation step."""
    return [
        f"{fmt(rand[s]['spearman'], digits=2)} / {fmt(rand[s]['spearman_abs'], digits=2)}"
        for s in steps
    ]


def randomization_table(rand: dict[str, Any], steps, methods, *, note: str = "") -> list[str]:
    """The model-randomisation table (`table`): a row per method, a column per step
    (``+step`` and `note`), cells `randomization_cells`."""
    return table(
        ["method", *(f"+{s}{note}" for s in steps)],
        [[m, *randomization_cells(rand[m], steps)] for m in methods],
    )


def choose_methods(runner, params, x0, requested, log) -> tuple[list[str], dict[str, str]]:
    """The requested (default: all registered) methods that run here (`usable_methods`),
    and why the others do not (each logged)."""
    candidates = tuple(requested) if requested else slp.available_methods()
    methods, skipped = usable_methods(runner, params, x0, candidates)
    for m, why in skipped.items():
        log(f"skipping {m}: {why}")
    return methods, skipped


@contextlib.contextmanager
def timer(seconds: dict[str, float], name: str):
    """Stores the wall time of the ``with`` block in ``seconds[name]``."""
    t0 = time.perf_counter()
    yield
    seconds[name] = time.perf_counter() - t0


def write_json(path: Path, obj: Any) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    with atomic_writer(Path(path)) as fh:
        fh.write((json.dumps(obj, indent=2, allow_nan=False) + "\n").encode())


def write_text(path: Path, text: str) -> None:
    """Writes ``text`` (UTF-8) atomically."""
    with atomic_writer(Path(path)) as fh:
        fh.write(text.encode())


def faithfulness(curves, params, images, labels, clean_maps, *, seed, methods, log):
    """Deletion/insertion areas per method and pixel order, against a random order.

    Args:
      curves: a `CurveRunner`.
      params: network parameters.
      images: ``(N, H, W, C)``.
      labels: ``(N,)`` targets.
      clean_maps: ``{method: (N, H, W, C) maps}``.
      seed: seed of the random orders (one per image).
      methods: method names.
      log: progress printer.

    Returns:
      ``(results, mean_curves)``: ``results[method][order][mode]`` and
      ``results["random"][mode]`` hold summaries ``auc_logit``, ``auc_probability`` and
      their paired differences with the random order (``..._minus_random``);
      ``mean_curves`` the mean curves over images and ``fraction``.
    """
    n = len(images)
    rand = np.asarray(
        jax.vmap(
            lambda i: metrics.random_scores(
                jax.random.fold_in(jax.random.key(seed), i), images.shape[1:3]
            )
        )(jnp.arange(n))
    )
    random_out = curves(params, images, rand, labels)
    results: dict[str, Any] = {}
    mean_curves: dict[str, Any] = {"fraction": random_out["deletion"]["fraction"].tolist()}

    def record(out):
        entry, mean = {}, {}
        for mode in MODES:
            entry[mode] = {}
            mean[mode] = {}
            for kind in ("logit", "probability"):
                auc = out[mode][f"auc_{kind}"]
                rnd = random_out[mode][f"auc_{kind}"]
                entry[mode][f"auc_{kind}"] = summary(auc)
                entry[mode][f"auc_{kind}_minus_random"] = summary(auc - rnd)
                mean[mode][kind] = out[mode][kind].mean(axis=0).tolist()
                mean[mode][f"{kind}/ci95"] = curve_interval(out[mode][kind])
        return entry, mean

    results[RANDOM], mean_curves[RANDOM] = record(random_out)
    for method in methods:
        t0 = time.perf_counter()
        px = pixel_maps(clean_maps[method])
        results[method], mean_curves[method] = {}, {}
        for order in ORDERS:
            scores = px if order == "signed" else np.abs(px)
            out = curves(params, images, scores, labels)
            results[method][order], mean_curves[method][order] = record(out)
        log(f"faithfulness {method}: {time.perf_counter() - t0:.0f} s")
    return results, mean_curves


def randomization(runner, model, params, images, labels, clean_maps, *, seed, methods, log):
    """Similarity of each method's map to the trained network's as layers are re-initialised.

    Layers are replaced from the top (`slp.metrics.cascading_randomization`) by a fresh
    ``model.init`` with key ``seed``.

    Returns:
      ``(results, steps)``: ``results[method][layer]`` holds summaries ``spearman`` and
      ``spearman_abs`` of the per-image similarity with ``clean_maps``; ``steps`` the
      layer names in the order they were re-initialised.
    """
    fresh = model.init(jax.random.key(seed), jnp.zeros((1, *images.shape[1:]), jnp.float32))
    cascade = metrics.cascading_randomization(params, fresh)
    steps = [name for name, _ in cascade]
    results = {}
    for method in methods:
        t0 = time.perf_counter()
        trained = pixel_maps(clean_maps[method][: len(images)])
        per = {}
        for name, p in cascade:
            px = pixel_maps(runner(method, p, images, labels))
            sims = similarities(trained, px)
            per[name] = {k: summary(sims[k]) for k in ("spearman", "spearman_abs")}
        results[method] = per
        log(f"randomisation {method}: {time.perf_counter() - t0:.0f} s")
    return results, steps


def method_colours(methods: Sequence[str]) -> dict[str, Any]:
    """A distinct colour per method; Insens red."""
    tab = colormaps["tab20"]
    # Dark shades first, then the light ones, so that neighbours differ in hue; the red
    # pair (6, 7) is left out: red is Insens.
    shades = [tab(i) for i in (0, 2, 4, 8, 10, 12, 14, 16, 18, 1, 3, 5, 9, 11, 13, 15, 17, 19)]
    others = [m for m in methods if m != "insens"]
    colours = {m: shades[i % len(shades)] for i, m in enumerate(others)}
    colours["insens"] = "red"
    return colours


def curve_interval(curves: np.ndarray) -> list[list[float]]:
    """``[low, high]``, each ``(S,)``: the 95% t-interval of the mean curve at each step
    over the images (rows of ``curves (N, S)``), the images as the only random effect."""
    bounds = [ci95(summary(column)) for column in np.asarray(curves, np.float64).T]
    return [[float(b[0]) for b in bounds], [float(b[1]) for b in bounds]]


def curves_figure(mean_curves, methods, *, kind: str, title: str) -> Figure:
    """Mean deletion and insertion curves of each method and of the random order, with
    their 95% intervals over the images as bands where the results hold them
    (``<kind>/ci95``; results written before they did are drawn without)."""
    fig = Figure(figsize=(14, 8))
    axes = fig.subplots(2, 2, sharex=True)
    colours = method_colours(methods)
    frac = mean_curves["fraction"]
    for r, mode in enumerate(MODES):
        for c, order in enumerate(ORDERS):
            ax = axes[r, c]
            for m in methods:
                curve = mean_curves[m][order][mode]
                ax.plot(
                    frac, curve[kind], color=colours[m], lw=2.5 if m == "insens" else 1.0,
                    label=m,
                )  # fmt: skip
                if f"{kind}/ci95" in curve:
                    low, high = curve[f"{kind}/ci95"]
                    ax.fill_between(frac, low, high, color=colours[m], alpha=0.15, lw=0)
            rnd = mean_curves[RANDOM][mode]
            ax.plot(frac, rnd[kind], "k--", lw=1.5, label="random order")
            if f"{kind}/ci95" in rnd:
                ax.fill_between(frac, *rnd[f"{kind}/ci95"], color="k", alpha=0.1, lw=0)
            ax.set_title(
                f"{mode}, pixels ordered by {'the signed map' if order == 'signed' else '|map|'}",
                fontsize=9,
            )
            ax.set_ylabel(f"mean target {kind}")
            if r == 1:
                ax.set_xlabel("share of pixels perturbed")
    axes[0, 1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    bands = f"{kind}/ci95" in mean_curves[RANDOM]["deletion"]
    note = (
        "bands: 95% interval of the mean over the images"
        if bands
        else "no intervals: these results were written before they were recorded"
    )
    fig.suptitle(f"{title}\n{note}", fontsize=10)
    fig.tight_layout()
    return fig


def randomization_figure(rand, steps, methods) -> Figure:
    """Spearman of each method's map to the trained network's map, layer by layer.

    Each point is the mean over the images where the similarity is defined, with its 95%
    interval; a point from fewer images than the method's full count is drawn hollow and
    labelled with its n (Deep Taylor is undefined where the randomised network gives the
    target a non-positive logit).
    """
    fig = Figure(figsize=(15, 5))
    axes = fig.subplots(1, 2)
    colours = method_colours(methods)
    labels = ["trained"] + [f"+{s}" for s in steps]
    xs = np.arange(len(labels), dtype=float)
    offsets = np.linspace(-0.15, 0.15, len(methods))
    for ax, key in zip(axes, ("spearman", "spearman_abs"), strict=True):
        for off, m in zip(offsets, methods, strict=True):
            sums = [rand[m][s][key] for s in steps]
            full = max((s["n"] + s.get("n_undefined", 0)) for s in sums)
            ys = np.array([1.0] + [np.nan if s["mean"] is None else s["mean"] for s in sums])
            err = np.concatenate([np.zeros((2, 1)), error_bars(sums)], axis=1)
            lw = 2.5 if m == "insens" else 1
            ax.plot(xs + off, ys, "-", color=colours[m], lw=lw, label=m)
            ax.errorbar(xs + off, ys, yerr=err, fmt="none", ecolor=colours[m], lw=0.8, capsize=2)
            partial = [False] + [s["n"] < full for s in sums]
            for x, y, p, s in zip(xs + off, ys, partial, [None, *sums], strict=True):
                face = "white" if p else colours[m]
                ax.plot(x, y, "o", ms=4, mfc=face, mec=colours[m])
                if p and np.isfinite(y):
                    ax.annotate(
                        f"n={s['n']}", (x, y), xytext=(3, -8), textcoords="offset points",
                        fontsize=6, color=colours[m],
                    )  # fmt: skip
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_xticks(xs)
        ax.set_xticklabels(labels)
        ax.set_ylabel(f"{'Spearman' if key == 'spearman' else 'Spearman of |map|'} to trained map")
        ax.set_xlabel("layers re-initialised, cumulative from the top")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    n_all = max(s["n"] + s.get("n_undefined", 0) for m in methods for s in
                (rand[m][steps[0]]["spearman"],))  # fmt: skip
    fig.suptitle(
        "Cascading model randomisation: mean and 95% interval over the images where the "
        f"similarity is defined (of n = {n_all}); hollow, with its n: fewer images "
        "(a map that stays near 1 does not depend on the randomised weights)",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def maps_figure(panels, methods, *, row_titles, title: str, compare: str) -> Figure:
    """A grid of rows, each an input and every method's map of it (`plotting.grid_figure`:
    columns "input" and `methods`), the colour key ending with how to read the rows:
    `compare`."""
    return plotting.grid_figure(
        panels,
        col_titles=["input", *methods],
        row_titles=row_titles,
        title=title,
        key_label=f"{plotting.PER_MAP_KEY_LABEL}; {compare}",
    )

"""Robustness, faithfulness and model-randomisation measures of every method on MNIST.

Run:
    python experiments/mnist_metrics.py       # about 20-30 minutes on 2 CPU cores
                                              # (plus 4-7 minutes of training without a checkpoint)

Measures what the paper's Figure 4 shows by eye (the paper judges the maps by eye; this
script puts numbers on it), for Insens and every method in `slp.available_methods()`, on the first
--num-images MNIST test images, with the 2CONV checkpoint of experiments/train.py (same
training options; trained first when missing):

1. Robustness to the paper's noise (`slp.noise`, sigma --sigma): per image, the rank
   correlation (Spearman) and cosine similarity between the map of the clean digit and
   the map of its bordered / background / framed version, and the share of |map| on
   the clean digit and its 3-pixel outline.
2. Faithfulness: deletion and insertion curves (`slp.metrics`) on the clean digits,
   pixels ordered by the signed map (most positive first) and by |map|, replaced by
   --baseline (0: the MNIST background); areas under the target's logit and
   probability curves, against a random order.
3. Model randomisation (Adebayo et al. 2018): on the first --num-random-images images,
   the layers are re-initialised one by one from the output layer down; Spearman
   correlation of each method's map (signed and absolute) with the trained network's.

Every map explains the true class (target = label). Writes to --out (default runs/):
mnist_metrics.json, mnist_metrics.md, mnist_metrics_robustness.png,
mnist_metrics_curves.png, mnist_metrics_curves_logit.png, mnist_metrics_randomization.png.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import sys
import time
from pathlib import Path
from typing import Any

from lab import cli
from slp.config import DEFAULT_SIGMA


def build_parser() -> argparse.ArgumentParser:
    """The options (importing this costs no jax: ``--help`` answers at once)."""
    parser, g = cli.experiment_parser(__doc__)
    cli.add_measure_options(g, images=200, random_images=100, steps=56, batch_size=25)
    g.add_argument("--sigma", type=cli.non_negative_float, default=DEFAULT_SIGMA, help="noise std")
    g.add_argument(
        "--noise-seed", type=cli.non_negative, default=0, help="seed of noise, keys, random orders"
    )
    g.add_argument("--baseline", type=float, default=0.0, help="value of deleted pixels")
    cli.add_redraw_options(
        g, replot="only rewrite the markdown and PNGs from <out>/mnist_metrics.json"
    )
    return parser


if __name__ == "__main__":
    build_parser().parse_args()  # --help and malformed options answered before jax loads

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

import slp
from lab import analysis
from slp import noise, plotting, training
from slp.attributions import get_method

CONDITIONS = ("clean", "bordered", "background", "framed")
NOISY = CONDITIONS[1:]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return cli.parse_measure_args(build_parser(), argv)


class DatasetRunner(analysis.MethodRunner):
    """`analysis.MethodRunner` on `slp.attribute_dataset`: batches over every local device.

    Same maps (per-image keys ``fold_in(key(seed), image index)``, ``low``/``high`` where
    the method takes them) and one compiled program per method for every parameter set.
    """

    def __call__(self, method, params, inputs, targets):
        accepted = inspect.signature(get_method(method)).parameters
        options = {k: v for k, v in (("low", self.low), ("high", self.high)) if k in accepted}
        return slp.attribute_dataset(
            self.apply,
            np.asarray(inputs),
            method,
            params=params,
            target=np.asarray(targets, np.int32),
            key=self.key if "key" in accepted else None,
            batch_size=self.batch_size,
            progress=False,
            **options,
        )


def robustness(runner, params, images, labels, keys, *, sigma, methods, log):
    """Similarity clean vs noisy and share on digit + outline, per method and condition.

    Returns:
      ``(results, clean_maps)``: ``results[method][condition]`` holds summaries
      ``on_digit`` and (noisy conditions) ``spearman``, ``cosine``; ``clean_maps[method]``
      is ``(N, 28, 28, 1)``.
    """
    region = np.asarray(jax.vmap(lambda x: noise.clean_mask("bordered", x))(jnp.asarray(images)))
    inputs = {
        c: images
        if c == "clean"
        else np.asarray(noise.make_noisy_batch(c, keys, images, sigma=sigma))
        for c in CONDITIONS
    }
    results, clean_maps = {}, {}
    for method in methods:
        t0 = time.perf_counter()
        per = {}
        clean = None
        for cond in CONDITIONS:
            maps = runner(method, params, inputs[cond], labels)
            px = analysis.pixel_maps(maps)
            entry = {"on_digit": analysis.summary(analysis.mass_on(px, region))}
            if cond == "clean":
                clean, clean_maps[method] = px, maps
            else:
                sims = analysis.similarities(clean, px)
                entry["spearman"] = analysis.summary(sims["spearman"])
                entry["cosine"] = analysis.summary(sims["cosine"])
            per[cond] = entry
        results[method] = per
        log(f"robustness {method}: {time.perf_counter() - t0:.0f} s")
    return results, clean_maps, float(region.mean())


def _val(v, default=np.nan):
    return default if v is None else v


def robustness_figure(rob, region_fraction, methods) -> Figure:
    """Bars of the robustness and locality measures: mean and 95% interval over images."""
    fig = Figure(figsize=(14, 7.5))
    axes = fig.subplots(2, 1)
    x = np.arange(len(methods))
    n = max(rob[m]["clean"]["on_digit"]["n"] for m in methods)
    width = 0.8 / len(NOISY)
    for k, cond in enumerate(NOISY):
        sums = [rob[m][cond]["spearman"] for m in methods]
        means = [_val(s["mean"]) for s in sums]
        axes[0].bar(
            x + (k - 1) * width, means, width, yerr=analysis.error_bars(sums), label=cond,
            capsize=2,
        )  # fmt: skip
    axes[0].set_ylabel("Spearman(clean map, noisy map)")
    axes[0].set_title(
        "Robustness: rank correlation of the map on the clean and noisy digit "
        f"(mean and 95% interval over n = {n} images, one network)",
        fontsize=10,
    )
    width = 0.8 / len(CONDITIONS)
    for k, cond in enumerate(CONDITIONS):
        sums = [rob[m][cond]["on_digit"] for m in methods]
        means = [_val(s["mean"]) for s in sums]
        axes[1].bar(
            x + (k - 1.5) * width, means, width, yerr=analysis.error_bars(sums), label=cond,
            capsize=2,
        )  # fmt: skip
    axes[1].axhline(region_fraction, color="k", ls="--", lw=1, label="area share (uniform map)")
    axes[1].set_ylabel("share of |map| on digit + outline")
    axes[1].set_ylim(0, 1.05)
    axes[1].set_title(
        "Locality: share of the map's absolute mass on the digit and its 3-pixel outline "
        f"(mean and 95% interval, n = {n})",
        fontsize=10,
    )
    for ax in axes:
        ax.set_xticks(x)
        ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.axhline(0, color="gray", lw=0.5)
    fig.tight_layout()
    return fig


def verdicts(result) -> list[str]:
    """Where Insens stands among the methods on each headline measure (one line each)."""
    methods = result["config"]["methods"]
    if "insens" not in methods:
        return ["Insens was not among the measured methods."]
    rob, faith, rand = result["robustness"], result["faithfulness"], result["randomization"]
    lines = []

    def line(what, scores, higher):
        lines.append(analysis.verdict_line(what, scores, higher_is_better=higher))

    for cond in NOISY:
        line(
            f"Spearman clean vs {cond} (higher = more robust)",
            {m: rob[m][cond]["spearman"]["mean"] for m in methods},
            True,
        )
    for cond in CONDITIONS:
        line(
            f"share on digit + outline, {cond} (higher = more local)",
            {m: rob[m][cond]["on_digit"]["mean"] for m in methods},
            True,
        )
    lines += analysis.faithfulness_verdicts(faith, methods)
    lines += analysis.randomization_verdicts(rand, result["randomization_steps"], methods)
    return lines


def markdown(result) -> str:
    cfg = result["config"]
    methods = cfg["methods"]
    rob, faith, rand = result["robustness"], result["faithfulness"], result["randomization"]
    steps = result["randomization_steps"]
    f = analysis.fmt
    out = [
        "# Measuring the attribution maps on MNIST (beyond the paper's visual comparison)",
        "",
        f"Produced by `{cfg['command']}` in {cfg['seconds']['total'] / 60:.1f} minutes on "
        f"2 CPU cores. 2CONV checkpoint `{cfg['checkpoint_name']}` (test accuracy "
        f"{cfg['checkpoint_test_accuracy']:.4f}). The first {cfg['num_images']} MNIST test "
        f"images (randomisation: the first {cfg['num_random_images']}); every map explains "
        "the true class. Values are mean ± standard deviation over images (the standard "
        "error of the mean is std/sqrt(n); all values and n are in `mnist_metrics.json`).",
        "",
        "## Where Insens stands",
        "",
        "Rank among the methods with a defined value (1 = best; equal values share a rank).",
        "",
        *verdicts(result),
        "",
        "## Robustness to the paper's noise",
        "",
        f"Noise sigma = {cfg['sigma']:g}, the default of `slp.noise` (calibrated by the "
        "noise experiment to the paper's accuracies; noisy pixels are clipped to [0, 1]). "
        "Variants (`slp.noise`): bordered = noise off the digit and its "
        "3-pixel outline; background = noise off the digit; framed = noise off the digit "
        "and a border frame as large as the outline. `Spearman`/`cosine`: similarity of "
        "the map on the noisy image with the same method's map on the clean image. "
        "`on digit`: share of |map| on the clean digit and its 3-pixel outline; that "
        f"region covers {result['region_fraction']:.1%} of the image on average (the score "
        "of a uniform map). On clean digits, maps that are a multiple of the input "
        "(gradient×input, integrated gradients from a black baseline, the LRP rules) are zero "
        "wherever the image is black, so they score 1.0 on that measure by construction.",
        "",
        *analysis.table(
            ["method", *(f"Spearman {c}" for c in NOISY), *(f"cosine {c}" for c in NOISY)],
            [
                [m, *(f(rob[m][c]["spearman"]) for c in NOISY)]
                + [f(rob[m][c]["cosine"]) for c in NOISY]
                for m in methods
            ],
        ),
        "",
        *analysis.table(
            ["method", *(f"on digit {c}" for c in CONDITIONS)],
            [[m, *(f(rob[m][c]["on_digit"]) for c in CONDITIONS)] for m in methods],
        ),
        "",
        "![robustness](mnist_metrics_robustness.png)",
        "",
        "## Faithfulness: deletion and insertion",
        "",
        f"Clean digits; pixels perturbed in {cfg['steps']} equal steps, most important "
        f"first; a deleted pixel becomes {cfg['baseline']:g} (the MNIST background), "
        f"insertion starts from an image of {cfg['baseline']:g}s. Order `signed`: by the "
        "map's value (most positive first); `abs`: by |map|. Areas under the target's "
        "probability and logit curves over the share of pixels perturbed (deletion: lower "
        "is better; insertion: higher is better). `Δ random`: paired difference with the "
        "same image's random order (mean ± std).",
        "",
        *analysis.faithfulness_table(faith, methods, logit=True),
        "",
        "![curves (probability)](mnist_metrics_curves.png)",
        "",
        "![curves (logit)](mnist_metrics_curves_logit.png)",
        "",
        "## Model randomisation",
        "",
        "Layers re-initialised (fresh draws of flax's initialisers) cumulatively from the "
        f"output layer down: {' → '.join(steps)}. Spearman correlation of each method's map "
        "(signed / absolute values) with its map on the trained network; a method whose map "
        "stays near 1 does not depend on the randomised weights. Insens excludes the output "
        "neurons (eq. 8) and does not depend on the target, so re-initialising only the "
        "output layer cannot change it. The absolute values of input-proportional maps "
        "(gradient×input, integrated gradients, LRP) follow the digit's ink whatever the "
        "weights, so their `abs` column stays near 1; deep_taylor and deep_taylor_bounded "
        "start from max(target logit, 0) and are all-zero (undefined similarity) whenever "
        "the randomised network gives the true class a negative logit.",
        "",
        *analysis.randomization_table(rand, steps, methods, note=" (signed / abs)"),
        "",
        "![randomisation](mnist_metrics_randomization.png)",
        "",
    ]
    return analysis.report_text(out, result["skipped_methods"])


def write_report(result: dict[str, Any], out: Path) -> None:
    """Writes mnist_metrics.md and the four PNGs from the result dict."""
    methods = result["config"]["methods"]
    rob, rand = result["robustness"], result["randomization"]
    steps, mean_curves = result["randomization_steps"], result["mean_curves"]
    n, baseline = result["config"]["num_images"], result["config"]["baseline"]
    analysis.write_text(out / "mnist_metrics.md", markdown(result))
    plotting.save_figure(
        robustness_figure(rob, result["region_fraction"], methods),
        out / "mnist_metrics_robustness.png",
    )
    for kind, name in (
        ("probability", "mnist_metrics_curves.png"),
        ("logit", "mnist_metrics_curves_logit.png"),
    ):
        title = (
            f"Deletion / insertion on {n} MNIST test digits: mean target {kind} "
            f"(deleted pixels = {baseline:g})"
        )
        plotting.save_figure(
            analysis.curves_figure(mean_curves, methods, kind=kind, title=title), out / name
        )
    plotting.save_figure(
        analysis.randomization_figure(rand, steps, methods), out / "mnist_metrics_randomization.png"
    )


def measure_faithfulness(args, apply, params, images, labels, clean_maps, methods, log):
    """Deletion/insertion curves (`analysis.faithfulness`) on the clean digits."""
    curves = analysis.CurveRunner(
        apply, baseline=args.baseline, steps=args.steps, batch_size=args.batch_size_maps
    )
    return analysis.faithfulness(
        curves,
        params,
        images,
        labels,
        clean_maps,
        seed=args.noise_seed + 1,
        methods=methods,
        log=log,
    )


def measure_randomization(args, runner, model, params, images, labels, clean_maps, methods, log):
    """Model randomisation (`analysis.randomization`) on the given (first) images."""
    return analysis.randomization(
        runner,
        model,
        params,
        images,
        labels,
        clean_maps,
        seed=args.noise_seed + 2,
        methods=methods,
        log=log,
    )


def run_config(args, argv, ck, methods, num_images, num_random, seconds) -> dict[str, Any]:
    """The ``config`` part of mnist_metrics.json: options, checkpoint, images and timings."""
    return {
        "methods": methods,
        "num_images": num_images,
        "num_random_images": num_random,
        "target": "true label",
        "sigma": args.sigma,
        "noise_seed": args.noise_seed,
        "steps": args.steps,
        "baseline": args.baseline,
        "digit_threshold": noise.DIGIT_THRESHOLD,
        "outline_radius": noise.OUTLINE_RADIUS,
        "train": ck.metadata["config"],
        "checkpoint_name": ck.path.name,
        "checkpoint_test_accuracy": ck.metadata.get("test_accuracy"),
        "seconds": seconds,
        "command": "python experiments/mnist_metrics.py " + " ".join(argv or sys.argv[1:]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the measurements; returns the dict written to mnist_metrics.json."""
    args = parse_args(argv)
    if args.replot:
        result = json.loads((args.out / "mnist_metrics.json").read_text())
        write_report(result, args.out)
        return result
    t_start = time.perf_counter()
    log = functools.partial(print, file=sys.stderr, flush=True)
    ck = cli.checkpoint_from_options(args)
    model, params = ck.model, ck.params
    images, labels = training.load_mnist_float(
        "test", data_dir=args.data_dir, download=not args.no_download, limit=args.num_images
    )
    n_rand = min(args.num_random_images, len(images))

    def apply(p, x):
        return model.apply(p, x[None])[0]

    runner = DatasetRunner(apply, batch_size=args.batch_size_maps, seed=args.noise_seed)
    methods, skipped = analysis.choose_methods(runner, params, images[0], args.methods, log)
    keys = jax.random.split(jax.random.key(args.noise_seed), len(images))
    seconds: dict[str, float] = {}
    with analysis.timer(seconds, "robustness"):
        rob, clean_maps, region_fraction = robustness(
            runner, params, images, labels, keys, sigma=args.sigma, methods=methods, log=log
        )
    with analysis.timer(seconds, "faithfulness"):
        faith, mean_curves = measure_faithfulness(
            args, apply, params, images, labels, clean_maps, methods, log
        )
    with analysis.timer(seconds, "randomization"):
        rand, steps = measure_randomization(
            args, runner, model, params, images[:n_rand], labels[:n_rand], clean_maps, methods, log
        )
    seconds["total"] = time.perf_counter() - t_start
    result = {
        "robustness": rob,
        "region_fraction": region_fraction,
        "faithfulness": faith,
        "mean_curves": mean_curves,
        "randomization": rand,
        "randomization_steps": steps,
        "skipped_methods": skipped,
        "config": run_config(args, argv, ck, methods, len(images), n_rand, seconds),
    }
    analysis.write_json(args.out / "mnist_metrics.json", result)
    write_report(result, args.out)
    log(f"wrote {args.out}/mnist_metrics.json, .md and 4 PNGs in {seconds['total']:.0f} s")
    return result


if __name__ == "__main__":
    main()

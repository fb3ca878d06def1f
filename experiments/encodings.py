"""The paper's encodings experiment (Figure 5): four 2CONV networks, four pixel encodings.

Run:
    python experiments/encodings.py --dataset fashion_mnist --epochs 2
        # about 15-25 minutes on 2 CPU cores (four trainings of 2 epochs, then the maps)
    python experiments/encodings.py --dataset smallnorb
        # the paper's data set; needs the smallNORB files (not reachable on every machine)

The paper trains 2CONV on smallNORB with the pixels (black to white) encoded four ways:
0 -> 1 ("plain"), 1 -> 0 ("neg"), -1 -> +1 ("mean") and +1 -> -1 ("neg mean"), and
claims that Insens shows the role of the background and that the Insens maps of the two
zero-centred encodings are reversed, while other methods show only outlines.

For each encoding this trains a TwoConv (same seed, same shuffles: only the encoding
differs; checkpoints reused unless --retrain), reports its test accuracy, and computes
the map of every registered method for the true class on the first --num-images test
images. Measures:

- reversal: per-image Pearson and Spearman correlation between the maps of the same
  image under two encodings, for the mirror pairs (mean, neg mean) and (plain, neg) and
  the same-polarity controls (plain, mean) and (neg, neg mean). Reversed maps correlate
  near -1. As a reference, "mean vs its exact mirror" compares the mean network with the
  same network made exactly equivalent on negated inputs (its first-layer kernel
  negated): the correlation each method would show if the two zero-centred networks were
  mirror images of each other (+1 or -1 by the method's algebra, not by training).
- background: the share of |map| on the object (pixels > 0.1 on the 0 -> 1 scale), on
  its 3-pixel outline, and on the rest of the background.

smallNORB input: the first camera's 96x96 image averaged over 3x3 blocks to 32x32 (a
choice of this project; the paper's appendix with its preprocessing is unavailable).
Fashion-MNIST is the stand-in used where smallNORB cannot be fetched; its results are
labelled as such. Writes to --out (default runs/): encodings_<dataset>.json, .md,
encodings_<dataset>.png (maps) and encodings_<dataset>_correlation.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any

from lab import cli

DATASETS = ("fashion_mnist", "smallnorb")


def build_parser() -> argparse.ArgumentParser:
    """The options (importing this costs no jax: ``--help`` answers at once)."""
    parser, g = cli.experiment_parser(__doc__)
    g.add_argument("--dataset", choices=DATASETS, default="fashion_mnist", help="data set")
    g.add_argument("--num-images", type=cli.positive, default=100, help="test images measured")
    g.add_argument(
        "--num-test", type=cli.positive, default=None, help="test images for accuracy (None: all)"
    )
    g.add_argument(
        "--examples", type=cli.non_negative, nargs="+", default=[0, 1, 2], help="figure images"
    )
    g.add_argument(
        "--batch-size-maps", type=cli.positive, default=25, help="images per compiled call"
    )
    g.add_argument("--methods", nargs="+", default=None, help="default: all registered")
    cli.add_redraw_options(
        g,
        replot="only rewrite the markdown and the correlation PNG from the saved JSON",
        figures_only="only redraw encodings_<dataset>.png (trains the four networks if missing)",
    )
    return parser


if __name__ == "__main__":
    build_parser().parse_args()  # --help and malformed options answered before jax loads

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from lab import analysis, fetch
from slp import data as slp_data
from slp import noise, plotting, training
from slp.attributions import get_method

ENCODINGS = {"plain": (0.0, 1.0), "neg": (1.0, 0.0), "mean": (-1.0, 1.0), "neg_mean": (1.0, -1.0)}
"""Encoding name -> (value of black, value of white)."""
LABELS = {
    "plain": "0→1",
    "neg": "1→0 (neg)",
    "mean": "−1→+1 (mean)",
    "neg_mean": "+1→−1 (neg mean)",
}
MIRROR_PAIRS = (("mean", "neg_mean"), ("plain", "neg"))
CONTROL_PAIRS = (("plain", "mean"), ("neg", "neg_mean"))
MIRROR_REFERENCE = "mean vs its exact mirror"
STAND_IN = {"fashion_mnist": "smallnorb"}
OBJECT_THRESHOLD = noise.DIGIT_THRESHOLD


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    for method in args.methods or ():
        get_method(method)
    if args.num_images < 1:
        parser.error("--num-images must be >= 1")
    if max(args.examples) >= args.num_images:
        parser.error(f"--examples {args.examples} must be below --num-images {args.num_images}")
    return args


def load_unit_images(dataset: str, split: str, *, data_dir, download) -> tuple[np.ndarray, ...]:
    """Images on the 0 -> 1 scale, float32 ``(N, H, W, 1)``, and int32 labels ``(N,)``.

    smallNORB: the first camera's image, 3x3 block means (96x96 -> 32x32).
    """
    if dataset == "fashion_mnist":
        if download:  # the mirrors, then the package managers' copies
            fetch.fetch("fashion_mnist", data_dir)
        images, labels = slp_data.load_fashion_mnist(split, data_dir=data_dir, download=download)
        return training.to_float_images(images), np.asarray(labels, np.int32)
    if dataset == "smallnorb":
        norb = slp_data.load_smallnorb(split, data_dir=data_dir, download=download)
        left = norb.images[:, 0].astype(np.float32) / np.float32(255.0)
        n, h, w = left.shape
        small = left.reshape(n, h // 3, 3, w // 3, 3).mean(axis=(2, 4))
        return small[..., None].astype(np.float32), np.asarray(norb.labels, np.int32)
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def encode(x_unit: np.ndarray, encoding: str) -> np.ndarray:
    """Maps 0 -> 1 intensities to ``encoding``: ``black + (white - black) x``."""
    black, white = ENCODINGS[encoding]
    return (np.float32(black) + np.float32(white - black) * x_unit).astype(np.float32)


def mirror_first_layer(params: dict) -> dict:
    """The same network on negated inputs: the first conv kernel negated.

    With zero padding, ``conv(-x, -K) = conv(x, K)``, so ``f'(-x) = f(x)`` exactly.
    """
    layers = dict(params["params"])
    first = next(iter(layers))
    layers[first] = {**layers[first], "kernel": -layers[first]["kernel"]}
    return {**params, "params": layers}


def locality(maps: np.ndarray, x_unit: np.ndarray) -> dict[str, dict]:
    """Share of |map| on the object, its 3-pixel outline and the rest (summaries)."""
    xs = jnp.asarray(x_unit)
    obj = np.asarray(jax.vmap(lambda x: noise.digit_mask(x, threshold=OBJECT_THRESHOLD))(xs))
    ring = np.asarray(jax.vmap(lambda x: noise.outline_mask(x, threshold=OBJECT_THRESHOLD))(xs))
    rest = ~(obj | ring)
    return {
        name: analysis.summary(analysis.mass_on(maps, mask))
        for name, mask in (("object", obj), ("outline", ring), ("background", rest))
    }


def pair_stats(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Per-image Pearson and Spearman of pixel maps, summarised, plus the share negative."""
    sims = analysis.similarities(a, b)
    pearson = sims["pearson"]
    finite = pearson[np.isfinite(pearson)]
    return {
        "pearson": analysis.summary(pearson),
        "spearman": analysis.summary(sims["spearman"]),
        "share_negative": float(np.mean(finite < 0)) if finite.size else None,
    }


def maps_figure(x_unit, encoded, maps, methods, examples, labels, accuracies, title) -> Figure:
    panels, row_titles = [], []
    for e in examples:
        for enc in ENCODINGS:
            lo, hi = sorted(ENCODINGS[enc])
            shown = (encoded[enc][e] - lo) / (hi - lo)
            panels.append([shown] + [maps[enc][m][e] for m in methods])
            row_titles.append(f"{LABELS[enc]}\nclass {labels[e]}, acc {accuracies[enc]:.3f}")
    return analysis.maps_figure(
        panels,
        methods,
        row_titles=row_titles,
        title=title,
        compare="a map reversed between the 'mean' and 'neg mean' rows swaps red and blue",
    )


def correlation_figure(stats, methods, title) -> Figure:
    fig = Figure(figsize=(14.5, 4.8))
    ax = fig.add_subplot()
    pairs = [f"{a} vs {b}" for a, b in MIRROR_PAIRS + CONTROL_PAIRS] + [MIRROR_REFERENCE]
    x = np.arange(len(methods))
    width = 0.8 / len(pairs)
    for k, pair in enumerate(pairs):
        means = [stats[m][pair]["pearson"]["mean"] for m in methods]
        errs = [stats[m][pair]["pearson"]["std"] for m in methods]
        means = [np.nan if v is None else v for v in means]
        errs = [0.0 if v is None else v for v in errs]
        hatch = "//" if pair == MIRROR_REFERENCE else None
        ax.bar(
            x + (k - (len(pairs) - 1) / 2) * width,
            means,
            width,
            yerr=errs,
            capsize=1.5,
            label=pair,
            hatch=hatch,
            edgecolor="k" if hatch else None,
            linewidth=0.3,
        )
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks(x)
    ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("per-image Pearson correlation of maps")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    fig.tight_layout()
    return fig


def reversal_cell(s: dict[str, Any]) -> str:
    """``mean ± std [share negative]`` of one pair's per-image Pearson correlations."""
    neg = s["share_negative"]
    return f"{analysis.fmt(s['pearson'], digits=2)} [{'n/a' if neg is None else f'{neg:.0%}'}]"


def locality_cell(loc: dict[str, Any]) -> str:
    """``object / outline / background`` mean shares of |map| (n/a where undefined)."""
    return " / ".join(
        f"{loc[k]['mean']:.2f}" if loc[k]["mean"] is not None else "n/a"
        for k in ("object", "outline", "background")
    )


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    ds = cfg["dataset"]
    methods = cfg["methods"]
    title = f"# Encodings experiment (paper Figure 5) on {ds}"
    lines = [title, ""]
    if ds in STAND_IN:
        lines += [
            f"**Stand-in data:** {ds} replaces the paper's {STAND_IN[ds]}, which cannot be "
            "fetched where these results were produced. Run "
            "`python experiments/encodings.py --dataset smallnorb` where it can.",
            "",
        ]
    lines += [
        f"Produced by `{cfg['command']}` in {cfg['seconds']['total'] / 60:.1f} minutes on 2 "
        f"CPU cores. Four 2CONV networks (seed {cfg['train']['seed']}, "
        f"{cfg['train']['epochs']} epochs on "
        + ("all" if cfg["train"]["num_train"] is None else f"the first {cfg['train']['num_train']}")
        + " training images each, same initialisation and shuffles), one per pixel encoding. "
        f"Maps of the first {cfg['num_images']} test images, each explaining the true class. "
        "Values: mean ± standard deviation over images. Integrated gradients uses its "
        "default baseline 0 in every encoding (black for 0 → 1, white for 1 → 0, mid-grey for "
        "the zero-centred ones); deep_taylor_bounded gets each encoding's input range.",
        "",
        *analysis.table(
            ["encoding (black → white)", "test accuracy"],
            [(LABELS[enc], f"{result['accuracy'][enc]:.4f}") for enc in ENCODINGS],
        ),
    ]
    pairs = [f"{a} vs {b}" for a, b in MIRROR_PAIRS + CONTROL_PAIRS] + [MIRROR_REFERENCE]
    lines += [
        "",
        "## Where Insens stands",
        "",
        "Rank among the methods with a defined value (1 = best; equal values share a rank).",
        "",
    ]
    for a, b in MIRROR_PAIRS:
        lines.append(
            analysis.verdict_line(
                f"correlation of the {a} and {b} maps (lower = more reversed)",
                {m: result["reversal"][m][f"{a} vs {b}"]["pearson"]["mean"] for m in methods},
                higher_is_better=False,
            )
        )
    for enc in ENCODINGS:
        lines.append(
            analysis.verdict_line(
                f"share of |map| on the background beyond the outline, {LABELS[enc]} "
                "(higher = more of the background shown)",
                {m: result["locality"][enc][m]["background"]["mean"] for m in methods},
                higher_is_better=True,
            )
        )
    lines += [
        "",
        "## Are the maps of mirrored encodings reversed?",
        "",
        "Per-image Pearson correlation between the maps of the same image under two "
        "encodings (reversed maps: near -1; in brackets the share of images with a "
        "negative correlation). The mirror pairs come first, then the same-polarity "
        f"controls. `{MIRROR_REFERENCE}`: the mean network against itself with the first "
        "kernel negated, fed the negated image — an exactly equivalent network, so this "
        "column is the value each method's algebra gives for perfectly mirrored networks "
        "(gradient-type maps flip sign, gradient×input and LRP-type maps do not).",
        "",
        *analysis.table(
            ["method", *pairs],
            [[m, *(reversal_cell(result["reversal"][m][pair]) for pair in pairs)] for m in methods],
        ),
        "",
        f"![correlations](encodings_{ds}_correlation.png)",
        "",
        "## Where the maps lie: object, outline, background",
        "",
        f"Share of |map| on the object (pixels > {OBJECT_THRESHOLD} on the 0 → 1 scale), on "
        "its 3-pixel outline and on the remaining background; the areas are "
        + ", ".join(f"{k} {v:.1%}" for k, v in result["area_fraction"].items())
        + " of the image on average.",
        "",
        *analysis.table(
            ["method", *(f"{LABELS[e]} object / outline / background" for e in ENCODINGS)],
            [
                [m, *(locality_cell(result["locality"][enc][m]) for enc in ENCODINGS)]
                for m in methods
            ],
        ),
        "",
        f"![maps](encodings_{ds}.png)",
        "",
        "Rows: each example image in the four encodings; columns: the input and every "
        "method's map of the true class. Red positive, blue negative, white 0, each map on "
        "its own symmetric scale (colour key below the figure). Compare a method's 'mean' "
        "row with its 'neg mean' row: a reversed map swaps red and blue.",
        "",
    ]
    return analysis.report_text(lines, result["skipped_methods"])


def write_report(result: dict[str, Any], out: Path) -> None:
    """Writes encodings_<dataset>.md and the correlation PNG from the result dict."""
    ds = result["config"]["dataset"]
    label = f" (stand-in for {STAND_IN[ds]})" if ds in STAND_IN else ""
    analysis.write_text(out / f"encodings_{ds}.md", markdown(result))
    plotting.save_figure(
        correlation_figure(
            result["reversal"],
            result["config"]["methods"],
            f"{ds}{label}: per-image correlation of maps between encodings (mean ± std)",
        ),
        out / f"encodings_{ds}_correlation.png",
    )


def load_test(args: argparse.Namespace, load) -> tuple[np.ndarray, np.ndarray]:
    """The test images on the 0 -> 1 scale and their labels (the first --num-test)."""
    test_unit, test_labels = load("test")
    if args.num_test is not None:
        test_unit, test_labels = test_unit[: args.num_test], test_labels[: args.num_test]
    if len(test_unit) < args.num_images:
        raise ValueError(f"--num-images {args.num_images} exceeds the {len(test_unit)} test images")
    return test_unit, test_labels


def base_config(args: argparse.Namespace, test_unit, test_labels) -> training.TrainConfig:
    """The training configuration the four networks share (the data set name aside)."""
    num_classes = int(max(test_labels.max() + 1, 10 if args.dataset == "fashion_mnist" else 5))
    return dataclasses.replace(
        cli.training_config(args),
        input_shape=tuple(test_unit.shape[1:]),
        num_classes=num_classes,
    )


def train_networks(args, base, load, test_unit, test_labels, log) -> tuple[dict, dict, dict]:
    """One TwoConv per encoding (checkpoints reused unless --retrain), and its test accuracy.

    The training images are loaded once, and only when a network must be trained.

    Returns:
      ``(networks, accuracy, seconds)``: checkpoints and accuracies by encoding, and
      ``{"train": {encoding: seconds}}``.
    """
    train_cache: dict[str, Any] = {}

    def train_unit():
        if "x" not in train_cache:
            train_cache["x"], train_cache["y"] = load("train")
        return train_cache["x"], train_cache["y"]

    nets, accuracy, seconds = {}, {}, {"train": {}}
    for enc in ENCODINGS:
        config = dataclasses.replace(base, dataset=f"{args.dataset}_{enc}")

        def load_data(enc=enc):
            tx, ty = train_unit()
            return encode(tx, enc), ty, encode(test_unit, enc), test_labels

        t0 = time.perf_counter()
        ck = training.load_or_train(
            config,
            checkpoint_dir=args.checkpoint_dir,
            data_dir=args.data_dir,
            load_data=load_data,
            retrain=args.retrain,
            progress=not args.no_progress,
        )
        seconds["train"][enc] = time.perf_counter() - t0
        nets[enc] = ck
        accuracy[enc] = training.accuracy(ck.model, ck.params, encode(test_unit, enc), test_labels)
        log(f"{enc}: test accuracy {accuracy[enc]:.4f} ({'reused' if ck.reused else 'trained'})")
    return nets, accuracy, seconds


def method_runners(nets: dict, batch_size: int) -> dict[str, analysis.MethodRunner]:
    """One `analysis.MethodRunner` per encoding (its input range), for the shared model."""
    model = nets["plain"].model

    def apply(p, x):
        return model.apply(p, x[None])[0]

    return {
        enc: analysis.MethodRunner(apply, input_range=sorted(ENCODINGS[enc]), batch_size=batch_size)
        for enc in ENCODINGS
    }


def compute_maps(runners, nets, encoded, labels, methods, log) -> tuple[dict, dict]:
    """Every method's maps in every encoding, and on the mean network's exact mirror.

    Returns:
      ``(maps, mirror_maps)``: ``maps[encoding][method]`` and ``mirror_maps[method]`` (the
      mirrored mean network on the 'neg mean' images).
    """
    maps: dict[str, dict[str, np.ndarray]] = {enc: {} for enc in ENCODINGS}
    mirror_maps = {}
    mirrored = mirror_first_layer(nets["mean"].params)
    for m in methods:
        t1 = time.perf_counter()
        for enc in ENCODINGS:
            maps[enc][m] = runners[enc](m, nets[enc].params, encoded[enc], labels)
        mirror_maps[m] = runners["neg_mean"](m, mirrored, encoded["neg_mean"], labels)
        log(f"maps {m}: {time.perf_counter() - t1:.0f} s")
    return maps, mirror_maps


def measure_maps(maps, mirror_maps, x_unit, methods) -> tuple[dict, dict]:
    """The reversal statistics ``[method][pair]`` and the locality ``[encoding][method]``."""
    reversal, loc = {}, {enc: {} for enc in ENCODINGS}
    for m in methods:
        px = {enc: analysis.pixel_maps(maps[enc][m]) for enc in ENCODINGS}
        reversal[m] = {
            f"{a} vs {b}": pair_stats(px[a], px[b]) for a, b in MIRROR_PAIRS + CONTROL_PAIRS
        }
        reversal[m][MIRROR_REFERENCE] = pair_stats(px["mean"], analysis.pixel_maps(mirror_maps[m]))
        for enc in ENCODINGS:
            loc[enc][m] = locality(maps[enc][m], x_unit)
    return reversal, loc


def area_fraction(x_unit: np.ndarray) -> dict[str, float]:
    """Mean share of the image on the object, its outline and the rest of the background."""
    obj = np.asarray(jax.vmap(lambda x: noise.digit_mask(x))(jnp.asarray(x_unit)))
    ring = np.asarray(jax.vmap(lambda x: noise.outline_mask(x))(jnp.asarray(x_unit)))
    return {
        "object": float(obj.mean()),
        "outline": float(ring.mean()),
        "background": float((~(obj | ring)).mean()),
    }


def run_config(args, argv, base, nets, methods, num_images, num_test, seconds) -> dict:
    """The ``config`` record of the results."""
    return {
        "dataset": args.dataset,
        "stand_in_for": STAND_IN.get(args.dataset),
        "encodings": {k: list(v) for k, v in ENCODINGS.items()},
        "methods": methods,
        "num_images": int(num_images),
        "num_test": int(num_test),
        "target": "true label",
        "train": base.to_dict(),
        "checkpoints": {enc: ck.path.name for enc, ck in nets.items()},
        "seconds": seconds,
        "command": "python experiments/encodings.py " + " ".join(argv or sys.argv[1:]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the experiment; returns the dict written to encodings_<dataset>.json."""
    args = parse_args(argv)
    out, ds = args.out, args.dataset
    if args.replot:
        result = json.loads((out / f"encodings_{ds}.json").read_text())
        write_report(result, out)
        return result
    t_start = time.perf_counter()
    log = functools.partial(print, file=sys.stderr, flush=True)
    load = functools.partial(
        load_unit_images, ds, data_dir=args.data_dir, download=not args.no_download
    )
    test_unit, test_labels = load_test(args, load)
    base = base_config(args, test_unit, test_labels)
    nets, accuracy, seconds = train_networks(args, base, load, test_unit, test_labels, log)
    x_unit, y = test_unit[: args.num_images], test_labels[: args.num_images]
    encoded = {enc: encode(x_unit, enc) for enc in ENCODINGS}

    runners = method_runners(nets, args.batch_size_maps)
    methods, skipped = analysis.choose_methods(
        runners["plain"], nets["plain"].params, encoded["plain"][0], args.methods, log
    )
    if args.figures_only:
        maps = {
            enc: {m: runners[enc](m, nets[enc].params, encoded[enc], y) for m in methods}
            for enc in ENCODINGS
        }
        draw_maps(args, x_unit, encoded, maps, methods, y, accuracy)
        log(f"wrote {out}/encodings_{ds}.png (--figures-only)")
        return {}
    with analysis.timer(seconds, "maps"):
        maps, mirror_maps = compute_maps(runners, nets, encoded, y, methods, log)
    reversal, loc = measure_maps(maps, mirror_maps, x_unit, methods)
    area = area_fraction(x_unit)
    seconds["total"] = time.perf_counter() - t_start
    config = run_config(args, argv, base, nets, methods, len(x_unit), len(test_unit), seconds)
    result = {
        "accuracy": accuracy,
        "reversal": reversal,
        "locality": loc,
        "area_fraction": area,
        "skipped_methods": skipped,
        "config": config,
    }
    analysis.write_json(out / f"encodings_{ds}.json", result)
    write_report(result, out)
    draw_maps(args, x_unit, encoded, maps, methods, y, accuracy)
    log(f"wrote {out}/encodings_{ds}.json, .md, .png in {seconds['total']:.0f} s")
    return result


def draw_maps(args, x_unit, encoded, maps, methods, labels, accuracy) -> None:
    """Writes encodings_<dataset>.png (Figure 5: the example images in every encoding)."""
    ds = args.dataset
    label = f" (stand-in for {STAND_IN[ds]})" if ds in STAND_IN else ""
    fig = maps_figure(
        x_unit,
        encoded,
        maps,
        methods,
        args.examples,
        labels,
        accuracy,
        title=f"Figure 5 (reproduction) on {ds}{label}: rows = encodings, maps of the true class",
    )
    plotting.save_figure(fig, args.out / f"encodings_{ds}.png", dpi=90)


if __name__ == "__main__":
    main()

"""CIFAR-10 (paper Figure 6, left): 2CONV with 3 input channels, every method's maps, measures.

Run:
    SLP_CIFAR10_ZIP=/path/to/cifar10-jpeg.zip \
        python experiments/cifar10.py --source images --epochs 5
        # about 25 minutes on 2 CPU cores: ~10 minutes of training, then the maps

Trains TwoConv (conv 5x5x32, pool, conv 5x5x64, pool, dense 1024, dense 10; inputs RGB
in [0, 1]) on the 50,000 training images (checkpoint reused unless --retrain) and
reports the test accuracy on all 10,000 test images. Then, on a fixed random sample of
--num-images test images (the image copies are ordered by class, so the first images
would all be aeroplanes), for every method in `slp.available_methods()`, each map
explaining the true class:

1. Figure 6 (left): --examples-per-class images of each of the first --figure-classes
   classes, each clean and with the robustness noise of step 2 (two rows), the input and
   every method's map (channels summed, red/blue symmetric, colour key below).
   --figures-only draws just this figure (after training when the checkpoint is missing).
2. Robustness: there is no object mask in CIFAR-10, so the MNIST noise variants and
   the share-on-object measure do not apply; instead Gaussian noise of --sigma on every
   pixel (`slp.noise.add_noise`, clipped to [0, 1]) and the Spearman/cosine similarity
   of the noisy image's map with the clean image's.
3. Faithfulness: deletion and insertion curves, pixels (all three channels together)
   ordered by the signed map and by |map|, replaced by the training set's mean colour,
   against a random order.
4. Model randomisation from the top layer down, on the first --num-random-images of the
   sample.

With the JPEG copy of CIFAR-10 (`slp.data.load_cifar10` reports `lossy=True`) the
pixels differ from the official data by JPEG compression; every output says so.
Writes to --out (default runs/): cifar10.json, cifar10.md, cifar10_figure6.png,
cifar10_robustness.png, cifar10_curves.png, cifar10_curves_logit.png,
cifar10_randomization.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path
from typing import Any

from lab import cli


def build_parser() -> argparse.ArgumentParser:
    """The options (importing this costs no jax: ``--help`` answers at once)."""
    parser, g = cli.experiment_parser(__doc__)
    g.add_argument(
        "--source",
        choices=("official", "images"),
        default=None,
        help="CIFAR-10 source (default: official if present, else the image copy)",
    )
    g.add_argument(
        "--images-path",
        type=Path,
        default=None,
        help="zip/folder of the image copy (default: $SLP_CIFAR10_ZIP)",
    )
    cli.add_measure_options(g, images=100, random_images=50, steps=64, batch_size=20)
    g.add_argument(
        "--num-test", type=cli.positive, default=None, help="test images for accuracy (None: all)"
    )
    g.add_argument("--figure-classes", type=cli.positive, default=6, help="classes in the figure")
    g.add_argument(
        "--examples-per-class", type=cli.positive, default=1, help="figure images per class"
    )
    g.add_argument(
        "--sigma", type=cli.non_negative_float, default=0.1, help="std of the robustness noise"
    )
    g.add_argument(
        "--seed-sample", type=cli.non_negative, default=0, help="seed of sample, noise, orders"
    )
    cli.add_redraw_options(
        g, figures_only="only redraw cifar10_figure6.png (trains the checkpoint if it is missing)"
    )
    return parser


if __name__ == "__main__":
    build_parser().parse_args()  # --help and malformed options answered before jax loads

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

from lab import analysis
from slp import data as slp_data
from slp import noise, plotting, training
from slp.data.cifar10 import CLASSES


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return cli.parse_measure_args(build_parser(), argv)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 32, 32, 3)`` -> float32 in [0, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"expected uint8 images (N, H, W, C), got {images.dtype} {images.shape}")
    return images.astype(np.float32) / np.float32(255.0)


@jax.jit
def _noisy(keys, images, sigma):
    clean = jnp.zeros(images.shape[1:3], bool)
    return jax.vmap(lambda k, x: noise.add_noise(k, x, clean, sigma=sigma))(keys, images)


def source_label(ds: slp_data.Dataset) -> str:
    """``"official"``, or ``"images:<file or folder name>"`` without the directories."""
    kind, _, where = ds.source.partition(":")
    return kind if not where else f"{kind}:{Path(where).name}"


def dataset_name(ds: slp_data.Dataset) -> str:
    """Checkpoint dataset label: ``cifar10_official``, ``cifar10_jpeg`` or ``cifar10_images``."""
    if ds.source == "official":
        return "cifar10_official"
    return "cifar10_jpeg" if ds.lossy else "cifar10_images"


def figure_indices(labels: np.ndarray, *, classes: int, per_class: int) -> list[int]:
    """Positions in the sample of the first ``per_class`` images of classes ``0..classes-1``."""
    out = []
    for c in range(classes):
        out += [int(i) for i in np.flatnonzero(labels == c)[:per_class]]
    return out


def figure6(
    x,
    x_noisy,
    labels,
    preds,
    preds_noisy,
    clean_maps,
    noisy_maps,
    methods,
    *,
    positions,
    sigma: float,
    title: str,
) -> Figure:
    """Figure 6 (left) with the robustness noise: each image clean, then with noise.

    Rows: for every sample position in ``positions`` the clean image and its noisy
    version (the images and maps that the robustness measure compares); columns: the
    input and every method's map of the true class, each map on its own symmetric
    scale (colour key below).

    Args:
      x, x_noisy: sample images `(N, 32, 32, 3)`, clean and with noise.
      labels: true classes `(N,)`.
      preds, preds_noisy: predicted classes of the rows `(len(positions),)`, clean and noisy.
      clean_maps, noisy_maps: per method the maps `(N, 32, 32, 3)`.
      methods: columns after the input.
      positions: sample positions shown.
      sigma: noise standard deviation (row titles).
      title: figure title.

    Returns:
      The figure.
    """
    panels, rows = [], []
    for k, i in enumerate(positions):
        panels.append([x[i]] + [clean_maps[m][i] for m in methods])
        rows.append(f"{CLASSES[labels[i]]}, clean\npred {CLASSES[preds[k]]}")
        panels.append([x_noisy[i]] + [noisy_maps[m][i] for m in methods])
        rows.append(f"noise sigma {sigma:g}\npred {CLASSES[preds_noisy[k]]}")
    return analysis.maps_figure(
        panels,
        methods,
        row_titles=rows,
        title=title,
        compare="compare each clean row with the noisy row below it",
    )


def robustness_figure(rob, methods, sigma, lossy: str) -> Figure:
    fig = Figure(figsize=(12, 4.5))
    ax = fig.add_subplot()
    x = np.arange(len(methods))
    n = max(rob[m]["spearman"]["n"] + rob[m]["spearman"].get("n_undefined", 0) for m in methods)
    for k, key in enumerate(("spearman", "cosine")):
        sums = [rob[m][key] for m in methods]
        ax.bar(
            x + (k - 0.5) * 0.4,
            [np.nan if s["mean"] is None else s["mean"] for s in sums],
            0.4,
            yerr=analysis.error_bars(sums),
            capsize=2,
            label=key,
        )
    for i, m in enumerate(methods):  # methods undefined on some images: their n
        s = rob[m]["spearman"]
        if s["n"] < n:
            ax.annotate(f"n={s['n']}", (i, -1.0), ha="center", fontsize=7)
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xticks(x)
    ax.set_xticklabels(methods, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("similarity of clean and noisy map")
    ax.set_title(
        f"CIFAR-10{lossy}: map on the clean image vs on the image with "
        f"Gaussian noise sigma = {sigma:g} (mean and 95% interval over n = {n} images)",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    methods = cfg["methods"]
    rob, faith, rand = result["robustness"], result["faithfulness"], result["randomization"]
    steps = result["randomization_steps"]
    f = analysis.fmt
    acc = result["test_accuracy"]
    lines = ["# CIFAR-10 (paper Figure 6, left): 2CONV, every method, measures", ""]
    if cfg["lossy"]:
        lines += [
            "**Lossy data:** these results use a JPEG copy of CIFAR-10 (source "
            f"`{cfg['source']}`); its pixels differ from the official dataset by JPEG "
            "compression, so accuracies and maps are not exactly those of the official data.",
            "",
        ]
    train = cfg["train"]
    lines += [
        f"Produced by `{cfg['command']}` in {cfg['seconds']['total'] / 60:.1f} minutes on 2 "
        f"CPU cores. 2CONV with 3 input channels, trained for {train['epochs']} epochs "
        f"(batch {train['batch_size']}, Adam, peak learning rate {train['learning_rate']:g}, "
        f"no augmentation) on {cfg['num_train']} training images"
        + (f" in {cfg['train_seconds'] / 60:.1f} minutes" if cfg["train_seconds"] else "")
        + f": **test accuracy {acc:.4f}** on {cfg['num_test']} test images. Measures on a "
        f"fixed random sample of {cfg['num_images']} test images (randomisation: "
        f"{cfg['num_random_images']} of them); every map explains the true class; mean ± "
        "standard deviation over images.",
        "",
        "![Figure 6 left](cifar10_figure6.png)",
        "",
        "Each image clean and, in the row below, with the noise of the robustness measure "
        f"(sigma {cfg['sigma']:g}); every map on its own symmetric scale, red positive, blue "
        "negative (colour key below the figure). Compare each method's two rows: the "
        "Spearman correlation below measures how alike they are.",
        "",
        "## Where Insens stands",
        "",
        *verdicts(result),
        "",
        "## Robustness to Gaussian noise",
        "",
        "No object masks exist for CIFAR-10, so the MNIST noise variants and the "
        f"share-on-object measure do not apply. Noise: `clip(x + {cfg['sigma']:g} z, 0, 1)` on "
        f"every pixel and channel. Test accuracy on the noisy images: "
        f"{result['noisy_accuracy']:.4f} (clean, same images: {result['sample_accuracy']:.4f}).",
        "",
        "The LRP rules start from the target logit (iNNvestigate's convention), so their map "
        "changes sign with it: images whose true-class logit changes sign under the noise "
        "give correlations near -1, hence their large spread. deep_taylor and "
        "deep_taylor_bounded start from max(logit, 0) and are undefined (all zero) where it "
        "is 0.",
        "",
        *analysis.table(
            ["method", "Spearman clean vs noisy", "cosine clean vs noisy"],
            [[m, f(rob[m]["spearman"]), f(rob[m]["cosine"])] for m in methods],
        ),
        "",
        "![robustness](cifar10_robustness.png)",
        "",
        "## Faithfulness: deletion and insertion",
        "",
        f"Pixels (all three channels) perturbed in {cfg['steps']} equal steps, most important "
        "first, replaced by the training set's mean colour "
        f"({', '.join(f'{v:.3f}' for v in cfg['baseline'])}); insertion starts from an image "
        "of that colour. Orders and columns as in `mnist_metrics.md`.",
        "",
        *analysis.faithfulness_table(faith, methods),
        "",
        "![curves](cifar10_curves.png)",
        "",
        "![curves (logit)](cifar10_curves_logit.png)",
        "",
        "## Model randomisation",
        "",
        f"Cumulative re-initialisation from the output layer down: {' → '.join(steps)}; "
        "Spearman correlation (signed / absolute) with the trained network's map.",
        "",
        *analysis.randomization_table(rand, steps, methods),
        "",
        "![randomisation](cifar10_randomization.png)",
        "",
    ]
    return analysis.report_text(lines, result["skipped_methods"])


def verdicts(result: dict[str, Any]) -> list[str]:
    """Where Insens stands among the methods on each headline measure (one line each)."""
    cfg = result["config"]
    methods = cfg["methods"]
    rob, faith, rand = result["robustness"], result["faithfulness"], result["randomization"]
    steps = result["randomization_steps"]
    return [
        analysis.verdict_line(
            f"Spearman clean vs noisy (sigma {cfg['sigma']:g}; higher = more robust)",
            {m: rob[m]["spearman"]["mean"] for m in methods},
            higher_is_better=True,
        ),
        *analysis.faithfulness_verdicts(faith, methods),
        *analysis.randomization_verdicts(rand, steps, methods),
    ]


class Cifar10Data:
    """The CIFAR-10 of the options: the test split at once, the training split on first use.

    ``test`` is the test `slp_data.Dataset`; ``test_x``, ``test_y`` its first --num-test
    images (float, [0, 1]) and labels.
    """

    def __init__(self, args: argparse.Namespace):
        self._load = functools.partial(
            slp_data.load_cifar10,
            data_dir=args.data_dir,
            download=not args.no_download,
            source=args.source,
            images_path=args.images_path,
        )
        self.test = self._load("test")
        test_x, test_y = to_float(self.test.images), np.asarray(self.test.labels, np.int32)
        if args.num_test is not None:
            test_x, test_y = test_x[: args.num_test], test_y[: args.num_test]
        if len(test_x) < args.num_images:
            raise ValueError(
                f"--num-images {args.num_images} exceeds the {len(test_x)} test images"
            )
        self.test_x, self.test_y = test_x, test_y
        self._train: tuple[np.ndarray, np.ndarray] | None = None

    def train(self) -> tuple[np.ndarray, np.ndarray]:
        """The training images (float, [0, 1]) and labels, loaded on the first call."""
        if self._train is None:
            train = self._load("train")
            if train.source != self.test.source:
                raise ValueError(f"train split from {train.source}, test from {self.test.source}")
            self._train = (to_float(train.images), np.asarray(train.labels, np.int32))
        return self._train

    def splits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(train_x, train_y, test_x, test_y)``, as `training.load_or_train` asks."""
        return (*self.train(), self.test_x, self.test_y)


def load_or_train(args: argparse.Namespace, data: Cifar10Data):
    """The training config of the options and its checkpoint (trained when missing)."""
    config = dataclasses.replace(
        cli.training_config(args),
        dataset=dataset_name(data.test),
        input_shape=(32, 32, 3),
        num_classes=len(CLASSES),
    )
    ck = training.load_or_train(
        config,
        checkpoint_dir=args.checkpoint_dir,
        data_dir=args.data_dir,
        load_data=data.splits,
        retrain=args.retrain,
        progress=not args.no_progress,
    )
    return config, ck


def mean_colour(train_x: np.ndarray, num_train: int | None) -> tuple[int, np.ndarray]:
    """The number of training images used and their mean colour `(3,)` (the deletion value)."""
    num_train = len(train_x) if num_train is None else min(num_train, len(train_x))
    return num_train, train_x[:num_train].mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Sample:
    """The measured test images: a fixed random sample, each clean and with the noise.

    ``indices`` into the test images (sorted: the image copies are ordered by class),
    images ``x`` and ``x_noisy`` `(N, 32, 32, 3)`, labels ``y``, Figure 6's sample
    ``positions`` and ``num_random``, how many of the first images the randomisation uses.
    """

    indices: np.ndarray
    x: np.ndarray
    x_noisy: np.ndarray
    y: np.ndarray
    positions: list[int]
    num_random: int


def draw_sample(args: argparse.Namespace, test_x: np.ndarray, test_y: np.ndarray) -> Sample:
    """--num-images test images drawn with --seed-sample, and their noise (same seed)."""
    rng = np.random.default_rng(args.seed_sample)
    indices = np.sort(rng.choice(len(test_x), size=args.num_images, replace=False))
    x, y = test_x[indices], test_y[indices]
    keys = jax.random.split(jax.random.key(args.seed_sample), len(x))
    return Sample(
        indices=indices,
        x=x,
        x_noisy=np.asarray(_noisy(keys, jnp.asarray(x), args.sigma)),
        y=y,
        positions=figure_indices(y, classes=args.figure_classes, per_class=args.examples_per_class),
        num_random=min(args.num_random_images, len(x)),
    )


def robustness(runner, params, sample: Sample, *, methods, log):
    """Every method's maps of the clean and noisy images and their Spearman/cosine similarity.

    Returns:
      ``(results, clean_maps, noisy_maps)``: ``results[method]`` holds the summaries
      ``spearman`` and ``cosine``; the maps are per method `(N, 32, 32, 3)`.
    """
    x, x_noisy, y = sample.x, sample.x_noisy, sample.y
    rob, clean_maps, noisy_maps = {}, {}, {}
    for m in methods:
        t1 = time.perf_counter()
        clean_maps[m] = runner(m, params, x, y)
        noisy_maps[m] = runner(m, params, x_noisy, y)
        sims = analysis.similarities(
            analysis.pixel_maps(clean_maps[m]), analysis.pixel_maps(noisy_maps[m])
        )
        rob[m] = {k: analysis.summary(sims[k]) for k in ("spearman", "cosine")}
        log(f"maps and robustness {m}: {time.perf_counter() - t1:.0f} s")
    return rob, clean_maps, noisy_maps


def measure_faithfulness(args, apply, params, sample: Sample, clean_maps, baseline, methods, log):
    """Deletion/insertion curves (`analysis.faithfulness`) on the clean sample images."""
    curves = analysis.CurveRunner(
        apply, baseline=baseline, steps=args.steps, batch_size=args.batch_size_maps
    )
    return analysis.faithfulness(
        curves,
        params,
        sample.x,
        sample.y,
        clean_maps,
        seed=args.seed_sample + 1,
        methods=methods,
        log=log,
    )


def figure6_title(lossy: bool, test_acc: float, sigma: float) -> str:
    """Figure 6's title: data (``lossy``: the JPEG copy), test accuracy, noise."""
    copy = " (lossy JPEG copy)" if lossy else ""
    return (
        f"Figure 6 left (reproduction): 2CONV on CIFAR-10{copy}, test accuracy {test_acc:.3f}; "
        f"maps of the true class, clean and with Gaussian noise sigma = {sigma:g}"
    )


def measure_randomization(args, runner, model, params, sample: Sample, clean_maps, methods, log):
    """Model randomisation (`analysis.randomization`) on the sample's first images."""
    n = sample.num_random
    return analysis.randomization(
        runner,
        model,
        params,
        sample.x[:n],
        sample.y[:n],
        clean_maps,
        seed=args.seed_sample + 2,
        methods=methods,
        log=log,
    )


def write_figure6(path: Path, model, params, sample: Sample, methods, clean_maps, noisy_maps, **kw):
    """Writes Figure 6 (`figure6`, with the rows' predictions) unless it has no rows."""
    positions = sample.positions
    if positions:
        preds = training.predict_logits(model, params, sample.x[positions]).argmax(-1)
        preds_noisy = training.predict_logits(model, params, sample.x_noisy[positions]).argmax(-1)
        fig = figure6(
            sample.x,
            sample.x_noisy,
            sample.y,
            preds,
            preds_noisy,
            clean_maps,
            noisy_maps,
            methods,
            positions=positions,
            **kw,
        )
        plotting.save_figure(fig, path, dpi=100)


def run_config(
    args, argv, data: Cifar10Data, config, ck, sample: Sample, methods, num_train, baseline, seconds
) -> dict[str, Any]:
    """The ``config`` part of cifar10.json: options, data, checkpoint, sample and timings."""
    return {
        "source": source_label(data.test),
        "lossy": bool(data.test.lossy),
        "methods": methods,
        "num_train": int(num_train),
        "num_test": int(len(data.test_x)),
        "num_images": int(len(sample.x)),
        "num_random_images": int(sample.num_random),
        "sample_indices": sample.indices.tolist(),
        "figure_sample_positions": sample.positions,
        "target": "true label",
        "sigma": args.sigma,
        "steps": args.steps,
        "baseline": baseline.tolist(),
        "train": config.to_dict(),
        "checkpoint_name": ck.path.name,
        "trained_this_run": not ck.reused,
        "train_seconds": ck.metadata.get("train_seconds"),
        "epoch_seconds": [h["seconds"] for h in ck.metadata.get("history", [])],
        "seconds": seconds,
        "command": "python experiments/cifar10.py " + " ".join(argv or sys.argv[1:]),
    }


def write_figures(result: dict[str, Any], out: Path) -> None:
    """Writes the robustness, curve and randomisation PNGs from the result dict."""
    cfg = result["config"]
    methods, lossy = cfg["methods"], " (lossy JPEG copy)" if cfg["lossy"] else ""
    plotting.save_figure(
        robustness_figure(result["robustness"], methods, cfg["sigma"], lossy),
        out / "cifar10_robustness.png",
    )
    for kind, name in (
        ("probability", "cifar10_curves.png"),
        ("logit", "cifar10_curves_logit.png"),
    ):
        title = (
            f"Deletion / insertion on {cfg['num_images']} CIFAR-10{lossy} test images: mean "
            f"target {kind} (deleted pixels = training mean colour)"
        )
        plotting.save_figure(
            analysis.curves_figure(result["mean_curves"], methods, kind=kind, title=title),
            out / name,
        )
    plotting.save_figure(
        analysis.randomization_figure(
            result["randomization"], result["randomization_steps"], methods
        ),
        out / "cifar10_randomization.png",
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the experiment; returns the dict written to cifar10.json."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    log = functools.partial(print, file=sys.stderr, flush=True)
    data = Cifar10Data(args)
    config, ck = load_or_train(args, data)
    model, params = ck.model, ck.params
    test_acc = training.accuracy(model, params, data.test_x, data.test_y)
    log(f"test accuracy {test_acc:.4f} ({'reused' if ck.reused else 'trained'} {ck.path.name})")
    num_train, baseline = mean_colour(data.train()[0], config.num_train)
    sample = draw_sample(args, data.test_x, data.test_y)
    x, x_noisy, y = sample.x, sample.x_noisy, sample.y

    def apply(p, z):
        return model.apply(p, z[None])[0]

    runner = analysis.MethodRunner(apply, batch_size=args.batch_size_maps, seed=args.seed_sample)
    methods, skipped = analysis.choose_methods(runner, params, x[0], args.methods, log)
    title = figure6_title(data.test.lossy, test_acc, args.sigma)
    draw_figure6 = functools.partial(
        write_figure6, args.out / "cifar10_figure6.png", model, params, sample, methods
    )
    if args.figures_only:
        draw_figure6(
            {m: runner(m, params, x, y) for m in methods},
            {m: runner(m, params, x_noisy, y) for m in methods},
            sigma=args.sigma,
            title=title,
        )
        log(f"wrote {args.out}/cifar10_figure6.png (--figures-only)")
        return {}
    seconds: dict[str, float] = {}
    with analysis.timer(seconds, "robustness"):
        rob, clean_maps, noisy_maps = robustness(runner, params, sample, methods=methods, log=log)
    with analysis.timer(seconds, "faithfulness"):
        faith, mean_curves = measure_faithfulness(
            args, apply, params, sample, clean_maps, baseline, methods, log
        )
    with analysis.timer(seconds, "randomization"):
        rand, steps = measure_randomization(
            args, runner, model, params, sample, clean_maps, methods, log
        )
    seconds["total"] = time.perf_counter() - t_start
    result = {
        "test_accuracy": test_acc,
        "sample_accuracy": training.accuracy(model, params, x, y),
        "noisy_accuracy": training.accuracy(model, params, x_noisy, y),
        "robustness": rob,
        "faithfulness": faith,
        "mean_curves": mean_curves,
        "randomization": rand,
        "randomization_steps": steps,
        "skipped_methods": skipped,
        "config": run_config(
            args, argv, data, config, ck, sample, methods, num_train, baseline, seconds
        ),
    }
    analysis.write_json(args.out / "cifar10.json", result)
    analysis.write_text(args.out / "cifar10.md", markdown(result))
    draw_figure6(clean_maps, noisy_maps, sigma=args.sigma, title=title)
    write_figures(result, args.out)
    log(f"wrote {args.out}/cifar10.json, .md and PNGs in {seconds['total']:.0f} s")
    return result


if __name__ == "__main__":
    main()

"""The paper's MNIST experiment (PAPER.md, experiments 1 and 5): noise accuracy, Figure 4, sparsity.

Run:
    python experiments/mnist_noise.py           # about 6 minutes with a trained checkpoint,
                                                # plus 4-7 minutes of training without one

Trains 2CONV first when its checkpoint is missing (`slp.training.load_or_train_mnist`,
same options as experiments/train.py), then on the 10,000 MNIST test images:

1. accuracy on clean images and on the noisy variants of `slp.noise` (bordered,
   background, framed, and the alternative reading framed_noisy_digit) at every
   sigma of the sweep, side by side with the paper's numbers;
2. the fraction of active hidden neurons per image (per ReLU layer and overall),
   against the paper's ~17%;
3. Figure 4: a few test digits, each clean and in the three noisy variants (rows),
   the input and every method in `slp.attributions.available_methods()` (columns).

Measures of the maps (robustness to this noise, faithfulness) are in
experiments/mnist_metrics.py. Writes to --out (default results/): mnist_noise.json,
mnist_noise.md, figure4.png and mnist_noise_sweep.png.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _shared  # noqa: E402

import slp  # noqa: E402
from slp import noise, plotting, training  # noqa: E402
from slp.models import as_single_example  # noqa: E402

PAPER = {
    "clean_accuracy": "> 0.99",
    "clean_accuracy_value": 0.99,
    "bordered": 0.87,
    "background": 0.32,
    "framed": 0.45,
    "active_fraction": 0.17,
    "source": "Szymanski, McCane & Atkinson, arXiv:1909.11275, section 5.1",
}
FIGURE_CONDITIONS = ("clean", "bordered", "background", "framed")
DEFAULT_SWEEP = tuple(round(0.1 * k, 1) for k in range(1, 11)) + (1.25, 1.5, 2.0, 2.5, 3.0)
# The two variants whose definitions leave no choice: the default sigma is calibrated on them.
CALIBRATION_VARIANTS = ("bordered", "background")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    training.add_config_arguments(parser)
    g = parser.add_argument_group("experiment")
    g.add_argument("--out", type=Path, default=Path("results"), help="output folder")
    g.add_argument("--num-test", type=int, default=None, help="first N test images (all)")
    g.add_argument(
        "--sigma", type=float, default=noise.DEFAULT_SIGMA, help="noise std of the main table"
    )
    g.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SWEEP), help="sweep")
    g.add_argument("--noise-seed", type=int, default=0, help="seed of the noise patterns")
    g.add_argument(
        "--examples", type=int, nargs="+", default=[0, 1, 4], help="test indices in Figure 4"
    )
    g.add_argument("--batch-size-eval", type=int, default=1000, help="forward-pass batch")
    g.add_argument(
        "--methods", nargs="+", default=None, help="attribution methods (default: all registered)"
    )
    args = parser.parse_args(argv)
    for method in args.methods or ():
        slp.attributions.get_method(method)  # a clear error listing the registered methods
    return args


@functools.partial(jax.jit, static_argnames="variant")
def noisy_batch(keys: jax.Array, images: jax.Array, sigma, *, variant: str) -> jax.Array:
    """`noise.make_noisy(variant, ...)` over a batch: keys `(N,)`, images `(N, H, W, C)`."""
    return jax.vmap(lambda k, x: noise.make_noisy(variant, k, x, sigma=sigma))(keys, images)


def condition_inputs(
    condition: str, images: np.ndarray, keys: jax.Array, sigma: float
) -> np.ndarray:
    """Images `(N, H, W, C)` in `condition` ("clean" or a `noise.VARIANTS` name)."""
    if condition == "clean":
        return images
    return np.asarray(noisy_batch(keys, jnp.asarray(images), sigma, variant=condition))


def noise_accuracies(
    model, params, images, labels, keys, *, sigmas, batch_size
) -> list[dict[str, Any]]:
    """Accuracy for every noise variant and sigma: `[{variant, sigma, accuracy}]`."""
    rows = []
    for sigma in sigmas:
        for variant in noise.VARIANTS:
            x = condition_inputs(variant, images, keys, sigma)
            acc = training.accuracy(model, params, x, labels, batch_size=batch_size)
            rows.append({"variant": variant, "sigma": float(sigma), "accuracy": acc})
    return rows


def active_fractions(f, images: np.ndarray, *, batch_size: int = 500) -> dict[str, Any]:
    """Fraction of active hidden neurons per image, per ReLU layer and overall.

    Args:
      f: per-example network.
      images: `(N, H, W, C)`.
      batch_size: images per vmapped batch.

    Returns:
      dict with `layers` (list of {layer, shape, neurons, mean, std}), `overall`
      ({neurons, mean, std}) and `num_images`; means and standard deviations are
      over images.
    """
    pattern = jax.jit(jax.vmap(slp.activation_pattern(f)))
    per_layer, counts = [], None
    for start in range(0, len(images), batch_size):
        layers = pattern(jnp.asarray(images[start : start + batch_size]))
        n = layers[0].shape[0]
        per_layer.append([np.asarray(a).reshape(n, -1).sum(axis=1) for a in layers])
        counts = [int(np.prod(a.shape[1:])) for a in layers]
        shapes = [tuple(int(s) for s in a.shape[1:] if s != 1) for a in layers]
    active = [np.concatenate([b[k] for b in per_layer]) for k in range(len(counts))]
    out_layers = []
    for k, (act, size) in enumerate(zip(active, counts, strict=True)):
        frac = act / size
        out_layers.append(
            {
                "layer": f"relu{k + 1}",
                "shape": list(shapes[k]),
                "neurons": size,
                "mean": float(frac.mean()),
                "std": float(frac.std()),
            }
        )
    overall = np.sum(active, axis=0) / sum(counts)
    return {
        "layers": out_layers,
        "overall": {
            "neurons": sum(counts),
            "mean": float(overall.mean()),
            "std": float(overall.std()),
        },
        "num_images": len(images),
        "paper": PAPER["active_fraction"],
    }


def insens_on_digit(f, images: np.ndarray, *, batch_size: int = 250) -> np.ndarray:
    """Insens of every image (exact, `slp.insens`) and its share on the digit + outline.

    Returns:
      `(N,)` share of |Insens| on the digit and its 3-pixel outline, per image.
    """
    maps = _shared._batched(jax.vmap(slp.insens(f)), batch_size, np.asarray(images))
    region = jax.vmap(lambda x: noise.dilate(noise.digit_mask(x)))(jnp.asarray(images))
    return _shared.mass_on(_shared.pixel_maps(maps), np.asarray(region))


def figure4(
    f, runner: _shared.MethodRunner, params, images, labels, keys, *, examples, sigma, methods
) -> tuple[Figure, list[str], list[str]]:
    """Figure 4: rows = each example in each condition, columns = input + every method."""
    idx = np.asarray(examples)
    x = images[idx]
    rows_x, row_titles = [], []
    inputs = {c: condition_inputs(c, x, keys[idx], sigma) for c in FIGURE_CONDITIONS}
    for e in range(len(idx)):
        for cond in FIGURE_CONDITIONS:
            rows_x.append(inputs[cond][e])
    rows_x = np.stack(rows_x)
    preds = np.asarray(jax.vmap(f)(jnp.asarray(rows_x))).argmax(-1)
    for r, (e, cond) in enumerate((e, c) for e in range(len(idx)) for c in FIGURE_CONDITIONS):
        row_titles.append(f"{cond}\nlabel {labels[idx[e]]}, pred {preds[r]}")
    # Every map explains the predicted class, as in the paper's figure.
    maps = {m: runner(m, params, rows_x, preds) for m in methods}
    panels = [[rows_x[r]] + [maps[m][r] for m in methods] for r in range(len(rows_x))]
    col_titles = ["input"] + list(methods)
    fig = plotting.grid_figure(
        panels,
        col_titles=col_titles,
        row_titles=row_titles,
        title=f"Figure 4 (reproduction): 2CONV on MNIST, noise sigma = {sigma:g}",
    )
    return fig, col_titles, row_titles


def sweep_figure(variants: list[dict[str, Any]], clean_accuracy: float, sigma: float) -> Figure:
    """Accuracy against sigma for every variant, with the paper's numbers as dotted lines."""
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    colours = {"bordered": "C0", "background": "C1", "framed": "C2", "framed_noisy_digit": "C3"}
    for variant in noise.VARIANTS:
        pts = sorted((r["sigma"], r["accuracy"]) for r in variants if r["variant"] == variant)
        ax.plot(*zip(*pts, strict=True), "o-", color=colours[variant], label=variant, ms=3)
        if variant in PAPER:
            ax.axhline(PAPER[variant], color=colours[variant], ls=":", lw=1)
    ax.axhline(clean_accuracy, color="k", lw=1, label="clean")
    ax.axvline(sigma, color="gray", lw=0.8, ls="--", label=f"default sigma {sigma:g}")
    ax.set_xlabel("noise standard deviation sigma (intensities in [0, 1])")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title("2CONV on noisy MNIST (dotted: the paper's numbers)", fontsize=10)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    sigma = cfg["sigma"]
    at = {r["variant"]: r["accuracy"] for r in result["variants"] if np.isclose(r["sigma"], sigma)}
    lines = [
        "# MNIST noise experiment (paper section 5.1, Figure 4)",
        "",
        "Produced by `python experiments/mnist_noise.py`; numbers from "
        f"{cfg['num_test']} MNIST test images, 2CONV trained on clean data "
        f"(checkpoint `{cfg['checkpoint_name']}`).",
        "",
        f"## Accuracy at the default noise sigma = {sigma:g}",
        "",
        "| test set | this reproduction | paper |",
        "|---|---|---|",
        f"| clean | {result['clean_accuracy']:.4f} | {PAPER['clean_accuracy']} |",
    ]
    for v in noise.VARIANTS:
        paper = f"{PAPER[v]:.2f}" if v in PAPER else "n/a (alternative reading)"
        lines.append(f"| noisy {v} | {at[v]:.4f} | {paper} |")
    lines += [
        "",
        "Definitions (`slp/noise.py`): digit = pixels with intensity > "
        f"{cfg['digit_threshold']} (on [0, 1]); outline = the pixels added by a binary "
        f"dilation of the digit by {cfg['outline_radius']} pixels (square structuring "
        "element); noise = `clip(x + sigma * z, 0, 1)`, `z ~ N(0, 1)` per pixel, on every "
        "pixel not kept clean. Clean pixels: bordered = digit + outline; background = digit; "
        "framed = digit + a frame along the image border with as many pixels as the "
        "outline; framed_noisy_digit = only that frame. Every image gets its own noise "
        f"pattern (seed {cfg['noise_seed']}), the same one at every sigma and in every variant.",
        "",
        f"Why sigma = {sigma:g}: {cfg['sigma_reason']} In this run the best-fitting sweep "
        f"value is sigma = {cfg['sigma_best_fit_this_run']:g}.",
        "",
        "## Sweep over sigma",
        "",
        "| sigma | " + " | ".join(noise.VARIANTS) + " |",
        "|---|" + "---|" * len(noise.VARIANTS),
    ]
    sigmas = sorted({r["sigma"] for r in result["variants"]})
    for s in sigmas:
        row = {r["variant"]: r["accuracy"] for r in result["variants"] if r["sigma"] == s}
        lines.append(f"| {s:g} | " + " | ".join(f"{row[v]:.4f}" for v in noise.VARIANTS) + " |")
    af = result["active_fraction"]
    lines += [
        "",
        "![accuracy against sigma](mnist_noise_sweep.png)",
        "",
        "## Active hidden neurons per clean test image "
        f"(paper: about {PAPER['active_fraction']:.0%})",
        "",
        "| layer | shape | neurons | active fraction (mean ± std over images) |",
        "|---|---|---|---|",
    ]
    for layer in af["layers"]:
        shape = "x".join(str(s) for s in layer["shape"])
        lines.append(
            f"| {layer['layer']} | {shape} | {layer['neurons']} | "
            f"{layer['mean']:.3f} ± {layer['std']:.3f} |"
        )
    o = af["overall"]
    lines.append(f"| all hidden | | {o['neurons']} | {o['mean']:.3f} ± {o['std']:.3f} |")
    ia = result["insens_all"]
    share = ia["share_on_digit_outline"]
    lines += [
        "",
        "## Insens of every clean test image",
        "",
        f"`slp.insens` computed the maps of all {ia['num_images']} clean test images in "
        f"{ia['seconds']:.0f} s ({ia['images_per_second']:.0f} images/s on this machine). "
        f"Share of |Insens| on the digit and its {noise.OUTLINE_RADIUS}-pixel outline: "
        f"{share['mean']:.3f} ± {share['std']:.3f} (mean ± std over images).",
    ]
    lines += [
        "",
        "## Figure 4",
        "",
        "Rows: test digits clean and in the three noisy variants; columns: the input and "
        "every registered attribution method (target: the predicted class). Red positive, "
        "blue negative, white 0, colour scale symmetric per map.",
        "",
        "![Figure 4](figure4.png)",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the experiment; returns the dict written to mnist_noise.json (plus `figure_columns`)."""
    args = parse_args(argv)
    t_start = time.perf_counter()
    sigmas = sorted(set(args.sigmas) | {args.sigma})
    if min(sigmas) < 0:
        raise ValueError(f"noise sigmas must be >= 0, got {sigmas}")

    ck = training.checkpoint_from_arguments(args, num_test=args.num_test)
    model, params = ck.model, ck.params
    f = as_single_example(model, params)
    images, labels = training.load_mnist_float(
        "test", data_dir=args.data_dir, download=not args.no_download, limit=args.num_test
    )
    if max(args.examples) >= len(images):
        raise ValueError(f"--examples {args.examples} out of range for {len(images)} test images")
    keys = jax.random.split(jax.random.key(args.noise_seed), len(images))
    log = functools.partial(print, file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    clean_acc = training.accuracy(model, params, images, labels, batch_size=args.batch_size_eval)
    log(f"clean accuracy {clean_acc:.4f}")
    variants = noise_accuracies(
        model, params, images, labels, keys, sigmas=sigmas, batch_size=args.batch_size_eval
    )
    for r in variants:
        if np.isclose(r["sigma"], args.sigma):
            log(f"sigma {r['sigma']:g} {r['variant']}: {r['accuracy']:.4f}")
    t_acc = time.perf_counter() - t0

    t0 = time.perf_counter()
    active = active_fractions(f, images)
    log(f"active fraction {active['overall']['mean']:.3f} ± {active['overall']['std']:.3f}")
    t_active = time.perf_counter() - t0

    t0 = time.perf_counter()
    insens_share = insens_on_digit(f, images)
    t_insens = time.perf_counter() - t0
    log(f"Insens of {len(images)} test images in {t_insens:.1f} s")

    methods = tuple(args.methods) if args.methods else slp.available_methods()
    runner = _shared.MethodRunner(
        lambda p, x: model.apply(p, x[None])[0], batch_size=10, seed=args.noise_seed
    )
    t0 = time.perf_counter()
    fig, col_titles, _ = figure4(
        f,
        runner,
        params,
        images,
        labels,
        keys,
        examples=args.examples,
        sigma=args.sigma,
        methods=methods,
    )
    plotting.save_figure(fig, args.out / "figure4.png", dpi=110)
    t_fig = time.perf_counter() - t0

    plotting.save_figure(
        sweep_figure(variants, clean_acc, args.sigma), args.out / "mnist_noise_sweep.png"
    )
    result = {
        "clean_accuracy": clean_acc,
        "variants": variants,
        "paper": PAPER,
        "active_fraction": active,
        "insens_all": {
            "num_images": len(images),
            "seconds": t_insens,
            "images_per_second": len(images) / t_insens,
            "share_on_digit_outline": _shared.summary(insens_share),
        },
        "config": {
            "sigma": args.sigma,
            "sigma_reason": SIGMA_REASON,
            "sigma_best_fit_this_run": best_fit_sigma(variants),
            "sigmas": sigmas,
            "noise_seed": args.noise_seed,
            "digit_threshold": noise.DIGIT_THRESHOLD,
            "outline_radius": noise.OUTLINE_RADIUS,
            "num_test": len(images),
            "examples": args.examples,
            "methods": list(methods),
            "train": ck.metadata["config"],
            "checkpoint_name": ck.path.name,
            "checkpoint_test_accuracy": ck.metadata.get("test_accuracy"),
            "trained_this_run": not ck.reused,
            "train_seconds": ck.metadata.get("train_seconds"),
            "epoch_seconds": [h["seconds"] for h in ck.metadata.get("history", [])],
            "seconds": {
                "accuracy": t_acc,
                "active_fraction": t_active,
                "insens_all": t_insens,
                "figure4": t_fig,
                "total": time.perf_counter() - t_start,
            },
            "command": "python experiments/mnist_noise.py " + " ".join(argv or sys.argv[1:]),
        },
    }
    _shared.write_json(args.out / "mnist_noise.json", result)
    _shared.write_text(args.out / "mnist_noise.md", markdown(result))
    log(f"wrote {args.out}/mnist_noise.json, .md, figure4.png, mnist_noise_sweep.png")
    return {**result, "figure_columns": col_titles}


SIGMA_REASON = (
    "the paper does not give its noise strength. The default is calibrated: of the sweep's "
    "values, sigma = 2.0 brings this network's accuracy on the two variants whose "
    "definitions leave no choice (bordered, background) closest to the paper's 87% and 32% "
    "(least squares); framed was left out of the calibration because its definition is "
    "ambiguous (see slp/noise.py)."
)


def best_fit_sigma(variants: list[dict[str, Any]]) -> float:
    """The sweep's sigma minimising the squared error to the paper on `CALIBRATION_VARIANTS`."""
    err: dict[float, float] = {}
    for r in variants:
        if r["variant"] in CALIBRATION_VARIANTS:
            err[r["sigma"]] = err.get(r["sigma"], 0.0) + (r["accuracy"] - PAPER[r["variant"]]) ** 2
    return min(err, key=err.get)


if __name__ == "__main__":
    main()

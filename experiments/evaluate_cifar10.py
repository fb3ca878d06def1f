"""Every attribution method on CIFAR-10 2CONV networks trained from several seeds.

Run:
    python experiments/evaluate_cifar10.py --source images \\
        --images-path /path/to/cifar10-jpeg.zip --out results
        # 3 seeds x 200 images: training 3 networks (~10 minutes each on 2 quiet CPU cores,
        # under a minute each on one GPU), then the maps and scores; on one GPU the whole
        # run fits in 10 minutes (experiments/gpu/evaluate_cifar10.sh)

The CIFAR-10 counterpart of experiments/evaluate_mnist.py (`lab.evaluation`, resumable
through --cache: maps via `slp.attribute_dataset`, per-image scores cached per (seed,
metric, method)). Trains (or reuses) 2CONV from each of --seeds with experiments/cifar10.py's
options, and scores every method on a fixed random sample of --num-images test images
(--seed-sample; the image copies are ordered by class): deletion and insertion (removed
pixels take the training set's mean colour, against a random order), the completeness
measure of `lab.completeness` (against random and blurred-random orders), and the
robustness to Gaussian noise on every pixel (there is no object mask in CIFAR-10) as a
curve over --sigmas, --draws draws per image, and ROAD (Rong et al. 2022: 10-90% of the
pixels removed by noisy linear imputation, most relevant first and least relevant first)
against random and blurred-random orders, and the Quantus-named metrics of
`lab.evaluation.QUANTUS` (`slp.metrics.evaluate`).

Writes to --out (default runs/): cifar10_evaluation.json (``seeds``, every interval as
``ci95: [low, high]``), cifar10_evaluation.md, cifar10_evaluation_ranking.png,
cifar10_evaluation_sweep.png, cifar10_evaluation_state_change.png.
"""

from __future__ import annotations

import argparse
import json
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
    g.add_argument("--images-path", type=Path, default=None, help="zip/folder of the image copy")
    g.add_argument(
        "--seeds", type=cli.non_negative, nargs="+", default=[0, 1, 2], help="training seeds"
    )
    g.add_argument("--num-images", type=cli.positive, default=200, help="test images per seed")
    g.add_argument("--num-test", type=cli.positive, default=None, help="test images for accuracy")
    g.add_argument(
        "--seed-sample", type=cli.non_negative, default=0, help="seed of the image sample"
    )
    g.add_argument("--methods", nargs="+", default=None, help="default: all registered")
    g.add_argument(
        "--families", nargs="+",
        default=["curves", "state_change", "robustness", "road", "quantus"],
        choices=["curves", "state_change", "robustness", "quantus", "road"],
        help="metric families ('road' and 'quantus' need slp.metrics.evaluate)",
    )  # fmt: skip
    g.add_argument(
        "--sigmas",
        type=cli.non_negative_float,
        nargs="+",
        default=[0.05, 0.1, 0.2],
        help="noise standard deviations of the robustness sweep",
    )
    parser.checks += [cli.distinct("seeds", "methods", "sigmas"), cli.known_methods]
    cli.add_sample_options(g)
    g.add_argument(
        "--batch-size-maps", type=cli.positive, default=50, help="images per compiled call"
    )
    g.add_argument(
        "--cache", type=Path, default=Path("runs/evaluation_cache_cifar10"), help="maps, scores"
    )
    g.add_argument("--smoke", action="store_true", help="label the results a smoke run")
    cli.add_redraw_options(
        g, replot="only rewrite the markdown and PNGs from <out>/cifar10_evaluation.json"
    )
    return parser


if __name__ == "__main__":
    build_parser().parse_args()  # --help and malformed options answered before jax loads

import cifar10
import evaluate_mnist
import jax
import jax.numpy as jnp
import numpy as np

from lab import analysis, evaluation


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs (or resumes) the evaluation; returns the dict written to cifar10_evaluation.json."""
    args = build_parser().parse_args(argv)
    out_dir: Path = args.out
    if args.replot:
        result = json.loads((out_dir / "cifar10_evaluation.json").read_text())
        evaluate_mnist.write_report(result, out_dir, stem="cifar10_evaluation")
        return result
    t0 = time.perf_counter()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    methods, aliases = evaluate_mnist.reported_methods(args.methods)
    data = cifar10.Cifar10Data(args)
    rng = np.random.default_rng(args.seed_sample)
    indices = np.sort(rng.choice(len(data.test_x), size=args.num_images, replace=False))
    images, labels = data.test_x[indices], data.test_y[indices]
    datas, accuracy = [], {}
    baseline = None
    for seed in args.seeds:
        config, ck = cifar10.load_or_train(argparse.Namespace(**{**vars(args), "seed": seed}), data)
        if baseline is None:
            _, baseline = cifar10.mean_colour(data.train()[0], config.num_train)
        model = ck.model
        apply = evaluation.shared_apply(model)  # one for every seed: shared programs
        accuracy[str(seed)] = cifar10.training.accuracy(model, ck.params, data.test_x, data.test_y)
        log(f"seed {seed}: test accuracy {accuracy[str(seed)]:.4f} ({ck.path.name})")

        # a fresh initialisation for the parameter randomisation tests (MPRT, SmoothMPRT)
        fresh = model.init(jax.random.key(1000 + seed), jnp.zeros((1, *images.shape[1:])))
        datas.append(
            evaluation.SeedData(seed, apply, ck.params, ck.path.stem, images, labels, fresh)
        )
    setting = evaluation.Setting(
        seeds=tuple(args.seeds),
        num_images=len(images),
        methods=tuple(methods),
        families=tuple(args.families),
        variants=("gaussian",),
        sigmas=tuple(args.sigmas),
        draws=args.draws,
        sweep_images=min(args.sweep_images, len(images)),
        explain_images=min(args.explain_images, len(images)),
        batch_size=args.batch_size_maps,
        noise_seed=args.seed_sample,
        cache=args.cache,
        identity_images=min(32, len(images)),
        baseline=tuple(float(v) for v in baseline),
        dataset="CIFAR-10" + (" (lossy JPEG copy)" if data.test.lossy else ""),
    )
    result = evaluate_mnist.evaluate(setting, datas, aliases, args, argv, t0, log)
    result["test_accuracy"] = accuracy
    result["config"]["sample_indices"] = indices.tolist()
    result["config"]["source"] = cifar10.source_label(data.test)
    result["config"]["command"] = "python experiments/evaluate_cifar10.py " + " ".join(
        argv or sys.argv[1:]
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    analysis.write_json(out_dir / "cifar10_evaluation.json", result)
    evaluate_mnist.write_report(result, out_dir, stem="cifar10_evaluation")
    log(f"wrote {out_dir}/cifar10_evaluation.json, .md and PNGs")
    return result


if __name__ == "__main__":
    main()

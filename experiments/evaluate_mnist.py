"""Every attribution method on 2CONV networks trained from several seeds: intervals and top groups.

Run:
    python experiments/evaluate_mnist.py --out results      # the full run: 5 seeds x 500
        # images x every method; see the README for its measured time (hours on 2 CPU cores)
    python experiments/evaluate_mnist.py --seeds 0 1 --num-images 32 --sweep-images 16 \\
        --methods insens gradient gradient_x_input --smoke   # a smoke run, ~5 minutes

Resumable: maps go through `slp.attribute_dataset` into --cache, per-image scores are
cached per (seed, metric, method); a run started again computes only what is missing
(`lab.evaluation`). The checkpoints of --seeds are those of experiments/train.py (same
training options; trained first when missing, 4-7 minutes per seed on 2 CPU cores).

Measures, per method and seed, on the first --num-images MNIST test images (the maps
explain the true class): deletion and insertion areas (against a random order), the share
of |map| on the digit and its outline, the completeness measure of `lab.completeness`
(hidden neurons switched by perturbing the map's top 1-20% pixels, baseline and noisy
replacement, against random and blurred-random orders), and the robustness to the paper's
noise as a curve over --sigmas (Spearman of the clean and the noisy map, --draws noise
draws per image, on the first --sweep-images images). Methods that compute the same map
are reported once (`lab.evaluation.ALIASES`, each identity checked on these networks).

Writes to --out (default runs/): mnist_evaluation.json (``seeds``, every interval as
``ci95: [low, high]``, top groups with their image counts), mnist_evaluation.md,
mnist_evaluation_ranking.png, mnist_evaluation_sweep.png, mnist_evaluation_state_change.png.
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
        "--seeds", type=cli.non_negative, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds"
    )
    g.add_argument("--num-images", type=cli.positive, default=500, help="test images per seed")
    g.add_argument("--methods", nargs="+", default=None, help="default: all registered")
    g.add_argument(
        "--families",
        nargs="+",
        choices=["curves", "locality", "state_change", "robustness", "quantus"],
        default=None,
        help="metric families (default: all; 'quantus', the Quantus-named metrics of "
        "slp.metrics, where slp has them)",
    )
    g.add_argument(
        "--sigmas",
        type=cli.non_negative_float,
        nargs="+",
        default=[0.5, 1.0, 2.0, 4.0],
        help="noise standard deviations of the robustness sweep",
    )
    parser.checks += [cli.distinct("seeds", "methods", "sigmas"), cli.known_methods]
    cli.add_sample_options(g)
    g.add_argument(
        "--batch-size-maps", type=cli.positive, default=32, help="images per compiled call"
    )
    g.add_argument(
        "--noise-seed", type=cli.non_negative, default=0, help="seed of noise and random orders"
    )
    g.add_argument(
        "--cache", type=Path, default=Path("runs/evaluation_cache"), help="maps and scores"
    )
    g.add_argument("--smoke", action="store_true", help="label the results a smoke run")
    cli.add_redraw_options(
        g, replot="only rewrite the markdown and PNGs from <out>/mnist_evaluation.json"
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.num_images < 2 or args.sweep_images < 2:  # --draws: >= 1 by its type
        parser.error("--num-images and --sweep-images must be >= 2")
    return args


if __name__ == "__main__":
    parse_args(None)  # --help and malformed options answered before jax loads

import jax
import jax.numpy as jnp

import slp
from lab import analysis, evaluation, evaluation_report
from slp import plotting, training


def reported_methods(requested) -> tuple[list[str], dict[str, list[str]]]:
    """The methods to score (aliases of `evaluation.ALIASES` left out) and each one's
    aliases."""
    candidates = list(requested) if requested else list(slp.available_methods())
    aliases = {a for al in evaluation.ALIASES.values() for a in al}
    methods = [m for m in candidates if m not in aliases]
    return methods, {m: list(evaluation.ALIASES.get(m, ())) for m in methods}


def load_seed(args: argparse.Namespace, seed: int, images, labels) -> evaluation.SeedData:
    """The network trained from ``seed`` (trained first when its checkpoint is missing)."""
    ck = cli.checkpoint_from_options(argparse.Namespace(**{**vars(args), "seed": seed}))
    model = ck.model
    apply = evaluation.shared_apply(model)  # one function for every seed: shared programs
    # a fresh initialisation for the parameter randomisation test (MPRT)
    fresh = model.init(jax.random.key(1000 + seed), jnp.zeros((1, *images.shape[1:]), jnp.float32))
    return evaluation.SeedData(seed, apply, ck.params, ck.path.stem, images, labels, fresh)


def default_families() -> list[str]:
    """Every metric family; the Quantus-named ones where `slp.metrics` has them."""
    families = ["curves", "locality", "state_change", "robustness"]
    from slp import metrics

    return families + (["quantus"] if hasattr(metrics, "evaluate") else [])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs (or resumes) the evaluation; returns the dict written to mnist_evaluation.json."""
    args = parse_args(argv)
    out_dir: Path = args.out
    if args.replot:
        result = json.loads((out_dir / "mnist_evaluation.json").read_text())
        write_report(result, out_dir)
        return result
    t0 = time.perf_counter()

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    methods, aliases = reported_methods(args.methods)
    images, labels = training.load_mnist_float(
        "test", data_dir=args.data_dir, download=not args.no_download, limit=args.num_images
    )
    setting = evaluation.Setting(
        seeds=tuple(args.seeds),
        num_images=len(images),
        methods=tuple(methods),
        families=tuple(args.families or default_families()),
        sigmas=tuple(args.sigmas),
        draws=args.draws,
        sweep_images=min(args.sweep_images, len(images)),
        explain_images=min(args.explain_images, len(images)),
        batch_size=args.batch_size_maps,
        noise_seed=args.noise_seed,
        cache=args.cache,
        identity_images=min(32, len(images)),
    )
    datas = [load_seed(args, s, images, labels) for s in args.seeds]
    result = evaluate(setting, datas, aliases, args, argv, t0, log)
    out_dir.mkdir(parents=True, exist_ok=True)
    analysis.write_json(out_dir / "mnist_evaluation.json", result)
    write_report(result, out_dir)
    log(f"wrote {out_dir}/mnist_evaluation.json, .md and PNGs in {time.perf_counter() - t0:.0f} s")
    return result


def evaluate(setting, datas, aliases, args, argv, t0, log) -> dict[str, Any]:
    """Runs (or resumes) `lab.evaluation` and returns the results dict (JSON-ready)."""
    scores, identity = evaluation.run(setting, datas, log)
    table = evaluation.metric_table(setting)
    metrics = evaluation.aggregate(scores, table)
    curves = (
        evaluation.state_change_curves(setting, datas)
        if "state_change" in setting.families
        else None
    )
    sweep = None
    if "robustness" in setting.families:
        sweep = {
            "variants": list(setting.variants),
            "sigmas": list(setting.sigmas),
            "names": {
                v: [evaluation.robustness_name(v, s) for s in setting.sigmas]
                for v in setting.variants
            },
        }
    return {
        "seeds": list(setting.seeds),
        "methods": aliases,
        "identities": identity,
        "identity_tolerance": evaluation.IDENTITY_TOLERANCE,
        "metrics": metrics,
        "sweep": sweep,
        "state_change_curves": curves,
        "config": {
            "smoke": bool(args.smoke),
            "dataset": setting.dataset,
            "num_images": setting.num_images,
            "sweep_images": setting.sweep_images,
            "explain_images": setting.explain_images,
            "draws": setting.draws,
            "sigmas": list(setting.sigmas),
            "families": list(setting.families),
            "fractions": list(setting.fractions),
            "state_change_noise_sigma": setting.noise_sigma,
            "baseline": list(setting.baseline),
            "curve_steps": setting.steps,
            "noise_seed": setting.noise_seed,
            "checkpoints": [d.checkpoint for d in datas],
            "target": "true label",
            "device": evaluation.device_label(),
            "seconds": {"total": time.perf_counter() - t0},
            "command": "python experiments/evaluate_mnist.py " + " ".join(argv or sys.argv[1:]),
        },
    }


def write_report(result: dict[str, Any], out: Path, *, stem: str = "mnist_evaluation") -> None:
    """<stem>.md and the figures <stem>_ranking.png, _sweep.png, _state_change.png."""
    analysis.write_text(out / f"{stem}.md", "\n".join(evaluation_report.markdown(result)))
    ranking = [n for n in result["metrics"] if not n.startswith("Robustness-")]
    if result["sweep"]:  # the sweep's middle sigma stands for it in the ranking figure
        sigmas = result["sweep"]["sigmas"]
        mid = sigmas[len(sigmas) // 2]
        ranking += [evaluation.robustness_name(v, mid) for v in result["sweep"]["variants"]]
        plotting.save_figure(evaluation_report.sweep_figure(result), out / f"{stem}_sweep.png")
    plotting.save_figure(
        evaluation_report.ranking_figure(result, ranking), out / f"{stem}_ranking.png"
    )
    if result["state_change_curves"]:
        plotting.save_figure(
            evaluation_report.state_change_figure(result),
            out / f"{stem}_state_change.png",
        )


if __name__ == "__main__":
    main()

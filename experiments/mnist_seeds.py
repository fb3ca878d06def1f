"""How far the MNIST experiment's headline numbers move when 2CONV is trained again.

Run:
    python experiments/mnist_seeds.py --out results   # about 4-7 minutes per seed on 2 CPU
                                                      # cores (training), plus ~1 minute each
    python experiments/mnist_seeds.py --seeds 0 1     # the checkpoints are reused when present

Trains 2CONV from each of --seeds (same options as experiments/train.py otherwise; the
checkpoints are cached like every other run's) and measures, on the MNIST test images,
the numbers that experiments/mnist_noise.py reports first (`mnist_noise.headline`): the
clean accuracy, the accuracy on every noise variant at --sigma, and the mean fraction of
active hidden neurons. Their spread over seeds is what training again gives: another
machine trains another network from the same seed (floating-point sums round
differently), which moves these numbers by about as much as another seed does.
experiments/mnist_noise.py compares its own run with the committed results within this
spread (`lab.reproduce`).

Writes <out>/mnist_seeds.json (default out: runs/): per seed the values, and per number the
mean, standard deviation (ddof 1), range and a 95% t-interval of the mean over seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any

from lab import cli
from slp.config import DEFAULT_SIGMA


def build_parser() -> argparse.ArgumentParser:
    """The options (importing this costs no jax: ``--help`` answers at once)."""
    parser, g = cli.experiment_parser(__doc__)
    g.add_argument(
        "--seeds", type=cli.non_negative, nargs="+", default=[0, 1, 2, 3, 4], help="training seeds"
    )
    g.add_argument("--sigma", type=cli.non_negative_float, default=DEFAULT_SIGMA, help="noise std")
    g.add_argument(
        "--noise-seed", type=cli.non_negative, default=0, help="seed of the noise patterns"
    )
    g.add_argument(
        "--num-test", type=cli.positive, default=None, help="first N test images (None: all)"
    )
    g.add_argument("--batch-size-eval", type=cli.positive, default=1000, help="forward-pass batch")
    parser.checks += [cli.distinct("seeds"), _two_seeds]
    return parser


def _two_seeds(args: argparse.Namespace) -> None:
    if len(args.seeds) < 2:
        raise ValueError("give at least two --seeds (the spread over seeds needs two networks)")


if __name__ == "__main__":
    build_parser().parse_args()  # --help and malformed options answered before jax loads

import jax
import mnist_noise

from lab import analysis, reproduce
from slp.models import as_single_example


def seed_numbers(args: argparse.Namespace, seed: int, images, labels, keys) -> dict[str, float]:
    """The headline numbers (`mnist_noise.headline`) of the network trained from `seed`."""
    ck = cli.checkpoint_from_options(
        argparse.Namespace(**{**vars(args), "seed": seed}), num_test=args.num_test
    )
    clean, variants = mnist_noise.measure_accuracies(
        args, ck.model, ck.params, images, labels, keys, [args.sigma], lambda *a: None
    )
    active = mnist_noise.active_fractions(as_single_example(ck.model, ck.params), images)
    return mnist_noise.headline(
        {"clean_accuracy": clean, "variants": variants, "active_fraction": active},
        sigma=args.sigma,
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Trains (or loads) every seed's network, measures it, writes mnist_seeds.json."""
    args = build_parser().parse_args(argv)
    args.examples = [0]  # mnist_noise.load_test_images checks its figure's examples
    images, labels = mnist_noise.load_test_images(args)
    keys = jax.random.split(jax.random.key(args.noise_seed), len(images))
    per_seed = {}
    for seed in args.seeds:
        per_seed[str(seed)] = seed_numbers(args, seed, images, labels, keys)
        print(f"seed {seed}: {per_seed[str(seed)]}", file=sys.stderr, flush=True)
    names = list(next(iter(per_seed.values())))
    result = {
        "seeds": list(args.seeds),
        "per_seed": per_seed,
        "numbers": {n: reproduce.spread([per_seed[str(s)][n] for s in args.seeds]) for n in names},
        "config": {
            "sigma": args.sigma,
            "noise_seed": args.noise_seed,
            "num_test": len(images),
            "train": dataclasses.asdict(cli.training_config(args)) | {"seed": None},
            "command": "python experiments/mnist_seeds.py " + " ".join(argv or sys.argv[1:]),
        },
    }
    analysis.write_json(args.out / "mnist_seeds.json", result)
    print(f"wrote {args.out / 'mnist_seeds.json'}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()

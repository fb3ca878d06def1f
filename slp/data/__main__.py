"""Command line: ``python -m slp.data fetch mnist|fashion_mnist|cifar10|smallnorb``.

Fetches a dataset from its official sources into the data directory (``--data-dir``, else
``$SLP_DATA_DIR``, else ``~/.cache/slp``) and prints the folder it is in. Exits with status 1
and the loader's message when the dataset cannot be obtained. (In a clone of the repository,
``python experiments/fetch_data.py`` also tries package managers' copies.)
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from slp._src.cli import command_parser
from slp.data import _cache
from slp.data.cifar10 import fetch_cifar10
from slp.data.mnist import fetch_fashion_mnist, fetch_mnist
from slp.data.smallnorb import SPLITS, load_smallnorb

DATASETS = ("mnist", "fashion_mnist", "cifar10", "smallnorb")


def _fetch(name: str, data_dir: str | None, images: str | None) -> Path:
    if name == "mnist":
        return fetch_mnist(data_dir=data_dir)
    if name == "fashion_mnist":
        return fetch_fashion_mnist(data_dir=data_dir)
    if name == "cifar10":
        return fetch_cifar10(data_dir=data_dir, images_path=images)
    for split in SPLITS:
        load_smallnorb(split, data_dir=data_dir)
    return _cache.data_dir(data_dir) / "smallnorb"


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    parser, fetch = command_parser(
        "python -m slp.data", __doc__, "fetch", help="fetch a dataset into the data directory"
    )
    fetch.add_argument("dataset", choices=DATASETS, help="the dataset to fetch")
    fetch.add_argument(
        "--data-dir",
        default=None,
        help="data directory (default: $SLP_DATA_DIR, else ~/.cache/slp)",
    )
    fetch.add_argument(
        "--images",
        default=None,
        help="cifar10 only: zip or folder image copy used when the official batches are "
        "unavailable (default: $SLP_CIFAR10_ZIP)",
    )
    args = parser.parse_args(argv)
    try:
        folder = _fetch(args.dataset, args.data_dir, args.images)
    except (_cache.DatasetNotFoundError, _cache.CorruptDataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{args.dataset}: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

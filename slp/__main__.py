"""Command line: ``python -m slp maps`` computes attribution maps for a whole data set.

Example (Insens of the 10,000 MNIST test images with the default 2CONV checkpoint)::

    python -m slp maps --method insens --data mnist:test --out maps/insens

Every local device is used (`slp.attribute_dataset`); the output folder is resumable: run
the same command again after an interruption and only the missing chunks are computed.
On several hosts, start the same command on each with ``--coordinator-address HOST:PORT
--num-processes P --process-id I`` (or ``--distributed`` where JAX detects the cluster,
e.g. under SLURM); every process writes its share of the chunks into the same folder.
Read the maps back with ``slp.read_maps(DIR)``, or with numpy alone:
``np.concatenate([np.load(p) for p in sorted(Path(DIR).glob("maps-*.npy"))])``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slp._src.cli import command_parser

DATASETS = ("mnist", "fashion_mnist")


def _option(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value  # a bare word is a string


def _target(text: str) -> str | int:
    if text in ("predicted", "label"):
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'predicted', 'label' or a class index, got {text!r}"
        ) from None


def _parser() -> argparse.ArgumentParser:
    parser, p = command_parser(
        "python -m slp",
        __doc__,
        "maps",
        help="attribution maps of a whole data set into a resumable folder",
    )
    _method_options(p.add_argument_group("what to compute"))
    _data_options(p.add_argument_group("network and data"))
    _output_options(p.add_argument_group("output and batching"))
    _distributed_options(p.add_argument_group("several hosts (jax.distributed)"))
    return parser


def _method_options(g) -> None:
    g.add_argument(
        "--method", default="insens", help="a name of slp.available_methods() (default: insens)"
    )
    g.add_argument(
        "--option",
        type=_option,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a method option, repeatable; VALUE is JSON (e.g. steps=32, "
        'quadrature="linspace") or a bare word (default: none, the method\'s defaults)',
    )
    g.add_argument(
        "--target",
        type=_target,
        default="predicted",
        help="class explained: 'predicted' (arg-max logit), 'label' (the data set's "
        "labels) or a class index (default: predicted)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the per-image PRNG keys of methods that take one (default: 0)",
    )


def _data_options(g) -> None:
    g.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="a 2CONV checkpoint <name>.msgpack with its .json sidecar (default: the "
        "checkpoint of experiments/train.py's default options in --checkpoint-dir)",
    )
    g.add_argument(
        "--data",
        default="mnist:test",
        help="'mnist:test', 'mnist:train', 'fashion_mnist:test', ... or a float .npy file "
        "(N, *X), memory-mapped (default: mnist:test)",
    )
    g.add_argument("--limit", type=int, default=None, help="only the first N images (default: all)")
    g.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (default: $SLP_DATA_DIR)"
    )
    g.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="where --checkpoint's default lives (default: <data dir>/checkpoints)",
    )


def _output_options(g) -> None:
    g.add_argument("--out", type=Path, required=True, help="output folder (required)")
    g.add_argument(
        "--batch-size",
        type=int,
        default=256,
        help="images per compiled call over all local devices (default: 256)",
    )
    g.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="images per output file, a multiple of --batch-size (default: --batch-size)",
    )
    g.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, show Python's traceback rather than one line (default: one line)",
    )


def _distributed_options(g) -> None:
    g.add_argument(
        "--distributed",
        action="store_true",
        help="call jax.distributed.initialize; implied by --coordinator-address; alone, "
        "JAX detects the cluster (SLURM, Kubernetes, TPU pods) (default: off)",
    )
    g.add_argument(
        "--coordinator-address",
        default=None,
        help="HOST:PORT of process 0 (default: none, a single process)",
    )
    g.add_argument(
        "--num-processes", type=int, default=None, help="number of processes (default: none)"
    )
    g.add_argument("--process-id", type=int, default=None, help="this process's id (default: none)")
    g.add_argument(
        "--cpu-collectives",
        default="gloo",
        help="collectives between CPU processes: gloo or mpi (default: gloo)",
    )


def _images(spec: str, data_dir, limit):
    """``(images (N, *X) float, labels (N,) or None)`` for a --data value."""
    import numpy as np

    from slp import data, training

    if spec.endswith(".npy"):
        images = np.load(spec, mmap_mode="r")
        labels = None
    else:
        name, _, split = spec.partition(":")
        if name not in DATASETS or split not in ("train", "test"):
            raise SystemExit(
                f"error: --data {spec!r}: expected one of "
                f"{', '.join(f'{d}:train|test' for d in DATASETS)} or a .npy file"
            )
        load = data.load_mnist if name == "mnist" else data.load_fashion_mnist
        raw, labels = load(split, data_dir=data_dir)
        images = training.to_float_images(raw[:limit])
    if limit is not None:
        images = images[:limit]
        labels = None if labels is None else labels[:limit]
    return images, labels


def _checkpoint(args):
    """``(apply(params, x), params, number of classes)`` of the requested 2CONV checkpoint."""
    from slp import checkpoints, data, training

    path = args.checkpoint
    if path is None:
        folder = args.checkpoint_dir or data.data_dir(args.data_dir) / "checkpoints"
        path = Path(folder) / f"{training.checkpoint_name(training.TrainConfig())}.msgpack"
        if not path.is_file():
            raise SystemExit(
                f"error: no checkpoint at {path}; train one with `python experiments/train.py` "
                "or pass --checkpoint"
            )
    metadata = checkpoints.read_metadata(path)  # both files there, the sidecar's JSON and format
    if "config" not in metadata:
        raise SystemExit(
            f"error: {Path(path).with_suffix('.json')} holds no training config: not a 2CONV "
            "checkpoint"
        )
    config = training.TrainConfig.from_dict(metadata["config"])
    params, _ = training.load_checkpoint(path, config=config)
    model = training.make_model(config)

    def apply(p, x):
        return model.apply(p, x[None])[0]

    return apply, params, config.num_classes


def maps(args: argparse.Namespace) -> dict[str, Any]:
    """Runs ``maps``; returns the summary it prints."""
    import jax

    if args.distributed or args.coordinator_address is not None:
        jax.config.update("jax_cpu_collectives_implementation", args.cpu_collectives)
        jax.distributed.initialize(
            coordinator_address=args.coordinator_address,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )
    import slp

    method = slp.attributions.get_method(args.method)  # lists the valid names
    options = dict(args.option)
    images, labels = _images(args.data, args.data_dir, args.limit)
    if args.target == "predicted":
        target = None
    elif args.target == "label":
        if labels is None:
            raise SystemExit("error: --target label needs a data set with labels")
        target = labels
    else:
        target = args.target
    key = None
    if "key" in inspect.signature(method).parameters:
        key = jax.random.key(args.seed)
    apply, params, num_classes = _checkpoint(args)
    if target is not None:  # before anything runs, in the flag's words
        try:
            slp.attributions.registry.check_target(target, num_classes, batched=True)
        except ValueError as err:
            raise SystemExit(
                f"error: --target {args.target}: the checkpoint has {num_classes} classes; {err}"
            ) from None
    t0 = time.perf_counter()
    run = slp.attribute_dataset(
        apply,
        images,
        args.method,
        params=params,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        out=args.out,
        target=target,
        key=key,
        progress=not args.no_progress,
        **options,
    )
    seconds = time.perf_counter() - t0
    chunk = args.chunk_size or args.batch_size
    done = sum(min(run.num_images - k * chunk, chunk) for k in run.computed)
    summary = {
        "out": str(run.out),
        "method": args.method,
        "num_images": run.num_images,
        "map_shape": list(run.map_shape),
        "chunks": run.num_chunks,
        "computed_chunks": len(run.computed),
        "reused_chunks": len(run.reused),
        "process": jax.process_index(),
        "processes": jax.process_count(),
        "local_devices": jax.local_device_count(),
        "seconds": round(seconds, 3),
        "images_per_second": round(done / seconds, 2) if done else None,
    }
    print(json.dumps(summary))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    if args.command == "maps":
        try:
            maps(args)
        except (ValueError, TypeError, OSError) as err:  # bad input: the message names it
            if args.traceback:
                raise
            raise SystemExit(
                f"error: {type(err).__name__}: {err}\n(--traceback shows where it was raised)"
            ) from None
    return 0


if __name__ == "__main__":
    sys.exit(main())

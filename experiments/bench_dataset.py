"""Throughput of slp.attribute_dataset against the number of devices, and its overheads.

Run:
    python experiments/bench_dataset.py        # about 6-10 minutes on 2 CPU cores
    python experiments/bench_dataset.py --tag h200 --num-images 8192 --batch-size 512  # a GPU

The full-size 2CONV (random weights; the speed does not depend on them) on the first
--num-images MNIST test images (uniform noise of the same shape when MNIST is not in the
data directory). For each method (default: insens and gradient), in one process and one
run, interleaved over --repeats rounds:

- ``plain``: a hand-written loop of ``jax.jit(jax.vmap(slp.attribute))`` over padded
  batches on one device (the baseline);
- ``devices=k``: `slp.attribute_dataset` returning the maps, batches sharded over the
  first k local devices, for k in 1, 2, 4 (those that exist);
- ``devices=k, out``: the same writing resumable chunks (`.npy` + receipt, atomically,
  and the manifest's model fingerprint) into a fresh folder.

On CPU the devices are --fake-devices host devices of XLA: they split a batch across
threads of the same cores, so on a machine with 2 cores they cannot add compute; the
numbers measure what sharding costs, not what it gains. On a GPU host each device is a
real accelerator. Every timed call follows one untimed call of the same shapes (compiling).
Maps of every configuration are checked against ``plain`` (largest absolute difference).

Writes --out/bench_dataset_<tag>.json and .md (default runs/, tag cpu).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab import cli  # no jax; jax is imported in main(), after the device count is set


def build_parser() -> argparse.ArgumentParser:
    """The options (no jax: ``--help`` answers at once, and jax starts only in `main`,
    after the host device count is set from ``--fake-devices``)."""
    parser = cli.script_parser(__doc__, summary=False)
    parser.add_argument(
        "--methods", nargs="+", default=["insens", "gradient"], help="registered method names"
    )
    parser.add_argument(
        "--num-images", type=cli.positive, default=512, help="images per timed call"
    )
    parser.add_argument("--batch-size", type=cli.positive, default=128, help="images per batch")
    parser.add_argument("--repeats", type=cli.positive, default=2, help="interleaved rounds")
    parser.add_argument(
        "--fake-devices", type=cli.positive, default=4, help="CPU host devices (ignored on a GPU)"
    )
    parser.add_argument(
        "--features", type=cli.positive, nargs=2, default=[32, 64], help="2CONV's conv widths"
    )
    parser.add_argument(
        "--hidden", type=cli.positive, default=1024, help="2CONV's hidden dense width"
    )
    parser.add_argument("--tag", default="cpu", help="results file suffix")
    cli.add_out_option(parser)
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="data directory (None: $SLP_DATA_DIR)"
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def load_images(args: argparse.Namespace, input_shape) -> tuple[Any, str]:
    """The first --num-images MNIST test images (uniform noise of their shape when MNIST
    cannot be read: the timing needs only the shapes), and which of the two."""
    import numpy as np

    from slp import training
    from slp.data import CorruptDataError, DatasetNotFoundError

    try:
        images, _ = training.load_mnist_float(
            "test", data_dir=args.data_dir, download=False, limit=args.num_images
        )
        return images, "MNIST test images"
    except (DatasetNotFoundError, CorruptDataError):  # the timing needs only the shapes
        rng = np.random.default_rng(0)
        images = rng.uniform(size=(args.num_images, *input_shape)).astype(np.float32)
        return images, "uniform noise of MNIST's shape"


def configurations(num_devices: int) -> list[tuple[str, int | None, bool]]:
    """``(name, devices, writes chunks)`` of every configuration timed, ``plain`` first."""
    counts = [k for k in (1, 2, 4, 8) if k <= num_devices]
    configs = [("plain", None, False)] + [(f"devices={k}", k, False) for k in counts]
    configs += [(f"devices={k}, out", k, True) for k in sorted({1, counts[-1]})]
    return configs


def plain_runner(f, images, bs: int, method: str):
    """The baseline: a hand-written loop of ``jit(vmap(slp.attribute))`` over padded batches."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    import slp

    fn = jax.jit(jax.vmap(lambda x: slp.attribute(f, x, method)))

    def run(check=False):
        outs = []
        for start in range(0, len(images), bs):
            x = images[start : start + bs]
            m = len(x)
            if m < bs:
                x = np.concatenate([x, np.repeat(x[-1:], bs - m, axis=0)])
            outs.append(np.asarray(fn(jnp.asarray(x)))[:m])
        return np.concatenate(outs)

    return run


def dataset_runner(f, images, bs: int, method: str, devices, write: bool):
    """`slp.attribute_dataset` on ``devices``: maps returned, or (``write``) chunks written
    into a fresh folder (read back, untimed, only for the check)."""
    import slp

    def run(check=False):
        if not write:
            return slp.attribute_dataset(
                f, images, method, batch_size=bs, devices=devices, progress=False
            )
        with tempfile.TemporaryDirectory() as out:
            slp.attribute_dataset(
                f, images, method, batch_size=bs, devices=devices, out=out, progress=False
            )
            return slp.read_maps(out) if check else None  # reading is not timed

    return run


def first_calls(method: str, runners: dict) -> dict[str, float]:
    """One compiling call per configuration (plain: whole loop; others: cached step); the
    largest absolute difference of each one's maps to plain's."""
    import numpy as np

    reference = None
    diffs: dict[str, float] = {}
    for name, run in runners.items():
        t0 = time.perf_counter()
        maps = run(check=True)
        print(f"{method} {name}: first call {time.perf_counter() - t0:.1f} s", flush=True)
        reference = maps if reference is None else reference
        diffs[name] = float(np.abs(maps - reference).max())
    return diffs


def resumed_seconds(f, images, method: str, bs: int) -> float:
    """Fixed cost of a resumed call: fingerprints and receipts checked, nothing computed."""
    import slp

    with tempfile.TemporaryDirectory() as out:
        slp.attribute_dataset(f, images, method, batch_size=bs, out=out, progress=False)
        t0 = time.perf_counter()
        slp.attribute_dataset(f, images, method, batch_size=bs, out=out, progress=False)
        resumed = time.perf_counter() - t0
    print(f"{method}: a call with every chunk done takes {resumed:.2f} s", flush=True)
    return resumed


def timed_rounds(method: str, runners: dict, n: int, repeats: int) -> dict[str, list[float]]:
    """Seconds of every configuration's calls, interleaved over ``repeats`` rounds."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t0)
            print(f"{method} {name}: {n / times[name][-1]:.1f} img/s", flush=True)
    return times


def bench_method(method: str, configs, f, images, bs: int, devices, repeats: int) -> list[dict]:
    """One method in every configuration: compiling calls, the resumed call, timed rounds.

    Returns:
      one result row per configuration.
    """
    runners = {
        name: plain_runner(f, images, bs, method)
        if k is None
        else dataset_runner(f, images, bs, method, devices[:k], write)
        for name, k, write in configs
    }
    diffs = first_calls(method, runners)
    resumed = resumed_seconds(f, images, method, bs)
    n = len(images)
    times = timed_rounds(method, runners, n, repeats)
    base = n / statistics.median(times["plain"])
    rows = []
    for name, k, write in configs:
        ips = n / statistics.median(times[name])
        rows.append(
            {
                "method": method,
                "config": name,
                "devices": k,
                "writes_chunks": write,
                "images_per_second": ips,
                "relative_to_plain": ips / base,
                "seconds": times[name],
                "max_abs_difference_to_plain": diffs[name],
                "seconds_of_a_call_with_every_chunk_done": resumed if write else None,
            }
        )
    return rows


def run_config(args, argv, *, n, data, config, devices, load_start) -> dict[str, Any]:
    """The ``config`` record of the results: the run, the network and the machine."""
    import jax

    return {
        "num_images": n,
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "data": data,
        "network": f"2CONV (TwoConv, features {config.features}, hidden {config.hidden}), "
        "random weights",
        "platform": devices[0].platform,
        "device_kind": devices[0].device_kind,
        "local_devices": len(devices),
        "fake_devices": devices[0].platform == "cpu",
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "load_average": {"start": load_start, "end": _load()},
        "jax": jax.__version__,
        "command": "python experiments/bench_dataset.py " + " ".join(argv or sys.argv[1:]),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark; returns the dict written to bench_dataset_<tag>.json."""
    args = parse_args(argv)
    import jax

    # Before the CPU backend starts: only the CPU platform reads it.
    jax.config.update("jax_num_cpu_devices", args.fake_devices)
    from lab import analysis
    from slp import training
    from slp.models import as_single_example

    config = training.TrainConfig(features=tuple(args.features), hidden=args.hidden)
    model = training.make_model(config)
    f = as_single_example(model, training.init_params(config))
    images, data = load_images(args, config.input_shape)
    devices = jax.local_devices()
    configs = configurations(len(devices))
    load_start = _load()
    results = []
    for method in args.methods:
        results += bench_method(method, configs, f, images, args.batch_size, devices, args.repeats)
    result = {
        "results": results,
        "config": run_config(
            args,
            argv,
            n=len(images),
            data=data,
            config=config,
            devices=devices,
            load_start=load_start,
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    analysis.write_json(args.out / f"bench_dataset_{args.tag}.json", result)
    analysis.write_text(args.out / f"bench_dataset_{args.tag}.md", markdown(result))
    print(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    """The markdown report of the results."""
    from lab import analysis

    cfg = result["config"]
    lines = [
        "# slp.attribute_dataset: throughput against devices, and its overheads",
        "",
        f"Produced by `{cfg['command']}`: {cfg['network']}, {cfg['num_images']} "
        f"{cfg['data']}, batches of {cfg['batch_size']}, median of {cfg['repeats']} "
        f"interleaved rounds after a compiling call. Platform {cfg['platform']} "
        f"({cfg['device_kind']}), {cfg['local_devices']} local devices, {cfg['cpus']} CPUs, "
        f"load average {cfg['load_average']['start'][0]:g} at the start and "
        f"{cfg['load_average']['end'][0]:g} at the end.",
        "",
    ]
    if cfg["fake_devices"]:
        lines += [
            f"The devices are XLA host devices on {cfg['cpus']} CPU cores: they split each "
            "batch across threads of the same cores and add no compute. Any change with the "
            "number of devices is overhead (or a different use of the same cores), not "
            "parallel speed-up.",
            "",
        ]
    lines += [
        *analysis.table(
            [
                "method",
                "configuration",
                "images/s",
                "relative to plain jit(vmap) loop",
                "max abs difference to plain",
            ],
            [
                [
                    r["method"],
                    r["config"],
                    f"{r['images_per_second']:.1f}",
                    f"{r['relative_to_plain']:.2f}",
                    f"{r['max_abs_difference_to_plain']:.1e}",
                ]
                for r in result["results"]
            ],
        ),
    ]
    resumed = {
        r["method"]: r["seconds_of_a_call_with_every_chunk_done"]
        for r in result["results"]
        if r["seconds_of_a_call_with_every_chunk_done"] is not None
    }
    lines += [
        "",
        "`plain`: a hand-written loop of `jax.jit(jax.vmap(slp.attribute))` on one device. "
        "`devices=k`: `slp.attribute_dataset` sharding each batch over k devices, maps "
        "returned. `out`: writing resumable chunks (`.npy` + receipt, each atomically) and the "
        "manifest with the model's fingerprint into a fresh folder (reading back not timed).",
        "",
        "A call on a folder whose chunks are all done (model and input fingerprints checked, "
        "nothing computed) took "
        + ", ".join(f"{s:.2f} s ({m})" for m, s in resumed.items())
        + ": the fixed cost of a resumed run.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

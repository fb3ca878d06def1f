"""Throughput and peak memory of Insens: the naive jacfwd route, `slp.insens`, the forward pass.

Run:
    python experiments/bench_insens.py                  # CPU, 2 cores: about 4 minutes
    python experiments/bench_insens.py --isolate        # + peak RSS per case (subprocesses)
    python experiments/bench_insens.py --batches 64 1024 8192 --precisions tf32x3 bf16x6 \
        --variant-batches 1024 8192 --naive-max-batch 64 --max-memory-gb 60   # H100: 2 min
    python experiments/bench_insens.py --zoo --naive-batch 64   # the model zoo: 2 cores, 30-40 min
    python experiments/bench_insens.py --zoo --no-naive --fit --out runs/fit_full   # 12 min
    python experiments/bench_insens.py --zoo --no-naive --fit --tiny --out runs/fit_tiny  # 4 min
    python experiments/bench_insens.py --zoo --fit --fit-write --fit-from \
        runs/fit_full/bench_insens_zoo_cpu.json runs/fit_tiny/bench_insens_zoo_cpu.json  # refit
    python experiments/bench_insens.py --zoo --batch 4 --repeats 1 --out /tmp/zoo  # 20 min

The full-size TwoConv (conv 5x5x32 -> max-pool -> conv 5x5x64 -> max-pool -> dense 1024
-> dense 10) on 28x28x1 inputs (or, ``--model qnetwork``, the DQN Q-network of the Pong
experiment: strided convs 8x8/4, 4x4/2, 3x3/1 -> dense 512 -> 6 actions, on 84x84x4
frame stacks; or ``--model resnet8``, a small residual network on 32x32x3, `zoo.resnet8_module`),
the same weights and inputs for every route: random
weights with non-zero biases and uniform inputs by default, or a trained checkpoint
(``--checkpoint``) on MNIST test digits (``--data mnist``). Routes, each ``jax.jit`` of
``jax.vmap`` over the batch:

- ``naive``: ``jax.jacfwd`` of every ReLU layer's pre-activations of the switched network
  (every switched weight vector materialised), then eq. 8 as a weighted sum of rows;
- ``insens``: `slp.insens` (the route `slp.insens_plan` picks);
- ``forward``: the network itself (logits).

Per route and batch size: images/s (median of ``--repeats`` timed calls after one
compiling call) and memory: XLA's compiled memory analysis (temporary buffers, per
image) and the peak RSS during the calls above the RSS before them (the high-water
mark is reset after compiling; meaningful per case with ``--isolate``, which runs each
case in a fresh process); on a GPU also the device's peak bytes in use (per process).
A case whose XLA estimate exceeds ``--max-memory-gb`` is skipped. `slp.insens` is
checked against the naive route (max abs difference) on the first ``--check-images``
images, and every route's float32 maps against the naive route in float64 (relative
error: float32 rounding is about 1e-7..1e-5, TF32 about 1e-3). JAX uses the GPU when one
is present; by default the matrix products run at the highest precision (no TF32).
``--precisions`` also times `slp.insens(..., precision=P)` for each P (``insens:P``), e.g.
``TF32_TF32_F32_X3`` (three TF32 tensor-core passes) or ``default`` (TF32 on GPUs);
a precision the platform does not support is reported as skipped.

Writes --out/bench_insens.json (default runs/) and prints a table with the ratios.

``--zoo``: every network of ``experiments/zoo.py`` (the full-size 2CONV in flax.linen,
flax.nnx, equinox, dm-haiku, plain jnp and plain jnp with dead code; an MLP; ResNet-8; the
Q-network; batch-norm, depthwise-separable, residual and DenseNet-style CNNs; conv +
max-pool CNNs in equinox and dm-haiku), or those named by ``--zoo-only``, on ``--batch``
random inputs (unless ``--no-naive``): per network the
route `slp.insens_plan` picks, the time to lower and compile ``jit(vmap(slp.insens(f)))``,
its images/s and XLA temporary memory per image, the same for the naive route on
``--naive-batch`` images, their ratios and the maps' agreement. The naive route's peak RSS
is large on CPU (about 16 GB for the Q-network on one image, 2.8 times XLA's estimate).
Then, at every ``--route-batches`` size (1 and 8), every exact route of every network
(``jax.jit(jax.vmap(slp.insens(f, route=r)))``, compile excluded, median of
``--route-repeats`` calls, the routes of one network taking turns) against the seconds
`slp.insens_plan` predicts for it, and the route `slp.insens` chooses for that batch size
(under ``jax.vmap`` it sees the batch size) against the fastest. The script exits with
status 1 when a chosen route takes more than 1.2 times the fastest's time or a prediction
is off by more than 3 times (a line per case says which). ``--fit`` fits the
planner's cost model (`slp._src.costs`) to these timings and prints its table and the check it
would pass; ``--fit-write`` writes the table into ``slp/_src/costs.py``; ``--fit-from FILE
[FILE ...]`` refits from the timings earlier runs recorded (nothing is timed; each run's
work counted again at the size it timed, so a full-size and a ``--tiny`` run fit together;
the committed table comes from both).
Writes --out/bench_insens_zoo_<platform>.json and a markdown report
bench_insens_zoo_<platform>.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab import cli  # no jax

ROUTES = ("naive", "insens", "forward")
# --zoo: the naive route on more than one image only where XLA's memory estimate times this
# is within the limit (on CPU the Q-network's peak RSS was up to 2.8 times the estimate).
NAIVE_HEADROOM = 3.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.script_parser(__doc__, summary=False)
    p.add_argument(
        "--batches", type=cli.positive, nargs="+", default=[1, 64, 1024], help="batch sizes timed"
    )
    p.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES, help="what to time")
    p.add_argument("--repeats", type=cli.positive, default=3, help="timed calls per case (median)")
    p.add_argument("--chunk-size", type=cli.positive, default=128, help="slp.insens chunk_size")
    p.add_argument(
        "--insens-route",
        default="auto",
        choices=("auto", "cone", "probes", "dense"),
        help="slp.insens route (auto: the cheapest, see slp.insens_plan)",
    )
    p.add_argument(
        "--max-memory-gb",
        type=cli.positive_float,
        default=None,
        help="skip cases whose XLA estimate is larger (default: half the free memory)",
    )
    p.add_argument(
        "--naive-max-batch",
        type=cli.positive,
        default=256,
        help="skip the naive route above this batch size (it needs ~113 MiB per image)",
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="trained TwoConv .msgpack")
    p.add_argument(
        "--data", choices=("random", "mnist"), default="random", help="uniform inputs or MNIST"
    )
    p.add_argument("--isolate", action="store_true", help="measure each case in a subprocess")
    p.add_argument(
        "--precisions",
        nargs="+",
        default=[],
        help="also time slp.insens(precision=P) for each P (e.g. TF32_TF32_F32_X3, or 'default' "
        "for XLA's default precision)",
    )
    p.add_argument(
        "--variant-batches",
        type=cli.positive,
        nargs="+",
        default=None,
        help="batch sizes for the --precisions variants (default: --batches)",
    )
    p.add_argument(
        "--no-x64-check",
        action="store_true",
        help="skip the float64 naive reference (it needs ~225 MiB per image, 8 at a time)",
    )
    p.add_argument(
        "--check-images",
        type=cli.positive,
        default=None,
        help="images for the exactness check (default: the smallest batch size >= 8)",
    )
    p.add_argument(
        "--model",
        choices=("twoconv", "qnetwork", "resnet8"),
        default="twoconv",
        help="2CONV on 28x28x1, the DQN Q-network (strided convs) on 84x84x4, or a small "
        "residual network on 32x32x3",
    )
    p.add_argument("--tiny", action="store_true", help="tiny network(s) (smoke test)")
    p.add_argument(
        "--zoo",
        action="store_true",
        help="every network of experiments/zoo.py on one batch (--batch): route, compile "
        "time, speed and memory of slp.insens against the naive route",
    )
    p.add_argument("--batch", type=cli.positive, default=64, help="--zoo: images per network")
    p.add_argument(
        "--naive-batch",
        type=cli.positive,
        default=1,
        help="--zoo: images for the naive route (its cost is linear in the images; halved "
        "while XLA's estimate exceeds a third of the memory limit)",
    )
    p.add_argument("--zoo-only", default=None, help="--zoo: comma-separated zoo networks")
    p.add_argument(
        "--route-batches",
        type=cli.positive,
        nargs="+",
        default=[1, 8],
        help="--zoo: batch sizes at which every exact route is timed against its prediction",
    )
    p.add_argument(
        "--route-repeats",
        type=cli.positive,
        default=7,
        help="--zoo: timed calls per route (median)",
    )
    p.add_argument(
        "--skip-factor",
        type=cli.positive_float,
        default=None,
        help="--zoo: do not time a route predicted more than this many times slower than "
        "the fastest prediction (default 10; 100 with --fit, whose fit wants every route); "
        "a route predicted under 50 ms is always timed",
    )
    p.add_argument(
        "--max-call-s",
        type=cli.positive_float,
        default=5.0,
        help="--zoo: a route whose first call takes longer is timed by that call alone",
    )
    p.add_argument(
        "--no-naive",
        action="store_true",
        help="--zoo: only the routes against their predictions (not the naive route at --batch)",
    )
    p.add_argument(
        "--fit",
        action="store_true",
        help="--zoo: fit the planner's cost model to the routes' timings and print its table",
    )
    p.add_argument(
        "--fit-method",
        choices=("minimax", "log"),
        default="minimax",
        help="--fit: minimax (least worst prediction factor; the fastest route of each "
        "network and batch predicted below every route over 1.2x slower) or log (least "
        "squares of the log prediction errors)",
    )
    p.add_argument(
        "--fit-write",
        action="store_true",
        help="--fit: also write the fitted table into slp/_src/costs.py",
    )
    p.add_argument(
        "--fit-from",
        type=Path,
        nargs="+",
        default=None,
        help="--zoo --fit: refit from the timings recorded in these results files (nothing is "
        "timed; the work is counted by the current planner)",
    )
    p.add_argument("--seed", type=cli.non_negative, default=0, help="seed of weights and inputs")
    cli.add_out_option(p)
    p.add_argument("--worker", nargs=2, metavar=("ROUTE", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.check_images is None:  # a timed batch size, so its executables are reused
        args.check_images = min([b for b in args.batches if b >= 8] or [max(args.batches)])
    if args.variant_batches is None:
        args.variant_batches = list(args.batches)
    if min(args.batches) < 1 or args.repeats < 1 or args.chunk_size < 1:
        raise ValueError("--batches, --repeats and --chunk-size must be >= 1")
    if args.model != "twoconv" and (args.checkpoint or args.data != "random" or args.tiny):
        raise ValueError("--checkpoint, --data mnist and --tiny are for --model twoconv")
    if args.zoo and (args.checkpoint or args.data != "random" or args.isolate):
        raise ValueError("--checkpoint, --data mnist and --isolate are not for --zoo")
    if args.batch < 1 or args.naive_batch < 1:
        raise ValueError("--batch and --naive-batch must be >= 1")
    if min(args.route_batches) < 1 or args.route_repeats < 1:
        raise ValueError("--route-batches and --route-repeats must be >= 1")
    if (args.fit or args.fit_from or args.fit_write or args.no_naive) and not args.zoo:
        raise ValueError("--fit, --fit-from, --fit-write and --no-naive are for --zoo")
    if (args.fit_from or args.fit_write) and not args.fit:
        raise ValueError("--fit-from and --fit-write go with --fit")
    if args.skip_factor is None:
        args.skip_factor = 100.0 if args.fit else 10.0
    return args


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _header(args: argparse.Namespace, dev, jax) -> dict[str, Any]:
    """The ``config`` and ``machine`` records every results file of this script starts with."""
    return {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "device": f"{dev.device_kind} ({dev.platform})",
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "jax_version": jax.__version__,
            "load_at_start": _load(),
        },
    }


def _free_memory_bytes(jax) -> int:
    dev = jax.devices()[0]
    if dev.platform != "cpu":
        stats = dev.memory_stats() or {}
        return int(stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0))
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def build(args):
    """The network ``f(x)`` (one example), the model, its weights and the inputs (all sizes)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from lab import analysis
    from slp.models import QNetwork, TwoConv, as_single_example

    if args.model == "qnetwork":
        model, shape = QNetwork(num_actions=6), (84, 84, 4)
    elif args.model == "resnet8":
        import zoo

        model, shape = zoo.resnet8_module(), (32, 32, 3)
    elif args.tiny:
        model, shape = TwoConv(num_classes=10, features=(2, 3), hidden=8), (12, 12, 1)
    else:
        model, shape = TwoConv(num_classes=10), (28, 28, 1)
    kx, kp, kb = jax.random.split(jax.random.key(args.seed), 3)
    if args.checkpoint is not None:
        from slp.training import TrainConfig, load_checkpoint

        meta = json.loads(args.checkpoint.with_suffix(".json").read_text())
        config = TrainConfig.from_dict(meta["config"])
        params, _ = load_checkpoint(args.checkpoint, config=config)
        model = TwoConv(
            num_classes=config.num_classes, features=config.features, hidden=config.hidden
        )
        shape = tuple(config.input_shape)
    else:
        params = analysis.with_random_biases(model.init(kp, jnp.zeros((1,) + shape)), kb)
    n = max(args.batches)
    if args.data == "mnist":
        from slp.training import load_mnist_float

        images, _ = load_mnist_float("test", download=False, limit=n)
        reps = -(-n // len(images))
        x = jnp.asarray(np.concatenate([images] * reps)[:n])
    else:
        x = jax.random.uniform(kx, (n,) + shape, jnp.float32)
    return as_single_example(model, params), model, params, x


def in_float64(model, params, x):
    """``f`` and ``x`` in float64 (call under ``jax.enable_x64(True)``)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from slp.models import as_single_example

    params64 = jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), params)
    return as_single_example(model, params64), jnp.asarray(np.asarray(x), jnp.float64)


def insens_route(args, f, name: str):
    """`slp.insens` for route ``insens`` or ``insens:PRECISION``."""
    import slp

    precision = name.split(":", 1)[1] if ":" in name else None
    return slp.insens(f, chunk_size=args.chunk_size, route=args.insens_route, precision=precision)


def routes(f):
    """Per-example functions of every route."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from slp._src import network as net

    HIGHEST = lax.Precision.HIGHEST  # also here: TF32 would make the reference inexact

    def naive(x):
        program = net.trace(f, x)
        state = net.forward(program, x)
        frozen = net.frozen_network(program, state)
        jac = jax.jacfwd(lambda xp: frozen(xp).relu_inputs)(x)
        total, count = jnp.zeros_like(x), 0
        for j, v in zip(jac, state.activities, strict=True):
            axes = tuple(range(v.ndim, j.ndim))
            sq = jnp.sum(j * j, axis=axes)
            off = v <= 0
            coef = jnp.where(off & (sq > 0), v / jnp.where(sq > 0, sq, 1), 0)
            total = total + jnp.tensordot(coef, j, axes=v.ndim, precision=HIGHEST)
            count = count + jnp.sum(off)
        return jnp.where(count > 0, total / jnp.maximum(count, 1), 0)

    return {"naive": naive, "forward": f}


def _rss(field: str) -> int | None:
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) in bytes, Linux only."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Resets the process's peak RSS (``VmHWM``) to its current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def measure(
    fn, x, *, repeats: int, limit: float, rss: bool = False, keep_output: bool = False
) -> dict[str, Any]:
    """Compiles ``jit(vmap(fn))`` for ``x``, reads XLA's memory analysis, times it.

    With ``rss``, also the peak RSS of the calls above the RSS before them (meaningful in a
    fresh process only: memory freed by earlier cases is reused without showing up). With
    ``keep_output``, the first call's output under ``_output``.
    """
    import jax

    batched = jax.jit(jax.vmap(fn))
    t0 = time.perf_counter()
    try:
        compiled = batched.lower(x).compile()
    except Exception as err:  # e.g. a matmul precision this platform does not have
        msg = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return {"skipped": f"does not compile: {msg[:200]}"}
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    temp = int(getattr(mem, "temp_size_in_bytes", 0) or 0)
    out_b = int(getattr(mem, "output_size_in_bytes", 0) or 0)
    arg_b = int(getattr(mem, "argument_size_in_bytes", 0) or 0)
    res: dict[str, Any] = {
        "compile_s": compile_s,
        "xla_temp_bytes": temp,
        "xla_peak_bytes": temp + out_b + arg_b,
        "xla_temp_bytes_per_image": temp / x.shape[0],
    }
    if temp + out_b + arg_b > limit:
        res["skipped"] = f"XLA estimate {(temp + out_b + arg_b) / 2**30:.1f} GiB > limit"
        return res
    dev = jax.devices()[0]
    on_gpu = dev.platform != "cpu"
    # Peak RSS of the calls alone (not of compiling): reset the high-water mark first.
    rss_ok = rss and _reset_peak_rss()
    rss_base = _rss("VmRSS")
    res["load_before"] = _load()
    t0 = time.perf_counter()
    out = jax.block_until_ready(compiled(x))
    res["first_call_s"] = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(x))
        runs.append(time.perf_counter() - t0)
    res["load_after"] = _load()
    res["runs_s"] = runs
    res["median_s"] = statistics.median(runs)
    res["images_per_s"] = x.shape[0] / res["median_s"]
    if rss_ok and rss_base is not None:
        res["rss_peak_delta_bytes"] = _rss("VmHWM") - rss_base
        res["rss_peak_delta_bytes_per_image"] = res["rss_peak_delta_bytes"] / x.shape[0]
    if on_gpu:  # the process's peak: per case only with --isolate
        res["device_peak_bytes"] = (dev.memory_stats() or {}).get("peak_bytes_in_use")
    if keep_output:
        res["_output"] = out
    del out
    res["_compiled"] = compiled
    return res


def worker(args) -> None:
    """One case in a fresh process: prints its measurement as JSON."""
    import jax

    route, batch = args.worker[0], int(args.worker[1])
    f, _, _, x_all = build(args)
    x = x_all[:batch]
    fn = insens_route(args, f, route) if route.startswith("insens") else routes(f)[route]
    jax.block_until_ready(x)
    limit = _memory_limit(args, jax)
    res = measure(fn, x, repeats=args.repeats, limit=limit, rss=True)
    res.pop("_compiled", None)
    print("WORKER_RESULT " + json.dumps(res))


def _memory_limit(args: argparse.Namespace, jax) -> float:
    """Bytes a case's XLA estimate may take: --max-memory-gb, or half the free memory."""
    return args.max_memory_gb * 2**30 if args.max_memory_gb else _free_memory_bytes(jax) / 2


def _machine_line(dev, jax) -> str:
    """The start of the first progress line: device, jax version, load average, CPUs."""
    return (
        f"device {dev.device_kind} ({dev.platform}); jax {jax.__version__}; load average "
        f"{_load()} on {os.cpu_count()} CPUs"
    )


def _network_record(args, f, x_all) -> dict[str, Any]:
    """The network's input shape, active fraction per ReLU layer and `slp.insens`'s route.

    The active fractions are over the first 256 inputs (all of them, if fewer).
    """
    import jax
    import jax.numpy as jnp
    import numpy as np

    import slp

    plan = slp.insens_plan(f, x_all[0], chunk_size=args.chunk_size, route=args.insens_route)
    acts = jax.jit(jax.vmap(slp.activation_pattern(f)))(x_all[: min(256, len(x_all))])
    active = [float(jnp.mean(a)) for a in acts]
    n_all = sum(int(np.prod(a.shape[1:])) for a in acts)
    active_all = sum(float(jnp.sum(a)) for a in acts) / (n_all * acts[0].shape[0])
    return {
        "input_shape": list(x_all.shape[1:]),
        "active_fraction_per_layer": active,
        "active_fraction_all": active_all,
        "insens_route": plan.route,
    }


def _route_functions(args, f) -> tuple[list[str], dict[str, Any]]:
    """The names of the routes timed (with ``insens:P`` per --precisions) and their
    per-example functions."""
    fns = routes(f)
    names = [r for r in ROUTES if r in args.routes]
    if "insens" in names:
        names += [f"insens:{p}" for p in args.precisions]
    for name in names:
        if name.startswith("insens"):
            fns[name] = insens_route(args, f, name)
    return names, fns


def _measure_cases(args, argv, names, fns, x_all, limit, cases, save) -> dict:
    """Every route at every batch size it is timed at (--batches; --variant-batches for the
    ``insens:P`` variants), in this process or (--isolate) one process per case.

    Results go into ``cases`` by ``"route@batch"``; ``save()`` is called after every case
    measured.

    Returns:
      the executables by ``(route, batch)`` (None where measured in another process), for
      the exactness check.
    """
    compiled: dict[tuple[str, int], Any] = {}
    for batch in sorted(set(args.batches) | set(args.variant_batches)):
        x = x_all[:batch]
        for name in names:
            key = f"{name}@{batch}"
            if batch not in (args.variant_batches if ":" in name else args.batches):
                continue
            if name == "naive" and batch > args.naive_max_batch:
                cases[key] = {"skipped": f"batch > --naive-max-batch {args.naive_max_batch}"}
                print(f"{key}: skipped ({cases[key]['skipped']})", flush=True)
                continue
            if args.isolate:
                res = _isolated(argv, name, batch)
            else:
                res = measure(fns[name], x, repeats=args.repeats, limit=limit)
            compiled[(name, batch)] = res.pop("_compiled", None)
            cases[key] = res
            save()
            print(_case_line(key, res), flush=True)
    return compiled


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark; returns the dict written to bench_insens.json (with ``--zoo``:
    bench_insens_zoo_<platform>.json)."""
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    if args.zoo:
        return run_zoo(args, argv)
    import jax

    from slp.data._files import atomic_writer

    f, model, params, x_all = build(args)
    dev = jax.devices()[0]
    network = _network_record(args, f, x_all)
    limit = _memory_limit(args, jax)
    print(
        f"{_machine_line(dev, jax)}; input {tuple(x_all.shape[1:])}; insens route "
        f"{network['insens_route']}; active fraction per ReLU layer "
        f"{[round(a, 3) for a in network['active_fraction_per_layer']]} "
        f"(all {network['active_fraction_all']:.3f}); memory limit {limit / 2**30:.1f} GiB",
        flush=True,
    )
    names, fns = _route_functions(args, f)
    cases: dict[str, dict[str, Any]] = {}
    result: dict[str, Any] = {**_header(args, dev, jax), "network": network, "cases": cases}
    args.out.mkdir(parents=True, exist_ok=True)

    def save():  # after every case: a run cut short still leaves its numbers
        with atomic_writer(args.out / "bench_insens.json") as fh:
            fh.write(json.dumps(result, indent=2).encode())

    compiled = _measure_cases(args, argv, names, fns, x_all, limit, cases, save)
    naive_temp = max(
        [c.get("xla_temp_bytes_per_image", 0) for k, c in cases.items() if k.startswith("naive@")],
        default=0,
    )
    diffs = exactness(args, names, fns, compiled, model, params, x_all, limit, naive_temp)
    batches = sorted(set(args.batches) | set(args.variant_batches))
    ratios = {str(b): _ratios({n: cases.get(f"{n}@{b}", {}) for n in names}) for b in batches}
    result["machine"]["load_at_end"] = _load()
    result["exactness"] = diffs
    result["ratios"] = ratios
    _print_summary(cases, names, batches, ratios, diffs)
    save()
    return result


def _isolated(argv, name: str, batch: int) -> dict[str, Any]:
    """One case measured in a fresh process (``--isolate``): its result, or why it failed."""
    cmd = [sys.executable, __file__, *(argv or sys.argv[1:]), "--worker", name, str(batch)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = [s for s in proc.stdout.splitlines() if s.startswith("WORKER_RESULT ")]
    if not line:
        return {"skipped": f"worker failed: {proc.stderr[-500:]}"}
    return json.loads(line[-1][len("WORKER_RESULT ") :])


def _case_line(key: str, res: dict[str, Any]) -> str:
    """The progress line of one measured (or skipped) case."""
    if "skipped" in res:
        return f"{key}: skipped ({res['skipped']})"
    line = (
        f"{key}: {res['images_per_s']:.4g} images/s, XLA temp "
        f"{res['xla_temp_bytes_per_image'] / 2**20:.2f} MiB/image"
    )
    if "rss_peak_delta_bytes_per_image" in res:
        line += f", RSS peak +{res['rss_peak_delta_bytes_per_image'] / 2**20:.2f} MiB/image"
    if res.get("device_peak_bytes"):
        line += f", device peak {res['device_peak_bytes'] / 2**30:.2f} GiB"
    return line


def _ratios(c: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Speed and memory ratios between the routes of one batch size (cases by route)."""
    ips = {n: v["images_per_s"] for n, v in c.items() if "images_per_s" in v}
    r: dict[str, float] = {}
    if "insens" in ips and "naive" in ips:
        r["insens_vs_naive_speed"] = ips["insens"] / ips["naive"]
        for k in ("xla_temp_bytes_per_image", "rss_peak_delta_bytes_per_image"):
            if k in c["insens"] and k in c["naive"] and c["naive"][k]:
                r[f"insens_vs_naive_{k}"] = c["insens"][k] / c["naive"][k]
    if "insens" in ips and "forward" in ips:
        r["forward_vs_insens_speed"] = ips["forward"] / ips["insens"]
    for n in ips:
        if ":" in n and "insens" in ips:
            r[f"{n}_vs_insens_speed"] = ips[n] / ips["insens"]
    return r


def _print_summary(cases, names, batches, ratios, diffs) -> None:
    """The table of every case, the ratios and the exactness, on stdout."""
    print(f"\n{'batch':>6s} {'route':26s} {'images/s':>10s} {'XLA MiB/img':>12s}")
    for batch in batches:
        for name in names:
            c = cases.get(f"{name}@{batch}")
            if c is None:
                continue
            ips = f"{c['images_per_s']:10.4g}" if "images_per_s" in c else f"{'skipped':>10s}"
            mem = c.get("xla_temp_bytes_per_image")
            mem_s = f"{mem / 2**20:12.2f}" if mem is not None else f"{'-':>12s}"
            print(f"{batch:6d} {name:26s} {ips} {mem_s}")
        for k, v in ratios[str(batch)].items():
            print(f"{'':6s}   {k}: {v:.3g}")
    print(f"exactness on {diffs['images']} images (max |naive| {diffs['max_abs_naive']:.3g}):")
    for k, v in diffs.items():
        if k.startswith("max_abs_diff") or k.startswith("rel_err"):
            print(f"   {k}: {v:.3g}")


def exactness(
    args, names, fns, compiled, model, params, x_all, limit=float("inf"), naive_temp=0
) -> dict[str, Any]:
    """Every route's maps on the first images against the naive route (float32, float64).

    ``max_abs_diff[_P]``: ``slp.insens`` (at precision P) against the float32 naive
    route; ``rel_err_x64_R``: max |R - naive in float64| / max |naive in float64|.
    """
    import jax
    import numpy as np

    n = int(args.check_images)
    xc = x_all[:n]

    def run(name):
        sizes = [b for (m, b), exe in compiled.items() if m == name and exe is not None]
        sizes = [b for b in sizes if b >= n]
        if sizes:  # a timed executable: pad the check images up to its batch size
            b = min(sizes)
            return np.asarray(compiled[(name, b)](x_all[:b]))[:n]
        try:
            return np.asarray(jax.jit(jax.vmap(fns[name]))(xc))
        except Exception:  # a precision this platform does not have
            return None

    maps = {name: run(name) for name in names if name != "forward"}
    maps = {k: v for k, v in maps.items() if v is not None}
    ref = maps.get("naive")
    if ref is None:
        ref = np.asarray(jax.jit(jax.vmap(fns["naive"]))(xc))
    diffs: dict[str, Any] = {"images": n, "max_abs_naive": float(np.max(np.abs(ref)))}
    for name, m in maps.items():
        if name.startswith("insens"):
            suffix = name[len("insens") :].replace(":", "_")
            diffs[f"max_abs_diff{suffix}"] = float(np.max(np.abs(m - ref)))
    if args.no_x64_check:
        return diffs
    with jax.enable_x64(True):
        f64, x64 = in_float64(model, params, xc)
        naive64 = jax.jit(jax.vmap(routes(f64)["naive"]))
        # float64 doubles the naive route's memory: as many images at a time as fit
        step = int(max(1, min(8, limit // max(2 * naive_temp, 1))))
        ref64 = np.concatenate([np.asarray(naive64(x64[i : i + step])) for i in range(0, n, step)])
    scale = float(np.max(np.abs(ref64)))
    for name, m in maps.items():
        diffs[f"rel_err_x64_{name.replace(':', '_')}"] = float(np.max(np.abs(m - ref64))) / scale
    return diffs


def zoo_network(args, name: str, x_all, key, limit: float) -> dict[str, Any]:
    """One network of the zoo: its route, `slp.insens` and the naive route measured at
    ``--batch`` (unless ``--no-naive``), and every exact route against its prediction at
    every ``--route-batches`` size (`zoo_routes`)."""
    import jax
    import jax.numpy as jnp
    import zoo

    import slp

    model = zoo.ZOO[name](key, jnp.float32, small=args.tiny)
    x = x_all[tuple(model.input_shape)][: args.batch]
    plan = slp.insens_plan(model.f, x[0], chunk_size=args.chunk_size, route=args.insens_route)
    entry: dict[str, Any] = {"input_shape": list(model.input_shape), "route": plan.route}
    if not args.no_naive:
        entry.update(zoo_against_naive(args, model, x, limit))
        jax.clear_caches()
    entry["routes"] = zoo_routes(args, model, x_all)
    jax.clear_caches()  # compiled executables of earlier networks are not reused
    return entry


def zoo_against_naive(args, model, x, limit: float) -> dict[str, Any]:
    """`slp.insens` (its own route) and the naive route on ``x``: speed, memory, agreement."""
    import numpy as np

    entry: dict[str, Any] = {}
    ins = measure(
        insens_route(args, model.f, "insens"),
        x,
        repeats=args.repeats,
        limit=limit,
        keep_output=True,
    )
    b = min(args.naive_batch, len(x))
    while True:  # the naive route on fewer images where XLA's estimate is too large
        naive = measure(
            routes(model.f)["naive"],
            x[:b],
            repeats=args.repeats,
            limit=limit if b == 1 else limit / NAIVE_HEADROOM,
            keep_output=True,
        )
        if b == 1 or not naive.get("skipped", "").startswith("XLA estimate"):
            break
        b = max(1, b // 2)
    outputs = {}
    for key_, res in (("insens", ins), ("naive", naive)):
        res.pop("_compiled", None)
        if "_output" in res:
            outputs[key_] = np.asarray(res.pop("_output"))
        res["images"] = len(x) if key_ == "insens" else b
        entry[key_] = res
    if "images_per_s" in ins and "images_per_s" in naive:
        entry["speedup_vs_naive"] = ins["images_per_s"] / naive["images_per_s"]
    if naive.get("xla_temp_bytes_per_image"):
        entry["memory_vs_naive"] = (
            ins["xla_temp_bytes_per_image"] / naive["xla_temp_bytes_per_image"]
        )
    if len(outputs) == 2:  # float32 maps of the same images: agreement to rounding
        ref = outputs["naive"]
        scale = float(np.max(np.abs(ref))) or 1.0
        entry["max_rel_diff_vs_naive"] = float(np.max(np.abs(outputs["insens"][:b] - ref))) / scale
    return entry


def run_zoo(args, argv: list[str] | None = None) -> dict[str, Any]:
    """``--zoo``: every network of experiments/zoo.py (or ``--zoo-only``) on ``--batch``
    inputs drawn from one key (for each input shape); writes
    ``--out/bench_insens_zoo_<platform>.json`` and ``.md``."""
    import jax
    import jax.numpy as jnp
    import zoo

    from lab import analysis
    from slp._src.insens import device_flop_rate

    names = list(zoo.ZOO)
    if args.zoo_only is not None:
        names = [n.strip() for n in args.zoo_only.split(",") if n.strip()]
        unknown = [n for n in names if n not in zoo.ZOO]
        if unknown or not names:
            raise ValueError(f"unknown zoo network(s) {unknown}; choose from {list(zoo.ZOO)}")
    dev = jax.devices()[0]
    limit = _memory_limit(args, jax)
    kx, kw = jax.random.split(jax.random.key(args.seed))

    n_inputs = max([args.batch, *args.route_batches])

    class Inputs(dict):  # one batch per input shape, all from the key ``kx``
        def __missing__(self, shape):
            self[shape] = jax.random.uniform(kx, (n_inputs,) + shape, jnp.float32)
            return self[shape]

    x_all = Inputs()
    command = "python experiments/bench_insens.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    if args.fit_from is not None:  # refit from recorded timings: nothing is timed
        result = recorded_runs(args)
        return {**result, "fit": fit_report(args, result)}
    networks: dict[str, Any] = {}
    result: dict[str, Any] = {
        "command": command,
        **_header(args, dev, jax),
        "networks": networks,
    }
    # the matrix-product rate behind every prediction of this run (and of a --fit)
    result["machine"]["flop_rate"] = device_flop_rate()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"bench_insens_zoo_{dev.platform}"
    print(
        f"{_machine_line(dev, jax)}; batch {args.batch} (naive route: "
        f"{min(args.naive_batch, args.batch)}); memory limit {limit / 2**30:.1f} GiB",
        flush=True,
    )
    t_start = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        try:
            entry = zoo_network(args, name, x_all, kw, limit)
        except Exception as err:  # one network the engine cannot take: report, go on
            msg = (str(err).strip().splitlines() or [""])[0]
            entry = {"error": f"{type(err).__name__}: {msg[:300]}"}
        entry["wall_s"] = time.perf_counter() - t0
        networks[name] = entry
        analysis.write_json(stem.with_suffix(".json"), result)
        if not args.no_naive or "error" in entry:
            print(f"{name}: {_zoo_line(entry)}", flush=True)
        for line in _route_lines(name, entry):
            print(line, flush=True)
    result["machine"]["load_at_end"] = _load()
    result["wall_s"] = time.perf_counter() - t_start
    result["route_check"] = route_verdicts(networks)
    if args.fit:
        result["fit"] = fit_report(args, result)
    analysis.write_json(stem.with_suffix(".json"), result)
    table = zoo_table(result)
    analysis.write_text(stem.with_suffix(".md"), table)
    print("\n" + table)
    return result


def _route_lines(name: str, entry: dict[str, Any]) -> list[str]:
    """Progress lines of one network's routes: per batch size, measured (predicted) ms."""
    lines = []
    for batch, rec in (entry.get("routes") or {}).items():
        parts = []
        for r, v in rec["routes"].items():
            meas = f"{v['median_s'] * 1e3:.4g}" if "median_s" in v else "-"
            parts.append(f"{r} {meas} ({v['predicted_s'] * 1e3:.4g}) ms")
        lines.append(f"{name} @ {batch}: chosen {rec['chosen']}; " + ", ".join(parts))
    return lines


def _zoo_line(e: dict[str, Any]) -> str:
    if "error" in e:
        return f"error ({e['error']})"
    ins, naive = e["insens"], e["naive"]

    def speed(c):
        if "images_per_s" not in c:
            return f"skipped ({c.get('skipped')})"
        return (
            f"{c['images_per_s']:.4g} img/s on {c['images']}, XLA temp "
            f"{c['xla_temp_bytes_per_image'] / 2**20:.2f} MiB/img"
        )

    nan = float("nan")
    return (
        f"route {e['route']}, compile {ins.get('compile_s', nan):.1f} s; insens {speed(ins)}; "
        f"naive {speed(naive)}; speed-up {e.get('speedup_vs_naive', nan):.3g}, max rel diff "
        f"{e.get('max_rel_diff_vs_naive', nan):.2g}"
    )


def _zoo_cells(name: str, e: dict[str, Any]) -> list[str]:
    """The cells of one network's row of the ``--zoo`` table ("-" where not measured)."""
    if "error" in e:
        return [name, "", f"error: {e['error']}", *[""] * 9]
    ins, naive = e["insens"], e["naive"]

    def num(v, fmt):
        return "-" if v is None else format(v, fmt)

    def mib(c):
        v = c.get("xla_temp_bytes_per_image")
        return None if v is None else v / 2**20

    return [
        name,
        "x".join(str(n) for n in e["input_shape"]),
        e["route"],
        num(ins.get("compile_s"), ".1f"),
        num(ins.get("images_per_s"), ".4g"),
        num(naive.get("images_per_s"), ".4g"),
        str(naive["images"]),
        num(e.get("speedup_vs_naive"), ".3g"),
        num(mib(ins), ".3g"),
        num(mib(naive), ".3g"),
        num(e.get("memory_vs_naive"), ".2g"),
        num(e.get("max_rel_diff_vs_naive"), ".1e"),
    ]


def zoo_table(result: dict[str, Any]) -> str:
    """The markdown report of ``--zoo``: one row per network against the naive route (unless
    ``--no-naive``), then one row per network and batch size of every exact route."""
    from lab import analysis

    cfg, machine = result["config"], result["machine"]
    lines = [
        f"# Insens on the model zoo, {machine['device']}",
        "",
        f"Produced by `{result['command']}` in {result.get('wall_s', 0) / 60:.1f} minutes on "
        f"{machine['cpus']} CPUs (load average {machine['load_at_start']} at the start, "
        f"{machine.get('load_at_end')} at the end), jax {machine['jax_version']}. Random "
        f"weights (non-zero biases) and uniform inputs, the same for every network of one "
        f"input shape.",
        "",
    ]
    if not cfg.get("no_naive"):
        lines += [
            "## `slp.insens` against the naive route",
            "",
            f"`jax.jit(jax.vmap(slp.insens(f)))` on "
            f"{cfg['batch']} images, the naive route (`jax.jacfwd` of every pre-activation) on "
            f"the first {cfg['naive_batch']} or fewer (column 'naive n'). Images/s: median of "
            f"{cfg['repeats']} calls after a compiling one; compile: lowering and compiling "
            f"`slp.insens` for the batch; memory: XLA's temporary buffers per image; rel. diff: "
            f"max |insens - naive| / max |naive| on the naive route's images (float32).",
            "",
            *analysis.table(
                [
                    "network",
                    "input",
                    "route",
                    "compile s",
                    "insens img/s",
                    "naive img/s",
                    "naive n",
                    "speed-up",
                    "insens MiB/img",
                    "naive MiB/img",
                    "memory ratio",
                    "rel. diff",
                ],
                [_zoo_cells(name, e) for name, e in result["networks"].items()],
                align=["---"] * 3 + ["---:"] * 9,
            ),
        ]
        skipped = {
            f"{n} {r}": e[r]["skipped"]
            for n, e in result["networks"].items()
            for r in ("insens", "naive")
            if r in e and "skipped" in e[r]
        }
        lines += [""] + [f"- {k} skipped: {v}" for k, v in skipped.items()] + [""]
    lines += route_table(result)
    return "\n".join(lines).rstrip() + "\n"


def route_table(result: dict[str, Any]) -> list[str]:
    """Markdown lines of the route check: per network and batch size, every exact route's
    measured and predicted milliseconds per call, the chosen route against the fastest."""
    from lab import analysis

    cfg = result["config"]
    check = result.get("route_check") or {}
    rows = []
    verdicts = {(r["network"], r["batch"]): r for r in check.get("rows", [])}
    for name, e in result["networks"].items():
        for batch, rec in (e.get("routes") or {}).items():
            row = verdicts.get((name, int(batch)))
            cells = [name, batch, rec["chosen"], row["fastest"] if row else "-"]
            ratio = row and row["chosen_vs_fastest"]
            cells.append(f"{ratio:.2f}" if ratio else "-")
            cells.append(f"{row['best_possible']:.2f}" if row and row["best_possible"] else "-")
            for r in ("cone", "probes", "dense"):
                v = rec["routes"].get(r)
                if v is None:
                    cells.append("does not apply")
                elif "median_s" in v:
                    cells.append(f"{v['median_s'] * 1e3:.3g} ({v['predicted_s'] * 1e3:.3g})")
                else:
                    cells.append(f"not timed ({v['predicted_s'] * 1e3:.3g})")
            rows.append(cells)
    worst_c, worst_p = check.get("worst_chosen_vs_fastest"), check.get("worst_prediction")
    verdict = (
        "every chosen route within 1.2x of the fastest and every prediction within 3x"
        if not check.get("failures")
        else f"{len(check['failures'])} failure(s):"
    )
    lines = [
        "## Every exact route: measured (predicted) ms per call",
        "",
        f"`jax.jit(jax.vmap(slp.insens(f, route=r)))` on the first B images, compile "
        f"excluded: median of {cfg.get('route_repeats')} calls per route, the routes of one "
        f"network and batch size taking turns; in brackets `slp.insens_plan(f, x, "
        f"batch=B)`'s predicted seconds per call. A route predicted more than "
        f"{cfg.get('skip_factor')}x slower than the fastest prediction (and over "
        f"{ALWAYS_TIMED_S * 1e3:g} ms) is not timed. "
        f"chosen: the route `slp.insens(f)` runs at that batch size (`insens_plan(f, x, "
        f"batch=B).route`); chosen/fastest: its measured time over the fastest's; best one "
        f"route: the least, over the routes, of a route's worst chosen/fastest at both batch "
        f"sizes (what a choice blind to the batch size could at best do).",
        "",
        *analysis.table(
            [
                "network",
                "B",
                "chosen",
                "fastest",
                "chosen/fastest",
                "best one route",
                "cone",
                "probes",
                "dense",
            ],
            rows,
            align=["---"] * 4 + ["---:"] * 5,
        ),
        "",
    ]
    if worst_c is not None:
        lines.append(
            f"Worst chosen/fastest {worst_c:.3g}; worst prediction off by {worst_p:.3g}x: "
            + verdict
        )
    lines += [f"- {line}" for line in check.get("failures", [])]
    if result.get("fit"):
        fit = result["fit"]
        lines += [
            "",
            "## Cost model fitted to these timings (`--fit`)",
            "",
            "```python",
            *[f"{k}: {v:.4g}" for k, v in fit["coefficients"].items()],
            "```",
            "",
            f"With them: worst chosen/fastest {_ratio(fit['check']['worst_chosen_vs_fastest'])}, "
            f"worst prediction off by {fit['check']['worst_prediction']:.3g}x, "
            f"{len(fit['check']['failures'])} failure(s).",
        ]
    return lines


# ----------------------------------------------------------------------------------
# --zoo: every exact route of every network, predicted against measured.


def time_interleaved(
    fns: dict[str, Any], x, *, repeats: int, max_call_s: float
) -> dict[str, dict[str, Any]]:
    """Wall time of one call of each compiled function on ``x``, the functions taking turns.

    Every round calls each function once, starting one further along the list each round,
    so that a slow spell of a shared machine falls on all of them alike. A function whose
    first call (after compiling) took more than ``max_call_s`` is timed by that call only.

    Returns:
      name -> ``runs_s`` (every timed call), ``median_s`` and ``cpu_median_s`` (the median
      CPU time of this process, all threads, per call: what a busy machine inflates least).
    """
    import jax

    runs: dict[str, list[float]] = {n: [] for n in fns}
    cpu: dict[str, list[float]] = {n: [] for n in fns}

    def call(n):
        c0, t0 = time.process_time(), time.perf_counter()
        jax.block_until_ready(fns[n](x))
        runs[n].append(time.perf_counter() - t0)
        cpu[n].append(time.process_time() - c0)

    for n in fns:  # first calls: allocations, thread pools
        call(n)
    names = [n for n in fns if runs[n][0] <= max_call_s]
    for n in names:
        runs[n].clear()
        cpu[n].clear()
    for rep in range(repeats if names else 0):
        for n in names[rep % len(names) :] + names[: rep % len(names)]:
            call(n)
    return {
        n: {
            "runs_s": r,
            "median_s": statistics.median(r),
            "cpu_median_s": statistics.median(cpu[n]),
        }
        for n, r in runs.items()
    }


ALWAYS_TIMED_S = 0.05
"""`zoo_routes`: a route predicted to take less than this (seconds per call) is timed however
much slower than the fastest prediction (a fit needs the cheap calls it would mispredict)."""


def zoo_routes(args, model, x_all) -> dict[str, Any]:
    """Every exact route of one zoo network at every ``--route-batches`` size: predicted
    (`slp.insens_plan`) and measured seconds per call, the chosen route against the fastest.

    A route predicted more than ``--skip-factor`` times slower than the fastest prediction,
    and over `ALWAYS_TIMED_S`, is not measured (with predictions within 3x, it cannot be the
    fastest).
    """
    import jax

    import slp

    out: dict[str, Any] = {}
    for batch in args.route_batches:
        x = x_all[tuple(model.input_shape)][:batch]
        plan = slp.insens_plan(model.f, x[0], chunk_size=args.chunk_size, batch=batch)
        least = min(c.seconds for c in plan.costs.values())
        rec: dict[str, Any] = {"chosen": plan.route, "routes": {}}
        fns = {}
        for r, c in plan.costs.items():
            rec["routes"][r] = {"predicted_s": c.seconds, "work": c.work}
            if c.seconds > max(args.skip_factor * least, ALWAYS_TIMED_S) and r != plan.route:
                rec["routes"][r]["skipped"] = (
                    f"predicted {c.seconds / least:.3g}x the fastest prediction"
                )
                continue
            fn = jax.jit(jax.vmap(slp.insens(model.f, chunk_size=args.chunk_size, route=r)))
            t0 = time.perf_counter()
            fns[r] = fn.lower(x).compile()
            rec["routes"][r]["compile_s"] = time.perf_counter() - t0
        rec["load_before"] = _load()
        timed = time_interleaved(fns, x, repeats=args.route_repeats, max_call_s=args.max_call_s)
        rec["load_after"] = _load()
        for r, t in timed.items():
            rec["routes"][r].update(t)
        out[str(batch)] = rec
        del fns, timed
        jax.clear_caches()
    return out


def route_verdicts(
    networks: dict[str, Any],
    *,
    coefficients=None,
    speed: float = 1.0,
    slack: float = 1.2,
    error: float = 3.0,
) -> dict[str, Any]:
    """The chosen route against the fastest measured, and every prediction against its
    measurement, for every network and batch size of a ``--zoo`` run.

    Args:
      networks: the run's ``networks`` (each with ``routes`` from `zoo_routes`).
      coefficients: None: the plan's own choice and predictions; else the choice and
        predictions these coefficients would give (`slp._src.costs`), from the recorded work.
      speed: with ``coefficients``: this machine's matrix-product rate over the
        calibration machine's.
      slack: the chosen route may take up to this many times the fastest's time.
      error: a prediction may be off by up to this factor either way.

    Returns:
      ``rows`` (network, batch, chosen, fastest, their time ratio, the worst prediction
      ratio, and ``best_possible``: the least, over the routes timed at every batch size,
      of a route's worst ratio to the fastest: what any one choice for all batch sizes
      could reach), ``failures`` (one line each) and the worst ratios.
    """
    from slp._src import costs

    rows, failures = [], []
    for name, entry in networks.items():
        if "error" in entry:
            failures.append(f"{name}: {entry['error']}")
        best = _best_possible(entry.get("routes") or {})
        for batch, rec in (entry.get("routes") or {}).items():
            routes = rec["routes"]
            if coefficients is None:
                chosen = rec["chosen"]
                pred = {r: v["predicted_s"] for r, v in routes.items()}
            else:
                work = {r: v["work"] for r, v in routes.items()}
                chosen = costs.choose(work, batch=int(batch), coefficients=coefficients)
                pred = {
                    r: costs.predict_seconds(w, int(batch), coefficients=coefficients, speed=speed)
                    for r, w in work.items()
                }
            meas = {r: v["median_s"] for r, v in routes.items() if "median_s" in v}
            fastest = min(meas, key=meas.get)
            slower = meas[chosen] / meas[fastest] if chosen in meas else None
            off = {r: pred[r] / meas[r] for r in meas}
            worst = max(off, key=lambda r: abs(math.log(off[r])))
            rows.append(
                {
                    "network": name,
                    "batch": int(batch),
                    "chosen": chosen,
                    "fastest": fastest,
                    "chosen_vs_fastest": slower,
                    "best_possible": best,
                    "predicted_vs_measured": off,
                    "worst_prediction": off[worst],
                }
            )
            if slower is None:
                failures.append(f"{name} at batch {batch}: chosen {chosen} was not timed")
            elif slower > slack:
                unavoidable = (
                    ""
                    if best is None or best <= slack
                    else (
                        f"; no route is within {slack}x at every batch size (the best: "
                        f"{best:.2f}x at worst)"
                    )
                )
                failures.append(
                    f"{name} at batch {batch}: chosen {chosen} takes {slower:.2f}x the "
                    f"fastest ({fastest}){unavoidable}"
                )
            failures += [
                f"{name} at batch {batch}: {r} predicted {v:.2f}x its measured time"
                for r, v in off.items()
                if not 1 / error <= v <= error
            ]
    return {
        "rows": rows,
        "failures": failures,
        # over the rows whose chosen route was timed (an untimed one is a failure line)
        "worst_chosen_vs_fastest": max(
            (r["chosen_vs_fastest"] for r in rows if r["chosen_vs_fastest"] is not None),
            default=None,
        ),
        "worst_prediction": max(
            (max(r["worst_prediction"], 1 / r["worst_prediction"]) for r in rows), default=None
        ),
    }


def _ratio(v: float | None) -> str:
    """A ratio for a report line: 3 significant digits, or "?" where none was measured."""
    return "?" if v is None else f"{v:.3g}"


def _best_possible(routes: dict[str, Any]) -> float | None:
    """The least worst ratio to the fastest, over the batch sizes of one network's
    ``routes`` records, of a route timed at all of them (None if none was)."""
    meas = [
        {r: v["median_s"] for r, v in rec["routes"].items() if "median_s" in v}
        for rec in routes.values()
    ]
    common = set.intersection(*(set(m) for m in meas)) if meas else set()
    if not common:
        return None
    return min(max(m[r] / min(m.values()) for m in meas) for r in common)


def _timed_calls(networks: dict[str, Any]):
    """``(label, batch, route record)`` of every route timed in a ``--zoo`` run; the label
    ``"<network> @ <batch>"`` names the calls that compete for one choice."""
    for name, entry in networks.items():
        for batch, rec in (entry.get("routes") or {}).items():
            for v in rec["routes"].values():
                if "median_s" in v:
                    yield f"{name} @ {batch}", int(batch), v


def fit_samples(networks: dict[str, Any]) -> list[tuple[dict[str, float], float]]:
    """``(work amounts of the call, measured seconds)`` of every route timed in a ``--zoo``
    run (`slp._src.costs.fit_coefficients`)."""
    from slp._src import costs

    return [(costs.amounts(v["work"], b), v["median_s"]) for _, b, v in _timed_calls(networks)]


def fit_groups(networks: dict[str, Any]) -> list[str]:
    """The label of every sample of `fit_samples`, in its order (`_timed_calls`)."""
    return [label for label, _, _ in _timed_calls(networks)]


def recount_work(args, networks: dict[str, Any], *, tiny: bool) -> None:
    """Replaces the recorded work of every route by the current planner's count (``--fit-from``:
    the timings of an earlier run, the work as counted now), on the networks of the run's
    size (``tiny``: its ``--tiny``)."""
    import jax
    import jax.numpy as jnp
    import zoo

    import slp

    for name, entry in networks.items():
        if not entry.get("routes"):
            continue
        model = zoo.ZOO[name.split(" #")[0]](jax.random.key(args.seed), jnp.float32, small=tiny)
        x = jnp.zeros(tuple(model.input_shape), jnp.float32)
        plan = slp.insens_plan(model.f, x, chunk_size=args.chunk_size)
        for rec in entry["routes"].values():
            rec["chosen"] = plan.route
            for r, v in rec["routes"].items():
                v["work"] = plan.costs[r].work


def recorded_runs(args) -> dict[str, Any]:
    """``--fit-from``: the runs recorded in the files, their work recounted (`recount_work`),
    as one run: the networks of the second file on are named ``"<name> #<file number>"``;
    the machine record says the highest load average at a start and the mean
    matrix-product rate."""
    runs = [json.loads(Path(f).read_text()) for f in args.fit_from]
    result = {**runs[0], "networks": {}}
    for k, run in enumerate(runs, 1):
        recount_work(args, run["networks"], tiny=run.get("config", {}).get("tiny", args.tiny))
        for name, entry in run["networks"].items():
            result["networks"][name if k == 1 else f"{name} #{k}"] = entry
    rates = [r["machine"].get("flop_rate") for r in runs]
    result["machine"] = {
        **runs[0]["machine"],
        "load_at_start": max((r["machine"]["load_at_start"] for r in runs), key=lambda v: v[0]),
        "flop_rate": None if None in rates else sum(rates) / len(rates),
    }
    result["command"] = " + ".join(dict.fromkeys(r["command"] for r in runs))
    return result


def fit_report(args, result: dict[str, Any]) -> dict[str, Any]:
    """``--fit``: new coefficients from the run's timings, the check they would pass, and
    the source of `slp._src.costs`'s table (printed; written into the module with --fit-write)."""
    import datetime

    import jax

    from slp._src import costs
    from slp._src.insens import device_flop_rate

    samples, names = fit_samples(result["networks"]), list(costs.COEFFICIENTS)
    if args.fit_method == "log":
        coef = costs.fit_coefficients(samples, names=names)
    else:
        groups = fit_groups(result["networks"])
        coef, _ = costs.fit_coefficients_minimax(samples, names=names, groups=groups)
    dev = jax.devices()[0]
    command = result["command"]
    if args.fit_from is not None:  # the timings' run, refitted by this one
        command = f"{command}, refitted by python experiments/bench_insens.py --zoo --fit "
        command += "--fit-from " + " ".join(str(f) for f in args.fit_from)
    calibration = {
        "command": command,
        "machine": f"{os.cpu_count()}-core {_cpu_model()} ({platform.machine()}, {dev.platform})",
        "date": datetime.date.today().isoformat(),
        "flop_rate": float(f"{result['machine'].get('flop_rate') or device_flop_rate():.4g}"),
        "load_average": result["machine"]["load_at_start"][0],
    }
    check = route_verdicts(result["networks"], coefficients=coef)
    source = costs.coefficients_source(coef, calibration)
    print(f"\nfitted on {len(fit_samples(result['networks']))} timed calls:\n{source}")
    print(
        f"with them: chosen route at most {_ratio(check['worst_chosen_vs_fastest'])}x the fastest, "
        f"predictions within {check['worst_prediction']:.3g}x; "
        f"{len(check['failures'])} failure(s)"
    )
    for line in check["failures"]:
        print("  " + line)
    if args.fit_write:
        write_coefficients(source)
        print(f"written into {costs.__file__}")
    return {"coefficients": coef, "calibration": calibration, "check": check}


def write_coefficients(source: str, path: Path | None = None) -> None:
    """Replaces the fitted table of `slp/_src/costs.py` (or of ``path``) between its BEGIN
    FITTED and END FITTED lines by ``source``."""
    from slp._src import costs

    path = Path(costs.__file__) if path is None else Path(path)
    text = path.read_text()
    begin, end = "# BEGIN FITTED", "# END FITTED"
    i, j = text.index(begin), text.index(end)
    head = text[i:].split("\n", 1)[0]
    path.write_text(text[:i] + head + "\n" + source + "\n" + text[j:])


def _cpu_model() -> str:
    """The CPU's model name (Linux), or "CPU"."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "CPU"


def exit_status(result: dict[str, Any]) -> int:
    """1 where a ``--zoo`` run's route check failed (a chosen route more than 1.2x slower
    than the fastest, or a prediction off by more than 3x), else 0."""
    return 1 if (result.get("route_check") or {}).get("failures") else 0


if __name__ == "__main__":
    sys.exit(exit_status(main()))

"""Throughput and peak memory of Insens: the naive jacfwd route, `slp.insens`, the forward pass.

Run:
    python experiments/bench_insens.py                  # CPU, 2 cores: about 4-6 minutes
    python experiments/bench_insens.py --isolate        # + peak RSS per case (subprocesses)
    python experiments/bench_insens.py --batches 64 1024 --precision-probe   # on a GPU

The full-size TwoConv (conv 5x5x32 -> max-pool -> conv 5x5x64 -> max-pool -> dense 1024
-> dense 10) on 28x28x1 inputs, the same weights and inputs for every route: random
weights with non-zero biases and uniform inputs by default, or a trained checkpoint
(``--checkpoint``) on MNIST test digits (``--data mnist``). Routes, each ``jax.jit`` of
``jax.vmap`` over the batch:

- ``naive``: ``jax.jacfwd`` of every ReLU layer's pre-activations of the switched network
  (every switched weight vector materialised), then eq. 8 as a weighted sum of rows;
- ``insens``: `slp.insens` (the route `slp.insens.insens_plan` picks);
- ``forward``: the network itself (logits).

Per route and batch size: images/s (median of ``--repeats`` timed calls after one
compiling call) and memory: XLA's compiled memory analysis (temporary buffers, per
image) and the peak RSS during the calls above the RSS before them (the high-water
mark is reset after compiling; meaningful per case with ``--isolate``, which runs each
case in a fresh process); on a GPU also the device's peak bytes in use (per process).
A case whose XLA estimate exceeds ``--max-memory-gb`` is skipped. `slp.insens` is
checked against the naive route (max abs difference) on the first ``--check-images``
images. JAX uses the GPU when one is present; the matrix products run at the highest
precision (no TF32). ``--precision-probe`` also times `slp.insens` with default matmul
precision (inexact on GPUs: TF32) to show what the highest precision costs.

Writes --out/bench_insens.json (default results/) and prints a table with the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROUTES = ("naive", "insens", "forward")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64, 1024])
    p.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per case (median)")
    p.add_argument("--chunk-size", type=int, default=128, help="slp.insens chunk_size")
    p.add_argument("--insens-route", default="auto", choices=("auto", "cone", "probes"))
    p.add_argument(
        "--max-memory-gb",
        type=float,
        default=None,
        help="skip cases whose XLA estimate is larger (default: half the free memory)",
    )
    p.add_argument(
        "--naive-max-batch",
        type=int,
        default=256,
        help="skip the naive route above this batch size (it needs ~113 MiB per image)",
    )
    p.add_argument("--checkpoint", type=Path, default=None, help="trained TwoConv .msgpack")
    p.add_argument("--data", choices=("random", "mnist"), default="random")
    p.add_argument("--isolate", action="store_true", help="measure each case in a subprocess")
    p.add_argument(
        "--precision-probe",
        action="store_true",
        help="also time slp.insens with default matmul precision (inexact on GPU)",
    )
    p.add_argument(
        "--check-images",
        type=int,
        default=None,
        help="images for the exactness check (default: the smallest batch size >= 8)",
    )
    p.add_argument("--tiny", action="store_true", help="tiny network (smoke test)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=Path("results"))
    p.add_argument("--worker", nargs=2, metavar=("ROUTE", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.check_images is None:  # a timed batch size, so its executables are reused
        args.check_images = min([b for b in args.batches if b >= 8] or [max(args.batches)])
    if min(args.batches) < 1 or args.repeats < 1 or args.chunk_size < 1:
        raise ValueError("--batches, --repeats and --chunk-size must be >= 1")
    return args


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


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
    """The network ``f(x)`` (one example), its weights and a batch of inputs for each size."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from slp.models import TwoConv, as_single_example

    if args.tiny:
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
        params = model.init(kp, jnp.zeros((1,) + shape))
        leaves, tree = jax.tree.flatten_with_path(params)
        keys = iter(jax.random.split(kb, len(leaves)))
        params = jax.tree.unflatten(
            tree,
            [
                p + 0.05 * jax.random.normal(next(keys), p.shape, p.dtype)
                if "bias" in jax.tree_util.keystr(path)
                else p
                for path, p in leaves
            ],
        )
    n = max(args.batches)
    if args.data == "mnist":
        from slp.training import load_mnist_float

        images, _ = load_mnist_float("test", download=False, limit=n)
        reps = -(-n // len(images))
        x = jnp.asarray(np.concatenate([images] * reps)[:n])
    else:
        x = jax.random.uniform(kx, (n,) + shape, jnp.float32)
    return as_single_example(model, params), params, x


def routes(f):
    """Per-example functions of every route."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from slp import network as net

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


@contextlib.contextmanager
def default_precision():
    """Matmuls of the walker and of slp.insens at default precision (TF32 on GPUs)."""
    from jax import lax

    import slp.insens  # noqa: F401  (the module, for its precision constant)
    from slp import network as net

    mod = sys.modules["slp.insens"]
    saved = net.Rules.precision, mod._PRECISION
    net.Rules.precision, mod._PRECISION = lax.Precision.DEFAULT, lax.Precision.DEFAULT
    try:
        yield
    finally:
        net.Rules.precision, mod._PRECISION = saved


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


def measure(fn, x, *, repeats: int, limit: float, rss: bool = False) -> dict[str, Any]:
    """Compiles ``jit(vmap(fn))`` for ``x``, reads XLA's memory analysis, times it.

    With ``rss``, also the peak RSS of the calls above the RSS before them (meaningful in a
    fresh process only: memory freed by earlier cases is reused without showing up).
    """
    import jax

    batched = jax.jit(jax.vmap(fn))
    t0 = time.perf_counter()
    compiled = batched.lower(x).compile()
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
    del out
    res["_compiled"] = compiled
    return res


def worker(args) -> None:
    """One case in a fresh process: prints its measurement as JSON."""
    import jax

    route, batch = args.worker[0], int(args.worker[1])
    f, _, x_all = build(args)
    x = x_all[:batch]
    fns = routes(f)
    if route.startswith("insens"):
        import slp

        fns[route] = slp.insens(f, chunk_size=args.chunk_size, route=args.insens_route)
    jax.block_until_ready(x)
    limit = args.max_memory_gb * 2**30 if args.max_memory_gb else _free_memory_bytes(jax) / 2
    ctx = default_precision() if route == "insens_default_precision" else contextlib.nullcontext()
    with ctx:
        res = measure(fns[route], x, repeats=args.repeats, limit=limit, rss=True)
    res.pop("_compiled", None)
    print("WORKER_RESULT " + json.dumps(res))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark; returns the dict written to bench_insens.json."""
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return {}
    import jax
    import jax.numpy as jnp
    import numpy as np

    import slp
    from slp.data import atomic_writer

    sys_mod = sys.modules["slp.insens"]
    f, _, x_all = build(args)
    dev = jax.devices()[0]
    plan = sys_mod.insens_plan(f, x_all[0], chunk_size=args.chunk_size, route=args.insens_route)
    acts = jax.jit(jax.vmap(slp.activation_pattern(f)))(x_all[: min(256, len(x_all))])
    active = [float(jnp.mean(a)) for a in acts]
    n_all = sum(int(np.prod(a.shape[1:])) for a in acts)
    active_all = sum(float(jnp.sum(a)) for a in acts) / (n_all * acts[0].shape[0])
    limit = args.max_memory_gb * 2**30 if args.max_memory_gb else _free_memory_bytes(jax) / 2
    print(
        f"device {dev.device_kind} ({dev.platform}); load average {_load()} on "
        f"{os.cpu_count()} CPUs; input {tuple(x_all.shape[1:])}; insens route {plan.route}; "
        f"active fraction per ReLU layer {[round(a, 3) for a in active]} "
        f"(all {active_all:.3f}); memory limit {limit / 2**30:.1f} GiB",
        flush=True,
    )
    fns = routes(f)
    fns["insens"] = slp.insens(f, chunk_size=args.chunk_size, route=args.insens_route)
    names = [r for r in ROUTES if r in args.routes]
    if args.precision_probe and "insens" in names:
        names.append("insens_default_precision")
    cases: dict[str, dict[str, Any]] = {}
    compiled: dict[tuple[str, int], Any] = {}  # executables, reused by the exactness check
    result: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "device": f"{dev.device_kind} ({dev.platform})",
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "jax_version": jax.__version__,
            "load_at_start": _load(),
        },
        "network": {
            "input_shape": list(x_all.shape[1:]),
            "active_fraction_per_layer": active,
            "active_fraction_all": active_all,
            "insens_route": plan.route,
        },
        "cases": cases,
    }
    args.out.mkdir(parents=True, exist_ok=True)

    def save():  # after every case: a run cut short still leaves its numbers
        with atomic_writer(args.out / "bench_insens.json") as fh:
            fh.write(json.dumps(result, indent=2).encode())

    for batch in sorted(args.batches):
        x = x_all[:batch]
        for name in names:
            key = f"{name}@{batch}"
            if name == "naive" and batch > args.naive_max_batch:
                cases[key] = {"skipped": f"batch > --naive-max-batch {args.naive_max_batch}"}
                print(f"{key}: skipped ({cases[key]['skipped']})", flush=True)
                continue
            if args.isolate:
                cmd = [
                    sys.executable,
                    __file__,
                    *(argv or sys.argv[1:]),
                    "--worker",
                    name,
                    str(batch),
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                line = [s for s in proc.stdout.splitlines() if s.startswith("WORKER_RESULT ")]
                if not line:
                    cases[key] = {"skipped": f"worker failed: {proc.stderr[-500:]}"}
                    print(f"{key}: worker failed", flush=True)
                    continue
                res = json.loads(line[-1][len("WORKER_RESULT ") :])
            else:
                ctx = (
                    default_precision()
                    if name == "insens_default_precision"
                    else contextlib.nullcontext()
                )
                fn = fns["insens" if name.startswith("insens") else name]
                with ctx:
                    if name == "insens_default_precision":  # a fresh jit: new precision
                        fn = slp.insens(f, chunk_size=args.chunk_size, route=args.insens_route)
                    res = measure(fn, x, repeats=args.repeats, limit=limit)
            compiled[(name, batch)] = res.pop("_compiled", None)
            cases[key] = res
            save()
            if "skipped" in res:
                print(f"{key}: skipped ({res['skipped']})", flush=True)
            else:
                print(
                    f"{key}: {res['images_per_s']:.1f} images/s, XLA temp "
                    f"{res['xla_temp_bytes_per_image'] / 2**20:.2f} MiB/image"
                    + (
                        f", RSS peak +{res['rss_peak_delta_bytes_per_image'] / 2**20:.2f} MiB/image"
                        if "rss_peak_delta_bytes_per_image" in res
                        else ""
                    ),
                    flush=True,
                )
    # Exactness: slp.insens against the naive route on the first images (executables of
    # the timed cases where they have that batch size, else compiled here).
    xc = x_all[: args.check_images]

    def run(name, fn):
        exe = compiled.get((name, int(xc.shape[0])))
        return exe(xc) if exe is not None else jax.jit(jax.vmap(fn))(xc)

    ref = run("naive", fns["naive"])
    diffs = {"images": int(xc.shape[0]), "max_abs_naive": float(jnp.max(jnp.abs(ref)))}
    diffs["max_abs_diff"] = float(jnp.max(jnp.abs(run("insens", fns["insens"]) - ref)))
    if args.precision_probe:
        with default_precision():
            loose = slp.insens(f, chunk_size=args.chunk_size, route=args.insens_route)
            out = run("insens_default_precision", loose)
        diffs["max_abs_diff_default_precision"] = float(jnp.max(jnp.abs(out - ref)))
    ratios = {}
    for batch in sorted(args.batches):
        c = {n: cases.get(f"{n}@{batch}", {}) for n in names}
        r: dict[str, float] = {}
        if "images_per_s" in c.get("insens", {}) and "images_per_s" in c.get("naive", {}):
            r["insens_vs_naive_speed"] = c["insens"]["images_per_s"] / c["naive"]["images_per_s"]
            for k in ("xla_temp_bytes_per_image", "rss_peak_delta_bytes_per_image"):
                if k in c["insens"] and k in c["naive"] and c["naive"][k]:
                    r[f"insens_vs_naive_{k}"] = c["insens"][k] / c["naive"][k]
        if "images_per_s" in c.get("insens", {}) and "images_per_s" in c.get("forward", {}):
            r["forward_vs_insens_speed"] = (
                c["forward"]["images_per_s"] / c["insens"]["images_per_s"]
            )
        if "images_per_s" in c.get("insens_default_precision", {}) and "images_per_s" in c.get(
            "insens", {}
        ):
            r["default_vs_highest_precision_speed"] = (
                c["insens_default_precision"]["images_per_s"] / c["insens"]["images_per_s"]
            )
        ratios[str(batch)] = r
    result["machine"]["load_at_end"] = _load()
    result["exactness"] = diffs
    result["ratios"] = ratios
    print(f"\n{'batch':>6s} {'route':26s} {'images/s':>10s} {'XLA MiB/img':>12s}")
    for batch in sorted(args.batches):
        for name in names:
            c = cases.get(f"{name}@{batch}", {})
            ips = f"{c['images_per_s']:10.1f}" if "images_per_s" in c else f"{'skipped':>10s}"
            mem = c.get("xla_temp_bytes_per_image")
            mem_s = f"{mem / 2**20:12.2f}" if mem is not None else f"{'-':>12s}"
            print(f"{batch:6d} {name:26s} {ips} {mem_s}")
        for k, v in ratios[str(batch)].items():
            print(f"{'':6s}   {k}: {v:.3g}")
    print(
        f"exactness on {diffs['images']} images: max |insens - naive| = "
        f"{diffs['max_abs_diff']:.3g} (max |naive| {diffs['max_abs_naive']:.3g})"
        + (
            f"; default precision: {diffs['max_abs_diff_default_precision']:.3g}"
            if "max_abs_diff_default_precision" in diffs
            else ""
        )
    )
    save()
    return result


if __name__ == "__main__":
    main()

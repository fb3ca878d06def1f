"""Speed and compile time of `slp.insens` in two versions of slp, side by side on the zoo.

Run:
    git worktree add /tmp/slp-before <commit>     # a checkout of the version to compare with
    python experiments/bench_versions.py --before /tmp/slp-before       # 2 cores: ~30 min
    python experiments/bench_versions.py --before /tmp/slp-before --zoo-only mlp,resnet8

Each version (``--before`` and ``--after``: checkouts of this repository, ``--after`` by
default this one) runs in a worker process of its own. Both workers stay alive for the
whole run and take turns, so that both see the same load on a shared machine; timing two
versions in separate runs is not comparable on such a machine. Both run the networks of
this checkout's ``experiments/zoo.py`` (the same code for both versions), their weights
drawn from the same key, on the same uniform inputs. For each network and batch size:

- ``compile``: ``jax.jit(jax.vmap(slp.insens(model.f)))`` lowered and compiled
  ``--builds`` times with every cache of jax cleared first, the versions alternating (the
  time includes tracing and planning the route); the median is reported;
- ``call``: after one untimed call, timed calls per version, alternating which goes first,
  at least ``--rounds`` of them and more until each version's calls add up to
  ``--min-seconds`` (a call of a few milliseconds varies by tens of percent from one call
  to the next on a shared machine); the median is reported;
- the route each version's `slp.insens_plan` picks at that batch size (a version whose
  planner does not take the batch size picks one route for every batch size), and the
  maps' largest difference relative to the largest absolute value of the before version's.

Writes ``--out/bench_versions.json`` and ``.md`` (``bench_versions_<tag>`` with ``--tag``)
and exits with status 1 when a network's call is more than ``--tolerance`` times slower in
the after version (the ratio of medians).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab import cli

HERE = Path(__file__).resolve().parent
REPLY = "bench_versions> "  # marks the worker's replies among anything else it prints


def build_parser() -> argparse.ArgumentParser:
    """The options (no jax: ``--help`` answers at once)."""
    parser = cli.script_parser(__doc__, summary=False)
    parser.add_argument(
        "--before", type=Path, required=True, help="checkout of the version to compare with"
    )
    parser.add_argument(
        "--after", type=Path, default=HERE.parent, help="checkout of the version measured"
    )
    parser.add_argument(
        "--zoo-only", default=None, help="comma-separated zoo networks (default: all)"
    )
    parser.add_argument("--batches", type=cli.positive, nargs="+", default=[8], help="batch sizes")
    parser.add_argument(
        "--rounds", type=cli.positive, default=9, help="least timed calls per version"
    )
    parser.add_argument(
        "--min-seconds",
        type=cli.positive_float,
        default=2.0,
        help="least seconds of timed calls per version",
    )
    parser.add_argument("--builds", type=cli.positive, default=3, help="compilations per version")
    parser.add_argument("--tiny", action="store_true", help="the zoo's small networks")
    parser.add_argument(
        "--seed", type=cli.non_negative, default=0, help="key of weights and inputs"
    )
    parser.add_argument(
        "--tolerance",
        type=cli.positive_float,
        default=1.05,
        help="largest after/before call-time ratio",
    )
    parser.add_argument("--tag", default="", help="results file suffix (bench_versions_<tag>.json)")
    cli.add_out_option(parser)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


# ------------------------------------------------------------------- the worker process


def worker(tree: Path, tiny: bool, seed: int) -> None:
    """Serves build/call requests (one JSON object per line on stdin) with the slp of
    ``tree``; answers one line each, after `REPLY`."""
    import importlib.util

    # the version's own experiments/lab, which the zoo imports (this script loaded this
    # checkout's; a checkout without one keeps it)
    sys.path.insert(0, str(tree / "experiments"))
    for name in [m for m in sys.modules if m == "lab" or m.startswith("lab.")]:
        del sys.modules[name]
    import jax
    import jax.numpy as jnp
    import numpy as np

    import slp

    if not Path(slp.__file__).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"the worker of {tree} imported slp from {slp.__file__}")
    spec = importlib.util.spec_from_file_location("bench_versions_zoo", HERE / "zoo.py")
    zoo = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = zoo
    spec.loader.exec_module(zoo)

    def reply(obj):
        print(REPLY + json.dumps(obj), flush=True)

    reply({"slp": slp.__file__})
    compiled = x = None
    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "call":
            t0 = time.perf_counter()
            compiled(x).block_until_ready()
            reply({"seconds": time.perf_counter() - t0})
            continue
        jax.clear_caches()
        model = zoo.ZOO[req["name"]](jax.random.key(seed), jnp.float32, small=tiny)
        shape = (req["batch"], *model.input_shape)
        x = jax.random.uniform(jax.random.key(seed + 1), shape, jnp.float32)
        t0 = time.perf_counter()
        compiled = jax.jit(jax.vmap(slp.insens(model.f))).lower(x).compile()
        seconds = time.perf_counter() - t0
        np.save(req["maps"], np.asarray(compiled(x)))
        try:
            route = slp.insens_plan(model.f, x[0], batch=req["batch"]).route
        except TypeError:  # a version whose planner does not take the batch size
            route = slp.insens_plan(model.f, x[0]).route
        reply({"seconds": seconds, "route": route})


# -------------------------------------------------------------------- the coordinator


class Worker:
    """One version's worker process."""

    def __init__(self, tree: Path, args: argparse.Namespace):
        cmd = [sys.executable, __file__, "--before", str(tree), "--worker", str(tree)]
        cmd += ["--seed", str(args.seed)] + (["--tiny"] if args.tiny else [])
        # slp is imported with this script's first imports: the version's checkout goes
        # before everything else on the path of the worker's interpreter
        # (not its experiments/: a script there is named like a module of Python's own)
        path = [str(tree)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.slp = self.read()["slp"]

    def read(self) -> dict[str, Any]:
        for line in self.proc.stdout:
            if line.startswith(REPLY):
                return json.loads(line[len(REPLY) :])
        raise RuntimeError(f"the worker of {self.slp!r} stopped (its error is above)")

    def ask(self, **request) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()
        self.proc.stdout.close()


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def compare(workers: dict[str, Worker], name: str, batch: int, args, tmp: Path) -> dict:
    """One network at one batch size in both versions (module docstring)."""
    import numpy as np

    compiles: dict[str, list[float]] = {v: [] for v in workers}
    routes = {}
    for i in range(args.builds):
        for v in list(workers)[:: 1 if i % 2 == 0 else -1]:
            r = workers[v].ask(op="build", name=name, batch=batch, maps=str(tmp / f"{v}.npy"))
            compiles[v].append(r["seconds"])
            routes[v] = r["route"]
    maps = {v: np.load(tmp / f"{v}.npy") for v in workers}
    calls: dict[str, list[float]] = {v: [] for v in workers}
    for v in workers:
        workers[v].ask(op="call")
    i = 0
    while i < args.rounds or min(map(sum, calls.values())) < args.min_seconds:
        for v in list(workers)[:: 1 if i % 2 == 0 else -1]:
            calls[v].append(workers[v].ask(op="call")["seconds"])
        i += 1
    scale = float(np.max(np.abs(maps["before"]))) or 1.0
    row = {"network": name, "batch": batch, "routes": routes, "rounds": i}
    row["max_rel_diff"] = float(np.max(np.abs(maps["after"] - maps["before"]))) / scale
    for v in workers:
        row[f"{v}_call_s"], row[f"{v}_compile_s"] = _median(calls[v]), _median(compiles[v])
    row["call_ratio"] = row["after_call_s"] / row["before_call_s"]
    row["compile_ratio"] = row["after_compile_s"] / row["before_compile_s"]
    return row


def markdown(result: dict[str, Any]) -> str:
    """The report: one row per network and batch size."""
    from lab import analysis

    cfg = result["config"]
    rows = [
        [
            r["network"],
            r["batch"],
            " / ".join(r["routes"].values()),
            r["rounds"],
            f"{r['before_call_s'] * 1e3:.4g}",
            f"{r['after_call_s'] * 1e3:.4g}",
            f"{r['call_ratio']:.3f}" + (" slower" if r["call_ratio"] > cfg["tolerance"] else ""),
            f"{r['before_compile_s']:.2f}",
            f"{r['after_compile_s']:.2f}",
            f"{r['compile_ratio']:.2f}",
            f"{r['max_rel_diff']:.1e}",
        ]
        for r in result["results"]
    ]
    header = ["network", "batch", "route before / after", "calls"]
    header += ["call ms before", "call ms after"]
    header += ["call after/before", "compile s before", "compile s after"]
    header += ["compile after/before", "maps max rel diff"]
    lines = [
        "# slp.insens in two versions, side by side",
        "",
        f"Produced by `{cfg['command']}` (before: {cfg['before']}; after: {cfg['after']}). "
        f"Medians of the calls (at least {cfg['rounds']} per version and "
        f"{cfg['min_seconds']:g} s of them; the column calls) and of {cfg['builds']} "
        f"compilations per version, the versions taking turns; {cfg['cpus']} CPUs, load "
        f"average {cfg['load_start']:g} at the start and {cfg['load_end']:g} at the end. "
        "A call ratio over "
        f"{cfg['tolerance']:g} is marked slower.",
        "",
        *analysis.table(header, rows, align=["---"] * 3 + ["---:"] * 8),
    ]
    return "\n".join(lines) + "\n"


def _version(tree: Path) -> str:
    """``tree``'s commit (with ``+changes`` when its work tree differs), or its path."""
    git = ["git", "-C", str(tree)]
    try:
        head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        dirty = subprocess.run([*git, "status", "--porcelain"], capture_output=True).stdout
    except OSError:
        return str(tree)
    if head.returncode:
        return str(tree)
    return head.stdout.decode().strip() + ("+changes" if dirty.strip() else "")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the comparison; returns the dict written to bench_versions.json."""
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        worker(args.worker, args.tiny, args.seed)
        return {}
    sys.path.insert(0, str(HERE))
    import zoo

    from lab import analysis

    names = list(zoo.ZOO) if args.zoo_only is None else args.zoo_only.split(",")
    unknown = [n for n in names if n not in zoo.ZOO]
    if unknown:
        raise SystemExit(f"unknown zoo network(s) {unknown}; choose from {list(zoo.ZOO)}")
    for tree in (args.before, args.after):
        if not (tree / "slp" / "__init__.py").is_file():
            raise SystemExit(f"{tree} is not a checkout of slp (no slp/__init__.py)")
    load_start = os.getloadavg()[0]
    workers = {"before": Worker(args.before, args), "after": Worker(args.after, args)}
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in names:
                for batch in args.batches:
                    results.append(compare(workers, name, batch, args, Path(tmp)))
                    print(json.dumps(results[-1]), flush=True)
    finally:
        for w in workers.values():
            w.close()
    config = {k: getattr(args, k) for k in ("rounds", "min_seconds", "builds", "tolerance")}
    config.update(tiny=args.tiny, seed=args.seed)
    config.update(
        before=_version(args.before),
        after=_version(args.after),
        slp={v: w.slp for v, w in workers.items()},
        cpus=os.cpu_count(),
        load_start=round(load_start, 2),
        load_end=round(os.getloadavg()[0], 2),
        command="python experiments/bench_versions.py " + " ".join(argv or sys.argv[1:]),
    )
    result = {"results": results, "config": config}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "bench_versions" + (f"_{args.tag}" if args.tag else "")
    analysis.write_json(args.out / f"{stem}.json", result)
    analysis.write_text(args.out / f"{stem}.md", markdown(result))
    print(markdown(result))
    return result


def exit_status(result: dict[str, Any]) -> int:
    """1 when a network's call is more than ``--tolerance`` times slower after, else 0."""
    tol = result.get("config", {}).get("tolerance", float("inf"))
    return int(any(r["call_ratio"] > tol for r in result.get("results", [])))


if __name__ == "__main__":
    sys.exit(exit_status(main()))

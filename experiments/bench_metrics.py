"""Speed of every Quantus-named metric of `slp.metrics` against Quantus 0.6.0 on the same network.

Run:
    python experiments/bench_metrics.py --repeats 1    # 2 quiet CPU cores: 10 minutes
    python experiments/bench_metrics.py --repeats 1 --eigen-convolutions
    python experiments/bench_metrics.py                # two timed passes each: longer
    python experiments/bench_metrics.py --metrics PixelFlipping MaxSensitivity --images 64
    python experiments/bench_metrics.py --tiny --no-quantus --out /tmp/bench   # seconds

The trained 2CONV (``--checkpoint-dir``, trained first if missing) on the first
``--images`` MNIST test digits with their labels as targets and slp's gradient maps as the
attributions (the localisation masks: the digit, pixels above 0.5; Focus's quadrant
flags: a fixed pattern). Every metric runs with Quantus's defaults except where MNIST needs
another value (`settings`), the same options on both sides:

- slp: ``jax.jit(jax.vmap(evaluate))`` over ``--batch`` images at a time (one compiled
  function for all of them), explaining again with the registered ``gradient``; the first
  (compiling) call, on one batch, is timed apart;
- Quantus: the metric on the torch port of the same weights (the port of
  ``bench_attributions.py``), with its own batches of ``--quantus-batch`` and a torch
  autograd gradient as ``explain_func`` (SmoothMPRT calls ``quantus.explain`` with
  Captum's saliency whatever it is given). For the parameter randomisation tests slp
  re-initialises with a fresh flax initialisation, Quantus with torch's initialisers.
  Where Quantus on all images would take far longer than the rest of the run
  (`QUANTUS_IMAGES`, or ``--quantus-images``), it is timed on the first images only and
  its time scaled to all of them per image; the JSON says so (``quantus.images``,
  ``quantus.measured_s``, ``quantus.scaled``). Quantus first scores `WARMUP_IMAGES`
  images untimed, as slp's compiling call is timed apart.

XLA and torch are both limited to ``--threads``; XLA's YNNPACK convolutions use one of
them (``--eigen-convolutions``: XLA's Eigen ones, which use all). Other jobs may share the
CPU: the two libraries take turns, ``--repeats`` timed passes each (the fastest counts),
and the load average is recorded before every pass. Writes --out/bench_metrics.json
(``ratio`` = Quantus seconds / slp seconds, per Quantus class name) and
--out/bench_metrics.md, and prints the table. ``--tiny``: a small random network on a few
12x12 inputs, no checkpoint (the smoke test).
"""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from lab import cli  # no jax

# XLA reads its thread limit when jax starts, so jax (and slp) are imported in main().

EXPLAIN_AGAIN = (
    "MaxSensitivity",
    "AvgSensitivity",
    "LocalLipschitzEstimate",
    "RelativeInputStability",
    "FaithfulnessCorrelation",
    "RandomLogit",
    "MPRT",
    "SmoothMPRT",
)
"""The metrics that explain again or repeat runs: the issue's target there is 5x Quantus."""

QUANTUS_IMAGES = {
    name: 64
    for name in (
        "PixelFlipping",
        "FaithfulnessCorrelation",
        "FaithfulnessEstimate",
        "Monotonicity",
        "ROAD",
        "MaxSensitivity",
        "AvgSensitivity",
        "LocalLipschitzEstimate",
        "RelativeInputStability",
        "SmoothMPRT",
        "NonSensitivity",
    )
}
"""Images Quantus is timed on where all 256 would take far longer than the rest of the run:
one batch of its default 64 (Quantus runs every step on a whole batch, so its time per
image depends on the batch size: a subset smaller than a batch would overstate it)."""

WARMUP_IMAGES = 2
"""Images of Quantus's untimed warm-up call on each metric."""

CALL_OPTIONS = ("softmax",)
"""slp options that Quantus takes when a metric is called rather than built."""


def settings(name: str, *, tiny: bool) -> dict[str, Any]:
    """The options of metric ``name`` in this benchmark, the same for slp and Quantus.

    Quantus's defaults, except: TopKIntersection's ``k`` (its 1000 exceeds MNIST's 784
    pixels) and RandomLogit's ``num_classes`` (10, not ImageNet's 1000). ``tiny`` also
    shrinks the sample counts and patch sizes to the 12x12 inputs of the smoke test.
    """
    mnist = {"TopKIntersection": {"k": 100}, "RandomLogit": {"num_classes": 10}}
    if not tiny:
        return dict(mnist.get(name, {}))
    small = {
        "FaithfulnessCorrelation": {"nr_runs": 4, "subset_size": 10},
        "RegionPerturbation": {"patch_size": 4},
        "Selectivity": {"patch_size": 4},
        "ROAD": {"percentages": [10, 50, 90]},
        "MaxSensitivity": {"nr_samples": 3},
        "AvgSensitivity": {"nr_samples": 3},
        "LocalLipschitzEstimate": {"nr_samples": 3},
        "RelativeInputStability": {"nr_samples": 3},
        "SmoothMPRT": {"nr_samples": 3},
        "TopKIntersection": {"k": 10},
    }
    return {**mnist.get(name, {}), **small.get(name, {})}


def parse_args(argv: list[str] | None = None):
    p = cli.script_parser(__doc__, summary=False)
    cli.add_training_options(p)
    g = p.add_argument_group("benchmark")
    g.add_argument("--images", type=cli.positive, default=256, help="MNIST test images")
    g.add_argument("--batch", type=cli.positive, default=32, help="images per compiled slp call")
    g.add_argument("--quantus-batch", type=cli.positive, default=64, help="Quantus's batch_size")
    g.add_argument("--threads", type=cli.positive, default=2, help="CPU threads for XLA and torch")
    g.add_argument(
        "--repeats",
        type=cli.positive,
        default=2,
        help="timed passes per library (the fastest counts)",
    )
    g.add_argument("--metrics", nargs="+", default=None, help="Quantus names (default: all)")
    g.add_argument(
        "--quantus-images",
        nargs="+",
        default=None,
        metavar="NAME=N",
        help="time Quantus on the first N images of metric NAME and scale per image "
        "(default: QUANTUS_IMAGES; 'none': all images for every metric)",
    )
    g.add_argument(
        "--floor-images",
        type=cli.positive,
        default=32,
        help="images whose noisy copies time the explanations alone (0: not timed)",
    )
    g.add_argument(
        "--eigen-convolutions",
        action="store_true",
        help="XLA's multi-threaded Eigen convolutions instead of its YNNPACK ones, which run "
        "on one thread on CPU (lab.cli.YNN_DOTS_ONLY; maps differ by rounding only)",
    )
    g.add_argument("--no-quantus", action="store_true", help="time slp only")
    g.add_argument("--tiny", action="store_true", help="small random network (smoke test)")
    cli.add_out_option(g)
    args = p.parse_args(argv)
    for name in ("images", "batch", "quantus_batch", "threads", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.images % args.batch:
        p.error(f"--batch ({args.batch}) must divide --images ({args.images})")
    args.quantus_images = _subsets(p, args.quantus_images)
    return args


def _subsets(p, given: list[str] | None) -> dict[str, int]:
    """``--quantus-images`` as ``{name: images}``."""
    if given is None:
        return dict(QUANTUS_IMAGES)
    if given == ["none"]:
        return {}
    out = {}
    for item in given:
        name, _, n = item.partition("=")
        if not n.isdigit() or int(n) < 1:
            p.error(f"--quantus-images takes NAME=N with N >= 1, got {item!r}")
        out[name] = int(n)
    return out


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


class Problem:
    """The network, data and maps both libraries score.

    Attributes:
      model, params, random_params: the flax TwoConv, its weights and a fresh initialisation.
      x: ``(N, H, W, 1)`` float32 images; y: ``(N,)`` int32 targets.
      a: ``(N, H, W, 1)`` gradient maps; masks: ``(N, H, W)`` bool; flags: ``(N, 4)``.
      grad: the jitted ``(x batch, targets) -> gradient maps`` that made ``a``.
    """


def build_problem(args) -> Problem:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import slp
    from lab import analysis
    from slp.models import TwoConv, as_single_example

    pb = Problem()
    key = jax.random.key(args.seed)
    if args.tiny:
        pb.model = TwoConv(num_classes=10, features=(2, 3), hidden=8, kernel_size=3)
        kx, kp, kb = jax.random.split(key, 3)
        x = jax.random.uniform(kx, (args.images, 12, 12, 1), jnp.float32)
        pb.params = analysis.with_random_biases(pb.model.init(kp, x[:1]), kb)
        y = np.arange(args.images) % 10
    else:
        from slp.training import load_mnist_float

        ckpt = cli.checkpoint_from_options(args)
        pb.model, pb.params = ckpt.model, ckpt.params
        x, y = load_mnist_float("test", data_dir=args.data_dir, limit=args.images)
    pb.x, pb.y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.int32)
    pb.random_params = pb.model.init(jax.random.fold_in(key, 1), pb.x[:1])
    f = as_single_example(pb.model, pb.params)
    pb.grad = jax.jit(jax.vmap(lambda xi, t: slp.attribute(f, xi, "gradient", target=t)))
    pb.a = pb.grad(pb.x, pb.y)
    pb.masks = pb.x[..., 0] > 0.5
    pb.flags = jnp.asarray(np.resize([[1, 0, 0, 1], [0, 1, 1, 0]], (args.images, 4)))
    return pb


def slp_pass(name: str, pb: Problem, options: dict, args):
    """``(run, first)``: one pass of slp over all images, and the seconds of the first
    (compiling) call on one batch, made here."""
    import jax

    from slp import metrics
    from slp.models import as_single_example

    spec = metrics.get_metric(name)
    randomisation = "params" in spec.options
    arrays = {"params": pb.params, "random_params": pb.random_params} if randomisation else {}
    f = (lambda p, xi: pb.model.apply(p, xi[None])[0]) if randomisation else None
    if f is None:
        f = as_single_example(pb.model, pb.params)
    mask = pb.flags if name == "Focus" else pb.masks

    def one(x, a, t, m, k, arrays):
        return metrics.evaluate(name, f, x, a, target=t, mask=m, key=k, **options, **arrays)

    fn = jax.jit(jax.vmap(one, in_axes=(0, 0, 0, 0, 0, None)))
    keys = jax.random.split(jax.random.key(args.seed + 2), args.images)

    # The batches are cut once, before any timing: slicing five arrays per call costs more
    # than the cheapest metrics themselves.
    batches = [
        jax.block_until_ready((pb.x[s], pb.a[s], pb.y[s], mask[s], keys[s]))
        for s in (slice(i, i + args.batch) for i in range(0, args.images, args.batch))
    ]

    def run():
        return jax.block_until_ready([fn(*b, arrays) for b in batches])

    t0 = time.perf_counter()
    jax.block_until_ready(fn(*batches[0], arrays))
    return run, time.perf_counter() - t0


def torch_gradient(model, inputs, targets, **kwargs):
    """Quantus's ``explain_func``: the gradient of the target logit with respect to the
    input (torch autograd; no weight gradients)."""
    import numpy as np
    import torch

    x = torch.tensor(np.asarray(inputs), dtype=torch.float32, requires_grad=True)
    y = model(x)
    score = y[torch.arange(len(x)), torch.as_tensor(np.array(targets))].sum()
    # the input's gradient only: backward() would also accumulate every weight's gradient
    (grad,) = torch.autograd.grad(score, x)
    return grad.numpy()


def quantus_pass(name: str, pb: Problem, options: dict, net, args, images: int):
    """One Quantus call over the first ``images`` images (its own batches), as a function
    of nothing."""
    import numpy as np
    import quantus

    built = {k: v for k, v in options.items() if k not in CALL_OPTIONS}
    called = {k: v for k, v in options.items() if k in CALL_OPTIONS}
    metric = getattr(quantus, name)(**built, disable_warnings=True)
    n = slice(0, images)
    data = {  # writable copies in Quantus's channel-first layout (it writes into them)
        "model": net,
        "x_batch": np.array(pb.x[n]).transpose(0, 3, 1, 2).copy(),
        "y_batch": np.array(pb.y[n]),
        "a_batch": np.array(pb.a[n]).transpose(0, 3, 1, 2).copy(),
        "s_batch": np.array(pb.masks[n])[:, None].astype(np.float32),
        "channel_first": True,
        "explain_func": torch_gradient,
        "batch_size": args.quantus_batch,
    }
    if name == "Focus":
        data["custom_batch"] = np.array(pb.flags[n])
    if name == "SmoothMPRT":  # it explains with quantus.explain whatever explain_func is
        data["explain_func_kwargs"] = {"method": "Saliency"}

    def run():
        np.random.seed(args.seed)
        metric(**data, **called)

    return run


def timed(runs: dict[str, Any], args) -> dict[str, dict[str, Any]]:
    """``--repeats`` rounds of one timed pass of each library in turn (interleaved, so that
    both meet the same other jobs); per library the fastest pass counts."""
    times: dict[str, list[float]] = {lib: [] for lib in runs}
    loads: dict[str, list[list[float]]] = {lib: [] for lib in runs}
    for _ in range(args.repeats):
        for lib, run in runs.items():
            loads[lib].append(_load())
            t0 = time.perf_counter()
            run()
            times[lib].append(time.perf_counter() - t0)
    return {
        lib: {
            "seconds": min(times[lib]),
            "runs_s": times[lib],
            "images_per_s": args.images / min(times[lib]),
            "load_before_runs": loads[lib],
        }
        for lib in runs
    }


def explanation_floor(pb: Problem, net, args) -> dict[str, Any]:
    """The explanations alone of the sensitivity metrics: the gradient of the target logit
    at ``nr_samples`` noisy copies of each of the first ``--floor-images`` images, in jitted
    batches of ``--batch`` copies (slp) and through ``torch_gradient`` in Quantus's batches
    (torch). MaxSensitivity and AvgSensitivity make exactly these explanations (one per
    copy) and little else, so neither library can score them faster than its floor; seconds
    are scaled to all ``--images`` images."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    samples = settings("MaxSensitivity", tiny=args.tiny).get("nr_samples", 200)
    n = min(args.floor_images, args.images)
    x = jnp.repeat(pb.x[:n], samples, axis=0)
    x = x + jax.random.uniform(jax.random.key(args.seed + 3), x.shape, x.dtype, -0.2, 0.2)
    y = jnp.repeat(pb.y[:n], samples)
    grad = pb.grad  # the gradient maps' own function
    b = args.batch
    batches = [jax.block_until_ready((x[i : i + b], y[i : i + b])) for i in range(0, len(x), b)]
    jax.block_until_ready(grad(*batches[0]))  # compile
    runs: dict[str, Any] = {"slp": lambda: jax.block_until_ready([grad(*v) for v in batches])}
    if net is not None:
        xt, yt = np.array(x).transpose(0, 3, 1, 2).copy(), np.array(y)  # writable (torch)
        qb = args.quantus_batch
        torch_gradient(net, xt[:qb], yt[:qb])  # warm-up
        runs["torch"] = lambda: [
            torch_gradient(net, xt[i : i + qb], yt[i : i + qb]) for i in range(0, len(xt), qb)
        ]
    out = timed(runs, args)
    scale = args.images / n
    entry: dict[str, Any] = {"images": n, "nr_samples": samples, "gradients": n * samples}
    for lib, r in out.items():
        entry[lib] = {"seconds": r["seconds"] * scale, "measured_s": r["seconds"]}
        entry[lib]["load_before_runs"] = r["load_before_runs"]
    if "torch" in entry:
        entry["ratio"] = entry["torch"]["seconds"] / entry["slp"]["seconds"]
    return entry


def floor_lines(result: dict[str, Any]) -> list[str]:
    """The markdown paragraph of the explanation floor, under the table."""
    fl = result.get("explanation_floor")
    if not fl:
        return []
    total = result["config"]["images"]
    line = (
        f"Explanations alone: the gradient at {fl['nr_samples']} noisy copies of each of the "
        f"{total} images ({total * fl['nr_samples']:,} gradients, timed on the first "
        f"{fl['images']} images and scaled): slp {fl['slp']['seconds']:.3g} s"
    )
    if "torch" in fl:
        line += f", torch {fl['torch']['seconds']:.3g} s (ratio {fl['ratio']:.2f}x)"
    for name in ("MaxSensitivity", "AvgSensitivity"):
        m = result["metrics"].get(name)
        if m:
            line += f"; {name} takes {m['slp']['seconds'] / fl['slp']['seconds']:.2f}x slp's floor"
            if "quantus" in m and "torch" in fl:
                line += (
                    f" in slp, {m['quantus']['seconds'] / fl['torch']['seconds']:.2f}x in Quantus"
                )
    return ["", line + "."]


def report(result: dict[str, Any]) -> list[str]:
    """The markdown table of `main`'s result."""
    from lab import analysis

    rows = []
    for name, r in result["metrics"].items():
        q = r.get("quantus", {}).get("seconds")
        scaled = r.get("quantus", {}).get("scaled")
        ratio = r.get("ratio")
        target = 5 if name in EXPLAIN_AGAIN else 1
        rows.append(
            [
                name,
                r["group"],
                f"{r['slp']['first_call_s']:.3g}",
                f"{r['slp']['seconds']:.3g}",
                "-"
                if q is None
                else f"{q:.3g}"
                + (f" (scaled from {r['quantus']['images']} images)" if scaled else ""),
                "-" if ratio is None else f"{ratio:.1f}x",
                f"{target}x"
                + ("" if ratio is None else (" met" if ratio >= target else " NOT met")),
            ]
        )
    return analysis.table(
        ["metric", "group", "slp 1st call s", "slp s", "Quantus s", "ratio", "target"],
        rows,
        align=["---", "---", "---:", "---:", "---:", "---:", "---"],
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark; returns the dict written to bench_metrics.json."""
    args = parse_args(argv)
    xla_threads_set = cli.limit_xla_threads(args.threads)
    eigen = cli.eigen_convolutions(args.eigen_convolutions)
    import jax

    from lab import analysis
    from slp import metrics
    from slp.metrics import _common as metrics_common

    names = args.metrics or list(metrics.available_metrics())
    for name in names:
        metrics.get_metric(name)  # unknown names: the error lists the known ones
    pb = build_problem(args)
    net = None
    if not args.no_quantus:
        import numpy as np
        import torch
        from bench_attributions import torch_port

        torch.set_num_threads(args.threads)
        net, _ = torch_port(pb.model, pb.params, np.asarray(pb.x[:1]))
    result: dict[str, Any] = {
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "step_batch": metrics_common.STEP_BATCH,  # perturbed inputs per network call
        },
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "jax_version": jax.__version__,
            "load_at_start": _load(),
            "xla_thread_limit_applied": xla_threads_set,
            "xla_eigen_convolutions": eigen,
        },
        "metrics": {},
    }
    if net is not None:
        import quantus

        result["machine"]["quantus_version"] = quantus.__version__
        result["machine"]["torch_version"] = torch.__version__
    for name in names:
        options = settings(name, tiny=args.tiny)
        entry: dict[str, Any] = {"group": metrics.get_metric(name).group, "options": options}
        run, first = slp_pass(name, pb, options, args)
        runs = {"slp": run}
        q_images = min(args.quantus_images.get(name, args.images), args.images)
        if net is not None:
            runs["quantus"] = quantus_pass(name, pb, options, net, args, q_images)
            # Quantus's warm-up, as slp's first call: torch's first batches set up its kernels.
            t0 = time.perf_counter()
            quantus_pass(name, pb, options, net, args, min(WARMUP_IMAGES, args.images))()
            warmup = time.perf_counter() - t0
        entry.update(timed(runs, args))
        entry["slp"]["first_call_s"] = first
        if net is not None:
            q = entry["quantus"]
            q["warmup_s"] = warmup
            q["images"], q["scaled"] = q_images, q_images < args.images
            q["measured_s"] = q["seconds"]
            q["seconds"] = q["measured_s"] * args.images / q_images
            q["images_per_s"] = args.images / q["seconds"]
            entry["ratio"] = q["seconds"] / entry["slp"]["seconds"]
        result["metrics"][name] = entry
        ratio = f"  ratio {entry['ratio']:.2f}" if "ratio" in entry else ""
        print(
            f"  {name:26s} slp {entry['slp']['seconds']:8.2f} s{ratio}", file=sys.stderr, flush=True
        )
        args.out.mkdir(parents=True, exist_ok=True)  # what is done so far, should a pass fail
        analysis.write_json(args.out / "bench_metrics.partial.json", result)
    if args.floor_images:
        result["explanation_floor"] = explanation_floor(pb, net, args)
        print(f"  explanations alone: {result['explanation_floor']}", file=sys.stderr)
    result["machine"]["load_at_end"] = _load()
    lines = report(result) + floor_lines(result)
    print("\n".join(lines))
    args.out.mkdir(parents=True, exist_ok=True)
    analysis.write_json(args.out / "bench_metrics.json", result)
    (args.out / "bench_metrics.partial.json").unlink()
    analysis.write_text(args.out / "bench_metrics.md", "\n".join(lines) + "\n")
    return result


if __name__ == "__main__":
    main()

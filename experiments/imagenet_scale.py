"""Insens on ImageNet-size networks: the unbiased estimate against exact, time at 224x224.

Run:
    nice -n 10 python experiments/imagenet_scale.py   # about 40-60 minutes on 2 CPU cores
    python experiments/imagenet_scale.py --smoke --out /tmp/x   # seconds: tiny nets only

Four parts, each in the same process (times as ratios to a forward pass measured in the
same run, since other jobs may share the CPU; the load average is recorded):

1. Error against exact: on --error-images inputs per network, the exact map
   (`slp.insens`) and estimates ``slp.insens(f, probes=k, key)`` for k in --ks with
   --keys keys each: relative L2 error ``|est - exact| / |exact|``, Spearman rank
   correlation over input elements, and the share of elements inside 1.96 jackknife
   standard errors. Networks: 2CONV on MNIST test digits (the trained checkpoint),
   ResNet-8 (random weights, `experiments/zoo.py`) and VGG-16 (`slp.models.VGG16`, random
   weights, 10 classes) at --vgg-side (32: exact is affordable; the repeat of the 1x1
   feature map to 7x7 keeps it off the cone route) on random normal inputs.
2. Time per image at --time-side (224) for `slp.models.VGG16` and `slp.models.ResNet50`
   (random weights, 1000 classes): the forward pass, the estimate for every k in
   --time-ks (and k = --stderr-k with its standard error), each after one compiling call,
   and the exact routes' predicted time and memory (`slp.insens_plan`).
3. The plan's predicted time against measured time: every route that applies on the zoo
   networks (`experiments/zoo.py`), one image, after one compiling call.
4. Optional (--baselines, needs torch, zennit and captum): gradient, LRP-epsilon and z+
   against Zennit and Integrated Gradients against Captum on torchvision's VGG-16 with the
   same random weights (`slp.torchvision.to_state_dict`) at --time-side: cosine of the
   maps and images per second of both libraries.

Writes --out/imagenet_scale.json, imagenet_scale.md and imagenet_scale.png (default
runs/).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from lab import cli


def build_parser() -> argparse.ArgumentParser:
    """The options (importing this costs no jax: ``--help`` answers at once)."""
    parser = cli.script_parser(__doc__, summary=False)
    cli.add_out_option(parser)
    parser.add_argument(
        "--ks",
        type=cli.positive,
        nargs="+",
        default=[8, 32, 128, 512],
        help="probes k of the error part",
    )
    parser.add_argument("--keys", type=cli.positive, default=3, help="keys per k and image")
    parser.add_argument(
        "--hybrid-ks",
        type=cli.positive,
        nargs="*",
        default=[32, 128],
        help="k with exact first layers",
    )
    parser.add_argument(
        "--error-images", type=cli.positive, default=3, help="images per network (error)"
    )
    parser.add_argument(
        "--error-nets",
        nargs="+",
        default=["2conv-mnist", "2conv-cifar10", "resnet8", "vgg16"],
        help="networks of the error part",
    )
    parser.add_argument(
        "--vgg-side", type=cli.positive, default=32, help="VGG-16 input side (error)"
    )
    parser.add_argument("--vgg-images", type=cli.positive, default=1, help="VGG-16 images (error)")
    parser.add_argument(
        "--vgg-ks", type=cli.positive, nargs="*", default=[8, 32, 128], help="VGG-16 k (error)"
    )
    parser.add_argument(
        "--time-nets", nargs="+", default=["vgg16", "resnet50"], help="networks of the time part"
    )
    parser.add_argument(
        "--time-side", type=cli.positive, default=224, help="input side of the time part"
    )
    parser.add_argument(
        "--time-ks", type=cli.positive, nargs="+", default=[32, 64, 128], help="k of the time part"
    )
    parser.add_argument(
        "--stderr-k", type=cli.positive, default=32, help="k of the timed standard error"
    )
    parser.add_argument(
        "--repeats", type=cli.positive, default=2, help="timed calls after compiling"
    )
    parser.add_argument(
        "--plan-nets",
        nargs="+",
        default=["2conv-linen", "mlp", "resnet8", "qnetwork"],
        help="zoo networks whose predicted and measured exact times are compared",
    )
    parser.add_argument(
        "--baselines", action="store_true", help="VGG-16 at 224 against Zennit and Captum"
    )
    parser.add_argument(
        "--baseline-images", type=cli.positive, default=2, help="images of the baselines"
    )
    parser.add_argument(
        "--ig-steps", type=cli.positive, default=16, help="integrated-gradients points"
    )
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["error", "time", "plan"], help="parts not run"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny networks, seconds")
    parser.add_argument(
        "--merge", action="store_true", help="keep the parts of an existing JSON not run now"
    )
    return parser


if __name__ == "__main__":
    build_parser().parse_args()  # --help and malformed options answered before jax loads

import jax
import jax.numpy as jnp
import numpy as np
import zoo

import slp
from lab import analysis
from slp import models, training


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.ks, args.keys, args.error_images, args.hybrid_ks = [4, 8], 2, 1, [8]
        args.error_nets = ["2conv-small"]
        args.time_nets, args.time_ks, args.stderr_k = ["2conv-small"], [4], 6
        args.plan_nets, args.repeats = ["mlp-small"], 1
    return args


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def _load() -> float:
    return os.getloadavg()[0]


def _timed(fn, *args, repeats: int) -> tuple[float, float]:
    """``(compiling, best of repeats)`` in seconds (``fn`` is jit-compiled ahead of time)."""
    first, best, _ = _timed_cpu(fn, *args, repeats=repeats)
    return first, best


def _timed_cpu(fn, *args, repeats: int) -> tuple[float, float, float]:
    """``(compiling, best wall time, best CPU time of this process)`` in seconds.

    CPU time (all threads) counts the work done, whatever other jobs take of the cores.
    """
    t0 = time.perf_counter()
    fn = fn.lower(*args).compile()
    first = time.perf_counter() - t0
    best, best_cpu = np.inf, np.inf
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return first, best, best_cpu


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a.reshape(-1), b.reshape(-1)).statistic)


def _linen(model, shape, seed):
    x = jnp.zeros((1, *shape), jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(seed), x)
    return models.as_single_example(model, variables)


#: Hidden ReLU layers with exact norms (``exact_layers``) in the runs that use them: the
#: layers whose cones stay small (2CONV: both conv layers; ResNet-8: the stem and the first
#: block; VGG-16: the first block; ResNet-50: the stem).
EXACT_LAYERS = {
    "2conv-mnist": 2,
    "2conv-cifar10": 2,
    "resnet8": 3,
    "vgg16": 2,
    "resnet50": 1,
    "2conv-small": 1,
}


def error_network(name: str, n: int):
    """``(description, f, inputs (n, ...))`` for part 1."""
    rng = np.random.default_rng(0)
    if name == "2conv-mnist":
        ck = training.load_or_train_mnist(training.TrainConfig(), progress=False)
        x, _ = training.load_mnist_float("test", limit=n)
        f = models.as_single_example(ck.model, ck.params)
        return f"2CONV, MNIST test digits (trained, {ck.path.name})", f, x
    if name == "2conv-cifar10":
        # The checkpoint experiments/cifar10.py trained (and cached); the test images from
        # the copy it read (--source images with $SLP_CIFAR10_ZIP, or the official batches).
        found = sorted((slp.data.data_dir() / "checkpoints").glob("twoconv_cifar10*.msgpack"))
        if not found:
            raise FileNotFoundError("no CIFAR-10 checkpoint: run experiments/cifar10.py first")
        meta = json.loads(found[0].with_suffix(".json").read_text())
        config = training.TrainConfig.from_dict(meta["config"])
        params, _ = training.load_checkpoint(found[0], config=config)
        source = "images" if config.dataset.endswith("jpeg") else "official"
        test = slp.data.load_cifar10("test", source=source)
        x = np.asarray(test.images[:n], np.float32) / np.float32(255.0)
        f = models.as_single_example(training.make_model(config), params)
        return f"2CONV, CIFAR-10 test images (trained, {found[0].name})", f, x
    if name in ("resnet8", "resnet8-small", "2conv-small"):
        builder = {"resnet8": "resnet8", "resnet8-small": "resnet8", "2conv-small": "2conv-linen"}
        m = zoo.ZOO[builder[name]](jax.random.key(0), small=name.endswith("small"))
        x = rng.normal(size=(n, *m.input_shape)).astype(np.float32)
        return f"{name} (random weights), normal inputs", m.f, x
    if name == "vgg16":
        shape = (ARGS.vgg_side, ARGS.vgg_side, 3)
        f = _linen(models.VGG16(num_classes=10), shape, 0)
        x = rng.normal(size=(n, *shape)).astype(np.float32)
        return f"VGG-16 at {ARGS.vgg_side}x{ARGS.vgg_side} (random weights), normal inputs", f, x
    raise ValueError(name)


def error_part(args) -> dict[str, Any]:
    out = {}
    for name in args.error_nets:
        big = name == "vgg16"  # exact by the dense route: minutes per image on 2 cores
        n_img = args.vgg_images if big else args.error_images
        ks = args.vgg_ks if big and args.vgg_ks else args.ks
        desc, f, xs = error_network(name, n_img)
        exact_fn = slp.insens(f)
        plan = slp.insens_plan(f, jnp.asarray(xs[0]))
        fwd = jax.jit(f)
        _, t_fwd = _timed(fwd, xs[0], repeats=args.repeats)
        n_ex = EXACT_LAYERS.get(name, 0)
        labels = list(ks) + ([f"{k}+exact{n_ex}" for k in args.hybrid_ks] if n_ex else [])
        rows = {k: {"rel_l2": [], "spearman": [], "coverage": []} for k in labels}
        t_exact, t_est = [], {k: [] for k in labels}
        for i, x in enumerate(xs):
            t0 = time.perf_counter()
            exact = np.asarray(jax.block_until_ready(exact_fn(x)))
            t_exact.append(time.perf_counter() - t0)
            norm = np.linalg.norm(exact)
            n_ex = EXACT_LAYERS.get(name, 0)
            cases = [(k, 0) for k in ks] + [(k, n_ex) for k in args.hybrid_ks if n_ex]
            for k, n in cases:
                est_fn = slp.insens(
                    f, probes=k, key=jax.random.key(0), return_stderr=k >= 6, exact_layers=n
                )
                key_k = k if not n else f"{k}+exact{n}"
                for s in range(args.keys):
                    key = jax.random.key(1000 * i + s + 1)
                    t0 = time.perf_counter()
                    res = jax.block_until_ready(est_fn(x, key))
                    t_est[key_k].append(time.perf_counter() - t0)
                    est = np.asarray(res.map if k >= 6 else res)
                    row = rows[key_k]
                    row["rel_l2"].append(float(np.linalg.norm(est - exact) / norm))
                    row["spearman"].append(_spearman(est, exact))
                    if k >= 6:
                        se = np.asarray(res.stderr)
                        row["coverage"].append(float(np.mean(np.abs(est - exact) <= 1.96 * se)))
            log(f"{name} image {i}: exact {t_exact[-1]:.1f} s")
        out[name] = {
            "description": desc,
            "input_shape": list(xs.shape[1:]),
            "exact_route": plan.route,
            "images": len(xs),
            "keys": args.keys,
            "forward_seconds": t_fwd,
            "exact_seconds": float(np.median(t_exact[1:] or t_exact)),
            "by_k": {
                str(k): {
                    "rel_l2_mean": float(np.mean(r["rel_l2"])),
                    "rel_l2_max": float(np.max(r["rel_l2"])),
                    "spearman_mean": float(np.mean(r["spearman"])),
                    "spearman_min": float(np.min(r["spearman"])),
                    "coverage_1.96se": float(np.mean(r["coverage"])) if r["coverage"] else None,
                    "seconds_median": float(np.median(t_est[k][1:] or t_est[k])),
                    "n": len(r["rel_l2"]),
                }
                for k, r in rows.items()
            },
        }
        log(name, {k: round(v["rel_l2_mean"], 4) for k, v in out[name]["by_k"].items()})
    return out


def time_network(name: str, side: int):
    shape = (side, side, 3)
    if name == "vgg16":
        return "VGG-16", _linen(models.VGG16(), shape, 0), shape
    if name == "resnet50":
        return "ResNet-50", _linen(models.ResNet50(), shape, 0), shape
    if name == "2conv-small":  # the smoke test's stand-in
        m = zoo.ZOO["2conv-linen"](jax.random.key(0), small=True)
        return "2CONV (small)", m.f, m.input_shape
    if name == "resnet-small":
        return (
            "ResNet (1 block per stage)",
            _linen(models.ResNet50(blocks=(1, 1, 1, 1)), shape, 0),
            shape,
        )
    raise ValueError(name)


def time_part(args) -> dict[str, Any]:
    out = {}
    for name in args.time_nets:
        desc, f, shape = time_network(name, args.time_side)
        x = jax.random.normal(jax.random.key(1), shape)
        load0 = _load()
        t0 = time.perf_counter()
        plan = slp.insens_plan(f, x)
        t_plan = time.perf_counter() - t0
        fwd = jax.jit(f)
        _, t_fwd, c_fwd = _timed_cpu(fwd, x, repeats=5)
        row = {
            "description": desc,
            "input_shape": list(shape),
            "forward_gflop": plan.forward_flops / 1e9,
            "plan_seconds": t_plan,
            "flop_rate_gflops": plan.flop_rate / 1e9,
            "exact_predicted": {
                r: {"seconds": c.seconds, "gflop": c.flops / 1e9, "peak_mib": c.peak_bytes / 2**20}
                for r, c in plan.costs.items()
            },
            "exact_route": plan.route,
            "estimate": {},
        }
        log(f"{name}: forward {t_fwd * 1e3:.1f} ms; exact {plan.route}: {plan.cost}")
        n_exact = EXACT_LAYERS.get(name, 0)
        cases = [(k, False, 0) for k in args.time_ks] + [(args.stderr_k, True, 0)]
        cases += [(k, False, n_exact) for k in args.time_ks if n_exact and k == args.stderr_k]
        for k, stderr, n_ex in cases:
            fn = slp.insens(
                f, probes=k, key=jax.random.key(0), return_stderr=stderr, exact_layers=n_ex
            )
            first, best, cpu = _timed_cpu(fn, x, repeats=args.repeats)
            # the forward pass again, next to each case: the load changes during the run
            _, t_f, c_f = _timed_cpu(fwd, x, repeats=5)
            t_fwd, c_fwd = min(t_fwd, t_f), min(c_fwd, c_f)
            pred = plan.estimate_cost(k).seconds
            tag = f"{k}{'+stderr' if stderr else ''}{f'+exact{n_ex}' if n_ex else ''}"
            row["estimate"][tag] = {
                "probes": k,
                "stderr": stderr,
                "exact_layers": n_ex,
                "seconds": best,
                "cpu_seconds": cpu,
                "compile_seconds": first,
                "predicted_seconds": None if (stderr or n_ex) else pred,
            }
            log(f"  k={tag}: {best:.2f} s, CPU {cpu:.1f} s (compiling {first:.1f} s)")
        for r in row["estimate"].values():
            r["x_forward"] = r["seconds"] / t_fwd
            r["x_forward_cpu"] = r["cpu_seconds"] / c_fwd
        row["forward_seconds"], row["forward_cpu_seconds"] = t_fwd, c_fwd
        row["load_average"] = [load0, _load()]
        out[name] = row
    return out


def plan_part(args) -> dict[str, Any]:
    out = {}
    for name in args.plan_nets:
        small = name.endswith("-small")
        m = zoo.ZOO[name.removesuffix("-small")](jax.random.key(0), small=small)
        x = jax.random.normal(jax.random.key(1), m.input_shape)
        plan = slp.insens_plan(m.f, x)
        rows = {}
        for route, cost in plan.costs.items():
            _, best = _timed(slp.insens(m.f, route=route), x, repeats=args.repeats)
            rows[route] = {
                "predicted_seconds": cost.seconds,
                "measured_seconds": best,
                "measured_over_predicted": best / cost.seconds,
                "chosen": route == plan.route,
            }
            log(f"{name} {route}: predicted {cost.seconds:.3g} s, measured {best:.3g} s")
        measured_best = min(rows, key=lambda r: rows[r]["measured_seconds"])
        out[name] = {"routes": rows, "chosen": plan.route, "fastest_measured": measured_best}
    return out


def baseline_part(args) -> dict[str, Any]:
    import torch
    import torchvision
    from captum.attr import IntegratedGradients
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.rules import Epsilon, ZPlus

    from slp import torchvision as slp_tv

    torch.set_num_threads(os.cpu_count() or 1)
    side = args.time_side
    model = models.VGG16()
    variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, side, side, 3)))
    net = torchvision.models.vgg16().eval()
    for m in net.modules():
        if isinstance(m, torch.nn.ReLU):
            m.inplace = False  # hooks and in-place ReLUs do not mix
    sd = slp_tv.to_state_dict(model, variables)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    del sd
    n = args.baseline_images
    xs = np.random.default_rng(5).normal(size=(n, side, side, 3)).astype(np.float32)
    x_t = torch.from_numpy(xs.transpose(0, 3, 1, 2).copy())
    apply = jax.jit(model.apply)
    logits = np.asarray(apply(variables, xs))
    with torch.no_grad():
        logits_t = net(x_t).numpy()
    targets = logits.argmax(1)
    layers = (torch.nn.Conv2d, torch.nn.Linear)

    def f(x):
        return model.apply(variables, x[None])[0]

    def zennit_map(composite):
        onehot = torch.zeros((n, 1000))
        onehot[torch.arange(n), torch.from_numpy(targets)] = 1.0
        xg = x_t.clone().requires_grad_(True)
        if composite is None:
            out = net(xg)
            (out * onehot).sum().backward()
            return xg.grad.numpy().transpose(0, 2, 3, 1)
        with Gradient(model=net, composite=composite) as attributor:
            _, rel = attributor(xg, attr_output=onehot)
        # this library starts LRP from the target logit, Zennit from one: scale by y_t
        return (
            rel.detach().numpy().transpose(0, 2, 3, 1)
            * logits_t[np.arange(n), targets][:, None, None, None]
        )

    def captum_ig():
        ig = IntegratedGradients(net)
        rel = ig.attribute(
            x_t.clone().requires_grad_(True),
            target=torch.from_numpy(targets),
            n_steps=args.ig_steps,
            method="riemann_middle",
            internal_batch_size=4,  # memory: VGG-16's activations at 224 x 4 per pass
        )
        return rel.detach().numpy().transpose(0, 2, 3, 1)

    cases = {
        "gradient": ({}, lambda: zennit_map(None), "torch autograd (as Zennit's Gradient)"),
        "lrp_epsilon": (
            {"epsilon": 1e-3},
            lambda: zennit_map(LayerMapComposite([(layers, Epsilon(epsilon=1e-3))])),
            "Zennit Epsilon(1e-3)",
        ),
        "lrp_zplus": (
            {},
            lambda: zennit_map(LayerMapComposite([(layers, ZPlus(zero_params="bias"))])),
            "Zennit ZPlus(zero_params='bias')",
        ),
        "integrated_gradients": (
            {"steps": args.ig_steps, "quadrature": "riemann_middle", "batch_size": 4},
            captum_ig,
            f"Captum IntegratedGradients ({args.ig_steps} steps, riemann_middle)",
        ),
    }
    out = {
        "max_logit_difference": float(np.abs(logits - logits_t).max()),
        "images": n,
        "methods": {},
    }
    for method, (options, torch_fn, torch_desc) in cases.items():
        slp_fn = jax.jit(
            jax.vmap(lambda x, t, o=options, m=method: slp.attribute(f, x, m, target=t, **o))
        )
        compiled = slp_fn.lower(xs, targets).compile()
        got = np.asarray(jax.block_until_ready(compiled(xs, targets)))
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(xs, targets))
        t_slp = time.perf_counter() - t0
        torch_fn()  # warm-up
        t0 = time.perf_counter()
        want = torch_fn()
        t_torch = time.perf_counter() - t0
        cos = [
            float(np.dot(a.ravel(), b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
            for a, b in zip(got, want, strict=True)
        ]
        out["methods"][method] = {
            "against": torch_desc,
            "cosine_min": min(cos),
            "slp_img_per_s": n / t_slp,
            "torch_img_per_s": n / t_torch,
            "speed_ratio": t_torch / t_slp,
        }
        log(f"{method}: cosine {min(cos):.6f}, slp {n / t_slp:.2f} img/s, torch {n / t_torch:.2f}")
    return out


def figure(result: dict[str, Any]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    err, tim = result.get("error", {}), result.get("time", {})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ax = axes[0]
    for name, row in err.items():
        ks = [int(k) for k in row["by_k"] if k.isdigit()]
        ys = [row["by_k"][str(k)]["rel_l2_mean"] for k in ks]
        (line,) = ax.plot(ks, ys, "o-", label=f"{name} ({row['exact_route']} exact)")
        hyb = [k for k in row["by_k"] if not k.isdigit()]
        if hyb:
            hk = [int(k.split("+")[0]) for k in hyb]
            n_ex = hyb[0].split("exact")[1]
            hy = [row["by_k"][k]["rel_l2_mean"] for k in hyb]
            lab = f"  first {n_ex} layers exact"
            ax.plot(hk, hy, "s--", color=line.get_color(), mfc="none", label=lab)
    if err:
        kk = [int(k) for r in err.values() for k in r["by_k"] if k.isdigit()]
        kk = np.array(sorted(set(kk)), float)
        kk = kk[kk > 4]
        ax.plot(kk, np.sqrt(2 / (kk - 4)), "k:", label=r"$\sqrt{2/(k-4)}$ (one neuron)")
    ax.axhline(0.1, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("probes k")
    ax.set_ylabel("relative L2 error against exact")
    ax.set_title("Insens estimate: error against exact")
    ax.legend(fontsize=8)
    ax = axes[1]
    names = list(tim)
    cases = {n: {_case_label(lab): r for lab, r in tim[n]["estimate"].items()} for n in tim}
    labels = sorted({lab for c in cases.values() for lab in c}, key=_case_order)
    width = 0.8 / max(1, len(names))
    for j, name in enumerate(names):
        vals = [cases[name].get(lab, {}).get("x_forward_cpu", np.nan) for lab in labels]
        pos = np.arange(len(labels)) + (j - (len(names) - 1) / 2) * width
        ax.bar(pos, vals, width, label=tim[name]["description"])
    ax.set_xticks(np.arange(len(labels)), labels, fontsize=8)
    ax.axhline(300, color="grey", lw=0.8, ls="--", label="300x forward")
    side = result["config"]["time_side"]
    ax.set_ylabel("CPU time per image / forward pass")
    dev = result["config"]["device"]
    where = f"{result['config']['cpus']} CPU cores" if dev.startswith("cpu") else dev
    ax.set_title(f"Insens estimate at {side}x{side} ({where})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _case_label(lab: str) -> str:
    """``"32+exact2"`` -> ``"k=32\nfirst layers exact"`` (one bar group per kind of case)."""
    k, _, extra = lab.partition("+")
    kind = {"": "", "stderr": "\n+ stderr"}.get(extra, "\nfirst layers exact")
    return f"k={k}{kind}"


def _case_order(lab: str):
    k, _, kind = lab.partition("\n")
    return (kind != "", kind, int(k.removeprefix("k=")))


def _error_cells(row: dict[str, Any], k: str, r: dict[str, Any]) -> dict[str, str]:
    """One row of the error table, column title -> cell: a network's estimate with ``k``
    probes against exact."""
    return {
        "network": row["description"],
        "exact route": row["exact_route"],
        "exact s": f"{row['exact_seconds']:.2f}",
        "k": k,
        "rel. L2 (max)": f"{r['rel_l2_mean']:.4f} ({r['rel_l2_max']:.4f})",
        "Spearman (min)": f"{r['spearman_mean']:.4f} ({r['spearman_min']:.4f})",
        "coverage": "" if r["coverage_1.96se"] is None else f"{r['coverage_1.96se']:.3f}",
    }


def _time_cells(row: dict[str, Any], lab: str, r: dict[str, Any]) -> dict[str, str]:
    """One row of the time table, column title -> cell: a network's case ``lab`` against its
    forward pass."""
    forward = f"{row['forward_seconds'] * 1e3:.0f} / {row['forward_cpu_seconds'] * 1e3:.0f} ms"
    return {
        "network": row["description"],
        "forward (wall / CPU)": forward,
        "case": f"k={lab}",
        "wall s": f"{r['seconds']:.2f}",
        "CPU s": f"{r['cpu_seconds']:.1f}",
        "x forward (wall)": f"{r['x_forward']:.0f}",
        "x forward (CPU)": f"{r['x_forward_cpu']:.0f}",
        "predicted s": "" if r["predicted_seconds"] is None else f"{r['predicted_seconds']:.3g}",
    }


def _case_table(part: dict[str, Any], cases: str, cells) -> list[str]:
    """The markdown table of a part of the result: a row per network and case (the items of
    each network's ``cases`` entry), ``cells(network, case, its result)`` its column title
    -> cell (the titles those of the first row)."""
    rows = [cells(row, case, r) for row in part.values() for case, r in row[cases].items()]
    return analysis.table(list(rows[0]), [list(row.values()) for row in rows])


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        "# Insens on ImageNet-size networks",
        "",
        f"On {cfg['device']} ({cfg['cpus']} CPUs), jax {cfg['jax']}, by",
        "",
    ]
    lines += [f"- `{r['command']}`: {', '.join(r['parts'])}" for r in cfg.get("runs", [])]
    lines += [
        "",
        f"Load average of the last run {cfg['load_average'][0]:.2f} -> "
        f"{cfg['load_average'][1]:.2f}; the time part's own in its rows.",
        "",
    ]
    if "error" in result:
        lines += [
            "## Estimate against exact",
            "",
            "Mean relative L2 error (max) | mean Spearman (min) | share of elements within "
            "1.96 jackknife standard errors, over images x keys.",
            "",
            *_case_table(result["error"], "by_k", _error_cells),
            "",
        ]
    if "time" in result:
        lines += [
            f"## Time per image at {cfg['time_side']}x{cfg['time_side']}",
            "",
            "Wall time is shared with other jobs; CPU time (all threads of this process) "
            "counts the work. Ratios to the forward pass measured next to each case.",
            "",
            *_case_table(result["time"], "estimate", _time_cells),
            "",
            "Exact routes, predicted by `slp.insens_plan` (not run):",
            "",
        ]
        for row in result["time"].values():
            for route, c in row["exact_predicted"].items():
                chosen = " (chosen)" if route == row["exact_route"] else ""
                lines.append(
                    f"- {row['description']} {route}{chosen}: "
                    f"{c['seconds']:.3g} s, {c['peak_mib']:.3g} MiB"
                )
        lines.append("")
    if "plan" in result:
        lines += [
            "## Predicted against measured time of the exact routes (one image)",
            "",
            *analysis.table(
                ["network", "route", "predicted s", "measured s", "measured / predicted"],
                [
                    [
                        name,
                        f"{route}{' (chosen)' if r['chosen'] else ''}",
                        f"{r['predicted_seconds']:.3g}",
                        f"{r['measured_seconds']:.3g}",
                        f"{r['measured_over_predicted']:.2f}",
                    ]
                    for name, row in result["plan"].items()
                    for route, r in row["routes"].items()
                ],
            ),
            "",
        ]
    if "baselines" in result:
        b = result["baselines"]
        lines += [
            f"## Baselines on VGG-16 at {cfg['time_side']}x{cfg['time_side']} (same weights)",
            "",
            f"{b['images']} images; largest logit difference {b['max_logit_difference']:.2g}.",
            "",
            *analysis.table(
                ["method", "against", "cosine (min)", "slp img/s", "torch img/s", "slp / torch"],
                [
                    [
                        m,
                        r["against"],
                        f"{r['cosine_min']:.6f}",
                        f"{r['slp_img_per_s']:.3f}",
                        f"{r['torch_img_per_s']:.3f}",
                        f"{r['speed_ratio']:.2f}",
                    ]
                    for m, r in b["methods"].items()
                ],
            ),
            "",
        ]
    return "\n".join(lines)


def new_result(args: argparse.Namespace, argv: list[str] | None) -> dict[str, Any]:
    """The results of this run before any part: its ``config`` (command, machine, options)."""
    dev = jax.devices()[0]
    return {
        "config": {
            "command": "python experiments/imagenet_scale.py " + " ".join(argv or sys.argv[1:]),
            "device": f"{dev.platform} ({dev.device_kind})",
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "jax": jax.__version__,
            "ks": args.ks,
            "keys": args.keys,
            "time_side": args.time_side,
            "time_ks": args.time_ks,
            "stderr_k": args.stderr_k,
        }
    }


def merged(result: dict[str, Any], path: Path) -> dict[str, Any]:
    """``--merge``: the results in ``path`` with this run's ``config`` entries over theirs."""
    old = json.loads(path.read_text())
    return {**old, "config": {**old.get("config", {}), **result["config"]}}


def run_parts(args: argparse.Namespace, result: dict[str, Any], path: Path) -> None:
    """Runs the parts not in --skip into ``result``, writing ``path`` after each one.

    With --merge, networks of a part not run now keep their earlier rows.
    """
    load0 = _load()
    parts = [("error", error_part), ("time", time_part), ("plan", plan_part)]
    parts += [("baselines", baseline_part)] if args.baselines else []
    done = [name for name, _ in parts if name not in args.skip]
    result["config"].setdefault("runs", []).append(
        {"command": result["config"]["command"], "parts": done}
    )
    for name, part in parts:
        if name in args.skip:
            continue
        new = part(args)
        result[name] = {**result.get(name, {}), **new} if args.merge else new
        result["config"]["load_average"] = [load0, _load()]
        analysis.write_json(path, result)  # after every part: a late failure keeps the rest


ARGS: argparse.Namespace


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the parts; returns the dict written to imagenet_scale.json."""
    global ARGS
    args = ARGS = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    result = new_result(args, argv)
    path = args.out / "imagenet_scale.json"
    if args.merge and path.exists():
        result = merged(result, path)
    run_parts(args, result, path)
    analysis.write_text(args.out / "imagenet_scale.md", markdown(result))
    fig = figure(result)
    fig.savefig(args.out / "imagenet_scale.png", dpi=120)
    log(f"wrote {args.out}/imagenet_scale.json, .md, .png")
    return result


if __name__ == "__main__":
    main()

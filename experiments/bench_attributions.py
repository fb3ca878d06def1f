"""Speed of every attribution method against Captum and Zennit on the same network (CPU).

Run:
    python experiments/bench_attributions.py          # about 3-5 minutes on 2 cores
    python experiments/bench_attributions.py --methods lrp_epsilon gradient --repeats 5

The full-size TwoConv (conv 5x5x32 -> max-pool -> conv 5x5x64 -> max-pool -> dense 1024
-> dense 10) with random weights (non-zero biases) on a batch of MNIST-sized inputs
(28x28x1, uniform in [0, 1]). Each library method is timed batched, ``jax.jit`` of
``jax.vmap``, after one compiling call; the torch port of the same weights is timed with
Captum (saliency, input x gradient, Integrated Gradients and SmoothGrad with the same
numbers of points, guided backprop, deconvolution) and Zennit (LRP with the
``EpsilonPlus`` composite: epsilon on dense, z+ on conv layers), all targets the arg-max
logit. Threads: XLA and
torch are both limited to ``--threads``. The machine's load average is recorded before
and after every timing, since other jobs may share the CPU.

Writes --out/bench_attributions.json (default runs/) and prints a table of images/s
and the ratio to the comparable torch method (> 1: this library is faster). Captum's IG
uses its default Gauss-Legendre points, this library its default (iNNvestigate's): the
same number of gradients.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from lab import cli  # no jax

# The thread limit must be in the environment before XLA starts, so jax (and slp, which
# imports it) is imported inside main().

COMPARE = {
    "gradient": "captum_saliency",
    "gradient_x_input": "captum_input_x_gradient",
    "integrated_gradients": "captum_integrated_gradients",
    "smoothgrad": "captum_smoothgrad",
    "guided_backprop": "captum_guided_backprop",
    "deconvnet": "captum_deconvolution",
    "lrp_epsilon": "zennit_epsilon_plus",
    "lrp_alpha_beta": "zennit_epsilon_plus",
    "lrp_alpha1_beta0": "zennit_epsilon_plus",
    "lrp_alpha2_beta1": "zennit_epsilon_plus",
    "lrp_zplus": "zennit_epsilon_plus",
    "deep_taylor": "zennit_epsilon_plus",
    "deep_taylor_bounded": "zennit_epsilon_plus",
}
"""The torch method each library method is compared with (same kind of work)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = cli.script_parser(__doc__, summary=False)
    p.add_argument("--batch", type=cli.positive, default=64, help="images per batch")
    p.add_argument("--threads", type=cli.positive, default=2, help="CPU threads for XLA and torch")
    p.add_argument(
        "--repeats", type=cli.positive, default=3, help="timed calls per method (median)"
    )
    p.add_argument("--ig-steps", type=cli.positive, default=64, help="Integrated Gradients steps")
    p.add_argument(
        "--ig-batch-size",
        type=cli.positive,
        default=None,
        help="IG path points evaluated at once per image (default all; fewer bound memory "
        "but run slower on CPU)",
    )
    p.add_argument(
        "--smoothgrad-samples", type=cli.positive, default=32, help="SmoothGrad noise samples"
    )
    p.add_argument(
        "--methods",
        nargs="+",
        default=None,
        help="library methods to time (default: all registered but insens)",
    )
    p.add_argument("--no-torch", action="store_true", help="skip Captum and Zennit")
    p.add_argument("--tiny", action="store_true", help="tiny network and batch (smoke test)")
    p.add_argument(
        "--seed", type=cli.non_negative, default=0, help="seed of weights, biases and inputs"
    )
    cli.add_out_option(p)
    args = p.parse_args(argv)
    for name in ("batch", "threads", "repeats", "ig_steps", "ig_batch_size", "smoothgrad_samples"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1")
    return args


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def _time(call, repeats: int) -> dict[str, Any]:
    """Times ``call()`` (which blocks until done): a first call, then ``repeats`` calls."""
    load_before = _load()
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        runs.append(time.perf_counter() - t0)
    return {
        "first_call_s": first,
        "runs_s": runs,
        "median_s": statistics.median(runs),
        "load_before": load_before,
        "load_after": _load(),
    }


def build_network(args):
    """Random-weight TwoConv (flax) with non-zero biases, and a batch of inputs."""
    import jax
    import jax.numpy as jnp

    from lab import analysis  # imports jax: only once the thread options are set
    from slp.models import TwoConv

    if args.tiny:
        model, shape = TwoConv(num_classes=10, features=(2, 3), hidden=8), (8, 8, 1)
    else:
        model, shape = TwoConv(num_classes=10), (28, 28, 1)
    kx, kp, kb = jax.random.split(jax.random.key(args.seed), 3)
    x = jax.random.uniform(kx, (args.batch,) + shape, jnp.float32)
    params = analysis.with_random_biases(model.init(kp, x[:1]), kb)
    return model, params, x


def time_library(args, model, params, x, methods) -> dict[str, Any]:
    import jax

    import slp
    from slp.models import as_single_example

    f = as_single_example(model, params)
    keys = jax.random.split(jax.random.key(args.seed + 1), x.shape[0])
    options = {
        "integrated_gradients": {"steps": args.ig_steps, "batch_size": args.ig_batch_size},
        "smoothgrad": {"samples": args.smoothgrad_samples},
    }
    out = {}
    for method in methods:
        opts = options.get(method, {})
        if method == "smoothgrad":
            fn = jax.jit(
                jax.vmap(lambda xi, k, o=opts: slp.attribute(f, xi, "smoothgrad", key=k, **o))
            )

            def call(fn=fn):
                return fn(x, keys).block_until_ready()
        else:
            fn = jax.jit(jax.vmap(lambda xi, m=method, o=opts: slp.attribute(f, xi, m, **o)))

            def call(fn=fn):
                return fn(x).block_until_ready()

        res = _time(call, args.repeats)
        res["images_per_s"] = x.shape[0] / res["median_s"]
        res["options"] = {k: v for k, v in opts.items()}
        out[method] = res
        print(f"  {method:24s} {res['images_per_s']:9.1f} img/s", file=sys.stderr, flush=True)
    return out


def torch_port(model, params, x, dtype=None):
    """The same network and inputs in torch (NCHW; flattened in flax's NHWC order).

    Args:
      model, params: a `slp.models.TwoConv` (odd kernel, stride 1) and its parameters.
      x: a batch ``(N, H, W, C)``.
      dtype: NumPy dtype of the torch weights and inputs (default float32).

    Returns:
      ``(net, x_NCHW)``: the torch module in eval mode and the batch in its layout.
    """
    import numpy as np
    import torch

    dtype = np.float32 if dtype is None else dtype

    p = params["params"]
    c_in = x.shape[-1]
    f1, f2 = model.features
    k = model.kernel_size
    side = x.shape[1] // 4

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(c_in, f1, k, padding=k // 2)
            self.relu1 = torch.nn.ReLU()
            self.pool1 = torch.nn.MaxPool2d(2)
            self.conv2 = torch.nn.Conv2d(f1, f2, k, padding=k // 2)
            self.relu2 = torch.nn.ReLU()
            self.pool2 = torch.nn.MaxPool2d(2)
            self.dense1 = torch.nn.Linear(side * side * f2, model.hidden)
            self.relu3 = torch.nn.ReLU()
            self.dense2 = torch.nn.Linear(model.hidden, model.num_classes)

        def forward(self, x_NCHW):
            h = self.pool1(self.relu1(self.conv1(x_NCHW)))
            h = self.pool2(self.relu2(self.conv2(h)))
            h = h.permute(0, 2, 3, 1).reshape(h.shape[0], -1)
            return self.dense2(self.relu3(self.dense1(h)))

    def t(a):
        return torch.from_numpy(np.array(a, dtype))

    net = Net().to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    for conv, name in ((net.conv1, "Conv_0"), (net.conv2, "Conv_1")):
        conv.weight.data = t(p[name]["kernel"]).permute(3, 2, 0, 1).contiguous()
        conv.bias.data = t(p[name]["bias"])
    for lin, name in ((net.dense1, "Dense_0"), (net.dense2, "Dense_1")):
        lin.weight.data = t(p[name]["kernel"]).T.contiguous()
        lin.bias.data = t(p[name]["bias"])
    return net, t(x).permute(0, 3, 1, 2).contiguous()


def time_torch(args, model, params, x, y) -> dict[str, Any]:
    import numpy as np
    import torch
    from captum.attr import (
        Deconvolution,
        GuidedBackprop,
        InputXGradient,
        IntegratedGradients,
        NoiseTunnel,
        Saliency,
    )
    from zennit.attribution import Gradient
    from zennit.composites import EpsilonPlus

    torch.set_num_threads(args.threads)
    net, xt = torch_port(model, params, x)
    with torch.no_grad():
        yt = net(xt).numpy()
    max_diff = float(np.max(np.abs(yt - np.asarray(y))))
    targets = torch.from_numpy(np.argmax(yt, axis=1))
    onehot = torch.nn.functional.one_hot(targets, yt.shape[1]).float()
    # SmoothGrad's noise as in slp.attributions.smoothgrad: 0.15 of each image's range.
    stdevs = float(0.15 * (xt.amax() - xt.amin()))

    def inp():
        return xt.clone().requires_grad_(True)

    calls = {
        "captum_saliency": lambda: Saliency(net).attribute(inp(), target=targets, abs=False),
        "captum_input_x_gradient": lambda: InputXGradient(net).attribute(inp(), target=targets),
        "captum_integrated_gradients": lambda: IntegratedGradients(net).attribute(
            xt, target=targets, n_steps=args.ig_steps
        ),
        "captum_smoothgrad": lambda: NoiseTunnel(Saliency(net)).attribute(
            inp(),
            nt_type="smoothgrad",
            nt_samples=args.smoothgrad_samples,
            stdevs=stdevs,
            target=targets,
            abs=False,
        ),
        "captum_guided_backprop": lambda: GuidedBackprop(net).attribute(inp(), target=targets),
        "captum_deconvolution": lambda: Deconvolution(net).attribute(inp(), target=targets),
    }

    def epsilon_plus():
        with Gradient(model=net, composite=EpsilonPlus()) as attributor:
            return attributor(inp(), attr_output=onehot)

    calls["zennit_epsilon_plus"] = epsilon_plus
    out = {"torch_version": torch.__version__, "max_logit_difference_to_jax": max_diff}
    for name, call in calls.items():
        res = _time(call, args.repeats)
        res["images_per_s"] = x.shape[0] / res["median_s"]
        out[name] = res
        print(f"  {name:28s} {res['images_per_s']:9.1f} img/s", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark; returns the dict written to bench_attributions.json."""
    args = parse_args(argv)
    xla_threads_set = cli.limit_xla_threads(args.threads)
    import jax

    import slp
    from slp.data._files import atomic_writer

    methods = args.methods or [m for m in slp.available_methods() if m != "insens"]
    unknown = sorted(set(methods) - set(slp.available_methods()))
    if unknown:
        raise ValueError(
            f"unknown methods {unknown}; available: {', '.join(slp.available_methods())}"
        )
    model, params, x = build_network(args)
    y = jax.vmap(lambda xi: model.apply(params, xi[None])[0])(x)
    print(
        f"load average {_load()} on {os.cpu_count()} CPUs; batch {args.batch}, "
        f"input {tuple(x.shape[1:])}, {args.threads} threads",
        file=sys.stderr,
        flush=True,
    )
    result: dict[str, Any] = {
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "jax_version": jax.__version__,
            "load_at_start": _load(),
            "xla_thread_limit_applied": xla_threads_set,
        },
        "library": time_library(args, model, params, x, methods),
    }
    if not args.no_torch:
        result["torch"] = time_torch(args, model, params, x, y)
        result["ratios"] = {
            m: result["library"][m]["images_per_s"] / result["torch"][COMPARE[m]]["images_per_s"]
            for m in methods
            if m in COMPARE
        }
    result["machine"]["load_at_end"] = _load()
    result["machine"]["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"\n{'method':26s} {'img/s':>9s}  {'vs':28s} {'img/s':>9s} {'ratio':>7s}")
    for m in methods:
        ips = result["library"][m]["images_per_s"]
        line = f"{m:26s} {ips:9.1f}"
        if "torch" in result and m in COMPARE:
            ref = COMPARE[m]
            line += f"  {ref:28s} {result['torch'][ref]['images_per_s']:9.1f}"
            line += f" {result['ratios'][m]:7.2f}"
        print(line)
    print(
        f"load average at start {result['machine']['load_at_start']}, end {_load()}; "
        f"peak memory {result['machine']['peak_rss_mb']:.0f} MB"
    )

    args.out.mkdir(parents=True, exist_ok=True)
    with atomic_writer(args.out / "bench_attributions.json") as fh:
        fh.write(json.dumps(result, indent=2).encode())
    return result


if __name__ == "__main__":
    main()

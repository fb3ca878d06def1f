"""Where the lattice in the Pong Insens map comes from: the stride of the first convolution.

Run (needs the `rl` extra for the emulator frames):
    python experiments/pong_lattice.py    # about 3-5 minutes on 2 CPU cores

The Insens map of the trained RLNET (results/pong.png, Figure 6 right) repeats a small
pattern over the whole frame. The trained weights are not in the repository, so this
measures the same architecture (`slp.models.QNetwork`: conv 8x8 stride 4, conv 4x4
stride 2, conv 3x3 stride 1, dense 512) with **random weights** (flax's default
initialisation, --seeds seeds) on a **real Pong frame stack** from the emulator (the
seed of experiments/pong.py, then --steps agent steps of seeded random actions).

Measures, per network:

1. Periodic share R_p of a map: the fraction of its variance (about its mean) that a
   pattern repeating every p pixels along both axes explains, i.e. the map averaged over
   each of the p x p cosets {(a + p i, b + p j)} of the pixel grid, tiled back. Where p
   divides 84 this is the share of the map's power spectrum at frequencies that are
   multiples of 1/p cycles per pixel. A map without spatial structure scores about
   p^2 / 7056 (0.002 for p = 4). R_p for a multiple of p is at least R_p.
2. The same for networks whose first convolution has stride 3 or 5 (kernel 8x8 and every
   other layer unchanged): if the lattice comes from the stride, its period moves with it.
3. For the stride-4 network, Insens per hidden ReLU layer (`slp.insens(f, by_layer=True)`):
   each layer's share of the inactive neurons and R_4, R_8 of its map.
4. The share of |Insens| on the game's objects (`pong.object_pixels`: paddles, ball,
   score) against the share of the frame's pixels that are objects.

Maps are summed over the four stacked frames (the last column of results/pong.png).
Writes --out/pong_lattice.json and pong_lattice.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from lab import cli


def build_parser() -> argparse.ArgumentParser:
    """The options (importing this costs no jax: ``--help`` answers at once)."""
    parser = cli.script_parser(__doc__)
    cli.add_out_option(parser)
    parser.add_argument(
        "--seeds", type=cli.positive, default=5, help="random initialisations per network"
    )
    parser.add_argument(
        "--frame-seed", type=cli.non_negative, default=2019, help="environment seed"
    )
    parser.add_argument(
        "--steps", type=cli.non_negative, default=60, help="random actions before the frame"
    )
    return parser


if __name__ == "__main__":
    build_parser().parse_args()  # --help and malformed options answered before jax loads

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from pong import object_pixels

import slp
from lab import analysis
from lab.rl.env import make_env
from slp.models import QNetwork, as_single_example

PERIODS = tuple(range(2, 13))
CONTROL_STRIDES = (3, 5)
LAYERS = ("conv1", "conv2", "conv3", "dense")


class FirstStrideQNetwork(nn.Module):
    """`QNetwork` with the first convolution's stride as a parameter (same parameter names)."""

    stride: int = 4
    num_actions: int = 6

    @nn.compact
    def __call__(self, x_BHWC: jax.Array) -> jax.Array:
        s = self.stride
        h = nn.relu(nn.Conv(32, (8, 8), strides=(s, s), padding="VALID")(x_BHWC))
        h = nn.relu(nn.Conv(64, (4, 4), strides=(2, 2), padding="VALID")(h))
        h = nn.relu(nn.Conv(64, (3, 3), strides=(1, 1), padding="VALID")(h))
        h = h.reshape((h.shape[0], -1))
        h = nn.relu(nn.Dense(512)(h))
        return nn.Dense(self.num_actions)(h)


def periodic_share(map_HW: np.ndarray, period: int) -> float:
    """R_p: the share of the map's variance explained by a pattern repeating every p pixels.

    Args:
      map_HW: array `(H, W)`.
      period: p >= 1.

    Returns:
      ``|P m|^2 / |m|^2`` for ``m`` the map minus its mean and ``P`` the orthogonal
      projection onto maps constant on each coset ``(a + p i, b + p j)``; 0 for a
      constant map.
    """
    m = np.asarray(map_HW, np.float64)
    m = m - m.mean()
    total = float(np.sum(m * m))
    if total == 0.0:
        return 0.0
    tiled = np.empty_like(m)
    for a in range(period):
        for b in range(period):
            tiled[a::period, b::period] = m[a::period, b::period].mean()
    return float(np.sum(tiled * tiled) / total)


def frame_stack(*, seed: int, steps: int) -> np.ndarray:
    """A uint8 Pong observation `(84, 84, 4)` after ``steps`` seeded random actions."""
    env = make_env("Pong", clip_rewards=False)
    try:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        for _ in range(steps):
            obs, _, term, trunc, _ = env.step(int(rng.integers(env.action_space.n)))
            if term or trunc:
                raise RuntimeError("the episode ended before the frame was taken")
    finally:
        env.close()
    return np.asarray(obs)


def measure(model: nn.Module, params, x: np.ndarray, objects: np.ndarray, *, by_layer: bool):
    """Periodic shares of the Insens map of one network, its share on objects, per layer."""
    f = as_single_example(model, params)
    xj = jnp.asarray(x)
    out: dict[str, Any] = {}
    if by_layer:
        layers = jax.block_until_ready(slp.insens(f, by_layer=True)(xj))
        omega = np.asarray(layers.total(), np.float64)
        counts = np.array([int(c) for c in layers.counts])
        out["layers"] = {
            name: {
                "inactive": int(counts[k]),
                "inactive_share": float(counts[k] / counts.sum()),
                "periodic_share": {
                    str(p): periodic_share(np.asarray(layers.maps[k]).sum(-1), p) for p in (4, 8)
                },
            }
            for k, name in enumerate(LAYERS)
        }
    else:
        omega = np.asarray(jax.block_until_ready(slp.insens(f)(xj)), np.float64)
    summed = omega.sum(-1)
    a = np.abs(omega)
    out["periodic_share"] = {str(p): periodic_share(summed, p) for p in PERIODS}
    out["object_mass_share"] = float(a[objects].sum() / a.sum())
    return out


def summarise(runs: list[dict[str, Any]], key: str) -> dict[str, dict]:
    """Mean, std... over runs of each entry of ``run[key]`` (a dict of numbers)."""
    return {p: analysis.summary(np.array([r[key][p] for r in runs])) for p in runs[0][key]}


def layer_summary(runs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One layer's inactive neurons, their share and its map's periodic shares, over runs."""
    rows = [r["layers"][name] for r in runs]
    return {
        "inactive": analysis.summary(np.array([r["inactive"] for r in rows])),
        "inactive_share": analysis.summary(np.array([r["inactive_share"] for r in rows])),
        "periodic_share": summarise(rows, "periodic_share"),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    t0 = time.perf_counter()
    obs = frame_stack(seed=args.frame_seed, steps=args.steps)
    x = obs.astype(np.float32) / 255.0
    objects = object_pixels(obs)
    networks: dict[str, Any] = {}
    for stride in (4, *CONTROL_STRIDES):
        model = QNetwork() if stride == 4 else FirstStrideQNetwork(stride=stride)
        runs = []
        for seed in range(args.seeds):
            params = model.init(jax.random.key(seed), jnp.zeros((1, *x.shape)))
            if stride == 4 and seed == 0:
                # The stand-in with stride 4 is QNetwork itself (same parameters, same output).
                same = FirstStrideQNetwork(stride=4).apply(params, x[None])
                np.testing.assert_allclose(same, model.apply(params, x[None]), rtol=1e-6)
            runs.append(measure(model, params, x, objects, by_layer=stride == 4))
            r4 = runs[-1]["periodic_share"]["4"]
            print(f"stride {stride} seed {seed}: R_4 {r4:.3f}", file=sys.stderr)
        shares = summarise(runs, "periodic_share")
        entry = {
            "first_conv_stride": stride,
            "periodic_share": shares,
            "lattice_period": lattice_period(shares),
            "object_mass_share": analysis.summary(np.array([r["object_mass_share"] for r in runs])),
        }
        if stride == 4:
            entry["layers"] = {name: layer_summary(runs, name) for name in LAYERS}
        networks[f"stride{stride}"] = entry
    return {
        "experiment": "Period of the lattice in RLNET's Insens map on Pong",
        "weights": (
            f"random: flax default initialisation (zero biases), seeds 0-{args.seeds - 1}; "
            "not the trained agent of results/pong.json"
        ),
        "input": {
            "source": "Pong emulator (lab.rl.env.make_env), 84x84x4 uint8 frames / 255",
            "frame_seed": args.frame_seed,
            "random_action_steps": args.steps,
            "object_pixel_share": float(objects.mean()),
        },
        "map": "Insens summed over the four stacked frames",
        "periodic_share_of_unstructured_map": {
            str(p): (p * p - 1) / (x.shape[0] * x.shape[1] - 1) for p in PERIODS
        },
        "networks": networks,
        "config": {
            "seeds": args.seeds,
            "periods": list(PERIODS),
            "control_strides": list(CONTROL_STRIDES),
            "seconds": round(time.perf_counter() - t0, 1),
            "command": " ".join(["python experiments/pong_lattice.py", *args.argv]),
        },
    }


def lattice_period(shares: dict[str, dict], *, within: float = 0.5) -> int:
    """The smallest period p whose mean R_p reaches ``within`` of the largest mean R_p.

    R_kp >= R_p, so a lattice of period p also scores at 2p, 3p...; its period is the
    smallest of them. Half of the largest, not nearly all of it: the map superposes
    lattices (the second and third convolutions repeat at twice the first one's stride),
    so a multiple of the base period scores somewhat higher than the base period itself.
    """
    top = max(v["mean"] for v in shares.values())
    return min(int(p) for p, v in shares.items() if v["mean"] >= within * top)


def _mean_std(s: dict[str, Any]) -> str:
    """``mean ± std`` of a summary, to three decimals."""
    return f"{s['mean']:.3f} ± {s['std']:.3f}"


def markdown(result: dict[str, Any]) -> str:
    nets = result["networks"]
    unstructured = result["periodic_share_of_unstructured_map"]
    periods = list(unstructured)
    lines = [
        "# The lattice in RLNET's Insens map on Pong",
        "",
        f"Produced by `{result['config']['command']}` in {result['config']['seconds']:.0f} s. "
        f"Weights: {result['weights']}. Input: one real Pong frame stack from the emulator "
        f"(seed {result['input']['frame_seed']}, {result['input']['random_action_steps']} "
        "random actions). Map: Insens summed over the four frames. Mean ± std over seeds.",
        "",
        "R_p: share of the map's variance explained by a pattern repeating every p pixels "
        "along both axes (the map averaged over the p x p cosets of the pixel grid). A map "
        "without spatial structure scores (p^2 - 1) / (84^2 - 1); R_p of a multiple of p is "
        "at least R_p. Period: the smallest p whose R_p reaches half of the largest (the "
        "later convolutions add a lattice at twice the first one's stride, so a multiple of "
        "the base period scores somewhat higher than the base period itself).",
        "",
        *analysis.table(
            ["first conv stride", "period", *(f"R_{p}" for p in periods)],
            [
                ["(no structure)", "-", *(f"{unstructured[p]:.3f}" for p in periods)],
                *(
                    [
                        net["first_conv_stride"],
                        net["lattice_period"],
                        *(_mean_std(net["periodic_share"][p]) for p in periods),
                    ]
                    for net in nets.values()
                ),
            ],
        ),
        "",
        "## Per layer (first conv stride 4)",
        "",
        *analysis.table(
            ["layer", "inactive neurons", "share of inactive", "R_4 of its map", "R_8 of its map"],
            [
                [
                    name,
                    analysis.fmt(layer["inactive"], digits=0),
                    analysis.fmt(layer["inactive_share"]),
                    analysis.fmt(layer["periodic_share"]["4"]),
                    analysis.fmt(layer["periodic_share"]["8"]),
                ]
                for name, layer in nets["stride4"]["layers"].items()
            ],
        ),
        "",
        "## Share of |Insens| on the objects",
        "",
        f"Objects (paddles, ball, score) are {result['input']['object_pixel_share']:.3f} of "
        "the frame's pixels.",
        "",
        *analysis.table(
            ["first conv stride", "share of |Insens| on objects"],
            [
                [net["first_conv_stride"], analysis.fmt(net["object_mass_share"])]
                for net in nets.values()
            ],
        ),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = build_parser()
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error("--seeds must be >= 1")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    result = run(args)
    analysis.write_json(args.out / "pong_lattice.json", result)
    analysis.write_text(args.out / "pong_lattice.md", markdown(result))
    print(f"wrote {args.out}/pong_lattice.json, .md", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()

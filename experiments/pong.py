"""Figure 6 (right) of the paper: Insens and every attribution method on a Pong game state.

Needs the `rl` extra and a trained RLNET checkpoint (experiments/pong_train.py).

    python experiments/pong.py    # the latest checkpoint in the data dir
    python experiments/pong.py --checkpoint PATH --out results

Time: about 3 minutes on 2 CPU cores (Insens of the 84x84x4 Q-network takes ~20 s).

The game state: the trained agent plays greedily from a seeded reset; among its first
`--search-steps` steps the state where its action matters most (largest spread
max_a Q - min_a Q) is kept. Every method explains the Q-value of the greedy action
(Insens explains no particular output). Writes `<out>/pong.png` (default out: runs/; the
4 stacked frames and, per method, its map on each frame with one colour scale per method,
and the map summed over frames, with a colour key below) and `<out>/pong.json` (the state,
Q-values, and per method the share of the map's absolute mass on each frame and on the
game's objects - paddles, ball and score, see `object_pixels` - and its cosine
similarity to Insens).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import time
from pathlib import Path

from lab import cli


def build_parser() -> argparse.ArgumentParser:
    """The options (importing this costs no jax: ``--help`` answers at once)."""
    parser = cli.script_parser(__doc__)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="default: latest.msgpack in the data dir, else results/pong_qnetwork.msgpack "
        "(a parameters-only copy, kept out of git)",
    )
    cli.add_out_option(parser)
    parser.add_argument("--name", default="pong", help="file stem of the outputs")
    parser.add_argument(
        "--seed",
        type=cli.non_negative,
        default=2019,
        help="seed of the environment and of the methods' keys",
    )
    parser.add_argument(
        "--search-steps",
        type=cli.positive,
        default=400,
        help="agent steps searched for the game state shown",
    )
    parser.add_argument("--methods", default=None, help="comma-separated subset (default: all)")
    return parser


if __name__ == "__main__":
    build_parser().parse_args()  # --help and malformed options answered before jax loads

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure

import slp
from lab import analysis
from lab.rl.dqn import default_checkpoint_dir, load_checkpoint, q_values
from lab.rl.env import make_env
from slp.attributions import get_method
from slp.models import QNetwork, as_single_example
from slp.plotting import (
    KEY_MARGIN,
    canvas,
    colour_key,
    heatmap,
    save_figure,
    show_image,
    symmetric_limit,
)

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "pong_qnetwork.msgpack"
PONG_ACTIONS = ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")


def find_game_state(
    params, num_actions: int, *, seed: int, search_steps: int, skip_steps: int = 30
) -> dict:
    """Plays greedily and returns the state with the largest Q-value spread.

    Args:
      params: Q-network parameters.
      num_actions: Q-network output width.
      seed: environment seed.
      search_steps: agent steps searched (the episode is not restarted).
      skip_steps: initial steps not considered (the frame stack still holds the reset).

    Returns:
      dict with obs (uint8 `(84, 84, 4)`), q (float `(num_actions,)`), step (int).
    """
    model = QNetwork(num_actions=num_actions)
    q_fn = jax.jit(lambda o: q_values(model, params, o))
    env = make_env("Pong", clip_rewards=False)
    try:
        obs, _ = env.reset(seed=seed)
        best = None
        for step in range(search_steps):
            q = np.asarray(q_fn(obs))
            spread = float(q.max() - q.min())
            if step >= skip_steps and (best is None or spread > best["spread"]):
                best = {"obs": obs.copy(), "q": q, "step": step, "spread": spread}
            obs, _, term, trunc, _ = env.step(int(q.argmax()))
            if term or trunc:
                break
    finally:
        env.close()
    if best is None:
        raise RuntimeError("the episode ended before any state could be chosen")
    return best


def object_pixels(obs_HWC: np.ndarray) -> np.ndarray:
    """Pixels that differ from the most common value of their row, frame by frame.

    Rows of the playing field are mostly background and walls are uniform rows, so what
    stands out are the paddles, the ball and the score digits.

    Args:
      obs_HWC: uint8 `(H, W, C)`.

    Returns:
      bool `(H, W, C)`.
    """
    obs_HWC = np.asarray(obs_HWC)
    mask = np.zeros(obs_HWC.shape, bool)
    for c in range(obs_HWC.shape[-1]):
        for r in range(obs_HWC.shape[0]):
            row = obs_HWC[r, :, c]
            values, counts = np.unique(row, return_counts=True)
            mask[r, :, c] = row != values[np.argmax(counts)]
    return mask


def method_options(name: str, seed: int) -> dict:
    """Fixed randomness for methods that draw noise (a `key` option)."""
    params = inspect.signature(get_method(name)).parameters
    return {"key": jax.random.key(seed)} if "key" in params else {}


def map_statistics(values: np.ndarray, objects: np.ndarray, reference: np.ndarray) -> dict:
    """Summary numbers of one map `(84, 84, 4)` (see the module docstring)."""
    a = np.abs(values)
    total = float(a.sum())
    cos = float(
        np.sum(values * reference)
        / max(np.linalg.norm(values) * np.linalg.norm(reference), np.finfo(np.float64).tiny)
    )
    return {
        "max_abs": float(a.max()),
        "sum": float(values.sum()),
        "frame_mass_share": [float(s / total) if total else 0.0 for s in a.sum(axis=(0, 1))],
        "object_mass_share": float(a[objects].sum() / total) if total else 0.0,
        "cosine_to_insens": cos,
    }


ROW_NOTES = {
    "insens": "4-pixel lattice:\nfirst conv has\nstride 4",
}
"""Extra lines under a method's row title (what to read in its maps)."""

KEY_LABEL = (
    "red positive, blue negative, white 0; a row's four frame maps share one scale "
    "(max |value| over the frames), the sum of frames has its own"
)


def draw(x: np.ndarray, maps: dict[str, np.ndarray], *, title: str) -> Figure:
    """Rows: the 4 frames, then one row per method (4 frame maps, then their sum).

    A colour key below the grid gives the scale, in units of each scale's largest
    magnitude; `ROW_NOTES` adds a line of reading to a method's row title.
    """
    names = list(maps)
    n_rows, n_cols, cell = 1 + len(names), 5, 1.3
    fig, axes = canvas(n_rows, n_cols, cell=cell, left=1.5, top=0.9, bottom=KEY_MARGIN + 0.1)
    for k in range(4):
        show_image(axes[0, k], x[..., k], title=f"frame {k + 1}" + (" (now)" if k == 3 else ""))
    heatmap(axes[0, 4], x[..., 3] - x[..., 0], title="frame 4 - frame 1\n(maps: sum of frames)")
    axes[0, 0].set_ylabel("input", rotation=0, ha="right", va="center", fontsize=8)
    for r, name in enumerate(names, start=1):
        m = maps[name]
        limit = symmetric_limit(m)
        for k in range(4):
            heatmap(axes[r, k], m[..., k], limit=limit)
        heatmap(axes[r, 4], m)
        label = name + (f"\n({ROW_NOTES[name]})" if name in ROW_NOTES else "")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(title, fontsize=9)
    colour_key(fig, label=KEY_LABEL)
    return fig


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)

    ckpt = args.checkpoint
    if ckpt is None:
        ckpt = default_checkpoint_dir("Pong") / "latest.msgpack"
        if not ckpt.is_file():
            ckpt = COMMITTED
    ck = load_checkpoint(ckpt)
    methods = slp.available_methods()
    if args.methods:
        wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = sorted(set(wanted) - set(methods))
        if unknown:
            raise SystemExit(f"unknown methods {unknown}; available: {', '.join(methods)}")
        methods = tuple(m for m in methods if m in wanted)

    state = find_game_state(
        ck.params, ck.num_actions, seed=args.seed, search_steps=args.search_steps
    )
    action = int(state["q"].argmax())
    x = jnp.asarray(state["obs"], jnp.float32) / 255.0
    f = as_single_example(QNetwork(num_actions=ck.num_actions), ck.params)

    maps, seconds = {}, {}
    for name in methods:
        t = time.perf_counter()
        m = slp.attribute(f, x, name, target=action, **method_options(name, args.seed))
        maps[name] = np.asarray(jax.block_until_ready(m), np.float64)
        seconds[name] = round(time.perf_counter() - t, 2)
        if maps[name].shape != x.shape:
            raise RuntimeError(f"{name} returned shape {maps[name].shape}, expected {x.shape}")
        print(f"{name}: {seconds[name]} s", file=sys.stderr)

    objects = object_pixels(state["obs"])
    reference = maps.get("insens", next(iter(maps.values())))
    action_name = PONG_ACTIONS[action] if ck.num_actions == 6 else str(action)
    title = (
        f"RLNET on Pong ({ck.step * ck.config.frame_skip / 1e6:.2f}M training frames); "
        f"state at step {state['step']}, greedy action {action_name}, "
        f"Q spread {state['spread']:.2f}"
    )
    fig = draw(np.asarray(x), maps, title=title)
    png = save_figure(fig, args.out / f"{args.name}.png", dpi=110)

    results = {
        "experiment": "RLNET on Pong: Insens and attribution baselines (Figure 6 right)",
        "checkpoint": {
            "file": ckpt.name,
            "agent_steps": ck.step,
            "frames": ck.step * ck.config.frame_skip,
            "trained_on": ck.device,
        },
        "state": {
            "seed": args.seed,
            "step": state["step"],
            "selection": f"largest max-min Q spread among the first {args.search_steps} steps",
            "q_values": [float(v) for v in state["q"]],
            "action": action,
            "action_name": action_name,
            "object_pixel_share": float(objects.mean()),
            "object_pixels": "differ from their row's most common value (paddles, ball, score)",
        },
        "explained_output": "Q-value of the greedy action (Insens: all inactive neurons)",
        "methods": {
            name: {**map_statistics(maps[name], objects, reference), "seconds": seconds[name]}
            for name in maps
        },
        "figure": png.name,
    }
    analysis.write_json(args.out / f"{args.name}.json", results)
    print(f"wrote {png} and {args.out / (args.name + '.json')}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()

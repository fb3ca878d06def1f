"""Trains the RLNET Q-network on Atari Pong with DQN and evaluates it.

The paper's Atari Pong experiment (Figure 6 right).

Needs the `rl` extra: `pip install -e .[rl]`.

    # train (resumes from the checkpoint dir if it holds latest.msgpack), then evaluate
    python experiments/pong_train.py --preset cpu --total-steps 300000 --max-seconds 4500
    # on a GPU machine with 16 cores: 8 environment processes, one update per agent step
    python experiments/pong_train.py --preset gpu --max-seconds 435 --no-resume \
        --eval-episodes 0 --checkpoint-every 50000 --no-progress > train.log 2>&1
    python experiments/pong_train.py --preset gpu --max-seconds 290 \
        --eval-episodes 0 --checkpoint-every 50000 --no-progress > train2.log 2>&1
    # evaluate only: best and latest checkpoint and the random policy, write the summary
    python experiments/pong_train.py --eval-only --eval-episodes 10 \
        --training-log train.log --training-log train2.log
    # redraw the committed results/pong_training.png from its JSON (seconds)
    python experiments/pong_train.py --replot --out results

Time: training runs until --total-steps or --max-seconds. The network of results/pong*
took the two GPU commands above (one H100 and 16 cores, about 700 agent steps and as
many gradient steps per second: 2.08M frames in 12 minutes; it plays at about +17). On
2 shared CPU cores the `cpu` preset manages only a few gradient steps per second, too
few for Pong in an hour. Evaluating 3 x 10 episodes takes about 5 minutes on 2 CPU cores.

Writes checkpoints to `--checkpoint-dir` (default `$SLP_DATA_DIR/checkpoints/pong`) and,
in --out (default runs/), `pong_training.json` (frames trained, evaluation and
random-policy returns, the learning curve) and `pong_training.png` (the mean of the last 10 training
returns against frames, each evaluated checkpoint at the frames where it was saved).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from lab import cli
from lab.rl.config import PRESETS


def build_parser() -> argparse.ArgumentParser:
    """The options (importing this costs no jax: ``--help`` answers at once)."""
    parser = cli.script_parser(__doc__)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="DQN configuration (lab.rl.config.PRESETS)",
    )
    parser.add_argument(
        "--total-steps", type=cli.positive, default=10_000_000, help="agent steps in all"
    )
    parser.add_argument(
        "--max-seconds", type=cli.positive_float, default=None, help="wall-time limit of training"
    )
    parser.add_argument(
        "--seed", type=cli.non_negative, default=0, help="seed of agent and environments"
    )
    parser.add_argument(
        "--checkpoint-dir", type=Path, default=None, help="None: <data dir>/checkpoints/pong"
    )
    parser.add_argument(
        "--checkpoint-every", type=cli.positive, default=100_000, help="agent steps"
    )
    parser.add_argument("--no-resume", action="store_true", help="start afresh")
    parser.add_argument("--save-replay", action="store_true", help="checkpoint the replay buffer")
    parser.add_argument("--eval-only", action="store_true", help="skip training")
    parser.add_argument(
        "--eval-episodes", type=cli.non_negative, default=10, help="0 skips evaluation"
    )
    parser.add_argument(
        "--eval-epsilon", type=cli.probability, default=0.01, help="exploration in evaluation"
    )
    parser.add_argument(
        "--eval-seed", type=cli.non_negative, default=12345, help="seed of evaluation episodes"
    )
    cli.add_out_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--training-log",
        type=Path,
        action="append",
        default=[],
        help="log file(s) of the training runs whose progress lines go into the summary",
    )
    cli.add_redraw_options(
        parser, replot="only redraw pong_training.png from the pong_training.json in --out"
    )
    return parser


if __name__ == "__main__":
    build_parser().parse_args()  # --help and malformed options answered before jax loads

import numpy as np
from matplotlib.figure import Figure

from lab import analysis
from lab.rl.dqn import default_checkpoint_dir, evaluate, load_checkpoint, train
from slp.plotting import save_figure


def running_mean(x: np.ndarray, window: int = 10) -> np.ndarray:
    """Mean of the last `window` entries (fewer at the start), same length as `x`."""
    c = np.cumsum(np.concatenate([[0.0], np.asarray(x, np.float64)]))
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def _eval_dict(result, seconds: float) -> dict:
    return {
        "mean_return": result.mean_return,
        "std_return": result.std_return,
        "returns": result.returns.tolist(),
        "episode_lengths_agent_steps": result.lengths.tolist(),
        "seconds": round(seconds, 1),
    }


def curve_figure(summary: dict, returns: np.ndarray | None = None) -> Figure:
    """The learning curve and the evaluations of the checkpoints, from the summary alone.

    Args:
      summary: the dict written to pong_training.json (learning curve, evaluation,
        best checkpoint's step, agent steps, frame skip).
      returns: optional training returns of every episode `(E,)` (not in the summary; the
        episodes end at the frames of the unsubsampled curve, so only with a full curve).

    Returns:
      The figure: the mean of the last 10 training returns against frames; each evaluated
      checkpoint as a point with its standard deviation over the evaluation episodes, at
      the frames where it was saved; the random policy as a line.
    """
    curve = summary["learning_curve"]
    frames = np.asarray(curve["frames"], np.float64) / 1e6
    skip = summary["config"]["frame_skip"]
    ev = summary["evaluation"]
    fig = Figure(figsize=(7.5, 4.6))
    ax = fig.add_subplot()
    if returns is not None:
        ax.plot(frames, returns, ".", ms=2, alpha=0.4, color="0.5", label="training episode")
    ax.plot(frames, curve["mean10_return"], color="C0", label="training: mean of last 10 episodes")
    saved_at = {"latest": summary["agent_steps"], "best": summary.get("best_checkpoint_step")}
    labels = {
        "latest": "final checkpoint",
        "best": "'best' checkpoint (highest training mean of 10)",
    }
    for name, colour, marker in (("best", "C2", "s"), ("latest", "C1", "o")):
        if name not in ev or saved_at[name] is None:
            continue
        r, at = ev[name], saved_at[name] * skip / 1e6
        ax.errorbar(
            at,
            r["mean_return"],
            yerr=r["std_return"],
            fmt=marker,
            color=colour,
            capsize=3,
            label=f"eval, {labels[name]} at {at:.2f}M frames: "
            f"{r['mean_return']:.1f} ± {r['std_return']:.1f}",
        )
    if "random" in ev:
        r = ev["random"]
        ax.axhline(
            r["mean_return"],
            color="C3",
            ls="--",
            lw=1,
            label=f"eval, random policy: {r['mean_return']:.1f} ± {r['std_return']:.1f}",
        )
    ax.set_xlabel("emulator frames (millions)")
    ax.set_ylabel("return (game score difference)")
    ax.set_ylim(-21.5, 21.5)
    ax.set_title(
        "DQN on Pong: RLNET training; evaluation: mean ± std over "
        f"{ev['episodes']} episodes, epsilon {ev['epsilon']:g}",
        fontsize=10,
    )
    ax.legend(loc="upper left", fontsize=7)
    best = summary.get("best_training_mean10")
    if best is not None and "best" in ev:
        ax.text(
            0.98,
            0.03,
            f"'best' was saved when the training mean of 10 peaked ({best:.1f}); chosen on\n"
            "noisy training returns, it need not evaluate best: compare the error bars",
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=7,
        )
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.replot:
        summary = json.loads((args.out / "pong_training.json").read_text())
        save_figure(curve_figure(summary), args.out / "pong_training.png", dpi=120)
        print(f"wrote {args.out / 'pong_training.png'} from pong_training.json", file=sys.stderr)
        return summary

    config = PRESETS[args.preset]
    ckpt_dir = args.checkpoint_dir or default_checkpoint_dir(config.game)
    if not args.eval_only:
        summary = train(
            config,
            total_steps=args.total_steps,
            seed=args.seed,
            checkpoint_dir=ckpt_dir,
            resume=not args.no_resume,
            max_seconds=args.max_seconds,
            checkpoint_every=args.checkpoint_every,
            save_replay=args.save_replay,
            progress=not args.no_progress,
        )
        print(
            f"trained to agent step {summary.step} ({summary.frames} frames, "
            f"{summary.updates} updates, {summary.episodes} episodes) at "
            f"{summary.frames_per_second:.0f} frames/s",
            file=sys.stderr,
        )
    if args.eval_episodes <= 0:
        return {}

    latest = load_checkpoint(ckpt_dir / "latest.msgpack")
    evals = {}
    candidates = {"latest": latest.params}
    if (ckpt_dir / "best.msgpack").is_file():
        best = load_checkpoint(ckpt_dir / "best.msgpack")
        candidates = {"best": best.params, "latest": latest.params}
    candidates["random"] = None
    for name, params in candidates.items():
        t = time.perf_counter()
        r = evaluate(
            params,
            num_episodes=args.eval_episodes,
            epsilon=args.eval_epsilon,
            seed=args.eval_seed,
            game=latest.config.game,
        )
        evals[name] = _eval_dict(r, time.perf_counter() - t)
        msg = f"eval {name}: mean return {r.mean_return:.2f} +- {r.std_return:.2f}"
        print(msg, file=sys.stderr)

    frames = latest.episode_end_steps * latest.config.frame_skip
    curve = running_mean(latest.episode_returns)
    keep = np.unique(np.linspace(0, len(frames) - 1, min(len(frames), 200)).astype(int))
    results = {
        "experiment": "RLNET: DQN on Atari Pong (the paper's Figure 6 right)",
        "game": latest.config.game,
        "preprocessing": (
            "no sticky actions, frame skip 4 with max over the last 2 frames, 84x84 "
            "grayscale, 4 stacked frames, rewards clipped to [-1, 1], 1-30 no-op starts"
        ),
        "config": dataclasses.asdict(latest.config),
        "trained_on": latest.device,
        "agent_steps": latest.step,
        "frames_trained": latest.step * latest.config.frame_skip,
        "gradient_updates": latest.updates,
        "training_episodes": latest.episodes,
        "training_wall_seconds": round(latest.wall_seconds, 1),
        # -inf until 10 episodes have ended: null in (strict) JSON
        "best_training_mean10": (
            latest.best_mean_return if np.isfinite(latest.best_mean_return) else None
        ),
        "best_checkpoint_step": best.step if "best" in candidates else None,
        "evaluation": {
            "episodes": args.eval_episodes,
            "epsilon": args.eval_epsilon,
            "seed": args.eval_seed,
            "returns_are": "unclipped game score (agent points minus opponent points)",
            **evals,
        },
        "training_log": [
            line.strip()
            for log in args.training_log
            for line in log.read_text().splitlines()
            if line.startswith(("step ", "resumed ", "trained "))
        ],
        "learning_curve": {
            "frames": frames[keep].tolist(),
            "mean10_return": [round(float(v), 2) for v in curve[keep]],
        },
    }
    analysis.write_json(args.out / "pong_training.json", results)
    full = len(keep) == len(frames)  # every episode on the curve: its dots can be drawn too
    fig = curve_figure(results, latest.episode_returns if full else None)
    save_figure(fig, args.out / "pong_training.png", dpi=120)
    print(f"wrote {args.out / 'pong_training.json'}", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()

"""Train the 2CONV network on MNIST and save its checkpoint (reused unless --retrain).

Run:
    python experiments/train.py                 # about 4-7 minutes on 2 CPU cores
    python experiments/train.py --retrain       # train again even if a checkpoint exists

The checkpoint goes to `<data dir>/checkpoints/` (data dir: --data-dir, else
$SLP_DATA_DIR, else ~/.cache/slp), or to --checkpoint-dir; its name is derived
from the training config. A summary (config, test accuracy, time per epoch,
checkpoint path) is written to `<out>/mnist_train.json` (default out: runs/).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from lab import cli
from slp.data._files import atomic_writer


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parses `argv`, loads or trains the network, writes `<out>/mnist_train.json`."""
    parser = cli.script_parser(__doc__)
    cli.add_training_options(parser)
    cli.add_out_option(parser)
    parser.add_argument(
        "--num-test", type=cli.positive, default=None, help="first N test images only (None: all)"
    )
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    ck = cli.checkpoint_from_options(args, num_test=args.num_test)
    meta = ck.metadata
    history = meta.get("history", [])
    summary = {
        "checkpoint": str(ck.path),
        "reused_checkpoint": ck.reused,
        "config": meta["config"],
        "test_accuracy": meta["test_accuracy"],
        "num_test": meta.get("num_test"),
        "epoch_seconds": [round(h["seconds"], 1) for h in history],
        "epoch_cpu_seconds": [round(h["cpu_seconds"], 1) for h in history if "cpu_seconds" in h],
        "train_seconds": meta.get("train_seconds"),
        "history": history,
        "seconds_this_run": round(time.perf_counter() - t0, 1),
        "versions": meta.get("versions"),
    }
    with atomic_writer(args.out / "mnist_train.json") as fh:
        fh.write((json.dumps(summary, indent=2) + "\n").encode())
    verb = "reused" if ck.reused else "trained"
    print(
        f"{verb} {ck.path}: test accuracy {meta['test_accuracy']:.4f}; "
        f"summary in {args.out / 'mnist_train.json'}",
        file=sys.stderr,
    )
    return summary


if __name__ == "__main__":
    main()

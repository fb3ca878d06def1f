"""experiments/lab/cli.py: command-line options generated from configuration dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab import cli
from slp.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Toy:
    """A record with one field of each kind an option can have.

    Attributes:
      steps: how many steps.
      rate: the step size; a second line
        continues the text.
      name: a label.
      fast: take the shortcut.
      limit: stop early (None: never).
      widths: one number per layer.
    """

    steps: int = 3
    rate: float = 0.5
    name: str = "toy"
    fast: bool = False
    limit: int | None = None
    widths: tuple[int, ...] = (4, 8)


def _parser(fields=None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    cli.add_options(parser, Toy, fields)
    return parser


def test_field_help_reads_the_attributes_section_with_continuation_lines():
    helps = cli.field_help(Toy)
    assert helps["rate"] == "the step size; a second line continues the text."
    assert list(helps) == [f.name for f in dataclasses.fields(Toy)]


def test_defaults_give_back_the_default_record():
    assert cli.from_options(Toy, _parser().parse_args([])) == Toy()


def test_each_kind_of_field_parses():
    args = _parser().parse_args(
        ["--steps", "7", "--rate", "0.25", "--name", "x", "--fast", "--limit", "9",
         "--widths", "1", "2", "3"]
    )  # fmt: skip
    assert cli.from_options(Toy, args) == Toy(7, 0.25, "x", True, 9, (1, 2, 3))
    assert cli.from_options(Toy, _parser().parse_args(["--no-fast"])).fast is False


def test_bad_values_are_refused_by_argparse(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--steps", "many"])
    assert "invalid int value: 'many'" in capsys.readouterr().err


def test_help_shows_each_field_with_its_docstring_and_default():
    text = " ".join(_parser().format_help().split())
    assert "--widths N [N ...] one number per layer. (default: [4, 8])" in text
    assert "--limit LIMIT stop early (None: never). (default: None)" in text


def test_only_the_named_fields_and_fixed_values():
    args = _parser(["steps"]).parse_args(["--steps", "2"])
    assert not hasattr(args, "rate")
    assert cli.from_options(Toy, args, ["steps"], name="fixed") == Toy(steps=2, name="fixed")


def test_unknown_or_undocumented_fields_are_refused():
    with pytest.raises(ValueError, match="Toy has no field 'nope'"):
        _parser(["nope"])

    @dataclasses.dataclass
    class Bare:
        """No attributes section."""

        n: int = 1

    with pytest.raises(ValueError, match="does not describe 'n'"):
        cli.add_options(argparse.ArgumentParser(), Bare)


def test_training_options_build_the_train_config():
    parser = argparse.ArgumentParser()
    cli.add_training_options(parser)
    args = parser.parse_args(["--epochs", "5", "--features", "4", "8", "16", "--num-train", "100"])
    want = TrainConfig(epochs=5, features=(4, 8, 16), num_train=100)
    assert cli.training_config(args) == want
    assert cli.training_config(parser.parse_args([])) == TrainConfig()


def test_script_parser_is_described_by_the_docstring_in_the_project_layout():
    doc = "Does a thing.\n\nIn detail:\n    kept as written."
    short, whole = cli.script_parser(doc), cli.script_parser(doc, summary=False)
    assert short.description == "Does a thing."
    assert whole.description == doc
    assert short.formatter_class is cli.HelpFormatter
    whole.add_argument("--n", type=int, default=3, help="how many")
    text = whole.format_help()
    assert "In detail:\n    kept as written." in text  # the layout of the docstring is kept
    assert "how many (default: 3)" in " ".join(text.split())


def test_redraw_options_are_flags_with_the_given_help():
    parser = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    cli.add_redraw_options(parser, replot="rewrite from the JSON", figures_only="redraw a.png")
    assert vars(parser.parse_args([])) == {"replot": False, "figures_only": False}
    assert vars(parser.parse_args(["--replot", "--figures-only"])) == {
        "replot": True,
        "figures_only": True,
    }
    text = " ".join(parser.format_help().split())
    assert "--replot rewrite from the JSON (default: False)" in text
    assert "--figures-only redraw a.png (default: False)" in text


def test_redraw_options_add_only_those_given():
    parser = argparse.ArgumentParser()
    cli.add_redraw_options(parser, figures_only="redraw a.png")
    assert vars(parser.parse_args([])) == {"figures_only": False}
    with pytest.raises(SystemExit):
        parser.parse_args(["--replot"])
    with pytest.raises(ValueError, match="--replot, --figures-only or both"):
        cli.add_redraw_options(argparse.ArgumentParser())


def test_out_option_is_the_output_folder():
    parser = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    cli.add_out_option(parser)
    # runs/, not the committed results/: a user's run never replaces what the README cites
    assert parser.parse_args([]).out == Path("runs") == cli.RUNS
    assert parser.parse_args(["--out", "x/y"]).out == Path("x/y")
    text = " ".join(parser.format_help().split())
    assert "--out OUT output folder (default: runs, ignored by git;" in text
    assert text.count("(default") == 1
    other = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    cli.add_out_option(other, Path("elsewhere"))
    assert other.parse_args([]).out == Path("elsewhere")
    assert "output folder (default: elsewhere)" in " ".join(other.format_help().split())


def _fresh_process(code: str, *args: str, env: dict | None = None) -> list[str]:
    """The words printed by ``code`` run in a new Python at the project root, with
    ``experiments`` on its path (``lab`` imported there before jax)."""
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, 'experiments'); " + code, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_eigen_convolutions_reads_and_sets_xla_flags(monkeypatch):
    # jax is imported in this process: the flags are read only, never changed
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=true")
    assert cli.eigen_convolutions(True) is False
    assert "ynn" not in os.environ["XLA_FLAGS"]
    monkeypatch.setenv("XLA_FLAGS", cli.YNN_DOTS_ONLY)
    assert cli.eigen_convolutions(False) is True
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_experimental_ynn_fusion_type=individual_dot,x")
    assert cli.eigen_convolutions(True) is False


def test_eigen_convolutions_keep_convolutions_out_of_ynnpack():
    """In a fresh process the flag takes the convolution out of XLA's YNNPACK fusions (and
    the default puts it in one: the test fails when a jaxlib changes either)."""
    code = (
        "from lab import cli; "
        "print(cli.eigen_convolutions(sys.argv[1] == 'on')); import jax, jax.numpy as jnp; "
        "dn = ('NHWC', 'HWIO', 'NHWC'); "
        "f = jax.jit(lambda h, w: jax.lax.conv_general_dilated(h, w, (1, 1), 'SAME', "
        "dimension_numbers=dn)); "
        "txt = f.lower(jnp.ones((8, 14, 14, 32)), jnp.ones((5, 5, 32, 64))).compile().as_text(); "
        "print(any('__ynn_fusion' in l and 'conv_general' in l for l in txt.splitlines()))"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    assert _fresh_process(code, "on", env=env) == ["True", "False"]
    assert _fresh_process(code, "off", env=env) == ["False", "True"]


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity and two CPUs",
)
def test_limit_xla_threads_pins_a_fresh_process_and_leaves_a_started_one():
    before = os.sched_getaffinity(0)
    assert cli.limit_xla_threads(1) is False  # jax runs here already: nothing changes
    assert os.sched_getaffinity(0) == before
    code = "import os; from lab import cli; "
    code += "print(cli.limit_xla_threads(1), len(os.sched_getaffinity(0)))"
    assert _fresh_process(code) == ["True", "1"]

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


@pytest.mark.parametrize(
    ("kind", "good", "bad", "message"),
    [
        (cli.positive, ("1", 1), "0", "must be >= 1, got 0"),
        (cli.positive, ("7", 7), "2.5", "expected an integer, got '2.5'"),
        (cli.non_negative, ("0", 0), "-1", "must be >= 0, got -1"),
        (cli.positive_float, ("0.5", 0.5), "0", "must be > 0.0, got 0"),
        (cli.non_negative_float, ("0", 0.0), "-0.1", "must be >= 0.0, got -0.1"),
        (cli.non_negative_float, ("2", 2.0), "nan", "expected a number, got 'nan'"),
        (cli.probability, ("1", 1.0), "1.5", "must be in [0.0, 1.0], got 1.5"),
    ],
)
def test_option_types_refuse_values_without_meaning(capsys, kind, good, bad, message):
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=kind)
    assert parser.parse_args(["--n", good[0]]).n == good[1]
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--n", bad])
    assert e.value.code == 2
    assert f"argument --n: {message}" in capsys.readouterr().err


def test_script_parser_turns_a_failed_check_into_a_usage_error(capsys):
    parser = cli.script_parser("A script.")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=None)
    parser.checks.append(cli.distinct("seeds", "methods"))
    assert parser.parse_args(["--seeds", "3", "4"]).seeds == [3, 4]
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--seeds", "3", "4", "3", "4", "5"])
    assert e.value.code == 2
    assert "error: --seeds repeats 3, 4: give each value once" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["--methods", "a", "b", "a"])
    assert "--methods repeats a" in capsys.readouterr().err


def test_training_options_are_checked_by_train_config_when_they_parse(capsys):
    parser = cli.script_parser("A script.")
    cli.add_training_options(parser)
    with pytest.raises(SystemExit) as e:
        parser.parse_args(["--epochs", "0"])
    assert e.value.code == 2
    assert "error: epochs must be >= 1, got 0" in capsys.readouterr().err
    assert cli.training_config(parser.parse_args(["--epochs", "2"])).epochs == 2


def test_every_numeric_option_of_the_scripts_has_a_range():
    # A bare int/float option lets `--batch-size 0` or `--sigma -1` through to fail (or
    # worse, run) after minutes of training; every one names its range (lab.cli's types).
    import ast

    allowed = {"--baseline"}  # the value of deleted pixels: any number
    bare = []
    root = Path(__file__).resolve().parents[2] / "experiments"
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
                flag = next((a.value for a in node.args if isinstance(a, ast.Constant)), "")
                for kw in node.keywords:
                    kind = getattr(kw.value, "id", None)
                    if kw.arg == "type" and kind in ("int", "float") and flag not in allowed:
                        bare.append(f"{path.name}:{node.lineno} {flag}")
    assert not bare, bare


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("train.py", ["--epochs", "0"], "epochs must be >= 1, got 0"),
        ("mnist_noise.py", ["--num-test", "-3"], "argument --num-test: must be >= 1, got -3"),
        ("mnist_noise.py", ["--sigma", "-1"], "argument --sigma: must be >= 0.0, got -1"),
        ("evaluate_mnist.py", ["--seeds", "0", "0"], "--seeds repeats 0"),
        ("evaluate_cifar10.py", ["--batch-size-maps", "0"], "must be >= 1, got 0"),
        ("mnist_seeds.py", ["--seeds", "1"], "give at least two --seeds"),
        ("cifar10.py", ["--hidden", "0"], "hidden must be >= 1, got 0"),
        ("pong_train.py", ["--eval-epsilon", "2"], "must be in [0.0, 1.0], got 2"),
        ("bench_metrics.py", ["--images", "0"], "argument --images: must be >= 1, got 0"),
    ],
)
def test_scripts_refuse_bad_options_before_any_work(tmp_path, script, args, message):
    # One usage line and exit status 2, before jax loads (the first parse of each script),
    # so nothing is downloaded, trained or written.
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run(
        [sys.executable, f"experiments/{script}", *args, "--out", str(tmp_path / "out")],
        cwd=root,
        env={**os.environ, "SLP_DATA_DIR": str(tmp_path / "data")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert message in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()

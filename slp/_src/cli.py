"""The help layout of every command line in the project (``python -m slp``, ``python -m
slp.data`` and the experiment scripts)."""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Description as written; ``(default: ...)`` after every option's help.

    An option whose help already states its default (``default: ...``) or that is required
    (``(required)``) is left as written.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or "default:" in text or "(required)" in text:
            return text
        return super()._get_help_string(action)


def command_parser(
    prog: str, doc: str, command: str, *, help: str
) -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    """The parser of ``prog COMMAND ...`` and the parser of its one ``command``.

    ``prog --help`` shows the first line of ``doc`` and the command with its ``help``;
    ``prog command --help`` shows the whole of ``doc``. Both use `HelpFormatter`.
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=doc.split("\n")[0], formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    return parser, sub.add_parser(
        command, help=help, description=doc, formatter_class=HelpFormatter
    )

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

"""The help layout of the experiment scripts (importing it is cheap: no jax).

`HelpFormatter` keeps the layout of a script's docstring (its description) and ends every
option's help with its default, ``(default: ...)``, unless the help text already says it.
"""

from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Description as written; ``(default: ...)`` after every option's help."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or "default:" in text:
            return text
        return super()._get_help_string(action)

"""The command lines of ``train.py`` and ``evaluate.py``: the parser that reports a usage error in
one line, and ``train.py``'s flags. Importing it imports no framework (``--help`` stays fast)."""

from __future__ import annotations

import argparse
import sys

EXIT_BAD_INPUT = 2
EXIT_FAILED = 1
DESCRIPTION = "Train a VAE, InfoVAE or sentence VAE with the JAX or the PyTorch backend."


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (and exits with status 2)."""

    def error(self, message: str) -> None:
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        raise SystemExit(EXIT_BAD_INPUT)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows "(default: ...)" except where the default is None (the help text says what None means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        return action.help if action.default is None else super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """``train.py``'s parser, built from the declarations (``vaecore.settings.flags.OPTIONS``)."""
    from vaecore.settings.flags import GROUPS, OPTIONS

    p = OneLineParser(prog="train.py", description=DESCRIPTION, formatter_class=HelpFormatter,
                      allow_abbrev=False)  # a prefix would slip past the task-only and resume checks
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for option in OPTIONS:
        option.add_to(groups[option.group])
    return p


def explicit_flags(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """Destinations of the flags the user actually typed."""
    given = set()
    for action in parser._actions:
        if any(a == opt or a.startswith(opt + "=") for a in argv for opt in action.option_strings):
            given.add(action.dest)
    return given

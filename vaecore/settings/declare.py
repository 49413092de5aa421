"""What an option declaration is, and what is derived from one: the parser argument, the value's
place in the run config, the per-task default, the resume policy and the rules that refuse an option
the run would ignore. The declarations themselves are ``vaecore.settings.flags.OPTIONS``; nothing else lists
options. Imports no framework.

Why a table of our own rather than tyro, simple-parsing, jsonargparse or ml_collections' config flags:
our options have defaults that differ by task, rules of the form "applies only when another option is
X", a resume policy and a saved ``config.json`` whose layout older runs still use; the libraries
generate a parser from dataclass fields, but none of them expresses those three, and each adds its
own multi-line error format where ours promise one line. The table is argparse underneath.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TASKS = ("mnist", "text")


class ByTask(dict):
    """A default that differs between tasks: ``ByTask(mnist=20, text=32)``."""


@dataclass(frozen=True)
class Rule:
    """An option applies only when ``holds(cfg)``; otherwise giving it is an error, worded by
    ``message(flag, cfg)``. Rules are checked in the order of ``flags.RULES``."""

    holds: Callable[[Any], bool]
    message: Callable[[str, Any], str]


@dataclass(frozen=True)
class Option:
    """One command-line option, declared once.

    ``name``: the flag without its dashes (``latent-dim``); its ``dest`` is the name with
    underscores. ``default``: a value, or ``ByTask(...)``. ``tasks``: the tasks that read it (given
    to another task it is refused). ``field``: where its value lives in ``RunConfig.to_dict()``
    (``"loss.alpha"``; a dict by task when the section differs; None for options that steer a
    command rather than describe the run). ``to_field``: the flag's value as the field stores it.
    ``resumable``: may differ on ``--resume`` (honoured); any other option that differs is an
    error. ``rules``: when it applies (see ``Rule``). ``generation``: also read by ``--sample`` /
    ``--interpolate``."""

    name: str
    help: str
    group: str
    default: Any = None
    type: Callable[[str], Any] | None = None
    choices: tuple | None = None
    action: str | type | None = None
    nargs: int | None = None
    metavar: tuple | str | None = None
    tasks: tuple[str, ...] = TASKS
    field: str | dict | None = None
    to_field: Callable[[Any], Any] | None = None
    resumable: bool = False
    rules: tuple[Rule, ...] = ()
    generation: bool = False

    @property
    def dest(self) -> str:
        return self.name.replace("-", "_")

    @property
    def flag(self) -> str:
        return "--" + self.name

    def default_for(self, task: str) -> Any:
        return self.default[task] if isinstance(self.default, ByTask) else self.default

    def field_for(self, task: str) -> str | None:
        return self.field.get(task) if isinstance(self.field, dict) else self.field

    def stored(self, value: Any) -> Any:
        """The flag's value as its config field holds it."""
        return self.to_field(value) if self.to_field else value

    def help_text(self) -> str:
        if isinstance(self.default, ByTask):
            return self.help.format(**{t: _show(v) for t, v in self.default.items()})
        return self.help

    def add_to(self, group: argparse._ArgumentGroup) -> None:
        kwargs: dict[str, Any] = {"help": self.help_text(), "dest": self.dest}
        if self.action == "store_true":
            kwargs["action"] = "store_true"
        else:
            if self.action is not None:
                kwargs["action"] = self.action
            kwargs["default"] = None if isinstance(self.default, ByTask) else self.default
            for key in ("type", "choices", "nargs", "metavar"):
                if getattr(self, key) is not None:
                    kwargs[key] = getattr(self, key)
        group.add_argument(self.flag, **kwargs)


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


# Value types: each rejects what no run could use, in the parser's one line.
def finite(text: str) -> float:
    """A finite float (inf and nan are refused here rather than failing steps later)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers separated by commas, got {text!r}") from None
    return values


SEED_LIMIT = 2**32  # seeds are 32-bit unsigned integers in both backends' generators


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if not 0 <= value < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"expected an integer in [0, 2^32), got {text!r}")
    return value


def lookup(tree: dict, path: str) -> Any:
    """The value at ``path`` ("loss.alpha") of a nested dict, or KeyError."""
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(path)
        node = node[part]
    return node

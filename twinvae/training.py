"""``twinvae.train(**options)``: ``train.py``'s driver from Python. The options are ``train.py``'s flags
written as keywords (``latent_dim=4`` for ``--latent-dim 4``, ``lam`` for ``--lambda``, True for a
switch, False for ``--no-...``), parsed by the same parser and run by the same ``train.train``, so a
call and the command line make the same run folder."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any, NamedTuple


class Trained(NamedTuple):
    """A finished run: its folder and its test figures (``results.json``)."""

    workdir: Path
    results: dict


GENERATION = {"sample", "interpolate"}
ALIASES = {"lam": "lambda"}  # --lambda: a Python keyword cannot be a keyword argument


def options_to_argv(parser, options: dict[str, Any]) -> list[str]:
    """``train.py`` flags for keyword ``options``; an option ``train.py`` does not know is a ValueError."""
    actions = {a.dest: a for a in parser._actions if a.option_strings}
    argv = []
    for name, value in options.items():
        name = ALIASES.get(name, name)
        if name in GENERATION:
            raise ValueError(f"{name} generates from a finished run: use twinvae.load(workdir).sample / .interpolate")
        if name not in actions or name == "help":
            raise ValueError(f"train.py has no option {name!r} (the options are its flags with '_' for '-': "
                             f"latent_dim=4 for --latent-dim 4)")
        action = actions[name]
        flag = action.option_strings[0]
        if value is None:
            continue
        if isinstance(value, bool):
            if action.nargs == 0:  # a switch (store_true)
                argv += [flag] if value else []
            else:  # --x / --no-x
                argv.append(flag if value else f"--no-{flag.removeprefix('--')}")
        elif isinstance(value, list | tuple):
            argv += [flag, ",".join(str(v) for v in value)]
        else:
            argv += [flag, str(value)]
    return argv


def train(**options: Any) -> Trained:
    """Train (or ``resume=True``: continue) a run with ``train.py``'s options; returns its folder and
    results. Bad options raise ``ValueError`` (``vaecore.settings.config.ConfigError`` is one) in one line; a
    run that fails (a NaN loss) raises ``vaecore.runner.driver.TrainingError``, its last checkpoint kept."""
    from vaecore.runner import options as resolver
    from vaecore.settings.cli import build_parser, explicit_flags

    parser = build_parser()
    argv = options_to_argv(parser, options)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit:
        raise ValueError(err.getvalue().strip().splitlines()[-1].removeprefix(f"{parser.prog}: error: ")) from None
    given = explicit_flags(parser, argv)
    if args.workdir is None:  # the folder train.py would pick, named here so that it can be returned
        args.workdir = resolver.default_workdir(resolver.config_from_args(resolver.apply_preset(args, given)))
    from twinvae.train_cli import train as run

    results = run(args, given)
    return Trained(Path(args.workdir), results)

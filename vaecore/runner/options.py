"""From ``train.py``'s flags to a ``RunConfig``, all of it read off the declarations
(``vaecore.settings.flags``): each option's value in its config field, the refusal of an option the run would
ignore, and the resume comparison (a declared option that differs from ``config.json`` is an error
unless it is declared resumable)."""

from __future__ import annotations

import argparse
from pathlib import Path

from vaecore.runs import rundir
from vaecore.settings.config import (
    PRESETS,
    ConfigError,
    LossConfig,
    RunConfig,
    TrainConfig,
)
from vaecore.settings.declare import ByTask, lookup
from vaecore.settings.flags import BY_DEST, OPTIONS, RULES, SECTIONS
from vaecore.task import tasks


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's config from the parsed flags: each declared option's value (or its task's default)
    put in its field; invalid values raise ConfigError."""
    task = args.task
    sections: dict[str, dict] = {name: {} for name in SECTIONS}
    top: dict = {}
    for option in OPTIONS:
        path = option.field_for(task)
        if path is None or task not in option.tasks:
            continue
        value = getattr(args, option.dest)
        if value is None and isinstance(option.default, ByTask):
            value = option.default[task]
        section, _, name = path.rpartition(".")
        (sections[section] if section else top)[name] = option.stored(value)
    return RunConfig(backend=top["backend"], task=task, data=top["data"], **tasks.task(task).config_sections(sections),
                     loss=LossConfig(**sections["loss"]), train=TrainConfig(**sections["train"]))


def resumed_config(saved: RunConfig, args: argparse.Namespace, given: set[str],
                   preset: set[str] = frozenset()) -> RunConfig:
    """The saved config, with the resumable options taken from the command line where given; any
    other declared option given (or set by ``--preset``: ``preset``) whose value contradicts the
    saved run is an error."""
    if "task" in given and args.task != saved.task:
        raise ConfigError(f"--resume: --task {args.task!r} differs from the run's config.json ({saved.task!r}); "
                          f"drop the flag or use a new --workdir")
    fresh = config_from_args(argparse.Namespace(**{**vars(args), "task": saved.task})).to_dict()
    merged = saved.to_dict()
    for option in OPTIONS:
        path = option.field_for(saved.task)
        if option.dest not in given | preset or path is None or saved.task not in option.tasks:
            continue
        new, old = lookup(fresh, path), lookup(merged, path)
        if option.resumable:
            section, _, name = path.rpartition(".")
            (merged[section] if section else merged)[name] = new
        elif new != old:
            shown = "" if option.action == "store_true" else f" {new!r}"
            via = f" (set by --preset {args.preset})" if option.dest in preset - given else ""
            raise ConfigError(f"--resume: {option.flag}{shown}{via} differs from the run's config.json "
                              f"({path.rpartition('.')[2]} {old!r}); drop the flag or use a new --workdir")
    return RunConfig.from_dict(merged)  # validated again


def check_given(cfg: RunConfig, args: argparse.Namespace, given: set[str]) -> None:
    """Every option given must be read by this run: by its task (``Option.tasks``) and under its
    rules (``Option.rules``, checked in ``flags.RULES`` order)."""
    declared = [BY_DEST[d] for d in sorted(given) if d in BY_DEST]
    wrong = [o for o in declared if cfg.task not in o.tasks]
    if wrong:
        raise ConfigError(f"{wrong[0].flag} applies to --task {' or '.join(wrong[0].tasks)} only "
                          f"(this run is --task {cfg.task})")
    broken = [(RULES.index(rule), o.dest, rule, o) for o in declared for rule in o.rules
              if not rule.holds(cfg, args)]
    if broken:
        _, _, rule, option = min(broken, key=lambda b: b[:2])
        raise ConfigError(rule.message(option.flag, cfg, args))


def default_workdir(cfg: RunConfig) -> Path:
    return tasks.default_workdir(cfg)


def apply_preset(args: argparse.Namespace, given: set[str]) -> argparse.Namespace:
    """``--preset NAME``: its values (``config.PRESETS``) for every flag not given beside it."""
    if args.preset is None:
        return args
    if args.preset not in tasks.task(args.task).presets:
        owners = " or ".join(f"--task {t}" for t, spec in tasks.REGISTRY.items() if args.preset in spec.presets)
        raise ConfigError(f"--preset {args.preset} applies to {owners} only (this run is --task {args.task})")
    return argparse.Namespace(**{**vars(args), **{k: v for k, v in PRESETS[args.preset].items() if k not in given}})


def resolve(args: argparse.Namespace, given: set[str]) -> tuple[RunConfig, Path]:
    """The run's config and folder from the parsed flags (``given``: the flags typed): a new run's
    config, or the saved one on ``--resume``; every flag the run would ignore is a ``ConfigError``."""
    preset = set(PRESETS[args.preset]) - given if args.preset else set()
    args = apply_preset(args, given)
    cfg = config_from_args(args)
    workdir = args.workdir or default_workdir(cfg)
    if args.resume:
        if not (workdir / rundir.CONFIG).exists():
            raise ConfigError(f"--resume: {workdir} has no {rundir.CONFIG}; start the run without --resume")
        cfg = resumed_config(rundir.read_config(workdir, flag="--resume: --workdir"), args, given, preset)
    elif rundir.has_checkpoint(workdir):
        raise ConfigError(f"{workdir} already holds a run's checkpoints; pass --resume to continue it "
                          f"or choose another --workdir")
    check_given(cfg, args, given)
    return cfg, workdir


GENERATION_FLAGS = {o.dest for o in OPTIONS if o.generation}


def generation_run(args: argparse.Namespace, given: set[str]) -> RunConfig:
    """``--sample`` / ``--interpolate``: the text run they read (its config.json is the run's)."""
    if given - GENERATION_FLAGS:
        raise ConfigError(f"--sample and --interpolate read the run's config.json; drop "
                          f"--{min(given - GENERATION_FLAGS).replace('_', '-')}")
    if args.workdir is None:
        raise ConfigError("--sample and --interpolate need --workdir, a text run's folder with config.json")
    cfg = rundir.read_config(args.workdir)
    if not tasks.task(cfg.task).has_vocab:
        raise ConfigError(f"{args.workdir} is a {cfg.task} run; --sample and --interpolate need a --task text run")
    return cfg

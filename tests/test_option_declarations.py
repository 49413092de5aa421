"""Every declared option, one by one: changed on --resume it is refused unless declared resumable
(then honoured); given to a task that does not read it, refused; its default is its config field's;
the README's flag table is the declarations' own."""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from vaecore.runner.options import config_from_args, resolve
from vaecore.settings.cli import build_parser, explicit_flags
from vaecore.settings.config import ConfigError, RunConfig
from vaecore.settings.declare import ByTask, lookup
from vaecore.settings.flags import OPTIONS, markdown_table

ROOT = Path(__file__).resolve().parents[1]
TASK_FLAGS = {"mnist": [], "text": ["--task", "text"]}
# A value differing from the default, and valid, for options whose type alone does not say one.
CHANGED = {"data": "/somewhere/else", "mmd-bandwidth": "3.0", "max-vocab": "50", "max-steps": "7",
           "max-len": "9", "device": "cpu", "hidden-sizes": "16,16", "conv-channels": "8,16"}


def changed_argv(option, task: str) -> list[str]:
    """The flag with a value other than the one a default run of ``task`` saved."""
    if option.action == "store_true":
        return [option.flag]
    if option.action is argparse.BooleanOptionalAction:
        return ["--no-" + option.name]
    if option.name in CHANGED:
        return [option.flag, CHANGED[option.name]]
    default = option.default_for(task)
    if option.choices:
        return [option.flag, next(str(c) for c in option.choices if c != default)]
    if isinstance(default, float):
        return [option.flag, repr(default + 0.125)]
    return [option.flag, str((default or 0) + 1)]


def resolved(argv: list[str]):
    parser = build_parser()
    args = parser.parse_args(argv)
    return resolve(args, explicit_flags(parser, argv))[0]


def saved_run(tmp_path: Path, task: str) -> Path:
    run = tmp_path / f"run-{task}"
    run.mkdir()
    config_from_args(build_parser().parse_args(TASK_FLAGS[task])).save(run / "config.json")
    return run


def described(task: str) -> list:
    return [pytest.param(o, task, id=f"{task}-{o.name}") for o in OPTIONS
            if o.field_for(task) is not None and task in o.tasks and o.name != "task"]


@pytest.mark.parametrize("option, task", described("mnist") + described("text"))
def test_every_option_changed_on_resume_is_refused_or_honoured(option, task, tmp_path):
    run = saved_run(tmp_path, task)
    before = (run / "config.json").read_bytes()
    argv = ["--workdir", str(run), "--resume", *TASK_FLAGS[task], *changed_argv(option, task)]
    if option.resumable:
        cfg = resolved(argv)
        fresh = config_from_args(build_parser().parse_args([*TASK_FLAGS[task], *changed_argv(option, task)]))
        path = option.field_for(task)
        assert lookup(cfg.to_dict(), path) == lookup(fresh.to_dict(), path) != lookup(
            RunConfig.load(run / "config.json").to_dict(), path)
    else:
        with pytest.raises(ConfigError, match=option.flag) as refused:
            resolved(argv)
        assert "\n" not in str(refused.value)
    assert (run / "config.json").read_bytes() == before


@pytest.mark.parametrize("option", [o for o in OPTIONS if set(o.tasks) != {"mnist", "text"}], ids=lambda o: o.name)
def test_every_option_given_to_a_task_that_does_not_read_it_is_refused(option):
    other = next(t for t in ("mnist", "text") if t not in option.tasks)
    argv = [*TASK_FLAGS[other], *changed_argv(option, option.tasks[0])]
    with pytest.raises(ConfigError, match=f"{option.flag}.* applies to --task {option.tasks[0]}"):
        resolved(argv)


@pytest.mark.parametrize("argv, holed", [
    (["--adam-eps", "1e-4"], "--adam-eps"),
    (["--preset", "burda"], "--latent-dim 50 (set by --preset burda)"),
])
def test_the_reported_resume_holes_are_closed_on_the_command_line(argv, holed, tmp_path):
    """The flags --resume used to ignore: one line, exit 2, the run folder byte for byte as it was."""
    run = saved_run(tmp_path, "mnist")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()}
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--workdir", str(run), "--resume", *argv],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert holed in out.stderr and "differs from the run's config.json" in out.stderr
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.iterdir()} == digest


@pytest.mark.parametrize("flags", [["--pretrain-ae-epochs", "1"], ["--no-latent"]])
def test_text_resume_holes_are_closed(flags, tmp_path):
    run = saved_run(tmp_path, "text")
    with pytest.raises(ConfigError, match=f"--resume: {flags[0]}"):
        resolved(["--workdir", str(run), "--resume", *flags])


def test_a_preset_on_resume_compares_the_values_it_sets(tmp_path):
    run = tmp_path / "burda"
    run.mkdir()
    resolved(["--preset", "burda", "--workdir", str(run)]).save(run / "config.json")
    cfg = resolved(["--workdir", str(run), "--resume", "--preset", "burda", "--max-steps", "9"])
    assert cfg.model.hidden_sizes == (200, 200) and cfg.train.eps == 1e-4 and cfg.train.max_steps == 9
    with pytest.raises(ConfigError, match="--hidden-sizes"):  # a flag beside the preset is compared too
        resolved(["--workdir", str(run), "--resume", "--preset", "burda", "--hidden-sizes", "100,100"])


@pytest.mark.parametrize("argv, message", [
    (["--task", "text", "--no-latent", "--bidirectional"], "--bidirectional shapes the code"),
    (["--task", "text", "--no-latent", "--z-every-step"], "--z-every-step shapes the code"),
    (["--task", "text", "--no-latent", "--latent-dim", "8"], "--latent-dim shapes the code"),
    (["--task", "text", "--no-latent", "--loss", "mmd"], "--loss mmd shapes the code"),
    (["--task", "text", "--no-latent", "--aggressive"], "--aggressive shapes the code"),
    (["--task", "text", "--no-latent", "--pretrain-ae-epochs", "1"], "--pretrain-ae-epochs shapes the code"),
])
def test_options_the_language_model_ignores_are_refused(argv, message):
    with pytest.raises(ConfigError, match=message):
        resolved(argv)


@pytest.mark.parametrize("argv", [["--lr", "inf"], ["--kl-weight", "inf"], ["--adam-eps", "inf"],
                                  ["--loss", "mmd", "--alpha", "nan"], ["--loss", "mmd", "--lambda", "nan"],
                                  ["--task", "text", "--free-bits", "inf"], ["--bn-gamma", "inf"],
                                  ["--task", "text", "--kl-logistic-x0", "nan"], ["--seed", str(2**64)],
                                  ["--seed", "-1"]])
def test_non_finite_and_out_of_range_values_are_one_line_usage_errors(argv):
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), *argv, "--workdir", "/nonexistent/x"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and argv[-2] in out.stderr, out.stderr


@pytest.mark.parametrize("value", ["inf", "nan", "1,inf"])
def test_non_finite_bandwidths_are_refused(value):
    with pytest.raises(ConfigError, match="bandwidth"):
        resolved(["--loss", "mmd", "--mmd-bandwidth", value])


def test_config_json_values_are_checked_for_finiteness_too():
    d = config_from_args(build_parser().parse_args([])).to_dict()
    d["train"]["eps"] = float("inf")
    with pytest.raises(ConfigError, match="eps must be a finite number"):
        RunConfig.from_dict(d)


def test_declared_defaults_are_the_config_fields_defaults():
    """Each option's default is what a config built without it holds, for both tasks."""
    for task in ("mnist", "text"):
        cfg = config_from_args(build_parser().parse_args(TASK_FLAGS[task])).to_dict()
        for o in OPTIONS:
            path = o.field_for(task)
            if path is None or task not in o.tasks or o.name in ("free-bits", "task"):
                continue
            assert lookup(cfg, path) == o.stored(o.default_for(task) if o.action != "store_true" else False), o.name
    assert isinstance(next(o for o in OPTIONS if o.name == "latent-dim").default, ByTask)


def test_readme_flag_table_is_the_declarations():
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- flags: python -m vaecore.settings.flags -->\n", "<!-- /flags -->"
    assert begin in readme and end in readme
    assert readme.split(begin)[1].split(end)[0] == markdown_table()


def test_help_lists_every_declared_flag_once():
    text = build_parser().format_help()
    for o in OPTIONS:
        assert f"  {o.flag}" in text, o.flag
    assert len({o.name for o in OPTIONS}) == len(OPTIONS) == 78  # 69 before the Transformer decoder's 8, then --encoder

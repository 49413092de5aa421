"""Where each row of ``scripts/study.py`` stands, read from its run folder alone: not started, training
(with its progress), finished or evaluated; a folder that cannot be read is a ``RowError`` that names the
file and says why."""

from __future__ import annotations

import json
import time
from pathlib import Path

from vaecore.runner.report import read_jsonl
from vaecore.runs import rundir
from vaecore.settings.config import ConfigError, RunConfig
from vaecore.task import tasks


def run_dir(runs: Path, row: str, backend: str) -> Path:
    return runs / f"{row}-{backend}"


class RowError(ValueError):
    """A row's folder that cannot be read (a damaged config.json, results.json, eval_test.json or
    metrics.jsonl); the message names the file and says why."""


def read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RowError(f"{path}: unreadable ({type(e).__name__}: {str(e)[:120]})") from None
    if not isinstance(obj, dict):
        raise RowError(f"{path}: not a JSON object")
    return obj


def read_row_config(folder: Path) -> RunConfig:
    try:
        return rundir.read_config(folder)
    except ConfigError as e:
        raise RowError(str(e)) from None


def final_step(folder: Path, cfg: RunConfig) -> int | None:
    """The step of the run's test figures when ``results.json`` holds those of its last step, else None.
    ``evaluate.py`` merges its figures into results.json (and once did so for a run stopped midway), and a
    finished run may be resumed with more ``--epochs``: a results.json is only the end of the run if its
    step is the total that config.json asks for (``--max-steps``, or ``epochs`` of ``--epochs``)."""
    if not (folder / rundir.RESULTS).exists():
        return None
    results = read_json(folder / rundir.RESULTS)
    step, epochs = results.get("step"), results.get("epochs")
    if results.get("split") != "test" or not isinstance(step, int) or step <= 0:
        return None
    if cfg.train.max_steps is not None:
        return step if step == cfg.train.max_steps else None
    return step if epochs == cfg.train.epochs else None


def evaluated(folder: Path, cfg: RunConfig, step: int, k: int) -> bool:
    """Whether the run's test evaluation is there for its last step at this K (at K = 1 for the language
    model, which ``evaluate.py`` evaluates exactly with one sample whatever K it is given)."""
    path = folder / "eval_test.json"
    if not path.exists():
        return False
    metrics = read_json(path)
    # a text evaluation of an earlier version lacks the token accuracy (TaskSpec.token_accuracy): evaluated again
    return (metrics.get("k") == tasks.samples_needed(cfg, k) and metrics.get("step") == step
            and (not tasks.task(cfg.task).token_accuracy or "token_acc" in metrics))


def positive(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


def row_state(folder: Path, k: int) -> str:
    """``not started``, ``training`` (started, not at its last step), ``finished`` (not evaluated at this
    K) or ``evaluated``; a ``RowError`` for a folder that cannot be read."""
    if folder.exists() and not folder.is_dir():
        raise RowError(f"{folder}: not a folder")
    if not (folder / rundir.CONFIG).exists():
        return "not started"
    cfg = read_row_config(folder)
    step = final_step(folder, cfg)
    if step is None:
        return "training"
    return "evaluated" if evaluated(folder, cfg, step, k) else "finished"


def progress(folder: Path, k: int, now: float | None = None) -> dict:
    """Where a row's run stands, from its folder alone: ``state`` (not started, training, finished,
    evaluated), and while training the last logged step of the total, the epoch, the logged rate
    (images or tokens per second of training steps), how long ago the last point was logged (a run that
    has stopped logging is not running), and for images the hours of steps still to go at that rate.
    A ``RowError`` for a folder that cannot be read."""
    state = row_state(folder, k)
    if state != "training":
        return {"state": {"finished": "finished, not evaluated", "evaluated": f"evaluated (K {k})"}.get(state, state)}
    cfg = read_row_config(folder)
    metrics = folder / rundir.METRICS
    try:
        rows = read_jsonl(metrics)  # a line the run is writing right now is skipped
    except (OSError, UnicodeDecodeError) as e:
        raise RowError(f"{metrics}: unreadable ({type(e).__name__}: {str(e)[:120]})") from None
    train = [r for r in rows if r.get("split") == "train" and r.get("epoch")]
    if not train:
        return {"state": "training", "step": 0}
    last = train[-1]
    if not (isinstance(last["step"], int) and positive(last["epoch"])):
        raise RowError(f"{metrics}: its last training point has no whole step and positive epoch: {last}"[:300])
    per_epoch = round(last["step"] / last["epoch"])
    total = cfg.train.max_steps or cfg.train.epochs * per_epoch
    out = {"state": "training", "step": last["step"], "total": total, "epoch": last["epoch"],
           "logged_ago_s": (now or time.time()) - metrics.stat().st_mtime}
    for rate in ("images_per_s", "tokens_per_s"):
        if positive(last.get(rate)):
            out["rate"] = f"{last[rate]:,.0f} {rate.split('_')[0]}/s"
    if positive(last.get("images_per_s")):
        out["hours_left"] = (total - last["step"]) * cfg.train.batch_size / last["images_per_s"] / 3600
    return out


def status_table(runs: Path, rows: list[str], backend: str, k: int, now: float | None = None) -> tuple[str, int]:
    """One line per row, and how many rows' folders cannot be read: each of those is listed as
    ``corrupt: <why>`` among the others, so one damaged folder hides nothing about the rest."""
    lines, corrupt = [], 0
    for row in rows:
        try:
            st = progress(run_dir(runs, row, backend), k, now)
        except RowError as e:
            lines.append(f"{row}-{backend}: corrupt: {e}")
            corrupt += 1
            continue
        text = f"{row}-{backend}: {st['state']}"
        if st.get("total"):
            text += (f", step {st['step']:,} of {st['total']:,} ({100 * st['step'] / st['total']:.1f} %), "
                     f"epoch {st['epoch']:.1f}")
            if st.get("rate"):
                text += f", {st['rate']}"
            if st.get("hours_left") is not None:
                text += f", {st['hours_left']:.1f} h of steps left at that rate"
            text += f"; last logged {st['logged_ago_s'] / 60:.0f} min ago"
        lines.append(text)
    return "\n".join(lines), corrupt

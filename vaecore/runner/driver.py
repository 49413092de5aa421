"""The one training driver, for every task and both backends: the step loop, throughput, the NaN
stop, validation, checkpoints and resume, metrics, results and the end-of-run outputs.

What differs between tasks comes from a ``Task`` (``vaecore.task.image_task.ImageTask``,
``vaecore.task.text_task.TextTask``): the data and its batches, the per-step hyperparameters (KL weight,
learning-rate scale), how a step is taken (aggressive inference takes encoder-only updates first),
what is logged, the evaluation and the outputs. The numbers come from an ``Engine``, one per task
and backend, all implementing the same protocol.

Data position: the batches of an epoch are fixed for given data and batch size, so the step alone
says where a run is (``epoch, index = divmod(step, per_epoch)``); a resumed run replays exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from vaecore.files import atomic_write_json, os_reason
from vaecore.runs import rundir
from vaecore.runs.metrics import MetricsWriter, progress_bar
from vaecore.runs.parallel import SINGLE, Layout
from vaecore.runs.rundir import RunFileError, check_writable_folder
from vaecore.settings.config import ConfigError, RunConfig


class TrainingError(RuntimeError):
    """The run cannot go on (for example the loss became NaN); checkpoints on disk are kept."""


@runtime_checkable
class Engine(Protocol):
    """The numeric half of a run, the same for every task and backend.

    - ``train_step(batch, step, kl_weight, lr_scale, part="all", inner=None)``: one optimiser step
      on a batch (numpy images, or a ``TextBatch``) with the KL weighted by ``kl_weight`` and the
      learning rate ``TrainConfig.lr * lr_scale``, of every parameter or of one side only (``part``
      "encoder" or "decoder"; only the text engines train one side); returns the batch means of the
      loss terms as floats: at least recon, kl, mmd and total (the optimised loss). Every draw is derived from ``(seed, step)`` (and ``inner``, an inner
      encoder update's index), so a resumed run draws the same noise.
    - ``evaluate(batches)``: one z ~ q(z|x) per example from shared numpy noise (``rng.eval_noise``),
      no dropout: the per-example means of the terms, the counts, and the posterior ``mean`` and
      ``logvar`` of every example (numpy [N, D]).
    - ``model()``: the model in evaluation mode.
    - ``save(step, meta)``: an atomic checkpoint; ``restore()``: the newest complete checkpoint's
      ``meta``, or None when there is none; ``restore(step)``: that step's checkpoint (``evaluate.py
      --step``), FileNotFoundError when the run keeps none of that step. An engine built with ``restoring=True`` (for
      ``--sample`` and ``evaluate.py``) may hold only the weights' shapes until ``restore()``.
    """

    cfg: RunConfig

    def train_step(self, batch: Any, step: int, kl_weight: float, lr_scale: float, *, part: str = "all",
                   inner: int | None = None) -> dict[str, float]: ...
    def evaluate(self, batches: Iterable[Any]) -> dict: ...
    def model(self) -> Any: ...
    def save(self, step: int, meta: dict) -> None: ...
    def restore(self, step: int | None = None) -> dict | None: ...


class Task(Protocol):
    """What a task supplies to ``run`` (see ``ImageTask`` and ``TextTask``)."""

    cfg: RunConfig  # the run's config (a text task fills in the vocabulary size)
    per_epoch: int
    total_steps: int
    # optional: how many steps one engine call may take (default 1); a task with more implements
    # ``steps(engine, batches, step, kl_weight, lr_scale) -> [terms per step]``, and keeps its
    # hyperparameters constant between the driver's log, epoch and checkpoint points
    steps_per_call: int

    def describe(self) -> str: ...
    def bar_label(self) -> str: ...
    def prepare(self, workdir: Path) -> None: ...
    def batches(self, start: int) -> Iterator[Any]: ...
    def resume(self, meta: dict) -> None: ...
    def state(self) -> dict: ...
    def before_step(self, engine: Engine, step: int, log) -> tuple[float, float]: ...
    def step(self, engine: Engine, batch: Any, step: int, kl_weight: float, lr_scale: float,
             guard) -> dict[str, float]: ...
    def size(self, batch: Any) -> int: ...
    def count(self, batch: Any) -> int: ...
    def log_record(self, sums: dict[str, float], batch_sums: dict[str, float], steps: int, units: int,
                   seconds: float, kl_weight: float, lr_scale: float) -> tuple[dict, dict]: ...
    def validate(self, engine: Engine, epoch: int, writer: MetricsWriter, step: int, log) -> None: ...
    def test(self, engine: Engine) -> tuple[dict, dict]: ...
    def outputs(self, engine: Engine, workdir: Path) -> None: ...


def check_finite(terms: dict[str, float], step: int, last_checkpoint: int | None, workdir: Path) -> None:
    """Raise ``TrainingError`` naming ``step`` and the last good checkpoint (``None``: none was
    written yet) if a loss term is NaN/inf."""
    if not all(math.isfinite(v) for v in terms.values()):
        bad = {k: v for k, v in terms.items() if not math.isfinite(v)}
        fresh = " in a new run (without --resume)" if last_checkpoint is None else ""
        raise TrainingError(f"non-finite loss at step {step} ({bad}); stopped. {kept_checkpoints(workdir, last_checkpoint)}; "
                            f"try a lower --lr{fresh}")


def kept_checkpoints(workdir: Path, last_checkpoint: int | None) -> str:
    """What a stopped run leaves to continue from, in one sentence."""
    if last_checkpoint is None:
        return "No checkpoint was written yet, so there is nothing to resume"
    return f"The last good checkpoint (step {last_checkpoint}) is kept in {Path(workdir) / rundir.CHECKPOINTS}"


def next_command(last_checkpoint: int | None) -> str:
    """How to go on after a stop that was not the run's fault (a full disk)."""
    return "run the command again (without --resume)" if last_checkpoint is None else "continue with --resume"


class Guard:
    """The NaN stop of one run: ``guard(terms, step)`` raises ``TrainingError`` on a non-finite term."""

    def __init__(self, workdir: Path, last_checkpoint: int | None):
        self.workdir, self.last_checkpoint = workdir, last_checkpoint

    def __call__(self, terms: dict[str, float], step: int) -> None:
        check_finite(terms, step, self.last_checkpoint, self.workdir)


class NullWriter:
    """The metrics writer of a process that does not write the run folder."""

    def truncate_after(self, step: int) -> None:
        pass

    def write(self, step: int, split: str, scalars: dict) -> None:
        pass

    def close(self) -> None:
        pass


def run(task: Task, engine_factory, workdir: Path, *, resume: bool = False, log=print,
        layout: Layout = SINGLE) -> dict:
    """Train ``task`` with ``engine_factory(cfg, workdir)`` in ``workdir``; write the run folder;
    return results.json's contents.

    ``layout``: the devices and processes of a data-parallel run (``vaecore.runs.parallel``). Every
    process takes every step, validation and test (the engines exchange what spans processes);
    only the main one logs, holds the folder's lock (``rundir.lock_run``) and writes the folder.

    Refusals (``ConfigError``, exit status 2) come before the first write: the engine (which checks
    the device) is built before the folder is created, the lock is taken before anything is written,
    and a resume past the steps asked for is refused. A failure to write during training is a
    ``TrainingError`` (exit status 1) that keeps the checkpoints."""
    workdir = Path(workdir)
    cfg = task.cfg
    layout.check_batch(cfg.train.batch_size)
    if not layout.main:
        def log(*_):
            pass
    engine = engine_factory(cfg, workdir)
    lock = claim(workdir, resume, layout, cfg.backend)
    try:
        try:
            start, earlier_seconds = resume_point(task, engine, workdir, log) if resume else (0, 0.0)
            writer = open_run(task, workdir, layout, start)
        except ConfigError:
            if lock is not None:
                lock.discard()  # a folder this command created goes again
            raise
        log(f"{cfg.backend} on {layout.describe()}: {task.describe()}, {task.per_epoch} steps per epoch, "
            f"{task.total_steps} steps")
        guard = Guard(workdir, start if resume else None)
        try:
            train_time = train_steps(task, engine, writer, guard, start, earlier_seconds, layout.main, log)
            return finish(task, engine, writer, workdir, layout, train_time, earlier_seconds)
        except OSError as e:  # a full disk, a folder made read-only: what is written stays
            raise TrainingError(f"stopped by an I/O error on {e.filename or workdir} ({os_reason(e)}). "
                                f"{kept_checkpoints(workdir, guard.last_checkpoint)}; free space or fix the "
                                f"folder's permissions, then {next_command(guard.last_checkpoint)}") from None
    finally:
        if lock is not None:
            lock.release()


def agree(layout: Layout, backend: str, refusal: ConfigError | None) -> None:
    """Raise the main process's ``refusal`` on every process: the others would wait for it in their
    first collective for ever. Only the main process decides (it alone touches the folder); with
    several processes its verdict travels through ``layout.vote`` (the backend's ``parallel.main_refused``)."""
    refused = refusal is not None
    if layout.processes > 1:
        refused = layout.vote(refused)
    if refusal is not None:
        raise refusal
    if refused:
        raise ConfigError("the main process (rank 0) refused the run; its error says why")


def claim(workdir: Path, resume: bool, layout: Layout, backend: str) -> rundir.RunLock | None:
    """The main process's lock on the run folder (None on the others), taken before anything is
    written; a new run also finds no checkpoint under the lock (a run that began since
    ``options.resolve`` looked would be overwritten)."""
    lock, refusal = None, None
    if layout.main:
        try:
            lock = rundir.lock_run(workdir)
            if not resume and rundir.has_checkpoint(workdir):
                raise ConfigError(f"{workdir} already holds a run's checkpoints; pass --resume to continue it "
                                  f"or choose another --workdir")
        except ConfigError as e:
            if lock is not None:
                lock.release()
            refusal = e
    agree(layout, backend, refusal)
    return lock


def resume_point(task: Task, engine: Engine, workdir: Path, log) -> tuple[int, float]:
    """(step, earlier training seconds) of the newest checkpoint, restored into ``engine`` and
    ``task``; nothing is written."""
    meta = engine.restore()
    checkpoints = workdir / rundir.CHECKPOINTS
    if meta is None:  # never start again silently: that would truncate the run's history
        raise ConfigError(f"--resume: {checkpoints} holds no readable checkpoint (the run stopped before its "
                          f"first one, or every one is damaged); nothing was changed. Start the run again in a "
                          f"new --workdir")
    if meta.get("batches_per_epoch", task.per_epoch) != task.per_epoch:
        raise ConfigError(f"--resume: the data gives {task.per_epoch} batches per epoch, the checkpoint "
                          f"{meta['batches_per_epoch']}; the data changed since the run started")
    start = int(meta["step"])
    if start > task.total_steps:  # results.json would name fewer steps than the weights took
        raise ConfigError(f"--resume: the newest checkpoint in {checkpoints} is at step {start}, past the "
                          f"{task.total_steps} steps asked for; --max-steps must be at least {start} (nothing "
                          f"was changed)")
    task.resume(meta)
    log(f"resuming from the checkpoint at step {start}")
    return start, meta.get("train_seconds", 0.0)


def open_run(task: Task, workdir: Path, layout: Layout, start: int) -> MetricsWriter | NullWriter:
    """The main process's metrics writer, after ``config.json`` (with the layout beside it: a run
    resumes on any layout) and the task's files; the points logged after ``start`` dropped. Every
    location is checked before the first write, so a refused run changes nothing."""
    writer, refusal = NullWriter(), None
    if layout.main:
        try:
            check_writable_folder(workdir, "--workdir")
            try:
                MetricsWriter.check(workdir)
                atomic_write_json(workdir / rundir.CONFIG, {**task.cfg.to_dict(), "layout": layout.to_dict()})
                task.prepare(workdir)
                writer = MetricsWriter(workdir)
                writer.truncate_after(start)
            except OSError as e:
                raise RunFileError(f"--workdir {workdir}: cannot write {e.filename or workdir} ({os_reason(e)}); "
                                   f"nothing was trained: free space or fix its permissions") from None
        except ConfigError as e:
            refusal = e
    agree(layout, task.cfg.backend, refusal)
    return writer


def train_steps(task: Task, engine: Engine, writer, guard: Guard, start: int, earlier_seconds: float,
                main: bool, log) -> float:
    """Train from step ``start`` to ``task.total_steps``: log, validate and checkpoint on their
    periods. Returns the seconds spent inside steps."""
    cfg, tc = task.cfg, task.cfg.train
    per_epoch, total_steps = task.per_epoch, task.total_steps
    bar = progress_bar(total_steps, start, task.bar_label(), disable=not main)
    sums: dict[str, float] = {}
    batch_sums: dict[str, float] = {}  # sums weighted by the batch size (the text task's per-token loss)
    acc_steps, acc_units, acc_time, train_time = 0, 0, 0.0, 0.0  # seconds inside steps only
    per_call = getattr(task, "steps_per_call", 1)
    batches = task.batches(start)
    step = start
    try:
        while step < total_steps:
            # one call takes up to ``per_call`` steps and ends where a log point, an epoch or a
            # checkpoint falls (a function of the step alone: a resumed run makes the same calls)
            end = call_end(step, total_steps, per_call, (tc.log_every, per_epoch, tc.checkpoint_every))
            chunk = [next(batches) for _ in range(end - step)]
            kl_weight, lr_scale = task.before_step(engine, step, log)
            t0 = time.perf_counter()
            if len(chunk) == 1:
                outs = [task.step(engine, chunk[0], step, kl_weight, lr_scale, guard)]
            else:  # a task with steps_per_call > 1 keeps its hyperparameters between these points
                outs = task.steps(engine, chunk, step, kl_weight, lr_scale)
            acc_time += time.perf_counter() - t0  # the outs are floats: the steps have finished
            for batch, out in zip(chunk, outs):
                guard(out, step + 1)
                n = task.size(batch)
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + v
                    batch_sums[k] = batch_sums.get(k, 0.0) + v * n
                acc_steps, acc_units = acc_steps + 1, acc_units + task.count(batch)
                step += 1
            done = step
            if done % tc.log_every == 0 or done == total_steps:
                train_time += acc_time
                record, postfix = task.log_record(sums, batch_sums, acc_steps, acc_units, acc_time, kl_weight,
                                                  lr_scale)
                writer.write(done, "train", {**record, "epoch": done / per_epoch})
                bar.set_postfix(**postfix)
                sums, batch_sums, acc_steps, acc_units, acc_time = {}, {}, 0, 0, 0.0
            if done % per_epoch == 0 and (done // per_epoch % tc.validate_every == 0 or done == total_steps):
                task.validate(engine, done // per_epoch, writer, done, log)
            if done % tc.checkpoint_every == 0 or done == total_steps:
                save(engine, guard, done, {"step": done, "epoch": done // per_epoch, "batch_index": done % per_epoch,
                                           "batches_per_epoch": per_epoch, "seed": tc.seed, "config": cfg.to_dict(),
                                           "train_seconds": earlier_seconds + train_time + acc_time, **task.state()})
            bar.update(len(chunk))
    finally:
        bar.close()
    return train_time


def save(engine: Engine, guard: Guard, step: int, meta: dict) -> None:
    """A checkpoint at ``step``; a failure to write it stops the run with the older ones kept."""
    try:
        engine.save(step, meta)
    except Exception as e:  # noqa: BLE001 -- a full disk is an OSError here, a RuntimeError in torch's zip writer
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise TrainingError(f"cannot write the checkpoint of step {step} ({reason}); stopped. "
                            f"{kept_checkpoints(guard.workdir, guard.last_checkpoint)}; free space, then "
                            f"{next_command(guard.last_checkpoint)}") from None
    guard.last_checkpoint = step


def finish(task: Task, engine: Engine, writer, workdir: Path, layout: Layout, train_time: float,
           earlier_seconds: float) -> dict:
    """The test figures in ``results.json`` (which marks the run finished) and the end-of-run outputs."""
    cfg, total_steps = task.cfg, task.total_steps
    results, test_record = task.test(engine)
    results = {"split": "test", "step": total_steps, "epochs": total_steps / task.per_epoch, **results,
               "train_seconds_this_session": train_time, "train_seconds": earlier_seconds + train_time,
               "backend": cfg.backend, "devices": layout.devices, "processes": layout.processes}
    writer.write(total_steps, "test", test_record)
    writer.close()
    if layout.main:
        atomic_write_json(workdir / rundir.RESULTS, results)
        task.outputs(engine, workdir)
        write_training_curves(workdir)
    return results


def call_end(step: int, total: int, per_call: int, periods: tuple[int, ...]) -> int:
    """The step after the last of the steps one engine call takes from ``step``: at most ``per_call``
    of them, never past ``total`` nor past a multiple of any of ``periods`` (where the driver logs,
    validates or saves)."""
    end = min(total, step + per_call)
    for period in periods:
        end = min(end, (step // period + 1) * period)
    return end


def write_training_curves(workdir: Path) -> None:
    """training_curves.png: every loss term, and the validation KL, MI and active units, against steps."""
    from vaecore.runner.report import read_jsonl
    from vaecore.scoring.plots import save_training_curves

    save_training_curves(read_jsonl(Path(workdir) / rundir.METRICS), Path(workdir) / rundir.TRAINING_CURVES)


#!/usr/bin/env python
"""The studies' tables: train every row, evaluate it, write the comparison table.

    python scripts/study.py --runs runs/study --rows all --jobs 2 --out results/ptb_collapse
    python scripts/study.py --runs runs/study --rows bn-0.7,lm --backend jax --jobs 8 --device cuda  # a GPU
    python scripts/study.py --study mnist-record --data DIR --runs runs/mnist --rows burda-vae --out results/mnist_record

``--study ptb-transformer`` is issue 35's study of the Transformer decoder on PTB (``TRANSFORMER_ROWS``).
``--study ptb-collapse`` (the default) is the posterior-collapse study on PTB: each row is a
``train.py --task text`` run with the defaults plus the row's flags (``ROWS``), evaluated with
K = 100. ``--study mnist-record`` is issue 18's MNIST table: each row is ``train.py --task mnist``
plus ``MNIST_ROWS``'s flags (Burda et al.'s protocol for the VAE and IWAE rows), in JAX by default
(its small-batch step is the fastest here), evaluated with K = 5000 on all 10,000 test images and MI
over the whole split (``--mi-batch-size 10000``: with batches of 500 the estimate sits at its ceiling
log 500). ``--data`` is passed to every run (full MNIST: the idx directory). Runs live in
``RUNS/ROW-BACKEND``; a row whose folder already holds a run is continued with ``--resume`` (and is
only evaluated when it has finished: when its ``results.json`` holds the test figures of the last step its
``config.json`` asks for), so the script can be stopped and started again at any time.
Up to ``--jobs`` runs train at once; on a CPU each is pinned to one core (``taskset``, one thread),
on a GPU they share it. Then every finished run without ``eval_test.json`` at this K is evaluated
(``evaluate.py --k K``, also ``--jobs`` at a time), and ``evaluate.py --compare`` writes
``OUT/comparison.md`` and ``.csv`` over every finished, evaluated row. With ``--out``, each evaluated
run's small files (config, results, evaluation, texts, curves; no checkpoints) are copied to
``OUT/<run>/`` and the table is built from those copies, keeping the rows of an earlier
``OUT/comparison.csv``: the table survives the run folders. ``--train-args`` adds flags to
every run (for a quick check: ``--train-args "--max-steps 40 --data DIR"``). ``--status`` starts
nothing and prints where each row stands (step of total, rate, hours of steps left, when it last logged;
``corrupt: <why>`` for a folder it cannot read, and exit status 2). ``scripts/study_state.py`` reads the
folders. ``--best`` also evaluates every finished row at its best validation epoch (``evaluate.py --step
best``: the kept checkpoint of the lowest validation -ELBO, as texar reports its rows), the table row
``<run>@<step>``; the rows that select this way keep a checkpoint at every epoch's end.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]  # vaecore, and study_state beside this file
from study_state import RowError, row_state, run_dir, status_table

from vaecore.pinning import on_core
from vaecore.settings.cli import OneLineParser

# row name -> train.py flags on top of the text defaults (12 epochs, logistic annealing, free bits 0.05)
ROWS = {
    "lm": ["--no-latent"],
    "elbo-no-anneal": ["--kl-schedule", "constant", "--free-bits", "0"],
    "default": [],
    "delta-0.15": ["--delta-rate", "0.15"],
    "delta-0.3": ["--delta-rate", "0.3"],
    "bn-0.7": ["--bn-gamma", "0.7"],
    # 2 epochs of autoencoder on top of the 12 of the ELBO, the decay after the ELBO's 8th, as the others
    "pretrain-fb": ["--pretrain-ae-epochs", "2", "--epochs", "14", "--lr-decay-start", "10", "--free-bits", "0.25"],
    # the same, with z also fed to the decoder at every step (Bowman et al. feed it once, as the others)
    "pretrain-fb-z": ["--pretrain-ae-epochs", "2", "--epochs", "14", "--lr-decay-start", "10", "--free-bits", "0.25",
                      "--z-every-step"],
    # pretrain-fb and the LM with dropout 0.4 on the decoder's input embeddings and RNN outputs (0.25 in
    # the others): pretrain-fb's training -ELBO sat 7 nats below its validation -ELBO
    "pretrain-fb-d0.4": ["--pretrain-ae-epochs", "2", "--epochs", "14", "--lr-decay-start", "10", "--free-bits", "0.25",
                         "--embedding-dropout", "0.4", "--output-dropout", "0.4"],
    "lm-d0.4": ["--no-latent", "--embedding-dropout", "0.4", "--output-dropout", "0.4"],
    # pretrain-fb-d0.4 with 4 more epochs before the decay (2 + 16, the decay after the ELBO's 12th):
    # at dropout 0.4 its validation -ELBO still fell 0.2-0.5 nats per epoch when the decay began
    "pretrain-fb-d0.4-18": ["--pretrain-ae-epochs", "2", "--epochs", "18", "--lr-decay-start", "14",
                            "--free-bits", "0.25", "--embedding-dropout", "0.4", "--output-dropout", "0.4"],
    # the LM on pretrain-fb-d0.4-18's schedule after its autoencoder epochs (16 epochs, the decay after the
    # 12th): the language model that row must beat on an equal budget
    "lm-d0.4-16": ["--no-latent", "--embedding-dropout", "0.4", "--output-dropout", "0.4", "--epochs", "16",
                   "--lr-decay-start", "12"],
    "aggressive": ["--aggressive"],
    "infovae": ["--loss", "mmd", "--alpha", "0.5", "--lambda", "10"],
}

# issue 35: the sentence VAE with a Transformer decoder beside texar's (Mikolov's PTB, -ELBO 101.48 TF / 101.61
# PyTorch). TRANSFORMER is texar's configuration: an LSTM 256 encoder, 3 pre-norm blocks of width 256 with 8
# heads and a 1,024 feed-forward, z a one-vector memory (--z-injection's default), dropout 0.2 on embeddings, attention and residuals,
# Adam 1e-3, batch 32. Texar anneals the KL weight linearly from 0.1 to 1 over 10 epochs and halves the rate
# on a validation plateau for up to 100 epochs; these rows ramp from 0 over 10 epochs (13,140 steps) and decay
# the rate by 0.7 per epoch after the 16th of 24 (about 3.4 hours of one CPU core per row).
TRANSFORMER = ["--decoder", "transformer", "--transformer-layers", "3",
               "--transformer-heads", "8", "--transformer-ff", "1024", "--embedding-dropout", "0.2",
               "--attention-dropout", "0.2", "--residual-dropout", "0.2", "--output-dropout", "0", "--lr", "1e-3",
               "--epochs", "24", "--lr-decay-start", "16", "--lr-decay", "0.7"]
# At texar's dropout of 0.2 the language model overfits PTB: its validation -ELBO was lowest at epoch 9 (102.11)
# and 103.36 by epoch 17, its training -ELBO 92.7 in epoch 9 (docs/2026-12-06-transformer-decoder.md). The -d0.4
# rows raise the embedding and residual dropout to 0.4 (as on the LSTM's best rows; attention dropout stays 0.2)
# and keep a checkpoint at every epoch's end (1,314 steps) for --best.
EVERY_EPOCH = ["--checkpoint-every", "1314", "--keep-checkpoints", "30"]
DROPOUT_04 = ["--embedding-dropout", "0.4", "--residual-dropout", "0.4", *EVERY_EPOCH]
TRANSFORMER_ROWS = {
    # texar and lm keep every epoch's checkpoint too (added in the sixth session; the first torch runs kept them
    # only from steps 10,500 / 12,000 on), so that --best finds the best validation epoch of a rerun
    "texar": [*TRANSFORMER, *EVERY_EPOCH, "--kl-schedule", "linear", "--kl-warmup-steps", "13140", "--free-bits", "0"],
    "lm": [*TRANSFORMER, *EVERY_EPOCH, "--no-latent"],
    # the language model and the remedies that won on the LSTM (docs/2026-12-01-collapse-study.md), on the same
    # budget at dropout 0.4 (the same remedies at 0.2 were never run: the language model showed 0.2 too little)
    "lm-d0.4": [*TRANSFORMER, *DROPOUT_04, "--no-latent"],
    "pretrain-fb-d0.4": [*TRANSFORMER, *DROPOUT_04, "--pretrain-ae-epochs", "2", "--free-bits", "0.25"],
    "bn-d0.4": [*TRANSFORMER, *DROPOUT_04, "--bn-gamma", "0.7", "--free-bits", "0"],
    # Dropout 0.4 cost more than it saved: lm-d0.4's validation -ELBO was flat at 105.0-105.1 over epochs 9-10
    # (0.2: 102.11 at epoch 9), so both -d0.4 rows were stopped there. The -decay rows keep texar's 0.2 and
    # decay the rate where the language model's validation -ELBO levels off (epoch 8) instead of after the 16th,
    # as texar's halving on a plateau does: the language model 14 epochs with the decay after the 8th, the
    # remedy 2 autoencoder epochs + the same 14 (free bits 0.2 a dimension: a KL floor of 6.4 nats, for KL >= 5
    # at evaluation without paying for 0.25's 8).
    "lm-decay": [*TRANSFORMER, *EVERY_EPOCH, "--no-latent", "--epochs", "14", "--lr-decay-start", "8"],
    "pretrain-fb-decay": [*TRANSFORMER, *EVERY_EPOCH, "--pretrain-ae-epochs", "2", "--free-bits", "0.2", "--epochs", "16",
                          "--lr-decay-start", "10"],
    # BN-VAE on the same schedule: gamma 0.6 fixes the batch variance of every posterior mean at 0.36, a KL of
    # at least 0.5 * 32 * 0.36 = 5.8 nats (0.7's 7.8 is more rate than the bar needs)
    "bn-decay": [*TRANSFORMER, *EVERY_EPOCH, "--bn-gamma", "0.6", "--free-bits", "0", "--epochs", "14",
                 "--lr-decay-start", "8"],
}

# issue 18: the MNIST rows beside Burda et al.'s (2015) published figures (VAE 86.76, IWAE k 5 85.54, k 50
# 84.78 nats, K = 5000); the preset is their protocol (784-200-200-50 tanh, batch 20, 3,280 epochs)
# (an epoch of Burda's protocol is 2,750 steps of about 1 ms: validating every epoch, checkpointing every 500
# steps and logging every 50 made an epoch 4.25 s of wall time against 2.81 s with these rows' settings,
# bench/run_overhead.py; a checkpoint every 20,000 steps is about 17 s of the VAE and 35 s of IWAE k = 5; none
# of these flags changes a training step)
BURDA = ["--preset", "burda", "--validate-every", "10", "--checkpoint-every", "20000", "--log-every", "500"]
MNIST_ROWS = {
    "burda-vae": BURDA,
    "burda-iwae5": [*BURDA, "--loss", "iwae", "--iw-samples", "5"],
    "burda-iwae50": [*BURDA, "--loss", "iwae", "--iw-samples", "50"],
    # the project's default MLP (784-512-512-20, batch 128) and conv model trained far longer than 10 epochs,
    # on Burda's learning-rate stages: i = 0..6 for the MLP (1 + 3 + ... + 729 = 1,093 epochs, about 50 min
    # in JAX on one core), i = 0..4 for the conv model (121 epochs: its step is 10 times the MLP's)
    "mlp-long": ["--lr-schedule", "burda", "--epochs", "1093"],
    "conv-long": ["--model", "conv", "--lr-schedule", "burda", "--epochs", "121"],
}

# study -> (task, rows, default backend, K, evaluate.py flags)
STUDIES = {
    "ptb-collapse": ("text", ROWS, "torch", 100, []),
    "mnist-record": ("mnist", MNIST_ROWS, "jax", 5000, ["--mi-batch-size", "10000"]),
    "ptb-transformer": ("text", TRANSFORMER_ROWS, "torch", 100, []),
}


RECORD_FILES = ("config.json", "results.json", "eval_test.json", "samples.txt", "reconstructions.txt",
                "interpolations.txt", "samples.png", "reconstructions.png", "training_curves.png")
BEST = "lowest validation -ELBO among kept checkpoints"  # evaluate.py --step best's chosen_by


def best_evaluation(folder: Path, k: int) -> Path | None:
    """The row's ``--step best`` figures at this K (its ``eval_test_step<N>.json``), or None."""
    import json

    from vaecore.settings.config import RunConfig
    from vaecore.task import tasks

    cfg = RunConfig.load(folder / "config.json")
    for path in sorted(folder.glob("eval_test_step*.json")):
        try:
            metrics = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if metrics.get("chosen_by") == BEST and metrics.get("k") == tasks.samples_needed(cfg, k):
            return path
    return None


def keep_record(folder: Path, out: Path) -> Path:
    """Copy what a table row and a reader need of an evaluated run (``RECORD_FILES``: no checkpoints)
    to ``OUT/<run>/``, and return that copy: the table can be rebuilt from ``OUT`` alone after the run
    folders are gone."""
    import shutil

    record = out / folder.name
    record.mkdir(parents=True, exist_ok=True)
    for name in RECORD_FILES:
        if (folder / name).exists():
            shutil.copy2(folder / name, record / name)
    for path in folder.glob("eval_test_step*.json"):  # evaluate.py --step: the figures of a kept checkpoint
        shutil.copy2(path, record / path.name)
    return record


def pinned(cmd: list[str], core: int | None) -> tuple[list[str], dict]:
    env = dict(os.environ)
    if core is None:  # several processes share the GPU: JAX must not take 75% of its memory in each
        env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        return cmd, env
    return on_core(cmd, core)


def run_all(jobs: list[tuple[str, list[str], Path]], parallel: int, cores: list[int] | None) -> list[str]:
    """Run (name, command, log file) jobs, ``parallel`` at a time; returns the names that failed."""
    pending, running, failed = list(jobs), {}, []
    while pending or running:
        while pending and len(running) < parallel:
            name, cmd, log = pending.pop(0)
            free = [c for c in (cores or []) if c not in {slot for _, slot in running.values()}]
            core = free[0] if cores else None
            full, env = pinned(cmd, core)
            with open(log, "a") as out:
                proc = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            running[proc] = (name, core)
            print(f"started {name}" + (f" on core {core}" if core is not None else ""), flush=True)
        time.sleep(2)
        for proc in [p for p in running if p.poll() is not None]:
            name, _ = running.pop(proc)
            print(f"{name}: exit {proc.returncode}", flush=True)
            if proc.returncode != 0:
                failed.append(name)
    return failed


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value}")
    return value


def core_list(text: str) -> list[int]:
    """``--cores``: distinct CPU cores that this process may use (taskset would fail every job on another)."""
    try:
        cores = [int(c) for c in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CPU core numbers separated by commas, got {text!r}") from None
    usable = sorted(os.sched_getaffinity(0))
    if len(set(cores)) < len(cores) or not set(cores) <= set(usable):
        raise argparse.ArgumentTypeError(f"expected distinct cores among those this process may use "
                                         f"({','.join(map(str, usable))}), got {text!r}")
    return cores


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="study.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--study", choices=tuple(STUDIES), default="ptb-collapse", help="which table (default ptb-collapse)")
    p.add_argument("--runs", type=Path, required=True, help="folder of the run folders")
    p.add_argument("--rows", default="all", help="comma-separated rows, or all: "
                   + "; ".join(f"{name}: {', '.join(study[1])}" for name, study in STUDIES.items()))
    p.add_argument("--backend", choices=("torch", "jax"), default=None,
                   help="default: torch for ptb-collapse, jax for mnist-record")
    p.add_argument("--jobs", type=positive_int, default=2, help="runs (and evaluations) at once")
    p.add_argument("--device", default="cpu", help="cpu: pin each job to a core; cuda: share the GPU")
    p.add_argument("--cores", type=core_list, default=None,
                   help="cpu: the cores to pin jobs to, comma-separated, at least --jobs of them (default: the first "
                        "--jobs of the cores this process may use)")
    p.add_argument("--data", default=None, help="train.py --data for every run (full MNIST: the idx directory)")
    p.add_argument("--k", type=positive_int, default=None,
                   help="importance samples per example in the evaluation (default 100 for text, 5000 for MNIST)")
    p.add_argument("--out", type=Path, default=None, help="folder for comparison.md/.csv (default RUNS)")
    p.add_argument("--train-args", default="", help="extra train.py flags for every run")
    p.add_argument("--eval-args", default="", help="extra evaluate.py flags for every evaluation")
    p.add_argument("--status", action="store_true", help="print where each row's run stands, start nothing")
    p.add_argument("--best", action="store_true",
                   help="also evaluate each finished row at its best validation epoch (evaluate.py --step best), "
                        "the table row <run>@<step>")
    return p


def chosen_rows(p: OneLineParser, text: str, study: str, study_rows: dict) -> list[str]:
    rows = list(study_rows) if text == "all" else text.split(",")
    unknown = [r for r in rows if r not in study_rows]
    if unknown:
        p.error(f"unknown rows {unknown} for --study {study}; known: {', '.join(study_rows)}")
    if twice := sorted({r for r in rows if rows.count(r) > 1}):  # two jobs would train one folder at once
        p.error(f"--rows names {', '.join(twice)} more than once; name each row once")
    return rows


def states(p: OneLineParser, runs: Path, rows: list[str], backend: str, k: int) -> dict[str, str]:
    """Each row's ``row_state``; a row whose folder cannot be read stops the study before it starts."""
    out, corrupt = {}, []
    for row in rows:
        try:
            out[row] = row_state(run_dir(runs, row, backend), k)
        except RowError as e:
            corrupt.append(str(e))
    if corrupt:
        p.error(f"{'; '.join(corrupt)}; restore the file or move the row's folder away (nothing was started)")
    return out


def main(argv: list[str] | None = None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    task, study_rows, backend, k, eval_flags = STUDIES[args.study]
    args.backend = args.backend or backend
    args.k = args.k or k
    rows = chosen_rows(p, args.rows, args.study, study_rows)
    if args.status:
        table, corrupt = status_table(args.runs, rows, args.backend, args.k)
        print(table)
        if corrupt:
            print(f"study.py: error: {corrupt} of {len(rows)} row folders cannot be read (their lines say why); "
                  f"restore the files or move the folders away", file=sys.stderr)
        return 2 if corrupt else 0
    cores = None
    if args.device == "cpu":
        cores = args.cores or sorted(os.sched_getaffinity(0))[:args.jobs]  # each running job has its own
        if len(cores) < args.jobs:
            named = f"--cores {','.join(map(str, cores))} names" if args.cores else "this process may use"
            p.error(f"{named} {len(cores)} cores for --jobs {args.jobs}; name at least as many, or pass fewer --jobs")
    state = states(p, args.runs, rows, args.backend, args.k)
    data = ["--data", args.data] if args.data else []
    device = [] if args.backend == "jax" else ["--device", args.device]
    args.runs.mkdir(parents=True, exist_ok=True)

    train_jobs = []
    for row in [r for r in rows if state[r] in ("not started", "training")]:
        folder = run_dir(args.runs, row, args.backend)
        resume = ["--resume"] if state[row] == "training" else [*study_rows[row], *shlex.split(args.train_args)]
        cmd = [sys.executable, "train.py", "--task", task, "--backend", args.backend, "--workdir", str(folder),
               *data, *device, *resume]
        train_jobs.append((f"train {row}", cmd, args.runs / f"{row}-{args.backend}.log"))
    failed = run_all(train_jobs, args.jobs, cores)

    eval_jobs = []
    for row in [r for r in rows if settled(args.runs, r, args.backend, args.k) == "finished"]:
        cmd = [sys.executable, "evaluate.py", "--workdir", str(run_dir(args.runs, row, args.backend)), "--k",
               str(args.k), "--no-pictures", *eval_flags, *shlex.split(args.eval_args)]
        eval_jobs.append((f"evaluate {row}", cmd, args.runs / f"{row}-{args.backend}.eval.log"))
    for row in rows if args.best else []:
        folder = run_dir(args.runs, row, args.backend)
        if settled(args.runs, row, args.backend, args.k) in ("finished", "evaluated") and not best_evaluation(
                folder, args.k):
            cmd = [sys.executable, "evaluate.py", "--workdir", str(folder), "--k", str(args.k), "--step", "best",
                   *eval_flags, *shlex.split(args.eval_args)]
            eval_jobs.append((f"evaluate {row} --step best", cmd, args.runs / f"{row}-{args.backend}.eval.log"))
    failed += run_all(eval_jobs, args.jobs, cores)

    done = [run_dir(args.runs, r, args.backend) for r in rows if settled(args.runs, r, args.backend, args.k) == "evaluated"]
    if done and not compare(done, args.runs, args.out):
        failed.append("the comparison")
    missing = [r for r in rows if run_dir(args.runs, r, args.backend) not in done]
    if missing:
        print(f"not finished or not evaluated yet: {', '.join(missing)}")
    if failed:
        print(f"failed: {', '.join(failed)} (see the .log files in {args.runs})", file=sys.stderr)
        return 1
    return 0


def settled(runs: Path, row: str, backend: str, k: int) -> str:
    """A row's state after its jobs: one whose folder a job left unreadable is ``corrupt``, which is never
    evaluated nor compared (its job's failure is already reported)."""
    try:
        return row_state(run_dir(runs, row, backend), k)
    except RowError:
        return "corrupt"


def compare(done: list[Path], runs: Path, out: Path | None) -> bool:
    """``evaluate.py --compare`` over the evaluated runs (their records in ``out`` if given, keeping the rows
    of an earlier ``out/comparison.csv``); whether it succeeded."""
    folder = out or runs
    records = [keep_record(run, folder) for run in done] if out else done
    records += [path for record in records for path in sorted(record.glob("eval_test_step*.json"))]
    earlier = [folder / "comparison.csv"] if (folder / "comparison.csv").exists() else []
    cmd = [sys.executable, "evaluate.py", "--compare", *map(str, earlier + records), "--out", str(folder)]
    return subprocess.run(cmd, cwd=ROOT, check=False).returncode == 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``twinvae-evaluate`` and ``evaluate.py``: evaluate a finished run as the papers do, or compare several evaluated runs.

    python evaluate.py --workdir RUN [--k 5000] [--split test] [--batch-size 100] [--limit N] [--step N|best]
    python evaluate.py --compare RUN1 RUN2 ... [DIR/comparison.csv] --out DIR [--split test]

The first loads ``RUN/config.json`` and the newest checkpoint with the run's backend (only that one is
imported), computes the importance-sampled NLL, negative ELBO, KL, mutual information and active
units on the split (``vaecore/scoring/evaluation.py`` says how), writes ``RUN/eval_<split>.json``, draws the
pictures (MNIST: interpolations, latent space; the training curves if training did not draw them), writes
``RUN/report.md`` and prints a table. A finished run (``results.json`` of the evaluated checkpoint's
step) also gets the figures merged into ``results.json`` under ``eval_<split>`` (atomically, every other
key kept, under the run folder's lock); an unfinished one keeps its ``results.json`` absent or as it is,
so no tool takes it for finished. It only adds files to the run folder, and checks that it can write
there before it evaluates. The second writes ``DIR/comparison.md`` and ``DIR/comparison.csv``,
one row per run; an earlier ``comparison.csv`` among the runs keeps its rows (a run folder of the same
name replaces its row), so a study's table grows without its older run folders.

``--step N`` evaluates the checkpoint of step N instead of the newest; ``--step best`` the kept checkpoint
with the lowest validation -ELBO in ``metrics.jsonl`` (how the papers that select on validation report
test figures; the run must keep its checkpoints: ``--keep-checkpoints``). Its figures go to
``RUN/eval_<split>_step<N>.json`` (with how the step was chosen), nothing else in RUN changes, and
``--compare`` takes that file in place of a run folder: its row is named ``<run>@<N>``.
Bad input (a damaged file included) prints one line and exits with status 2; a failure to write
after the evaluation prints one line and exits with status 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from twinvae.backends import backend_package
from vaecore.files import atomic_write_json, os_reason
from vaecore.runs import rundir
from vaecore.runs.rundir import check_writable_folder, read_json
from vaecore.scoring import evaluation
from vaecore.settings.cli import OneLineParser
from vaecore.settings.config import ConfigError, RunConfig, on_any_device
from vaecore.task import tasks

INTERPOLATION_PAIRS, INTERPOLATION_STEPS = 8, 10
LATENT_POINTS = 5000


class UsageError(ValueError):
    """Bad input from the user: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(description="Evaluate a run (IW-NLL, ELBO, KL, MI, active units) or compare runs.",
                     allow_abbrev=False)
    p.add_argument("--workdir", help="run folder to evaluate (config.json and checkpoints/)")
    p.add_argument("--compare", nargs="+", metavar="RUN", help="evaluated run folders to put in one table, and earlier comparison.csv files whose rows to keep")
    p.add_argument("--out", help="with --compare: folder for comparison.md and comparison.csv")
    p.add_argument("--split", default="test", choices=("test", "valid"), help="split to evaluate (default test)")
    p.add_argument("--k", type=int, default=None,
                   help="importance samples per example (default 5000 for MNIST, 500 for text)")
    p.add_argument("--batch-size", type=int, default=100,
                   help="examples per importance-sampling batch (memory and speed only; default 100)")
    p.add_argument("--chunk-rows", type=int, default=None,
                   help="decoder rows (samples x examples) per call, bounds memory (default "
                        + ", ".join(f"{s.chunk_rows} for {t}" for t, s in tasks.REGISTRY.items()) + ")")
    p.add_argument("--mi-batch-size", type=int, default=evaluation.MI_BATCH_SIZE,
                   help="batch over which the aggregate posterior q(z) is estimated for the mutual information "
                        f"(the estimate depends on it; default {evaluation.MI_BATCH_SIZE})")
    p.add_argument("--au-threshold", type=float, default=evaluation.AU_THRESHOLD,
                   help=f"a unit is active when Var_x(E[z|x]) exceeds this (default {evaluation.AU_THRESHOLD})")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N examples of the split")
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples (default 0)")
    p.add_argument("--step", default=None, metavar="N|best",
                   help="evaluate the checkpoint of step N, or 'best': the kept one with the lowest validation "
                        "-ELBO (default: the newest); figures go to eval_<split>_step<N>.json")
    p.add_argument("--data", default=None, help="data location, if not the one in config.json")
    p.add_argument("--no-pictures", action="store_true", help="skip the pictures (report.md is still written)")
    return p


def check_args(args: argparse.Namespace) -> None:
    if (args.workdir is None) == (args.compare is None):
        raise UsageError("give either --workdir RUN or --compare RUN1 RUN2 ... --out DIR")
    if args.compare is not None and args.out is None:
        raise UsageError("--compare needs --out DIR")
    if args.compare is None and args.out is not None:
        raise UsageError("--out applies to --compare; an evaluation writes into --workdir")
    if args.compare is not None:  # --compare reads eval_<split>.json files; these flags shape an evaluation
        defaults = build_parser().parse_args([])
        for name in ("k", "batch_size", "chunk_rows", "mi_batch_size", "au_threshold", "limit", "seed", "data",
                     "no_pictures", "step"):
            if getattr(args, name) != getattr(defaults, name):
                raise UsageError(f"--{name.replace('_', '-')} applies to evaluating a run (--workdir); --compare "
                                 f"reads the runs' eval_{args.split}.json as they were evaluated")
    for name, low in (("k", 1), ("batch_size", 1), ("chunk_rows", 1), ("mi_batch_size", 2), ("limit", 2),
                      ("seed", 0)):
        value = getattr(args, name)
        if value is not None and value < low:
            raise UsageError(f"--{name.replace('_', '-')} must be >= {low}; got {value}")
    if args.au_threshold < 0:
        raise UsageError(f"--au-threshold must be >= 0; got {args.au_threshold}")
    if args.step is not None and args.step != "best" and not (args.step.isdigit() and int(args.step) >= 1):
        raise UsageError(f"--step takes a checkpoint's step (a whole number >= 1) or 'best'; got {args.step!r}")


def chosen_step(workdir: Path, text: str | None) -> tuple[int | None, dict]:
    """The checkpoint step ``--step`` names (None: the newest) and how it was chosen. ``best`` is the
    kept checkpoint whose step has the lowest validation -ELBO in ``metrics.jsonl`` (the last row of a
    step counts: a resumed run logs the same figures again); when the best validated step keeps no
    checkpoint, that is said in the returned record beside the one chosen."""
    if text is None:
        return None, {}
    if text != "best":
        return int(text), {"chosen_by": "--step"}
    from vaecore.runner.report import read_jsonl

    valid = {row["step"]: row["neg_elbo"] for row in read_jsonl(workdir / rundir.METRICS)
             if row.get("split") == "valid" and isinstance(row.get("neg_elbo"), (int, float))}
    if not valid:
        raise UsageError(f"--step best: {workdir / rundir.METRICS} holds no validation -ELBO; name a step "
                         f"(--step N) or evaluate the newest checkpoint")
    kept = [s for s in rundir.checkpoint_steps(workdir) if s in valid]
    if not kept:
        raise UsageError(f"--step best: none of the run's validated steps keeps a checkpoint (kept: "
                         f"{', '.join(map(str, rundir.checkpoint_steps(workdir))) or 'none'}); name a step (--step N)")
    step = min(kept, key=lambda s: (valid[s], s))
    best = min(valid, key=lambda s: (valid[s], s))
    record = {"chosen_by": "lowest validation -ELBO among kept checkpoints", "valid_neg_elbo": valid[step]}
    if best != step:
        record.update(best_valid_step=best, best_valid_neg_elbo=valid[best])
    return step, record


def load_config(workdir: Path) -> RunConfig:
    try:
        return on_any_device(rundir.read_config(workdir))
    except ConfigError as e:
        raise UsageError(str(e)) from None


def write_pictures(model, images: np.ndarray, labels: np.ndarray, workdir: Path) -> list[str]:
    """Interpolation strips and the latent space coloured by label; returns the files written."""
    from vaecore.scoring import plots

    written = []
    pairs = min(INTERPOLATION_PAIRS, len(images) // 2)
    if pairs:
        a, b = images[:pairs], images[pairs:2 * pairs]
        mu_a, mu_b = model.posterior_mean(a), model.posterior_mean(b)
        t = np.linspace(0.0, 1.0, INTERPOLATION_STEPS)[None, :, None]
        path = (1 - t) * mu_a[:, None] + t * mu_b[:, None]  # [pairs, steps, D]
        decoded = model.decode_probs(path.reshape(-1, path.shape[-1])).reshape(pairs, INTERPOLATION_STEPS, -1)
        strips = np.concatenate([a[:, None], decoded, b[:, None]], axis=1)
        plots.save_interpolations(strips, workdir / rundir.INTERPOLATIONS_PNG)
        written.append(rundir.INTERPOLATIONS_PNG)
    n = min(LATENT_POINTS, len(images))
    plots.save_latent_scatter(model.posterior_mean(images[:n]), labels[:n], workdir / rundir.LATENT_SPACE_PNG)
    written.append(rundir.LATENT_SPACE_PNG)
    return written


def reconstruction_accuracy(decoding, vae, batches: list) -> float:
    """Token accuracy of the greedy decodings of the posterior means (``evaluation.token_accuracy``)."""
    correct = total = 0
    for b in batches:
        decoded = decoding.reconstruct(vae, b.tokens, b.lengths, max_len=int(b.lengths.max()) + 8)
        c, t = evaluation.token_accuracy(decoded, b.tokens, b.lengths)
        correct, total = correct + c, total + t
    return correct / total


def training_results(workdir: Path) -> dict | None:
    """The run's ``results.json`` (None when the run has not finished), read before hours of
    evaluation: a damaged one is refused now."""
    path = workdir / rundir.RESULTS
    return read_json(path, "results file") if path.exists() else None


def merge_if_finished(workdir: Path, split: str, metrics: dict, log) -> bool:
    """Merge ``metrics`` into ``results.json`` under ``eval_<split>`` when the run is finished at the
    evaluated step: ``results.json`` exists and names the checkpoint's step (a run resumed past its
    end and stopped again has newer checkpoints than its results). Under the folder's lock, so a
    training run that writes results.json meanwhile is never overwritten; held by another process,
    the merge is skipped (the figures are in eval_<split>.json). Returns whether it merged."""
    lock = None
    try:
        lock = rundir.lock_run(workdir)
        results = training_results(workdir)
        if results is None or results.get("step", metrics["step"]) != metrics["step"]:
            told = "no results.json" if results is None else f"results.json is of step {results.get('step')}"
            log(f"the run is unfinished ({told}, the checkpoint of step {metrics['step']}): results.json is left "
                f"as it is; the figures are in {rundir.eval_file(split)}")
            return False
        evaluation.merge_json(workdir / rundir.RESULTS, {f"eval_{split}": metrics})
        return True
    except ConfigError as e:
        log(f"results.json is left as it is ({e}); the figures are in {rundir.eval_file(split)}")
        return False
    finally:
        if lock is not None:
            lock.release()


def evaluate_run(args: argparse.Namespace, log=print) -> dict:
    """Evaluate ``args.workdir``; write eval_<split>.json, pictures and report.md, and merge the
    figures into results.json if the run is finished at the evaluated checkpoint."""
    from vaecore.runner.report import write_report
    from vaecore.runs.metrics import progress_bar

    workdir = Path(args.workdir)
    cfg = load_config(workdir)
    training_results(workdir)  # a damaged results.json is refused before the evaluation, not after
    check_writable_folder(workdir, "--workdir")
    spec = tasks.task(cfg.task)
    k = args.k if args.k is not None else spec.eval_k
    if tasks.samples_needed(cfg, k) != k:
        log(f"the language model (--no-latent) has no code to sample: its NLL is exact with K = 1, not {k}")
        k = tasks.samples_needed(cfg, k)
    try:
        data = spec.eval_data(cfg, workdir, split=args.split, data=args.data, limit=args.limit,
                              batch_size=args.batch_size)
    except ValueError as e:  # DataError, TextDataError: the data cannot be read as the run read it
        raise UsageError(f"{e} (pass --data to point at the run's data)") from None
    batches, images, labels, source = data.batches, data.images, data.labels, data.source
    unit, count_tokens = spec.unit, data.count_tokens
    n = sum(evaluation.batch_length(b) for b in batches)
    if n < 2:
        raise UsageError(f"the {args.split} split has {n} examples; at least 2 are needed")
    asked, selection = chosen_step(workdir, args.step)
    backend = backend_package(cfg.backend).evaluation
    try:
        model, step = backend.load_model(cfg, workdir, asked)
    except FileNotFoundError as e:
        raise UsageError(str(e)) from None
    if selection.get("best_valid_step") is not None:
        log(f"the best validation -ELBO ({selection['best_valid_neg_elbo']:.3f}, step {selection['best_valid_step']}) "
            f"has no kept checkpoint; evaluating the best kept one (step {step}, {selection['valid_neg_elbo']:.3f})")
    chunk_rows = args.chunk_rows if args.chunk_rows is not None else spec.chunk_rows
    log(f"{cfg.backend}: {workdir}: checkpoint at step {step}; {args.split} split of {source}: {n} {unit}s, "
        f"K = {k}")
    bar = progress_bar(n, 0, f"{cfg.backend} IW K={k}")
    done = 0

    def progress(count: int) -> None:
        nonlocal done
        bar.update(count - done)
        done = count

    try:
        metrics = backend.evaluate_split(model, batches, k=k, seed=args.seed, chunk_rows=chunk_rows,
                                         mi_batch_size=args.mi_batch_size, au_threshold=args.au_threshold,
                                         count_tokens=count_tokens, progress=progress)
    finally:
        bar.close()
    if spec.token_accuracy:
        metrics["token_acc"] = reconstruction_accuracy(backend_package(cfg.backend).decoding,
                                                       model.vae, batches)
    metrics = {"split": args.split, "units": f"nats per {unit}", "backend": cfg.backend, "task": cfg.task,
               "step": step, "data": source, "limited": args.limit is not None, "batch_size": args.batch_size,
               **selection, **metrics}
    if asked is not None:  # one checkpoint of several: its own file; the newest's figures and pictures stay
        path = workdir / rundir.eval_file(args.split, step)
        atomic_write_json(path, metrics)
        log(evaluation.format_table(metrics))
        log(f"wrote {path}")
        return metrics
    atomic_write_json(workdir / rundir.eval_file(args.split), metrics)  # first: the hours of work are kept
    merge_if_finished(workdir, args.split, metrics, log)
    if not args.no_pictures:
        from vaecore.runner.report import read_jsonl
        from vaecore.scoring import plots

        if images is not None:
            write_pictures(model, images, labels, workdir)
        if not (workdir / rundir.TRAINING_CURVES).exists():  # training draws it; runs from before it did not
            plots.save_training_curves(read_jsonl(workdir / rundir.METRICS), workdir / rundir.TRAINING_CURVES)
    write_report(workdir, metrics)
    log(evaluation.format_table(metrics))
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_args(args)
        if args.compare is not None:
            from vaecore.runner.report import ReportError, compare_runs

            try:
                md, csv_path = compare_runs([Path(r) for r in args.compare], Path(args.out), args.split)
            except ReportError as e:
                raise UsageError(str(e)) from None
            print(md.read_text(), end="")
            print(f"wrote {md} and {csv_path}")
        else:
            evaluate_run(args)
    except (UsageError, ConfigError) as e:  # RunFileError: a damaged or unreadable file, named
        print(f"evaluate.py: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # checked before the evaluation; a disk that fills up meanwhile
        print(f"evaluate.py: error: cannot write {e.filename or 'a file'} ({os_reason(e)}); the figures "
              f"written before it are kept", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

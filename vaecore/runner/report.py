"""A run's ``report.md`` and the comparison of several runs (markdown and CSV).

Both read only the run folder's files (``config.json``, ``results.json``, ``eval_<split>.json``,
``metrics.jsonl`` and the pictures), so they work for either backend.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

from vaecore.files import atomic_write, os_reason
from vaecore.runs import rundir
from vaecore.runs.rundir import RunFileError, check_writable_folder, read_json, read_text
from vaecore.scoring.evaluation import metric_rows
from vaecore.task import tasks
from vaecore.task.task_reports import g

PICTURES = (
    ("samples.png", "Samples from the prior"),
    ("reconstructions.png", "Test images (odd rows) over their reconstructions from the posterior mean"),
    ("interpolations.png", ("Interpolations: decoded linear paths between the posterior means of two test images "
                           "(the images themselves at both ends)")),
    ("latent_space.png", "Posterior means of the evaluated split, coloured by label"),
    ("training_curves.png", "Training curves from metrics.jsonl"),
)
TEXT_SAMPLES = ("samples.txt", "interpolations.txt")
COMPARE_COLUMNS = ("run", "backend", "task", "model", "objective", "remedy", "setup", "epochs", "latent_dim", "step", "split",
                   "examples", "k",
                   "published", "nll", "neg_elbo", "recon", "kl", "mi", "mi_batch_size", "mi_split", "au", "token_acc", "ppl",
                   "ppl_elbo", "seconds", "train_hours")


def published_nll(config: dict) -> float | None:
    """The published test NLL of the model and protocol a run's ``config.json`` describes (nats per
    example), or None: the task's ``published_nll`` (``vaecore.task.task_reports.burda_nll`` for MNIST)."""
    spec = tasks.REGISTRY.get(config.get("task"))  # no task recorded: nothing to compare with
    return None if spec is None else spec.published_nll(config)


class ReportError(ValueError):
    """A run folder lacks what a report or comparison needs; the message says what to run."""


def read_jsonl(path: Path) -> list[dict]:
    """The JSON objects of a ``metrics.jsonl`` (blank and unreadable lines skipped); [] if absent."""
    rows = []
    if Path(path).exists():
        for line in read_text(path, "metrics log").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "step" in row:
                rows.append(row)
    return rows


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub markdown table; numbers right-aligned."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        return "" if v is None else str(v).replace("|", "\\|")  # a bare | would split the cell

    numeric = [all(isinstance(r[i], (int, float)) or r[i] is None for r in rows) for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def setup_summary(config: dict) -> str:
    """What tells runs of one objective apart, in a few words: the MMD's alpha, lambda and kernel, the
    IWAE's k, a KL weight other than 1, then the task's own (``TaskSpec.setup``: for text the KL
    schedule, dropout, decoder options and learning-rate decay; for MNIST what differs from the image
    defaults). E.g. "logistic KL (k 0.0025, x0 2500)", "alpha 1, lambda 1, imq; constant KL"."""
    loss, parts = config.get("loss", {}), []
    if loss.get("objective") == "mmd":
        parts.append(f"alpha {g(loss.get('alpha'))}, lambda {g(loss.get('lam'))}, {loss.get('kernel')}")
    if loss.get("objective") == "iwae":
        parts.append(f"k {loss.get('iw_samples')}")
    if loss.get("kl_weight", 1.0) != 1.0:
        parts.append(f"KL weight {g(loss.get('kl_weight'))}")
    spec = tasks.of_config(config)
    if spec is not None:
        parts += spec.setup(config)
    return "; ".join(parts) or "-"


def _sections(config: dict) -> tuple[dict, dict]:
    """The model section and the task's training section of a config dict ({} where absent)."""
    spec = tasks.of_config(config)
    if spec is None:
        return config.get("model") or {}, {}
    return config.get(spec.model_section) or {}, (config.get(spec.train_section) if spec.train_section else None) or {}


def remedy_summary(config: dict) -> str:
    """The posterior-collapse remedy of a run, in a few words: "LM (no latent)", "delta-VAE rate 0.1",
    "BN-VAE gamma 0.7", "aggressive", "pretrained AE (2 epochs)", combined with "+"; "-" for none."""
    model, train = _sections(config)
    parts = []
    if model.get("use_latent") is False:
        parts.append("LM (no latent)")
    if model.get("delta_rate"):
        parts.append(f"delta-VAE rate {g(model['delta_rate'])}")
    if model.get("bn_gamma"):
        parts.append(f"BN-VAE gamma {g(model['bn_gamma'])}")
    if train.get("aggressive"):
        parts.append("aggressive")
    if train.get("pretrain_epochs"):
        parts.append(f"pretrained AE ({g(train['pretrain_epochs'])} epochs)")
    return " + ".join(parts) or "-"


def config_summary(config: dict) -> list[list[Any]]:
    """The settings a reader of a report looks for first, as (setting, value) rows."""
    loss, train = config.get("loss", {}), config.get("train", {})
    spec, model = tasks.of_config(config), _sections(config)[0]
    rows = [["backend", config.get("backend")], ["task", config.get("task")], ["data", config.get("data")],
            ["model", spec.describe_model(model) if spec else None], ["latent_dim", model.get("latent_dim")]]
    rows += [["objective", loss.get("objective")], ["setup", setup_summary(config)], ["kl_weight", loss.get("kl_weight")],
             ["epochs", train.get("epochs")],
             ["batch_size", train.get("batch_size")], ["lr", train.get("lr")], ["seed", train.get("seed")],
             ["binarization", train.get("binarization")], ["dtype", train.get("dtype")]]
    return [[name, None if value is None else str(value)] for name, value in rows]


def write_report(workdir: Path, metrics: dict[str, Any]) -> Path:
    """Write ``workdir/report.md``: configuration, the evaluation ``metrics`` (as ``evaluate_split``
    returns them, plus ``split`` and ``units``), the training-time test figures, the pictures and
    text samples that exist in the folder. Returns the path."""
    workdir = Path(workdir)
    config = read_json(workdir / rundir.CONFIG, "run configuration")
    results_path = workdir / rundir.RESULTS
    results = read_json(results_path, "results file") if results_path.exists() else {}
    if results.get("step", metrics.get("step")) != metrics.get("step"):
        results = {}  # training's figures of another step (the run went on since) do not belong here
    parts = [f"# Run report: {workdir.name}", "", "## Configuration", "",
             markdown_table(["setting", "value"], config_summary(config)), "",
             f"## Evaluation ({metrics['split']} split)", "",
             (f"{metrics['examples']} examples{' (--limit)' if metrics.get('limited') else ''}, checkpoint at step "
             f"{metrics.get('step')}, K = {metrics['k']} importance samples per example (seed {metrics['seed']}), "
             f"{metrics.get('units', 'nats')}; {metrics['seconds']:.0f} s on {metrics.get('backend')}. "
             f"The mutual information is estimated within batches of {metrics['mi_batch_size']} "
             f"(it is bounded by log {metrics['mi_batch_size']} = "
             f"{math.log(metrics['mi_batch_size']):.2f} nats, up to sampling noise)."), "",
             markdown_table(["metric", "value"], [list(r) for r in metric_rows(metrics)]), ""]
    training = [[k, results[k]] for k in ("neg_elbo", "recon", "kl", "mmd", "elbo", "ppl_bound")
                if isinstance(results.get(k), (int, float))]
    if training:
        parts += ["Figures written at the end of training (one posterior sample per example):", "",
                  markdown_table(["metric", "value"], training), ""]
    pictures = [(name, caption) for name, caption in PICTURES if (workdir / name).exists()]
    if pictures:
        parts += ["## Pictures", ""]
        for name, caption in pictures:
            parts += [f"{caption}:", "", f"![{name}]({name})", ""]
    for name in TEXT_SAMPLES:
        if (workdir / name).exists():
            parts += [f"## {name}", "", "```", (workdir / name).read_text().rstrip(), "```", ""]
    path = workdir / rundir.REPORT
    atomic_write(path, "\n".join(parts))
    return path


def run_row(workdir: Path, split: str) -> dict[str, Any]:
    """One comparison row: the run's settings and its ``eval_<split>`` metrics; ``workdir`` may also
    be an ``eval_<split>_step<N>.json`` of a run folder (``evaluate.py --step``), a row named
    ``<run>@<N>``."""
    workdir, eval_path, name = Path(workdir), None, Path(workdir).name
    picked = rundir.EVAL_STEP_RE.match(workdir.name)
    if picked and workdir.is_file():
        if picked[1] != split:
            raise ReportError(f"{workdir}: figures of the {picked[1]} split; this table is of the {split} split")
        eval_path, workdir = workdir, workdir.parent
        name = f"{workdir.resolve().name}@{picked[2]}"
    config_path = workdir / rundir.CONFIG
    if not config_path.exists():
        raise ReportError(f"{workdir}: no config.json (not a run folder)")
    config = read_json(config_path, "run configuration")
    if eval_path is None:
        eval_path = workdir / rundir.eval_file(split)
        if not eval_path.exists():
            raise ReportError(f"{workdir}: no eval_{split}.json; run python evaluate.py --workdir {workdir} "
                              f"--split {split} first")
    metrics = read_json(eval_path, "evaluation file")
    spec, model_section = tasks.of_config(config), _sections(config)[0]
    model, latent = spec.model_name(model_section) if spec else None, model_section.get("latent_dim")
    row = {"run": name, "backend": config.get("backend"), "task": config.get("task"), "model": model,
           "objective": config.get("loss", {}).get("objective"), "remedy": remedy_summary(config),
           "setup": setup_summary(config),
           "epochs": config.get("train", {}).get("epochs"), "latent_dim": latent,
           "published": published_nll(config)}
    row.update({c: metrics.get(c) for c in COMPARE_COLUMNS if c not in row})
    results_path = workdir / rundir.RESULTS
    if results_path.exists() and "@" not in name:  # time in training steps, all sessions (older runs: the last
        results = read_json(results_path, "results file")  # session's); a checkpoint before the end: not known
        seconds = results.get("train_seconds", results.get("train_seconds_this_session"))
        row["train_hours"] = None if seconds is None else round(seconds / 3600, 2)
    return row


def _csv_value(text: str) -> Any:
    """A cell of a comparison.csv back to what ``run_row`` made it: None, int, float or text."""
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def table_rows(path: Path, split: str) -> list[dict[str, Any]]:
    """The rows of an earlier ``comparison.csv`` (of the same ``split``), as ``run_row`` dicts; a
    file that is not such a table (not UTF-8, not CSV, a row longer or shorter than the header, a
    row without a run name) is a ``ReportError`` naming the file and the line."""
    try:
        table = list(csv.reader(io.StringIO(read_text(path, "comparison table"), newline="")))
    except csv.Error as e:
        raise ReportError(f"{path}: not a comparison.csv ({e}); give the comparison.csv evaluate.py wrote") from None
    if not table or "run" not in table[0]:
        raise ReportError(f"{path}: not a comparison.csv (no header with a 'run' column)")
    header, rows = table[0], []
    for line, cells in enumerate(table[1:], start=2):
        if not cells:
            continue
        if len(cells) != len(header) or not cells[header.index("run")]:
            raise ReportError(f"{path}: line {line} has {len(cells)} cells for {len(header)} columns (or no run "
                              f"name); not a comparison.csv as evaluate.py writes it")
        rows.append({k: _csv_value(v) for k, v in zip(header, cells)})
    if not rows:
        raise ReportError(f"{path}: not a comparison.csv (no rows)")
    other = {row.get("split") for row in rows} - {split, None}
    if other:
        raise ReportError(f"{path}: rows of the {'/'.join(sorted(other))} split; this table is of the {split} split")
    return rows


def compare_runs(runs: list[Path], out: Path, split: str = "test") -> tuple[Path, Path]:
    """Write ``out/comparison.md`` and ``out/comparison.csv``: one row per run, the same metrics
    (columns without any value are left out). A run is named by its folder's name, or by its path
    where two folders share a name. A ``.csv`` file among ``runs`` (an earlier comparison.csv, the
    output itself included) contributes its rows, so a table can grow without its older run folders;
    a run folder given by name replaces a CSV row of the same name; an ``eval_<split>_step<N>.json``
    (``evaluate.py --step``) is the row ``<run>@<N>``. Returns both paths."""
    out = Path(out)
    if out.exists():  # a file, or a folder it cannot write to: said before anything is read
        try:
            check_writable_folder(out, "--out")
        except RunFileError as e:
            raise ReportError(str(e)) from None
    folders = [r for r in runs if not (Path(r).suffix == ".csv" and Path(r).is_file())]
    rows = [run_row(r, split) for r in folders]
    names = [row["run"] for row in rows]
    if len(set(names)) < len(names):  # folders of the same name: tell them apart by their paths
        for row, run in zip(rows, folders):
            row["run"] = str(run)
    kept = []
    for table in (r for r in runs if r not in folders):
        kept += [row for row in table_rows(Path(table), split) if row["run"] not in {r["run"] for r in rows + kept}]
    rows = kept + rows
    columns = [c for c in COMPARE_COLUMNS if any(row.get(c) is not None for row in rows)]
    try:
        return write_comparison(out, split, columns, rows)
    except OSError as e:
        raise ReportError(f"--out {out}: cannot write {e.filename or out} ({os_reason(e)})") from None


def write_comparison(out: Path, split: str, columns: list[str], rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """``out/comparison.md`` and ``out/comparison.csv`` of ``rows`` (``out`` made if needed)."""
    out.mkdir(parents=True, exist_ok=True)
    md = out / "comparison.md"
    atomic_write(md, f"# Comparison ({split} split, nats per example)\n\n"
                  + markdown_table(columns, [[row.get(c) for c in columns] for row in rows]) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows([["" if row.get(c) is None else row.get(c) for c in columns] for row in rows])
    path_csv = out / "comparison.csv"
    atomic_write(path_csv, buffer.getvalue())
    return md, path_csv

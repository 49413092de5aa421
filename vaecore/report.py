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

from vaecore import rundir
from vaecore.evaluation import metric_rows
from vaecore.files import atomic_write, os_reason
from vaecore.rundir import RunFileError, check_writable_folder, read_json, read_text

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


# Burda et al. (2015), Table 1, one stochastic layer: test NLL (K = 5000, dynamically binarised MNIST)
# after their protocol (config.PRESETS["burda"]), by the number of samples of the training bound:
# the VAE (k = 1, the ELBO), IWAE k = 5 and IWAE k = 50.
BURDA_PUBLISHED = {1: 86.76, 5: 85.54, 50: 84.78}


def published_nll(config: dict) -> float | None:
    """The published test NLL of the model and protocol a run's ``config.json`` describes (nats per
    image), or None. Only Burda et al.'s protocol is known: every setting of ``--preset burda``
    (whether given by the preset or flag by flag), Adam's betas 0.9 and 0.999, the full 3,280 epochs,
    dynamic binarisation, no remedy, KL weight 1, and the ELBO or the IWAE bound with k in ``BURDA_PUBLISHED``."""
    from vaecore.config import PRESETS

    model, loss, train = config.get("model") or {}, config.get("loss") or {}, config.get("train") or {}
    if config.get("task") != "mnist":
        return None
    preset = PRESETS["burda"]
    settings = {"model": model.get("kind"), "hidden_sizes": tuple(model.get("hidden_sizes") or ()),
                "latent_dim": model.get("latent_dim"), "activation": model.get("activation"),
                "batch_size": train.get("batch_size"), "lr": train.get("lr"), "adam_eps": train.get("eps"),
                "lr_schedule": train.get("lr_schedule"), "epochs": train.get("epochs")}
    if (settings != preset or train.get("binarization") != "dynamic" or model.get("delta_rate")
            or model.get("bn_gamma") or train.get("max_steps") is not None or loss.get("kl_weight", 1.0) != 1.0
            or (train.get("b1"), train.get("b2")) != (0.9, 0.999)):
        return None
    k = {"elbo": 1, "iwae": loss.get("iw_samples")}.get(loss.get("objective"))
    return BURDA_PUBLISHED.get(k)


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


def _g(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def setup_summary(config: dict) -> str:
    """What tells runs of one objective apart, in a few words: the MMD's alpha, lambda and kernel; for
    text the KL schedule (with its parameters), free bits, embedding, word and output dropout, tied embeddings,
    how z reaches the decoder (every step, a tanh initial state), the learning-rate decay; for MNIST
    what differs from the image defaults (``_image_setup``); a KL weight other than 1.
    E.g. "logistic KL (k 0.0025, x0 2500)", "alpha 1, lambda 1, imq; constant KL"."""
    loss, parts = config.get("loss", {}), []
    if loss.get("objective") == "mmd":
        parts.append(f"alpha {_g(loss.get('alpha'))}, lambda {_g(loss.get('lam'))}, {loss.get('kernel')}")
    if loss.get("objective") == "iwae":
        parts.append(f"k {loss.get('iw_samples')}")
    if loss.get("kl_weight", 1.0) != 1.0:
        parts.append(f"KL weight {_g(loss.get('kl_weight'))}")
    if config.get("task", "mnist") == "mnist":
        parts += _image_setup(config.get("model") or {}, config.get("train") or {})
    text_train = config.get("text_train") if config.get("task") == "text" else None
    no_code = (config.get("text") or {}).get("use_latent") is False  # the LM baseline: no KL to shape
    if text_train and not no_code:
        schedule = text_train.get("kl_schedule")
        detail = {"linear": f" ({_g(text_train.get('kl_warmup_steps'))} steps)",
                  "logistic": f" (k {_g(text_train.get('kl_logistic_k'))}, x0 {_g(text_train.get('kl_logistic_x0'))})",
                  "cyclical": (f" ({_g(text_train.get('kl_cycles'))} cycles, ratio "
                               f"{_g(text_train.get('kl_cycle_ratio'))})")}.get(schedule, "")
        parts.append(f"{schedule} KL{detail}")
        if text_train.get("free_bits"):
            parts.append(f"free bits {_g(text_train['free_bits'])}")
    if text_train:
        text = config.get("text") or {}
        for name in ("embedding_dropout", "word_dropout", "output_dropout"):
            if text.get(name):
                parts.append(f"{name.replace('_', ' ')} {_g(text[name])}")
        if text.get("tie_embeddings"):
            parts.append("tied embeddings")
        if text.get("z_every_step"):
            parts.append("z at every decoder step")
        if text.get("decoder_init_tanh"):
            parts.append("tanh initial state")
        if text_train.get("lr_decay", 1.0) != 1.0:
            parts.append(f"lr x{_g(text_train['lr_decay'])} per epoch after {_g(text_train.get('lr_decay_start'))}")
    return "; ".join(parts) or "-"


def _image_setup(model: dict, train: dict) -> list[str]:
    """An MNIST run's choices that differ from the image defaults: MLP layers and activation, batch
    size, Adam's epsilon, Burda et al.'s learning-rate stages. E.g. ["MLP 200-200 tanh", "batch 20",
    "Adam eps 0.0001", "Burda lr stages"]."""
    from vaecore.config import TASK_DEFAULTS, ImageModelConfig, TrainConfig

    d_model, d_train, parts = ImageModelConfig(), TrainConfig(), []
    hidden, activation = tuple(model.get("hidden_sizes") or d_model.hidden_sizes), model.get("activation", d_model.activation)
    if model.get("kind", "mlp") == "mlp" and (hidden != tuple(d_model.hidden_sizes) or activation != d_model.activation):
        parts.append(f"MLP {'-'.join(map(str, hidden))} {activation}")
    if train.get("batch_size", TASK_DEFAULTS["mnist"]["batch_size"]) != TASK_DEFAULTS["mnist"]["batch_size"]:
        parts.append(f"batch {train['batch_size']}")
    if train.get("eps", d_train.eps) != d_train.eps:
        parts.append(f"Adam eps {_g(train['eps'])}")
    if train.get("lr_schedule", "constant") == "burda":
        parts.append("Burda lr stages")
    return parts


def remedy_summary(config: dict) -> str:
    """The posterior-collapse remedy of a run, in a few words: "LM (no latent)", "delta-VAE rate 0.1",
    "BN-VAE gamma 0.7", "aggressive", "pretrained AE (2 epochs)", combined with "+"; "-" for none."""
    model = (config.get("text") if config.get("task") == "text" else config.get("model")) or {}
    train = (config.get("text_train") if config.get("task") == "text" else None) or {}
    parts = []
    if model.get("use_latent") is False:
        parts.append("LM (no latent)")
    if model.get("delta_rate"):
        parts.append(f"delta-VAE rate {_g(model['delta_rate'])}")
    if model.get("bn_gamma"):
        parts.append(f"BN-VAE gamma {_g(model['bn_gamma'])}")
    if train.get("aggressive"):
        parts.append("aggressive")
    if train.get("pretrain_epochs"):
        parts.append(f"pretrained AE ({_g(train['pretrain_epochs'])} epochs)")
    return " + ".join(parts) or "-"


def config_summary(config: dict) -> list[list[Any]]:
    """The settings a reader of a report looks for first, as (setting, value) rows."""
    model, loss, train = config.get("model") or {}, config.get("loss", {}), config.get("train", {})
    rows = [["backend", config.get("backend")], ["task", config.get("task")], ["data", config.get("data")]]
    if config.get("task") == "text" and config.get("text"):
        text = config["text"]
        rows += [["model", (f"{text.get('rnn')} {text.get('num_layers')}x{text.get('hidden_dim')}, "
                           f"embed {text.get('embed_dim')}, embedding dropout {text.get('embedding_dropout')}")],
                 ["latent_dim", text.get("latent_dim")]]
    else:
        sizes = model.get("hidden_sizes") if model.get("kind") == "mlp" else model.get("conv_channels")
        rows += [["model", f"{model.get('kind')} {sizes}"], ["latent_dim", model.get("latent_dim")]]
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
    """One comparison row: the run's settings and its ``eval_<split>`` metrics."""
    workdir = Path(workdir)
    config_path = workdir / rundir.CONFIG
    if not config_path.exists():
        raise ReportError(f"{workdir}: no config.json (not a run folder)")
    config = read_json(config_path, "run configuration")
    eval_path = workdir / rundir.eval_file(split)
    if not eval_path.exists():
        raise ReportError(f"{workdir}: no eval_{split}.json; run python evaluate.py --workdir {workdir} "
                          f"--split {split} first")
    metrics = read_json(eval_path, "evaluation file")
    if config.get("task") == "text" and config.get("text"):
        model, latent = f"{config['text'].get('rnn')}", config["text"].get("latent_dim")
    else:
        model, latent = (config.get("model") or {}).get("kind"), (config.get("model") or {}).get("latent_dim")
    row = {"run": workdir.name, "backend": config.get("backend"), "task": config.get("task"), "model": model,
           "objective": config.get("loss", {}).get("objective"), "remedy": remedy_summary(config),
           "setup": setup_summary(config),
           "epochs": config.get("train", {}).get("epochs"), "latent_dim": latent,
           "published": published_nll(config)}
    row.update({c: metrics.get(c) for c in COMPARE_COLUMNS if c not in row})
    results_path = workdir / rundir.RESULTS
    if results_path.exists():  # time in training steps, all sessions (older runs: the last session's)
        results = read_json(results_path, "results file")
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
    a run folder given by name replaces a CSV row of the same name. Returns both paths."""
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

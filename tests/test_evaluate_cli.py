"""evaluate.py as a user meets it: a finished run folder gets eval_<split>.json, results.json merged
(nothing lost), pictures and report.md; --compare writes one table; bad input is one line, exit 2.
Tiny models, a few training steps, few importance samples."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_mnist_data import make_mnist_dir
from tests.test_text_cli import write_corpus

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: torch's thread pool only costs time here
SMALL = ["--hidden-sizes", "32", "--latent-dim", "4", "--batch-size", "100", "--max-steps", "3", "--log-every", "1"]
EVAL = ["--k", "16", "--limit", "40", "--batch-size", "16", "--mi-batch-size", "20"]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=600, env=ENV)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def mnist_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist")
    make_mnist_dir(folder, n_train=5200, n_test=60)
    return folder


@pytest.fixture(scope="module", params=["torch", "jax"])
def evaluated(request, mnist_dir, tmp_path_factory):
    """A tiny finished MNIST run of each backend, evaluated: (run folder, files before, evaluate output)."""
    workdir = tmp_path_factory.mktemp(request.param) / "run"
    out = run("train.py", "--backend", request.param, *SMALL, "--data", str(mnist_dir), "--workdir", str(workdir))
    assert out.returncode == 0, out.stderr
    before = snapshot(workdir)
    out = run("evaluate.py", "--workdir", str(workdir), *EVAL)
    assert out.returncode == 0, out.stderr
    return workdir, before, out


def test_evaluate_writes_metrics_and_keeps_results(evaluated):
    workdir, before, out = evaluated
    metrics = json.loads((workdir / "eval_test.json").read_text())
    assert metrics["examples"] == 40 and metrics["k"] == 16 and metrics["limited"] is True
    assert metrics["mi_batch_size"] == 20 and metrics["latent_dim"] == 4
    # active units recomputed in plain numpy from the checkpoint's posterior means of the same 40 images
    import importlib

    import numpy as np

    from vaecore.data.batching import fixed_binarization
    from vaecore.data.mnist import load_mnist
    from vaecore.settings.config import RunConfig

    cfg = RunConfig.load(workdir / "config.json")
    model, _ = importlib.import_module(f"{cfg.backend}vae.evaluation").load_model(cfg, workdir)
    means = model.posterior_mean(fixed_binarization(load_mnist(cfg.data).test)[:40]).astype(np.float64)
    assert metrics["au"] == int(np.sum(means.var(axis=0, ddof=1) > 0.01))
    assert metrics["au_variances"] == pytest.approx(list(means.var(axis=0, ddof=1)), rel=1e-4)
    assert metrics["neg_elbo"] == pytest.approx(metrics["recon"] + metrics["kl"])
    # the importance-sampled bound is tighter than the ELBO (Jensen, per example and so on average)
    assert metrics["nll"] <= metrics["neg_elbo"] + 1e-6
    results = json.loads((workdir / "results.json").read_text())
    old = json.loads(before["results.json"])
    assert {k: results[k] for k in old} == old  # every key of training's results.json kept as it was
    assert results["eval_test"] == metrics
    # only added files: everything that was there is unchanged, except results.json (merged)
    after = snapshot(workdir)
    assert all(after[name] == data for name, data in before.items() if name != "results.json")
    added = set(after) - set(before)
    assert {"eval_test.json", "report.md", "interpolations.png", "latent_space.png"} <= added
    assert "training_curves.png" in before  # drawn by training, with the validation MI and AU
    assert not [name for name in added if name.endswith(".tmp")]
    assert f"{metrics['nll']:.3f}" in out.stdout and "active units" in out.stdout


def test_report_embeds_the_pictures_and_the_metrics(evaluated):
    workdir, _, _ = evaluated
    report = (workdir / "report.md").read_text()
    metrics = json.loads((workdir / "eval_test.json").read_text())
    for name in ("samples.png", "reconstructions.png", "interpolations.png", "latent_space.png", "training_curves.png"):
        assert f"]({name})" in report
    assert f"{metrics['nll']:.3f}" in report and "K = 16" in report and "batches of 20" in report


def test_evaluate_imports_only_the_runs_backend(evaluated):
    workdir, _, _ = evaluated
    backend = json.loads((workdir / "config.json").read_text())["backend"]
    other = {"torch": "jax", "jax": "torch"}[backend]
    code = ("import sys, evaluate; rc = evaluate.main(['--workdir', sys.argv[1], '--k', '2', '--limit', '4', "
            "'--no-pictures', '--split', 'valid']); print(rc, sys.argv[2] in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(workdir), other], cwd=ROOT, capture_output=True, text=True, check=False,
                         timeout=600, env=ENV)
    assert out.stdout.split()[-2:] == ["0", "False"], out.stderr
    assert json.loads((workdir / "eval_valid.json").read_text())["examples"] == 4


def test_compare_writes_one_table(evaluated, tmp_path):
    workdir, _, _ = evaluated
    out = run("evaluate.py", "--compare", str(workdir), str(workdir), "--out", str(tmp_path / "cmp"))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "cmp" / "comparison.csv").open()))
    metrics = json.loads((workdir / "eval_test.json").read_text())
    assert len(rows) == 2 and float(rows[0]["nll"]) == pytest.approx(metrics["nll"])
    assert int(rows[0]["au"]) == metrics["au"] and rows[0]["k"] == "16"
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "| run |" in md and md.count(f"| {workdir} |") == 2  # the same folder name twice: paths


def test_training_logs_the_mi_and_au_that_evaluate_computes(evaluated, tmp_path):
    """Training's end-of-run test metrics carry MI and AU from its own evaluation pass; evaluate.py's
    importance-sampling driver, on the same weights, split, seed and MI batch, must agree."""
    workdir, _, _ = evaluated
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    out = run("evaluate.py", "--workdir", str(copy), "--k", "1", "--no-pictures")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((copy / "eval_test.json").read_text())
    results = json.loads((workdir / "results.json").read_text())
    assert metrics["mi_batch_size"] == 60 and results["mi_batch_size"] == 60  # the whole 60-image test split
    assert results["mi"] == pytest.approx(metrics["mi"], rel=1e-4, abs=1e-5) and results["au"] == metrics["au"]
    assert results["kl"] == pytest.approx(metrics["kl"], rel=1e-4)  # the same posteriors
    test_row = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()][-1]
    assert test_row["split"] == "test" and test_row["mi"] == results["mi"] and test_row["au"] == results["au"]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_text_run_reports_perplexity(backend, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    workdir = tmp_path / "text-run"
    out = run("train.py", "--backend", backend, "--task", "text", "--embed-dim", "16", "--hidden-dim", "16",
              "--latent-dim", "4", "--batch-size", "16", "--data", str(corpus), "--max-steps", "5",
              "--workdir", str(workdir))
    assert out.returncode == 0, out.stderr
    out = run("evaluate.py", "--workdir", str(workdir), "--k", "8", "--batch-size", "16")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((workdir / "eval_test.json").read_text())
    assert metrics["examples"] == 40 and metrics["units"] == "nats per sentence"
    assert metrics["ppl"] == pytest.approx(2.718281828 ** (metrics["nll"] * 40 / metrics["tokens"]))
    assert metrics["ppl"] <= metrics["ppl_elbo"]
    assert "perplexity" in out.stdout and (workdir / "report.md").exists()
    # training's own test evaluation: the same MI (aggregate posterior over all 40 sentences) and AU
    results = json.loads((workdir / "results.json").read_text())
    assert results["mi_batch_size"] == metrics["mi_batch_size"] == 40
    assert results["mi"] == pytest.approx(metrics["mi"], rel=1e-4, abs=1e-5) and results["au"] == metrics["au"]


def test_language_model_is_evaluated_with_one_sample(tmp_path):
    """The LM baseline has no code: every importance sample gives the same exact NLL, so a K > 1 is
    replaced by 1 (said once), and the NLL equals the -ELBO (no KL)."""
    corpus = write_corpus(tmp_path / "corpus")
    workdir = tmp_path / "lm-run"
    out = run("train.py", "--backend", "torch", "--task", "text", "--no-latent", "--embed-dim", "16", "--hidden-dim",
              "16", "--batch-size", "16", "--data", str(corpus), "--max-steps", "5", "--workdir", str(workdir))
    assert out.returncode == 0, out.stderr
    out = run("evaluate.py", "--workdir", str(workdir), "--k", "50", "--batch-size", "16", "--no-pictures")
    assert out.returncode == 0, out.stderr
    assert "exact with K = 1, not 50" in out.stdout
    metrics = json.loads((workdir / "eval_test.json").read_text())
    assert metrics["k"] == 1 and metrics["kl"] == 0.0
    assert metrics["nll"] == pytest.approx(metrics["neg_elbo"], rel=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    ([], "give either --workdir RUN or --compare"),
    (["--workdir", "/nonexistent/run"], "no such directory"),
    (["--workdir", "{tmp}"], "no config.json"),
    (["--workdir", "{tmp}", "--k", "0"], "--k must be >= 1"),
    (["--compare", "{tmp}"], "--compare needs --out DIR"),
    (["--compare", "{tmp}", "--out", "{tmp}/cmp"], "not a run folder"),
    (["--workdir", "{tmp}", "--split", "train"], "invalid choice: 'train'"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path):
    out = run("evaluate.py", *[a.format(tmp=tmp_path) for a in args])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


def test_run_without_checkpoint_or_eval_is_exit_2(tmp_path, mnist_dir):
    (tmp_path / "config.json").write_text(json.dumps({"backend": "torch", "task": "mnist", "data": str(mnist_dir),
                                                      "model": {"latent_dim": 4, "hidden_sizes": [8]},
                                                      "loss": {}, "train": {}}))
    out = run("evaluate.py", "--workdir", str(tmp_path), "--k", "2")
    assert out.returncode == 2 and "no readable checkpoint" in out.stderr and "Traceback" not in out.stderr
    out = run("evaluate.py", "--compare", str(tmp_path), "--out", str(tmp_path / "cmp"))
    assert out.returncode == 2 and "no eval_test.json" in out.stderr


def test_training_curves_draw_every_term_without_warnings(tmp_path):
    """A term that is zero on every split (train-time MMD of an ELBO run) gets a panel, not a
    matplotlib warning about an empty legend; a term absent from every row gets no panel."""
    import warnings

    from vaecore.scoring.plots import save_training_curves

    rows = [{"step": s, "split": split, "neg_elbo": 100.0 - s, "kl": 0.5 * s, "mmd": 0.0}
            for s in (1, 2, 3) for split in ("train", "valid")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        drawn = save_training_curves(rows, tmp_path / "curves.png")
    assert drawn == ["neg_elbo", "kl", "mmd"]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_setup_summary_tells_the_runs_of_a_comparison_apart():
    from vaecore.runner.report import setup_summary

    text = {"task": "text", "loss": {"objective": "elbo", "kl_weight": 1.0},
            "text": {"word_dropout": 0.0},
            "text_train": {"kl_schedule": "logistic", "kl_logistic_k": 0.0025, "kl_logistic_x0": 2500.0,
                           "free_bits": 0.0}}
    assert setup_summary(text) == "logistic KL (k 0.0025, x0 2500)"
    text["loss"] = {"objective": "mmd", "alpha": 1.0, "lam": 10.0, "kernel": "imq", "kl_weight": 1.0}
    text["text"]["word_dropout"] = 0.25
    text["text_train"].update(kl_schedule="cyclical", kl_cycles=4, kl_cycle_ratio=0.5, free_bits=0.1)
    assert setup_summary(text) == ("alpha 1, lambda 10, imq; cyclical KL (4 cycles, ratio 0.5); free bits 0.1; "
                                   "word dropout 0.25")
    text["text"]["output_dropout"] = 0.5
    text["text_train"].update(lr_decay=0.5, lr_decay_start=6)
    assert setup_summary(text).endswith("word dropout 0.25; output dropout 0.5; lr x0.5 per epoch after 6")
    text["text"].update(z_every_step=True, decoder_init_tanh=True)
    assert setup_summary(text).endswith("output dropout 0.5; z at every decoder step; tanh initial state; "
                                        "lr x0.5 per epoch after 6")
    text["text"].update(z_every_step=False, decoder_init_tanh=False)
    assert setup_summary({"task": "mnist", "loss": {"objective": "elbo", "kl_weight": 1.0}}) == "-"
    assert setup_summary({"task": "mnist", "loss": {"objective": "elbo", "kl_weight": 0.5}}) == "KL weight 0.5"
    burda = {"task": "mnist", "loss": {"objective": "iwae", "iw_samples": 5, "kl_weight": 1.0},
             "model": {"kind": "mlp", "hidden_sizes": [200, 200], "activation": "tanh"},
             "train": {"batch_size": 20, "eps": 1e-4, "lr_schedule": "burda"}}
    assert setup_summary(burda) == "k 5; MLP 200-200 tanh; batch 20; Adam eps 0.0001; Burda lr stages"
    default = {"task": "mnist", "loss": {"objective": "elbo"}, "model": {"kind": "mlp", "hidden_sizes": [512, 512],
               "activation": "relu"}, "train": {"batch_size": 128, "eps": 1e-8, "lr_schedule": "constant"}}
    assert setup_summary(default) == "-"
    assert setup_summary({**default, "model": {"kind": "conv", "hidden_sizes": [512, 512]}}) == "-"
    text["text"]["use_latent"] = False  # the language-model baseline: no KL schedule or free bits to show
    assert setup_summary(text) == "alpha 1, lambda 10, imq; word dropout 0.25; output dropout 0.5; lr x0.5 per epoch after 6"
    text["text"]["embedding_dropout"] = 0.4
    assert setup_summary(text) == ("alpha 1, lambda 10, imq; embedding dropout 0.4; word dropout 0.25; output dropout 0.5; "
                                   "lr x0.5 per epoch after 6")
    iwae = {"task": "mnist", "loss": {"objective": "iwae", "iw_samples": 5, "kl_weight": 1.0}}
    assert setup_summary(iwae) == "k 5"
    # a Transformer decoder: its blocks, how z enters and its own dropouts (an RNN's are not shown)
    text["text"].update(use_latent=True, word_dropout=0.0, output_dropout=0.0, attention_dropout=0.2,
                        residual_dropout=0.3, transformer_layers=3, hidden_dim=256, z_injection="memory")
    text["loss"] = {"objective": "elbo", "kl_weight": 1.0}
    text["text_train"].update(kl_schedule="constant", free_bits=0.0)
    assert setup_summary(text) == ("constant KL; embedding dropout 0.4; lr x0.5 per epoch after 6")
    text["text"].update(decoder="transformer", encoder="transformer")
    assert setup_summary(text) == ("constant KL; transformer decoder 3x256, z as memory; transformer encoder; "
                                   "embedding dropout 0.4; attention dropout 0.2; residual dropout 0.3; "
                                   "lr x0.5 per epoch after 6")
    text["text"]["use_latent"] = False
    assert setup_summary(text).startswith("transformer decoder 3x256; transformer encoder; embedding")


def test_a_transformer_row_is_named_and_described_as_one():
    from vaecore.runner.report import config_summary
    from vaecore.task import task_reports

    text = {"rnn": "lstm", "num_layers": 1, "hidden_dim": 256, "embed_dim": 256, "embedding_dropout": 0.2,
            "decoder": "transformer", "encoder": "rnn", "transformer_layers": 3, "transformer_heads": 8,
            "transformer_ff": 1024, "positions": "sinusoidal", "z_injection": "memory"}
    assert task_reports.text_model(text) == ("transformer decoder 3x256, 8 heads, ff 1024, sinusoidal positions, z as "
                                             "memory; lstm 1x256 encoder, embed 256, embedding dropout 0.2")
    assert task_reports.text_model({**text, "decoder": "rnn"}) == "lstm 1x256, embed 256, embedding dropout 0.2"
    assert task_reports.text_model({**text, "decoder": "rnn", "encoder": "transformer"}).startswith(
        "lstm 1x256 decoder; transformer encoder")
    rows = dict(config_summary({"task": "text", "backend": "torch", "text": text, "text_train": {}, "loss": {}}))
    assert rows["model"].startswith("transformer decoder 3x256")


@pytest.mark.parametrize("flag", [["--k", "7"], ["--limit", "5"], ["--seed", "3"], ["--data", "x"], ["--no-pictures"]])
def test_compare_refuses_evaluation_flags(flag, tmp_path):
    """--compare reads the evaluated runs; a flag that would shape an evaluation is refused, not ignored."""
    out = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--compare", "a", "b", "--out",
                          str(tmp_path / "o"), *flag], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and "applies to evaluating a run" in out.stderr, out.stderr
    assert not (tmp_path / "o").exists()


def test_out_without_compare_is_refused(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--workdir", str(tmp_path), "--out",
                          str(tmp_path / "o")], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 2 and "--out applies to --compare" in out.stderr


def test_compare_keeps_the_rows_of_an_earlier_table(evaluated, tmp_path):
    """An earlier comparison.csv among the runs keeps its rows (values and types), a run folder of the
    same name replaces its row, and the output may be that same csv."""
    workdir, _, _ = evaluated
    out_dir = tmp_path / "cmp"
    assert run("evaluate.py", "--compare", str(workdir), "--out", str(out_dir)).returncode == 0
    table = out_dir / "comparison.csv"
    rows = list(csv.DictReader(table.open()))
    rows[0]["run"], rows[0]["nll"] = "lost-run", "123.456"  # a row whose folder is gone
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = run("evaluate.py", "--compare", str(table), str(workdir), "--out", str(out_dir))
    assert out.returncode == 0, out.stderr
    merged = list(csv.DictReader(table.open()))
    metrics = json.loads((workdir / "eval_test.json").read_text())
    assert [r["run"] for r in merged] == ["lost-run", workdir.name]
    assert merged[0]["nll"] == "123.456" and float(merged[1]["nll"]) == pytest.approx(metrics["nll"])
    assert merged[0]["au"] == merged[1]["au"] == str(metrics["au"])
    md = (out_dir / "comparison.md").read_text()
    assert "| lost-run |" in md and "| 123.456 |" in md
    # the folder replaces a csv row of its own name
    out = run("evaluate.py", "--compare", str(table), str(workdir), "--out", str(out_dir))
    assert [r["run"] for r in csv.DictReader(table.open())] == ["lost-run", workdir.name]
    # a csv of another split is refused in one line
    bad = tmp_path / "valid.csv"
    bad.write_text(table.read_text().replace(",test,", ",valid,"))
    out = run("evaluate.py", "--compare", str(bad), str(workdir), "--out", str(out_dir))
    assert out.returncode == 2 and "valid split" in out.stderr and len(out.stderr.strip().splitlines()) == 1

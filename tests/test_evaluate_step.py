"""``evaluate.py --step N|best``: an older kept checkpoint is evaluated as a folder holding only it
would be, ``best`` picks the kept checkpoint of the lowest validation -ELBO (hand-set figures), the
figures go to their own file and nothing else in the run changes, ``--compare`` takes that file as a
row, and a step the run does not keep is one line, exit 2. Tiny text runs in both backends."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from tests.test_evaluate_cli import run, snapshot
from tests.test_text_cli import write_corpus

EVAL = ["--k", "4", "--batch-size", "20", "--no-pictures"]
STEPS = [4, 8, 12]  # 200 sentences in batches of 50: 4 steps an epoch, 3 epochs, each validated and kept


@pytest.fixture(scope="module", params=["torch", "jax"])
def kept(request, tmp_path_factory):
    """A finished text run that keeps a checkpoint at every epoch's end."""
    root = tmp_path_factory.mktemp(f"step-{request.param}")
    corpus = write_corpus(root / "corpus")
    workdir = root / "run"
    out = run("train.py", "--backend", request.param, "--task", "text", "--embed-dim", "16", "--hidden-dim", "16",
              "--latent-dim", "4", "--batch-size", "50", "--epochs", "3", "--checkpoint-every", "4",
              "--keep-checkpoints", "10", "--data", str(corpus), "--workdir", str(workdir))
    assert out.returncode == 0, out.stderr
    from vaecore.runs import rundir

    assert rundir.checkpoint_steps(workdir) == STEPS
    valid = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in valid if r.get("split") == "valid"] == STEPS
    return workdir


def set_valid(workdir: Path, figures: dict[int, float]) -> None:
    """Give the validation rows of ``metrics.jsonl`` hand-chosen -ELBOs."""
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        if r.get("split") == "valid":
            r["neg_elbo"] = figures[r["step"]]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_an_older_step_reads_as_a_folder_of_only_that_checkpoint(kept, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(kept, work)
    before = snapshot(work)
    out = run("evaluate.py", "--workdir", str(work), "--step", "4", *EVAL)
    assert out.returncode == 0, out.stderr
    picked = json.loads((work / "eval_test_step4.json").read_text())
    assert picked["step"] == 4 and picked["chosen_by"] == "--step"
    after = snapshot(work)  # one file added; results.json, report.md, eval_test.json untouched
    assert set(after) - set(before) == {"eval_test_step4.json"} and all(after[n] == b for n, b in before.items())
    # the same figures as the newest-checkpoint evaluation of a folder whose newer checkpoints are gone
    alone = tmp_path / "alone"
    shutil.copytree(kept, alone)
    for step in STEPS[1:]:
        target = alone / "checkpoints" / (f"step_{step:08d}.pt" if (alone / "checkpoints" / f"step_{step:08d}.pt").exists()
                                          else str(step))
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    (alone / "results.json").unlink()
    out = run("evaluate.py", "--workdir", str(alone), *EVAL)
    assert out.returncode == 0, out.stderr
    newest = json.loads((alone / "eval_test.json").read_text())
    assert newest["step"] == 4
    for key in ("nll", "neg_elbo", "kl", "mi", "au", "token_acc"):
        assert picked[key] == newest[key], key
    # and not the figures of the last step
    last = run("evaluate.py", "--workdir", str(work), "--step", "12", *EVAL)
    assert last.returncode == 0, last.stderr
    assert json.loads((work / "eval_test_step12.json").read_text())["nll"] != picked["nll"]


def test_best_is_the_kept_checkpoint_of_the_lowest_validation_elbo(kept, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(kept, work)
    set_valid(work, {4: 50.0, 8: 40.0, 12: 45.0})
    out = run("evaluate.py", "--workdir", str(work), "--step", "best", *EVAL)
    assert out.returncode == 0, out.stderr
    picked = json.loads((work / "eval_test_step8.json").read_text())
    assert picked["step"] == 8 and picked["valid_neg_elbo"] == 40.0 and "best_valid_step" not in picked
    # the best validated step keeps no checkpoint: the best kept one, and the record says so
    set_valid(work, {4: 50.0, 8: 40.0, 12: 45.0})
    rows = (work / "metrics.jsonl").read_text()
    (work / "metrics.jsonl").write_text(rows + json.dumps({"step": 6, "split": "valid", "neg_elbo": 30.0}) + "\n")
    out = run("evaluate.py", "--workdir", str(work), "--step", "best", *EVAL)
    assert out.returncode == 0, out.stderr
    picked = json.loads((work / "eval_test_step8.json").read_text())
    assert picked["best_valid_step"] == 6 and picked["best_valid_neg_elbo"] == 30.0
    assert "(30.000, step 6) has no kept checkpoint" in out.stdout


def test_compare_takes_a_step_file_as_its_own_row(kept, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(kept, work)
    for args in ([], ["--step", "4"]):
        out = run("evaluate.py", "--workdir", str(work), *args, *EVAL)
        assert out.returncode == 0, out.stderr
    out = run("evaluate.py", "--compare", str(work), str(work / "eval_test_step4.json"), "--out", str(tmp_path / "cmp"))
    assert out.returncode == 0, out.stderr
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "cmp" / "comparison.csv").open())}
    assert set(rows) == {"run", "run@4"}
    assert rows["run"]["step"] == "12" and rows["run@4"]["step"] == "4"
    assert float(rows["run@4"]["nll"]) == json.loads((work / "eval_test_step4.json").read_text())["nll"]
    assert rows["run@4"]["train_hours"] == ""  # training time is the whole run's, not the checkpoint's
    out = run("evaluate.py", "--compare", str(work / "eval_test_step4.json"), "--out", str(tmp_path / "c2"),
              "--split", "valid")
    assert out.returncode == 2 and "figures of the test split" in out.stderr


@pytest.mark.parametrize("args, message", [
    (["--step", "5"], "holds no checkpoint of step 5 (kept steps: 4, 8, 12)"),
    (["--step", "0"], "--step takes a checkpoint's step"),
    (["--step", "last"], "--step takes a checkpoint's step"),
])
def test_a_step_the_run_does_not_keep_is_one_line(kept, args, message):
    out = run("evaluate.py", "--workdir", str(kept), *args, *EVAL)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


def test_best_without_validation_rows_is_one_line(kept, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(kept, work)
    rows = [line for line in (work / "metrics.jsonl").read_text().splitlines() if '"valid"' not in line]
    (work / "metrics.jsonl").write_text("\n".join(rows) + "\n")
    out = run("evaluate.py", "--workdir", str(work), "--step", "best", *EVAL)
    assert out.returncode == 2 and "holds no validation -ELBO" in out.stderr
    out = run("evaluate.py", "--compare", str(work), "--out", str(tmp_path / "cmp"), "--step", "4")
    assert out.returncode == 2 and "--step applies to evaluating a run" in out.stderr


def test_a_damaged_asked_checkpoint_is_one_line_and_no_other_stands_in(kept, tmp_path):
    work = tmp_path / "run"
    shutil.copytree(kept, work)
    torch_file = work / "checkpoints" / "step_00000008.pt"
    if torch_file.exists():
        torch_file.write_bytes(b"not a checkpoint")
    else:  # orbax: the step's arrays are gone, its metadata stays
        shutil.rmtree(work / "checkpoints" / "8" / "state")
    out = run("evaluate.py", "--workdir", str(work), "--step", "8", *EVAL)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "checkpoint" in lines[0] and "8" in lines[0], out.stderr
    assert not list(work.glob("eval_test*.json"))


def test_load_takes_a_kept_step_in_either_framework(kept, tmp_path):
    """``twinvae.load(run, step=N)``: the checkpoint of step N, in its own framework and moved to the
    other; the run's end-of-training figures are not attached to an older step."""
    import json as _json

    import numpy as np

    import twinvae

    sentences = ["the cat sat on the mat", "a dog ran"]
    trained = _json.loads((kept / "config.json").read_text())["backend"]
    other = {"torch": "jax", "jax": "torch"}[trained]
    early, last = twinvae.load(kept, step=4), twinvae.load(kept)
    assert (early.step, last.step) == (4, 12)
    assert not np.allclose(early.encode(sentences)[0], last.encode(sentences)[0])
    moved = twinvae.load(kept, backend=other, step=4)
    assert moved.step == 4
    np.testing.assert_allclose(moved.encode(sentences)[0], early.encode(sentences)[0], atol=1e-5)
    folder = early.export(tmp_path / "early")
    assert _json.loads((folder / "config.json").read_text())["backend"] == trained
    np.testing.assert_allclose(twinvae.load(folder).encode(sentences)[0], early.encode(sentences)[0], atol=1e-6)
    assert not (folder / "results.json").exists()  # the run's results are of step 12
    for bad, message in (({"step": 5}, "holds no checkpoint of step 5 (kept steps: 4, 8, 12)"),):
        with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
            twinvae.load(kept, **bad)
    with pytest.raises(ValueError, match="step= applies to a run folder"):
        twinvae.load(folder, step=4)


def test_export_cli_takes_a_step(kept, tmp_path):
    from twinvae import export_cli, portable

    assert export_cli.main([str(kept), str(tmp_path / "e4"), "--step", "4"]) == 0
    assert int(portable.read_weights(tmp_path / "e4")[1]["step"]) == 4  # safetensors metadata is text
    assert export_cli.main([str(kept), str(tmp_path / "e5"), "--step", "5"]) == 2
    assert not (tmp_path / "e5").exists() or not any((tmp_path / "e5").iterdir())

"""A run folder's records tell the truth (issue 33): results.json names the step of the weights it
describes and marks a finished run only; a refused command changes nothing and creates no folder;
a NaN before any checkpoint says there is none."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runs import checkpoint_steps, kill_after_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
TINY = ["--backend", "torch", "--hidden-sizes", "16", "--latent-dim", "2", "--batch-size", "16"]
EVAL = ["--k", "2", "--limit", "20", "--batch-size", "10", "--mi-batch-size", "10"]


def run(script: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / script), *args], capture_output=True, text=True, timeout=600,
                          check=False, env=ENV)


def train_cmd(work: Path, *args: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *TINY, "--workdir", str(work), *args]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def kill_at_checkpoint(cmd: list[str], work: Path, at_least: int) -> None:
    """Start a training run and SIGKILL it once it has a checkpoint at step ``at_least`` or later
    (``tests.runs.kill_after_checkpoint`` for a folder that already holds a results.json)."""
    import signal
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    while not [s for s in checkpoint_steps(work) if s >= at_least] and proc.poll() is None:
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def one_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_resume_with_max_steps_below_the_checkpoint_is_refused(tmp_path):
    """It trained nothing, exited 0 and wrote results.json naming step 4 for the weights of step 6."""
    work = tmp_path / "run"
    first = run("train.py", *TINY, "--max-steps", "6", "--checkpoint-every", "3", "--workdir", str(work))
    assert first.returncode == 0, first.stderr
    before = snapshot(work)
    out = run("train.py", "--resume", "--max-steps", "4", "--workdir", str(work))
    assert out.returncode == 2
    line = one_line(out)
    assert "at step 6" in line and "--max-steps must be at least 6" in line
    assert snapshot(work) == before
    assert json.loads((work / "results.json").read_text())["step"] == 6
    # at the checkpoint's own step it is allowed: nothing to train, the record of step 6 again
    same = run("train.py", "--resume", "--max-steps", "6", "--workdir", str(work))
    assert same.returncode == 0, same.stderr
    assert json.loads((work / "results.json").read_text())["step"] == 6


def test_evaluating_a_killed_run_creates_no_results_json(tmp_path):
    """results.json marks a finished run (scripts/study.py, scripts/carry.py): evaluate.py made one for a run
    killed mid-way. The SIGKILLed run also left its lock behind for the kernel to drop: --resume works."""
    work = tmp_path / "run"
    kill_after_checkpoint(train_cmd(work, "--max-steps", "100000", "--checkpoint-every", "5"), work, 10, 100000,
                          env=ENV)
    out = run("evaluate.py", "--workdir", str(work), *EVAL)
    assert out.returncode == 0, out.stderr
    assert not (work / "results.json").exists()
    step = max(checkpoint_steps(work))
    assert json.loads((work / "eval_test.json").read_text())["step"] == step
    assert "the run is unfinished (no results.json" in out.stdout
    assert (work / "report.md").exists()
    resumed = run("train.py", "--resume", "--max-steps", str(step), "--workdir", str(work))
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint at step {step}" in resumed.stdout
    assert json.loads((work / "results.json").read_text())["step"] == step


def test_evaluating_a_run_resumed_past_its_results_leaves_them(tmp_path):
    """A finished run resumed for more steps and killed: its results.json (step 6) describes weights that
    are no longer the newest; the evaluation of a later checkpoint is not merged into it, nor reported
    beside its training figures."""
    work = tmp_path / "run"
    first = run("train.py", *TINY, "--max-steps", "6", "--checkpoint-every", "3", "--workdir", str(work))
    assert first.returncode == 0, first.stderr
    results = (work / "results.json").read_bytes()
    kill_at_checkpoint(train_cmd(work, "--resume", "--max-steps", "100000", "--checkpoint-every", "5"), work, 15)
    assert (work / "results.json").read_bytes() == results  # the resumed session did not finish
    out = run("evaluate.py", "--workdir", str(work), *EVAL, "--no-pictures")
    assert out.returncode == 0, out.stderr
    assert (work / "results.json").read_bytes() == results
    evaluated = json.loads((work / "eval_test.json").read_text())
    assert evaluated["step"] == max(checkpoint_steps(work)) >= 15
    assert "results.json is of step 6" in out.stdout
    report = (work / "report.md").read_text()
    assert f"checkpoint at step {evaluated['step']}" in report and "Figures written at the end of training" not in report


def test_evaluating_a_finished_run_merges_into_results(tmp_path):
    work = tmp_path / "run"
    assert run("train.py", *TINY, "--max-steps", "6", "--workdir", str(work)).returncode == 0
    old = json.loads((work / "results.json").read_text())
    out = run("evaluate.py", "--workdir", str(work), *EVAL, "--no-pictures")
    assert out.returncode == 0, out.stderr
    results = json.loads((work / "results.json").read_text())
    assert results == {**old, "eval_test": json.loads((work / "eval_test.json").read_text())}
    assert results["eval_test"]["step"] == 6


def test_nan_before_the_first_checkpoint_says_there_is_none(tmp_path):
    """It named "the last good checkpoint (step 0)", which does not exist."""
    work = tmp_path / "run"
    out = run("train.py", *TINY, "--max-steps", "40", "--checkpoint-every", "100", "--lr", "1e30",
              "--workdir", str(work))
    assert out.returncode == 1
    line = out.stderr.strip().splitlines()[-1]
    assert "non-finite loss at step" in line and "No checkpoint was written yet" in line, line
    assert "last good checkpoint" not in line and "without --resume" in line
    assert checkpoint_steps(work) == []
    # what it says is true: --resume refuses, the command again (without --resume) is accepted
    assert "no readable checkpoint" in run("train.py", "--resume", "--workdir", str(work)).stderr


def test_bad_device_creates_no_folder(tmp_path):
    """The engine checked the device after the folder was made: an empty run folder was left behind."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    out = run("train.py", *TINY, "--device", "cuda", "--max-steps", "2", "--workdir", str(tmp_path / "new" / "run"))
    assert out.returncode == 2 and "sees no CUDA GPU" in one_line(out)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_seed_out_of_range_creates_no_folder(backend, tmp_path):
    """A seed the backend's generator cannot take failed after the folder was made (an empty one left)."""
    out = run("train.py", *TINY[2:], "--backend", backend, "--seed", str(2 ** 64), "--max-steps", "2",
              "--workdir", str(tmp_path / "run"))
    assert out.returncode != 0
    assert list(tmp_path.iterdir()) == []


def test_seed_out_of_range_is_one_line():
    out = run("train.py", "--seed", str(2 ** 64), "--max-steps", "2", "--workdir", "/nonexistent/never")
    assert out.returncode == 2 and "seed" in one_line(out)

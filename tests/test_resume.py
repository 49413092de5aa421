"""Kill a run with SIGKILL mid-way, resume it, and get the same results as an uninterrupted run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.runs import checkpoint_steps, kill_after_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--max-steps", "300", "--checkpoint-every", "40", "--log-every", "20", "--hidden-sizes", "256,128",
        "--latent-dim", "8", "--batch-size", "64", "--loss", "mmd", "--seed", "5"]


# BN-VAE adds running averages to what a checkpoint must restore
MODES = {"default": [], "bn-delta": ["--bn-gamma", "0.7", "--delta-rate", "0.1"], "iwae": ["--loss", "iwae", "--iw-samples", "3"]}


def train(backend, work, *extra):
    return [sys.executable, str(ROOT / "train.py"), "--backend", backend, *ARGS, "--workdir", str(work), *extra]


def assert_same_results(straight: Path, resumed: Path) -> None:
    a = json.loads((straight / "results.json").read_text())
    b = json.loads((resumed / "results.json").read_text())
    for key in ("recon", "kl", "mmd", "neg_elbo"):
        assert a[key] == b[key], f"{key}: uninterrupted {a[key]} != resumed {b[key]}"


def split_rows(work: Path, split: str) -> dict[int, dict]:
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row for row in rows if row["split"] == split}


def train_steps(work: Path) -> list[int]:
    rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    return [row["step"] for row in rows if row["split"] == "train"]


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_sigkill_and_resume_gives_the_same_results(backend, mode, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(train(backend, straight, *MODES[mode]), check=True, capture_output=True, timeout=900)

    killed = tmp_path / "killed"
    kill_after_checkpoint(train(backend, killed, *MODES[mode]), killed, 80, 300)

    resumed = subprocess.run(train(backend, killed, *MODES[mode], "--resume"), capture_output=True, text=True, timeout=900, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint at step" in resumed.stdout

    assert_same_results(straight, killed)
    # the metrics log has no duplicated or missing training points after the resume
    assert train_steps(killed) == list(range(20, 301, 20))


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_resume_may_change_how_often_it_logs_checkpoints_and_validates(backend, tmp_path):
    """--checkpoint-every, --keep-checkpoints, --log-every and --validate-every may change on --resume
    (a long run whose checkpoints are too sparse, or whose epochs are too short to validate each): the
    steps are cut into other calls, and the results stay bit-identical."""
    straight = tmp_path / "straight"  # 310 steps: 5 epochs of 62
    subprocess.run(train(backend, straight, "--max-steps", "310"), check=True, capture_output=True, timeout=900)
    part = tmp_path / "part"
    subprocess.run(train(backend, part, "--max-steps", "120"), check=True, capture_output=True, timeout=900)
    resumed = subprocess.run(train(backend, part, "--resume", "--max-steps", "310", "--checkpoint-every", "70",
                                   "--keep-checkpoints", "2", "--log-every", "30", "--validate-every", "3"),
                             capture_output=True, text=True, timeout=900, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint at step 120" in resumed.stdout
    assert_same_results(straight, part)
    saved = json.loads((part / "config.json").read_text())["train"]
    assert (saved["checkpoint_every"], saved["keep_checkpoints"], saved["log_every"], saved["validate_every"]) == (
        70, 2, 30, 3)
    assert sorted(checkpoint_steps(part)) == [280, 310]  # the new interval, the two newest kept
    assert train_steps(part) == [20, 40, 60, 80, 100, 120, 150, 180, 210, 240, 270, 300, 310]
    # every epoch validated up to step 120, then every third epoch and the last; the same figures
    every = split_rows(straight, "valid")
    assert sorted(every) == [62, 124, 186, 248, 310]
    assert split_rows(part, "valid") == {s: every[s] for s in (62, 186, 310)}

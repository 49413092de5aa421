"""scripts/carry.py: a run packed mid-way, unpacked into another folder and resumed ends bit-identical
to a run never stopped, in both backends; what it refuses."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.runs import checkpoint_steps
from tests.test_resume import assert_same_results

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--hidden-sizes", "32", "--latent-dim", "4", "--batch-size", "32", "--checkpoint-every", "10",
        "--log-every", "5", "--seed", "3"]


def train(backend, work, *extra):
    cmd = [sys.executable, str(ROOT / "train.py"), "--backend", backend, *ARGS, "--workdir", str(work), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)


def carry(*args):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "carry.py"), *args], capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_packed_run_resumes_elsewhere_bit_exact(backend, tmp_path):
    assert train(backend, tmp_path / "straight", "--max-steps", "50").returncode == 0
    part = tmp_path / "here" / "run"
    assert train(backend, part, "--max-steps", "30").returncode == 0
    (part / "results.json").unlink()  # as if killed after its checkpoint at step 30
    assert sorted(checkpoint_steps(part)) == [10, 20, 30]

    packed = carry("pack", str(part), "--out", str(tmp_path / "carry"))
    assert packed.returncode == 0, packed.stderr
    archive = tmp_path / "carry" / "run.tar.gz"
    assert f"-> {archive} (step 30" in packed.stdout
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "run/config.json" in names and "run/metrics.jsonl" in names
    assert not [n for n in names if n.startswith("run/tb")]
    # the newest checkpoint only (an orbax folder holds files with random hex names: match whole components)
    carried = {Path(n).parts[2] for n in names if n.startswith("run/checkpoints/")}
    assert carried == {"step_00000030.pt" if backend == "torch" else "30"}

    unpacked = carry("unpack", str(archive), "--runs", str(tmp_path / "there"))
    assert unpacked.returncode == 0, unpacked.stderr
    moved = tmp_path / "there" / "run"
    assert sorted(checkpoint_steps(moved)) == [30]
    resumed = train(backend, moved, "--resume", "--max-steps", "50")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from the checkpoint at step 30" in resumed.stdout
    assert_same_results(tmp_path / "straight", moved)
    steps = [json.loads(line)["step"] for line in (moved / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == list(range(5, 51, 5))

    again = carry("unpack", str(archive), "--runs", str(tmp_path / "there"))  # never over a run's checkpoints
    assert again.returncode == 2 and "already holds checkpoints" in again.stderr
    assert sorted(checkpoint_steps(moved)) == [30, 40, 50]


def test_pack_refuses_what_it_cannot_carry(tmp_path):
    assert train("torch", tmp_path / "done", "--max-steps", "10").returncode == 0
    finished = carry("pack", str(tmp_path / "done"), "--out", str(tmp_path / "carry"))
    assert finished.returncode == 2 and "the run has finished" in finished.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text("{}")
    nothing = carry("pack", str(tmp_path / "empty"), "--out", str(tmp_path / "carry"))
    assert nothing.returncode == 2 and "no complete checkpoint" in nothing.stderr
    assert not (tmp_path / "carry").exists() or not list((tmp_path / "carry").iterdir())
    missing = carry("unpack", str(tmp_path / "none.tar.gz"), "--runs", str(tmp_path))
    assert missing.returncode == 2 and "no such archive" in missing.stderr

"""Checkpoints that prove what they hold (issue 33): a flipped bit in the newest checkpoint, a
checkpoint that is not ours, one without a digest (written before digests), and a config.json edited
so that it no longer matches its checkpoints."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_resume import assert_same_results

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--hidden-sizes", "32", "--latent-dim", "4", "--batch-size", "32", "--checkpoint-every", "20",
        "--log-every", "20", "--keep-checkpoints", "3", "--seed", "3"]


def train(backend: str, work: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "train.py"), "--backend", backend, *ARGS, "--max-steps", str(steps),
           "--workdir", str(work), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)


def newest(work: Path, backend: str, step: int) -> Path:
    return work / "checkpoints" / (f"step_{step:08d}.pt" if backend == "torch" else str(step))


def flip_one_bit(checkpoint: Path, backend: str) -> None:
    """Flip one bit in the middle of a weight's data: torch's first model tensor (found by its bytes in
    the zip, where tensors are stored uncompressed), or the largest file of an orbax step folder."""
    if backend == "torch":
        import torch

        raw = bytearray(checkpoint.read_bytes())
        tensor = next(iter(torch.load(checkpoint, weights_only=True)["model"].values()))
        data = tensor.numpy().tobytes()
        at = raw.find(data)
        assert at > 0 and raw.find(data, at + 1) < 0
        target, offset = checkpoint, at + len(data) // 2
    else:
        target = max((p for p in checkpoint.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        raw = bytearray(target.read_bytes())
        offset = len(raw) // 2
    raw[offset] ^= 0x10
    target.write_bytes(bytes(raw))


def resume(backend: str, work: Path, steps: int) -> subprocess.CompletedProcess:
    out = train(backend, work, steps, "--resume")
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, Path]:
    """Uninterrupted 60-step runs, one per backend (made when a test first asks)."""
    made: dict[str, Path] = {}

    def get(backend: str) -> Path:
        if backend not in made:
            made[backend] = tmp_path_factory.mktemp(f"straight_{backend}")
            assert train(backend, made[backend], 60).returncode == 0
        return made[backend]
    return get


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_flipped_bit_is_reported_and_the_older_checkpoint_resumes_bit_identically(backend, straight, tmp_path):
    work = tmp_path / "run"
    assert train(backend, work, 40).returncode == 0
    flip_one_bit(newest(work, backend, 40), backend)
    out = resume(backend, work, 60)
    name = newest(work, backend, 40).name
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning: skipping checkpoint")]
    assert len(warnings) == 1 and f"checkpoint {name}:" in warnings[0] and "checksum mismatch" in warnings[0], out.stderr
    assert "resuming from the checkpoint at step 20" in out.stdout
    assert_same_results(straight(backend), work)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_checkpoint_without_a_digest_still_loads(backend, straight, tmp_path):
    """Checkpoints written before the digest existed resume as before, silently."""
    work = tmp_path / "run"
    assert train(backend, work, 40).returncode == 0
    if backend == "torch":
        import torch

        path = newest(work, backend, 40)
        state = torch.load(path, weights_only=True)
        del state["sha256"]
        torch.save(state, path)
    else:
        path = newest(work, backend, 40) / "meta" / "metadata"
        meta = json.loads(path.read_text())
        del meta["sha256"]
        path.write_text(json.dumps(meta))
    out = resume(backend, work, 60)
    assert "warning" not in out.stderr and "resuming from the checkpoint at step 40" in out.stdout
    assert_same_results(straight(backend), work)


def write_foreign(work: Path, backend: str, step: int) -> None:
    """A checkpoint that reads back but is not ours, newer than the run's."""
    folder = work / "checkpoints"
    if backend == "torch":
        import torch

        torch.save({"weights": torch.zeros(3), "epoch": 9}, folder / f"step_{step:08d}.pt")
        return
    import numpy as np
    import orbax.checkpoint as ocp

    manager = ocp.CheckpointManager(folder.absolute(), options=ocp.CheckpointManagerOptions(
        max_to_keep=9, enable_async_checkpointing=False))
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({"w": np.zeros(3, np.float32)}),
                                               meta=ocp.args.JsonSave({"epoch": 9})))
    manager.wait_until_finished()


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_checkpoint_that_is_not_ours_falls_back_to_the_older_one(backend, straight, tmp_path):
    work = tmp_path / "run"
    assert train(backend, work, 40).returncode == 0
    write_foreign(work, backend, 50)
    out = resume(backend, work, 60)
    warnings = [line for line in out.stderr.splitlines() if line.startswith("warning: skipping checkpoint")]
    assert len(warnings) == 1 and "not a checkpoint of this project" in warnings[0], out.stderr
    assert newest(work, backend, 50).name in warnings[0]
    assert "resuming from the checkpoint at step 40" in out.stdout
    assert_same_results(straight(backend), work)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_a_config_that_does_not_match_its_checkpoint_is_one_line_and_exit_2(backend, tmp_path):
    work = tmp_path / "run"
    assert train(backend, work, 20).returncode == 0
    config = json.loads((work / "config.json").read_text())
    config["model"]["hidden_sizes"] = [48]
    (work / "config.json").write_text(json.dumps(config))
    before = {p: p.read_bytes() for p in work.rglob("*") if p.is_file()}
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--resume", "--max-steps", "40", "--workdir",
                          str(work)], capture_output=True, text=True, timeout=900, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("train.py: error: config.json does not match checkpoint") and "(32" in lines[0]
    assert {p: p.read_bytes() for p in work.rglob("*") if p.is_file()} == before  # nothing written

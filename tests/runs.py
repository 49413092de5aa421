"""Helpers shared by the end-to-end tests."""

from pathlib import Path


def checkpoint_steps(work: Path) -> list[int]:
    """Steps of the complete checkpoints in a run folder (torch files and orbax directories)."""
    ckpt = work / "checkpoints"
    if not ckpt.is_dir():
        return []
    return [int("".join(c for c in p.name if c.isdigit())) for p in ckpt.iterdir()
            if not p.name.startswith(".") and any(c.isdigit() for c in p.name)]


def kill_after_checkpoint(cmd: list[str], work: Path, at_least: int, total: int, **popen) -> None:
    """Start a training run, SIGKILL it once it has a checkpoint at step ``at_least`` or later, and
    check that it died mid-run: no results, no checkpoint at its last step ``total``."""
    import os
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)
    deadline = time.time() + 600
    while not [s for s in checkpoint_steps(work) if s >= at_least] and proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (work / "results.json").exists(), "the run finished before it could be killed"
    assert max(checkpoint_steps(work)) < total

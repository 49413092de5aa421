"""Helpers shared by the end-to-end tests."""

from pathlib import Path


def checkpoint_steps(work: Path) -> list[int]:
    """Steps of the complete checkpoints in a run folder (torch files and orbax directories)."""
    ckpt = work / "checkpoints"
    if not ckpt.is_dir():
        return []
    return [int("".join(c for c in p.name if c.isdigit())) for p in ckpt.iterdir()
            if not p.name.startswith(".") and any(c.isdigit() for c in p.name)]

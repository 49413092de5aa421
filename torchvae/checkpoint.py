"""Checkpoint files of the torch engines: ``step_XXXXXXXX.pt`` in one folder, written atomically
(``torch.save`` to a temporary name, then ``os.replace``), the newest ``keep`` kept."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vaecore.rundir import TORCH_CHECKPOINT_RE, torch_checkpoint


class Checkpoints:
    def __init__(self, directory: Path, keep: int):
        self.directory, self.keep = Path(directory), keep

    def paths(self) -> list[Path]:
        """Complete checkpoint files, newest first."""
        if not self.directory.is_dir():
            return []
        return sorted((p for p in self.directory.iterdir() if TORCH_CHECKPOINT_RE.match(p.name)), reverse=True)

    def save(self, step: int, state: dict) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{torch_checkpoint(step)}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.directory / torch_checkpoint(step))  # a checkpoint is complete or absent
        for old in self.paths()[self.keep:]:
            old.unlink()

    def restore_latest(self) -> dict | None:
        """The newest checkpoint that reads back whole (a damaged one is skipped), or None."""
        for path in self.paths():
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 -- any damage: fall back to the previous one
                print(f"warning: skipping unreadable checkpoint {path.name}: {e}")
        return None

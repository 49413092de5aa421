"""Checkpoint files of the torch engines: ``step_XXXXXXXX.pt`` in one folder, written atomically
(``torch.save`` to a temporary name, then ``os.replace``), the newest ``keep`` kept.

Each file holds, beside the state, a sha256 of that state (``vaecore.runs.checksum``), so the digest is
written atomically with it. On restore the newest file that reads back, is ours and matches its
digest is used; any other is reported on stderr and the next older one tried. One of ours whose
tensors do not fit the model (config.json edited since) is a ``ConfigError``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from vaecore.runs import checksum
from vaecore.runs.rundir import TORCH_CHECKPOINT_RE, torch_checkpoint
from vaecore.settings.config import ConfigError

OURS = ("model", "optimizer", "meta")  # what every engine's checkpoint holds (torch_rng: the image engine's)


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def state_digest(state: dict) -> str:
    """sha256 over a checkpoint's contents without its digest."""
    return checksum.content_digest({k: v for k, v in state.items() if k != checksum.DIGEST}, _numpy)


def _check_ours(state) -> None:
    if not isinstance(state, dict) or any(k not in state for k in OURS):
        keys = sorted(map(str, state))[:4] if isinstance(state, dict) else type(state).__name__
        raise checksum.ForeignCheckpoint(f"not a checkpoint of this project (it holds {keys}, not {list(OURS)})")
    meta, model = state["meta"], state["model"]
    if not isinstance(meta, dict) or "step" not in meta or not isinstance(model, dict) or not all(
            isinstance(v, torch.Tensor) for v in model.values()):
        raise checksum.ForeignCheckpoint("not a checkpoint of this project (no step in its meta, or its model is not "
                                "a state dict)")


def read(path: Path, model: torch.nn.Module | None = None) -> dict:
    """A checkpoint file's state, after checking that it is ours, that its contents match their
    digest, and that its tensors fit ``model`` (when given)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    _check_ours(state)
    checksum.verify(state.get(checksum.DIGEST), state_digest(state))
    if model is not None:
        difference = checksum.first_shape_difference({k: tuple(v.shape) for k, v in model.state_dict().items()},
                                            {k: tuple(v.shape) for k, v in state["model"].items()})
        if difference:
            raise checksum.config_mismatch(str(path), difference)
    state.pop(checksum.DIGEST, None)
    return state


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
        torch.save({**state, checksum.DIGEST: state_digest(state)}, tmp)
        os.replace(tmp, self.directory / torch_checkpoint(step))  # a checkpoint is complete or absent
        for old in self.paths()[self.keep:]:
            old.unlink()

    def restore_latest(self, model: torch.nn.Module | None = None, step: int | None = None) -> dict | None:
        """The newest checkpoint that reads back whole, is ours, matches its digest and fits ``model``
        (another is reported on stderr and skipped), or None. With ``step``: that step's checkpoint,
        which must exist and read back whole (``checksum.missing_step`` / ``checksum.unreadable_step``)."""
        if step is not None:
            paths = self.paths()
            path = self.directory / torch_checkpoint(step)
            if path not in paths:
                raise checksum.missing_step(step, [int(TORCH_CHECKPOINT_RE.match(p.name)[1]) for p in paths],
                                            self.directory)
            try:
                return read(path, model)
            except ConfigError:
                raise
            except Exception as e:  # noqa: BLE001 -- the asked step only: no other one stands in for it
                raise checksum.unreadable_step(path, e) from None
        for path in self.paths():
            try:
                return read(path, model)
            except ConfigError:
                raise
            except checksum.DamagedCheckpoint as e:
                checksum.report_skipped(path.name, str(e))
            except Exception as e:  # noqa: BLE001 -- any damage: fall back to the previous one
                checksum.report_skipped(path.name, f"unreadable ({type(e).__name__}: {' '.join(str(e).split())[:200]})")
        return None

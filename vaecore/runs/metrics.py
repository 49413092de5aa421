"""Metrics: one writer for ``metrics.jsonl`` and TensorBoard event files, and the progress bar."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from tqdm import tqdm

from vaecore.files import atomic_write
from vaecore.runs import rundir
from vaecore.runs.rundir import read_text


class MetricsWriter:
    """Appends ``{"step", "split", **scalars}`` to ``metrics.jsonl`` and mirrors each scalar to
    TensorBoard (``tb/``, tensorboardX) as ``split/name``."""

    def __init__(self, workdir: Path, tensorboard: bool = True):
        self.path = Path(workdir) / rundir.METRICS
        self.tb_dir = Path(workdir) / rundir.TENSORBOARD
        self._tb = self._tensorboard() if tensorboard else None

    @staticmethod
    def check(workdir: Path) -> None:
        """Raise ``OSError`` now if an existing ``metrics.jsonl`` cannot be appended to (opened for
        appending, nothing written), rather than at the first logged point."""
        path = Path(workdir) / rundir.METRICS
        if path.exists() or path.is_symlink():
            with path.open("a", encoding="utf-8"):
                pass

    def _tensorboard(self):
        from tensorboardX import SummaryWriter

        return SummaryWriter(str(self.tb_dir))

    def truncate_after(self, step: int) -> None:
        """Drop points logged after ``step`` (written after the checkpoint a run resumes from), in
        metrics.jsonl and in the TensorBoard files, which are rebuilt from the points kept (so the
        steps a resumed run replays appear once)."""
        if not self.path.exists():
            return
        # a line cut short by a full disk has no step: it goes too
        kept = [line for line in read_text(self.path, "metrics log").splitlines() if 0 <= _step_of(line) <= step]
        atomic_write(self.path, "".join(line + "\n" for line in kept))
        if self._tb is not None:
            import shutil

            self._tb.close()
            shutil.rmtree(self.tb_dir, ignore_errors=True)
            self._tb = self._tensorboard()
            for line in kept:
                row = json.loads(line)
                self._add_scalars(int(row.pop("step")), str(row.pop("split")), row)

    def write(self, step: int, split: str, scalars: dict[str, float]) -> None:
        row = {"step": int(step), "split": split}
        row.update({k: _jsonable(v) for k, v in scalars.items()})
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            self._add_scalars(step, split, scalars)

    def _add_scalars(self, step: int, split: str, scalars: dict) -> None:
        for k, v in scalars.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self._tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


def _jsonable(v):
    v = float(v) if hasattr(v, "__float__") and not isinstance(v, (int, str)) else v
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


def progress_bar(total: int, initial: int, desc: str, *, disable: bool = False) -> tqdm:
    """A tqdm bar over training steps on stderr; ``bar.set_postfix`` shows loss and throughput.
    Shown on a terminal only, and never with ``disable``."""
    return tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0,
                file=sys.stderr, disable=True if disable else None)

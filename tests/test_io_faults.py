"""I/O faults of train.py (issue 33): each ends in one line, exit status 2 when found before training
(nothing changed, no new folder) and 1 during training (the checkpoints kept, --resume continues).
A full disk and a read-only file system are simulated by raising their ``OSError`` where the write
happens; the rest are real. In-process ``train.main`` with a tiny torch model."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

import train
from tests.runs import checkpoint_steps
from vaecore.runs.metrics import MetricsWriter

TINY = ["--backend", "torch", "--hidden-sizes", "16", "--latent-dim", "2", "--batch-size", "16", "--log-every", "1"]


def main(capsys, work: Path, *args: str) -> tuple[int, list[str]]:
    """train.py's exit status and its stderr lines."""
    capsys.readouterr()
    rc = train.main([*TINY, "--workdir", str(work), *args])
    return rc, capsys.readouterr().err.strip().splitlines()


def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


def test_workdir_that_is_a_file(capsys, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("mine")
    rc, err = main(capsys, path, "--max-steps", "2")
    assert rc == 2 and len(err) == 1 and "is a file, not a folder" in err[0]
    assert path.read_text() == "mine"


def test_full_disk_at_the_config_leaves_no_folder(capsys, tmp_path, monkeypatch):
    write_text = Path.write_text

    def fail_config(self, *args, **kwargs):
        if "config.json" in self.name:
            full_disk()
        return write_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fail_config)
    rc, err = main(capsys, tmp_path / "new" / "run", "--max-steps", "2")
    assert rc == 2 and len(err) == 1, err
    assert "No space left on device" in err[0] and "nothing was trained" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_read_only_folder_is_refused_before_anything(capsys, tmp_path, monkeypatch):
    """A read-only file system: the lock file cannot be opened for writing (EROFS)."""
    work = tmp_path / "run"
    assert main(capsys, work, "--max-steps", "3")[0] == 0
    before = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    rc, err = main(capsys, work, "--resume", "--max-steps", "5")
    monkeypatch.undo()
    assert rc == 2 and len(err) == 1 and "cannot write there (Read-only file system)" in err[0], err
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == before


def test_unwritable_metrics_log_is_refused_before_training(capsys, tmp_path):
    """metrics.jsonl that cannot be opened for appending (here a folder of that name): found before the
    config is written, not at the first logged point."""
    work = tmp_path / "run"
    (work / "metrics.jsonl").mkdir(parents=True)
    rc, err = main(capsys, work, "--max-steps", "3")
    assert rc == 2 and len(err) == 1 and "metrics.jsonl" in err[0], err
    assert sorted(p.name for p in work.iterdir()) == [".lock", "metrics.jsonl"]


def test_full_disk_while_logging_keeps_the_checkpoints(capsys, tmp_path, monkeypatch):
    work = tmp_path / "run"
    write = MetricsWriter.write

    def fill_up_after_step_7(self, step, split, scalars):
        if step > 7:
            full_disk()
        return write(self, step, split, scalars)

    monkeypatch.setattr(MetricsWriter, "write", fill_up_after_step_7)
    rc, err = main(capsys, work, "--max-steps", "12", "--checkpoint-every", "3")
    monkeypatch.undo()
    assert rc == 1 and len(err) == 1, err
    assert "No space left on device" in err[0] and "last good checkpoint (step 6)" in err[0]
    assert sorted(checkpoint_steps(work)) == [3, 6] and not (work / "results.json").exists()
    # the space is back: the run goes on from step 6 and finishes
    rc, err = main(capsys, work, "--resume")
    assert rc == 0, err
    assert json.loads((work / "results.json").read_text())["step"] == 12
    steps = [json.loads(line)["step"] for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert [s for s in steps if s <= 12][:12] == list(range(1, 13))


def test_full_disk_at_a_checkpoint_keeps_the_older_ones(capsys, tmp_path, monkeypatch):
    from torchvae.checkpoint import Checkpoints

    work = tmp_path / "run"
    save = Checkpoints.save

    def fail_at_step_6(self, step, state):
        if step == 6:
            full_disk()
        return save(self, step, state)

    monkeypatch.setattr(Checkpoints, "save", fail_at_step_6)
    rc, err = main(capsys, work, "--max-steps", "9", "--checkpoint-every", "3")
    assert rc == 1 and len(err) == 1, err
    assert "cannot write the checkpoint of step 6" in err[0] and "last good checkpoint (step 3)" in err[0]
    assert checkpoint_steps(work) == [3]


def test_full_disk_at_the_results_keeps_the_final_checkpoint(capsys, tmp_path, monkeypatch):
    import vaecore.runner.driver

    work = tmp_path / "run"
    write_json = vaecore.runner.driver.atomic_write_json

    def fail_results(path, data):
        if Path(path).name == "results.json":
            full_disk()
        return write_json(path, data)

    monkeypatch.setattr(vaecore.runner.driver, "atomic_write_json", fail_results)
    rc, err = main(capsys, work, "--max-steps", "4", "--checkpoint-every", "2")
    monkeypatch.undo()
    assert rc == 1 and len(err) == 1 and "last good checkpoint (step 4)" in err[0], err
    assert not (work / "results.json").exists()
    rc, err = main(capsys, work, "--resume")  # nothing left to train: the test figures and results.json
    assert rc == 0, err
    assert json.loads((work / "results.json").read_text())["step"] == 4

"""evaluate.py's bad input and I/O faults (issue 33): a damaged results.json, a damaged comparison.csv,
--out naming a file, a run folder it cannot write to: one line, exit status 2, found before the
evaluation starts, nothing changed."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import evaluate

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
EVAL = ["--k", "2", "--limit", "10", "--mi-batch-size", "5", "--no-pictures"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A tiny finished torch run, evaluated once (eval_test.json beside its results.json)."""
    work = tmp_path_factory.mktemp("finished") / "run"
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--hidden-sizes", "16", "--latent-dim", "2",
                          "--batch-size", "16", "--max-steps", "3", "--workdir", str(work)], capture_output=True,
                         text=True, timeout=600, check=False, env=ENV)
    assert out.returncode == 0, out.stderr
    assert evaluate.main(["--workdir", str(work), *EVAL]) == 0
    return work


@pytest.fixture
def run(finished, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


def error_line(capsys, argv: list[str], status: int = 2) -> str:
    capsys.readouterr()
    assert evaluate.main(argv) == status
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("evaluate.py: error: "), captured.err
    assert "checkpoint at step" not in captured.out  # refused before the evaluation began
    return lines[0]


@pytest.mark.parametrize("content", [b"{\"step\": 3, ", b"[1, 2]", b"\xff\xfe{}"])
def test_damaged_results_json_is_refused_before_the_evaluation(content, run, capsys):
    (run / "eval_test.json").unlink()
    (run / "results.json").write_bytes(content)
    before = snapshot(run)
    line = error_line(capsys, ["--workdir", str(run), *EVAL])
    assert f"{run / 'results.json'}:" in line
    assert snapshot(run) == before


def test_unwritable_run_folder_is_found_before_the_evaluation(run, capsys, monkeypatch):
    """A read-only file system: evaluate.py found out only after the evaluation (hours at K = 5000)."""
    write_bytes = Path.write_bytes

    def read_only(self, data):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "write_bytes", read_only)
    monkeypatch.setattr(Path, "write_text", read_only)
    before = snapshot(run)
    line = error_line(capsys, ["--workdir", str(run), *EVAL, "--split", "valid"])
    monkeypatch.setattr(Path, "write_bytes", write_bytes)
    assert "cannot write there (Read-only file system)" in line
    assert snapshot(run) == before


@pytest.mark.parametrize("content", [
    b"run,nll\nx,1.0,2.0\n",  # a row longer than the header
    b"run,nll\nx\n",  # shorter
    b"run,nll\n,1.0\n",  # no run name
    b"run,nll\n\"x,1.0\n",  # an unclosed quote
    b"run,nll\n\xe9t\xe9,1.0\n",  # Latin-1, not UTF-8
    b"nll,kl\n1.0,2.0\n",  # no run column
])
def test_damaged_comparison_csv_is_one_line(content, finished, tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "comparison.csv").write_bytes(content)
    before = snapshot(out)
    line = error_line(capsys, ["--compare", str(finished), str(out / "comparison.csv"), "--out", str(out)])
    assert "comparison" in line
    assert snapshot(out) == before


def test_out_naming_a_file_is_one_line(finished, tmp_path, capsys):
    path = tmp_path / "table.md"
    path.write_text("mine")
    line = error_line(capsys, ["--compare", str(finished), "--out", str(path)])
    assert "--out" in line and "a file, not a folder" in line
    assert path.read_text() == "mine"


def test_damaged_eval_json_of_a_compared_run_is_one_line(run, tmp_path, capsys):
    (run / "eval_test.json").write_text("{\"nll\": ")
    line = error_line(capsys, ["--compare", str(run), "--out", str(tmp_path / "cmp")])
    assert "eval_test.json" in line and "damaged" in line
    assert not (tmp_path / "cmp").exists()  # a refused command leaves no new folder


def test_full_disk_after_the_evaluation_keeps_the_figures(run, capsys, monkeypatch):
    """The disk fills up after the check: the figures are written first and kept; one line, exit 1."""
    import vaecore.runner.report

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(run / "report.md"))

    (run / "eval_test.json").unlink()
    monkeypatch.setattr(vaecore.runner.report, "atomic_write", full)
    capsys.readouterr()
    assert evaluate.main(["--workdir", str(run), *EVAL]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "No space left on device" in lines[0] and "report.md" in lines[0], lines
    assert json.loads((run / "eval_test.json").read_text())["examples"] == 10

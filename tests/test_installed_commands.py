"""The installed commands (twinvae-train, twinvae-evaluate, twinvae-export) work from any directory,
and the package installs no top-level ``train`` or ``evaluate`` module."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def command(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed beside {sys.executable}: install the package (pip install -e .)")
    return str(path)


def test_the_commands_run_a_job_from_another_directory(tmp_path):
    """Train, evaluate and export a tiny run with the installed commands, in a folder that holds
    none of the repository (its own train.py is not on the path there)."""
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), cwd=cwd, capture_output=True, text=True, timeout=600, check=False)

    out = run(command("twinvae-train"), "--max-steps", "6", "--hidden-sizes", "16", "--latent-dim", "3",
              "--log-every", "3", "--workdir", "run")
    assert out.returncode == 0, out.stderr
    assert json.loads((cwd / "run" / "results.json").read_text())["step"] == 6
    out = run(command("twinvae-evaluate"), "--workdir", "run", "--k", "4", "--limit", "20", "--no-pictures")
    assert out.returncode == 0, out.stderr
    assert json.loads((cwd / "run" / "eval_test.json").read_text())["k"] == 4
    out = run(command("twinvae-export"), "run", "exported")
    assert out.returncode == 0, out.stderr
    assert {p.name for p in (cwd / "exported").iterdir()} >= {"model.safetensors", "config.json", "README.md"}
    out = run(command("twinvae-export"), "run", "exported")  # not over an export
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr


def test_bad_input_to_an_installed_command_is_one_line(tmp_path):
    out = subprocess.run([command("twinvae-train"), "--lr", "nan"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120, check=False)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--lr" in out.stderr


def test_the_wheel_installs_no_top_level_train_or_evaluate(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    wheel = next(tmp_path.glob("twinvae-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert "train.py" not in top and "evaluate.py" not in top, sorted(top)
    assert {"twinvae", "vaecore", "jaxvae", "torchvae"} <= top
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for script in ("twinvae-train = twinvae.train_cli:main", "twinvae-evaluate = twinvae.evaluate_cli:main",
                   "twinvae-export = twinvae.export_cli:main"):
        assert script in text

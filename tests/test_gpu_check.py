"""bench/gpu_check.sh on a machine without a GPU (issue 33): it says what is installed, skips the GPU
parts with a message and exits 0; its training part, forced onto the CPU with a few steps, runs and
reports its figures; its synthetic data loads as the real data does; its reading of mmd_cuda.py's table."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vaecore.data.mnist import load_idx_dir
from vaecore.data.text_data import load_text_data

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import gpu_check

torch = pytest.importorskip("torch")


def check(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "bench" / "gpu_check.sh"), "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, timeout=900, check=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU: the check would run it")
def test_without_a_gpu_it_skips_the_gpu_parts_and_exits_0(tmp_path):
    out = check(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"torch              {torch.__version__}" in out.stdout
    assert "torch sees no GPU" in out.stdout
    assert "no CUDA GPU: torch sees none" in out.stdout and "skipping the GPU parts" in out.stdout
    assert "== summary" not in out.stdout  # nothing ran
    assert not (tmp_path / "out" / "torch_train").exists()


def test_the_training_part_on_the_cpu_reports_steps_per_second(tmp_path):
    out = check(tmp_path, "--device", "cpu", "--steps", "4", "--parts", "train", "--backends", "torch")
    assert out.returncode == 0, out.stdout + out.stderr
    summary = out.stdout[out.stdout.index("== summary"):].strip().splitlines()[1:]
    assert len(summary) == 1 and summary[0].split()[0] == "passed" and "torch mnist on cpu:" in summary[0]
    rows = [json.loads(line) for line in (tmp_path / "out" / "torch_train" / "metrics.jsonl").read_text().splitlines()]
    rates = [r["images_per_s"] for r in rows if r["split"] == "train"]
    assert len(rates) == 4  # --log-every 1
    steps_per_s = float(np.median(rates[1:])) / 128  # the default batch
    assert f"{steps_per_s:.1f} steps/s, " in summary[0]


def test_synthetic_data_loads_like_the_real_data(tmp_path):
    images = load_idx_dir(gpu_check.synthetic_mnist(tmp_path / "mnist"))
    assert images.train.shape == (7000, 784) and images.valid.shape == (5000, 784) and images.test.shape == (2000, 784)
    assert set(np.unique(images.train)) == {0.0, 1.0}
    text = load_text_data(str(gpu_check.synthetic_text(tmp_path / "text")))
    assert [len(text.splits[s]) for s in ("train", "valid", "test")] == [6000, 500, 500]
    assert len(text.vocab) == 2004  # 2,000 words and the 4 special tokens


def test_mmd_figures_take_the_largest_error_of_each_row():
    table = """| backend | path | dtype | value | grad x | grad y | tolerance | ok |
|---|---|---|---:|---:|---:|---:|---|
| torch | triton | float32 | 1.0e-06 | 3.0e-05 | 2.0e-05 | 3e-04 | yes |
| torch | triton | float64 | 1.0e-12 | 2.0e-08 | 1.0e-13 | 1e-09 | NO |
"""
    assert gpu_check.mmd_figures(table) == ("max relative errors: torch triton float32 3.0e-05, torch triton float64 "
                                            "2.0e-08 (OVER)")
    assert gpu_check.mmd_figures("mmd_cuda.py: no CUDA device") == "no correctness table (see the log)"

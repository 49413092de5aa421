"""Data parallelism against one device (issue 16): the same run on 1 device and on 2 (and 4 JAX
host devices; 2 torchrun processes; 2 JAX processes joined by jax.distributed) must log the same
numbers, step by step, up to floating-point reassociation; checkpoints resume on another device
count; bad launches get a one-line error.

Each run is ``train.py`` in a subprocess: JAX's device count is fixed when it starts
(``--xla_force_host_platform_device_count``), torch's processes come from ``torchrun``.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_text_cli import write_corpus
from vaecore.runs.parallel import Layout, shard_rows
from vaecore.settings.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BASE_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
for _name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "JAX_COORDINATOR_ADDRESS",
              "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "XLA_FLAGS"):
    BASE_ENV.pop(_name, None)

MNIST = ["--task", "mnist", "--max-steps", "35", "--log-every", "5", "--checkpoint-every", "10"]  # 31 steps per epoch
CASES = {
    "mnist-elbo": MNIST,
    "mnist-mmd": [*MNIST, "--loss", "mmd"],
    "mnist-bn": [*MNIST, "--bn-gamma", "0.7"],
    "text-elbo": ["--task", "text", "--batch-size", "8", "--max-steps", "30", "--log-every", "5",
                  "--checkpoint-every", "10"],  # free bits 0.05 by default: a batch-mean KL per dimension
    # float32: a few steps (reassociation in float32 grows over a long run like any rounding change)
    "mnist-mmd-short": ["--task", "mnist", "--max-steps", "6", "--log-every", "1", "--loss", "mmd"],
    "text-iwae": ["--task", "text", "--batch-size", "8", "--max-steps", "30", "--log-every", "5", "--loss", "iwae",
                  "--iw-samples", "3"],  # torch: k noise rows and dropout masks per sentence, on the examples' axis
    # the Transformer decoder: every dropout site's mask is drawn for the global batch (torch)
    "text-transformer": ["--task", "text", "--batch-size", "8", "--max-steps", "30", "--log-every", "5", "--decoder",
                         "transformer", "--embed-dim", "48", "--hidden-dim", "64", "--z-injection", "both", "--transformer-layers", "2", "--transformer-heads", "2",
                         "--transformer-ff", "32", "--attention-dropout", "0.1", "--residual-dropout", "0.1",
                         "--loss", "mmd", "--alpha", "0.5", "--lambda", "10"],
    "text-mmd": ["--task", "text", "--batch-size", "8", "--max-steps", "30", "--log-every", "5", "--loss", "mmd",
                 "--alpha", "0.5", "--lambda", "10"],
}
TIMING = ("per_s", "seconds")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("dp_corpus"), sizes=(("train", 200), ("valid", 40), ("test", 41)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(backend: str, devices: int, args: list[str], workdir: Path, *, env: dict | None = None,
           processes: int = 1) -> subprocess.CompletedProcess:
    """train.py on ``devices`` devices: JAX host devices in one process (or ``processes`` JAX
    processes, one device each), torch processes under torchrun."""
    cmd = [str(ROOT / "train.py"), "--backend", backend, "--workdir", str(workdir), *args]
    env = {**BASE_ENV, **(env or {})}
    if backend == "torch" and devices > 1:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               f"--nproc_per_node={devices}", *cmd], env=env, capture_output=True, text=True,
                              timeout=900, check=False)
    if processes > 1:
        port, procs = free_port(), []
        for index in range(processes):
            penv = {**env, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(processes),
                    "JAX_PROCESS_ID": str(index)}
            procs.append(subprocess.Popen([sys.executable, *cmd], env=penv, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=900) for p in procs]
        return subprocess.CompletedProcess(cmd, max(p.returncode for p in procs), outs[0][0],
                                           "".join(o[1] for o in outs))
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run([sys.executable, *cmd], env=env, capture_output=True, text=True, timeout=900, check=False)


def case_args(case: str, corpus: Path, dtype: str) -> list[str]:
    return [*CASES[case], *(["--data", str(corpus)] if case.startswith("text") else []), "--dtype", dtype]


def rows(workdir: Path) -> list[dict]:
    """metrics.jsonl without a test row written before a resume (a finished run's, kept)."""
    out = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    last = max(r["step"] for r in out)
    return [r for r in out if r["split"] != "test" or r["step"] == last]


def assert_same_rows(one: Path, many: Path, rtol: float) -> None:
    a, b = rows(one), rows(many)
    assert [(r["step"], r["split"]) for r in a] == [(r["step"], r["split"]) for r in b]
    checked = 0
    for x, y in zip(a, b):
        for k, v in x.items():
            if isinstance(v, float) and not any(t in k for t in TIMING):
                assert math.isclose(v, y[k], rel_tol=rtol, abs_tol=rtol), (x["step"], x["split"], k, v, y[k])
                checked += 1
    assert checked > 10


_reference: dict = {}


def reference(backend: str, case: str, corpus: Path, tmp_path_factory, dtype: str = "float64") -> Path:
    """The one-device run of ``case`` (once per module)."""
    key = (backend, case, dtype)
    if key not in _reference:
        work = tmp_path_factory.mktemp(f"one-{backend}-{case}-{dtype}") / "run"
        proc = launch(backend, 1, case_args(case, corpus, dtype), work)
        assert proc.returncode == 0, proc.stderr[-3000:]
        _reference[key] = work
    return _reference[key]


@pytest.mark.parametrize("backend,devices,case", [
    ("jax", 2, "mnist-elbo"), ("jax", 4, "mnist-mmd"), ("jax", 2, "text-elbo"), ("jax", 4, "text-mmd"),
    ("torch", 2, "mnist-elbo"), ("torch", 2, "mnist-mmd"), ("torch", 2, "mnist-bn"), ("torch", 2, "text-elbo"),
    ("torch", 2, "text-mmd"), ("torch", 2, "text-iwae"), ("jax", 2, "text-iwae"),
    ("torch", 2, "text-transformer"), ("jax", 2, "text-transformer"),
])
def test_data_parallel_matches_one_device_float64(backend, devices, case, corpus, tmp_path, tmp_path_factory):
    one = reference(backend, case, corpus, tmp_path_factory)
    proc = launch(backend, devices, case_args(case, corpus, "float64"), tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # every logged loss term, validation and test figure (MI, AU, perplexity) of every point; the
    # BN-VAE's running variance, computed in two passes over the processes, differs in the last bits
    assert_same_rows(one, tmp_path / "run", 1e-10)
    processes = devices if backend == "torch" else 1
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["layout"] == {"devices": devices, "processes": processes, "platform": "cpu"}
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert (results["devices"], results["processes"]) == (devices, processes)
    first = f"{backend} on data parallel over {devices} cpu devices in {processes} process"
    assert first in proc.stdout
    assert proc.stdout.count(" steps per epoch") == 1  # one process logs


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_data_parallel_matches_one_device_float32(backend, corpus, tmp_path, tmp_path_factory):
    one = reference(backend, "mnist-mmd-short", corpus, tmp_path_factory, "float32")
    proc = launch(backend, 2, case_args("mnist-mmd-short", corpus, "float32"), tmp_path / "run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_rows(one, tmp_path / "run", 1e-3)  # the parity suite's float32 gradient tolerance


def test_jax_two_processes_match_one_device(corpus, tmp_path, tmp_path_factory):
    """Two JAX processes joined by jax.distributed on localhost (the several-hosts path): each puts
    its rows on its device; orbax writes the checkpoints together; only process 0 writes files."""
    one = reference("jax", "text-elbo", corpus, tmp_path_factory)
    work = tmp_path / "run"
    proc = launch("jax", 2, case_args("text-elbo", corpus, "float64"), work, processes=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_rows(one, work, 1e-10)
    assert json.loads((work / "config.json").read_text())["layout"]["processes"] == 2
    for name in ("samples.txt", "reconstructions.txt", "interpolations.txt"):  # decoded by process 0 alone
        assert (work / name).read_text() == (one / name).read_text()


@pytest.mark.parametrize("backend,first,second", [("jax", 2, 1), ("jax", 1, 4), ("torch", 2, 1), ("torch", 1, 2)])
def test_resume_on_another_device_count(backend, first, second, corpus, tmp_path, tmp_path_factory):
    """Checkpoints hold no layout: 20 steps on ``first`` devices, the rest on ``second``, equal to
    the straight one-device run."""
    case = "mnist-mmd"
    one = reference(backend, case, corpus, tmp_path_factory)
    work = tmp_path / "run"
    args = case_args(case, corpus, "float64")
    proc = launch(backend, first, [*args, "--max-steps", "20"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = launch(backend, second, [*args, "--resume"], work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_rows(one, work, 1e-10)


def error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "train.py: error:" in line]


def test_bad_launches_get_one_line_errors(corpus, tmp_path):
    # a global batch that does not split across the devices / processes
    proc = launch("jax", 4, ["--task", "mnist", "--batch-size", "30", "--max-steps", "2"], tmp_path / "a")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "train.py: error: --batch-size 30 does not split evenly across 4 devices; use a multiple of 4 (for example 28)"]
    assert not (tmp_path / "a" / "checkpoints").exists()
    proc = launch("torch", 2, ["--task", "mnist", "--batch-size", "31", "--max-steps", "2"], tmp_path / "b")
    assert proc.returncode != 0
    assert set(error_lines(proc)) == {
        "train.py: error: --batch-size 31 does not split evenly across 2 devices; use a multiple of 2 (for example 30)"}
    # torchrun's variables without the rendezvous address
    proc = launch("torch", 1, ["--task", "mnist", "--max-steps", "2"], tmp_path / "c",
                  env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    assert proc.returncode == 2 and error_lines(proc) == [
        ("train.py: error: WORLD_SIZE is set but MASTER_ADDR is not: start several processes with torchrun "
        "--nproc_per_node=N train.py ... (which sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)")]
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = launch("torch", 1, ["--task", "mnist", "--max-steps", "2"], tmp_path / "c2", env={"WORLD_SIZE": "two"})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "WORLD_SIZE, RANK and LOCAL_RANK must be integers" in proc.stderr
    # JAX under torchrun would run the whole job once per process
    proc = launch("jax", 1, ["--task", "mnist", "--max-steps", "2"], tmp_path / "d", env={"WORLD_SIZE": "2"})
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "runs one process per host" in proc.stderr
    # half of JAX's multi-process environment
    proc = launch("jax", 1, ["--task", "mnist", "--max-steps", "2"], tmp_path / "e",
                  env={"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234"})
    assert proc.returncode == 2 and error_lines(proc) == [
        ("train.py: error: a multi-process JAX run needs JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID "
        "in the environment; JAX_NUM_PROCESSES is not set (or unset them all for one process)")]
    proc = launch("jax", 1, ["--task", "mnist", "--max-steps", "2"], tmp_path / "f",
                  env={"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"})
    assert proc.returncode == 2 and error_lines(proc) == [
        "train.py: error: JAX_PROCESS_ID 2 is not one of the 2 processes (0 to 1)"]


def test_shard_rows_and_layout():
    assert [shard_rows(10, 4, i) for i in range(4)] == [slice(0, 3), slice(3, 6), slice(6, 8), slice(8, 10)]
    assert [shard_rows(1, 2, i) for i in range(2)] == [slice(0, 1), slice(1, 1)]
    assert [shard_rows(8, 2, i) for i in range(2)] == [slice(0, 4), slice(4, 8)]
    Layout(devices=4).check_batch(128)
    with pytest.raises(ConfigError, match="--batch-size 6 does not split evenly across 4 devices"):
        Layout(devices=4).check_batch(6)
    assert Layout().describe() == "1 cpu device" and Layout().main
    assert not Layout(devices=2, processes=2, process_index=1).main


def test_jax_evaluate_on_several_devices(corpus, tmp_path, tmp_path_factory):
    """evaluate.py (IW-NLL, KL, MI, AU) with each batch and its importance noise split across 2
    JAX devices gives the one-device figures."""
    import shutil

    one = reference("jax", "mnist-mmd", corpus, tmp_path_factory)
    figures = {}
    for devices in (1, 2):
        work = tmp_path / f"run{devices}"
        shutil.copytree(one, work)
        env = {**BASE_ENV, **({"XLA_FLAGS": "--xla_force_host_platform_device_count=2"} if devices > 1 else {})}
        proc = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--workdir", str(work), "--k", "20",
                               "--no-pictures"], env=env, capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 0, proc.stderr[-2000:]
        figures[devices] = json.loads((work / "eval_test.json").read_text())
    checked = [k for k, v in figures[1].items() if isinstance(v, float) and k != "seconds"]
    assert {"nll", "kl", "mi", "recon"} <= set(checked)
    for k in checked:
        assert math.isclose(figures[1][k], figures[2][k], rel_tol=1e-10, abs_tol=1e-10), (k, figures[1][k], figures[2][k])

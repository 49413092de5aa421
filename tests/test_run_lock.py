"""One writer per run folder (issue 33): a second train.py on a folder that a training process holds is
refused in one line and changes nothing; the lock dies with its process (SIGKILL included); evaluate.py
evaluates beside a writer but leaves results.json to it; several processes of one run do not hang on
a refusal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vaecore.runs import rundir
from vaecore.settings.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
for _name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "JAX_COORDINATOR_ADDRESS",
              "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "XLA_FLAGS"):
    ENV.pop(_name, None)
TINY = ["--hidden-sizes", "16", "--latent-dim", "2", "--batch-size", "16"]
HOLD = "import sys; from vaecore.runs.rundir import lock_run; lock = lock_run(sys.argv[1]); print('held', flush=True); sys.stdin.read()"


def train(work: Path, *args: str, backend: str = "torch") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "train.py"), "--backend", backend, *TINY, "--workdir", str(work),
                           *args], capture_output=True, text=True, timeout=600, check=False, env=ENV)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def holder(work: Path) -> subprocess.Popen:
    """A process that holds ``work``'s lock until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait()


def refused_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "another process is writing this run folder" in lines[0]
    return lines[0]


def test_second_training_on_a_running_folder_is_refused_and_the_lock_dies_with_its_process(tmp_path):
    """Before its first checkpoint a training run's folder was taken over: config.json replaced."""
    work = tmp_path / "run"
    first = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *TINY, "--max-steps", "1000000",
                              "--checkpoint-every", "1000000", "--log-every", "1", "--workdir", str(work)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        while not (work / "metrics.jsonl").exists() or not (work / "metrics.jsonl").read_text():
            assert first.poll() is None, "the first run ended"
            time.sleep(0.01)
        before = (work / "config.json").read_bytes()
        second = train(work, "--max-steps", "3", "--latent-dim", "3")
        refused_line(second)
        assert (work / "config.json").read_bytes() == before
        assert not (work / "checkpoints").exists() and first.poll() is None
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel dropped the killed run's lock: no stale lock, the folder is free again
    again = train(work, "--max-steps", "3", "--latent-dim", "3")
    assert again.returncode == 0, again.stderr
    assert json.loads((work / "config.json").read_text())["model"]["latent_dim"] == 3


def test_resume_and_refusal_under_a_held_lock_change_nothing(tmp_path):
    work = tmp_path / "run"
    assert train(work, "--max-steps", "4", "--checkpoint-every", "2").returncode == 0
    before = snapshot(work)
    proc = holder(work)
    try:
        refused_line(train(work, "--resume", "--max-steps", "6"))
        assert snapshot(work) == before
    finally:
        release(proc)
    resumed = train(work, "--resume", "--max-steps", "6")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((work / "results.json").read_text())["step"] == 6


def test_lock_in_process_is_exclusive_and_a_new_folder_goes_with_discard(tmp_path):
    work = tmp_path / "a" / "b"
    lock = rundir.lock_run(work)
    proc = subprocess.run([sys.executable, "-c", HOLD, str(work)], capture_output=True, text=True, env=ENV,
                          timeout=120, check=False, stdin=subprocess.DEVNULL)
    assert proc.returncode != 0 and "another process is writing this run folder" in proc.stderr
    lock.discard()
    assert list(tmp_path.iterdir()) == []  # both folders it made are gone
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        (tmp_path / "f").write_text("x")
        rundir.lock_run(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "x"


def test_evaluate_beside_a_writer_leaves_results_json_alone(tmp_path):
    """evaluate.py does not hold the lock while it evaluates (hours; a --resume may run meanwhile): it
    takes it only to merge into results.json, and a writer holding it keeps results.json to itself."""
    work = tmp_path / "run"
    assert train(work, "--max-steps", "4").returncode == 0
    results = (work / "results.json").read_bytes()
    proc = holder(work)
    try:
        out = subprocess.run([sys.executable, str(ROOT / "evaluate.py"), "--workdir", str(work), "--k", "2", "--limit",
                              "10", "--mi-batch-size", "5", "--no-pictures"], capture_output=True, text=True,
                             env=ENV, timeout=600, check=False)
    finally:
        release(proc)
    assert out.returncode == 0, out.stderr
    assert (work / "results.json").read_bytes() == results
    assert json.loads((work / "eval_test.json").read_text())["step"] == 4
    assert "results.json is left as it is" in out.stdout and "another process is writing" in out.stdout


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_every_process_of_a_parallel_run_stops_on_a_refusal(backend, tmp_path):
    """Only the main process takes the lock; its refusal reaches the others (torchrun's ranks, JAX's
    processes), which would otherwise wait for it in their first collective."""
    work = tmp_path / "run"
    work.mkdir()
    args = [str(ROOT / "train.py"), "--backend", backend, *TINY, "--max-steps", "3", "--workdir", str(work)]
    proc = holder(work)
    try:
        if backend == "torch":
            runs = [subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                    *args], capture_output=True, text=True, env=ENV, timeout=600, check=False)]
        else:
            port = free_port()
            procs = [subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env={**ENV, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                                                      "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)})
                     for i in range(2)]
            outs = [p.communicate(timeout=600) for p in procs]
            runs = [subprocess.CompletedProcess(args, p.returncode, o, e) for p, (o, e) in zip(procs, outs)]
    finally:
        release(proc)
    stderr = "".join(r.stderr for r in runs)
    assert all(r.returncode != 0 for r in runs), stderr
    errors = [line for line in stderr.splitlines() if line.startswith("train.py: error: ")]
    assert len(errors) == 2, stderr  # one per process, in the order they wrote them
    assert sum("another process is writing this run folder" in e for e in errors) == 1
    assert sum("the main process (rank 0) refused the run" in e for e in errors) == 1
    # the train.py processes end in their one line (torchrun itself reports failed workers in a traceback)
    assert 'train.py", line' not in stderr and "vaecore" not in stderr
    assert [p.name for p in work.iterdir()] == [rundir.LOCK]

"""An inconsistent multi-process environment is one line and exit 2 before any rendezvous (issue 33):
torch with RANK 5 of WORLD_SIZE 2 used to wait forever in init_process_group."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vaecore.settings.config import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
         "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
TORCHRUN = "; start several processes with torchrun --nproc_per_node=N train.py ... (which sets them)"


def run(backend: str, env: dict[str, str], tmp_path: Path) -> list[str]:
    """train.py's stderr lines in ``env`` (every launcher variable else unset); it must exit 2."""
    clean = {k: v for k, v in os.environ.items() if k not in NAMES}
    work = tmp_path / "run"
    # a free port nobody listens on: before the check, rank 5 waited there for ever
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--backend", backend, "--max-steps", "2",
                          "--hidden-sizes", "8", "--latent-dim", "2", "--workdir", str(work)],
                         env={**clean, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu", **env}, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 2, out.stderr
    assert not work.exists()
    return out.stderr.strip().splitlines()


def test_torch_rank_outside_the_world_is_refused_not_a_hang(tmp_path):
    env = {"WORLD_SIZE": "2", "RANK": "5", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29531"}
    assert run("torch", env, tmp_path) == [f"train.py: error: RANK 5 is not one of the 2 processes (0 to 1){TORCHRUN}"]


def test_jax_process_count_below_one_is_refused(tmp_path):
    env = {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:29532", "JAX_NUM_PROCESSES": "0", "JAX_PROCESS_ID": "0"}
    assert run("jax", env, tmp_path) == ["train.py: error: JAX_NUM_PROCESSES 0: a run needs at least 1 process"]


@pytest.mark.parametrize("env,message", [
    ({"WORLD_SIZE": "2", "RANK": "-1", "LOCAL_RANK": "0"}, f"RANK -1 is not one of the 2 processes (0 to 1){TORCHRUN}"),
    ({"WORLD_SIZE": "0"}, f"WORLD_SIZE 0: a run needs at least 1 process{TORCHRUN}"),
    ({"WORLD_SIZE": "1", "RANK": "1"}, f"RANK 1 is not one of the 1 processes (0 to 0){TORCHRUN}"),
    ({"WORLD_SIZE": "4", "RANK": "1", "LOCAL_RANK": "2"},
     f"LOCAL_RANK 2 does not fit RANK 1 of WORLD_SIZE 4 (it must be 0 to 1){TORCHRUN}"),
    ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "2"},
     f"LOCAL_RANK 2 does not fit RANK 3 of WORLD_SIZE 4 (it must be 0 to 1){TORCHRUN}"),
    ({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "h",
      "MASTER_PORT": "http"}, f"MASTER_PORT 'http' is not a port (an integer from 1 to 65535){TORCHRUN}"),
])
def test_torch_environment_checks(env, message, monkeypatch):
    from torchvae import parallel
    from vaecore.settings.config import RunConfig

    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as e:
        parallel.start(RunConfig())
    assert str(e.value) == message


@pytest.mark.parametrize("address,message", [
    ("29533", "JAX_COORDINATOR_ADDRESS '29533' must be host:port (the address of process 0)"),
    ("127.0.0.1:port", "JAX_COORDINATOR_ADDRESS's port 'port' is not a port (an integer from 1 to 65535)"),
])
def test_jax_coordinator_address_checks(address, message, monkeypatch):
    from jaxvae import parallel

    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", address)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    with pytest.raises(ConfigError) as e:
        parallel.start()
    assert str(e.value) == message

"""Data-parallel training against one device, through ``train.py`` end to end, both backends.

    python -m bench.data_parallel [--devices 2] [--steps 60] [--tasks mnist,text] [--backends jax,torch]
                                  [--data-mnist DIR] [--data-text DIR]      (from the repo root)

For each (backend, task) the same job runs on 1 device and on ``--devices``: JAX host devices in
one process (``--xla_force_host_platform_device_count``; on a GPU host, JAX's own devices), torch
processes under ``torchrun`` (gloo on CPUs, NCCL on GPUs). Throughput is the run's own figure from
``metrics.jsonl`` (units per second inside the steps, after the first logged point, which holds
the compilation); the wall time of the whole ``train.py`` (start, data, evaluation, outputs) is
printed beside it. On a CPU, N devices share the same cores as one: expect no speed-up, and read
the ratio as the cost of splitting the batch and exchanging gradients.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(backend: str, task: str, devices: int, steps: int, data: str | None, workdir: Path) -> tuple[float, float]:
    """(units per second in the steps after the first logged point, wall seconds)."""
    log_every = max(steps // 6, 1)
    cmd = [str(ROOT / "train.py"), "--backend", backend, "--task", task, "--max-steps", str(steps),
           "--log-every", str(log_every), "--checkpoint-every", str(10 * steps), "--workdir", str(workdir)]
    if data:
        cmd += ["--data", data]
    env = dict(os.environ)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "XLA_FLAGS"):
        env.pop(name, None)
    if backend == "torch" and devices > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}", *cmd]
    else:
        cmd = [sys.executable, *cmd]
        if backend == "jax" and devices > 1:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{backend} {task} on {devices}: failed\n{proc.stderr[-2000:]}")
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    rates = [r[k] for r in rows if r["split"] == "train" for k in r if k.endswith("_per_s")][1:]
    return sum(rates) / len(rates), wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--tasks", default="mnist,text")
    p.add_argument("--backends", default="jax,torch")
    p.add_argument("--data-mnist", default=None)
    p.add_argument("--data-text", default=None)
    args = p.parse_args()
    print(f"{'backend':8} {'task':6} {'unit':7} {'1 device':>10} {f'{args.devices} devices':>10} {'ratio':>6} "
          f"{'wall 1':>8} {f'wall {args.devices}':>8}")
    for backend in args.backends.split(","):
        for task in args.tasks.split(","):
            data = args.data_mnist if task == "mnist" else args.data_text
            with tempfile.TemporaryDirectory() as tmp:
                one, wall_one = run(backend, task, 1, args.steps, data, Path(tmp) / "one")
                many, wall_many = run(backend, task, args.devices, args.steps, data, Path(tmp) / "many")
            unit = "img/s" if task == "mnist" else "tok/s"
            print(f"{backend:8} {task:6} {unit:7} {one:10.0f} {many:10.0f} {many / one:6.2f} {wall_one:7.1f}s "
                  f"{wall_many:7.1f}s", flush=True)


if __name__ == "__main__":
    main()

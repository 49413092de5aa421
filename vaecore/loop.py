"""The training driver shared by both backends: data, the step loop, logging, checkpoints,
evaluation, results and pictures. A backend supplies an *engine* with the numeric parts:

- ``train_step(x, step) -> dict[str, float]`` one optimiser step on batch ``x`` (numpy), batch means
  of the loss terms; the noise is derived from ``(seed, step)`` so a resumed run draws the same;
- ``eval_batch(x, index) -> dict`` batch means of recon, kl, neg_elbo, mmd with noise derived from
  ``index``, and the posterior ``mean`` and ``logvar`` (numpy) for the mutual information and active
  units (the MI kernels come from the backend's evaluation module, ``evaluation.metric_kernels``);
- ``decode(z) -> probs`` and ``reconstruct(x) -> probs`` (numpy) for pictures;
- ``save(step, meta)`` atomically and ``restore() -> meta | None`` from the newest complete checkpoint.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from vaecore import batching
from vaecore.config import ConfigError, RunConfig, atomic_write_text
from vaecore.metrics import MetricsWriter, progress_bar
from vaecore.mnist import load_mnist

EVAL_BATCH = 500
TERMS = ("recon", "kl", "mmd", "neg_elbo", "total")


class TrainingError(RuntimeError):
    """The run cannot go on (for example the loss became NaN); checkpoints on disk are kept."""


class Engine(Protocol):
    def train_step(self, x: np.ndarray, step: int) -> dict[str, float]: ...
    cfg: RunConfig

    def eval_batch(self, x: np.ndarray, index: int) -> dict: ...
    def decode(self, z: np.ndarray) -> np.ndarray: ...
    def reconstruct(self, x: np.ndarray) -> np.ndarray: ...
    def save(self, step: int, meta: dict) -> None: ...
    def restore(self) -> dict | None: ...


def has_checkpoint(workdir: Path) -> bool:
    ckpt = Path(workdir) / "checkpoints"
    return ckpt.is_dir() and any(not p.name.startswith(".") for p in ckpt.iterdir())


def check_finite(terms: dict[str, float], step: int, last_checkpoint: int, workdir: Path) -> None:
    """Raise ``TrainingError`` naming ``step`` and the last good checkpoint if a loss term is NaN/inf."""
    if not all(math.isfinite(v) for v in terms.values()):
        bad = {k: v for k, v in terms.items() if not math.isfinite(v)}
        raise TrainingError(f"non-finite loss at step {step} ({bad}); stopped. The last good checkpoint "
                            f"(step {last_checkpoint}) is kept in {Path(workdir) / 'checkpoints'}; try a lower --lr")


def evaluate(engine: Engine, images: np.ndarray, *, seed: int = 0) -> dict[str, float]:
    """Means over a binarised split of the loss terms, in nats per image, and how much the code is
    used: mutual information I(x; z) (aggregate posterior over batches of ``mi_batch_size``) and
    active units, as ``evaluate.py`` computes them (``vaecore.evaluation.latent_usage``)."""
    from vaecore.evaluation import latent_usage, metric_kernels

    sums = dict.fromkeys(("recon", "kl", "neg_elbo", "mmd"), 0.0)
    means, logvars = [], []
    for index, x in enumerate(batching.eval_batches(images, EVAL_BATCH)):
        out = engine.eval_batch(x, index)
        for k in sums:
            sums[k] += out[k] * len(x)
        means.append(out["mean"])
        logvars.append(out["logvar"])
    usage = latent_usage(metric_kernels(engine.cfg.backend), np.concatenate(means), np.concatenate(logvars),
                         seed=seed)
    return {**{k: v / len(images) for k, v in sums.items()},
            **{k: usage[k] for k in ("mi", "au", "mi_batch_size")}}


def train_and_evaluate(cfg: RunConfig, workdir: Path, engine_factory, *, resume: bool = False,
                       log=print) -> dict:
    """Train the image VAE described by ``cfg`` in ``workdir`` and write the run folder."""
    workdir = Path(workdir)
    data = load_mnist(cfg.data)
    workdir.mkdir(parents=True, exist_ok=True)
    tc = cfg.train
    fixed_train = batching.fixed_binarization(data.train) if tc.binarization == "fixed" else None
    valid = batching.fixed_binarization(data.valid)
    test = batching.fixed_binarization(data.test)
    per_epoch = batching.steps_per_epoch(len(data.train), tc.batch_size)
    total_steps = per_epoch * tc.epochs if tc.max_steps is None else tc.max_steps  # --max-steps overrides --epochs

    engine = engine_factory(cfg, workdir)
    start = 0
    if resume:
        meta = engine.restore()
        if meta is None:  # never start again silently: that would truncate the run's history
            raise ConfigError(f"--resume: {workdir / 'checkpoints'} holds no readable checkpoint (the run stopped "
                              f"before its first one, or every one is damaged); nothing was changed. Start the run "
                              f"again in a new --workdir")
        if meta is not None:
            start = int(meta["step"])
            log(f"resuming from the checkpoint at step {start}")
    cfg.save(workdir / "config.json")
    writer = MetricsWriter(workdir)
    writer.truncate_after(start)
    log(f"{cfg.backend}: {data.source}: {len(data.train)} train / {len(data.valid)} valid / {len(data.test)} test "
        f"images, {per_epoch} steps per epoch, {total_steps} steps")

    bar = progress_bar(total_steps, start, f"{cfg.backend} {cfg.model.kind} {cfg.loss.objective}")
    acc: dict[str, float] = {}
    acc_steps, t_last, last_ckpt = 0, time.perf_counter(), start
    train_time = 0.0
    try:
        for step in range(start, total_steps):
            x = batching.train_batch(data.train, seed=tc.seed, step=step, batch_size=tc.batch_size,
                                     binarization=tc.binarization, fixed=fixed_train)
            out = engine.train_step(x, step)
            check_finite(out, step + 1, last_ckpt, workdir)
            for k, v in out.items():
                acc[k] = acc.get(k, 0.0) + v
            acc_steps += 1
            done = step + 1
            if done % tc.log_every == 0 or done == total_steps:
                now = time.perf_counter()
                train_time += now - t_last
                ips = acc_steps * tc.batch_size / (now - t_last)
                means = {k: v / acc_steps for k, v in acc.items()}
                writer.write(done, "train", {**means, "images_per_s": ips, "epoch": done / per_epoch})
                bar.set_postfix(loss=f"{means['total']:.2f}", img_s=f"{ips:.0f}")
                acc, acc_steps, t_last = {}, 0, time.perf_counter()
            if done % per_epoch == 0:
                writer.write(done, "valid", {**evaluate(engine, valid, seed=tc.seed), "epoch": done // per_epoch})
                t_last = time.perf_counter()
            if done % tc.checkpoint_every == 0 or done == total_steps:
                engine.save(done, {"step": done, "epoch": done // per_epoch, "batch_index": done % per_epoch,
                                   "seed": tc.seed, "config": cfg.to_dict()})
                last_ckpt = done
                t_last = time.perf_counter()
            bar.update(1)
    finally:
        bar.close()

    results = {"split": "test", "step": total_steps, "epochs": total_steps / per_epoch,
               "units": "nats per image", **evaluate(engine, test, seed=tc.seed), "train_seconds_this_session": train_time,
               "data": data.source, "backend": cfg.backend}
    writer.write(total_steps, "test", {k: results[k] for k in ("recon", "kl", "mmd", "neg_elbo", "mi", "au")})
    writer.close()
    atomic_write_text(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    write_pictures(engine, test, workdir, latent_dim=cfg.model.latent_dim, seed=tc.seed)
    write_training_curves(workdir)
    return results


def write_training_curves(workdir: Path) -> None:
    """training_curves.png: every loss term, and the validation KL, MI and active units, against steps."""
    from vaecore.plots import save_training_curves
    from vaecore.report import read_jsonl

    save_training_curves(read_jsonl(Path(workdir) / "metrics.jsonl"), Path(workdir) / "training_curves.png")


def write_pictures(engine: Engine, test: np.ndarray, workdir: Path, *, latent_dim: int, seed: int) -> None:
    from vaecore.plots import save_image_grid

    z = np.random.default_rng([seed, 7]).standard_normal((64, latent_dim)).astype(np.float32)
    save_image_grid(engine.decode(z), workdir / "samples.png", ncols=8)
    originals = test[:32]
    recon = engine.reconstruct(originals)
    rows = np.concatenate([originals[:8], recon[:8], originals[8:16], recon[8:16],
                           originals[16:24], recon[16:24], originals[24:32], recon[24:32]])
    save_image_grid(rows, workdir / "reconstructions.png", ncols=8)


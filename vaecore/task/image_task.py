"""The image task (MNIST) for ``vaecore.runner.driver``: batches, evaluation, results and pictures.

Its engines (``jaxvae.train.JaxEngine``, ``torchvae.train.TorchEngine``) add to the ``Engine``
protocol ``decode(z) -> probs`` and ``reconstruct(x) -> probs`` (numpy) for the pictures.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vaecore import rng
from vaecore.data import batching
from vaecore.data.mnist import load_mnist
from vaecore.runs import rundir
from vaecore.settings.config import RunConfig

EVAL_BATCH = 500
SAMPLES = 64
# One engine call takes up to this many images' worth of steps (a power of two of steps, at most 64):
# the JAX engine runs them in one compiled loop, which at batch 20 removes a third of the step time.
IMAGES_PER_CALL = 4096
MAX_STEPS_PER_CALL = 64


def steps_per_call(batch_size: int) -> int:
    """How many steps one engine call takes: the largest power of two whose batches hold at most
    ``IMAGES_PER_CALL`` images, between 1 and ``MAX_STEPS_PER_CALL``."""
    steps = max(1, IMAGES_PER_CALL // batch_size)
    return min(MAX_STEPS_PER_CALL, 1 << (steps.bit_length() - 1))


def widest_layer(model) -> int:
    """The most floats per image in any layer of the image VAE (the 784 logits, a hidden layer, the
    maps of a convolution); ``model``: its ``ModelConfig``."""
    if model.kind == "conv":
        c1, c2 = model.conv_channels
        return max(784, c1 * 14 * 14, c2 * 7 * 7, model.conv_dense)
    return max(784, *model.hidden_sizes)


def check_whole_model(part: str, inner: int | None) -> None:
    """The image engines train encoder and decoder together (aggressive inference is a text mode)."""
    if part != "all" or inner is not None:
        raise ValueError(f"the image engines update the whole model (part 'all', no inner updates); got part "
                         f"{part!r}, inner {inner!r}")


def summarize(outs: list[tuple[int, dict]]) -> dict:
    """An image engine's ``evaluate``: from (batch size, batch means and posteriors) per batch, the
    per-image means of recon, kl, neg_elbo, mmd (the MMD a mean over batches weighted by size),
    ``examples`` and the posterior ``mean`` and ``logvar`` of every image."""
    sums = dict.fromkeys(("recon", "kl", "neg_elbo", "mmd"), 0.0)
    for n, out in outs:
        for k in sums:
            sums[k] += out[k] * n
    total = sum(n for n, _ in outs)
    return {**{k: v / total for k, v in sums.items()}, "examples": total,
            "mean": np.concatenate([o["mean"] for _, o in outs]), "logvar": np.concatenate([o["logvar"] for _, o in outs])}


def evaluate(engine, images: np.ndarray, *, kernels, seed: int = 0) -> dict[str, float]:
    """Means over a binarised split of the loss terms, in nats per image, and how much the code is
    used: mutual information I(x; z) (aggregate posterior over batches of ``mi_batch_size``) and
    active units, as ``evaluate.py`` computes them (``vaecore.scoring.evaluation.latent_usage``, with the
    backend's evaluation ``kernels``)."""
    from vaecore.scoring.evaluation import latent_usage

    out = engine.evaluate(batching.eval_batches(images, EVAL_BATCH))
    usage = latent_usage(kernels, out["mean"], out["logvar"], seed=seed)
    return {**{k: out[k] for k in ("recon", "kl", "neg_elbo", "mmd")},
            **{k: usage[k] for k in ("mi", "au", "mi_batch_size")}}


class ImageTask:
    """The image VAE on MNIST: no per-step schedule (KL weight ``LossConfig.kl_weight``, constant
    learning rate), dynamic or fixed binarisation, validation every epoch, pictures at the end."""

    unit = "images"

    def __init__(self, cfg: RunConfig, *, kernels, resume: bool = False):
        """``kernels``: the backend's evaluation module (``vaecore.scoring.evaluation.EvalBackend``)."""
        self.cfg, self.kernels = cfg, kernels
        self.data = load_mnist(cfg.data)
        tc = cfg.train
        self.fixed_train = batching.fixed_binarization(self.data.train) if tc.binarization == "fixed" else None
        self.valid = batching.fixed_binarization(self.data.valid)
        self.test_images = batching.fixed_binarization(self.data.test)
        self.per_epoch = batching.steps_per_epoch(len(self.data.train), tc.batch_size)
        width = widest_layer(cfg.model)
        batching.check_step_memory(cfg.loss.iw_samples, tc.batch_size, width, f"k x batch x {width} floats")
        self.total_steps = self.per_epoch * tc.epochs if tc.max_steps is None else tc.max_steps
        self.steps_per_call = steps_per_call(tc.batch_size)

    def describe(self) -> str:
        d = self.data
        return f"{d.source}: {len(d.train)} train / {len(d.valid)} valid / {len(d.test)} test images"

    def bar_label(self) -> str:
        return f"{self.cfg.backend} {self.cfg.model.kind} {self.cfg.loss.objective}"

    def prepare(self, workdir: Path) -> None:
        pass

    def batches(self, start: int) -> Iterator[np.ndarray]:
        tc = self.cfg.train
        for step in range(start, self.total_steps):
            yield batching.train_batch(self.data.train, seed=tc.seed, step=step, batch_size=tc.batch_size,
                                       binarization=tc.binarization, fixed=self.fixed_train)

    def resume(self, meta: dict) -> None:
        pass

    def state(self) -> dict:
        return {}

    def before_step(self, engine, step: int, log) -> tuple[float, float]:
        if self.cfg.train.lr_schedule == "burda":
            from vaecore.schedules import burda_lr_scale

            return self.cfg.loss.kl_weight, burda_lr_scale(step // self.per_epoch)
        return self.cfg.loss.kl_weight, 1.0

    def step(self, engine, batch, step: int, kl_weight: float, lr_scale: float, guard) -> dict[str, float]:
        return engine.train_step(batch, step, kl_weight, lr_scale)

    def steps(self, engine, batches: list, step: int, kl_weight: float, lr_scale: float) -> list[dict[str, float]]:
        """Several steps in one engine call (the KL weight is constant and the learning rate changes
        only between epochs, where a call ends)."""
        return engine.train_steps(np.stack(batches), step, kl_weight, lr_scale)

    def size(self, batch) -> int:
        return len(batch)

    count = size

    def log_record(self, sums, batch_sums, steps, units, seconds, kl_weight, lr_scale) -> tuple[dict, dict]:
        """The means of the terms since the last point, and images per second in the steps."""
        means, rate = {k: v / steps for k, v in sums.items()}, units / seconds
        lr = {} if self.cfg.train.lr_schedule == "constant" else {"lr": self.cfg.train.lr * lr_scale}
        return {**means, **lr, "images_per_s": rate}, {"loss": f"{means['total']:.2f}", "img_s": f"{rate:.0f}"}

    def validate(self, engine, epoch: int, writer, step: int, log) -> None:
        writer.write(step, "valid", {**evaluate(engine, self.valid, kernels=self.kernels, seed=self.cfg.train.seed), "epoch": epoch})

    def test(self, engine) -> tuple[dict, dict]:
        figures = evaluate(engine, self.test_images, kernels=self.kernels, seed=self.cfg.train.seed)
        results = {"units": "nats per image", **figures, "data": self.data.source}
        return results, {k: figures[k] for k in ("recon", "kl", "mmd", "neg_elbo", "mi", "au")}

    def outputs(self, engine, workdir: Path) -> None:
        write_pictures(engine, self.test_images, workdir, latent_dim=self.cfg.model.latent_dim,
                       seed=self.cfg.train.seed)


def write_pictures(engine, test: np.ndarray, workdir: Path, *, latent_dim: int, seed: int) -> None:
    """samples.png (decoded z ~ N(0, I)) and reconstructions.png (test images above their decoded
    posterior means)."""
    from vaecore.scoring.plots import save_image_grid

    z = rng.output_rng(seed, rng.SAMPLES).standard_normal((SAMPLES, latent_dim)).astype(np.float32)
    save_image_grid(engine.decode(z), workdir / rundir.SAMPLES_PNG, ncols=8)
    originals = test[:32]
    recon = engine.reconstruct(originals)
    rows = np.concatenate([originals[:8], recon[:8], originals[8:16], recon[8:16],
                           originals[16:24], recon[16:24], originals[24:32], recon[24:32]])
    save_image_grid(rows, workdir / rundir.RECONSTRUCTIONS_PNG, ncols=8)


def eval_split(cfg: RunConfig, *, split: str, data: str | None, limit: int | None
               ) -> tuple[np.ndarray, np.ndarray, str]:
    """``evaluate.py``'s split: the binarised images (as training evaluated them), their labels and
    the data source; ``data`` replaces the run's data location. Raises ``DataError``."""
    loaded = load_mnist(data if data is not None else cfg.data)
    images, labels = (loaded.test, loaded.test_labels) if split == "test" else (loaded.valid, loaded.valid_labels)
    images = batching.fixed_binarization(images)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return images, labels, loaded.source

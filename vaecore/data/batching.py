"""Seeded, resumable batching of image data.

Everything random here is a pure function of (seed, epoch, batch index), so a run resumed at
step ``s`` sees exactly the batches that an uninterrupted run would: the data position is the
step itself (``epoch = s // steps_per_epoch``, ``index = s % steps_per_epoch``).
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from vaecore.data.mnist import DataError
from vaecore.settings.config import ConfigError

EVAL_BINARIZATION_SEED = 0  # evaluation splits are binarised once, the same way for every run


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches per epoch (the incomplete last batch is dropped so shapes stay fixed)."""
    if n < batch_size:
        raise DataError(f"--batch-size {batch_size} is larger than the training set ({n} examples); "
                        f"lower --batch-size to {n} or less")
    return n // batch_size


# A step holds its largest tensor (the decoder's logits) several times over at once: the logits,
# their log-probabilities and their gradient.
STEP_COPIES = 3
FLOAT_BYTES = 4


def memory_bytes() -> int | None:
    """The machine's RAM in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_step_memory(iw_samples: int, batch_size: int, per_sample: int, what: str,
                      memory: int | None = None) -> None:
    """Refuse, before any training, a step whose largest tensor (``iw_samples`` x ``batch_size`` x
    ``per_sample`` float32s; ``what`` names its shape) cannot fit ``STEP_COPIES`` times into the
    machine's memory (``memory`` bytes; default its RAM): the allocation would fail mid-step with a
    traceback, or the machine would swap to a halt."""
    memory = memory_bytes() if memory is None else memory
    one = batch_size * per_sample * FLOAT_BYTES  # one posterior sample's share
    if memory is None or STEP_COPIES * iw_samples * one <= memory:
        return
    fits = memory // (STEP_COPIES * one)
    fix = (f"use --iw-samples {fits} or fewer" if fits >= 1 else f"lower --batch-size (k = 1 needs "
           f"{_size(STEP_COPIES * one)})")
    raise ConfigError(f"--iw-samples {iw_samples} with --batch-size {batch_size}: a training step's largest tensor "
                      f"({what}) is {_size(iw_samples * one)}, and a step holds it about {STEP_COPIES} times; this machine has "
                      f"{_size(memory)} of memory; {fix}")


def _size(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


@lru_cache(maxsize=2)
def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of the training set used in ``epoch`` (read-only; kept for the epoch's steps:
    drawing it costs more than a small batch's whole preparation)."""
    order = np.random.default_rng([seed, epoch, 0]).permutation(n)
    order.flags.writeable = False
    return order


def binarize(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One Bernoulli draw per pixel with probability equal to its grey level."""
    return (rng.random(images.shape, dtype=np.float32) < images).astype(np.float32)


def fixed_binarization(images: np.ndarray, seed: int = EVAL_BINARIZATION_SEED) -> np.ndarray:
    """A single binarisation of a whole split (the 'fixed' scheme, and every evaluation split)."""
    return binarize(images, np.random.default_rng([seed, 1]))


def train_batch(images: np.ndarray, *, seed: int, step: int, batch_size: int, binarization: str,
                fixed: np.ndarray | None = None) -> np.ndarray:
    """The training batch at global ``step``: ``[batch_size, 784]`` float32 in {0, 1}.

    ``binarization`` "dynamic" draws fresh Bernoulli pixels every time an image is seen (the
    standard for NLL comparisons); "fixed" takes them from ``fixed`` (binarised once).
    """
    per_epoch = steps_per_epoch(len(images), batch_size)
    epoch, index = divmod(step, per_epoch)
    rows = epoch_order(len(images), seed, epoch)[index * batch_size:(index + 1) * batch_size]
    if binarization == "fixed":
        return fixed[rows]
    return binarize(images[rows], np.random.default_rng([seed, epoch, index, 2]))


def eval_batches(images: np.ndarray, batch_size: int):
    """Consecutive slices of an (already binarised) evaluation split; the last may be smaller."""
    for start in range(0, len(images), batch_size):
        yield images[start:start + batch_size]

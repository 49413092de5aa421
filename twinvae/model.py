"""``Model``: a trained VAE (MNIST image VAE or sentence VAE) in one framework, numpy in and out.

Images are rows of 784 pixel intensities in [0, 1] ([N, 784]; binarised images for a likelihood),
sentences are strings of space-separated words (read with the run's vocabulary: unknown words are
``<unk>``, sentences cut at the run's ``--max-len``). The computations are the backends' own: the
evaluation adapters and kernels of ``evaluate.py`` (``<backend>vae.evaluation``) and the decoders of
``--sample`` (``<backend>vae.decoding``), so the figures equal theirs on the same weights and seeds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from twinvae import backends, portable
from vaecore import rng
from vaecore.data.text_data import TextDataset, Vocab
from vaecore.scoring import evaluation
from vaecore.settings.config import RunConfig
from vaecore.task import tasks
from vaecore.task.decoding import interpolation_path
from vaecore.task.text_outputs import DECODE_MAX_LEN

IMAGE_PIXELS = 784
BATCH_SIZE = 100  # examples per backend call (memory and speed only: results do not depend on it)


class Model:
    """A loaded model (``twinvae.load`` makes one). Every method is batched and deterministic: the
    same inputs, options and ``seed`` give the same outputs."""

    def __init__(self, config: dict, adapter: Any, backend: str, *, vocab: Vocab | None = None,
                 step: int | None = None, results: dict | None = None):
        self._config_dict = config
        self._config = RunConfig.from_dict(config)
        self._spec = tasks.task(self._config.task)  # what the methods need of the task (sentences: has_vocab)
        self._adapter, self._backend, self._vocab = adapter, backend, vocab
        self._step, self._results = step, results
        self._kernels = backends.module(backend, "evaluation")
        self._encode_fn = None

    # ------------------------------------------------------------------------------ properties
    @property
    def config(self) -> RunConfig:
        """The run's configuration (``config.backend`` is the framework that trained it)."""
        return self._config

    @property
    def backend(self) -> str:
        """The framework this handle computes with: "jax" or "torch"."""
        return self._backend

    @property
    def task(self) -> str:
        """"mnist" (image VAE) or "text" (sentence VAE)."""
        return self._config.task

    @property
    def latent_dim(self) -> int:
        return int(self._adapter.latent_dim)

    @property
    def step(self) -> int | None:
        """The training step of the weights (None when the export did not record it)."""
        return self._step

    @property
    def vocab(self) -> Vocab | None:
        """The vocabulary of a sentence VAE (None for images)."""
        return self._vocab

    def __repr__(self) -> str:
        return (f"twinvae.Model(task={self.task!r}, backend={self.backend!r}, trained_in="
                f"{self._config.backend!r}, latent_dim={self.latent_dim}, step={self._step})")

    # ------------------------------------------------------------------------------ inputs
    def _batches(self, x, batch_size: int) -> list:
        """Backend-ready batches of ``x`` in order: image rows, or ``TextBatch``es of sentences."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        if self._spec.has_vocab:
            ids = self._sentences(x)
            return [ids.make_batch(list(range(i, min(i + batch_size, len(ids))))) for i in range(0, len(ids), batch_size)]
        images = self._images(x)
        return [images[i:i + batch_size] for i in range(0, len(images), batch_size)]

    def _images(self, x) -> np.ndarray:
        images = np.asarray(x, np.float64)
        if images.ndim == 1:
            images = images[None]
        if images.ndim != 2 or images.shape[1] != IMAGE_PIXELS or len(images) == 0:
            raise ValueError(f"images must be [N, {IMAGE_PIXELS}] (rows of 28 x 28 pixels in [0, 1]); got shape "
                             f"{images.shape}")
        return images

    def _sentences(self, x) -> TextDataset:
        if isinstance(x, str) or not isinstance(x, Sequence) or not all(isinstance(s, str) for s in x) or not x:
            raise ValueError("sentences must be a non-empty list of strings (words separated by spaces)")
        return TextDataset([s.split() for s in x], self._vocab, self._config.text_train.max_len)

    def _no_grad(self):
        if self._backend == "torch":
            import torch

            return torch.no_grad()
        return contextlib.nullcontext()

    # ------------------------------------------------------------------------------ the model
    def encode(self, x, *, batch_size: int = BATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
        """The posterior q(z|x): images [N, 784] or N sentences -> (mean [N, D], log-variance [N, D])."""
        if self._encode_fn is None:
            self._encode_fn = self._adapter.encode
            if self._backend == "jax":
                import jax

                self._encode_fn = jax.jit(self._adapter.encode)
        means, logvars = [], []
        with self._no_grad():
            for batch in self._batches(x, batch_size):
                mean, logvar = self._encode_fn(self._adapter.prepare(batch))
                means.append(_numpy(mean))
                logvars.append(_numpy(logvar))
        return np.concatenate(means), np.concatenate(logvars)

    def decode(self, z, *, method: str = "greedy", max_len: int | None = None, beam_width: int = 5,
               temperature: float = 1.0, seed: int = 0, length_norm: float = 0.0,
               batch_size: int = BATCH_SIZE) -> np.ndarray | list[str]:
        """Latent codes z [N, D] -> images: Bernoulli means [N, 784] (float32); sentences: N strings.

        Text only: ``method`` "greedy", "beam" (``beam_width``, ``length_norm``) or "sample" (words drawn
        from softmax(logits / ``temperature``), the draws from ``seed``); at most ``max_len`` words
        (default: the run's ``--max-len``, else 50)."""
        z = np.asarray(z, np.float64)
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must be [N, latent_dim = {self.latent_dim}]; got shape {z.shape}")
        if not self._spec.has_vocab:
            if (method, max_len, beam_width, temperature, seed, length_norm) != ("greedy", None, 5, 1.0, 0, 0.0):
                raise ValueError("method, max_len, beam_width, temperature, seed and length_norm apply to sentence "
                                 "VAEs; an image VAE decodes z to its Bernoulli means")
            with self._no_grad():
                probs = [self._adapter.decode_probs(z[i:i + batch_size]) for i in range(0, len(z), batch_size)]
            return np.concatenate(probs) if probs else np.zeros((0, IMAGE_PIXELS), np.float32)
        ids = backends.module(self._backend, "decoding").decode(
            self._adapter.vae, z, max_len=self._max_len(max_len), **self._decoding(method, beam_width, temperature,
                                                                                  seed, length_norm))
        return [self._vocab.to_text(s) for s in ids]

    def _max_len(self, max_len: int | None) -> int:
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1; got {max_len}")
        return max_len or self._config.text_train.max_len or DECODE_MAX_LEN

    def _decoding(self, method: str, beam_width: int, temperature: float, seed: int, length_norm: float) -> dict:
        """The decoder options of ``method`` (``<backend>vae.decoding.decode``'s keywords)."""
        if method == "greedy":
            return {"method": method}
        if method == "beam":
            return {"method": method, "beam_width": beam_width, "length_norm": length_norm}
        if method == "sample":
            return {"method": method, "temperature": temperature, "seed": seed}
        raise ValueError(f"method must be 'greedy', 'beam' or 'sample'; got {method!r}")

    def reconstruct(self, x, **decode_options) -> np.ndarray | list[str]:
        """Decode the posterior means of x: images [N, 784] -> [N, 784] Bernoulli means; N sentences
        -> N strings (``decode``'s options; greedy by default)."""
        return self.decode(self.encode(x)[0], **decode_options)

    def sample(self, n: int, *, temperature: float = 1.0, seed: int = 0, method: str | None = None,
               **decode_options) -> np.ndarray | list[str]:
        """``n`` samples decoded from z ~ N(0, I), z drawn as the end of a run draws them
        (``vaecore.rng.output_rng(seed, SAMPLES)``: with the run's ``--seed`` they are the codes of its
        samples.png / samples.txt). Images: z scaled by ``temperature`` -> [n, 784] Bernoulli means.
        Text: ``method`` "sample" (default; softmax ``temperature``, draws from ``seed``), "greedy" or
        "beam" (then ``temperature`` must stay 1) -> n strings."""
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0; got {temperature}")
        z = rng.output_rng(seed, rng.SAMPLES).standard_normal((n, self.latent_dim))
        if not self._spec.has_vocab:
            if method is not None:
                raise ValueError("method applies to sentence VAEs; images are decoded to their Bernoulli means")
            return self.decode(temperature * z.astype(np.float32), **decode_options)
        method = method or "sample"
        if method != "sample" and temperature != 1.0:
            raise ValueError(f"temperature applies to method 'sample'; {method!r} decoding takes the best words")
        return self.decode(z, method=method, temperature=temperature, seed=seed, **decode_options)

    def interpolate(self, a, b, steps: int = 8, *, method: str = "greedy", max_len: int | None = None,
                    beam_width: int = 5, temperature: float = 1.0, seed: int = 0,
                    length_norm: float = 0.0) -> np.ndarray | list[str]:
        """Decodings of ``steps`` evenly spaced points from the posterior mean of ``a`` to that of ``b``
        (the homotopy, ends included). Images: a, b [784] -> [steps, 784] Bernoulli means; sentences:
        two strings -> ``steps`` strings (the decoding options as in ``decode``)."""
        if steps < 2:
            raise ValueError(f"steps must be >= 2; got {steps}")
        if not self._spec.has_vocab:
            mean = self.encode(np.stack([self._images(a)[0], self._images(b)[0]]))[0]
            return self.decode(interpolation_path(mean[0], mean[1], steps))
        batch = self._batches([a, b], 2)[0]
        ids = backends.module(self._backend, "decoding").interpolate(
            self._adapter.vae, batch.tokens, batch.lengths, steps=steps, max_len=self._max_len(max_len),
            **self._decoding(method, beam_width, temperature, seed, length_norm))
        return [self._vocab.to_text(s) for s in ids]

    def log_likelihood(self, x, k: int | None = None, *, seed: int = 0, batch_size: int = BATCH_SIZE,
                       chunk_rows: int | None = None) -> np.ndarray:
        """The importance-sampled estimate of log p(x) per example, in nats: images [N, 784] (binarised)
        or N sentences -> [N] float64. ``k`` samples each (default 5000 for images, 500 for text; 1 for a
        language model without a code), example i's drawn as ``evaluate.py`` draws them for the i-th
        example of a split (``vaecore.scoring.evaluation.importance_noise``): on the first N examples of a split
        (for text in ``evaluate.py``'s order, by length) ``-mean`` equals ``evaluate.py --limit N``'s nll."""
        k = self._spec.eval_k if k is None else k
        if k < 1:
            raise ValueError(f"k (importance samples) must be >= 1; got {k}")
        k = tasks.samples_needed(self._config, k)
        rows = chunk_rows or self._spec.chunk_rows
        out, first = [], 0
        for batch in self._batches(x, batch_size):
            size = evaluation.batch_length(batch)
            noise = evaluation.importance_noise(seed, first, size, self.latent_dim, k, max(1, min(k, rows // size)))
            out.append(self._kernels.importance_terms(self._adapter, self._adapter.prepare(batch), noise)["log_px"])
            first += size
        return np.concatenate(out)

    # ------------------------------------------------------------------------------ export
    def params(self) -> dict[str, np.ndarray]:
        """The canonical (framework-neutral) parameters: torch's names and layouts, numpy arrays."""
        return backends.canonical_params(self._adapter, self._backend)

    def export(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        """Write the portable model folder (``model.safetensors``, ``config.json``, ``vocab.json`` for
        text, ``results.json`` when known, ``README.md``); returns it. It loads in either backend."""
        return portable.write(Path(folder), self.params(), self._config_dict, vocab=self._vocab,
                              results=self._results, step=self._step, overwrite=overwrite)


def _numpy(a) -> np.ndarray:
    """A backend array as numpy (a torch tensor through the CPU)."""
    return a.detach().cpu().numpy() if hasattr(a, "detach") else np.asarray(a)


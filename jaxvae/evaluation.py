"""Evaluation kernels in JAX; the twin of ``torchvae/evaluation.py`` (the metrics are described in
``vaecore/scoring/evaluation.py``, which also holds the driver that runs these over a split).

Model adapters (``ImageModel``, ``TextModel``, or any object with ``latent_dim``, ``prepare``,
``encode`` and ``log_likelihood`` written in jax.numpy) turn a model into the latent-variable view
the metrics need. The per-chunk computation is jitted once per adapter (the adapter is a static
argument, hashed by identity; its weights are baked into the compiled function).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvae.losses import bernoulli_nll, gaussian_kl
from vaecore.runs import rundir
from vaecore.scoring import evaluation as core
from vaecore.settings.config import RunConfig
from vaecore.task import tasks

LOG_2PI = math.log(2 * math.pi)


def log_mean_exp(a: jax.Array, axis: int) -> jax.Array:
    """log(mean(exp(a))) along ``axis``, stable (``jax.nn.logsumexp``)."""
    return jax.nn.logsumexp(a, axis) - math.log(a.shape[axis])


def gaussian_log_density(z: jax.Array, mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """log N(z; mean, diag(exp(logvar))) summed over the last axis; the arguments broadcast.

    z, mean, logvar: [..., D] -> [...]."""
    return -0.5 * (((z - mean) ** 2) * jnp.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def standard_normal_log_density(z: jax.Array) -> jax.Array:
    """log N(z; 0, I) summed over the last axis: [..., D] -> [...]."""
    return -0.5 * (z * z + LOG_2PI).sum(-1)


@partial(jax.jit, static_argnums=0)
def _encode(model, x):
    mean, logvar = model.encode(x)
    return mean, logvar, gaussian_kl(mean, logvar)


@partial(jax.jit, static_argnums=0)
def _chunk(model, x, mean: jax.Array, logvar: jax.Array, eps: jax.Array):
    """One chunk of importance samples. eps: [k, B, D] -> (logsumexp_k log w [B], sum_k -log p(x|z) [B])."""
    z = mean + jnp.exp(0.5 * logvar) * eps
    log_px_z = model.log_likelihood(x, z)  # [k, B]
    # log q(z|x) at z = mean + sigma * eps, written with eps itself (exact, no (z - mean) / sigma)
    log_qz_x = -0.5 * (eps * eps + logvar + LOG_2PI).sum(-1)
    log_w = log_px_z + standard_normal_log_density(z) - log_qz_x
    return jax.nn.logsumexp(log_w, 0), -log_px_z.sum(0)


def importance_terms(model, x, eps_chunks: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-example terms of one batch ``x`` (as ``model.prepare`` returns it) from the importance
    samples z = mean + sigma * eps for each chunk ``eps`` [k_i, B, D] of ``eps_chunks`` (K = sum k_i).

    Returns numpy arrays: ``log_px`` [B] (logmeanexp_k log w_k, float64 across chunks), ``recon`` [B]
    (mean over the K samples of -log p(x|z)), ``kl`` [B] (analytic), ``mean``, ``logvar`` [B, D].
    With several devices the batch and its noise are split across them (``jaxvae.parallel``)."""
    shard = _sharder()
    if shard.devices > 1:
        x = jax.tree.map(lambda a: shard.rows(np.asarray(a)), x)
    mean, logvar, kl = _encode(model, x)
    lse, recon, k = None, None, 0
    for eps in eps_chunks:
        c_lse, c_recon = _chunk(model, x, mean, logvar, shard.rows(eps, mean.dtype, axis=1))
        c_lse, c_recon = np.asarray(c_lse, np.float64), np.asarray(c_recon, np.float64)
        lse = c_lse if lse is None else np.logaddexp(lse, c_lse)
        recon = c_recon if recon is None else recon + c_recon
        k += eps.shape[0]
    if k == 0:
        raise ValueError("importance_terms needs at least one importance sample")
    return {"log_px": lse - math.log(k), "recon": recon / k, "kl": np.asarray(kl, np.float64),
            "mean": np.asarray(mean), "logvar": np.asarray(logvar)}


_SHARDER = []


def _sharder():
    """The mesh over every device (made once, when first used)."""
    if not _SHARDER:
        from jaxvae.parallel import Sharder

        _SHARDER.append(Sharder())
    return _SHARDER[0]


@jax.jit
def _mutual_information(mean: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    d = mean.shape[1]
    neg_entropy = (-0.5 * d * LOG_2PI - 0.5 * (1.0 + logvar).sum(-1)).mean()
    z = mean + jnp.exp(0.5 * logvar) * eps
    log_density = gaussian_log_density(z[:, None, :], mean[None], logvar[None])  # [z_i, x_j]
    return neg_entropy - log_mean_exp(log_density, 1).mean()


def mutual_information(mean: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> float:
    """I(x; z) under q for one evaluation batch (Hoffman & Johnson; He et al. 2019's ``calc_mi``):
    E_x[-H(q(z|x))] - E_{x, z~q(z|x)}[log q(z)], with q(z) = (1/B) sum_j q(z|x_j) over the batch.

    mean, logvar, eps: [B, D] (z_i = mean_i + sigma_i * eps_i, one sample per example) -> nats."""
    mean_j = jnp.asarray(mean)
    return float(_mutual_information(mean_j, jnp.asarray(logvar), jnp.asarray(eps, mean_j.dtype)))


def evaluate_split(model, batches: Iterable[Any], **options) -> dict[str, Any]:
    """Every metric over a split with these kernels: ``vaecore.scoring.evaluation.evaluate_split``."""
    import sys

    return core.evaluate_split(sys.modules[__name__], model, batches, **options)


# ------------------------------------------------------------------------------------- adapters


class ImageModel:
    """The image VAE (``jaxvae.models.VAE``) as a latent-variable model with a Bernoulli decoder."""

    def __init__(self, vae: nnx.Module, latent_dim: int):
        self.vae = vae
        self.latent_dim = latent_dim
        self.dtype = vae.encoder.mean.kernel[...].dtype

    def prepare(self, batch: np.ndarray) -> jax.Array:
        return jnp.asarray(batch, self.dtype)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.vae.encode(x)

    def log_likelihood(self, x: jax.Array, z: jax.Array) -> jax.Array:
        """log p(x|z) for z: [k, B, D] and x: [B, 784] -> [k, B]."""
        k, b, d = z.shape
        logits = self.vae.decode(z.reshape(k * b, d)).reshape(k, b, -1)
        return -bernoulli_nll(logits, jnp.broadcast_to(x, logits.shape))

    def posterior_mean(self, images: np.ndarray) -> np.ndarray:
        """E_q[z|x] for images [N, 784] -> [N, D] (numpy)."""
        return np.asarray(_encode(self, self.prepare(images))[0], np.float32)

    def decode_probs(self, z: np.ndarray) -> np.ndarray:
        """Bernoulli means sigmoid(decode(z)) for z [N, D] -> [N, 784] (numpy)."""
        return np.asarray(jax.nn.sigmoid(self.vae.decode(jnp.asarray(z, self.dtype))), np.float32)


class TextModel:
    """The sentence VAE (``jaxvae.text_model.SentenceVAE``) as a latent-variable model; an
    example x is a sentence, log p(x|z) the teacher-forced token log-likelihood, <eos> included."""

    def __init__(self, vae: nnx.Module):
        vae.eval()
        self.vae = vae
        self.latent_dim = vae.config.latent_dim

    def prepare(self, batch) -> tuple[jax.Array, jax.Array]:
        return jnp.asarray(batch.tokens), jnp.asarray(batch.lengths)

    def encode(self, x: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
        return self.vae.encode(*x)

    def log_likelihood(self, x: tuple[jax.Array, jax.Array], z: jax.Array) -> jax.Array:
        """log p(tokens|z) for z: [k, B, D] -> [k, B]."""
        from jaxvae.text_model import tiled_token_nll

        tokens, lengths = x
        k, b, d = z.shape
        tokens_k, lengths_k = jnp.tile(tokens, (k, 1)), jnp.tile(lengths, k)
        states = self.vae.decoder_states(tokens_k[:, :-1], z.reshape(k * b, d))
        return -tiled_token_nll(self.vae, states, tokens_k, lengths_k).reshape(k, b)


@dataclass(frozen=True)
class Family:
    """What this backend holds for one model family (``vaecore.task.tasks.TaskSpec.family``): ``engine()``,
    the training engine class (``vaecore.runner.driver.Engine``); ``new_model(cfg, dtype)``, a freshly
    initialised model of ``cfg``'s architecture with parameters of ``dtype``; ``adapter(model, cfg)``,
    the model as the metrics see it (``ImageModel`` / ``TextModel``)."""

    engine: Callable[[], type]
    new_model: Callable[[RunConfig, Any], nnx.Module]
    adapter: Callable[[nnx.Module, RunConfig], Any]


def _image_engine() -> type:
    from jaxvae.train import JaxEngine

    return JaxEngine


def _text_engine() -> type:
    from jaxvae.text_train import JaxTextEngine

    return JaxTextEngine


def _new_image_vae(cfg: RunConfig, dtype) -> nnx.Module:
    from jaxvae.models import VAE

    model = VAE(cfg.model, rngs=nnx.Rngs(cfg.train.seed))
    # the engine trains in cfg.train.dtype; import_params keeps each parameter's dtype
    for kind in (nnx.Param, nnx.BatchStat):
        nnx.update(model, jax.tree.map(lambda a: a.astype(dtype), nnx.state(model, kind)))
    return model


def _new_sentence_vae(cfg: RunConfig, dtype) -> nnx.Module:
    from jaxvae.text_model import SentenceVAE

    return SentenceVAE(cfg.text, rngs=nnx.Rngs(cfg.train.seed), param_dtype=dtype)


FAMILIES = {
    "image": Family(_image_engine, _new_image_vae, lambda vae, cfg: ImageModel(vae, cfg.model.latent_dim)),
    "sentence": Family(_text_engine, _new_sentence_vae, lambda vae, cfg: TextModel(vae)),
}


def family(cfg: RunConfig) -> Family:
    """The model family of ``cfg``'s task."""
    return FAMILIES[tasks.task(cfg.task).family]


def load_model(cfg: RunConfig, workdir: Path, step: int | None = None):
    """The adapter (``ImageModel`` or ``TextModel``) of the run in ``workdir`` with its newest
    checkpoint (or ``step``'s), and that checkpoint's step, restored through the task's training engine
    (the engine reads the checkpoints it writes). Raises FileNotFoundError when there is none readable
    (or no checkpoint of ``step``)."""
    kind = family(cfg)
    engine = kind.engine()(cfg, Path(workdir), restoring=True)
    meta = engine.restore(step)
    if meta is None:
        raise FileNotFoundError(f"{workdir}: no readable checkpoint in {Path(workdir) / rundir.CHECKPOINTS}")
    return kind.adapter(engine.model(), cfg), int(meta["step"])

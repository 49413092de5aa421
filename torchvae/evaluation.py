"""Evaluation kernels in PyTorch; the twin of ``jaxvae/evaluation.py`` (the metrics are described in
``vaecore/scoring/evaluation.py``, which also holds the driver that runs these over a split).

Model adapters (``ImageModel``, ``TextModel``, or any object with ``latent_dim``, ``prepare``,
``encode`` and ``log_likelihood``) turn a model into the latent-variable view the metrics need.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchvae.losses import bernoulli_nll, gaussian_kl
from vaecore.runs import rundir
from vaecore.scoring import evaluation as core
from vaecore.settings.config import RunConfig
from vaecore.task import tasks

LOG_2PI = math.log(2 * math.pi)


def log_mean_exp(a: torch.Tensor, dim: int) -> torch.Tensor:
    """log(mean(exp(a))) along ``dim``, stable (``torch.logsumexp``)."""
    return torch.logsumexp(a, dim) - math.log(a.shape[dim])


def gaussian_log_density(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, diag(exp(logvar))) summed over the last axis; the arguments broadcast.

    z, mean, logvar: [..., D] -> [...]."""
    return -0.5 * (((z - mean) ** 2) * torch.exp(-logvar) + logvar + LOG_2PI).sum(-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last axis: [..., D] -> [...]."""
    return -0.5 * (z * z + LOG_2PI).sum(-1)


def _chunk(model, x, mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor):
    """One chunk of importance samples. eps: [k, B, D] -> (logsumexp_k log w [B], sum_k -log p(x|z) [B])."""
    z = mean + torch.exp(0.5 * logvar) * eps
    log_px_z = model.log_likelihood(x, z)  # [k, B]
    # log q(z|x) at z = mean + sigma * eps, written with eps itself (exact, no (z - mean) / sigma)
    log_qz_x = -0.5 * (eps * eps + logvar + LOG_2PI).sum(-1)
    log_w = log_px_z + standard_normal_log_density(z) - log_qz_x
    return torch.logsumexp(log_w, 0), -log_px_z.sum(0)


@torch.no_grad()
def importance_terms(model, x, eps_chunks: Iterable[np.ndarray]) -> dict[str, np.ndarray]:
    """Per-example terms of one batch ``x`` (as ``model.prepare`` returns it) from the importance
    samples z = mean + sigma * eps for each chunk ``eps`` [k_i, B, D] of ``eps_chunks`` (K = sum k_i).

    Returns numpy arrays: ``log_px`` [B] (logmeanexp_k log w_k, float64 across chunks), ``recon`` [B]
    (mean over the K samples of -log p(x|z)), ``kl`` [B] (analytic), ``mean``, ``logvar`` [B, D]."""
    mean, logvar = model.encode(x)
    lse, recon, k = None, None, 0
    for eps in eps_chunks:
        c_lse, c_recon = _chunk(model, x, mean, logvar, torch.as_tensor(eps, dtype=mean.dtype, device=mean.device))
        c_lse, c_recon = c_lse.double().cpu().numpy(), c_recon.double().cpu().numpy()
        lse = c_lse if lse is None else np.logaddexp(lse, c_lse)
        recon = c_recon if recon is None else recon + c_recon
        k += eps.shape[0]
    if k == 0:
        raise ValueError("importance_terms needs at least one importance sample")
    return {"log_px": lse - math.log(k), "recon": recon / k,
            "kl": gaussian_kl(mean, logvar).double().cpu().numpy(),
            "mean": mean.cpu().numpy(), "logvar": logvar.cpu().numpy()}


@torch.no_grad()
def mutual_information(mean: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> float:
    """I(x; z) under q for one evaluation batch (Hoffman & Johnson; He et al. 2019's ``calc_mi``):
    E_x[-H(q(z|x))] - E_{x, z~q(z|x)}[log q(z)], with q(z) = (1/B) sum_j q(z|x_j) over the batch.

    mean, logvar, eps: [B, D] (z_i = mean_i + sigma_i * eps_i, one sample per example) -> nats."""
    mean_t, logvar_t = torch.as_tensor(mean), torch.as_tensor(logvar)
    eps_t = torch.as_tensor(eps, dtype=mean_t.dtype)
    d = mean_t.shape[1]
    neg_entropy = (-0.5 * d * LOG_2PI - 0.5 * (1.0 + logvar_t).sum(-1)).mean()
    z = mean_t + torch.exp(0.5 * logvar_t) * eps_t
    log_density = gaussian_log_density(z[:, None, :], mean_t[None], logvar_t[None])  # [z_i, x_j]
    log_qz = log_mean_exp(log_density, 1)
    return float(neg_entropy - log_qz.mean())


def evaluate_split(model, batches: Iterable[Any], **options) -> dict[str, Any]:
    """Every metric over a split with these kernels: ``vaecore.scoring.evaluation.evaluate_split``."""
    import sys

    return core.evaluate_split(sys.modules[__name__], model, batches, **options)


# ------------------------------------------------------------------------------------- adapters


class ImageModel:
    """The image VAE (``torchvae.models.VAE``) as a latent-variable model with a Bernoulli decoder."""

    def __init__(self, vae: torch.nn.Module):
        self.vae = vae.eval()
        self.latent_dim = vae.cfg.latent_dim
        param = next(vae.parameters())
        self.dtype, self.device = param.dtype, param.device

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(batch), dtype=self.dtype, device=self.device)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode(x)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) for z: [k, B, D] and x: [B, 784] -> [k, B]."""
        k, b, d = z.shape
        logits = self.vae.decode(z.reshape(k * b, d)).reshape(k, b, -1)
        return -bernoulli_nll(logits, x.expand_as(logits))

    @torch.no_grad()
    def posterior_mean(self, images: np.ndarray) -> np.ndarray:
        """E_q[z|x] for images [N, 784] -> [N, D] (numpy)."""
        return self.vae.encode(self.prepare(images))[0].float().cpu().numpy()

    @torch.no_grad()
    def decode_probs(self, z: np.ndarray) -> np.ndarray:
        """Bernoulli means sigmoid(decode(z)) for z [N, D] -> [N, 784] (numpy)."""
        return torch.sigmoid(self.vae.decode(self.prepare(z))).float().cpu().numpy()


class TextModel:
    """The sentence VAE (``torchvae.text_model.SentenceVAE``) as a latent-variable model; an
    example x is a sentence, log p(x|z) the teacher-forced token log-likelihood, <eos> included."""

    def __init__(self, vae: torch.nn.Module):
        self.vae = vae.eval()
        self.latent_dim = vae.config.latent_dim
        param = next(vae.parameters())
        self.dtype, self.device = param.dtype, param.device

    def prepare(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.as_tensor(batch.tokens, device=self.device), torch.as_tensor(batch.lengths, device=self.device)

    def encode(self, x: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vae.encode(*x)

    def log_likelihood(self, x: tuple[torch.Tensor, torch.Tensor], z: torch.Tensor) -> torch.Tensor:
        """log p(tokens|z) for z: [k, B, D] -> [k, B]."""
        from torchvae.text_model import tiled_token_nll

        tokens, lengths = x
        k, b, d = z.shape
        tokens_k, lengths_k = tokens.repeat(k, 1), lengths.repeat(k)
        states = self.vae.decoder_states(tokens_k[:, :-1], z.reshape(k * b, d))
        return -tiled_token_nll(self.vae, states, tokens_k, lengths_k).reshape(k, b)


@dataclass(frozen=True)
class Family:
    """What this backend holds for one model family (``vaecore.task.tasks.TaskSpec.family``): ``engine()``,
    the training engine class (``vaecore.runner.driver.Engine``); ``new_model(cfg)``, a freshly initialised
    model of ``cfg``'s architecture (on the CPU, float32); ``adapter(model, cfg)``, the model as the
    metrics see it (``ImageModel`` / ``TextModel``)."""

    engine: Callable[[], type]
    new_model: Callable[[RunConfig], torch.nn.Module]
    adapter: Callable[[torch.nn.Module, RunConfig], Any]


def _image_engine() -> type:
    from torchvae.train import TorchEngine

    return TorchEngine


def _text_engine() -> type:
    from torchvae.text_train import TorchTextEngine

    return TorchTextEngine


def _new_image_vae(cfg: RunConfig) -> torch.nn.Module:
    from torchvae.models import VAE

    return VAE(cfg.model)


def _new_sentence_vae(cfg: RunConfig) -> torch.nn.Module:
    from torchvae.text_model import SentenceVAE

    return SentenceVAE(cfg.text)


FAMILIES = {
    "image": Family(_image_engine, _new_image_vae, lambda vae, cfg: ImageModel(vae)),
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

"""ELBO and InfoVAE objectives in PyTorch; the twin of ``jaxvae/losses.py``.

Each loss returns ``(loss, terms)``: the scalar batch mean that is optimised, and per-example
terms ``[batch]``: ``recon`` (-log p(x|z), summed over pixels), ``kl`` (analytic KL to N(0, I)),
``mmd`` (the batch's MMD, the same for every example), ``neg_elbo`` and ``total``.
"""

from __future__ import annotations

import math

import torch

from torchvae import parallel
from torchvae.mmd import mmd
from vaecore.config import LossConfig


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log Bernoulli(x | sigmoid(logits)) summed over the last axis, computed stably from logits.

    softplus(l) - l x: stable for any l, and its gradient sigmoid(l) - x is exact everywhere (the
    max(l, 0) + log1p(exp(-|l|)) form has a wrong subgradient at l = 0 exactly, which zero-initialised
    biases do hit). logits, x: [batch, d] -> [batch]."""
    return (torch.nn.functional.softplus(logits) - logits * x).sum(-1)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the latent axis: [batch, latent] -> [batch]."""
    return 0.5 * (torch.exp(logvar) + mean * mean - 1.0 - logvar).sum(-1)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mean + sigma * eps with explicit standard-normal ``eps`` [batch, latent]."""
    return mean + torch.exp(0.5 * logvar) * eps


def combine(recon: torch.Tensor, kl: torch.Tensor, z: torch.Tensor, prior_z: torch.Tensor | None,
            cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The objective from per-example ``recon`` and ``kl`` and the posterior samples ``z``.

    elbo: recon + kl_weight * kl.  mmd (InfoVAE): recon + kl_weight (1 - alpha) kl + (alpha + lam - 1) MMD(z, prior_z),
    where z are samples of q(z|x), so the encoder stays stochastic. In a data-parallel run ``z`` is
    this process's shard and ``prior_z`` the global batch's draws: the MMD is the global batch's."""
    if cfg.objective == "elbo":
        mmd_value = torch.zeros((), dtype=recon.dtype)
        total = recon + cfg.kl_weight * kl
    else:
        mmd_value = mmd(parallel.gather_rows(z), prior_z, kernel=cfg.kernel, bandwidth=cfg.bandwidth,
                        estimator=cfg.estimator)
        total = recon + cfg.kl_weight * (1.0 - cfg.alpha) * kl + (cfg.alpha + cfg.lam - 1.0) * mmd_value
    terms = {"recon": recon, "kl": kl, "mmd": mmd_value.expand_as(recon), "neg_elbo": recon + kl,
             "total": total}
    return total.mean(), terms


def iwae_loss(model, x: torch.Tensor, eps: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The importance-weighted bound (Burda et al. 2015) with k = eps.shape[0] samples of q(z|x):
    total = -(logsumexp_i log w_i - log k), log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x).
    With z = mean + sigma eps, log p(z) - log q(z|x) = sum_d (eps^2 - z^2 + logvar) / 2 (the 2 pi
    terms cancel). Terms per example: total, recon (mean over the k samples), the analytic kl, and
    neg_elbo = recon + kl. x: [batch, 784]; eps: [k, batch, latent]."""
    logits, mean, logvar, z = model(x, eps)  # z [k, B, D], logits [k, B, 784]
    k = z.shape[0]
    recon_k = bernoulli_nll(logits, x.expand(k, -1, -1))  # [k, B]
    log_w = -recon_k + 0.5 * (eps * eps - z * z + logvar).sum(-1)
    total = -(torch.logsumexp(log_w, 0) - math.log(k))
    recon, kl = recon_k.mean(0), gaussian_kl(mean, logvar)
    terms = {"recon": recon, "kl": kl, "mmd": torch.zeros_like(recon), "neg_elbo": recon + kl, "total": total}
    return total.mean(), terms


def vae_loss(model, x: torch.Tensor, eps: torch.Tensor, prior_z: torch.Tensor | None,
             cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """x: [batch, 784] in {0, 1}; eps, prior_z: [batch, latent] standard-normal draws (eps
    [k, batch, latent] for the objective "iwae")."""
    if cfg.objective == "iwae":
        return iwae_loss(model, x, eps)
    logits, mean, logvar, z = model(x, eps)  # through forward, so a DistributedDataParallel wrapper sees the step
    return combine(bernoulli_nll(logits, x), gaussian_kl(mean, logvar), z, prior_z, cfg)

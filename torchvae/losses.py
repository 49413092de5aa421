"""The image task's terms in PyTorch; the twin of ``jaxvae/losses.py``. The objectives themselves
(the ELBO, InfoVAE, the IWAE bound) are ``torchvae.objectives``, shared with the text task.

``vae_loss`` returns ``(loss, terms)``: the scalar batch mean that is optimised, and per-example
terms ``[batch]``: ``recon`` (-log p(x|z), summed over pixels), ``kl`` (analytic KL to N(0, I)),
``mmd`` (the batch's MMD, the same for every example), ``neg_elbo`` and ``total``.
"""

from __future__ import annotations

import torch

from torchvae.objectives import PerExample, objective
from vaecore.settings.config import LossConfig
from vaecore.settings.objectives import Weights


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log Bernoulli(x | sigmoid(logits)) summed over the last axis, computed stably from logits.

    softplus(l) - l x: stable for any l, and its gradient sigmoid(l) - x is exact everywhere (the
    max(l, 0) + log1p(exp(-|l|)) form has a wrong subgradient at l = 0 exactly, which zero-initialised
    biases do hit). logits, x: [batch, d] -> [batch] (x broadcasts against logits)."""
    return (torch.nn.functional.softplus(logits) - logits * x).sum(-1)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the latent axis: [batch, latent] -> [batch]."""
    return 0.5 * (torch.exp(logvar) + mean * mean - 1.0 - logvar).sum(-1)


def reparameterize(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = mean + sigma * eps with explicit standard-normal ``eps`` [batch, latent] (or [k, batch, latent])."""
    return mean + torch.exp(0.5 * logvar) * eps


def with_neg_elbo(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image task also reports neg_elbo = recon + kl per example (before ``total``, the order its
    metrics are written in)."""
    return {**{k: terms[k] for k in ("recon", "kl", "mmd")}, "neg_elbo": terms["recon"] + terms["kl"],
            "total": terms["total"]}


def vae_loss(model, x: torch.Tensor, eps: torch.Tensor, prior_z: torch.Tensor | None,
             cfg: LossConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """x: [batch, 784] in {0, 1}; eps: [batch, latent] standard-normal draws, or [k, batch, latent]
    for k importance samples (``vaecore.settings.objectives.noise_shape``); prior_z: [batch, latent] (InfoVAE).
    In a data-parallel run x and eps are this process's rows and prior_z the global batch's draws."""
    logits, mean, logvar, z = model(x, eps)  # through forward, so a DistributedDataParallel wrapper sees the step
    recon, kl = bernoulli_nll(logits, x.expand_as(logits)), gaussian_kl(mean, logvar)
    loss, terms = objective(cfg.objective, PerExample(recon, kl, kl, z, eps, logvar), Weights.of(cfg, prior_z))
    return loss, with_neg_elbo(terms)

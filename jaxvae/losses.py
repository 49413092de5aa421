"""The image task's terms in JAX; the twin of ``torchvae/losses.py``. The objectives themselves
(the ELBO, InfoVAE, the IWAE bound) are ``jaxvae.objectives``, shared with the text task.

``vae_loss`` returns ``(loss, terms)``: the scalar batch mean that is optimised, and per-example
terms ``[batch]``: ``recon`` (-log p(x|z), summed over pixels), ``kl`` (analytic KL to N(0, I)),
``mmd`` (the batch's MMD, the same for every example), ``neg_elbo`` and ``total``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvae.objectives import PerExample, objective
from vaecore.settings.config import LossConfig
from vaecore.settings.objectives import Weights


def bernoulli_nll(logits: jax.Array, x: jax.Array) -> jax.Array:
    """-log Bernoulli(x | sigmoid(logits)) summed over the last axis, computed stably from logits.

    softplus(l) - l x: stable for any l, and its gradient sigmoid(l) - x is exact everywhere (the
    max(l, 0) + log1p(exp(-|l|)) form has a wrong subgradient at l = 0 exactly, which zero-initialised
    biases do hit). logits, x: [batch, d] -> [batch] (x broadcasts against logits)."""
    return (jax.nn.softplus(logits) - logits * x).sum(-1)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the latent axis: [batch, latent] -> [batch]."""
    return 0.5 * (jnp.exp(logvar) + mean * mean - 1.0 - logvar).sum(-1)


def reparameterize(mean: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    """z = mean + sigma * eps with explicit standard-normal ``eps`` [batch, latent] (or [k, batch, latent])."""
    return mean + jnp.exp(0.5 * logvar) * eps


def with_neg_elbo(terms: dict[str, jax.Array]) -> dict[str, jax.Array]:
    """The image task also reports neg_elbo = recon + kl per example (before ``total``, the order its
    metrics are written in)."""
    return {**{k: terms[k] for k in ("recon", "kl", "mmd")}, "neg_elbo": terms["recon"] + terms["kl"],
            "total": terms["total"]}


def vae_loss(model, x: jax.Array, eps: jax.Array, prior_z: jax.Array | None,
             cfg: LossConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    """x: [batch, 784] in {0, 1}; eps: [batch, latent] standard-normal draws, or [k, batch, latent]
    for k importance samples (``vaecore.settings.objectives.noise_shape``); prior_z: [batch, latent] (InfoVAE)."""
    mean, logvar = model.encode(x)
    z = reparameterize(mean, logvar, eps)
    logits = model.decode(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], -1)
    recon, kl = bernoulli_nll(logits, x), gaussian_kl(mean, logvar)
    terms = PerExample(recon, kl, kl, z, eps, logvar)
    loss, out = objective(cfg.objective, terms, Weights.of(cfg, prior_z))
    return loss, with_neg_elbo(out)

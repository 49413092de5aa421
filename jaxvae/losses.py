"""ELBO and InfoVAE objectives in JAX; the twin of ``torchvae/losses.py``.

Each loss returns ``(loss, terms)``: the scalar batch mean that is optimised, and per-example
terms ``[batch]``: ``recon`` (-log p(x|z), summed over pixels), ``kl`` (analytic KL to N(0, I)),
``mmd`` (the batch's MMD, the same for every example), ``neg_elbo`` and ``total``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxvae.mmd import mmd
from vaecore.config import LossConfig


def bernoulli_nll(logits: jax.Array, x: jax.Array) -> jax.Array:
    """-log Bernoulli(x | sigmoid(logits)) summed over the last axis, computed stably from logits.

    softplus(l) - l x: stable for any l, and its gradient sigmoid(l) - x is exact everywhere (the
    max(l, 0) + log1p(exp(-|l|)) form has a wrong subgradient at l = 0 exactly, which zero-initialised
    biases do hit). logits, x: [batch, d] -> [batch]."""
    return (jax.nn.softplus(logits) - logits * x).sum(-1)


def gaussian_kl(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, I)) summed over the latent axis: [batch, latent] -> [batch]."""
    return 0.5 * (jnp.exp(logvar) + mean * mean - 1.0 - logvar).sum(-1)


def reparameterize(mean: jax.Array, logvar: jax.Array, eps: jax.Array) -> jax.Array:
    """z = mean + sigma * eps with explicit standard-normal ``eps`` [batch, latent]."""
    return mean + jnp.exp(0.5 * logvar) * eps


def combine(recon: jax.Array, kl: jax.Array, z: jax.Array, prior_z: jax.Array | None,
            cfg: LossConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The objective from per-example ``recon`` and ``kl`` and the posterior samples ``z``.

    elbo: recon + kl_weight * kl.  mmd (InfoVAE): recon + kl_weight (1 - alpha) kl + (alpha + lam - 1) MMD(z, prior_z),
    where z are samples of q(z|x), so the encoder stays stochastic."""
    if cfg.objective == "elbo":
        mmd_value = jnp.zeros((), recon.dtype)
        total = recon + cfg.kl_weight * kl
    else:
        mmd_value = mmd(z, prior_z, kernel=cfg.kernel, bandwidth=cfg.bandwidth, estimator=cfg.estimator)
        total = recon + cfg.kl_weight * (1.0 - cfg.alpha) * kl + (cfg.alpha + cfg.lam - 1.0) * mmd_value
    terms = {"recon": recon, "kl": kl, "mmd": jnp.broadcast_to(mmd_value, recon.shape), "neg_elbo": recon + kl,
             "total": total}
    return total.mean(), terms


def iwae_loss(model, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The importance-weighted bound (Burda et al. 2015) with k = eps.shape[0] samples of q(z|x);
    see ``torchvae.losses.iwae_loss``. x: [batch, 784]; eps: [k, batch, latent]."""
    mean, logvar = model.encode(x)
    z = mean + jnp.exp(0.5 * logvar) * eps  # [k, B, D]
    k, b, d = z.shape
    recon_k = bernoulli_nll(model.decode(z.reshape(k * b, d)).reshape(k, b, -1), x[None])  # [k, B]
    log_w = -recon_k + 0.5 * (eps * eps - z * z + logvar).sum(-1)
    total = -(jax.nn.logsumexp(log_w, axis=0) - math.log(k))
    recon, kl = recon_k.mean(0), gaussian_kl(mean, logvar)
    terms = {"recon": recon, "kl": kl, "mmd": jnp.zeros_like(recon), "neg_elbo": recon + kl, "total": total}
    return total.mean(), terms


def vae_loss(model, x: jax.Array, eps: jax.Array, prior_z: jax.Array | None,
             cfg: LossConfig) -> tuple[jax.Array, dict[str, jax.Array]]:
    """x: [batch, 784] in {0, 1}; eps, prior_z: [batch, latent] standard-normal draws (eps
    [k, batch, latent] for the objective "iwae")."""
    if cfg.objective == "iwae":
        return iwae_loss(model, x, eps)
    mean, logvar = model.encode(x)
    z = reparameterize(mean, logvar, eps)
    logits = model.decode(z)
    return combine(bernoulli_nll(logits, x), gaussian_kl(mean, logvar), z, prior_z, cfg)

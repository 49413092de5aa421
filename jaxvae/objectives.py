"""The objectives in JAX, each written once and used by both tasks; the twin of ``torchvae/objectives.py``.

A task turns its model's outputs into per-example terms (``PerExample``): the image task
-log Bernoulli summed over pixels and the analytic KL; the text task the token log-likelihoods
summed per sentence and the KL as its remedies shape it (free bits, and the KL weight of its
schedule in ``Weights``). ``objective(name, terms, weights)`` -> ``(loss, terms)``: the scalar batch
mean that is optimised and the per-example terms [batch] ``recon``, ``kl``, ``mmd`` (the batch's MMD,
the same for every example; 0 where none) and ``total``. How many posterior samples an objective
reads, and whether it needs prior samples, is ``vaecore.settings.objectives``, which every engine asks.

A new objective is one function per backend (here and in the twin, entered in ``OBJECTIVES``)
plus its option declarations (its name in ``vaecore.settings.config.LOSSES``, its flags; when it reads
several posterior samples or prior samples, ``vaecore.settings.objectives``); no task or engine changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvae.mmd import mmd
from vaecore.settings.objectives import Weights

Loss = tuple[jax.Array, dict[str, jax.Array]]


class PerExample(NamedTuple):
    """A task's per-example terms. With k importance samples (``vaecore.settings.objectives.importance_samples``)
    ``recon`` is [k, batch] and ``z``, ``eps`` are [k, batch, latent]; else [batch] and [batch, latent]."""

    recon: jax.Array  # -log p(x | z), summed over pixels or tokens
    kl: jax.Array  # [batch]: the analytic KL(q(z|x) || N(0, I)), as reported
    kl_term: jax.Array  # [batch]: the KL that the objective weighs (the text task's free bits), else ``kl``
    z: jax.Array  # samples of q(z|x): z = mean + exp(logvar / 2) * eps
    eps: jax.Array  # their standard-normal noise
    logvar: jax.Array  # [batch, latent]


def _result(recon: jax.Array, kl: jax.Array, mmd_value: jax.Array | None, total: jax.Array) -> Loss:
    """(the batch mean of ``total``, the terms); ``mmd_value`` None: an objective without an MMD (0)."""
    if mmd_value is None:
        mmd_value = jnp.zeros((), recon.dtype)
    terms = {"recon": recon, "kl": kl, "mmd": jnp.broadcast_to(mmd_value, recon.shape), "total": total}
    return total.mean(), terms


def elbo(t: PerExample, w: Weights) -> Loss:
    """The negative ELBO: recon + kl_weight * KL."""
    return _result(t.recon, t.kl, None, t.recon + w.kl_weight * t.kl_term)


def infovae(t: PerExample, w: Weights) -> Loss:
    """InfoVAE (Zhao et al. 2017): recon + kl_weight (1 - alpha) KL + (alpha + lam - 1) MMD(q(z), p(z)),
    the MMD between the batch's z, samples of q(z|x) (so the encoder stays stochastic), and ``w.prior_z``."""
    if w.prior_z is None:
        raise ValueError("objective 'mmd' needs prior_z, samples of the prior [M, latent]")
    mmd_value = mmd(t.z, w.prior_z, **w.mmd)
    total = t.recon + w.kl_weight * (1.0 - w.alpha) * t.kl_term + (w.alpha + w.lam - 1.0) * mmd_value
    return _result(t.recon, t.kl, mmd_value, total)


def iwae(t: PerExample, w: Weights) -> Loss:
    """The importance-weighted bound (Burda et al. 2015) over the k = recon.shape[0] samples:
    total = -(logsumexp_i log w_i - log k), log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x). With
    z = mean + sigma eps, log p(z) - log q(z|x) = sum_d (eps^2 - z^2 + logvar) / 2 (the 2 pi terms
    cancel). ``recon`` is reported as the mean over the k samples; ``w`` is not read."""
    del w
    if t.z.ndim != 3:
        raise ValueError(f"objective 'iwae' needs k samples per example, z [k, batch, latent]; "
                         f"got {tuple(t.z.shape)}")
    k = t.recon.shape[0]
    log_w = -t.recon + 0.5 * (t.eps * t.eps - t.z * t.z + t.logvar).sum(-1)
    total = -(jax.nn.logsumexp(log_w, axis=0) - math.log(k))
    recon = t.recon.mean(0)
    return _result(recon, t.kl, None, total)


OBJECTIVES: dict[str, Callable[[PerExample, Weights], Loss]] = {"elbo": elbo, "mmd": infovae, "iwae": iwae}


def objective(name: str, terms: PerExample, weights: Weights) -> Loss:
    """The objective ``name`` (``vaecore.settings.config.LOSSES``) of a task's per-example terms."""
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {list(OBJECTIVES)}, got {name!r}")
    return OBJECTIVES[name](terms, weights)

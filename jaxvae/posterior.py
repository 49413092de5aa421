"""Posterior heads of the collapse remedies in JAX / Flax NNX; the twin of ``torchvae/posterior.py``.

``PosteriorHead`` maps the encoder's raw ``(mean_raw, logvar_raw)`` [B, D] to the posterior
``(mean, logvar)``: the delta-VAE's bounded variance and the BN-VAE's batch-normalised means
(``vaecore.posterior`` has the definitions), or, for the language-model baseline, the prior itself
(mean 0, logvar 0 for every input). The running averages of the BN-VAE are ``nnx.BatchStat``
variables, updated in training mode (``use_running_average`` False, set by ``model.train()``) and
used in evaluation mode (``model.eval()``), like ``nnx.BatchNorm`` but in torch's convention.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vaecore.posterior import BN_EPS, BN_MOMENTUM, delta_logvar_bounds


class MeanBatchNorm(nnx.Module):
    """Batch normalisation of the posterior means with a fixed scale ``gamma`` and a learned shift
    ``bias`` (beta); running averages ``running_mean``, ``running_var`` in evaluation."""

    def __init__(self, latent_dim: int, gamma: float, *, param_dtype=jnp.float32):
        self.gamma = gamma
        self.bias = nnx.Param(jnp.zeros((latent_dim,), param_dtype))
        self.running_mean = nnx.BatchStat(jnp.zeros((latent_dim,), param_dtype))
        self.running_var = nnx.BatchStat(jnp.ones((latent_dim,), param_dtype))
        self.use_running_average = False

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [B, D] -> [B, D]."""
        if self.use_running_average:
            mean, var = self.running_mean[...], self.running_var[...]
        else:
            mean, var = jnp.mean(x, axis=0), jnp.var(x, axis=0)
            n = x.shape[0]
            self.running_mean[...] = ((1 - BN_MOMENTUM) * self.running_mean[...]
                                      + BN_MOMENTUM * jax.lax.stop_gradient(mean))
            self.running_var[...] = ((1 - BN_MOMENTUM) * self.running_var[...]
                                     + BN_MOMENTUM * jax.lax.stop_gradient(var) * n / max(n - 1, 1))
        return self.gamma * (x - mean) / jnp.sqrt(var + BN_EPS) + self.bias[...]


class PosteriorHead(nnx.Module):
    def __init__(self, latent_dim: int, *, delta_rate: float = 0.0, bn_gamma: float = 0.0,
                 use_latent: bool = True, param_dtype=jnp.float32):
        self.use_latent = use_latent
        self.logvar_bounds = delta_logvar_bounds(delta_rate) if delta_rate > 0 else None
        self.mean_bn = MeanBatchNorm(latent_dim, bn_gamma, param_dtype=param_dtype) if bn_gamma > 0 else None

    def __call__(self, mean_raw: jax.Array, logvar_raw: jax.Array) -> tuple[jax.Array, jax.Array]:
        if not self.use_latent:
            return jnp.zeros_like(mean_raw), jnp.zeros_like(logvar_raw)
        mean, logvar = mean_raw, logvar_raw
        if self.logvar_bounds is not None:
            lo, hi = self.logvar_bounds
            logvar = lo + (hi - lo) * jax.nn.sigmoid(logvar_raw)
        if self.mean_bn is not None:
            mean = self.mean_bn(mean_raw)
        return mean, logvar

"""Posterior heads of the collapse remedies in PyTorch; the twin of ``jaxvae/posterior.py``.

``PosteriorHead`` maps the encoder's raw ``(mean_raw, logvar_raw)`` [B, D] to the posterior
``(mean, logvar)``: the delta-VAE's bounded variance and the BN-VAE's batch-normalised means
(``vaecore.posterior`` has the definitions), or, for the language-model baseline, the prior itself
(mean 0, logvar 0 for every input, so KL = 0 and q(z|x) = p(z)). With none of them it is the identity
and holds no parameters, so models without a remedy keep their canonical parameters.
"""

from __future__ import annotations

import torch
from torch import nn

from torchvae import parallel
from vaecore.posterior import BN_EPS, BN_MOMENTUM, delta_logvar_bounds


class MeanBatchNorm(nn.Module):
    """Batch normalisation of the posterior means with a fixed scale ``gamma`` and a learned shift
    ``bias`` (beta); running averages ``running_mean``, ``running_var`` (buffers) in evaluation."""

    def __init__(self, latent_dim: int, gamma: float):
        super().__init__()
        self.gamma = gamma
        self.bias = nn.Parameter(torch.zeros(latent_dim))
        self.register_buffer("running_mean", torch.zeros(latent_dim))
        self.register_buffer("running_var", torch.ones(latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, D] -> [B, D]."""
        if self.training:
            if parallel.active():  # the global batch's statistics (``torchvae.parallel``)
                n = parallel.global_rows(x.shape[0])
                mean = parallel.global_sum(x.sum(0)) / n
                var = parallel.global_sum(((x - mean) ** 2).sum(0)) / n
            else:
                n, mean, var = x.shape[0], x.mean(0), x.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.mul_(1 - BN_MOMENTUM).add_(BN_MOMENTUM * mean.detach())
                self.running_var.mul_(1 - BN_MOMENTUM).add_(BN_MOMENTUM * var.detach() * n / max(n - 1, 1))
        else:
            mean, var = self.running_mean, self.running_var
        return self.gamma * (x - mean) / torch.sqrt(var + BN_EPS) + self.bias


class PosteriorHead(nn.Module):
    def __init__(self, latent_dim: int, *, delta_rate: float = 0.0, bn_gamma: float = 0.0,
                 use_latent: bool = True):
        super().__init__()
        self.use_latent = use_latent
        self.logvar_bounds = delta_logvar_bounds(delta_rate) if delta_rate > 0 else None
        self.mean_bn = MeanBatchNorm(latent_dim, bn_gamma) if bn_gamma > 0 else None

    def forward(self, mean_raw: torch.Tensor, logvar_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.use_latent:
            return torch.zeros_like(mean_raw), torch.zeros_like(logvar_raw)
        mean, logvar = mean_raw, logvar_raw
        if self.logvar_bounds is not None:
            lo, hi = self.logvar_bounds
            logvar = lo + (hi - lo) * torch.sigmoid(logvar_raw)
        if self.mean_bn is not None:
            mean = self.mean_bn(mean_raw)
        return mean, logvar

"""Image VAE (MLP and convolutional) in PyTorch; the twin of ``jaxvae/models.py``.

Attribute names are the canonical parameter names (see ``torchvae/params.py``), so
``export_params`` of this model and of the JAX twin produce the same keys and shapes.
Images are flat ``[batch, 784]``; the decoder returns Bernoulli logits ``[batch, 784]``.
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from torchvae.posterior import PosteriorHead
from vaecore.settings.config import ImageModelConfig

# Flax's default initialiser (lecun_normal: a normal truncated at two standard deviations,
# rescaled to standard deviation 1/sqrt(fan_in)) and zero biases, so both backends start from
# the same distribution. 0.8796... is the standard deviation of a unit normal truncated at +-2.
TRUNCATED_STD = 0.87962566103423978


def lecun_normal_(weight: torch.Tensor, fan_in: float) -> None:
    std = (1.0 / fan_in) ** 0.5 / TRUNCATED_STD
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


def init_like_flax(module: nn.Module) -> None:
    """Re-initialise dense and convolution layers as Flax does (transposed convolutions: fan_in is
    the number of inputs each output sees, in_channels * k * k / stride^2)."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            lecun_normal_(m.weight, m.in_features)
        elif isinstance(m, nn.Conv2d):
            lecun_normal_(m.weight, m.in_channels * m.kernel_size[0] * m.kernel_size[1])
        elif isinstance(m, nn.ConvTranspose2d):
            lecun_normal_(m.weight, m.in_channels * m.kernel_size[0] * m.kernel_size[1] / m.stride[0] ** 2)
        else:
            continue
        nn.init.zeros_(m.bias)

ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh}  # the MLP's hidden layers
IMAGE_SIDE = 28
IMAGE_DIM = IMAGE_SIDE * IMAGE_SIDE


class MLPEncoder(nn.Module):
    def __init__(self, cfg: ImageModelConfig):
        super().__init__()
        sizes = (IMAGE_DIM, *cfg.hidden_sizes)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.mean = nn.Linear(sizes[-1], cfg.latent_dim)
        self.logvar = nn.Linear(sizes[-1], cfg.latent_dim)
        self.activation = ACTIVATIONS[cfg.activation]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: [batch, 784] -> (mean, logvar): [batch, latent]."""
        h = x
        for layer in self.layers:
            h = self.activation(layer(h))
        return self.mean(h), self.logvar(h)


class MLPDecoder(nn.Module):
    def __init__(self, cfg: ImageModelConfig):
        super().__init__()
        sizes = (cfg.latent_dim, *reversed(cfg.hidden_sizes))
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        self.out = nn.Linear(sizes[-1], IMAGE_DIM)
        self.activation = ACTIVATIONS[cfg.activation]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z: [batch, latent] -> logits [batch, 784]."""
        h = z
        for layer in self.layers:
            h = self.activation(layer(h))
        return self.out(h)


class ConvEncoder(nn.Module):
    """28x28 -> conv 4x4/2 -> 14x14 -> conv 4x4/2 -> 7x7 -> dense -> (mean, logvar)."""

    def __init__(self, cfg: ImageModelConfig):
        super().__init__()
        c1, c2 = cfg.conv_channels
        self.conv1 = nn.Conv2d(1, c1, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 4, stride=2, padding=1)
        self.dense = nn.Linear(c2 * 7 * 7, cfg.conv_dense)
        self.mean = nn.Linear(cfg.conv_dense, cfg.latent_dim)
        self.logvar = nn.Linear(cfg.conv_dense, cfg.latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE)
        h = torch.relu(self.conv1(h))
        h = torch.relu(self.conv2(h))
        h = torch.relu(self.dense(h.flatten(1)))  # flattened in (channel, row, col) order
        return self.mean(h), self.logvar(h)


class ConvDecoder(nn.Module):
    """The encoder mirrored: dense -> dense to 7x7 maps -> two 4x4/2 transposed convolutions."""

    def __init__(self, cfg: ImageModelConfig):
        super().__init__()
        c1, c2 = cfg.conv_channels
        self.c2 = c2
        self.dense = nn.Linear(cfg.latent_dim, cfg.conv_dense)
        self.dense2 = nn.Linear(cfg.conv_dense, c2 * 7 * 7)
        self.deconv1 = nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1)
        self.deconv2 = nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.dense(z))
        h = torch.relu(self.dense2(h)).reshape(-1, self.c2, 7, 7)
        h = torch.relu(self.deconv1(h))
        return self.deconv2(h).flatten(1)


class VAE(nn.Module):
    """Gaussian encoder q(z|x) = N(mean, exp(logvar)) and Bernoulli decoder p(x|z) from logits."""

    def __init__(self, cfg: ImageModelConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.kind == "mlp":
            self.encoder, self.decoder = MLPEncoder(cfg), MLPDecoder(cfg)
        else:
            self.encoder, self.decoder = ConvEncoder(cfg), ConvDecoder(cfg)
        # the delta-VAE's variance bounds and the BN-VAE's normalised means (identity when both are off)
        self.posterior = PosteriorHead(cfg.latent_dim, delta_rate=cfg.delta_rate, bn_gamma=cfg.bn_gamma)
        init_like_flax(self)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.posterior(*self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor, eps: torch.Tensor):
        """x [B, 784], eps [..., B, latent] -> (logits [..., B, 784], mean, logvar [B, latent], z [..., B, latent])
        with z = mean + exp(logvar / 2) * eps (eps [k, B, latent]: k samples per image)."""
        mean, logvar = self.encode(x)
        z = mean + torch.exp(0.5 * logvar) * eps
        logits = self.decode(z.reshape(-1, z.shape[-1])).reshape(*z.shape[:-1], -1)
        return logits, mean, logvar, z

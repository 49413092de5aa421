"""Image VAE (MLP and convolutional) in Flax NNX; the twin of ``torchvae/models.py``.

Attribute names equal the torch twin's, so ``export_params`` gives the same canonical keys.
Convolutions run in NHWC (XLA's fast layout on CPU); before the dense layer the feature maps are
put in torch's (channel, row, col) order so the dense weights mean the same in both backends.
"""

from __future__ import annotations

from itertools import pairwise

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.layers import ConvTranspose2d
from jaxvae.posterior import PosteriorHead
from vaecore.settings.config import ImageModelConfig

ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh}  # the MLP's hidden layers
IMAGE_SIDE = 28
IMAGE_DIM = IMAGE_SIDE * IMAGE_SIDE


class MLPEncoder(nnx.Module):
    def __init__(self, cfg: ImageModelConfig, *, rngs: nnx.Rngs):
        sizes = (IMAGE_DIM, *cfg.hidden_sizes)
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairwise(sizes)])
        self.mean = nnx.Linear(sizes[-1], cfg.latent_dim, rngs=rngs)
        self.logvar = nnx.Linear(sizes[-1], cfg.latent_dim, rngs=rngs)
        self.activation_name = cfg.activation

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: [batch, 784] -> (mean, logvar): [batch, latent]."""
        h = x
        for layer in self.layers:
            h = ACTIVATIONS[self.activation_name](layer(h))
        return self.mean(h), self.logvar(h)


class MLPDecoder(nnx.Module):
    def __init__(self, cfg: ImageModelConfig, *, rngs: nnx.Rngs):
        sizes = (cfg.latent_dim, *reversed(cfg.hidden_sizes))
        self.layers = nnx.List([nnx.Linear(a, b, rngs=rngs) for a, b in pairwise(sizes)])
        self.out = nnx.Linear(sizes[-1], IMAGE_DIM, rngs=rngs)
        self.activation_name = cfg.activation

    def __call__(self, z: jax.Array) -> jax.Array:
        """z: [batch, latent] -> logits [batch, 784]."""
        h = z
        for layer in self.layers:
            h = ACTIVATIONS[self.activation_name](layer(h))
        return self.out(h)


class ConvEncoder(nnx.Module):
    """28x28 -> conv 4x4/2 -> 14x14 -> conv 4x4/2 -> 7x7 -> dense -> (mean, logvar)."""

    def __init__(self, cfg: ImageModelConfig, *, rngs: nnx.Rngs):
        c1, c2 = cfg.conv_channels
        pad = ((1, 1), (1, 1))
        self.conv1 = nnx.Conv(1, c1, (4, 4), strides=2, padding=pad, rngs=rngs)
        self.conv2 = nnx.Conv(c1, c2, (4, 4), strides=2, padding=pad, rngs=rngs)
        self.dense = nnx.Linear(c2 * 7 * 7, cfg.conv_dense, rngs=rngs)
        self.mean = nnx.Linear(cfg.conv_dense, cfg.latent_dim, rngs=rngs)
        self.logvar = nnx.Linear(cfg.conv_dense, cfg.latent_dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = x.reshape(-1, IMAGE_SIDE, IMAGE_SIDE, 1)
        h = jax.nn.relu(self.conv1(h))
        h = jax.nn.relu(self.conv2(h))
        h = h.transpose(0, 3, 1, 2).reshape(h.shape[0], -1)  # torch's (channel, row, col) flatten order
        h = jax.nn.relu(self.dense(h))
        return self.mean(h), self.logvar(h)


class ConvDecoder(nnx.Module):
    """The encoder mirrored: dense -> dense to 7x7 maps -> two 4x4/2 transposed convolutions."""

    def __init__(self, cfg: ImageModelConfig, *, rngs: nnx.Rngs):
        c1, c2 = cfg.conv_channels
        self.c2 = c2
        self.dense = nnx.Linear(cfg.latent_dim, cfg.conv_dense, rngs=rngs)
        self.dense2 = nnx.Linear(cfg.conv_dense, c2 * 7 * 7, rngs=rngs)
        self.deconv1 = ConvTranspose2d(c2, c1, 4, stride=2, padding=1, rngs=rngs)
        self.deconv2 = ConvTranspose2d(c1, 1, 4, stride=2, padding=1, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        h = jax.nn.relu(self.dense(z))
        h = jax.nn.relu(self.dense2(h)).reshape(-1, self.c2, 7, 7).transpose(0, 2, 3, 1)  # to NHWC
        h = jax.nn.relu(self.deconv1(h))
        return self.deconv2(h).reshape(h.shape[0], -1)


class VAE(nnx.Module):
    """Gaussian encoder q(z|x) = N(mean, exp(logvar)) and Bernoulli decoder p(x|z) from logits."""

    def __init__(self, cfg: ImageModelConfig, *, rngs: nnx.Rngs, dtype=jnp.float32):
        if cfg.kind == "mlp":
            self.encoder, self.decoder = MLPEncoder(cfg, rngs=rngs), MLPDecoder(cfg, rngs=rngs)
        else:
            self.encoder, self.decoder = ConvEncoder(cfg, rngs=rngs), ConvDecoder(cfg, rngs=rngs)
        # the delta-VAE's variance bounds and the BN-VAE's normalised means (identity when both are off)
        self.posterior = PosteriorHead(cfg.latent_dim, delta_rate=cfg.delta_rate, bn_gamma=cfg.bn_gamma)

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.posterior(*self.encoder(x))

    def decode(self, z: jax.Array) -> jax.Array:
        return self.decoder(z)

"""Layers that Flax has no torch-layout twin for. Parameters are stored in torch's layout so the
canonical parameters pass through ``jaxvae/params.py`` unchanged."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

TRUNCATED_STD = 0.87962566103423978  # standard deviation of a unit normal truncated at +-2


def flat_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """x [..., in] @ w [in, out] -> [..., out], computed as one 2-D matmul over the flattened leading
    dimensions. The same product as ``x @ w``; the difference is its gradient: for a 3-D ``x`` the
    weight's gradient contracts two dimensions at once, which XLA's CPU backend runs about 1.5x
    slower than the 2-D matmul (the vocabulary layer of a sentence batch, BENCHMARKS.md 2026-12-02)."""
    return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])


class ConvTranspose2d(nnx.Module):
    """torch.nn.ConvTranspose2d (no output padding, no dilation) on NHWC inputs.

    ``weight``: ``(in, out, kh, kw)`` as torch. A transposed convolution is the gradient of a
    convolution: dilate the input by ``stride``, pad by ``k - 1 - padding`` and convolve with the
    spatially flipped kernel whose in/out axes are swapped.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *, stride: int, padding: int,
                 rngs: nnx.Rngs):
        self.stride, self.padding, self.kernel_size = stride, padding, kernel_size
        # lecun_normal with fan_in = the inputs each output sees (in * k * k / stride^2), zero bias,
        # as torchvae.models.init_like_flax does.
        fan_in = in_channels * kernel_size * kernel_size / stride**2
        std = 1.0 / math.sqrt(fan_in) / TRUNCATED_STD
        shape = (in_channels, out_channels, kernel_size, kernel_size)
        self.weight = nnx.Param(std * jax.random.truncated_normal(rngs.params(), -2.0, 2.0, shape))
        self.bias = nnx.Param(jnp.zeros((out_channels,)))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x: [batch, h, w, in] -> [batch, (h-1)*stride + k - 2*padding, ..., out]."""
        kernel = jnp.flip(self.weight[...], axis=(2, 3)).transpose(1, 0, 2, 3)  # (out, in, kh, kw)
        pad = self.kernel_size - 1 - self.padding
        y = jax.lax.conv_general_dilated(
            x, kernel.astype(x.dtype), window_strides=(1, 1), padding=[(pad, pad), (pad, pad)],
            lhs_dilation=(self.stride, self.stride), dimension_numbers=("NHWC", "OIHW", "NHWC"),
        )
        return y + self.bias[...].astype(x.dtype)

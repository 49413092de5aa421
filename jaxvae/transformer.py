"""The sentence VAE's Transformer decoder in JAX / Flax NNX; the twin of ``torchvae/transformer.py``,
whose docstring describes the architecture, the parameter names and the decoding state.

Linears are ``nnx.Linear`` (``jaxvae/params.py`` transposes their kernels to torch's layout), LayerNorms
``nnx.LayerNorm`` with torch's epsilon (1e-5) and the two-pass variance. Dropout draws from the
module's ``nnx.Rngs`` (the training step reseeds them from (seed, step)); parity tests run without it.
``TransformerEncoder`` is the same stack without memory and dropout, attending in both directions.
The decoding step writes the key/value cache with ``lax.dynamic_update_slice`` at a traced position and
masks the positions not yet written, so a whole decoding loop compiles once (``jaxvae/decoding.py``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae.layers import flat_matmul
from vaecore.settings.text_config import LEARNED_POSITIONS, TextModelConfig

LN_EPS = 1e-5  # torch.nn.LayerNorm's


def glorot_linear(n_in: int, n_out: int, rngs: nnx.Rngs, param_dtype, fan_out: int | None = None) -> nnx.Linear:
    """A linear with Glorot-uniform weights (``fan_out`` for the bound of stacked matrices) and zero bias."""
    bound = math.sqrt(6.0 / (n_in + (fan_out or n_out)))

    def init(key, shape, dtype=param_dtype):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return nnx.Linear(n_in, n_out, kernel_init=init, bias_init=nnx.initializers.zeros, param_dtype=param_dtype,
                      rngs=rngs)


def layer_norm(width: int, rngs: nnx.Rngs, param_dtype) -> nnx.LayerNorm:
    return nnx.LayerNorm(width, epsilon=LN_EPS, use_fast_variance=False, param_dtype=param_dtype, rngs=rngs)


def linear(layer: nnx.Linear, x: jax.Array) -> jax.Array:
    """``layer(x)`` as one 2-D matmul over the leading dimensions (``flat_matmul``: a faster gradient)."""
    return flat_matmul(x, layer.kernel[...]) + layer.bias[...]


def sinusoids(positions: jax.Array, width: int, dtype) -> jax.Array:
    """Vaswani et al.'s positions: [..., width] with sin(p / 10000^(2i/width)) at 2i, cos at 2i+1."""
    i = jnp.arange(0, width, 2, dtype=dtype)
    angle = positions[..., None].astype(dtype) * jnp.exp(i * (-math.log(10000.0) / width))
    return jnp.stack([jnp.sin(angle), jnp.cos(angle)], axis=-1).reshape(*angle.shape[:-1], -1)[..., :width]


class Block(nnx.Module):
    def __init__(self, c: TextModelConfig, memory: bool, *, rngs: nnx.Rngs, param_dtype):
        d = c.hidden_dim
        self.heads, self.head_dim = c.transformer_heads, c.head_dim
        self.self_norm = layer_norm(d, rngs, param_dtype)
        self.qkv = glorot_linear(d, 3 * d, rngs, param_dtype, fan_out=d)
        self.attention_out = glorot_linear(d, d, rngs, param_dtype)
        if memory:
            self.memory_value = glorot_linear(d, d, rngs, param_dtype)
            self.memory_out = glorot_linear(d, d, rngs, param_dtype)
        self.ff_norm = layer_norm(d, rngs, param_dtype)
        self.ff_in = glorot_linear(d, c.transformer_ff, rngs, param_dtype)
        self.ff_out = glorot_linear(c.transformer_ff, d, rngs, param_dtype)
        self.attention_dropout = nnx.Dropout(c.attention_dropout, rngs=rngs)
        self.residual_dropout = nnx.Dropout(c.residual_dropout, rngs=rngs)

    def memory(self, memory: jax.Array) -> jax.Array:
        """What the memory sublayer adds: memory [B, d] -> [B, d] (the same at every position)."""
        return self.memory_out(self.memory_value(memory))

    def feed_forward(self, x: jax.Array, dropout: bool = True) -> jax.Array:
        drop = self.residual_dropout if dropout else (lambda a: a)
        return drop(linear(self.ff_out, drop(jax.nn.relu(linear(self.ff_in, self.ff_norm(x))))))

    def __call__(self, x: jax.Array, memory: jax.Array | None, dropout: bool = True,
                 keep: jax.Array | None = None) -> jax.Array:
        """Teacher-forced: x [B, T, d] -> [B, T, d] (``dropout`` False: none, whatever the mode). ``keep``
        [B, T] (the encoder): every position attends to the kept positions, in both directions."""
        b, t, d = x.shape
        drop = self.residual_dropout if dropout else (lambda a: a)
        qkv = linear(self.qkv, self.self_norm(x)).reshape(b, t, 3, self.heads, self.head_dim)
        q, k, v = (jnp.swapaxes(qkv[:, :, i], 1, 2) for i in range(3))  # [B, heads, T, head_dim]
        scores = jnp.einsum("bhqd,bhkd->bhqk", q, k) * (1.0 / math.sqrt(self.head_dim))
        allowed = jnp.tril(jnp.ones((t, t), bool)) if keep is None else keep[:, None, None, :]
        probs = jax.nn.softmax(jnp.where(allowed, scores, -jnp.inf), axis=-1)
        att = jnp.einsum("bhqk,bhkd->bqhd", self.attention_dropout(probs) if dropout else probs, v).reshape(b, t, d)
        x = x + drop(linear(self.attention_out, att))
        if memory is not None:
            x = x + drop(jnp.broadcast_to(self.memory(memory)[:, None, :], x.shape))
        return x + self.feed_forward(x, dropout)

    def step(self, x: jax.Array, memory: jax.Array | None, keys: jax.Array, values: jax.Array,
             position: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """One decoding position without dropout: x [B, d]; keys/values [B, heads, max_len, head_dim]
        written at ``position`` and read up to it -> (x, keys, values)."""
        b, d = x.shape
        zero = jnp.zeros((), position.dtype)
        q, k, v = (a.reshape(b, self.heads, 1, self.head_dim)
                   for a in jnp.split(self.qkv(self.self_norm(x)), 3, axis=-1))
        keys = jax.lax.dynamic_update_slice(keys, k.astype(keys.dtype), (zero, zero, position, zero))
        values = jax.lax.dynamic_update_slice(values, v.astype(values.dtype), (zero, zero, position, zero))
        scores = jnp.einsum("bhqd,bhkd->bhk", q, keys) * (1.0 / math.sqrt(self.head_dim))
        written = jnp.arange(keys.shape[2]) <= position
        probs = jax.nn.softmax(jnp.where(written, scores, -jnp.inf), axis=-1)
        x = x + self.attention_out(jnp.einsum("bhk,bhkd->bhd", probs, values).reshape(b, d))
        if memory is not None:
            x = x + self.memory(memory)
        return x + self.feed_forward(x, dropout=False), keys, values


class _Stack(nnx.Module):
    """Input map, blocks and final LayerNorm: what the decoder and the encoder share."""

    role = "decoder"

    def __init__(self, c: TextModelConfig, memory: bool, *, rngs: nnx.Rngs, param_dtype):
        self.c = c
        if c.positions == "learned":
            self.positions = nnx.Embed(LEARNED_POSITIONS, c.hidden_dim, param_dtype=param_dtype, rngs=rngs,
                                       embedding_init=nnx.initializers.normal(c.hidden_dim ** -0.5))
        if c.embed_dim != c.hidden_dim:
            self.input_projection = glorot_linear(c.embed_dim, c.hidden_dim, rngs, param_dtype)
        self.blocks = nnx.List([Block(c, memory, rngs=rngs, param_dtype=param_dtype)
                                for _ in range(c.transformer_layers)])
        self.final_norm = layer_norm(c.hidden_dim, rngs, param_dtype)

    def inputs(self, emb: jax.Array, positions: jax.Array, z_embedding: jax.Array | None) -> jax.Array:
        """Word embeddings [..., embed] at ``positions`` [...] -> the first block's inputs [..., hidden]
        (before embedding dropout)."""
        c = self.c
        x = emb if c.embed_dim == c.hidden_dim else linear(self.input_projection, emb)
        x = x * math.sqrt(c.hidden_dim)
        x = x + (self.positions(positions) if c.positions == "learned" else sinusoids(positions, c.hidden_dim, x.dtype))
        return x if z_embedding is None else x + z_embedding

    def check_length(self, steps: int) -> None:
        """Learned positions cover ``LEARNED_POSITIONS`` steps; a longer input is an error, not a clamp."""
        if self.c.positions == "learned" and steps > LEARNED_POSITIONS:
            raise ValueError(f"{steps} {self.role} steps exceed the learned position table ({LEARNED_POSITIONS}); "
                             f"cut sentences with --max-len or use --positions sinusoidal")


class TransformerEncoder(_Stack):
    """The encoder stack (``--encoder transformer``; see ``torchvae/transformer.py``): embedded w1..wn <eos>
    [B, T, embed] and their number [B] -> the mean of the final LayerNorm's outputs over each sentence,
    [B, hidden]; attention in both directions, no dropout."""

    role = "encoder"

    def __init__(self, c: TextModelConfig, *, rngs: nnx.Rngs, param_dtype):
        super().__init__(c, False, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, emb: jax.Array, lengths: jax.Array) -> jax.Array:
        self.check_length(emb.shape[1])
        positions = jnp.arange(emb.shape[1])
        keep = positions[None, :] < lengths[:, None]
        x = self.inputs(emb, positions, None)
        for block in self.blocks:
            x = block(x, None, False, keep)
        x = self.final_norm(x) * keep[..., None]
        return x.sum(1) / lengths[:, None].astype(x.dtype)


class TransformerDecoder(_Stack):
    """The decoder stack: embedded inputs [B, T, embed] -> features [B, T, hidden] before the vocabulary
    layer. ``SentenceVAE`` owns the word embedding, z's maps, and the embedding and output dropout."""

    def __init__(self, c: TextModelConfig, *, rngs: nnx.Rngs, param_dtype):
        super().__init__(c, c.z_memory, rngs=rngs, param_dtype=param_dtype)

    def __call__(self, x: jax.Array, memory: jax.Array | None, dropout: bool = True) -> jax.Array:
        for block in self.blocks:
            x = block(x, memory, dropout)
        return self.final_norm(x)

    def start(self, batch: int, max_len: int, dtype):
        """An empty cache for ``max_len`` decoding steps: (keys, values, position [1, B])."""
        c = self.c
        self.check_length(max_len)
        shape = (c.transformer_layers, batch, c.transformer_heads, max_len, c.head_dim)
        return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((1, batch), jnp.int32)

    def step(self, emb: jax.Array, state, memory: jax.Array | None, z_embedding: jax.Array | None):
        """One position: emb [B, embed] -> (features [B, hidden], state)."""
        keys, values, position = state
        p = position[0, 0]
        x = self.inputs(emb, position[0], z_embedding)
        new_keys, new_values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block.step(x, memory, keys[i], values[i], p)
            new_keys.append(k)
            new_values.append(v)
        return self.final_norm(x), (jnp.stack(new_keys), jnp.stack(new_values), position + 1)

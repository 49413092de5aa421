"""The sentence VAE's Transformer decoder in PyTorch; the twin of ``jaxvae/transformer.py``.

Pre-norm blocks (Xiong et al. 2020; texar's and GPT-2's order), each::

    x = x + drop(SelfAttention(LN(x)))           causal, ``transformer_heads`` heads, one fused q/k/v matmul
    x = x + drop(memory_out(memory_value(m)))    when z is a memory (``z_injection`` memory or both)
    x = x + drop(W2 drop(relu(W1 LN(x))))        the feed-forward, ``transformer_ff`` wide

then a final LayerNorm. The memory is one vector per sentence (``latent_to_memory(z)``): attention over a
single key gives it weight exactly 1 whatever the query, so the memory sublayer is its value and output
projections alone (a query or key projection, or a LayerNorm on the queries, would get no gradient and is
left out). Inputs: word embeddings times sqrt(width) (through ``input_projection`` when the embedding is
narrower or wider), plus sinusoidal or learned positions, plus ``latent_to_embedding(z)`` when z enters the
embeddings; then embedding dropout.

Parameter names (canonical, equal in both backends) under ``decoder_transformer``: ``positions``
(learned), ``input_projection``, ``blocks.{i}.{self_norm, qkv, attention_out, memory_value, memory_out,
ff_norm, ff_in, ff_out}``, ``final_norm``. Weights of the blocks' linears are Glorot-uniform (q, k and v
each as a [width, width] matrix), biases 0, LayerNorms 1 and 0.

The encoder (``--encoder transformer``, ``TransformerEncoder``) is the same stack under ``encoder_transformer``
without the memory sublayer and without dropout, its attention over every position of the sentence (a
key-padding mask instead of the causal one); the posterior heads read the mean of its outputs.

Dropout masks: in training the engine passes one multiplier tensor per site in the order of
``TextModelConfig.dropout_sites`` (the sites after the embedding's, which ``SentenceVAE`` applies);
without masks, dropout draws from torch's RNG. Decoding keeps a key/value cache (``start``, ``step``):
the state is (keys, values, position), keys and values [layers, B, heads, max_len, head_dim], position
[1, B], so beam search reorders it like an RNN's state (``state[:, index]``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from vaecore.settings.text_config import LEARNED_POSITIONS, TextModelConfig


def glorot_linear(n_in: int, n_out: int, fan_out: int | None = None) -> nn.Linear:
    """A linear with Glorot-uniform weights (``fan_out`` for the bound when the output stacks several
    matrices, as the fused q/k/v) and zero bias."""
    layer = nn.Linear(n_in, n_out)
    bound = math.sqrt(6.0 / (n_in + (fan_out or n_out)))
    nn.init.uniform_(layer.weight, -bound, bound)
    nn.init.zeros_(layer.bias)
    return layer


def sinusoids(positions: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """Vaswani et al.'s positions: [..., width] with sin(p / 10000^(2i/width)) at 2i, cos at 2i+1."""
    i = torch.arange(0, width, 2, device=positions.device, dtype=dtype)
    angle = positions[..., None].to(dtype) * torch.exp(i * (-math.log(10000.0) / width))
    return torch.stack([torch.sin(angle), torch.cos(angle)], dim=-1).flatten(-2)[..., :width]


def _drop(x: torch.Tensor, masks: Iterator[torch.Tensor] | None, rate: float, training: bool) -> torch.Tensor:
    """The next explicit mask's multiplier, or torch's dropout when no masks are given."""
    if masks is not None:
        return x * next(masks)
    return F.dropout(x, rate, training) if rate > 0 else x


class Block(nn.Module):
    def __init__(self, c: TextModelConfig, memory: bool):
        super().__init__()
        d = c.hidden_dim
        self.heads, self.c = c.transformer_heads, c
        self.self_norm = nn.LayerNorm(d)
        self.qkv = glorot_linear(d, 3 * d, fan_out=d)
        self.attention_out = glorot_linear(d, d)
        if memory:
            self.memory_value = glorot_linear(d, d)
            self.memory_out = glorot_linear(d, d)
        self.ff_norm = nn.LayerNorm(d)
        self.ff_in = glorot_linear(d, c.transformer_ff)
        self.ff_out = glorot_linear(c.transformer_ff, d)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, heads, T, head_dim]
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def memory(self, memory: torch.Tensor) -> torch.Tensor:
        """What the memory sublayer adds: memory [B, d] -> [B, d] (the same at every position)."""
        return self.memory_out(self.memory_value(memory))

    def feed_forward(self, x, masks, training: bool) -> torch.Tensor:
        h = _drop(F.relu(self.ff_in(self.ff_norm(x))), masks, self.c.residual_dropout, training)
        return _drop(self.ff_out(h), masks, self.c.residual_dropout, training)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None, masks: Iterator[torch.Tensor] | None,
                training: bool, keep: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced: x [B, T, d] -> [B, T, d]. ``keep`` [B, T] (the encoder, without dropout):
        every position attends to the kept positions of its sentence, in both directions."""
        c = self.c
        q, k, v = (self._heads(a) for a in self.qkv(self.self_norm(x)).chunk(3, dim=-1))
        if keep is not None:
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        elif masks is None and not (training and c.attention_dropout > 0):  # no attention dropout: fused kernel
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            t = x.shape[1]
            scores = q @ k.transpose(-1, -2) * (1.0 / math.sqrt(c.head_dim))
            future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            probs = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
            att = _drop(probs, masks, c.attention_dropout, training) @ v
        x = x + _drop(self.attention_out(att.transpose(1, 2).flatten(2)), masks, c.residual_dropout, training)
        if memory is not None:
            x = x + _drop(self.memory(memory)[:, None, :].expand_as(x), masks, c.residual_dropout, training)
        return x + self.feed_forward(x, masks, training)

    def step(self, x: torch.Tensor, memory: torch.Tensor | None, keys: torch.Tensor, values: torch.Tensor,
             position: int) -> torch.Tensor:
        """One decoding position without dropout: x [B, d]; keys/values [B, heads, max_len, head_dim]
        are written at ``position`` (in place) and read up to it."""
        q, k, v = (a.unflatten(-1, (self.heads, -1)) for a in self.qkv(self.self_norm(x)).chunk(3, dim=-1))
        keys[:, :, position], values[:, :, position] = k, v
        scores = torch.einsum("bhd,bhtd->bht", q, keys[:, :, :position + 1]) * (1.0 / math.sqrt(self.c.head_dim))
        att = torch.einsum("bht,bhtd->bhd", torch.softmax(scores, dim=-1), values[:, :, :position + 1])
        x = x + self.attention_out(att.flatten(1))
        if memory is not None:
            x = x + self.memory(memory)
        return x + self.feed_forward(x, None, False)


class _Stack(nn.Module):
    """Input map, blocks and final LayerNorm: what the decoder and the encoder share."""

    role = "decoder"

    def __init__(self, c: TextModelConfig, memory: bool):
        super().__init__()
        self.c = c
        if c.positions == "learned":
            self.positions = nn.Embedding(LEARNED_POSITIONS, c.hidden_dim)
            nn.init.normal_(self.positions.weight, std=c.hidden_dim ** -0.5)
        if c.embed_dim != c.hidden_dim:
            self.input_projection = glorot_linear(c.embed_dim, c.hidden_dim)
        self.blocks = nn.ModuleList(Block(c, memory) for _ in range(c.transformer_layers))
        self.final_norm = nn.LayerNorm(c.hidden_dim)

    def check_length(self, steps: int) -> None:
        """Learned positions cover ``LEARNED_POSITIONS`` steps; a longer input is an error."""
        if self.c.positions == "learned" and steps > LEARNED_POSITIONS:
            raise ValueError(f"{steps} {self.role} steps exceed the learned position table ({LEARNED_POSITIONS}); "
                             f"cut sentences with --max-len or use --positions sinusoidal")

    def position_codes(self, positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        if self.c.positions == "learned":
            return self.positions(positions)
        return sinusoids(positions, self.c.hidden_dim, dtype)

    def inputs(self, emb: torch.Tensor, positions: torch.Tensor, z_embedding: torch.Tensor | None) -> torch.Tensor:
        """Word embeddings [..., embed] at ``positions`` [...] -> the first block's inputs [..., hidden]
        (before embedding dropout)."""
        x = emb * math.sqrt(self.c.hidden_dim) if self.c.embed_dim == self.c.hidden_dim else \
            self.input_projection(emb) * math.sqrt(self.c.hidden_dim)
        x = x + self.position_codes(positions, x.dtype)
        return x if z_embedding is None else x + z_embedding


class TransformerEncoder(_Stack):
    """The encoder stack (``--encoder transformer``): embedded w1..wn <eos> [B, T, embed] and their number
    [B] -> the mean of the final LayerNorm's outputs over each sentence's positions, [B, hidden]. Every
    position attends to every position of its sentence; no dropout, as the RNN encoder."""

    role = "encoder"

    def __init__(self, c: TextModelConfig):
        super().__init__(c, memory=False)

    def forward(self, emb: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        self.check_length(emb.shape[1])
        positions = torch.arange(emb.shape[1], device=emb.device)
        keep = positions[None, :] < lengths[:, None].to(emb.device)
        x = self.inputs(emb, positions, None)
        for block in self.blocks:
            x = block(x, None, None, False, keep)
        x = self.final_norm(x) * keep[..., None]
        return x.sum(1) / lengths[:, None].to(device=x.device, dtype=x.dtype)


class TransformerDecoder(_Stack):
    """The decoder stack: embedded inputs [B, T, embed] -> features [B, T, hidden] before the vocabulary
    layer. ``SentenceVAE`` owns the word embedding, z's maps, and the embedding and output dropout."""

    def __init__(self, c: TextModelConfig):
        super().__init__(c, memory=c.z_memory)

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None, masks: Iterator[torch.Tensor] | None,
                training: bool) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, memory, masks, training)
        return self.final_norm(x)

    def start(self, batch: int, max_len: int, like: torch.Tensor):
        """An empty cache for ``max_len`` decoding steps: (keys, values, position)."""
        c = self.c
        self.check_length(max_len)
        shape = (c.transformer_layers, batch, c.transformer_heads, max_len, c.head_dim)
        return (like.new_zeros(shape), like.new_zeros(shape),
                torch.zeros((1, batch), dtype=torch.long, device=like.device))

    def step(self, emb: torch.Tensor, state, memory: torch.Tensor | None, z_embedding: torch.Tensor | None):
        """One position: emb [B, embed] -> (features [B, hidden], state)."""
        keys, values, position = state
        p = int(position[0, 0]) if position.numel() else 0
        if p >= keys.shape[3]:
            raise ValueError(f"the key/value cache holds {keys.shape[3]} steps; start it with a larger max_len")
        x = self.inputs(emb, position[0], z_embedding)
        for i, block in enumerate(self.blocks):
            x = block.step(x, memory, keys[i], values[i], p)
        return self.final_norm(x), (keys, values, position + 1)

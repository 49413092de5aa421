"""Sentence VAE (Bowman et al. 2016) in JAX / Flax NNX; the twin of ``torchvae/text_model.py``.

Attribute names equal the torch twin's, so ``export_params`` gives the canonical (torch) names:
``embedding``, ``encoder_rnn``, ``to_mean``, ``to_logvar``, ``latent_to_hidden``, ``decoder_rnn``,
``output`` (with tied embeddings ``output_bias`` and, when hidden and embedding sizes differ,
``output_projection``). The architecture and its defaults are described in ``vaecore.settings.text_config``; the batch
format (``tokens`` [B, T] = <bos> w1..wn <eos> <pad>..., ``lengths`` [B] = n + 2) in
``vaecore.data.text_data``. All linears and RNNs are initialised like torch's (uniform +-1/sqrt(fan_in)),
the embedding N(0, 1) (uniform +-1/sqrt(embed_dim) when tied to the output).

Randomness is explicit: ``eps`` (reparameterisation noise), ``word_mask`` (word dropout) and
``prior_z`` (MMD prior samples) are inputs; only embedding and output dropout draw from the
module's ``nnx.Rngs`` (parity tests run them off).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from jaxvae import objectives
from jaxvae.layers import flat_matmul
from jaxvae.objectives import PerExample
from jaxvae.posterior import PosteriorHead
from jaxvae.rnn import make_rnn
from jaxvae.transformer import TransformerDecoder, TransformerEncoder
from vaecore.data.text_data import BOS_ID, UNK_ID
from vaecore.settings.objectives import Weights
from vaecore.settings.text_config import TextModelConfig


def _symmetric_uniform(bound: float, param_dtype):
    """An initializer uniform in +-bound (nnx's own uniform is in [0, scale))."""
    init = nnx.initializers.uniform(2 * bound)

    def shifted(key, shape, dtype=param_dtype):
        return init(key, shape, dtype) - jnp.asarray(bound, dtype)

    return shifted


def _torch_linear(n_in: int, n_out: int, rngs: nnx.Rngs, param_dtype) -> nnx.Linear:
    """nnx.Linear initialised like torch.nn.Linear: weight and bias uniform in +-1/sqrt(n_in)."""
    init = _symmetric_uniform(1.0 / math.sqrt(n_in), param_dtype)
    return nnx.Linear(n_in, n_out, kernel_init=init, bias_init=init, param_dtype=param_dtype, rngs=rngs)


class SentenceVAE(nnx.Module):
    """RNN (or Transformer) encoder -> Gaussian q(z|x) -> RNN decoder conditioned on z (initial state,
    optionally every step), or a Transformer decoder (``jaxvae.transformer``) that reads z as a memory,
    in its input embeddings, or both. ``param_dtype``: float32, or float64 under ``jax.enable_x64``."""

    def __init__(self, config: TextModelConfig, *, rngs: nnx.Rngs, param_dtype=jnp.float32):
        c = self.config = config.built()
        # tied: the scale of an untied output layer (see TextModelConfig)
        embedding_init = (_symmetric_uniform(1.0 / math.sqrt(c.embed_dim), param_dtype) if c.tie_embeddings
                          else nnx.initializers.normal(1.0))
        self.embedding = nnx.Embed(
            c.vocab_size, c.embed_dim, embedding_init=embedding_init, param_dtype=param_dtype, rngs=rngs,
        )
        self.embedding_dropout = nnx.Dropout(c.embedding_dropout, rngs=rngs)
        if c.encoder == "rnn":
            self.encoder_rnn = make_rnn(
                c.rnn, c.embed_dim, c.hidden_dim, c.num_layers, c.bidirectional, rngs=rngs, param_dtype=param_dtype
            )
        else:
            self.encoder_transformer = TransformerEncoder(c, rngs=rngs, param_dtype=param_dtype)
        self.to_mean = _torch_linear(c.encoder_features, c.latent_dim, rngs, param_dtype)
        self.to_logvar = _torch_linear(c.encoder_features, c.latent_dim, rngs, param_dtype)
        self.posterior = PosteriorHead(c.latent_dim, delta_rate=c.delta_rate, bn_gamma=c.bn_gamma,
                                       use_latent=c.use_latent, param_dtype=param_dtype)
        if c.decoder == "rnn":
            self.latent_to_hidden = _torch_linear(c.latent_dim, c.decoder_state_size, rngs, param_dtype)
            dec_in = c.embed_dim + (c.latent_dim if c.z_every_step else 0)
            self.decoder_rnn = make_rnn(c.rnn, dec_in, c.hidden_dim, c.num_layers, False, rngs=rngs,
                                        param_dtype=param_dtype)
        else:
            self.decoder_transformer = TransformerDecoder(c, rngs=rngs, param_dtype=param_dtype)
            if c.z_memory:
                self.latent_to_memory = _torch_linear(c.latent_dim, c.hidden_dim, rngs, param_dtype)
            if c.z_embedding:
                self.latent_to_embedding = _torch_linear(c.latent_dim, c.hidden_dim, rngs, param_dtype)
        if c.tie_embeddings:
            if c.hidden_dim != c.embed_dim:
                self.output_projection = _torch_linear(c.hidden_dim, c.embed_dim, rngs, param_dtype)
            self.output_bias = nnx.Param(jnp.zeros((c.vocab_size,), param_dtype))
        else:
            self.output = _torch_linear(c.hidden_dim, c.vocab_size, rngs, param_dtype)
        self.output_dropout = nnx.Dropout(c.output_dropout, rngs=rngs)  # last: parameter init is unchanged

    def vocab_logits(self, h: jax.Array) -> jax.Array:
        """Decoder outputs [..., hidden] -> logits [..., vocab]: the output layer, or with tied
        embeddings (optional projection to the embedding size) @ embedding^T + output_bias."""
        feats, weight, bias = self.vocab_layer(h)
        return flat_matmul(feats, weight.T) + bias

    def vocab_layer(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """``vocab_logits`` as (features [..., F], weight [vocab, F], bias [vocab]), logits =
        features @ weight^T + bias: what ``tiled_token_nll`` needs to compute the logits in tiles."""
        if not self.config.tie_embeddings:
            return h, self.output.kernel[...].T, self.output.bias[...]
        if self.config.hidden_dim != self.config.embed_dim:
            p = self.output_projection
            h = flat_matmul(h, p.kernel[...]) + p.bias[...]
        return h, self.embedding.embedding[...], self.output_bias[...]

    def decoder_states(self, inputs: jax.Array, z: jax.Array) -> jax.Array:
        """The teacher-forced decoder's outputs before the vocabulary layer, without dropout (evaluation):
        inputs [B, T_dec], z [B, latent] -> [B, T_dec, hidden]."""
        if self.config.decoder == "transformer":
            return self._transformer(self.embedding(inputs), z, dropout=False)
        out, _ = self.decoder_rnn(self._decoder_inputs(self.embedding(inputs), z), None, self.initial_state(z))
        return out

    def encode(self, tokens: jax.Array, lengths: jax.Array) -> tuple[jax.Array, jax.Array]:
        """tokens: [B, T], lengths: [B] -> (mean, logvar): [B, latent]. Reads w1..wn <eos>.
        The language-model baseline (``use_latent`` false) returns the prior, mean 0 and logvar 0."""
        if not self.config.use_latent:
            zeros = jnp.zeros((tokens.shape[0], self.config.latent_dim), self.to_mean.kernel[...].dtype)
            return zeros, zeros
        x = self.embedding(tokens[:, 1:])
        if self.config.encoder == "transformer":
            features = self.encoder_transformer(x, lengths - 1)  # [B, H]
        else:
            _, state = self.encoder_rnn(x, lengths - 1)
            h = state[0] if self.config.rnn == "lstm" else state  # [layers*dirs, B, H]
            features = jnp.swapaxes(h, 0, 1).reshape(h.shape[1], -1)  # [B, layers*dirs*H]
        return self.posterior(self.to_mean(features), self.to_logvar(features))

    def _code(self, z: jax.Array) -> jax.Array:
        """What the decoder sees of z: z itself, or zeros for the language-model baseline."""
        return z if self.config.use_latent else jnp.zeros_like(z)

    def _z_maps(self, z: jax.Array) -> tuple[jax.Array | None, jax.Array | None]:
        """A Transformer decoder's views of z [B, latent]: (memory, added embedding), each [B, hidden] or None."""
        code = self._code(z)
        return (self.latent_to_memory(code) if self.config.z_memory else None,
                self.latent_to_embedding(code) if self.config.z_embedding else None)

    def _transformer(self, emb: jax.Array, z: jax.Array, *, dropout: bool = True) -> jax.Array:
        """Teacher-forced Transformer decoder: embeddings [B, T, embed] -> features [B, T, hidden]
        (``dropout`` False: none, whatever the modules' mode, as ``decoder_states`` promises)."""
        self.decoder_transformer.check_length(emb.shape[1])
        memory, z_emb = self._z_maps(z)
        x = self.decoder_transformer.inputs(emb, jnp.arange(emb.shape[1]), None if z_emb is None else z_emb[:, None])
        if not dropout:
            return self.decoder_transformer(x, memory, dropout=False)
        return self.decoder_transformer(self.embedding_dropout(x), memory)

    def initial_state(self, z: jax.Array, max_len: int | None = None):
        """z: [B, latent] -> the decoder's initial state, [layers, B, H] (GRU) or a pair (LSTM); for a
        Transformer an empty key/value cache for ``max_len`` steps (``TransformerDecoder.start``)."""
        if self.config.decoder == "transformer":
            if max_len is None:
                raise ValueError("a Transformer decoder's state is a key/value cache: give max_len")
            return self.decoder_transformer.start(z.shape[0], max_len, z.dtype)
        s = self.latent_to_hidden(self._code(z))
        if self.config.decoder_init_tanh:
            s = jnp.tanh(s)
        L, H = self.config.num_layers, self.config.hidden_dim
        s = jnp.swapaxes(s.reshape(z.shape[0], -1, H), 0, 1)  # [(2*)L, B, H]: h layers, then c layers
        return (s[:L], s[L:]) if self.config.rnn == "lstm" else s

    def _decoder_inputs(self, emb: jax.Array, z: jax.Array) -> jax.Array:
        if not self.config.z_every_step:
            return emb
        z = self._code(z)
        zs = jnp.broadcast_to(z[:, None, :], (*emb.shape[:2], z.shape[-1])) if emb.ndim == 3 else z
        return jnp.concatenate([emb, zs], axis=-1)

    def decode(self, inputs: jax.Array, z: jax.Array, word_mask: jax.Array | None = None) -> jax.Array:
        """Teacher-forced decoder. inputs: [B, T_dec] (= tokens[:, :-1]), z: [B, latent],
        word_mask: [B, T_dec] bool, True -> the input word becomes <unk> (never <bos>).
        Returns logits [B, T_dec, vocab]."""
        if word_mask is not None:
            inputs = jnp.where(word_mask & (inputs != BOS_ID), UNK_ID, inputs)
        if self.config.decoder == "transformer":
            return self.vocab_logits(self.output_dropout(self._transformer(self.embedding(inputs), z)))
        emb = self.embedding_dropout(self.embedding(inputs))
        out, _ = self.decoder_rnn(self._decoder_inputs(emb, z), None, self.initial_state(z))
        return self.vocab_logits(self.output_dropout(out))

    def decoder_step(self, token: jax.Array, state, z: jax.Array):
        """One decoding step without dropout: token [B] -> (logits [B, vocab], state)."""
        if self.config.decoder == "transformer":
            features, state = self.decoder_transformer.step(self.embedding(token), state, *self._z_maps(z))
            return self.vocab_logits(features), state
        emb = self.embedding(token)
        out, state = self.decoder_rnn.step(self._decoder_inputs(emb, z), state)
        return self.vocab_logits(out), state

    def __call__(self, tokens: jax.Array, lengths: jax.Array, eps: jax.Array,
                 word_mask: jax.Array | None = None):
        """-> (logits [B, T-1, vocab], mean, logvar, z: [B, latent]); z = mean + exp(logvar/2) * eps.
        With eps [k, B, latent] (k samples per sentence, the IWAE): z [k, B, latent] and the decoder
        reads every sentence k times, logits [k * B, T-1, vocab] (sample-major rows)."""
        mean, logvar = self.encode(tokens, lengths)
        z = mean + jnp.exp(0.5 * logvar) * eps
        if z.ndim == 3:
            k = z.shape[0]
            word_mask = jnp.tile(word_mask, (k, 1)) if word_mask is not None else None
            logits = self.decode(jnp.tile(tokens[:, :-1], (k, 1)), z.reshape(-1, z.shape[-1]), word_mask)
            return logits, mean, logvar, z
        return self.decode(tokens[:, :-1], z, word_mask), mean, logvar, z


def _target_nll_forward(logits: jax.Array, targets: jax.Array, mask: jax.Array):
    top = jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    lse = jnp.log(jnp.sum(jnp.exp(logits - top), axis=-1)) + top[..., 0]
    nll = lse - jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return jnp.where(mask, nll, 0.0), (logits, lse, targets, mask)


def _target_nll_backward(residuals, g: jax.Array):
    logits, lse, targets, mask = residuals
    g = jnp.where(mask, g, 0.0)
    grad = jnp.exp(logits - lse[..., None]) * g[..., None]
    flat = grad.reshape(-1, grad.shape[-1])
    flat = flat.at[jnp.arange(flat.shape[0]), targets.reshape(-1)].add(-g.reshape(-1))
    return flat.reshape(grad.shape), None, None


@jax.custom_vjp
def _target_nll(logits: jax.Array, targets: jax.Array, mask: jax.Array) -> jax.Array:
    """-log softmax(logits)[target] = logsumexp(logits) - logits[target] at the masked-in positions (0
    elsewhere), with the gradient written out: d/dlogits = g * (softmax(logits) - onehot(target)),
    one fused pass over the saved logits and their logsumexp, then a scatter of -g at the targets
    (as torch's ``scatter_add_``). The twin of ``torchvae.text_model._TargetNLL`` (BENCHMARKS.md,
    2026-12-02), which saves the log-probabilities instead: in XLA, saving the logits and the
    logsumexp, and the scatter in place of a one-hot compare over [.., vocab], made the vocabulary
    layer's forward and backward 9 % faster and the text step 5-10 % (BENCHMARKS.md, 2026-12-03)."""
    return _target_nll_forward(logits, targets, mask)[0]


_target_nll.defvjp(_target_nll_forward, _target_nll_backward)


def target_positions(tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    """[B, T-1] bool: the decoder positions that predict a target (words and <eos>), not padding."""
    return jnp.arange(tokens.shape[1] - 1)[None, :] < (lengths - 1)[:, None]


def token_nll(logits: jax.Array, tokens: jax.Array, lengths: jax.Array) -> jax.Array:
    """-log p(tokens[:, 1:]) summed over each sentence's targets (words and <eos>): -> [B].

    logits: [B, T-1, vocab] (position t predicts tokens[:, t+1]), lengths: [B] = n + 2. The
    per-position loss and its gradient are ``_target_nll``."""
    return jnp.sum(_target_nll(logits, tokens[:, 1:], target_positions(tokens, lengths)), axis=1)


EVAL_TILE = 256  # positions per vocabulary tile in ``tiled_token_nll``: [256, 10002] logits, 10 MB


def tiled_token_nll(vae: SentenceVAE, states: jax.Array, tokens: jax.Array, lengths: jax.Array,
                    tile: int = EVAL_TILE) -> jax.Array:
    """``token_nll(vae.vocab_logits(states), tokens, lengths)`` without the [B, T-1, vocab] logits
    (evaluation; no gradient is taken through it): -log p(target) = logsumexp(logits) - logit[target],
    the logsumexp over ``tile`` positions at a time (``lax.map``), so each tile's logits stay in the
    cache; the target's logit is its weight row dotted with the features. The order of the sums
    differs from ``token_nll``'s: equal to float32 rounding (a few 1e-6 relative).

    states: [B, T-1, hidden] (``decoder_states``), tokens: [B, T], lengths: [B] -> [B]."""
    feats, weight, bias = vae.vocab_layer(states)
    targets = tokens[:, 1:]
    b, t, f = feats.shape
    flat = feats.reshape(b * t, f)
    pad = (-(b * t)) % tile
    tiles = jnp.pad(flat, ((0, pad), (0, 0))).reshape(-1, tile, f)
    lse = jax.lax.map(lambda x: jax.nn.logsumexp(x @ weight.T + bias, axis=-1), tiles).reshape(-1)[:b * t]
    target_logit = jnp.sum(flat * weight[targets.reshape(-1)], axis=-1) + bias[targets.reshape(-1)]
    nll = (lse - target_logit).reshape(b, t)
    mask = target_positions(tokens, lengths)
    return jnp.sum(jnp.where(mask, nll, 0.0), axis=1)


def gaussian_kl_per_dim(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent dimension: [B, latent] -> [B, latent]."""
    return 0.5 * (jnp.exp(logvar) + mean * mean - 1.0 - logvar)


def free_bits_kl(kl_dims: jax.Array, free_bits: float) -> jax.Array:
    """Per-example KL of the optimised objective with free bits (Kingma et al. 2016): -> [B].

    A latent dimension whose batch-averaged KL is below ``free_bits`` counts as ``free_bits`` for
    every example (a constant: no gradient), so the batch mean is sum_d max(mean_b KL_bd, free_bits)."""
    if free_bits <= 0.0:
        return jnp.sum(kl_dims, axis=1)
    below = jnp.mean(kl_dims, axis=0, keepdims=True) < free_bits
    return jnp.sum(jnp.where(below, jnp.asarray(free_bits, kl_dims.dtype), kl_dims), axis=1)


def sentence_loss(
    model: SentenceVAE, tokens: jax.Array, lengths: jax.Array, eps: jax.Array,
    word_mask: jax.Array | None = None, *, kl_weight: float | jax.Array = 1.0, free_bits: float = 0.0,
    objective: str = "elbo", alpha: float = 0.0, lam: float = 1.0, prior_z: jax.Array | None = None,
    mmd_kwargs: dict | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The sentence VAE's objective -> (batch-mean loss, per-example terms [B]).

    tokens [B, T], lengths [B]: a ``TextBatch``; eps: [B, latent] standard-normal noise ([k, B, latent]
    for k importance samples); word_mask: [B, T-1] bool or None; prior_z: [M, latent] prior samples
    (objective "mmd"). The objective is ``jaxvae.objectives``'s (the ELBO, InfoVAE, the IWAE bound) of
    the text task's terms (``sentence_terms``), with the KL weighed by ``kl_weight`` (its schedule; may
    be a traced scalar in JAX) and made the free-bits KL (``free_bits_kl``). Terms per sentence:

    - ``recon``: token cross-entropy summed over each sentence, the <eos> target included (the mean
      over the k samples for the IWAE);
    - ``kl``: the true analytic KL(q(z|x) || N(0, I)), summed over latent dimensions;
    - ``mmd``: MMD(z, prior_z) of the batch (z sampled from q(z|x) with eps), broadcast; 0 for elbo;
    - ``total``: what is optimised, per example. The loss is ``mean(total)``.
    """
    logits, mean, logvar, z = model(tokens, lengths, eps, word_mask)
    return sentence_objective(logits, mean, logvar, z, tokens, lengths, eps=eps, kl_weight=kl_weight,
                              free_bits=free_bits, objective=objective, alpha=alpha, lam=lam, prior_z=prior_z,
                              mmd_kwargs=mmd_kwargs)


def sentence_terms(logits: jax.Array, mean: jax.Array, logvar: jax.Array, z: jax.Array, eps: jax.Array | None,
                   tokens: jax.Array, lengths: jax.Array, free_bits: float = 0.0) -> PerExample:
    """The text task's per-example terms from the model's outputs: the token NLL summed per sentence
    (per sample: [k, B] when z is [k, B, latent]), the analytic KL and the free-bits KL that is optimised.
    logits [B, T-1, vocab] ([k * B, T-1, vocab], sample-major rows, with k samples); mean, logvar [B, latent]."""
    if z.ndim == 3:  # k samples per sentence: the decoder read every sentence k times
        k, b = z.shape[0], z.shape[1]
        recon = token_nll(logits, jnp.tile(tokens, (k, 1)), jnp.tile(lengths, k)).reshape(k, b)
    else:
        recon = token_nll(logits, tokens, lengths)
    kl_dims = gaussian_kl_per_dim(mean, logvar)
    return PerExample(recon, jnp.sum(kl_dims, axis=1), free_bits_kl(kl_dims, free_bits), z, eps, logvar)


def sentence_objective(
    logits: jax.Array, mean: jax.Array, logvar: jax.Array, z: jax.Array, tokens: jax.Array, lengths: jax.Array, *,
    eps: jax.Array | None = None, kl_weight: float | jax.Array = 1.0, free_bits: float = 0.0, objective: str = "elbo",
    alpha: float = 0.0, lam: float = 1.0, prior_z: jax.Array | None = None, mmd_kwargs: dict | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``sentence_loss`` from the model's outputs (see ``sentence_terms``; ``eps``: the IWAE's)."""
    terms = sentence_terms(logits, mean, logvar, z, eps, tokens, lengths, free_bits)
    return objectives.objective(objective, terms, Weights(kl_weight, alpha, lam, prior_z, mmd_kwargs or {}))

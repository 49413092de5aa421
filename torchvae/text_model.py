"""Sentence VAE (Bowman et al. 2016) in PyTorch; the twin of ``jaxvae/text_model.py``.

Attribute names are the canonical parameter names: ``embedding``, ``encoder_rnn``, ``to_mean``,
``to_logvar``, ``latent_to_hidden``, ``decoder_rnn``, ``output`` (with tied embeddings
``output_bias`` and, when hidden and embedding sizes differ, ``output_projection``). The architecture and its defaults
are described in ``vaecore.settings.text_config``; the batch format (``tokens`` [B, T] = <bos> w1..wn <eos>
<pad>..., ``lengths`` [B] = n + 2) in ``vaecore.data.text_data``. The encoder runs on a packed sequence,
so padding never reaches its final state; the decoder runs unpacked (its outputs past a sentence's
end are masked out of the loss and cannot influence earlier positions).

Randomness is explicit: ``eps``, ``word_mask``, ``prior_z`` and, in training, the embedding and
output dropout masks (``dropout_masks``) are inputs, so the training engine draws them for the
global batch and a data-parallel shard takes its rows. Without masks, dropout draws from torch's
RNG (parity tests run the model in evaluation mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from torchvae import objectives, parallel
from torchvae.objectives import PerExample
from torchvae.posterior import PosteriorHead
from torchvae.transformer import TransformerDecoder, TransformerEncoder
from vaecore.data.text_data import BOS_ID, UNK_ID
from vaecore.settings.objectives import Weights
from vaecore.settings.text_config import TextModelConfig

RNNS = {"lstm": nn.LSTM, "gru": nn.GRU}


def _dropout(x: torch.Tensor, masks, module: nn.Dropout) -> torch.Tensor:
    """The next explicit mask's multiplier (training with the engine's masks), else the module."""
    return x * next(masks) if masks is not None else module(x)


class SentenceVAE(nn.Module):
    """RNN (or Transformer) encoder -> Gaussian q(z|x) -> RNN decoder conditioned on z (initial state,
    optionally every step), or a Transformer decoder (``torchvae.transformer``) that reads z as a memory,
    in its input embeddings, or both."""

    def __init__(self, config: TextModelConfig):
        super().__init__()
        c = self.config = config.built()
        self.embedding = nn.Embedding(c.vocab_size, c.embed_dim)
        self.embedding_dropout = nn.Dropout(c.embedding_dropout)
        if c.encoder == "rnn":
            self.encoder_rnn = RNNS[c.rnn](c.embed_dim, c.hidden_dim, c.num_layers, batch_first=True,
                                           bidirectional=c.bidirectional)
        else:
            self.encoder_transformer = TransformerEncoder(c)
        self.to_mean = nn.Linear(c.encoder_features, c.latent_dim)
        self.to_logvar = nn.Linear(c.encoder_features, c.latent_dim)
        self.posterior = PosteriorHead(c.latent_dim, delta_rate=c.delta_rate, bn_gamma=c.bn_gamma,
                                       use_latent=c.use_latent)
        if c.decoder == "rnn":
            self.latent_to_hidden = nn.Linear(c.latent_dim, c.decoder_state_size)
            dec_in = c.embed_dim + (c.latent_dim if c.z_every_step else 0)
            self.decoder_rnn = RNNS[c.rnn](dec_in, c.hidden_dim, c.num_layers, batch_first=True)
        else:
            self.decoder_transformer = TransformerDecoder(c)
            if c.z_memory:
                self.latent_to_memory = nn.Linear(c.latent_dim, c.hidden_dim)
            if c.z_embedding:
                self.latent_to_embedding = nn.Linear(c.latent_dim, c.hidden_dim)
        if c.tie_embeddings:
            bound = 1.0 / c.embed_dim ** 0.5
            nn.init.uniform_(self.embedding.weight, -bound, bound)
            if c.hidden_dim != c.embed_dim:
                self.output_projection = nn.Linear(c.hidden_dim, c.embed_dim)
            self.output_bias = nn.Parameter(torch.zeros(c.vocab_size))
        else:
            self.output = nn.Linear(c.hidden_dim, c.vocab_size)
        self.output_dropout = nn.Dropout(c.output_dropout)

    def vocab_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Decoder outputs [..., hidden] -> logits [..., vocab]: the output layer, or with tied
        embeddings (optional projection to the embedding size) @ embedding^T + output_bias."""
        if not self.config.tie_embeddings:
            return self.output(h)
        if self.config.hidden_dim != self.config.embed_dim:
            h = self.output_projection(h)
        return F.linear(h, self.embedding.weight, self.output_bias)

    def encode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens: [B, T], lengths: [B] -> (mean, logvar): [B, latent]. Reads w1..wn <eos>.
        The language-model baseline (``use_latent`` false) returns the prior, mean 0 and logvar 0."""
        if not self.config.use_latent:
            zeros = self.to_mean.weight.new_zeros((tokens.shape[0], self.config.latent_dim))
            return zeros, zeros
        x = self.embedding(tokens[:, 1:])
        if self.config.encoder == "transformer":
            features = self.encoder_transformer(x, lengths - 1)  # [B, H]
        else:
            packed = pack_padded_sequence(x, (lengths - 1).cpu(), batch_first=True, enforce_sorted=False)
            _, state = self.encoder_rnn(packed)
            h = state[0] if self.config.rnn == "lstm" else state  # [layers*dirs, B, H]
            features = h.transpose(0, 1).reshape(h.shape[1], -1)  # [B, layers*dirs*H]
        return self.posterior(self.to_mean(features), self.to_logvar(features))

    def _code(self, z: torch.Tensor) -> torch.Tensor:
        """What the decoder sees of z: z itself, or zeros for the language-model baseline."""
        return z if self.config.use_latent else torch.zeros_like(z)

    def _z_maps(self, z: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """A Transformer decoder's views of z [B, latent]: (memory, added embedding), each [B, hidden] or None."""
        code = self._code(z)
        return (self.latent_to_memory(code) if self.config.z_memory else None,
                self.latent_to_embedding(code) if self.config.z_embedding else None)

    def _transformer(self, emb: torch.Tensor, z: torch.Tensor, masks, training: bool) -> torch.Tensor:
        """Teacher-forced Transformer decoder: embeddings [B, T, embed] -> features [B, T, hidden]."""
        memory, z_emb = self._z_maps(z)
        self.decoder_transformer.check_length(emb.shape[1])
        positions = torch.arange(emb.shape[1], device=emb.device)
        x = self.decoder_transformer.inputs(emb, positions, None if z_emb is None else z_emb[:, None, :])
        x = _dropout(x, masks, self.embedding_dropout)
        return self.decoder_transformer(x, memory, masks, training)

    def initial_state(self, z: torch.Tensor, max_len: int | None = None):
        """z: [B, latent] -> the decoder's initial state, [layers, B, H] (GRU) or a pair (LSTM); for a
        Transformer an empty key/value cache for ``max_len`` steps (``TransformerDecoder.start``)."""
        if self.config.decoder == "transformer":
            if max_len is None:
                raise ValueError("a Transformer decoder's state is a key/value cache: give max_len")
            return self.decoder_transformer.start(z.shape[0], max_len, z)
        s = self.latent_to_hidden(self._code(z))
        if self.config.decoder_init_tanh:
            s = torch.tanh(s)
        L, H = self.config.num_layers, self.config.hidden_dim
        s = s.reshape(z.shape[0], -1, H).transpose(0, 1)  # [(2*)L, B, H]: h layers, then c layers
        return (s[:L].contiguous(), s[L:].contiguous()) if self.config.rnn == "lstm" else s.contiguous()

    def _decoder_inputs(self, emb: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        if not self.config.z_every_step:
            return emb
        z = self._code(z)
        return torch.cat([emb, z[:, None, :].expand(*emb.shape[:2], z.shape[-1])], dim=-1)

    def decode(self, inputs: torch.Tensor, z: torch.Tensor, word_mask: torch.Tensor | None = None,
               dropout_masks: tuple[torch.Tensor, torch.Tensor] | None = None,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher-forced decoder. inputs: [B, T_dec] (= tokens[:, :-1]), z: [B, latent],
        word_mask: [B, T_dec] bool, True -> the input word becomes <unk> (never <bos>);
        dropout_masks: in training, the multipliers (0 or 1 / (1 - p)) of embedding dropout
        [B, T_dec, embed] and output dropout [B, T_dec, hidden], else torch's dropout.
        Returns logits [B, T_dec, vocab]; with ``positions`` ([B, T_dec] bool) only those positions'
        logits, [N, vocab] in row-major order (training: the vocabulary layer skips the padding)."""
        if word_mask is not None:
            inputs = torch.where(word_mask & (inputs != BOS_ID), torch.full_like(inputs, UNK_ID), inputs)
        emb = self.embedding(inputs)
        masks = iter(dropout_masks) if dropout_masks is not None and self.training else None
        if self.config.decoder == "transformer":
            out = self._transformer(emb, z, masks, self.training)
        else:
            emb = _dropout(emb, masks, self.embedding_dropout)
            out, _ = self.decoder_rnn(self._decoder_inputs(emb, z), self.initial_state(z))
        out = _dropout(out, masks, self.output_dropout)
        if masks is not None and next(masks, None) is not None:
            raise ValueError(f"{len(dropout_masks)} dropout masks for the decoder's "
                             f"{len(self.config.dropout_sites(inputs.shape[1]))} sites (TextModelConfig.dropout_sites)")
        return self.vocab_logits(out if positions is None else out[positions])

    def vocab_layer(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``vocab_logits`` as (features [..., F], weight [vocab, F], bias [vocab]), logits =
        features @ weight^T + bias: what ``tiled_token_nll`` needs to compute the logits in tiles."""
        if not self.config.tie_embeddings:
            return h, self.output.weight, self.output.bias
        if self.config.hidden_dim != self.config.embed_dim:
            h = self.output_projection(h)
        return h, self.embedding.weight, self.output_bias

    def decoder_states(self, inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The teacher-forced decoder's outputs before the vocabulary layer, without dropout (evaluation):
        inputs [B, T_dec], z [B, latent] -> [B, T_dec, hidden]."""
        if self.config.decoder == "transformer":
            return self._transformer(self.embedding(inputs), z, None, False)
        out, _ = self.decoder_rnn(self._decoder_inputs(self.embedding(inputs), z), self.initial_state(z))
        return out

    def decoder_step(self, token: torch.Tensor, state, z: torch.Tensor):
        """One decoding step without dropout: token [B] -> (logits [B, vocab], state)."""
        if self.config.decoder == "transformer":
            features, state = self.decoder_transformer.step(self.embedding(token), state, *self._z_maps(z))
            return self.vocab_logits(features), state
        emb = self.embedding(token[:, None])
        out, state = self.decoder_rnn(self._decoder_inputs(emb, z), state)
        return self.vocab_logits(out[:, 0]), state

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, eps: torch.Tensor,
                word_mask: torch.Tensor | None = None, dropout_masks=None, packed: bool = False):
        """-> (logits [B, T-1, vocab], mean, logvar, z: [B, latent]); z = mean + exp(logvar/2) * eps.
        With eps [k, B, latent] (k samples per sentence, the IWAE): z [k, B, latent] and the decoder
        reads every sentence k times, logits [k * B, T-1, vocab] (sample-major rows; ``dropout_masks``
        then [k * B, ...]). ``packed``: the logits of the target positions only, [N, vocab] in
        row-major order (``target_positions``), which ``token_nll`` takes as they are."""
        mean, logvar = self.encode(tokens, lengths)
        z = mean + torch.exp(0.5 * logvar) * eps
        if z.dim() == 3:
            k = z.shape[0]
            word_mask = word_mask.repeat(k, 1) if word_mask is not None else None
            tokens, lengths, z_dec = tokens.repeat(k, 1), lengths.repeat(k), z.reshape(-1, z.shape[-1])
        else:
            z_dec = z
        positions = target_positions(tokens, lengths) if packed else None
        return self.decode(tokens[:, :-1], z_dec, word_mask, dropout_masks, positions), mean, logvar, z


class _TargetNLL(torch.autograd.Function):
    """-log softmax(logits)[target] at the masked-in positions (0 elsewhere), with the gradient
    written out: d/dlogits = g * (softmax(logits) - onehot(target)), one pass over the saved
    log-probabilities. The same values as autograd through ``log_softmax`` and ``gather`` (whose
    backward first scatters g into a zero [.., vocab] tensor and then runs the log-softmax
    backward over it), without that scatter and its extra passes (BENCHMARKS.md, 2026-12-02)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(logits, dim=-1)
        nll = -torch.gather(logp, -1, targets[..., None])[..., 0]
        ctx.save_for_backward(logp, targets, mask)
        return torch.where(mask, nll, torch.zeros_like(nll))

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        logp, targets, mask = ctx.saved_tensors
        g = torch.where(mask, g, torch.zeros_like(g))[..., None]
        grad = torch.exp(logp).mul_(g)
        grad.scatter_add_(-1, targets[..., None], -g)
        return grad, None, None


def target_positions(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, T-1] bool: the decoder positions that predict a target (words and <eos>), not padding."""
    return torch.arange(tokens.shape[1] - 1, device=tokens.device)[None, :] < (lengths - 1)[:, None]


def token_nll(logits: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """-log p(tokens[:, 1:]) summed over each sentence's targets (words and <eos>): -> [B].

    logits: [B, T-1, vocab] (position t predicts tokens[:, t+1]), or [N, vocab] at the N target
    positions only (``target_positions``, row-major: ``SentenceVAE(..., packed=True)``); lengths: [B]
    = n + 2. The per-position loss and its gradient are ``_TargetNLL``; both layouts give the same
    sums (the packed one is put back in place before summing)."""
    targets = tokens[:, 1:].long()
    mask = target_positions(tokens, lengths)
    if logits.dim() == 3:
        return _TargetNLL.apply(logits, targets, mask).sum(1)
    picked = targets[mask]
    nll = _TargetNLL.apply(logits, picked, torch.ones_like(picked, dtype=torch.bool))
    return torch.zeros(targets.shape, dtype=nll.dtype, device=nll.device).masked_scatter(mask, nll).sum(1)


EVAL_TILE = 256  # positions per vocabulary tile in ``tiled_token_nll``: [256, 10002] logits, 10 MB


def tiled_token_nll(vae: SentenceVAE, states: torch.Tensor, tokens: torch.Tensor, lengths: torch.Tensor,
                    tile: int = EVAL_TILE) -> torch.Tensor:
    """``token_nll(vae.vocab_logits(states), tokens, lengths)`` without the [B, T-1, vocab] logits
    (evaluation, under ``no_grad``): -log p(target) = logsumexp(logits) - logit[target] at the target
    positions only (padding is skipped), the logsumexp over ``tile`` positions at a time so that each
    tile's logits stay in the cache; the target's logit is its weight row dotted with the features.
    The order of the sums differs from ``token_nll``'s: equal to float32 rounding (a few 1e-6 relative).

    states: [B, T-1, hidden] (``decoder_states``), tokens: [B, T], lengths: [B] -> [B]."""
    targets = tokens[:, 1:]
    b, t = targets.shape
    mask = target_positions(tokens, lengths)
    feats, weight, bias = vae.vocab_layer(states[mask])  # [N, F]: the target positions
    picked = targets[mask].long()
    lse = torch.cat([torch.logsumexp(F.linear(feats[i:i + tile], weight, bias), dim=-1)
                     for i in range(0, len(feats), tile)]) if len(feats) else feats.new_zeros(0)
    nll = lse - ((feats * weight[picked]).sum(-1) + bias[picked])
    out = torch.zeros(b, t, dtype=nll.dtype, device=nll.device)
    out[mask] = nll
    return out.sum(1)


def gaussian_kl_per_dim(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) per latent dimension: [B, latent] -> [B, latent]."""
    return 0.5 * (torch.exp(logvar) + mean * mean - 1.0 - logvar)


def free_bits_kl(kl_dims: torch.Tensor, free_bits: float) -> torch.Tensor:
    """Per-example KL of the optimised objective with free bits (Kingma et al. 2016): -> [B].

    A latent dimension whose batch-averaged KL is below ``free_bits`` counts as ``free_bits`` for
    every example (a constant: no gradient), so the batch mean is sum_d max(mean_b KL_bd, free_bits)."""
    if free_bits <= 0.0:
        return kl_dims.sum(1)
    if parallel.active():  # the global batch's mean (``torchvae.parallel``)
        batch_mean = parallel.global_sum(kl_dims.detach().sum(0, keepdim=True)) / parallel.global_rows(len(kl_dims))
    else:
        batch_mean = kl_dims.mean(0, keepdim=True)
    below = batch_mean < free_bits
    return torch.where(below, torch.full_like(kl_dims, free_bits), kl_dims).sum(1)


def sentence_loss(
    model: SentenceVAE, tokens: torch.Tensor, lengths: torch.Tensor, eps: torch.Tensor,
    word_mask: torch.Tensor | None = None, *, kl_weight: float = 1.0, free_bits: float = 0.0,
    objective: str = "elbo", alpha: float = 0.0, lam: float = 1.0, prior_z: torch.Tensor | None = None,
    mmd_kwargs: dict | None = None, dropout_masks: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The sentence VAE's objective -> (batch-mean loss, per-example terms [B]).

    tokens [B, T], lengths [B]: a ``TextBatch``; eps: [B, latent] standard-normal noise ([k, B, latent]
    for k importance samples); word_mask: [B, T-1] bool or None; prior_z: [M, latent] prior samples
    (objective "mmd"). The objective is ``torchvae.objectives``'s (the ELBO, InfoVAE, the IWAE bound) of
    the text task's terms (``sentence_terms``), with the KL weighed by ``kl_weight`` (its schedule)
    and made the free-bits KL (``free_bits_kl``). Terms per sentence:

    - ``recon``: token cross-entropy summed over each sentence, the <eos> target included (the mean
      over the k samples for the IWAE);
    - ``kl``: the true analytic KL(q(z|x) || N(0, I)), summed over latent dimensions;
    - ``mmd``: MMD(z, prior_z) of the batch (z sampled from q(z|x) with eps), broadcast; 0 for elbo;
    - ``total``: what is optimised, per example. The loss is ``mean(total)``.
    """
    logits, mean, logvar, z = model(tokens, lengths, eps, word_mask, dropout_masks, packed=True)
    return sentence_objective(logits, mean, logvar, z, tokens, lengths, eps=eps, kl_weight=kl_weight,
                              free_bits=free_bits, objective=objective, alpha=alpha, lam=lam, prior_z=prior_z,
                              mmd_kwargs=mmd_kwargs)


def sentence_terms(logits: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor,
                   eps: torch.Tensor | None, tokens: torch.Tensor, lengths: torch.Tensor,
                   free_bits: float = 0.0) -> PerExample:
    """The text task's per-example terms from the model's outputs: the token NLL summed per sentence
    (per sample: [k, B] when z is [k, B, latent]), the analytic KL and the free-bits KL that is optimised.
    logits [B, T-1, vocab] ([k * B, T-1, vocab], sample-major rows, with k samples) or packed
    (``token_nll``); mean, logvar [B, latent]."""
    if z.dim() == 3:  # k samples per sentence: the decoder read every sentence k times
        k, b = z.shape[0], z.shape[1]
        recon = token_nll(logits, tokens.repeat(k, 1), lengths.repeat(k)).reshape(k, b)
    else:
        recon = token_nll(logits, tokens, lengths)
    kl_dims = gaussian_kl_per_dim(mean, logvar)
    return PerExample(recon, kl_dims.sum(1), free_bits_kl(kl_dims, free_bits), z, eps, logvar)


def sentence_objective(
    logits: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor, z: torch.Tensor, tokens: torch.Tensor,
    lengths: torch.Tensor, *,
    eps: torch.Tensor | None = None, kl_weight: float = 1.0, free_bits: float = 0.0, objective: str = "elbo",
    alpha: float = 0.0, lam: float = 1.0, prior_z: torch.Tensor | None = None, mmd_kwargs: dict | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``sentence_loss`` from the model's outputs (see ``sentence_terms``; ``eps``: the IWAE's)."""
    terms = sentence_terms(logits, mean, logvar, z, eps, tokens, lengths, free_bits)
    return objectives.objective(objective, terms, Weights(kl_weight, alpha, lam, prior_z, mmd_kwargs or {}))

"""Evaluation of a ``SentenceVAE`` over a split in JAX (one z ~ q(z|x) per sentence, no dropout);
the twin of ``torchvae/text_eval.py``."""

from __future__ import annotations

from collections.abc import Iterable

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvae.text_model import SentenceVAE, gaussian_kl_per_dim, token_nll
from vaecore import rng
from vaecore.data.text_data import TextBatch, text_eval_summary


@nnx.jit
def _eval_terms(model: SentenceVAE, tokens, lengths, eps):
    logits, mean, logvar, _ = model(tokens, lengths, eps)
    return token_nll(logits, tokens, lengths).sum(), gaussian_kl_per_dim(mean, logvar).sum(), mean, logvar


def evaluate_text(model: SentenceVAE, batches: Iterable[TextBatch], *, seed: int = 0,
                  keep_posteriors: bool = False, shard=None) -> dict:
    """Summed recon and KL over a split with one z ~ q(z|x) per sentence, no dropout.

    Returns ``text_eval_summary``: recon, kl, neg_elbo (= recon + kl) per sentence, the sentence and
    target-token counts, and the perplexity bound exp(sum(recon + kl) / tokens); with
    ``keep_posteriors`` also the posterior ``mean`` and ``logvar`` of every sentence (numpy [N, D]).
    ``shard``: a ``jaxvae.parallel.Sharder`` that splits each batch across the devices."""
    rows, fetch = (shard.rows, shard.fetch) if shard is not None else (jnp.asarray, np.asarray)
    was_training = not model.embedding_dropout.deterministic
    model.eval()
    recon = kl = 0.0
    sentences = tokens = 0
    means, logvars = [], []
    dtype = model.to_mean.kernel[...].dtype
    try:
        for i, b in enumerate(batches):
            eps = rows(np.asarray(rng.eval_noise(seed, i, len(b.lengths), model.config.latent_dim), dtype))
            r, k, mean, logvar = _eval_terms(model, rows(b.tokens), rows(b.lengths), eps)
            recon, kl = recon + float(r), kl + float(k)
            sentences, tokens = sentences + len(b.lengths), tokens + b.num_targets
            if keep_posteriors:
                means.append(fetch(mean))
                logvars.append(fetch(logvar))
    finally:
        if was_training:
            model.train()
    out = text_eval_summary(recon, kl, sentences, tokens)
    if keep_posteriors:
        out.update(mean=np.concatenate(means), logvar=np.concatenate(logvars))
    return out

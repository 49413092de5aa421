"""Evaluation of a ``SentenceVAE`` over a split in PyTorch (one z ~ q(z|x) per sentence, no dropout);
the twin of ``jaxvae/text_eval.py``."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from torchvae import parallel
from torchvae.text_model import SentenceVAE, gaussian_kl_per_dim, token_nll
from vaecore import rng
from vaecore.data.text_data import TextBatch, text_eval_summary


@torch.no_grad()
def evaluate_text(model: SentenceVAE, batches: Iterable[TextBatch], *, seed: int = 0,
                  keep_posteriors: bool = False) -> dict:
    """Summed recon and KL over a split with one z ~ q(z|x) per sentence, no dropout.

    Returns ``text_eval_summary``: recon, kl, neg_elbo (= recon + kl) per sentence, the sentence and
    target-token counts, and the perplexity bound exp(sum(recon + kl) / tokens); with
    ``keep_posteriors`` also the posterior ``mean`` and ``logvar`` of every sentence (numpy [N, D]).
    In a data-parallel run each process evaluates its rows of every batch and the figures are
    gathered (every process returns the whole split's)."""
    if parallel.active():
        return _evaluate_text_sharded(model, batches, seed=seed, keep_posteriors=keep_posteriors)
    was_training = model.training
    model.eval()
    param = model.to_mean.weight
    recon = kl = 0.0
    sentences = tokens = 0
    means, logvars = [], []
    try:
        for i, b in enumerate(batches):
            eps = torch.as_tensor(rng.eval_noise(seed, i, len(b.lengths), model.config.latent_dim),
                                  dtype=param.dtype, device=param.device)
            t = torch.as_tensor(b.tokens, device=param.device)
            n = torch.as_tensor(b.lengths, device=param.device)
            logits, mean, logvar, _ = model(t, n, eps)
            recon += float(token_nll(logits, t, n).sum())
            kl += float(gaussian_kl_per_dim(mean, logvar).sum())
            sentences, tokens = sentences + len(b.lengths), tokens + b.num_targets
            if keep_posteriors:
                means.append(mean.detach().cpu().numpy())
                logvars.append(logvar.detach().cpu().numpy())
    finally:
        model.train(was_training)
    out = text_eval_summary(recon, kl, sentences, tokens)
    if keep_posteriors:
        out.update(mean=np.concatenate(means), logvar=np.concatenate(logvars))
    return out


def _evaluate_text_sharded(model: SentenceVAE, batches: Iterable[TextBatch], *, seed: int,
                           keep_posteriors: bool) -> dict:
    """``evaluate_text`` in a process group: this process's rows of each batch (the global batch's
    noise rows), then every process's per-sentence figures gathered in the batches' order."""
    was_training = model.training
    model.eval()
    param = model.to_mean.weight
    latent = model.config.latent_dim
    parts, sentences, tokens = [], 0, 0  # per batch: (recon [b], kl [b], mean [b, D], logvar [b, D])
    try:
        for i, b in enumerate(batches):
            eps = parallel.my_rows(rng.eval_noise(seed, i, len(b.lengths), latent))
            tok, lens = parallel.my_rows(b.tokens), parallel.my_rows(b.lengths)
            sentences, tokens = sentences + len(b.lengths), tokens + b.num_targets
            if len(lens) == 0:  # a batch shorter than the number of processes
                empty = np.zeros((0, latent), np.float64)
                parts.append((np.zeros(0), np.zeros(0), empty, empty))
                continue
            t, n = torch.as_tensor(tok, device=param.device), torch.as_tensor(lens, device=param.device)
            logits, mean, logvar, _ = model(t, n, torch.as_tensor(eps, dtype=param.dtype, device=param.device))
            parts.append(tuple(a.detach().cpu().numpy() for a in (
                token_nll(logits, t, n), gaussian_kl_per_dim(mean, logvar).sum(1), mean, logvar)))
    finally:
        model.train(was_training)
    ranks = parallel.gather_objects(parts)
    columns = [[np.concatenate([rank[i][c] for rank in ranks]) for i in range(len(parts))] for c in range(4)]
    recon, kl = (float(sum(a.sum() for a in col)) for col in columns[:2])
    out = text_eval_summary(recon, kl, sentences, tokens)
    if keep_posteriors:
        out.update(mean=np.concatenate(columns[2]), logvar=np.concatenate(columns[3]))
    return out

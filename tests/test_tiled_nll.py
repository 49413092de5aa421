"""The evaluation's tiled NLL (``tiled_token_nll``: logsumexp over tiles of positions, the target logit
as a dot product, torch skipping the padding) equals the training loss's ``token_nll`` on the full
logits, in each backend, for untied, tied and tied-with-projection output layers, with tiles smaller
than, equal to and larger than the batch's positions."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx

from jaxvae import text_model as jtm
from torchvae import text_model as ttm
from vaecore.settings.text_config import TextModelConfig

CONFIGS = {
    "untied": {"tie_embeddings": False},
    "tied": {"tie_embeddings": True, "embed_dim": 16},
    "tied-projection": {"tie_embeddings": True, "rnn": "gru", "z_every_step": True},
}


def batch(vocab: int, seed: int = 0):
    """Sentences of different lengths (2 = <bos> <eos> only, up to the full width), padded with 0."""
    rng = np.random.default_rng(seed)
    lengths = np.array([9, 2, 5, 9, 3, 7], np.int64)
    tokens = np.zeros((len(lengths), 9), np.int64)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(4, vocab, n)
    return tokens, lengths


def config(name: str) -> TextModelConfig:
    sizes = {"vocab_size": 37, "embed_dim": 12, "hidden_dim": 16, "latent_dim": 5, **CONFIGS[name]}
    return TextModelConfig(embedding_dropout=0.0, output_dropout=0.0, **sizes)


@pytest.mark.parametrize("tile", [1, 7, 48, 1000])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_jax_tiled_equals_token_nll(name, tile):
    with jax.enable_x64():
        vae = jtm.SentenceVAE(config(name), rngs=nnx.Rngs(0), param_dtype=np.float64)
        vae.eval()
        tokens, lengths = batch(37)
        z = np.random.default_rng(1).standard_normal((len(lengths), 5))
        full = jtm.token_nll(vae.decode(tokens[:, :-1], z), tokens, lengths)
        tiled = jtm.tiled_token_nll(vae, vae.decoder_states(tokens[:, :-1], z), tokens, lengths, tile=tile)
        np.testing.assert_allclose(np.asarray(tiled), np.asarray(full), rtol=1e-12, atol=1e-12)
        assert float(full[1]) > 0  # <eos> alone is a target too
        assert np.all(np.asarray(full) > 0)


@pytest.mark.parametrize("tile", [1, 7, 48, 1000])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_torch_tiled_equals_token_nll(name, tile):
    torch.manual_seed(0)
    vae = ttm.SentenceVAE(config(name)).double().eval()
    tokens, lengths = (torch.from_numpy(a) for a in batch(37))
    z = torch.from_numpy(np.random.default_rng(1).standard_normal((len(lengths), 5)))
    with torch.no_grad():
        full = ttm.token_nll(vae.decode(tokens[:, :-1], z), tokens, lengths)
        tiled = ttm.tiled_token_nll(vae, vae.decoder_states(tokens[:, :-1], z), tokens, lengths, tile=tile)
    np.testing.assert_allclose(tiled.numpy(), full.numpy(), rtol=1e-12, atol=1e-12)
    assert np.all(full.numpy() > 0)


def test_padding_does_not_leak():
    """Changing the tokens after a sentence's end changes neither backend's NLL."""
    tokens, lengths = batch(37)
    other = tokens.copy()
    for i, n in enumerate(lengths):
        other[i, n:] = 5
    torch.manual_seed(0)
    t_vae = ttm.SentenceVAE(config("untied")).double().eval()
    z = torch.from_numpy(np.random.default_rng(1).standard_normal((len(lengths), 5)))
    with torch.no_grad():
        a, b = (ttm.tiled_token_nll(t_vae, t_vae.decoder_states(torch.from_numpy(x)[:, :-1], z),
                                    torch.from_numpy(x), torch.from_numpy(lengths), tile=4) for x in (tokens, other))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    with jax.enable_x64():
        j_vae = jtm.SentenceVAE(config("untied"), rngs=nnx.Rngs(0), param_dtype=np.float64)
        a, b = (jtm.tiled_token_nll(j_vae, j_vae.decoder_states(x[:, :-1], z.numpy()), x, lengths, tile=4)
                for x in (tokens, other))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("objective", ["elbo", "iwae", "mmd"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_torch_packed_training_loss_equals_the_full_logits(name, objective):
    """torch's training path (``sentence_loss``) computes the vocabulary layer at the target positions
    only (``packed=True``); its loss, terms and every parameter's gradient equal those of the full
    [B, T-1, vocab] logits, in float64, with dropout masks and word dropout, for each objective."""
    torch.manual_seed(0)
    sizes = {"vocab_size": 37, "embed_dim": 12, "hidden_dim": 16, "latent_dim": 5, **CONFIGS[name]}
    cfg = TextModelConfig(embedding_dropout=0.3, output_dropout=0.3, word_dropout=0.2, **sizes)
    vae = ttm.SentenceVAE(cfg).double().train()
    tokens, lengths = (torch.from_numpy(a) for a in batch(37))
    rng = np.random.default_rng(2)
    k = 3 if objective == "iwae" else 1
    b, t = tokens.shape[0], tokens.shape[1] - 1
    eps = torch.from_numpy(rng.standard_normal((k, b, 5) if k > 1 else (b, 5)))
    word_mask = torch.from_numpy(rng.random((b, t)) < 0.2)
    masks = tuple(torch.from_numpy((rng.random((k * b, t, f)) > 0.3) / 0.7) for f in (cfg.embed_dim, 16))
    prior_z = torch.from_numpy(rng.standard_normal((8, 5))) if objective == "mmd" else None
    kwargs = {"kl_weight": 0.7, "free_bits": 0.1 if objective != "iwae" else 0.0, "objective": objective,
              "alpha": 0.5, "lam": 10.0, "prior_z": prior_z}

    def run(packed: bool):
        vae.zero_grad()
        logits, mean, logvar, z = vae(tokens, lengths, eps, word_mask, masks, packed=packed)
        mk = {key: kwargs[key] for key in ("kl_weight", "free_bits", "objective", "alpha", "lam", "prior_z")}
        loss, terms = ttm.sentence_objective(logits, mean, logvar, z, tokens, lengths, eps=eps, **mk)
        loss.backward()
        return logits.shape, float(loss.detach()), {n: v.detach().numpy() for n, v in terms.items()}, \
            {n: p.grad.clone().numpy() for n, p in vae.named_parameters() if p.grad is not None}

    full_shape, full_loss, full_terms, full_grads = run(False)
    packed_shape, packed_loss, packed_terms, packed_grads = run(True)
    assert full_shape == (k * b, t, 37) and packed_shape == (k * int((lengths - 1).sum()), 37)
    np.testing.assert_allclose(packed_loss, full_loss, rtol=1e-12)
    for n in full_terms:
        np.testing.assert_allclose(packed_terms[n], full_terms[n], rtol=1e-12, atol=1e-12)
    assert full_grads.keys() == packed_grads.keys() and len(full_grads) > 5
    for n in full_grads:
        np.testing.assert_allclose(packed_grads[n], full_grads[n], rtol=1e-10, atol=1e-12, err_msg=n)
    # and sentence_loss itself takes the packed path
    loss, _ = ttm.sentence_loss(vae, tokens, lengths, eps, word_mask, dropout_masks=masks, **kwargs)
    np.testing.assert_allclose(float(loss.detach()), full_loss, rtol=1e-12)

"""Evaluation parity: the same weights and the same importance samples through both backends give
the same metrics (importance-sampled log p(x), reconstruction, KL, posterior, MI, and the whole-split
summary with NLL, ELBO, MI, active units and perplexity).

Image VAE (MLP and conv) and sentence VAE (LSTM, GRU bidirectional), weights initialised in one
backend and imported into the other (both directions), float32 and float64.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch
from flax import nnx

import jaxvae.evaluation as jev
import torchvae.evaluation as tev
from jaxvae import models as jm
from jaxvae import text_model as jtm
from jaxvae.params import export_params as jax_export
from jaxvae.params import import_params as jax_import
from parity_tests.util import TOL, assert_trees_close, jax_precision
from torchvae import models as tm
from torchvae import text_model as ttm
from torchvae.params import export_params as torch_export
from torchvae.params import import_params as torch_import
from vaecore.data.text_data import TextBatch
from vaecore.scoring import evaluation as core
from vaecore.settings.config import ImageModelConfig
from vaecore.settings.text_config import TextModelConfig

K, BATCH = 24, 6
IMAGE_MODELS = {
    "mlp": ImageModelConfig(kind="mlp", latent_dim=5, hidden_sizes=(32, 16)),
    "conv": ImageModelConfig(kind="conv", latent_dim=5, conv_channels=(4, 8), conv_dense=32),
}
TEXT_MODELS = {
    "lstm": TextModelConfig(vocab_size=40, embed_dim=12, hidden_dim=16, latent_dim=5, embedding_dropout=0.0,
                            output_dropout=0.0, tie_embeddings=False),
    "gru-bi": TextModelConfig(vocab_size=40, embed_dim=12, hidden_dim=16, latent_dim=5, rnn="gru",
                              bidirectional=True, z_every_step=True, embedding_dropout=0.0,
                              output_dropout=0.0, tie_embeddings=True),
}
SUMMARY_KEYS = ("nll", "neg_elbo", "recon", "kl", "mi")


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def image_models(name: str, dtype: str, direction: str):
    """(torch adapter, jax adapter) holding the same weights, initialised on the ``direction`` side."""
    cfg = IMAGE_MODELS[name]
    torch.manual_seed(0)
    t_vae = tm.VAE(cfg).to(getattr(torch, dtype))
    graphdef, state = nnx.split(jm.VAE(cfg, rngs=nnx.Rngs(1)))
    nnx.replace_by_pure_dict(state, jax.tree.map(lambda a: a.astype(dtype), nnx.to_pure_dict(state)))
    j_vae = nnx.merge(graphdef, state)
    if direction == "torch->jax":
        jax_import(j_vae, torch_export(t_vae))
    else:
        torch_import(t_vae, jax_export(j_vae))
    return tev.ImageModel(t_vae), jev.ImageModel(j_vae, cfg.latent_dim)


def text_models(name: str, dtype: str, direction: str):
    cfg = TEXT_MODELS[name]
    torch.manual_seed(0)
    t_vae = ttm.SentenceVAE(cfg).to(getattr(torch, dtype))
    j_vae = jtm.SentenceVAE(cfg, rngs=nnx.Rngs(1), param_dtype=np.dtype(dtype))
    if direction == "torch->jax":
        jax_import(j_vae, torch_export(t_vae))
    else:
        torch_import(t_vae, jax_export(j_vae))
    return tev.TextModel(t_vae), jev.TextModel(j_vae)


def image_batches(n: int = 2 * BATCH) -> list[np.ndarray]:
    x = (np.random.default_rng(2).random((n, 784)) < 0.3).astype(np.float32)
    return [x[:BATCH], x[BATCH:]]


def text_batches() -> list[TextBatch]:
    rng = np.random.default_rng(3)
    batches = []
    for lengths in ([9, 3, 6, 2, 5, 4], [7, 7, 3, 8, 2, 6]):
        tokens = np.zeros((len(lengths), 16), np.int32)
        for b, n in enumerate(lengths):
            tokens[b, 0], tokens[b, n - 1] = 1, 2
            tokens[b, 1:n - 1] = rng.integers(3, 40, size=n - 2)
        batches.append(TextBatch(tokens, np.array(lengths, np.int32)))
    return batches


def compare(t_model, j_model, batches, dtype: str, **options) -> None:
    tol = TOL[dtype]["value"]
    eps = np.random.default_rng(4).standard_normal((K, core.batch_length(batches[0]), t_model.latent_dim))
    chunks = [eps[:10], eps[10:]]
    t_terms = tev.importance_terms(t_model, t_model.prepare(batches[0]), chunks)
    j_terms = jev.importance_terms(j_model, j_model.prepare(batches[0]), chunks)
    assert_trees_close(t_terms, j_terms, what="importance terms", **tol)
    mi = {"mi": np.array(tev.mutual_information(t_terms["mean"], t_terms["logvar"], eps[0]))}
    assert_trees_close(mi, {"mi": np.array(jev.mutual_information(t_terms["mean"], t_terms["logvar"], eps[0]))},
                       what="mutual information", **tol)
    t_out = tev.evaluate_split(t_model, batches, k=K, seed=5, mi_batch_size=BATCH, **options)
    j_out = jev.evaluate_split(j_model, batches, k=K, seed=5, mi_batch_size=BATCH, **options)
    keys = SUMMARY_KEYS + (("ppl", "ppl_elbo") if "count_tokens" in options else ())
    assert_trees_close({k: np.array(t_out[k]) for k in keys}, {k: np.array(j_out[k]) for k in keys},
                       what="split summary", **tol)
    assert t_out["au"] == j_out["au"] and t_out.get("tokens") == j_out.get("tokens")
    assert_trees_close({"var": np.array(t_out["au_variances"])}, {"var": np.array(j_out["au_variances"])},
                       what="posterior-mean variances", **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["torch->jax", "jax->torch"])
@pytest.mark.parametrize("name", list(IMAGE_MODELS))
def test_image_metrics_agree(name, direction, dtype):
    with jax_precision(dtype):
        t_model, j_model = image_models(name, dtype, direction)
        compare(t_model, j_model, image_batches(), dtype, chunk_rows=4 * BATCH)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["torch->jax", "jax->torch"])
@pytest.mark.parametrize("name", list(TEXT_MODELS))
def test_text_metrics_agree(name, direction, dtype):
    with jax_precision(dtype):
        t_model, j_model = text_models(name, dtype, direction)
        compare(t_model, j_model, text_batches(), dtype, chunk_rows=4 * BATCH, count_tokens=lambda b: b.num_targets)

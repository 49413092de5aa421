"""The Transformer decoder's twins agree (issue 35): from shared weights and shared noise, the forward
pass, every objective's terms and every parameter's gradient within 1e-10 in float64 for each way z
enters (memory, embedding, both), both position codes, odd sizes (width 15 in 3 heads of 5, a
feed-forward of 7, an embedding narrower than the width), the importance-weighted bound and the
language model; the key/value-cache decoding step equals teacher forcing; greedy, beam and sampled
decoding give identical ids in both backends."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxvae import decoding as jdec
from jaxvae import text_model as jtm
from jaxvae.params import export_params as jax_export
from jaxvae.params import import_params as jax_import
from parity_tests.test_text_parity import (
    BATCH,
    LATENT,
    LENGTHS,
    OBJECTIVES,
    VOCAB,
    canonical_grads,
    jax_inputs,
    jax_run,
    make_inputs,
    np_tree,
    torch_inputs,
    torch_loss,
)
from parity_tests.util import TOL, assert_trees_close, jax_precision
from torchvae import decoding as tdec
from torchvae import text_model as ttm
from torchvae.params import export_params as torch_export
from torchvae.params import import_params as torch_import
from vaecore.settings.text_config import TextModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# (z_injection, positions, embed_dim, tie_embeddings, use_latent)
CASES = [
    ("memory", "sinusoidal", 15, True, True),
    ("embedding", "learned", 15, True, True),
    ("both", "sinusoidal", 12, True, True),  # input and output projections (embedding narrower than width)
    ("both", "learned", 12, False, True),  # untied output layer
    ("memory", "sinusoidal", 15, True, False),  # the language model with the same decoder
]
IDS = [f"{z}-{p}-e{e}-{'tied' if t else 'untied'}{'' if u else '-lm'}" for z, p, e, t, u in CASES]


def make_config(case, **kw) -> TextModelConfig:
    z, positions, embed, tied, latent = case
    return TextModelConfig(vocab_size=VOCAB, embed_dim=embed, hidden_dim=15, latent_dim=LATENT, decoder="transformer",
                           z_injection=z, positions=positions, transformer_layers=2, transformer_heads=3,
                           transformer_ff=7, embedding_dropout=0.0, output_dropout=0.0, tie_embeddings=tied,
                           use_latent=latent, **kw)


def torch_grads(model, x, objective) -> tuple[float, dict[str, np.ndarray]]:
    """Every parameter's gradient; 0 for the parameters the loss does not reach (the language model's encoder)."""
    model.zero_grad(set_to_none=True)
    loss, _ = torch_loss(model, x, OBJECTIVES[objective])
    loss.backward()
    return float(loss.detach()), {n: (np.zeros(p.shape) if p.grad is None else p.grad.numpy().copy())
                                  for n, p in model.named_parameters()}


def assert_objective_agrees(tmodel, jmodel, tx, j_results, name: str, tol) -> dict[str, np.ndarray]:
    """Objective ``name``'s loss and terms, then every gradient, torch against ``jax_run``'s results;
    returns torch's gradients."""
    with torch.no_grad():
        t_loss, t_terms = torch_loss(tmodel, tx, OBJECTIVES[name])
    (j_loss, (_, j_terms)), j_state = j_results[name]
    assert_trees_close({"loss": np.asarray(j_loss), **np_tree(j_terms)},
                       {"loss": t_loss.numpy(), **np_tree(t_terms)}, **tol["value"], what=f"{name} terms")
    _, t_grads = torch_grads(tmodel, tx, name)
    assert_trees_close(canonical_grads(jmodel, j_state), t_grads, **tol["grad"], what=f"{name} gradients")
    return t_grads


def make_pair(cfg: TextModelConfig, dtype: str, source: str):
    torch.manual_seed(0)
    tmodel = ttm.SentenceVAE(cfg).to(getattr(torch, dtype)).eval()
    jmodel = jtm.SentenceVAE(cfg, rngs=nnx.Rngs(1), param_dtype=getattr(jnp, dtype))
    jmodel.eval()
    if source == "torch":
        jax_import(jmodel, torch_export(tmodel))
    else:
        torch_import(tmodel, jax_export(jmodel))
    return tmodel, jmodel


@pytest.mark.parametrize("source", ["torch", "jax"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_terms_and_gradients_float64(case, source):
    tol = TOL["float64"]
    with jax_precision("float64"):
        tmodel, jmodel = make_pair(make_config(case), "float64", source)
        inputs = make_inputs("float64")
        j_results = jax_run(jmodel, jax_inputs(inputs))
        tx = torch_inputs(inputs)
        with torch.no_grad():
            t_logits, *_ = tmodel(tx["tokens"], tx["lengths"], tx["eps"], tx["word_mask"])
        j_logits = j_results["elbo"][0][1][0][0]
        valid = np.arange(inputs["tokens"].shape[1] - 1)[None, :] < (LENGTHS - 1)[:, None]
        assert_trees_close({"logits": np.asarray(j_logits)[valid]}, {"logits": t_logits.numpy()[valid]},
                           **tol["value"], what="logits")
        for name, spec in OBJECTIVES.items():
            if not case[4] and spec["objective"] != "elbo":
                continue  # the language model trains the ELBO only
            t_grads = assert_objective_agrees(tmodel, jmodel, tx, j_results, name, tol)
            decoder = [k for k in t_grads if k.startswith(("decoder_transformer", "latent_to_"))]
            assert len(decoder) > 20 and all(np.abs(t_grads[k]).max() > 0 for k in decoder if "latent_to" not in k)
            if case[4]:  # z reaches the loss through every map of it
                assert all(np.abs(t_grads[k]).max() > 0 for k in decoder)


def test_float32_forward_and_gradients():
    with jax_precision("float32"):
        tmodel, jmodel = make_pair(make_config(CASES[2]), "float32", "torch")
        inputs = make_inputs("float32")
        (j_loss, _), j_state = jax_run(jmodel, jax_inputs(inputs))["elbo"]
        t_loss, t_grads = torch_grads(tmodel, torch_inputs(inputs), "elbo")
        assert_trees_close({"loss": np.asarray(j_loss)}, {"loss": np.array(t_loss)}, **TOL["float32"]["value"],
                           what="loss")
        assert_trees_close(canonical_grads(jmodel, j_state), t_grads, **TOL["float32"]["grad"], what="gradients")


def test_importance_weighted_bound_float64():
    """k = 3 posterior samples per sentence: the decoder reads every sentence three times."""
    spec = {"objective": "iwae"}
    with jax_precision("float64"):
        tmodel, jmodel = make_pair(make_config(CASES[2]), "float64", "jax")
        eps = np.random.default_rng(3).standard_normal((3, BATCH, LATENT))
        inputs = make_inputs("float64")
        t_loss, t_terms = ttm.sentence_loss(tmodel, torch.as_tensor(inputs["tokens"]), torch.as_tensor(inputs["lengths"]),
                                            torch.as_tensor(eps), **spec)
        j_loss, j_terms = jtm.sentence_loss(jmodel, jnp.asarray(inputs["tokens"]), jnp.asarray(inputs["lengths"]),
                                            jnp.asarray(eps), **spec)
        assert_trees_close({"loss": np.asarray(j_loss), **np_tree(j_terms)},
                           {"loss": t_loss.detach().numpy(), **np_tree(t_terms)}, **TOL["float64"]["value"], what="iwae")


@pytest.mark.parametrize("case", CASES[:3], ids=IDS[:3])
def test_cached_decoding_steps_equal_teacher_forcing(case):
    """The key/value cache gives, position by position, the teacher-forced logits (both backends)."""
    with jax_precision("float64"):
        tmodel, jmodel = make_pair(make_config(case), "float64", "torch")
        inputs = make_inputs("float64")
        tokens, z = inputs["tokens"][:, :-1], inputs["eps"]
        T = tokens.shape[1]
        with torch.no_grad():
            forced = tmodel.decode(torch.as_tensor(tokens), torch.as_tensor(z)).numpy()
            state, steps = tmodel.initial_state(torch.as_tensor(z), T), []
            for t in range(T):
                logits, state = tmodel.decoder_step(torch.as_tensor(tokens[:, t]), state, torch.as_tensor(z))
                steps.append(logits.numpy())
        np.testing.assert_allclose(np.stack(steps, 1), forced, rtol=1e-11, atol=1e-12)
        state, steps = jmodel.initial_state(jnp.asarray(z), T), []
        for t in range(T):
            logits, state = jmodel.decoder_step(jnp.asarray(tokens[:, t]), state, jnp.asarray(z))
            steps.append(np.asarray(logits))
        np.testing.assert_allclose(np.stack(steps, 1), forced, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["greedy", "beam", "sample"])
def test_decoding_gives_identical_ids(method):
    """Shared weights and z: the JAX compiled loops and torch's step-by-step search pick the same ids."""
    with jax_precision("float32"):
        tmodel, jmodel = make_pair(make_config(CASES[2]), "float32", "torch")
        z = np.random.default_rng(4).standard_normal((5, LATENT)).astype(np.float32) * 3
        kw = {"beam_width": 3} if method == "beam" else {"temperature": 0.8, "seed": 3} if method == "sample" else {}
        t_ids = tdec.decode(tmodel, z, method=method, max_len=12, **kw)
        j_ids = jdec.decode(jmodel, z, method=method, max_len=12, **kw)
    assert t_ids == j_ids
    assert sum(len(ids) for ids in t_ids) > 5  # not all empty sentences


def test_heads_that_do_not_divide_the_width_are_refused():
    with pytest.raises(ValueError, match="does not split into --transformer-heads 4"):
        make_config(CASES[0]).__class__(**{**make_config(CASES[0]).to_dict(), "transformer_heads": 4})


def test_torch_dropout_masks_cover_every_site():
    """In training the torch model takes one mask per ``dropout_sites`` entry, in order: all-ones masks
    give the evaluation pass, a mask that zeroes one site changes the logits, a wrong count is refused."""
    cfg = make_config(CASES[2], attention_dropout=0.1, residual_dropout=0.2)
    torch.manual_seed(0)
    model = ttm.SentenceVAE(cfg).double()
    x = torch_inputs(make_inputs("float64"))
    inputs, z = x["tokens"][:, :-1], x["eps"]
    sites = cfg.dropout_sites(inputs.shape[1])
    assert len(sites) == 1 + 2 * 5 + 1  # embedding, 2 blocks x (attention, self, memory, ff hidden, ff out), output
    ones = [torch.ones((BATCH, *shape), dtype=torch.float64) for _, shape in sites]
    model.eval()
    reference = model.decode(inputs, z).detach()
    model.train()
    np.testing.assert_allclose(model.decode(inputs, z, dropout_masks=tuple(ones)).detach(), reference, rtol=1e-12,
                               atol=1e-14)
    for i in (1, 3, len(sites) - 1):
        masks = list(ones)
        masks[i] = torch.zeros_like(masks[i])
        assert not torch.allclose(model.decode(inputs, z, dropout_masks=tuple(masks)), reference)
    with pytest.raises(ValueError, match="dropout masks"):
        model.decode(inputs, z, dropout_masks=(*ones, ones[-1]))


# the Transformer encoder (--encoder transformer): (decoder, positions, embed_dim)
ENCODER_CASES = [("transformer", "sinusoidal", 15), ("rnn", "learned", 12)]


def encoder_config(case) -> TextModelConfig:
    decoder, positions, embed = case
    return TextModelConfig(vocab_size=VOCAB, embed_dim=embed, hidden_dim=15, latent_dim=LATENT, encoder="transformer",
                           decoder=decoder, positions=positions, transformer_layers=2, transformer_heads=3,
                           transformer_ff=7, embedding_dropout=0.0, output_dropout=0.0)


@pytest.mark.parametrize("source", ["torch", "jax"])
@pytest.mark.parametrize("case", ENCODER_CASES, ids=[f"{d}-decoder-{p}-e{e}" for d, p, e in ENCODER_CASES])
def test_transformer_encoder_terms_and_gradients_float64(case, source):
    """The posterior, every objective's terms and every gradient, the encoder's included, within 1e-10."""
    tol = TOL["float64"]
    with jax_precision("float64"):
        tmodel, jmodel = make_pair(encoder_config(case), "float64", source)
        inputs = make_inputs("float64")
        tx = torch_inputs(inputs)
        with torch.no_grad():
            t_post = tmodel.encode(tx["tokens"], tx["lengths"])
        j_post = jmodel.encode(jnp.asarray(inputs["tokens"]), jnp.asarray(inputs["lengths"]))
        assert_trees_close({"mean": np.asarray(j_post[0]), "logvar": np.asarray(j_post[1])},
                           {"mean": t_post[0].numpy(), "logvar": t_post[1].numpy()}, **tol["value"], what="posterior")
        j_results = jax_run(jmodel, jax_inputs(inputs))
        for name in OBJECTIVES:
            t_grads = assert_objective_agrees(tmodel, jmodel, tx, j_results, name, tol)
            encoder = [k for k in t_grads if k.startswith("encoder_transformer")]
            assert len(encoder) >= 2 * 8 + 2 and all(np.abs(t_grads[k]).max() > 0 for k in encoder)
        assert not any(k.startswith("encoder_rnn") for k in t_grads)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_transformer_encoder_ignores_padding(backend):
    """A sentence's posterior does not depend on the padding after it, nor on the other sentences of its
    batch: encoded alone (no padding) it is the same as in the batch."""
    with jax_precision("float64"):
        tmodel, jmodel = make_pair(encoder_config(ENCODER_CASES[0]), "float64", "torch")
        inputs = make_inputs("float64")
        tokens, lengths = inputs["tokens"], inputs["lengths"]

        def encode(t, n):
            if backend == "torch":
                with torch.no_grad():
                    return np.stack([a.numpy() for a in tmodel.encode(torch.as_tensor(t), torch.as_tensor(n))])
            return np.stack([np.asarray(a) for a in jmodel.encode(jnp.asarray(t), jnp.asarray(n))])

        batch = encode(tokens, lengths)
        i = int(np.argmin(lengths))
        assert lengths[i] < tokens.shape[1]  # the shortest sentence is padded in the batch
        alone = encode(tokens[i:i + 1, :lengths[i]], lengths[i:i + 1])
        np.testing.assert_allclose(alone[:, 0], batch[:, i], rtol=1e-12, atol=1e-13)
        changed = tokens.copy()
        changed[i, lengths[i]:] = 5  # words where the padding was
        np.testing.assert_allclose(encode(changed, lengths)[:, i], batch[:, i], rtol=1e-12, atol=1e-13)

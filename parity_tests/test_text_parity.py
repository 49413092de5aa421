"""Sentence VAE: the same weights, batch and noise through both backends.

For LSTM and GRU, uni- and bidirectional, 1 and 2 layers, untied and tied output embeddings, with
padded sentences of different lengths and explicit eps / word-dropout masks / prior samples,
initialised in one backend and imported into the other (both directions): exact parameter round
trip, equal encoder outputs, logits at valid positions, loss terms (ELBO with kl weight and free
bits; MMD objective with RBF and IMQ kernels), gradients of every parameter, and parameters after 5
Adam steps; in float32 and float64. Embedding and output dropout are off (torch eval mode, nnx
deterministic).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from jaxvae import text_eval as jte
from jaxvae import text_model as jtm
from jaxvae.params import export_params as jax_export
from jaxvae.params import import_params as jax_import
from parity_tests.util import TOL, assert_exact, assert_trees_close, jax_precision
from torchvae import text_eval as tte
from torchvae import text_model as ttm
from torchvae.params import export_params as torch_export
from torchvae.params import import_params as torch_import
from vaecore.settings.text_config import TextModelConfig

VOCAB, EMBED, HIDDEN, LATENT, BATCH = 50, 12, 16, 6, 4
LENGTHS = np.array([9, 3, 6, 2], dtype=np.int32)  # <bos> ... <eos>; the last is an empty sentence

# (rnn, bidirectional, num_layers, z_every_step, decoder_init_tanh, output layer): "untied" is a
# linear to the vocabulary; "tied" reuses the embedding through output_projection (HIDDEN != EMBED);
# "tied-same" has hidden == embed, so the embedding is applied to the RNN output directly
CASES = [
    ("lstm", False, 1, False, False, "untied"),
    ("gru", False, 1, True, False, "tied"),
    ("lstm", True, 2, True, True, "tied"),
    ("gru", True, 2, False, True, "untied"),
    ("lstm", False, 1, False, False, "tied-same"),
]
CASE_IDS = [f"{r}-{'bi' if b else 'uni'}-l{n}{'-zstep' if z else ''}{'-tanh' if t else ''}-{o}"
            for r, b, n, z, t, o in CASES]

ELBO = {"objective": "elbo", "kl_weight": 0.7, "free_bits": 0.03}
OBJECTIVES = {
    "elbo": ELBO,
    "mmd-rbf": {"objective": "mmd", "alpha": 0.3, "lam": 10.0, "kl_weight": 1.0,
                "mmd_kwargs": {"kernel": "rbf", "bandwidth": "2d"}},
    "mmd-imq": {"objective": "mmd", "alpha": 1.0, "lam": 5.0, "kl_weight": 0.5, "free_bits": 0.05,
                "mmd_kwargs": {"kernel": "imq", "bandwidth": [1.0, 2.0]}},
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")



def make_config(case) -> TextModelConfig:
    rnn, bi, layers, zstep, tanh, output = case
    return TextModelConfig(vocab_size=VOCAB, embed_dim=EMBED, hidden_dim=EMBED if output == "tied-same" else HIDDEN,
                           latent_dim=LATENT, rnn=rnn, num_layers=layers, bidirectional=bi, z_every_step=zstep,
                           decoder_init_tanh=tanh, embedding_dropout=0.0, output_dropout=0.0,
                           tie_embeddings=output != "untied")


def make_inputs(dtype: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    T = 10
    tokens = np.zeros((BATCH, T), np.int32)
    for b, n in enumerate(LENGTHS):
        tokens[b, 0], tokens[b, n - 1] = 1, 2
        tokens[b, 1 : n - 1] = rng.integers(3, VOCAB, size=n - 2)
    return {
        "tokens": tokens,
        "lengths": LENGTHS.copy(),
        "eps": rng.standard_normal((BATCH, LATENT)).astype(dtype),
        "word_mask": rng.random((BATCH, T - 1)) < 0.3,
        "prior_z": rng.standard_normal((7, LATENT)).astype(dtype),
    }


def make_pair(case, dtype: str, source: str):
    """(torch model, jax model, canonical params) with equal weights, initialised in ``source``."""
    cfg = make_config(case)
    torch.manual_seed(0)
    tmodel = ttm.SentenceVAE(cfg).to(getattr(torch, dtype)).eval()
    jmodel = jtm.SentenceVAE(cfg, rngs=nnx.Rngs(1), param_dtype=getattr(jnp, dtype))
    jmodel.eval()
    if source == "torch":
        params = torch_export(tmodel)
        jax_import(jmodel, params)
    else:
        params = jax_export(jmodel)
        torch_import(tmodel, params)
    return tmodel, jmodel, params


def torch_inputs(inputs):
    return {k: torch.as_tensor(v) for k, v in inputs.items()}


def jax_inputs(inputs):
    return {k: jnp.asarray(v) for k, v in inputs.items()}


def torch_loss(model, x, spec):
    return ttm.sentence_loss(model, x["tokens"], x["lengths"], x["eps"], x["word_mask"],
                             prior_z=x["prior_z"], **spec)


def jax_loss(model, x, spec):
    return jtm.sentence_loss(model, x["tokens"], x["lengths"], x["eps"], x["word_mask"],
                             prior_z=x["prior_z"], **spec)


def np_tree(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v.detach().numpy() if isinstance(v, torch.Tensor) else v) for k, v in tree.items()}


@nnx.jit
def jax_run(model, x):
    """Per objective: (loss, (outputs, terms)) and the gradient State, in one compiled function:
    one forward pass, and the three objectives' backward passes as one vmapped VJP (one compilation
    per model structure and dtype keeps the suite fast)."""
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    names = list(OBJECTIVES)

    def losses(params):
        outputs = nnx.merge(graphdef, params, rest)(x["tokens"], x["lengths"], x["eps"], x["word_mask"])
        results = [jtm.sentence_objective(*outputs, x["tokens"], x["lengths"], prior_z=x["prior_z"],
                                          **OBJECTIVES[n]) for n in names]
        return jnp.stack([loss for loss, _ in results]), (outputs, [terms for _, terms in results])

    values, vjp_fn, (outputs, terms) = jax.vjp(losses, params, has_aux=True)
    (grads,) = jax.vmap(vjp_fn)(jnp.eye(len(names), dtype=values.dtype))
    return {
        n: ((values[i], (outputs, terms[i])), jax.tree.map(lambda g, i=i: g[i], grads))
        for i, n in enumerate(names)
    }


def canonical_grads(model, grads) -> dict[str, np.ndarray]:
    """A gradient State in canonical names and layouts: written into a clone, then exported."""
    holder = nnx.clone(model)
    nnx.update(holder, grads)
    return jax_export(holder)


def torch_grads(model, x, objective) -> tuple[float, dict[str, np.ndarray]]:
    model.zero_grad()
    loss, _ = torch_loss(model, x, OBJECTIVES[objective])
    loss.backward()
    return float(loss.detach()), {n: p.grad.numpy().copy() for n, p in model.named_parameters()}


ADAM = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}
OPTAX_ADAM = optax.adam(ADAM["lr"], b1=ADAM["betas"][0], b2=ADAM["betas"][1], eps=ADAM["eps"])


@jax.jit
def optax_adam_step(params, grads, opt_state):
    updates, opt_state = OPTAX_ADAM.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


DTYPES = ["float32", "float64"]
SOURCES = ["torch", "jax"]


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_param_round_trip_exact(case, dtype, source):
    with jax_precision(dtype):
        tmodel, jmodel, params = make_pair(case, dtype, source)
        assert_exact(torch_export(tmodel), params, "torch export")
        assert_exact(jax_export(jmodel), params, "jax export")
        assert all(v.dtype == np.dtype(dtype) for v in params.values())


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward_and_losses(case, dtype, source):
    tol = TOL[dtype]["value"]
    with jax_precision(dtype):
        tmodel, jmodel, _ = make_pair(case, dtype, source)
        inputs = make_inputs(dtype)
        tx, jx = torch_inputs(inputs), jax_inputs(inputs)
        with torch.no_grad():
            t_logits, t_mean, t_logvar, t_z = tmodel(tx["tokens"], tx["lengths"], tx["eps"], tx["word_mask"])
        j_results = jax_run(jmodel, jx)
        j_logits, j_mean, j_logvar, j_z = j_results["elbo"][0][1][0]
        assert j_logits.dtype == jnp.dtype(dtype)
        valid = np.arange(inputs["tokens"].shape[1] - 1)[None, :] < (LENGTHS - 1)[:, None]
        assert_trees_close(
            {"mean": np.asarray(j_mean), "logvar": np.asarray(j_logvar), "z": np.asarray(j_z),
             "logits": np.asarray(j_logits)[valid]},
            {"mean": t_mean.numpy(), "logvar": t_logvar.numpy(), "z": t_z.numpy(), "logits": t_logits.numpy()[valid]},
            **tol, what=f"forward {dtype}",
        )
        for name, spec in OBJECTIVES.items():
            with torch.no_grad():
                t_loss, t_terms = torch_loss(tmodel, tx, spec)
            (j_loss, (_, j_terms)), _ = j_results[name]
            assert_trees_close(
                {"loss": np.asarray(j_loss), **np_tree(j_terms)}, {"loss": t_loss.numpy(), **np_tree(t_terms)},
                **tol, what=f"{name} loss terms {dtype}",
            )
            if spec["objective"] == "mmd":
                assert float(t_terms["mmd"][0]) != 0.0


def test_free_bits_floor_is_active_and_reported_kl_is_true():
    """The case above really exercises free bits: some dimensions are floored, some are not."""
    torch.manual_seed(0)
    tmodel = ttm.SentenceVAE(make_config(CASES[0])).double().eval()
    x = torch_inputs(make_inputs("float64"))
    with torch.no_grad():
        _, mean, logvar, _ = tmodel(x["tokens"], x["lengths"], x["eps"])
        kl_dims = ttm.gaussian_kl_per_dim(mean, logvar)
        _, terms = torch_loss(tmodel, x, ELBO)
    batch_kl = kl_dims.mean(0).numpy()
    assert (batch_kl < ELBO["free_bits"]).any() and (batch_kl >= ELBO["free_bits"]).any()
    np.testing.assert_allclose(terms["kl"].numpy(), kl_dims.sum(1).numpy(), rtol=1e-14)
    floored = np.maximum(batch_kl, ELBO["free_bits"]).sum()
    np.testing.assert_allclose(
        terms["total"].mean().numpy(), terms["recon"].mean().numpy() + ELBO["kl_weight"] * floored, rtol=1e-12
    )


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradients(case, dtype, source):
    """Gradients of every parameter for each objective; a failure names the worst parameter."""
    with jax_precision(dtype):
        tmodel, jmodel, _ = make_pair(case, dtype, source)
        inputs = make_inputs(dtype)
        j_results = jax_run(jmodel, jax_inputs(inputs))
    for objective in OBJECTIVES:
        t_loss, t_grads = torch_grads(tmodel, torch_inputs(inputs), objective)
        (j_loss, _), j_state = j_results[objective]
        j_loss, j_grads = float(j_loss), canonical_grads(jmodel, j_state)
        assert_trees_close({"loss": np.array(j_loss)}, {"loss": np.array(t_loss)}, **TOL[dtype]["value"],
                           what=f"{objective} loss")
        assert_trees_close(j_grads, t_grads, **TOL[dtype]["grad"], what=f"{objective} gradients {dtype}")
        # the gradient reaches every parameter, so the comparison is not vacuous
        assert all(np.abs(g).max() > 0 for g in t_grads.values())


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_five_adam_steps(case, dtype, source):
    """torch.optim.Adam and optax.adam agree (both add eps to sqrt(v_hat), outside the root).

    Adam divides each gradient by its own running scale, so a gradient's relative error passes
    into the update unchanged: parameters are held to the gradient tolerance."""
    with jax_precision(dtype):
        tmodel, jmodel, _ = make_pair(case, dtype, source)
        t_opt = torch.optim.Adam(tmodel.parameters(), **ADAM)
        params = nnx.state(jmodel, nnx.Param)
        opt_state = OPTAX_ADAM.init(params)
        for step in range(5):
            inputs = make_inputs(dtype, seed=step)
            t_opt.zero_grad()
            torch_loss(tmodel, torch_inputs(inputs), ELBO)[0].backward()
            t_opt.step()
            _, grads = jax_run(jmodel, jax_inputs(inputs))["elbo"]
            params, opt_state = optax_adam_step(params, grads, opt_state)
            nnx.update(jmodel, params)
        assert_trees_close(jax_export(jmodel), torch_export(tmodel), **TOL[dtype]["grad"],
                           what=f"params after 5 Adam steps {dtype}")


def test_evaluate_text_agrees():
    """The split evaluation helpers give the same sums from the same weights (shared eval noise)."""
    from vaecore.data.text_data import TextDataset, Vocab

    rng = np.random.default_rng(5)
    words = [f"w{i}" for i in range(VOCAB - 4)]
    sents = [list(rng.choice(words, size=rng.integers(1, 12))) for _ in range(10)]
    dataset = TextDataset(sents, Vocab(words))
    with jax_precision("float32"):
        tmodel, jmodel, _ = make_pair(CASES[1], "float32", "torch")
        t_eval = tte.evaluate_text(tmodel, dataset.batches(4, shuffle=False), seed=2)
        j_eval = jte.evaluate_text(jmodel, dataset.batches(4, shuffle=False), seed=2)
    assert t_eval["sentences"] == j_eval["sentences"] == 10
    assert t_eval["tokens"] == j_eval["tokens"] == sum(len(s) + 1 for s in sents)
    assert_trees_close({k: np.array(v) for k, v in j_eval.items()}, {k: np.array(v) for k, v in t_eval.items()},
                       **TOL["float32"]["value"], what="evaluate_text")

"""The sentence IWAE (``--task text --loss iwae``): the bound against a numpy computation from the
model's own per-sample reconstructions, k = 1 against the ELBO with a sampled KL, and torch against
JAX (terms and gradients) from the same weights and noise."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jaxvae.text_model as jtm
import torchvae.text_model as ttm
from parity_tests.test_text_parity import CASE_IDS, CASES, canonical_grads, make_inputs, make_pair
from parity_tests.util import TOL, assert_trees_close, jax_precision

K = 4
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def iwae_inputs(dtype: str, k: int = K) -> dict[str, np.ndarray]:
    inputs = make_inputs(dtype)
    rng = np.random.default_rng(7)
    inputs["eps"] = rng.standard_normal((k, *inputs["eps"].shape)).astype(dtype)
    return inputs


def torch_iwae(model, x: dict[str, np.ndarray]):
    t = {k: torch.as_tensor(v) for k, v in x.items()}
    return ttm.sentence_loss(model, t["tokens"], t["lengths"], t["eps"], t["word_mask"], objective="iwae")


def test_the_bound_against_numpy_and_k1_against_the_sampled_elbo():
    with jax_precision("float64"):
        tmodel, _, _ = make_pair(CASES[0], "float64", "torch")
    x = iwae_inputs("float64")
    with torch.no_grad():
        loss, terms = torch_iwae(tmodel, x)
        t = {k: torch.as_tensor(v) for k, v in x.items()}
        mean, logvar = (a.numpy() for a in tmodel.encode(t["tokens"], t["lengths"]))
        # each sample's reconstruction through the ELBO path (its recon term is -log p(x|z_i))
        recon_k = np.stack([ttm.sentence_loss(tmodel, t["tokens"], t["lengths"], t["eps"][i], t["word_mask"])[1]["recon"]
                            .numpy() for i in range(K)])
    eps = x["eps"]
    z = mean + np.exp(0.5 * logvar) * eps
    log_w = -recon_k + 0.5 * (eps**2 - z**2 + logvar).sum(-1)
    bound = -(np.log(np.mean(np.exp(log_w - log_w.max(0)), 0)) + log_w.max(0))
    np.testing.assert_allclose(terms["total"].numpy(), bound, rtol=1e-12)
    np.testing.assert_allclose(float(loss), bound.mean(), rtol=1e-12)
    np.testing.assert_allclose(terms["recon"].numpy(), recon_k.mean(0), rtol=1e-12)
    kl = 0.5 * (np.exp(logvar) + mean**2 - 1 - logvar).sum(-1)
    np.testing.assert_allclose(terms["kl"].numpy(), kl, rtol=1e-12)
    # k = 1: the ELBO with the single-sample KL estimate log q(z|x) - log p(z)
    with torch.no_grad():
        _, one = torch_iwae(tmodel, {**x, "eps": eps[:1]})
    np.testing.assert_allclose(one["total"].numpy(), recon_k[0] + 0.5 * (z[0] ** 2 - eps[0] ** 2 - logvar).sum(-1),
                               rtol=1e-12)
    assert np.all(terms["total"].numpy() <= recon_k.mean(0) + 0.5 * (z**2 - eps**2 - logvar).sum(-1).mean(0) + 1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES[:2], ids=CASE_IDS[:2])
def test_torch_and_jax_agree(case, dtype):
    tol = TOL[dtype]
    with jax_precision(dtype):
        tmodel, jmodel, _ = make_pair(case, dtype, "torch")
        x = iwae_inputs(dtype)
        t_loss, t_terms = torch_iwae(tmodel, x)
        tmodel.zero_grad()
        t_loss.backward()
        t_grads = {n: p.grad.numpy().copy() for n, p in tmodel.named_parameters()}

        graphdef, params, rest = nnx.split(jmodel, nnx.Param, ...)

        def loss_fn(p):
            model = nnx.merge(graphdef, p, rest)
            return jtm.sentence_loss(model, jnp.asarray(x["tokens"]), jnp.asarray(x["lengths"]), jnp.asarray(x["eps"]),
                                     jnp.asarray(x["word_mask"]), objective="iwae")

        (j_loss, j_terms), j_grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        assert_trees_close({"loss": np.asarray(j_loss), **{k: np.asarray(v) for k, v in j_terms.items()}},
                           {"loss": t_loss.detach().numpy(), **{k: v.detach().numpy() for k, v in t_terms.items()}},
                           **tol["value"], what=f"iwae terms {dtype}")
        assert_trees_close(canonical_grads(jmodel, j_grads), t_grads, **tol["grad"], what=f"iwae grads {dtype}")
        assert all(np.abs(g).max() > 0 for g in t_grads.values())  # every parameter takes part

"""The shared objectives (``jaxvae.objectives``, ``torchvae.objectives``): the same per-example terms
through both backends give the same loss, terms and gradients (with respect to every input term),
in float64 within 1e-10, for each objective and with the KL weighed apart from the reported KL (the
text task's free bits)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxvae.objectives as jo
import torchvae.objectives as to
from parity_tests.util import TOL, assert_trees_close, jax_precision
from vaecore.settings.objectives import Weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")
B, D, K, M = 5, 3, 4, 6
GRAD_INPUTS = ("recon", "kl_term", "z", "eps", "logvar")  # the terms an objective can differentiate
CASES = {
    "elbo": ("elbo", {"kl_weight": 0.7}),
    "mmd-imq": ("mmd", {"kl_weight": 0.5, "alpha": 0.3, "lam": 10.0,
                        "mmd": {"kernel": "imq", "bandwidth": (1.0, 2.0), "estimator": "unbiased"}}),
    "mmd-rbf": ("mmd", {"alpha": 1.0, "lam": 5.0, "mmd": {"kernel": "rbf", "bandwidth": "2d", "estimator": "biased"}}),
    "iwae": ("iwae", {}),
}


def inputs(name: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    lead = (K,) if name == "iwae" else ()
    mean, logvar = rng.normal(size=(B, D)), rng.normal(size=(B, D))
    eps = rng.normal(size=(*lead, B, D))
    return {"recon": rng.random((*lead, B)) * 40, "kl": rng.random(B) * 5, "kl_term": rng.random(B) * 5 + 0.5,
            "z": mean + np.exp(0.5 * logvar) * eps, "eps": eps, "logvar": logvar, "prior_z": rng.normal(size=(M, D))}


def torch_run(name: str, x: dict[str, np.ndarray]):
    objective, spec = CASES[name]
    t = {k: torch.tensor(v, requires_grad=k in GRAD_INPUTS) for k, v in x.items()}
    terms = to.PerExample(*(t[k] for k in to.PerExample._fields))
    loss, out = to.objective(objective, terms, Weights(prior_z=t["prior_z"], **spec))
    loss.backward()
    grads = {k: t[k].grad.numpy() if t[k].grad is not None else np.zeros_like(x[k]) for k in GRAD_INPUTS}
    return float(loss.detach()), {k: v.detach().numpy() for k, v in out.items()}, grads


def jax_run(name: str, x: dict[str, np.ndarray]):
    objective, spec = CASES[name]
    prior_z = jnp.asarray(x["prior_z"])

    def loss_fn(diff):
        terms = jo.PerExample(**{k: diff[k] if k in diff else jnp.asarray(x[k]) for k in jo.PerExample._fields})
        return jo.objective(objective, terms, Weights(prior_z=prior_z, **spec))

    (loss, out), grads = jax.value_and_grad(loss_fn, has_aux=True)({k: jnp.asarray(x[k]) for k in GRAD_INPUTS})
    return float(loss), {k: np.asarray(v) for k, v in out.items()}, {k: np.asarray(v) for k, v in grads.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_objectives_agree_across_backends(name):
    x = inputs(name)
    with jax_precision("float64"):
        j_loss, j_terms, j_grads = jax_run(name, x)
    t_loss, t_terms, t_grads = torch_run(name, x)
    tol = TOL["float64"]
    assert_trees_close({"loss": np.array(j_loss)}, {"loss": np.array(t_loss)}, **tol["value"], what=f"{name} loss")
    assert list(t_terms) == ["recon", "kl", "mmd", "total"] and sorted(j_terms) == sorted(t_terms)
    assert_trees_close(j_terms, t_terms, **tol["value"], what=f"{name} terms")
    assert_trees_close(j_grads, t_grads, **tol["grad"], what=f"{name} gradients")
    # the gradient reaches what the objective weighs: the KL term (none for the IWAE, and InfoVAE's
    # weight kl_weight (1 - alpha) is 0 at alpha 1) and, for the IWAE and InfoVAE, the samples z
    assert np.any(t_grads["kl_term"] != 0) == (name not in ("iwae", "mmd-rbf"))
    assert np.any(t_grads["z"] != 0) == (name != "elbo")

"""Image VAE / InfoVAE parity: the same weights, inputs and noise through both backends.

For each model (MLP, conv), each objective (ELBO, InfoVAE with RBF, with IMQ), both directions
(weights initialised in torch and moved to JAX, and the reverse), float32 and float64: the exact
round trip of the canonical parameters, encoder outputs, decoder logits, every loss term, the
gradient of every parameter, and the parameters after 5 Adam steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

import jaxvae.losses as jl
import jaxvae.models as jm
import torchvae.losses as tl
import torchvae.models as tm
from jaxvae.params import export_params as jax_export
from jaxvae.params import import_params as jax_import
from parity_tests.util import TOL, assert_exact, assert_trees_close
from torchvae.params import export_params as torch_export
from torchvae.params import import_params as torch_import
from vaecore.settings.config import ImageModelConfig, LossConfig

BATCH = 8
LR = 1e-3
MODELS = {
    "mlp": ImageModelConfig(kind="mlp", latent_dim=6, hidden_sizes=(32, 16)),
    "conv": ImageModelConfig(kind="conv", latent_dim=6, conv_channels=(4, 8), conv_dense=32),
    "mlp-delta": ImageModelConfig(kind="mlp", latent_dim=6, hidden_sizes=(32, 16), delta_rate=0.2),
    "mlp-tanh": ImageModelConfig(kind="mlp", latent_dim=6, hidden_sizes=(32, 16), activation="tanh"),  # Burda's
}
LOSSES = {
    "elbo": LossConfig(objective="elbo", kl_weight=0.7),
    "mmd-rbf": LossConfig(objective="mmd", alpha=0.5, lam=100.0, kernel="rbf", bandwidth=(0.5, 2.0)),
    "mmd-imq": LossConfig(objective="mmd", alpha=0.0, lam=1000.0, kernel="imq", bandwidth="2d", estimator="biased"),
}


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


def make_inputs(cfg: ImageModelConfig, dtype: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "x": (rng.random((BATCH, 784)) < 0.3).astype(dtype),
        "eps": rng.standard_normal((BATCH, cfg.latent_dim)).astype(dtype),
        "prior_z": rng.standard_normal((BATCH, cfg.latent_dim)).astype(dtype),
    }


class TorchSide:
    def __init__(self, cfg: ImageModelConfig, dtype: str, seed: int):
        torch.manual_seed(seed)
        self.model = tm.VAE(cfg).to(getattr(torch, dtype))

    def params(self):
        return torch_export(self.model)

    def load(self, params):
        torch_import(self.model, params)

    def outputs(self, inp):
        with torch.no_grad():
            mean, logvar = self.model.encode(torch.from_numpy(inp["x"]))
            logits = self.model.decode(torch.from_numpy(inp["eps"]))
        return {"mean": mean.numpy(), "logvar": logvar.numpy(), "logits": logits.numpy()}

    def loss_and_grads(self, inp, loss_cfg):
        self.model.zero_grad()
        t = {k: torch.from_numpy(v) for k, v in inp.items()}
        loss, terms = tl.vae_loss(self.model, t["x"], t["eps"], t["prior_z"], loss_cfg)
        loss.backward()
        grads = {n: p.grad.numpy().copy() for n, p in self.model.named_parameters()}
        return {k: v.detach().numpy() for k, v in terms.items()} | {"loss": loss.detach().numpy()}, grads

    def adam(self, inp, loss_cfg, steps):
        opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        t = {k: torch.from_numpy(v) for k, v in inp.items()}
        for _ in range(steps):
            opt.zero_grad()
            tl.vae_loss(self.model, t["x"], t["eps"], t["prior_z"], loss_cfg)[0].backward()
            opt.step()
        return self.params()


class JaxSide:
    def __init__(self, cfg: ImageModelConfig, dtype: str, seed: int):
        model = jm.VAE(cfg, rngs=nnx.Rngs(seed))
        self.graphdef, state = nnx.split(model)
        self.state = jax.tree.map(lambda a: a.astype(dtype), nnx.to_pure_dict(state))

    @property
    def model(self):
        return nnx.merge(self.graphdef, self.state)

    def params(self):
        return jax_export(self.model)

    def load(self, params):
        model = self.model
        jax_import(model, params)
        self.state = nnx.to_pure_dict(nnx.state(model))

    def canonical(self, tree):
        return jax_export(nnx.merge(self.graphdef, tree))

    def outputs(self, inp):
        mean, logvar = self.model.encode(jnp.asarray(inp["x"]))
        logits = self.model.decode(jnp.asarray(inp["eps"]))
        return {"mean": np.asarray(mean), "logvar": np.asarray(logvar), "logits": np.asarray(logits)}

    def _loss_fn(self, loss_cfg):
        def loss_fn(state, inp):
            loss, terms = jl.vae_loss(nnx.merge(self.graphdef, state), inp["x"], inp["eps"], inp["prior_z"], loss_cfg)
            return loss, terms
        return loss_fn

    def loss_and_grads(self, inp, loss_cfg):
        j = {k: jnp.asarray(v) for k, v in inp.items()}
        (loss, terms), grads = jax.jit(jax.value_and_grad(self._loss_fn(loss_cfg), has_aux=True))(self.state, j)
        return {k: np.asarray(v) for k, v in terms.items()} | {"loss": np.asarray(loss)}, self.canonical(grads)

    def adam(self, inp, loss_cfg, steps):
        tx = optax.adam(LR)
        j = {k: jnp.asarray(v) for k, v in inp.items()}
        grad_fn = jax.jit(jax.grad(lambda s, i: self._loss_fn(loss_cfg)(s, i)[0]))
        opt_state = tx.init(self.state)
        for _ in range(steps):
            updates, opt_state = tx.update(grad_fn(self.state, j), opt_state, self.state)
            self.state = optax.apply_updates(self.state, updates)
        return self.params()


SIDES = {"torch": TorchSide, "jax": JaxSide}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("direction", ["torch->jax", "jax->torch"])
@pytest.mark.parametrize("loss_name", list(LOSSES))
@pytest.mark.parametrize("model_name", list(MODELS))
def test_image_parity(model_name, loss_name, direction, dtype):
    cfg, loss_cfg = MODELS[model_name], LOSSES[loss_name]
    src_name, dst_name = direction.split("->")
    tol = TOL[dtype]
    with jax.enable_x64(dtype == "float64"):
        src = SIDES[src_name](cfg, dtype, seed=3)
        dst = SIDES[dst_name](cfg, dtype, seed=4)
        canonical = src.params()
        assert all(v.dtype == np.dtype(dtype) for v in canonical.values())
        dst.load(canonical)
        assert_exact(dst.params(), canonical, f"round trip {direction}")

        inp = make_inputs(cfg, dtype)
        assert_trees_close(dst.outputs(inp), src.outputs(inp), **tol["value"], what="encoder/decoder outputs")

        terms_src, grads_src = src.loss_and_grads(inp, loss_cfg)
        terms_dst, grads_dst = dst.loss_and_grads(inp, loss_cfg)
        assert_trees_close(terms_dst, terms_src, **tol["value"], what=f"loss terms ({loss_name})")
        if loss_cfg.objective == "mmd":
            assert terms_src["mmd"][0] != 0.0  # the MMD term really takes part
        assert_trees_close(grads_dst, grads_src, **tol["grad"], what=f"gradients ({loss_name})")

        after_src = src.adam(inp, loss_cfg, steps=5)
        after_dst = dst.adam(inp, loss_cfg, steps=5)
        assert_trees_close(after_dst, after_src, **tol["grad"], what="parameters after 5 Adam steps")


def test_import_rejects_bad_params():
    cfg = MODELS["mlp"]
    good = TorchSide(cfg, "float32", 0).params()
    for side in (TorchSide(cfg, "float32", 1), JaxSide(cfg, "float32", 1)):
        missing = dict(good)
        missing.pop("encoder.mean.bias")
        with pytest.raises(KeyError, match="encoder.mean.bias"):
            side.load(missing)
        with pytest.raises(KeyError, match="unexpected"):
            side.load(good | {"extra.weight": np.zeros(3, np.float32)})
        wrong = dict(good)
        wrong["encoder.layers.0.weight"] = np.zeros((3, 3), np.float32)
        with pytest.raises(ValueError, match="encoder.layers.0.weight"):
            side.load(wrong)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("model_name", ["mlp", "conv"])
def test_iwae_parity(model_name, dtype):
    """The importance-weighted bound (k = 5 samples per image): terms, gradients and 5 Adam steps."""
    cfg, loss_cfg = MODELS[model_name], LossConfig(objective="iwae", iw_samples=5)
    tol = dict(TOL[dtype])
    if dtype == "float32":
        # log w is about -540 nats, where a float32 ulp is 3e-5: the softmax over the k importance
        # weights turns that rounding into relative weight errors of ~1e-4 that the gradient inherits
        tol["grad"] = {"rtol": 1e-3, "atol": 1e-4}
    with jax.enable_x64(dtype == "float64"):
        src, dst = TorchSide(cfg, dtype, seed=3), JaxSide(cfg, dtype, seed=4)
        dst.load(src.params())
        inp = make_inputs(cfg, dtype)
        inp["eps"] = np.random.default_rng(2).standard_normal((5, BATCH, cfg.latent_dim)).astype(dtype)
        terms_src, grads_src = src.loss_and_grads(inp, loss_cfg)
        terms_dst, grads_dst = dst.loss_and_grads(inp, loss_cfg)
        assert_trees_close(terms_dst, terms_src, **tol["value"], what="iwae terms")
        assert_trees_close(grads_dst, grads_src, **tol["grad"], what="iwae gradients")
        assert_trees_close(dst.adam(inp, loss_cfg, steps=5), src.adam(inp, loss_cfg, steps=5), **tol["grad"],
                           what="parameters after 5 Adam steps (iwae)")

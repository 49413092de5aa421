"""The training engines' own evaluation, across backends: with the same weights, the image engines
draw the same evaluation noise (numpy, ``vaecore.rng.eval_noise``), so the validation figures a
run logs (loss terms, MMD, MI, active units) agree between backends."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from jaxvae.params import import_params as jax_import
from jaxvae.train import JaxEngine
from parity_tests.util import TOL, assert_trees_close
from torchvae.params import export_params as torch_export
from torchvae.train import TorchEngine
from vaecore.settings.config import ImageModelConfig, LossConfig, RunConfig, TrainConfig
from vaecore.task import image_task


@pytest.fixture(autouse=True)
def highest_precision():
    with jax.default_matmul_precision("highest"):
        yield


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_image_engines_evaluate_the_same_weights_alike(kind, tmp_path):
    cfg = RunConfig(model=ImageModelConfig(kind=kind, latent_dim=4, hidden_sizes=(32,), conv_channels=(4, 8),
                                           conv_dense=16),
                    loss=LossConfig(objective="mmd", alpha=0.0, lam=100.0, kernel="imq"),
                    train=TrainConfig(dtype="float64", seed=5))
    torch_engine = TorchEngine(cfg, tmp_path / "t")
    jax_engine = JaxEngine(cfg, tmp_path / "j")
    model = jax_engine.model()
    jax_import(model, torch_export(torch_engine.model()))
    jax_engine.params = nnx.to_pure_dict(nnx.state(model, nnx.Param))

    images = (np.random.default_rng(0).random((1100, 784)) < 0.3).astype(np.float64)  # 3 batches, one short
    import jaxvae.evaluation
    import torchvae.evaluation

    t = image_task.evaluate(torch_engine, images, kernels=torchvae.evaluation, seed=5)
    j = image_task.evaluate(jax_engine, images, kernels=jaxvae.evaluation, seed=5)
    assert t["au"] == j["au"] and t["mi_batch_size"] == j["mi_batch_size"]
    assert_trees_close({k: np.asarray(j[k]) for k in ("recon", "kl", "neg_elbo", "mmd", "mi")},
                       {k: np.asarray(t[k]) for k in ("recon", "kl", "neg_elbo", "mmd", "mi")},
                       **TOL["float64"]["value"], what="image evaluation")
    assert t["mmd"] > 0 and t["mi"] > 0

"""Training with --loss mmd goes through the MMD engine's fast path (tiled on CPU), in both backends,
and the InfoVAE step really depends on the MMD term."""

import numpy as np
import pytest

from vaecore.settings.config import ImageModelConfig, LossConfig, RunConfig, TrainConfig


def engine(backend, tmp_path, lam):
    cfg = RunConfig(backend=backend, model=ImageModelConfig(hidden_sizes=(32,), latent_dim=4),
                    loss=LossConfig(objective="mmd", alpha=0.0, lam=lam, kernel="rbf"),
                    train=TrainConfig(batch_size=16))
    if backend == "jax":
        from jaxvae import mmd
        from jaxvae.train import JaxEngine as Engine
    else:
        from torchvae import mmd
        from torchvae.train import TorchEngine as Engine
    return Engine(cfg, tmp_path), mmd


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_mmd_training_step_runs_the_tiled_kernel(backend, tmp_path):
    eng, mmd = engine(backend, tmp_path, lam=1000.0)
    mmd.PATH_COUNTS.clear()
    x = (np.random.default_rng(0).random((16, 784)) < 0.3).astype(np.float32)
    out = eng.train_step(x, 0, eng.cfg.loss.kl_weight, 1.0)
    assert mmd.PATH_COUNTS["tiled"] >= 1 and mmd.PATH_COUNTS["reference"] == 0, dict(mmd.PATH_COUNTS)
    assert out["mmd"] > 0
    np.testing.assert_allclose(out["total"], out["recon"] + out["kl"] + 999.0 * out["mmd"], rtol=1e-5)

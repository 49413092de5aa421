"""jaxvae.train.adam: optax.adam's algorithm and state with one root and one division per element."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxvae.train import adam


def _params(rng):
    return {"w": jnp.asarray(rng.normal(size=(30, 20)), jnp.float32), "b": jnp.asarray(rng.normal(size=20), jnp.float32)}


def _numpy_adam(lr, b1, b2, eps):
    """Kingma and Ba's Algorithm 1 in float64 numpy."""
    state = {}

    def update(name, g, t):
        m, v = state.get(name, (0.0, 0.0))
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        state[name] = (m, v)
        return -lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)

    return update


@pytest.mark.parametrize("b1,b2,eps", [(0.9, 0.999, 1e-8), (0.9, 0.999, 1e-4), (0.5, 0.9, 1e-6)])
def test_adam_follows_the_algorithm_in_float64(b1, b2, eps):
    """60 steps against a float64 numpy Adam fed the same (float32) gradients: each update within
    float32 rounding. optax.adam itself is up to 1e-5 off here (its 1 - b2^t in float32)."""
    rng = np.random.default_rng(0)
    params = _params(rng)
    ours, reference = adam(1e-3, b1=b1, b2=b2, eps=eps), _numpy_adam(1e-3, b1, b2, eps)
    state = ours.init(params)
    for t in range(1, 61):
        # gradients over six orders of magnitude, some of them below eps, and exact zeros
        grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape) * 10 ** rng.uniform(-6, 0), jnp.float32),
                             params)
        grads["b"] = grads["b"].at[:3].set(0.0)
        updates, state = ours.update(grads, state, params)
        for name in grads:
            expected = reference(name, np.asarray(grads[name], np.float64), t)
            # atol: m's float32 rounding is relative to |g|, not to |m| where the average cancels
            np.testing.assert_allclose(np.asarray(updates[name]), expected, rtol=2e-6, atol=1e-6 * 1e-3)
        params = optax.apply_updates(params, updates)
    assert int(state[0].count) == 60


def test_adam_first_step_is_lr_times_the_sign():
    """Hand-derived: at t = 1, m_hat = g and sqrt(v_hat) = |g|, so the update is -lr g / (|g| + eps),
    to float32 rounding (optax.adam misses this by 6.6e-6, relative: its 1 - b2 in float32)."""
    g = jnp.asarray([3.0, -0.5, 2e-3, 0.0], jnp.float32)
    tx = adam(0.01, eps=1e-3)
    updates, _ = tx.update({"p": g}, tx.init({"p": jnp.zeros(4)}))
    expected = -0.01 * np.asarray(g) / (np.abs(np.asarray(g)) + 1e-3)
    np.testing.assert_allclose(np.asarray(updates["p"]), expected, rtol=1e-6)


def test_adam_state_is_optax_adams_so_checkpoints_restore_either_way():
    params = _params(np.random.default_rng(1))
    ours, ref = adam(1e-3).init(params), optax.adam(1e-3).init(params)
    assert jax.tree.structure(ours) == jax.tree.structure(ref)
    assert [(a.shape, a.dtype) for a in jax.tree.leaves(ours)] == [(a.shape, a.dtype) for a in jax.tree.leaves(ref)]
    # a state advanced by optax.adam continues under ours exactly as under optax (within rounding)
    grads = jax.tree.map(jnp.ones_like, params)
    _, state = optax.adam(1e-3).update(grads, ref, params)
    u_ours, _ = adam(1e-3).update(grads, state, params)
    u_ref, _ = optax.adam(1e-3).update(grads, state, params)
    for a, b in zip(jax.tree.leaves(u_ours), jax.tree.leaves(u_ref)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5)


def _torch_image_engine(tmp_path, name):
    from torchvae.train import TorchEngine
    from vaecore.settings.config import ImageModelConfig, LossConfig, RunConfig, TrainConfig

    cfg = RunConfig(backend="torch", model=ImageModelConfig(kind="mlp", hidden_sizes=(16, 12), latent_dim=4),
                    loss=LossConfig(objective="elbo"), train=TrainConfig(batch_size=8, lr=1e-2, device="cpu"))
    return TorchEngine(cfg, tmp_path / name)


def test_torch_engines_step_a_fused_adam_equal_to_the_single_tensor_form(tmp_path):
    """The torch engines' Adam is the fused kernel (both tasks, and the fresh optimiser after
    pretraining), and trains the same parameters as torch's default single-tensor Adam."""
    import torch

    from tests.test_training_modes import config, engine_for

    fused, single = _torch_image_engine(tmp_path, "a"), _torch_image_engine(tmp_path, "b")
    assert fused.opt.param_groups[0]["fused"] is True
    tc = single.cfg.train
    single.opt = torch.optim.Adam(single._model.parameters(), lr=tc.lr, betas=(tc.b1, tc.b2), eps=tc.eps)
    assert not single.opt.param_groups[0]["fused"]
    rng = np.random.default_rng(0)
    for step in range(6):
        x = (rng.random((8, 784)) < 0.3).astype(np.float32)
        fused.train_step(x, step, 1.0, 1.0)
        single.train_step(x, step, 1.0, 1.0)
    changed = False
    for (name, a), b, first in zip(fused._model.state_dict().items(), single._model.state_dict().values(),
                                   _torch_image_engine(tmp_path, "c")._model.state_dict().values()):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
        changed |= not np.allclose(a.numpy(), first.numpy())
    assert changed  # the six steps did train

    text = engine_for("torch", config("torch"), tmp_path / "text")
    assert text.opt.param_groups[0]["fused"] is True
    text.reset_decoder()
    assert text.opt.param_groups[0]["fused"] is True

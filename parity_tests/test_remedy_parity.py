"""The collapse remedies of the sentence VAE through both backends: delta-VAE (bounded posterior
variance), BN-VAE (batch-normalised posterior means, in training mode with batch statistics and in
evaluation mode with the running averages) and the language-model baseline (no latent).

From the same canonical weights and noise: the forward pass, every loss term, the gradient of every
parameter, the running averages after a training-mode forward pass, the evaluation-mode forward
pass, and the parameters after 3 Adam steps; float32 and float64. Dropout is off.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from jaxvae import text_model as jtm
from jaxvae.params import export_params as jax_export
from jaxvae.params import import_params as jax_import
from parity_tests.test_text_parity import ELBO, LENGTHS, make_inputs
from parity_tests.util import TOL, assert_trees_close, jax_precision
from torchvae import text_model as ttm
from torchvae.params import export_params as torch_export
from torchvae.params import import_params as torch_import
from vaecore.settings.text_config import TextModelConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TRANSFORMER = {"decoder": "transformer", "z_injection": "both", "transformer_layers": 2, "transformer_heads": 4,
               "transformer_ff": 12, "attention_dropout": 0.0, "residual_dropout": 0.0}
REMEDIES = {
    "delta": {"delta_rate": 0.3},
    "bn": {"bn_gamma": 0.6},
    "delta-bn-gru": {"delta_rate": 0.1, "bn_gamma": 1.0, "rnn": "gru", "tie_embeddings": False},
    "lm": {"use_latent": False},
    # the Transformer decoder under the same remedies (issue 35): z through the memory and the embeddings
    "delta-bn-transformer": {"delta_rate": 0.1, "bn_gamma": 0.8, **TRANSFORMER},
    "lm-transformer": {"use_latent": False, **{k: v for k, v in TRANSFORMER.items() if k != "z_injection"}},
}
SIDED = {"delta-transformer": {"delta_rate": 0.3, **TRANSFORMER}}  # aggressive training's one-sided steps
MMD = {"objective": "mmd", "alpha": 0.5, "lam": 10.0, "kl_weight": 0.8, "mmd_kwargs": {"kernel": "imq"}}


def make_pair(remedy: str, dtype: str, source: str):
    cfg = TextModelConfig(vocab_size=50, embed_dim=12, hidden_dim=16, latent_dim=6, embedding_dropout=0.0,
                          output_dropout=0.0, **{**REMEDIES, **SIDED}[remedy])
    torch.manual_seed(0)
    tmodel = ttm.SentenceVAE(cfg).to(getattr(torch, dtype))
    jmodel = jtm.SentenceVAE(cfg, rngs=nnx.Rngs(1), param_dtype=getattr(jnp, dtype))
    if remedy != "lm":  # trained weights, not init: the BN shift and running averages away from 0 and 1
        params = torch_export(tmodel)
        rng = np.random.default_rng(3)
        params = {k: (v + 0.1 * rng.standard_normal(v.shape)).astype(v.dtype) if "running" not in k else
                  (np.abs(v + 0.3 * rng.standard_normal(v.shape)) + 0.5).astype(v.dtype) for k, v in params.items()}
        torch_import(tmodel, params)
    if source == "torch":
        jax_import(jmodel, torch_export(tmodel))
    else:
        torch_import(tmodel, jax_export(jmodel))
    return tmodel, jmodel


def jax_train_loss(jmodel, x, spec):
    """(loss, (terms, outputs, new running averages)) and the gradients, training mode, functional."""
    graphdef, params, stats, rest = nnx.split(jmodel, nnx.Param, nnx.BatchStat, ...)
    stats, rest = nnx.to_pure_dict(stats), nnx.to_pure_dict(rest)  # new variables inside the trace

    def loss_fn(p):
        model = nnx.merge(graphdef, p, stats, rest)
        model.train()
        outputs = model(x["tokens"], x["lengths"], x["eps"], x["word_mask"])
        loss, terms = jtm.sentence_objective(*outputs, x["tokens"], x["lengths"], prior_z=x["prior_z"], **spec)
        return loss, (terms, outputs, nnx.state(model, nnx.BatchStat))

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    return loss, aux, grads


def canonical(jmodel, state) -> dict[str, np.ndarray]:
    holder = nnx.clone(jmodel)
    nnx.update(holder, state)
    return jax_export(holder)


def split_inputs(inputs):
    return ({k: torch.as_tensor(v) for k, v in inputs.items()}, {k: jnp.asarray(v) for k, v in inputs.items()})


@pytest.mark.parametrize("source", ["torch", "jax"])
# the Transformer in float64 only: its float32 logits differ by a few ulps more than TOL allows through two
# blocks of perturbed weights; its float32 loss and gradients are in parity_tests/test_transformer_parity.py
@pytest.mark.parametrize("remedy, dtype", [(r, d) for r in REMEDIES for d in ("float32", "float64")
                                           if "transformer" not in r or d == "float64"])
@pytest.mark.parametrize("objective", ["elbo", "mmd"])
def test_train_mode_forward_losses_gradients_and_running_averages(remedy, dtype, source, objective):
    spec = ELBO if objective == "elbo" else MMD
    tol = TOL[dtype]
    with jax_precision(dtype):
        tmodel, jmodel = make_pair(remedy, dtype, source)
        before = torch_export(tmodel)
        tx, jx = split_inputs(make_inputs(dtype))
        tmodel.train()
        tmodel.zero_grad()
        t_out = tmodel(tx["tokens"], tx["lengths"], tx["eps"], tx["word_mask"])
        t_loss, t_terms = ttm.sentence_objective(*t_out, tx["tokens"], tx["lengths"], prior_z=tx["prior_z"], **spec)
        t_loss.backward()
        j_loss, (j_terms, j_out, j_stats), j_grads = jax_train_loss(jmodel, jx, spec)
    valid = np.arange(9)[None, :] < (LENGTHS - 1)[:, None]
    names = ("logits", "mean", "logvar", "z")
    assert_trees_close(
        {"loss": np.asarray(j_loss), **{k: np.asarray(v) for k, v in j_terms.items()},
         **{n: np.asarray(o)[valid] if n == "logits" else np.asarray(o) for n, o in zip(names, j_out)}},
        {"loss": t_loss.detach().numpy(), **{k: v.detach().numpy() for k, v in t_terms.items()},
         **{n: o.detach().numpy()[valid] if n == "logits" else o.detach().numpy() for n, o in zip(names, t_out)}},
        **tol["value"], what=f"{remedy} forward and {objective} terms")
    t_grads = {n: p.grad.numpy() for n, p in tmodel.named_parameters() if p.grad is not None}
    j_all = canonical(jmodel, j_grads)
    if "bn_gamma" in REMEDIES[remedy]:
        # batch normalisation removes the mean: the bias before it has no gradient (zero up to rounding)
        scale = max(float(np.abs(g).max()) for g in t_grads.values())
        for grads in (t_grads, j_all):
            assert float(np.abs(grads.pop("to_mean.bias")).max()) <= 10 * tol["value"]["rtol"] * scale
    assert_trees_close({k: j_all[k] for k in t_grads}, t_grads, **tol["grad"], what=f"{remedy} gradients")
    # the running averages moved, and moved the same way
    t_buffers = {n: b.numpy() for n, b in tmodel.named_buffers()}
    if remedy.startswith(("bn", "delta-bn")):
        j_bufs = canonical(jmodel, j_stats)
        assert_trees_close({k: j_bufs[k] for k in t_buffers}, t_buffers, **tol["value"], what="running averages")
        assert not np.allclose(t_buffers["posterior.mean_bn.running_var"], before["posterior.mean_bn.running_var"])
    if remedy.startswith("lm"):
        assert float(t_terms["kl"].abs().max()) == 0.0
        assert all(tmodel.get_parameter(n).grad is None for n in ("to_mean.weight", "encoder_rnn.weight_hh_l0"))


@pytest.mark.parametrize("remedy", list(REMEDIES))
def test_eval_mode_forward_uses_running_averages(remedy):
    with jax_precision("float64"):
        tmodel, jmodel = make_pair(remedy, "float64", "torch")
        tx, jx = split_inputs(make_inputs("float64"))
        tmodel.eval()
        jmodel.eval()
        with torch.no_grad():
            t_mean, t_logvar = tmodel.encode(tx["tokens"], tx["lengths"])
        j_mean, j_logvar = jmodel.encode(jx["tokens"], jx["lengths"])
    assert_trees_close({"mean": np.asarray(j_mean), "logvar": np.asarray(j_logvar)},
                       {"mean": t_mean.numpy(), "logvar": t_logvar.numpy()}, **TOL["float64"]["value"],
                       what=f"{remedy} eval encode")
    if remedy == "bn":  # the evaluation-mode mean is the running-average normalisation, by hand
        raw = tmodel.to_mean(torch.cat([tmodel.encoder_rnn(torch.nn.utils.rnn.pack_padded_sequence(
            tmodel.embedding(tx["tokens"][:, 1:]), tx["lengths"] - 1, batch_first=True, enforce_sorted=False))[1][0][0]],
            dim=-1)).detach().numpy()
        bn = tmodel.posterior.mean_bn
        expect = 0.6 * (raw - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + 1e-5) + bn.bias.detach().numpy()
        np.testing.assert_allclose(t_mean.numpy(), expect, rtol=1e-12)


@pytest.mark.parametrize("remedy", ["delta", "bn"])
def test_three_adam_steps(remedy):
    dtype = "float64"
    opt = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}
    tx_adam = optax.adam(opt["lr"], b1=0.9, b2=0.999, eps=1e-8)
    with jax_precision(dtype):
        tmodel, jmodel = make_pair(remedy, dtype, "torch")
        t_opt = torch.optim.Adam(tmodel.parameters(), **opt)
        tmodel.train()
        params = nnx.state(jmodel, nnx.Param)
        opt_state = tx_adam.init(params)
        for step in range(3):
            tx, jx = split_inputs(make_inputs(dtype, seed=step))
            t_opt.zero_grad()
            t_out = tmodel(tx["tokens"], tx["lengths"], tx["eps"], tx["word_mask"])
            ttm.sentence_objective(*t_out, tx["tokens"], tx["lengths"], **ELBO)[0].backward()
            _, (_, _, stats), grads = jax_train_loss(jmodel, jx, ELBO)
            if remedy == "bn":
                # its gradient is rounding noise (BN removes the mean; see above), which Adam scales
                # up to steps of size lr in either direction, and the running mean follows it: hold it
                tmodel.to_mean.bias.grad.zero_()
                pure = nnx.to_pure_dict(grads)
                pure["to_mean"]["bias"] = jnp.zeros_like(pure["to_mean"]["bias"])
                nnx.replace_by_pure_dict(grads, pure)
            t_opt.step()
            updates, opt_state = tx_adam.update(grads, opt_state, params)
            params = optax.apply_updates(params, updates)
            nnx.update(jmodel, params)
            nnx.update(jmodel, stats)
    assert_trees_close(jax_export(jmodel), torch_export(tmodel), **TOL[dtype]["grad"],
                       what=f"{remedy} params and running averages after 3 Adam steps")


@pytest.mark.parametrize("remedy", ["delta", "delta-transformer"])
def test_one_sided_adam_steps_agree(remedy):
    """Aggressive training's updates: torch's Adam skipping the parameters without a gradient and
    the JAX engine's per-side optax states (``sided_adam_update``) give the same parameters after
    encoder-only, decoder-only and joint steps, whose Adam step counts then differ per side."""
    from jaxvae.text_train import sided_adam_update, split_sides
    from vaecore.settings.text_config import module_side

    dtype, parts = "float64", ["encoder", "encoder", "decoder", "all", "encoder", "decoder"]
    opt = {"lr": 1e-2, "betas": (0.9, 0.999), "eps": 1e-8}
    tx_adam = optax.adam(opt["lr"], b1=0.9, b2=0.999, eps=1e-8)
    with jax_precision(dtype):
        tmodel, jmodel = make_pair(remedy, dtype, "torch")
        t_opt = torch.optim.Adam(tmodel.parameters(), **opt)
        graphdef, params, rest = nnx.split(jmodel, nnx.Param, ...)
        params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)
        opt_state = {side: tx_adam.init(tree) for side, tree in split_sides(params).items()}
        for step, part in enumerate(parts):
            tx, jx = split_inputs(make_inputs(dtype, seed=step))
            t_opt.zero_grad()
            ttm.sentence_loss(tmodel, tx["tokens"], tx["lengths"], tx["eps"], tx["word_mask"], **ELBO)[0].backward()
            for name, p in tmodel.named_parameters():
                if part != "all" and module_side(name) != part:
                    p.grad = None
            t_opt.step()

            def loss_fn(p, jx=jx):
                model = nnx.merge(graphdef, p, rest)
                return jtm.sentence_loss(model, jx["tokens"], jx["lengths"], jx["eps"], jx["word_mask"], **ELBO)

            params, opt_state, _ = sided_adam_update(loss_fn, params, opt_state, tx_adam, 1.0, part)
        nnx.update(jmodel, params)
    got, want = jax_export(jmodel), torch_export(tmodel)
    for name in [n for n in want if n.endswith("qkv.bias")]:
        # a key's bias adds q.b to every score of a query, which the softmax removes: its gradient is
        # rounding noise (~1e-17), which Adam scales up to steps of size lr, differently in each backend
        width = want[name].shape[0] // 3
        key_got, key_want = got[name][width: 2 * width], want[name][width: 2 * width]
        assert np.abs(key_got - key_want).max() <= 2 * len(parts) * opt["lr"]
        got[name], want[name] = np.delete(got[name], np.s_[width: 2 * width]), np.delete(want[name], np.s_[width: 2 * width])
    assert_trees_close(got, want, **TOL[dtype]["grad"], what="params after one-sided Adam steps")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_image_bn_vae_training_mode_loss_gradients_running_averages_and_eval_mode(dtype):
    """The image VAE with BN-VAE's posterior head: train-mode loss terms and gradients (the encoder's
    mean bias, which BN makes irrelevant, has a zero gradient in both), the running averages after
    the step, and the evaluation-mode posterior from them."""
    import jaxvae.losses as jl
    import jaxvae.models as jm
    import torchvae.losses as tl
    import torchvae.models as tm
    from vaecore.settings.config import ImageModelConfig, LossConfig

    cfg = ImageModelConfig(kind="mlp", latent_dim=4, hidden_sizes=(16,), bn_gamma=0.8, delta_rate=0.05)
    loss_cfg = LossConfig(objective="elbo")
    rng = np.random.default_rng(2)
    x = (rng.random((10, 784)) < 0.3).astype(dtype)
    eps = rng.standard_normal((10, 4)).astype(dtype)
    tol = TOL[dtype]
    with jax_precision(dtype):
        torch.manual_seed(0)
        tmodel = tm.VAE(cfg).to(getattr(torch, dtype)).train()
        graphdef, params, stats = nnx.split(jm.VAE(cfg, rngs=nnx.Rngs(0)), nnx.Param, nnx.BatchStat)
        jmodel = nnx.merge(graphdef, *(jax.tree.map(lambda a: a.astype(dtype), nnx.to_pure_dict(t))
                                       for t in (params, stats)))
        jax_import(jmodel, torch_export(tmodel))
        graphdef, params, stats = nnx.split(jmodel, nnx.Param, nnx.BatchStat)
        params, stats = nnx.to_pure_dict(params), nnx.to_pure_dict(stats)

        def loss_fn(p):
            model = nnx.merge(graphdef, p, stats)
            loss, terms = jl.vae_loss(model, jnp.asarray(x), jnp.asarray(eps), None, loss_cfg)
            return loss, (terms, nnx.state(model, nnx.BatchStat))

        (j_loss, (j_terms, j_stats)), j_grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        t_loss, t_terms = tl.vae_loss(tmodel, torch.as_tensor(x), torch.as_tensor(eps), None, loss_cfg)
        t_loss.backward()
        nnx.update(jmodel, j_stats)
        j_grad_c = canonical(jmodel, nnx.State(j_grads) if not isinstance(j_grads, nnx.State) else j_grads)
        tmodel.eval()
        jmodel.eval()
        with torch.no_grad():
            t_eval = tmodel.encode(torch.as_tensor(x))
        j_eval = jmodel.encode(jnp.asarray(x))
    assert_trees_close({"loss": np.asarray(j_loss), **{k: np.asarray(v) for k, v in j_terms.items()}},
                       {"loss": t_loss.detach().numpy(), **{k: v.detach().numpy() for k, v in t_terms.items()}},
                       **tol["value"], what="image BN-VAE loss terms")
    t_grads = {n: p.grad.numpy() for n, p in tmodel.named_parameters()}
    for grads in (t_grads, j_grad_c):
        assert float(np.abs(grads.pop("encoder.mean.bias")).max()) <= 10 * tol["value"]["rtol"]
    assert_trees_close({k: j_grad_c[k] for k in t_grads}, t_grads, **tol["grad"], what="image BN-VAE gradients")
    t_all, j_all = torch_export(tmodel), jax_export(jmodel)
    running = [k for k in t_all if "running" in k]
    assert running and not np.allclose(t_all[running[1]], 1.0)
    assert_trees_close({k: j_all[k] for k in running}, {k: t_all[k] for k in running}, **tol["value"],
                       what="image BN-VAE running averages")
    assert_trees_close({"mean": np.asarray(j_eval[0]), "logvar": np.asarray(j_eval[1])},
                       {"mean": t_eval[0].numpy(), "logvar": t_eval[1].numpy()}, **tol["value"],
                       what="image BN-VAE evaluation-mode posterior")

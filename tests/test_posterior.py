"""The defining properties of the posterior heads (vaecore.posterior, jaxvae/torchvae posterior.py):
the delta-VAE's committed rate holds for any encoder output, BN-VAE's batch statistics bound the
KL from below, the language-model baseline's posterior is the prior and its decoder ignores z."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from jaxvae.posterior import PosteriorHead as JaxHead
from torchvae.posterior import PosteriorHead as TorchHead
from vaecore.posterior import BN_EPS, DELTA_SIGMA_LOWER, delta_logvar_bounds, delta_rate_kl, delta_sigma_upper

RATES = [1e-4, 0.01, 0.1, 0.15, 0.5, 1.0, 3.0]


def kl_per_dim(mean, logvar):
    mean, logvar = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
    return 0.5 * (np.exp(logvar) + mean**2 - 1.0 - logvar)


@pytest.mark.parametrize("rate", RATES)
def test_solved_sigma_upper_gives_exactly_the_rate_at_mean_zero(rate):
    sigma = delta_sigma_upper(rate)
    assert 0 < sigma < 1
    assert delta_rate_kl(sigma) == pytest.approx(rate, rel=1e-12, abs=1e-15)
    # by hand: 0.5 (s^2 - 1 - log s^2) at the solved s
    assert 0.5 * (sigma**2 - 1 - math.log(sigma**2)) == pytest.approx(rate, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("bad", [0.0, -0.1, float("nan"), float("inf"), 5.0])
def test_invalid_rates_are_refused(bad):
    with pytest.raises(ValueError, match="rate"):
        delta_logvar_bounds(bad)


# adversarial raw outputs: huge and tiny log-variances, means at 0 (the cheapest KL) and elsewhere
RAW_LOGVAR = np.array([-1e4, -80.0, -5.0, -1.0, 0.0, 1.0, 5.0, 80.0, 1e4])


def heads(latent: int, **kw):
    return TorchHead(latent, **kw).double(), JaxHead(latent, param_dtype=jnp.float32, **kw)


@pytest.mark.parametrize("rate", [0.01, 0.15, 1.0])
def test_delta_bound_holds_for_adversarial_encoder_outputs(rate):
    n = len(RAW_LOGVAR)
    logvar_raw = np.tile(RAW_LOGVAR[:, None], (1, 3))
    mean_raw = np.zeros_like(logvar_raw)
    mean_raw[:, 1] = 1e-3
    mean_raw[:, 2] = np.linspace(-30, 30, n)
    t_head, j_head = heads(3, delta_rate=rate)
    with torch.no_grad():
        t_mean, t_logvar = t_head(torch.as_tensor(mean_raw), torch.as_tensor(logvar_raw))
    j_mean, j_logvar = j_head(jnp.asarray(mean_raw, jnp.float32), jnp.asarray(logvar_raw, jnp.float32))
    lo, hi = delta_logvar_bounds(rate)
    for mean, logvar, tol in ((t_mean.numpy(), t_logvar.numpy(), 1e-12), (np.asarray(j_mean), np.asarray(j_logvar), 1e-5)):
        assert np.all(np.isfinite(logvar)) and np.all(logvar >= lo - 1e-6) and np.all(logvar <= hi + 1e-6)
        kl = kl_per_dim(mean, logvar)
        assert np.all(kl >= rate * (1 - tol) - tol), (rate, kl.min())
        np.testing.assert_array_equal(mean, mean_raw.astype(mean.dtype))  # the mean passes through
    # at mean 0 with the largest allowed variance the KL is the rate itself (the bound is tight)
    assert kl_per_dim(0.0, hi) == pytest.approx(rate, rel=1e-12)
    assert np.exp(lo / 2) == pytest.approx(DELTA_SIGMA_LOWER)


def test_delta_bound_holds_through_the_whole_text_model():
    """Encoder weights set to push the log-variance to +-1e4 and the mean to 0: KL >= rate anyway."""
    from jaxvae import text_model as jtm
    from torchvae import text_model as ttm
    from vaecore.settings.text_config import TextModelConfig

    cfg = TextModelConfig(vocab_size=20, embed_dim=8, hidden_dim=8, latent_dim=4, delta_rate=0.2)
    tokens = torch.tensor([[1, 5, 6, 2], [1, 7, 2, 0]])
    lengths = torch.tensor([4, 3])
    for bias in (-1e4, 1e4):
        torch.manual_seed(0)
        tm = ttm.SentenceVAE(cfg).double().eval()
        jm = jtm.SentenceVAE(cfg, rngs=nnx.Rngs(0))
        jm.eval()
        with torch.no_grad():
            tm.to_mean.weight.zero_()
            tm.to_mean.bias.zero_()
            tm.to_logvar.bias.fill_(bias)
            mean, logvar = tm.encode(tokens, lengths)
        jm.to_mean.kernel[...] = jnp.zeros_like(jm.to_mean.kernel[...])
        jm.to_mean.bias[...] = jnp.zeros_like(jm.to_mean.bias[...])
        jm.to_logvar.bias[...] = jnp.full_like(jm.to_logvar.bias[...], bias)
        j_mean, j_logvar = jm.encode(jnp.asarray(tokens.numpy()), jnp.asarray(lengths.numpy()))
        assert np.all(kl_per_dim(mean.numpy(), logvar.numpy()) >= 0.2 - 1e-12)
        assert np.all(kl_per_dim(j_mean, j_logvar) >= 0.2 - 1e-5)


@pytest.mark.parametrize("scale", [1e-2, 1.0, 300.0])
def test_bn_fixes_the_batch_second_moment_of_the_means_and_bounds_the_kl(scale):
    """mean_b(mean^2) = gamma^2 var/(var + eps) + beta^2 per dimension (numpy by hand), hence the
    batch-mean KL >= 0.5 * sum_d of it, whatever the encoder outputs."""
    gamma, latent = 0.7, 5
    rng = np.random.default_rng(1)
    mean_raw = scale * rng.standard_normal((64, latent)) + 40.0
    logvar_raw = rng.choice([-30.0, 0.0, 30.0], size=(64, latent))
    beta = np.linspace(-0.5, 0.5, latent)
    t_head, j_head = heads(latent, bn_gamma=gamma)
    with torch.no_grad():
        t_head.mean_bn.bias.copy_(torch.as_tensor(beta))
    j_head.mean_bn.bias[...] = jnp.asarray(beta, jnp.float32)
    t_head.train()
    with torch.no_grad():
        t_mean, t_logvar = t_head(torch.as_tensor(mean_raw), torch.as_tensor(logvar_raw))
    j_mean, _ = j_head(jnp.asarray(mean_raw, jnp.float32), jnp.asarray(logvar_raw, jnp.float32))
    var = mean_raw.var(0)
    expect_second_moment = gamma**2 * var / (var + BN_EPS) + beta**2
    expect_mean = gamma * (mean_raw - mean_raw.mean(0)) / np.sqrt(var + BN_EPS) + beta
    np.testing.assert_allclose(t_mean.numpy(), expect_mean, rtol=1e-9, atol=1e-9)
    raw32 = mean_raw.astype(np.float32).astype(np.float64)  # what the float32 backend was given
    var32 = raw32.var(0)
    np.testing.assert_allclose(np.asarray(j_mean), gamma * (raw32 - raw32.mean(0)) / np.sqrt(var32 + BN_EPS) + beta,
                               rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose((t_mean.numpy() ** 2).mean(0), expect_second_moment, rtol=1e-9)
    batch_kl = kl_per_dim(t_mean.numpy(), t_logvar.numpy()).mean(0)
    assert np.all(batch_kl >= 0.5 * expect_second_moment - 1e-9)
    if scale >= 1.0:  # var >> eps: the bound is 0.5 gamma^2 per dimension
        assert batch_kl.sum() >= 0.5 * latent * gamma**2 * (1 - 1e-4)
    # the running averages move toward the batch statistics (torch's momentum convention)
    n = len(mean_raw)
    np.testing.assert_allclose(t_head.mean_bn.running_mean.numpy(), 0.1 * mean_raw.mean(0), rtol=1e-12)
    np.testing.assert_allclose(t_head.mean_bn.running_var.numpy(), 0.9 + 0.1 * var * n / (n - 1), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(j_head.mean_bn.running_var[...]), 0.9 + 0.1 * var32 * n / (n - 1),
                               rtol=1e-4)


def test_language_model_baseline_posterior_is_the_prior_and_z_is_ignored():
    from jaxvae import text_model as jtm
    from torchvae import text_model as ttm
    from vaecore.settings.text_config import TextModelConfig

    cfg = TextModelConfig(vocab_size=20, embed_dim=8, hidden_dim=8, latent_dim=4, use_latent=False,
                          z_every_step=True, embedding_dropout=0.0, output_dropout=0.0)
    torch.manual_seed(0)
    tm = ttm.SentenceVAE(cfg).double()
    jm = jtm.SentenceVAE(cfg, rngs=nnx.Rngs(0))
    tokens = np.array([[1, 5, 6, 2], [1, 7, 2, 0]])
    lengths = np.array([4, 3])
    rng = np.random.default_rng(0)
    outs = []
    for _ in range(2):
        eps = rng.standard_normal((2, 4)) * 10
        logits, mean, logvar, _ = tm(torch.as_tensor(tokens), torch.as_tensor(lengths), torch.as_tensor(eps))
        j_logits, j_mean, j_logvar, _ = jm(jnp.asarray(tokens), jnp.asarray(lengths), jnp.asarray(eps, jnp.float32))
        assert float(mean.abs().max()) == float(logvar.abs().max()) == 0.0
        assert float(jnp.abs(j_mean).max()) == float(jnp.abs(j_logvar).max()) == 0.0
        outs.append((logits.detach().numpy(), np.asarray(j_logits)))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


def test_config_refuses_a_remedy_on_the_language_model():
    from vaecore.settings.text_config import TextModelConfig

    with pytest.raises(ValueError, match="no posterior"):
        TextModelConfig(vocab_size=20, use_latent=False, delta_rate=0.1)
    with pytest.raises(ValueError, match="bn_gamma"):
        TextModelConfig(vocab_size=20, bn_gamma=-1.0)


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_delta_bound_holds_through_the_image_model(kind):
    import jaxvae.models as jm
    import torchvae.models as tm
    from vaecore.settings.config import ImageModelConfig

    cfg = ImageModelConfig(kind=kind, latent_dim=3, hidden_sizes=(8,), conv_channels=(2, 2), conv_dense=8,
                           delta_rate=0.3)
    x = (np.random.default_rng(0).random((4, 784)) < 0.5).astype(np.float32)
    for bias in (-1e4, 1e4):
        torch.manual_seed(0)
        t = tm.VAE(cfg).eval()
        j = jm.VAE(cfg, rngs=nnx.Rngs(0))
        with torch.no_grad():
            t.encoder.mean.weight.zero_()
            t.encoder.mean.bias.zero_()
            t.encoder.logvar.bias.fill_(bias)
            t_mean, t_logvar = t.encode(torch.as_tensor(x))
        j.encoder.mean.kernel[...] = jnp.zeros_like(j.encoder.mean.kernel[...])
        j.encoder.mean.bias[...] = jnp.zeros_like(j.encoder.mean.bias[...])
        j.encoder.logvar.bias[...] = jnp.full_like(j.encoder.logvar.bias[...], bias)
        j_mean, j_logvar = j.encode(jnp.asarray(x))
        assert np.all(kl_per_dim(t_mean.numpy(), t_logvar.numpy()) >= 0.3 - 1e-6)
        assert np.all(kl_per_dim(j_mean, j_logvar) >= 0.3 - 1e-5)

"""The losses of both backends against plain numpy."""

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jaxvae.losses as jl
import torchvae.losses as tl
from tests.mmd_reference import mmd as mmd_reference
from vaecore.settings.config import LossConfig
from vaecore.settings.objectives import Weights, draws_prior, importance_samples, noise_shape

rng = np.random.default_rng(0)
LOGITS = rng.normal(0, 8, (5, 30))
X = (rng.random((5, 30)) < 0.5).astype(np.float64)
MEAN, LOGVAR = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))


def np_bernoulli_nll(logits, x):
    p = 1 / (1 + np.exp(-logits))
    return -(x * np.log(p) + (1 - x) * np.log1p(-p)).sum(-1)


def np_kl(mean, logvar):
    # KL(N(m, s^2) || N(0, 1)) = log(1/s) + (s^2 + m^2)/2 - 1/2, per dimension
    s2 = np.exp(logvar)
    return (-0.5 * logvar + 0.5 * (s2 + mean**2) - 0.5).sum(-1)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_terms_match_numpy(backend):
    mod, arr = (tl, torch.tensor) if backend == "torch" else (jl, jnp.asarray)
    np.testing.assert_allclose(np.asarray(mod.bernoulli_nll(arr(LOGITS), arr(X))), np_bernoulli_nll(LOGITS, X),
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(mod.gaussian_kl(arr(MEAN), arr(LOGVAR))), np_kl(MEAN, LOGVAR), rtol=1e-5)
    eps = rng.normal(size=(5, 4))
    np.testing.assert_allclose(np.asarray(mod.reparameterize(arr(MEAN), arr(LOGVAR), arr(eps))),
                               MEAN + np.exp(0.5 * LOGVAR) * eps, rtol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_bernoulli_from_logits_is_stable(backend):
    mod, arr = (tl, torch.tensor) if backend == "torch" else (jl, jnp.asarray)
    out = np.asarray(mod.bernoulli_nll(arr(np.array([[200.0, -200.0]], np.float32)),
                                       arr(np.array([[0.0, 1.0]], np.float32))))
    np.testing.assert_allclose(out, [400.0], rtol=1e-5)


def backend_modules(backend: str):
    """(objectives module, array constructor, relative tolerance) of a backend: torch in float64, JAX in
    float32 (x64 is off in this suite)."""
    import jaxvae.objectives as jo
    import torchvae.objectives as to

    return (to, torch.tensor, 1e-12) if backend == "torch" else (jo, jnp.asarray, 2e-5)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_objectives_weight_the_terms(backend):
    """The ELBO and InfoVAE of the shared objectives module against numpy: the reported ``kl`` and the
    optimised ``kl_term`` (the text task's free bits) are separate inputs, and the KL weight scales
    InfoVAE's KL term too (issue 14: it was ignored)."""
    mod, arr, tol = backend_modules(backend)
    recon, kl, kl_term = rng.random(6) * 100, rng.random(6) * 10, rng.random(6) * 10 + 1.0
    z, prior = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    terms_in = mod.PerExample(arr(recon), arr(kl), arr(kl_term), arr(z), arr(z), arr(z))
    loss, terms = mod.objective("elbo", terms_in, Weights(kl_weight=0.25))
    np.testing.assert_allclose(np.asarray(terms["total"]), recon + 0.25 * kl_term, rtol=tol)
    np.testing.assert_allclose(float(loss), (recon + 0.25 * kl_term).mean(), rtol=tol)
    np.testing.assert_allclose(np.asarray(terms["kl"]), kl, rtol=tol)
    assert list(terms) == ["recon", "kl", "mmd", "total"] and np.all(np.asarray(terms["mmd"]) == 0.0)
    mmd_kwargs = {"kernel": "rbf", "bandwidth": 1.5, "estimator": "unbiased"}
    m = mmd_reference(z, prior, kernel="rbf", bandwidth=1.5, estimator="unbiased")
    for kl_weight in (1.0, 0.5):
        weights = Weights(kl_weight=kl_weight, alpha=0.3, lam=50.0, prior_z=arr(prior), mmd=mmd_kwargs)
        loss, terms = mod.objective("mmd", terms_in, weights)
        np.testing.assert_allclose(np.asarray(terms["mmd"]), np.full(6, m), rtol=tol)
        np.testing.assert_allclose(float(loss), (recon + kl_weight * 0.7 * kl_term).mean() + 49.3 * m, rtol=tol)
    with pytest.raises(ValueError, match="needs prior_z"):
        mod.objective("mmd", terms_in, Weights())
    with pytest.raises(ValueError, match="objective must be one of"):
        mod.objective("elbo2", terms_in, Weights())


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_iwae_objective_against_numpy(backend):
    """The IWAE bound of the shared module from per-sample reconstructions, against the densities
    written out in numpy: -log (1/k) sum_i p(x|z_i) N(z_i; 0, I) / N(z_i; mean, sigma^2)."""
    mod, arr, tol = backend_modules(backend)
    k, b, d = 4, 3, 2
    recon_k, mean, logvar = rng.random((k, b)) * 50, rng.normal(size=(b, d)), rng.normal(size=(b, d))
    eps = rng.normal(size=(k, b, d))
    z = mean + np.exp(0.5 * logvar) * eps
    kl = np_kl(mean, logvar)
    loss, terms = mod.objective("iwae", mod.PerExample(*(arr(a) for a in (recon_k, kl, kl, z, eps, logvar))),
                                Weights())
    sigma = np.exp(0.5 * logvar)
    log_pz = (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)).sum(-1)
    log_qz = (-0.5 * ((z - mean) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)).sum(-1)
    log_w = -recon_k + log_pz - log_qz
    want = -(np.log(np.exp(log_w - log_w.max(0)).mean(0)) + log_w.max(0))
    np.testing.assert_allclose(np.asarray(terms["total"]), want, rtol=tol)
    np.testing.assert_allclose(float(loss), want.mean(), rtol=tol)
    np.testing.assert_allclose(np.asarray(terms["recon"]), recon_k.mean(0), rtol=tol)
    with pytest.raises(ValueError, match="k samples per example"):
        mod.objective("iwae", mod.PerExample(*(arr(a) for a in (recon_k[0], kl, kl, z[0], eps[0], logvar))),
                      Weights())


def test_the_noise_of_an_objective_is_decided_once():
    """``vaecore.settings.objectives``: k posterior samples (a leading axis) for the IWAE only, prior samples
    for InfoVAE only; every engine asks these."""
    iwae = LossConfig(objective="iwae", iw_samples=5)
    assert importance_samples(iwae) == 5 and noise_shape(iwae, 7, 3) == (5, 7, 3)
    assert importance_samples(LossConfig(objective="iwae")) == 1 and noise_shape(LossConfig(objective="iwae"), 7, 3) == (1, 7, 3)
    for name in ("elbo", "mmd"):
        assert importance_samples(LossConfig(objective=name)) is None
        assert noise_shape(LossConfig(objective=name), 7, 3) == (7, 3)
    assert [draws_prior(LossConfig(objective=n)) for n in ("elbo", "mmd", "iwae")] == [False, True, False]
    weights = Weights.of(LossConfig(objective="mmd", alpha=0.5, lam=10.0, kernel="rbf", kl_weight=0.5), prior_z=3)
    assert (weights.kl_weight, weights.alpha, weights.lam, weights.prior_z) == (0.5, 0.5, 10.0, 3)
    assert weights.mmd == {"kernel": "rbf", "bandwidth": "2d", "estimator": "unbiased"}


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_bernoulli_gradient_is_exact_at_zero_logit(backend):
    # d/dl [softplus(l) - l x] = sigmoid(l) - x, also at l = 0 (where max(l,0)+log1p(exp(-|l|)) forms break)
    x = np.array([[0.0, 1.0, 0.0]], np.float32)
    logits = np.array([[0.0, 0.0, 3.0]], np.float32)
    want = 1 / (1 + np.exp(-logits)) - x
    if backend == "torch":
        t = torch.tensor(logits, requires_grad=True)
        tl.bernoulli_nll(t, torch.tensor(x)).sum().backward()
        got = t.grad.numpy()
    else:
        import jax

        got = np.asarray(jax.grad(lambda l: jl.bernoulli_nll(l, jnp.asarray(x)).sum())(jnp.asarray(logits)))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_token_nll_against_a_plain_numpy_reference():
    """The text reconstruction term by hand: for each sentence, the sum over its targets w1..wn and
    <eos> (never <bos>, never padding) of -log softmax(logits)[target]; both backends (issue 14)."""
    from jaxvae.text_model import token_nll as jax_token_nll
    from torchvae.text_model import token_nll as torch_token_nll

    rng = np.random.default_rng(3)
    vocab, lengths = 11, np.array([2, 5, 7, 3])  # n + 2 with <bos> and <eos>; the first sentence is empty
    T = 8
    tokens = np.zeros((4, T), np.int64)
    for b, n in enumerate(lengths):
        tokens[b, 0], tokens[b, n - 1] = 1, 2
        tokens[b, 1:n - 1] = rng.integers(3, vocab, n - 2)
    logits = 3.0 * rng.standard_normal((4, T - 1, vocab))
    expect = []
    for b, n in enumerate(lengths):
        total = 0.0
        for t in range(n - 1):  # position t predicts tokens[b, t + 1]: the words, then <eos>
            row = logits[b, t]
            total -= row[tokens[b, t + 1]] - (row.max() + np.log(np.exp(row - row.max()).sum()))
        expect.append(total)
    got_torch = torch_token_nll(torch.as_tensor(logits), torch.as_tensor(tokens), torch.as_tensor(lengths)).numpy()
    got_jax = np.asarray(jax_token_nll(jnp.asarray(logits, jnp.float32), jnp.asarray(tokens), jnp.asarray(lengths)))
    np.testing.assert_allclose(got_torch, expect, rtol=1e-12)
    np.testing.assert_allclose(got_jax, expect, rtol=1e-5)
    # padding logits do not matter: change them and nothing moves
    logits[0, 1:] += 100.0
    np.testing.assert_allclose(torch_token_nll(torch.as_tensor(logits), torch.as_tensor(tokens),
                                               torch.as_tensor(lengths)).numpy(), expect, rtol=1e-12)


def test_token_nll_gradient_against_a_plain_numpy_reference():
    """The written-out gradient of the text reconstruction term (``_TargetNLL`` / ``_target_nll``): for
    an upstream weight w_b per sentence, d/dlogits[b, t] = w_b * (softmax(logits[b, t]) - onehot(target))
    at the target positions and exactly 0 at padding; both backends, against numpy by hand."""
    import jax

    from jaxvae.text_model import token_nll as jax_token_nll
    from torchvae.text_model import token_nll as torch_token_nll

    rng = np.random.default_rng(5)
    vocab, lengths, T = 13, np.array([2, 6, 8, 4]), 8
    tokens = np.zeros((4, T), np.int64)
    for b, n in enumerate(lengths):
        tokens[b, 0], tokens[b, n - 1] = 1, 2
        tokens[b, 1:n - 1] = rng.integers(3, vocab, n - 2)
    logits = 4.0 * rng.standard_normal((4, T - 1, vocab))
    weights = np.array([0.5, -1.5, 2.0, 3.0])  # the upstream gradient of each sentence's sum
    expect = np.zeros_like(logits)
    for b, n in enumerate(lengths):
        for t in range(n - 1):
            p = np.exp(logits[b, t] - logits[b, t].max())
            p /= p.sum()
            p[tokens[b, t + 1]] -= 1.0
            expect[b, t] = weights[b] * p
    x = torch.tensor(logits, requires_grad=True)
    (torch_token_nll(x, torch.as_tensor(tokens), torch.as_tensor(lengths)) * torch.as_tensor(weights)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), expect, rtol=1e-10, atol=1e-14)
    assert np.all(x.grad.numpy()[0, 1:] == 0.0) and np.all(x.grad.numpy()[3, 3:] == 0.0)  # padding: exactly 0
    got = jax.grad(lambda l: (jax_token_nll(l, jnp.asarray(tokens), jnp.asarray(lengths))
                              * jnp.asarray(weights, jnp.float32)).sum())(jnp.asarray(logits, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), expect, rtol=1e-4, atol=1e-6)
    assert np.all(np.asarray(got)[0, 1:] == 0.0)

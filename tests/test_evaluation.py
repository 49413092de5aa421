"""Evaluation metrics against known answers, in both backends.

The reference model is a linear Gaussian VAE: p(z) = N(0, I), p(x|z) = N(Wz + b, sigma^2 I), so
log p(x) = log N(x; b, W W^T + sigma^2 I) exactly. W has orthogonal columns, so the exact posterior
is a diagonal Gaussian that an encoder can represent: with q = p(z|x) every importance weight equals
p(x), and the importance-sampled estimate must be exact for any K.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from vaecore.scoring import evaluation as core

P, D, SIGMA = 6, 3, 0.5


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(params=["torch", "jax"])
def backend(request):
    """(evaluation module, backend name); JAX runs with float64 enabled."""
    if request.param == "torch":
        import torchvae.evaluation as ev

        yield ev, "torch"
        return
    import jax

    import jaxvae.evaluation as ev

    with jax.enable_x64(True):
        yield ev, "jax"


class LinearGaussian:
    """Decoder N(Wz + b, sigma^2 I), encoder mean = A (x - b) + c, logvar fixed per dimension."""

    def __init__(self, kind: str, W, b, A, c, logvar):
        self.kind, self.latent_dim = kind, W.shape[1]
        if kind == "torch":
            import torch

            self.xp, self.asarray = torch, lambda a: torch.as_tensor(np.asarray(a, np.float64))
        else:
            import jax.numpy as jnp

            self.xp, self.asarray = jnp, lambda a: jnp.asarray(np.asarray(a, np.float64))
        self.W, self.b, self.A, self.c, self.lv = map(self.asarray, (W, b, A, c, logvar))

    def prepare(self, batch):
        return self.asarray(batch)

    def encode(self, x):
        mean = (x - self.b) @ self.A.T + self.c
        return mean, self.lv + 0.0 * mean

    def log_likelihood(self, x, z):
        mu = z @ self.W.T + self.b  # [k, B, P]
        return -0.5 * (((x - mu) ** 2).sum(-1) / SIGMA**2 + x.shape[-1] * math.log(2 * math.pi * SIGMA**2))


def linear_gaussian_problem(seed: int = 0, n: int = 40):
    """W with orthogonal columns, b, data x [n, P] from the model, and the exact log p(x) [n]."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((P, D)))
    scales = np.array([2.0, 1.0, 0.5])
    W, b = q * scales, rng.standard_normal(P)
    x = rng.standard_normal((n, D)) @ W.T + b + SIGMA * rng.standard_normal((n, P))
    cov = W @ W.T + SIGMA**2 * np.eye(P)
    diff = x - b
    _, logdet = np.linalg.slogdet(cov)
    log_px = -0.5 * (np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff) + logdet + P * math.log(2 * math.pi))
    post_var = 1.0 / (1.0 + scales**2 / SIGMA**2)  # W^T W = diag(scales^2)
    A = (post_var * scales / SIGMA**2)[:, None] * q.T  # posterior mean = A (x - b)
    return W, b, x, log_px, A, np.log(post_var)


def chunks_of(eps: np.ndarray, size: int):
    return [eps[i:i + size] for i in range(0, len(eps), size)]


# ------------------------------------------------------------------------------------ log-mean-exp

EXTREME = [
    np.array([1000.0, 1000.0, 999.0]),
    np.array([-1000.0, -1001.0, -1e4]),
    np.array([-np.inf, 0.0, -3.0]),
    np.array([1e-30, 2e-30]),
    np.array([-745.0, 709.0]),
]


@pytest.mark.parametrize("a", EXTREME)
def test_log_mean_exp_matches_scipy_on_extreme_values(a):
    scipy_special = pytest.importorskip("scipy.special")
    expected = scipy_special.logsumexp(a) - math.log(len(a))
    assert core.log_mean_exp(a) == pytest.approx(expected, rel=1e-14, abs=1e-14)


def test_log_mean_exp_axis_and_infinities():
    a = np.array([[0.0, math.log(3.0)], [-np.inf, -np.inf], [5.0, np.inf]])
    out = core.log_mean_exp(a, axis=1)
    assert out[0] == pytest.approx(math.log(2.0))
    assert out[1] == -np.inf and out[2] == np.inf
    np.testing.assert_allclose(core.log_mean_exp(np.full((4, 3), -800.0), axis=0), np.full(3, -800.0), rtol=1e-15)


def test_backend_log_mean_exp_matches_numpy(backend):
    ev, kind = backend
    a = np.array([[1000.0, 999.0, -1e4], [-1000.0, -1002.0, -1001.0]])
    model = LinearGaussian(kind, np.eye(P, D), np.zeros(P), np.eye(D, P), np.zeros(D), np.zeros(D))
    got = np.asarray(ev.log_mean_exp(model.asarray(a), 1))
    np.testing.assert_allclose(got, core.log_mean_exp(a, axis=1), rtol=1e-14)


# --------------------------------------------------------------------------- importance-sampled NLL


@pytest.mark.parametrize("k", [1, 7, 300])
def test_iw_with_exact_posterior_is_exact_for_any_k(backend, k):
    ev, kind = backend
    W, b, x, log_px, A, logvar = linear_gaussian_problem()
    model = LinearGaussian(kind, W, b, A, np.zeros(D), logvar)
    eps = np.random.default_rng(1).standard_normal((k, len(x), D))
    terms = ev.importance_terms(model, model.prepare(x), chunks_of(eps, 64))
    np.testing.assert_allclose(terms["log_px"], log_px, rtol=1e-12, atol=1e-12)
    # exact posterior: the analytic KL matches the closed form of KL(N(mean, var) || N(0, I))
    mean = (x - b) @ A.T
    kl = 0.5 * (np.exp(logvar) + mean**2 - 1 - logvar).sum(1)
    np.testing.assert_allclose(terms["kl"], kl, rtol=1e-12)


def test_iw_with_a_wrong_posterior_tightens_with_k_and_stays_below(backend):
    ev, kind = backend
    W, b, x, log_px, A, logvar = linear_gaussian_problem(n=200)
    model = LinearGaussian(kind, W, b, 0.7 * A, np.full(D, 0.3), logvar + np.log(2.0))
    gaps = {}
    for k in (1, 10, 100, 2000):
        eps = np.random.default_rng(k).standard_normal((k, len(x), D))
        est = ev.importance_terms(model, model.prepare(x), chunks_of(eps, 250))["log_px"]
        gaps[k] = float(np.mean(log_px - est))
    assert gaps[1] > gaps[10] > gaps[100] > gaps[2000] > 0.0, gaps  # a lower bound that tightens
    assert gaps[1] > 0.3 and gaps[2000] < 0.03, gaps


def test_chunking_over_k_does_not_change_the_estimate(backend):
    ev, kind = backend
    W, b, x, _, A, logvar = linear_gaussian_problem()
    model = LinearGaussian(kind, W, b, 0.5 * A, np.zeros(D), logvar)
    eps = np.random.default_rng(3).standard_normal((50, len(x), D))
    one = ev.importance_terms(model, model.prepare(x), [eps])
    many = ev.importance_terms(model, model.prepare(x), chunks_of(eps, 7))
    for key in ("log_px", "recon"):
        np.testing.assert_allclose(many[key], one[key], rtol=1e-12)


def test_evaluate_split_does_not_depend_on_batching(backend):
    ev, kind = backend
    W, b, x, _, A, logvar = linear_gaussian_problem(n=50)
    model = LinearGaussian(kind, W, b, 0.5 * A, np.zeros(D), logvar)
    a = ev.evaluate_split(model, [x], k=40, chunk_rows=10_000, mi_batch_size=25)
    parts = [x[:13], x[13:30], x[30:]]
    c = ev.evaluate_split(model, parts, k=40, chunk_rows=100, mi_batch_size=25)
    for key in ("nll", "recon", "kl", "neg_elbo", "mi"):
        assert c[key] == pytest.approx(a[key], rel=1e-12), key
    assert a["au"] == c["au"] and a["examples"] == 50


# ------------------------------------------------------------------------------- MI and active units


def mi_reference(mean, logvar, eps):
    """He et al.'s calc_mi in float64 numpy."""
    z = mean + np.exp(0.5 * logvar) * eps
    neg_entropy = np.mean(-0.5 * mean.shape[1] * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(-1))
    dev = z[:, None, :] - mean[None]
    log_density = -0.5 * ((dev**2) / np.exp(logvar)[None] + logvar[None] + math.log(2 * math.pi)).sum(-1)
    return neg_entropy - np.mean(core.log_mean_exp(log_density, axis=1))


def test_mutual_information_matches_numpy_reference(backend):
    ev, _ = backend
    rng = np.random.default_rng(4)
    mean, logvar, eps = rng.standard_normal((30, 5)), rng.normal(-1.0, 0.5, (30, 5)), rng.standard_normal((30, 5))
    assert ev.mutual_information(mean, logvar, eps) == pytest.approx(mi_reference(mean, logvar, eps), rel=1e-10)


def test_encoder_that_ignores_x_has_no_information_and_no_active_units(backend):
    ev, kind = backend
    W, b, x, _, _, logvar = linear_gaussian_problem(n=400)
    model = LinearGaussian(kind, W, b, np.zeros((D, P)), np.array([0.5, -1.0, 0.0]), logvar)
    out = ev.evaluate_split(model, [x[:150], x[150:]], k=5, mi_batch_size=200)
    assert out["au"] == 0
    # the estimate is E[log q(z|x)] (analytic) minus its sample mean: zero up to sampling error,
    # whose standard deviation is sqrt(D / 2 / batch) = 0.09 nats here
    assert abs(out["mi"]) < 0.2
    # the same data through an informative encoder carries information
    _, _, _, _, A, _ = linear_gaussian_problem(n=400)
    informative = ev.evaluate_split(LinearGaussian(kind, W, b, A, np.zeros(D), logvar), [x], k=5, mi_batch_size=200)
    assert informative["mi"] > 1.0 and informative["au"] == D


def test_active_units_count_exactly_the_live_dimensions(backend):
    ev, kind = backend
    W, b, x, _, A, logvar = linear_gaussian_problem(n=300)
    dead = A.copy()
    dead[1] = 0.0  # dimension 1's posterior mean no longer depends on x
    out = ev.evaluate_split(LinearGaussian(kind, W, b, dead, np.zeros(D), logvar), [x], k=2)
    assert out["au"] == D - 1
    assert out["au_variances"][1] == pytest.approx(0.0, abs=1e-20)


def test_active_units_threshold_and_ddof():
    means = np.zeros((5, 3))
    means[:, 0] = [0.0, 0.0, 0.0, 0.0, 1.0]  # variance with ddof=1: 0.2
    means[:, 1] = [0.0, 0.0, 0.0, 0.0, 0.2]  # 0.008
    count, variances = core.active_units(means)
    np.testing.assert_allclose(variances, [0.2, 0.008, 0.0])
    assert count == 1
    assert core.active_units(means, threshold=0.005)[0] == 2
    with pytest.raises(ValueError, match="N >= 2"):
        core.active_units(np.zeros((1, 3)))


# ------------------------------------------------------------------------------------ text metrics


def test_perplexity_from_nll_and_tokens():
    assert core.perplexity(0.0, 10) == 1.0
    assert core.perplexity(100 * math.log(50.0), 100) == pytest.approx(50.0)
    with pytest.raises(ValueError):
        core.perplexity(1.0, 0)


def test_evaluate_split_with_tokens_reports_perplexities(backend):
    ev, kind = backend
    W, b, x, _, A, logvar = linear_gaussian_problem(n=20)
    out = ev.evaluate_split(LinearGaussian(kind, W, b, A, np.zeros(D), logvar), [x[:10], x[10:]], k=3,
                            count_tokens=lambda batch: 4 * len(batch))
    assert out["tokens"] == 80
    assert out["ppl"] == pytest.approx(math.exp(out["nll"] * 20 / 80))
    assert out["ppl_elbo"] == pytest.approx(math.exp(out["neg_elbo"] * 20 / 80))


# ------------------------------------------------------------------------------------ noise, files


def test_importance_noise_is_per_example_and_chunk_independent():
    whole = np.concatenate(list(core.importance_noise(5, 0, 6, 3, k=10, k_chunk=10)))
    chunked = np.concatenate(list(core.importance_noise(5, 0, 6, 3, k=10, k_chunk=3)))
    shifted = np.concatenate(list(core.importance_noise(5, 2, 4, 3, k=10, k_chunk=4)))
    assert whole.shape == (10, 6, 3)
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(shifted, whole[:, 2:])


def test_merge_json_keeps_existing_keys_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"neg_elbo": 99.3, "kl": 24.1}))
    merged = core.merge_json(path, {"eval_test": {"nll": 95.0}})
    assert json.loads(path.read_text()) == merged == {"neg_elbo": 99.3, "kl": 24.1, "eval_test": {"nll": 95.0}}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_format_table_names_the_batch_and_threshold():
    metrics = {"split": "test", "examples": 10, "units": "nats per image", "seconds": 1.0, "k": 5000, "nll": 90.0,
               "neg_elbo": 95.0, "recon": 70.0, "kl": 25.0, "mi": 6.1, "mi_batch_size": 500, "au": 17,
               "au_threshold": 0.01, "latent_dim": 20}
    table = core.format_table(metrics)
    assert "K=5000" in table and "batch 500" in table and "Var > 0.01" in table and "of 20" in table
    assert "90.000" in table and " 17" in table


def test_mutual_information_over_the_whole_split_matches_the_reference_and_is_chunk_free():
    """Li et al.'s estimator is the per-batch one with the whole split as the batch: the numpy
    reference on all N at once, and the same whatever the chunking; bounded by log N."""
    rng = np.random.default_rng(7)
    n, d = 700, 4
    mean, logvar = 3.0 * rng.standard_normal((n, d)), np.full((n, d), -10.0)
    eps = core.posterior_noise(3, n, d)
    full = core.mutual_information_split(mean, logvar, seed=3)
    assert full == pytest.approx(mi_reference(mean, logvar, eps), rel=1e-12)
    assert core.mutual_information_split(mean, logvar, seed=3, chunk=7) == pytest.approx(full, rel=1e-12)
    # well-separated posteriors: every z is explained by its own x alone, q(z_i) = q(z_i|x_i) / N, so
    # the estimate is log N plus the one-sample error of the entropy term (by hand, with the same noise)
    own = np.mean(-0.5 * (eps**2 + logvar + math.log(2 * math.pi)).sum(1))
    neg_entropy = np.mean(-0.5 * d * math.log(2 * math.pi) - 0.5 * (1 + logvar).sum(1))
    assert full == pytest.approx(math.log(n) + neg_entropy - own, abs=1e-6)
    # an encoder that ignores x: q(z) = q(z|x), zero up to the same one-sample error of the entropy term
    eps0 = core.posterior_noise(0, n, d)
    error = -0.5 * d - np.mean(-0.5 * (eps0**2).sum(1))
    assert core.mutual_information_split(np.zeros((n, d)), np.zeros((n, d))) == pytest.approx(error, abs=1e-12)
    # the per-batch estimate of the same posteriors is capped by log(batch)
    assert core.latent_usage(_NumpyMI(), mean, logvar, seed=3, mi_batch_size=50)["mi"] <= math.log(50) + 0.05


class _NumpyMI:
    @staticmethod
    def mutual_information(mean, logvar, eps):
        return mi_reference(mean, logvar, eps)


def test_token_accuracy_by_hand():
    # <bos> w1 w2 <eos> <pad> and <bos> w1 w2 w3 <eos>: targets (w1 w2 <eos>) and (w1 w2 w3 <eos>)
    tokens = np.array([[1, 5, 6, 2, 0], [1, 7, 8, 9, 2]])
    lengths = np.array([4, 5])
    # exact; one word wrong; ended early (positions not reached count as wrong); ran past the end
    assert core.token_accuracy([[5, 6], [7, 8, 9]], tokens, lengths) == (7, 7)
    assert core.token_accuracy([[5, 4], [7, 8, 9]], tokens, lengths) == (6, 7)
    assert core.token_accuracy([[5], [7]], tokens, lengths) == (1 + 1, 7)  # w1 right, <eos> lands on w2
    assert core.token_accuracy([[5, 6, 9, 9], []], tokens, lengths) == (2, 7)  # no <eos> at position 3

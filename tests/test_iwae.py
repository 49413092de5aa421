"""The IWAE objective (Burda et al. 2015), ``--loss iwae --iw-samples k``, against a plain numpy
computation of the bound, and its defining properties: k = 1 is the ELBO (with a sampled KL, so
its mean over samples is the analytic ELBO), and more samples give a tighter bound."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import torchvae.losses as tl
import torchvae.models as tm
from vaecore.settings.config import ConfigError, ImageModelConfig, LossConfig

CFG = ImageModelConfig(kind="mlp", latent_dim=3, hidden_sizes=(16,))


def model_and_data(batch: int = 4):
    torch.manual_seed(0)
    model = tm.VAE(CFG).double()
    x = (np.random.default_rng(1).random((batch, 784)) < 0.3).astype(np.float64)
    return model, torch.from_numpy(x)


def numpy_bound(model, x: torch.Tensor, eps: np.ndarray) -> np.ndarray:
    """-log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x) per image, from the densities written out."""
    with torch.no_grad():
        mean, logvar = (t.numpy() for t in model.encode(x))
        sigma = np.exp(0.5 * logvar)
        z = mean + sigma * eps  # [k, B, D]
        k, b, d = z.shape
        logits = model.decode(torch.from_numpy(z.reshape(k * b, d))).numpy().reshape(k, b, -1)
    xn = x.numpy()
    log_px = (xn * -np.logaddexp(0, -logits) + (1 - xn) * -np.logaddexp(0, logits)).sum(-1)
    log_pz = (-0.5 * z**2 - 0.5 * np.log(2 * np.pi)).sum(-1)
    log_qz = (-0.5 * ((z - mean) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)).sum(-1)
    log_w = log_px + log_pz - log_qz
    m = log_w.max(0)
    return -(m + np.log(np.exp(log_w - m).mean(0)))


@pytest.mark.parametrize("k", [1, 5])
def test_iwae_matches_numpy(k):
    model, x = model_and_data()
    eps = np.random.default_rng(2).standard_normal((k, 4, 3))
    loss, terms = tl.vae_loss(model, x, torch.from_numpy(eps), None, LossConfig(objective="iwae", iw_samples=k))
    np.testing.assert_allclose(terms["total"].detach().numpy(), numpy_bound(model, x, eps), rtol=1e-12)
    assert loss.item() == pytest.approx(terms["total"].mean().item(), rel=1e-15)
    # the analytic KL and the mean reconstruction over the k samples are reported beside the bound
    with torch.no_grad():
        _, elbo_terms = tl.vae_loss(model, x, torch.from_numpy(eps[0]), None, LossConfig())
    np.testing.assert_allclose(terms["kl"].detach().numpy(), elbo_terms["kl"].numpy(), rtol=1e-14)


def test_k1_is_the_elbo_with_a_sampled_kl_and_averages_to_the_analytic_elbo():
    model, x = model_and_data(batch=2)
    eps = np.random.default_rng(3).standard_normal((2000, 2, 3))
    with torch.no_grad():
        per_draw = np.stack([tl.vae_loss(model, x, torch.from_numpy(eps[i:i + 1]), None,
                                         LossConfig(objective="iwae"))[1]["total"].numpy() for i in range(2000)])
        _, elbo = tl.vae_loss(model, x, torch.from_numpy(eps[0]), None, LossConfig())
        recon_draws = np.stack([tl.vae_loss(model, x, torch.from_numpy(eps[i]), None, LossConfig())[1]["recon"].numpy()
                                for i in range(2000)])
    # one draw: recon + log q(z|x) - log p(z) at that z (the ELBO's single-sample estimate)
    mean, logvar = (t.detach().numpy() for t in model.encode(x))
    z = mean + np.exp(0.5 * logvar) * eps[0]
    sampled_kl = 0.5 * (z**2 - eps[0] ** 2 - logvar).sum(-1)
    np.testing.assert_allclose(per_draw[0], recon_draws[0] + sampled_kl, rtol=1e-12)
    # averaged over draws: the analytic ELBO, within 4 standard errors
    target = recon_draws.mean(0) + elbo["kl"].numpy()
    se = per_draw.std(0) / np.sqrt(len(per_draw))
    assert np.all(np.abs(per_draw.mean(0) - target) < 4 * se + 1e-9)


def test_more_samples_tighten_the_bound():
    model, x = model_and_data(batch=3)
    rng = np.random.default_rng(4)
    with torch.no_grad():
        bounds = {k: np.mean([tl.vae_loss(model, x, torch.from_numpy(rng.standard_normal((k, 3, 3))), None,
                                          LossConfig(objective="iwae", iw_samples=k))[0].item() for _ in range(300)])
                  for k in (1, 5, 50)}
    assert bounds[1] > bounds[5] > bounds[50]


def test_iwae_config_rules():
    with pytest.raises(ConfigError, match="--iw-samples applies to --loss iwae"):
        LossConfig(iw_samples=5)
    with pytest.raises(ConfigError, match="kl-weight does not apply"):
        LossConfig(objective="iwae", kl_weight=0.5)
    with pytest.raises(ConfigError, match="positive integer"):
        LossConfig(objective="iwae", iw_samples=0)



def test_text_iwae_config_rules(tmp_path):
    """The sentence IWAE: no KL schedule and no free bits (set to constant and 0, refused when
    given), no pretraining without the KL, no language model (it has no code)."""
    from vaecore.runner.options import resolve
    from vaecore.settings.cli import build_parser, explicit_flags

    def resolved(*argv):
        parser = build_parser()
        argv = ["--task", "text", "--loss", "iwae", "--workdir", str(tmp_path / "w"), *argv]
        return resolve(parser.parse_args(argv), explicit_flags(parser, argv))[0]

    cfg = resolved("--iw-samples", "5")
    assert (cfg.loss.iw_samples, cfg.text_train.free_bits, cfg.text_train.kl_schedule) == (5, 0.0, "constant")
    for flags in (["--free-bits", "0.1"], ["--kl-schedule", "linear"], ["--kl-logistic-k", "0.01"],
                  ["--pretrain-ae-epochs", "1"], ["--no-latent"]):
        with pytest.raises(ConfigError, match=f"{flags[0]} does not apply to --loss iwae"):
            resolved(*flags)
    with pytest.raises(ConfigError, match="kl-weight does not apply"):
        resolved("--kl-weight", "0.5")

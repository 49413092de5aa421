"""What the objectives need from a run, framework-neutral: how many posterior samples per example
(``importance_samples``, the noise's shape), whether the step draws prior samples, and the weights of
the terms (``Weights``). Every engine (image and text, JAX and torch) asks these functions rather than
testing an objective's name; the objectives themselves are ``jaxvae/objectives.py`` and
``torchvae/objectives.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vaecore.settings.config import LossConfig

IMPORTANCE_WEIGHTED = ("iwae",)  # objectives that read k = iw_samples posterior samples of each example
PRIOR_SAMPLED = ("mmd",)  # objectives that compare the batch's z with samples of the prior


def importance_samples(loss: LossConfig) -> int | None:
    """k, the posterior samples per example of an importance-weighted objective; None for one
    sample (the noise then has no sample axis)."""
    return loss.iw_samples if loss.objective in IMPORTANCE_WEIGHTED else None


def noise_shape(loss: LossConfig, batch: int, latent: int) -> tuple[int, ...]:
    """The shape of a step's reparameterisation noise: [batch, latent], or [k, batch, latent]."""
    k = importance_samples(loss)
    return (batch, latent) if k is None else (k, batch, latent)


def draws_prior(loss: LossConfig) -> bool:
    """Whether a step draws samples of the prior p(z) for the objective."""
    return loss.objective in PRIOR_SAMPLED


@dataclass(frozen=True)
class Weights:
    """The objective's weights and inputs besides the per-example terms. ``kl_weight`` may be a traced
    scalar (JAX: annealing without recompiles); ``prior_z``: [M, latent] samples of the prior (InfoVAE);
    ``mmd``: the keyword arguments of the backend's ``mmd`` (kernel, bandwidth, estimator)."""

    kl_weight: Any = 1.0
    alpha: float = 0.0
    lam: float = 1.0
    prior_z: Any = None
    mmd: dict = field(default_factory=dict)

    @classmethod
    def of(cls, loss: LossConfig, prior_z: Any = None) -> Weights:
        """The weights of a run's ``LossConfig`` (its ``kl_weight`` included)."""
        return cls(loss.kl_weight, loss.alpha, loss.lam, prior_z,
                   {"kernel": loss.kernel, "bandwidth": loss.bandwidth, "estimator": loss.estimator})

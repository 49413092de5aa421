"""The posterior heads of the collapse remedies that act on q(z|x), framework-free.

Both backends map the encoder's raw outputs ``(mean_raw, logvar_raw)`` [B, D] to the posterior
``(mean, logvar)`` the same way (``jaxvae/posterior.py``, ``torchvae/posterior.py``); this module
holds the arithmetic they share.

- **delta-VAE** (Razavi et al. 2019, committed rate): the posterior variance is confined to
  ``[sigma_l^2, sigma_u^2]`` with ``sigma_u < 1`` solved from
  ``rate = 0.5 * (sigma_u^2 - 1 - log(sigma_u^2))``. Since ``0.5 * (s - 1 - log s)`` decreases on
  ``(0, 1)`` and the mean term ``mean^2 / 2`` is never negative, KL(q(z|x) || N(0, 1)) >= ``rate`` in
  every dimension, for every input and every weight. The map is
  ``logvar = log(sigma_l^2) + (log(sigma_u^2) - log(sigma_l^2)) * sigmoid(logvar_raw)``: smooth, and
  ``logvar_raw = 0`` gives the geometric middle of the interval.
- **BN-VAE** (Zhu et al. 2020): the posterior means are batch-normalised with a fixed scale
  ``gamma`` and a learned shift ``beta``: ``mean = gamma * (mean_raw - mu_B) / sqrt(var_B + BN_EPS) + beta``
  per dimension (running averages in evaluation), so over a batch
  ``mean_b(mean^2) = gamma^2 * var_B / (var_B + BN_EPS) + beta^2`` in every dimension and the
  batch-mean KL is at least ``0.5 * D * gamma^2`` up to the ``BN_EPS`` term.
"""

from __future__ import annotations

import math

# The delta-VAE's smallest posterior standard deviation: it keeps log-variances finite and the
# decoder's input noise above float32 rounding; a code with sigma = 0.01 per unit-scale dimension
# can still carry log(1/0.01) ~ 4.6 nats per dimension.
DELTA_SIGMA_LOWER = 0.01
# Batch normalisation of the posterior means: variance epsilon and running-average momentum in
# torch's convention (running = (1 - momentum) * running + momentum * batch statistic; the running
# variance takes the unbiased batch variance, the normalisation the biased one).
BN_EPS = 1e-5
BN_MOMENTUM = 0.1


def delta_rate_kl(sigma: float) -> float:
    """KL(N(0, sigma^2) || N(0, 1)) = 0.5 * (sigma^2 - 1 - log(sigma^2)): the rate at mean 0."""
    s2 = sigma * sigma
    return 0.5 * (s2 - 1.0 - math.log(s2))


def delta_sigma_upper(rate: float) -> float:
    """The sigma_u < 1 with ``delta_rate_kl(sigma_u) == rate`` (bisection on log sigma^2, exact to
    float64 rounding). rate must be > 0 and is nats per latent dimension."""
    if not (isinstance(rate, int | float) and rate > 0 and math.isfinite(rate)):
        raise ValueError(f"the delta-VAE rate must be a finite number > 0 (nats per dimension); got {rate!r}")
    # g(u) = exp(u) - 1 - u - 2 rate is decreasing for u < 0, positive at u = -(1 + 2 rate) and negative at 0
    lo, hi = -(1.0 + 2.0 * rate) - 1.0, 0.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if math.exp(mid) - 1.0 - mid - 2.0 * rate > 0:
            lo = mid
        else:
            hi = mid
    return math.exp(0.5 * hi)


def delta_logvar_bounds(rate: float) -> tuple[float, float]:
    """(log sigma_l^2, log sigma_u^2) of the delta-VAE's posterior variance for ``rate`` nats per
    dimension. sigma_u must stay above ``DELTA_SIGMA_LOWER``: rates up to about 4.1 nats."""
    upper = delta_sigma_upper(rate)
    if upper <= DELTA_SIGMA_LOWER:
        raise ValueError(f"a delta-VAE rate of {rate} nats per dimension needs sigma_u = {upper:.3g}, not above "
                         f"sigma_l = {DELTA_SIGMA_LOWER}; use a rate below "
                         f"{delta_rate_kl(DELTA_SIGMA_LOWER * 1.01):.2f}")
    return 2.0 * math.log(DELTA_SIGMA_LOWER), 2.0 * math.log(upper)

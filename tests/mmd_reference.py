"""Float64 numpy reference for the MMD engine: plain, dense and obviously correct.

This file *defines* the semantics that `jaxvae.mmd.mmd` and `torchvae.mmd.mmd` must match:

    D_ij = |a_i|^2 + |b_j|^2 - 2 a_i.b_j        (clamped at 0; never norm(a - b) ** 2)
    rbf:  k = exp(-D / c)          imq:  k = c / (c + D)
    bandwidth: c > 0, "2d" (c = 2 * d), or a list of scales whose kernels are summed
    unbiased:  sum_{i!=j} k(x_i,x_j) / (n(n-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1)) - 2 mean k(x_i,y_j)
    biased:    mean k(x_i,x_j) + mean k(y_i,y_j) - 2 mean k(x_i,y_j)

`mmd_and_grad` returns the value and the analytic gradients with respect to x and y:
for a pair term w * k(D(a_i, b_j)), d/da_i = w k'(D) 2 (a_i - b_j) and d/db_j = w k'(D) 2 (b_j - a_i).
"""

from __future__ import annotations

import numpy as np


def scales(bandwidth, d: int) -> list[float]:
    """The list of kernel scales c that `bandwidth` stands for, at feature size d."""
    if isinstance(bandwidth, str):
        assert bandwidth == "2d"
        return [2.0 * d]
    if isinstance(bandwidth, (list, tuple)):
        return [float(c) for c in bandwidth]
    return [float(bandwidth)]


def sq_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a: [n, d], b: [m, d] -> D: [n, m], D_ij = |a_i|^2 + |b_j|^2 - 2 a_i.b_j clamped at 0."""
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def kernel_and_slope(dist: np.ndarray, kernel: str, cs: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """The kernel k(D) summed over the scales, and its derivative dk/dD."""
    k = np.zeros_like(dist)
    slope = np.zeros_like(dist)
    for c in cs:
        if kernel == "rbf":
            e = np.exp(-dist / c)
            k += e
            slope += -e / c
        elif kernel == "imq":
            k += c / (c + dist)
            slope += -c / (c + dist) ** 2
        else:
            raise ValueError(kernel)
    return k, slope


def _pair_weights(n: int, m: int, same: bool, estimator: str) -> np.ndarray:
    """Weight of each pair (i, j) in the estimator: [n, m]."""
    if not same:
        return np.full((n, m), 1.0 / (n * m))
    if estimator == "biased":
        return np.full((n, n), 1.0 / (n * n))
    return (1.0 - np.eye(n)) / (n * (n - 1))


def mmd_and_grad(x, y, *, kernel: str = "rbf", bandwidth="2d", estimator: str = "unbiased", with_scale=False):
    """x: [n, d], y: [m, d] -> (mmd, dmmd/dx [n, d], dmmd/dy [m, d]), all float64.

    with_scale: also return (scale_x, scale_y), the size of the terms summed into each gradient
    (max_i sum_j |d term / d a_i|, before they cancel): what a backend's rounding is relative to.
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    cs = scales(bandwidth, x.shape[1])
    value = 0.0
    gx = np.zeros_like(x)
    gy = np.zeros_like(y)
    scale = {"x": 0.0, "y": 0.0}
    # (a, b, sign, a's gradient, b's gradient, a is b, a's name, b's name)
    terms = [(x, x, 1.0, gx, gx, True, "x", "x"), (y, y, 1.0, gy, gy, True, "y", "y"),
             (x, y, -2.0, gx, gy, False, "x", "y")]
    for a, b, sign, ga, gb, same, name_a, name_b in terms:
        w = sign * _pair_weights(len(a), len(b), same, estimator)
        k, slope = kernel_and_slope(sq_dist(a, b), kernel, cs)
        value += (w * k).sum()
        g = 2.0 * w * slope  # d(term)/dD_ij times dD/d(a_i - b_j) / (a_i - b_j)
        ga += g.sum(1)[:, None] * a - g @ b
        gb += g.sum(0)[:, None] * b - g.T @ a
        if with_scale:
            g = np.abs(g)
            na, nb = np.abs(a).max(1), np.abs(b).max(1)
            scale[name_a] += (g.sum(1) * na + g @ nb).max()
            scale[name_b] += (g.sum(0) * nb + g.T @ na).max()
    if with_scale:
        return value, gx, gy, (scale["x"], scale["y"])
    return value, gx, gy


def mmd(x, y, **kwargs) -> float:
    """The MMD estimate only (see `mmd_and_grad`)."""
    return mmd_and_grad(x, y, **kwargs)[0]


def mmd_loops(x, y, *, kernel: str = "rbf", bandwidth="2d", estimator: str = "unbiased") -> float:
    """The same estimate written as explicit double loops over pairs (a check on `mmd`; small n only)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    cs = scales(bandwidth, x.shape[1])

    def k(a, b):
        dist = max(a @ a + b @ b - 2.0 * a @ b, 0.0)
        return sum(np.exp(-dist / c) if kernel == "rbf" else c / (c + dist) for c in cs)

    def within(a):
        n = len(a)
        pairs = [(i, j) for i in range(n) for j in range(n) if estimator == "biased" or i != j]
        return sum(k(a[i], a[j]) for i, j in pairs) / len(pairs)

    cross = sum(k(xi, yj) for xi in x for yj in y) / (len(x) * len(y))
    return within(x) + within(y) - 2.0 * cross


def numeric_grad(f, a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar f at a (float64)."""
    a = np.array(a, np.float64)
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
        old = a[idx]
        a[idx] = old + eps
        hi = f(a)
        a[idx] = old - eps
        lo = f(a)
        a[idx] = old
        g[idx] = (hi - lo) / (2 * eps)
    return g


# ---- the test grid shared by tests/test_mmd_{torch,jax,triton}.py ----

SIZES = [(2, 3), (3, 2), (7, 5), (128, 97), (1000, 333)]
DIMS = [1, 2, 16, 64]
KERNELS = ["rbf", "imq"]
ESTIMATORS = ["unbiased", "biased"]
BANDWIDTHS = ["2d", 0.7, [0.5, 2.0, 8.0]]


def sample(n: int, m: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """x: [n, d] standard normal, y: [m, d] shifted and scaled, so the MMD is clearly nonzero."""
    rng = np.random.default_rng([n, m, d, seed])
    return rng.normal(size=(n, d)), 0.5 + 1.3 * rng.normal(size=(m, d))


_CACHE: dict = {}


def expected(n: int, m: int, d: int, kernel: str, bandwidth, estimator: str):
    """(x, y, value, grad_x, grad_y, grad scales) for one grid point, computed once per test session."""
    key = (n, m, d, kernel, str(bandwidth), estimator)
    if key not in _CACHE:
        x, y = sample(n, m, d)
        kw = {"kernel": kernel, "bandwidth": bandwidth, "estimator": estimator}
        _CACHE[key] = (x, y, *mmd_and_grad(x, y, **kw, with_scale=True))
    return _CACHE[key]


def assert_close(value, grad_x, grad_y, want, *, rtol: float) -> None:
    """Compare a backend's (value, grads) with `expected`'s, relative to each quantity's scale."""
    _, _, v, gx, gy, (sx, sy) = want
    # The estimate is a difference of kernel means of size <= (number of scales): O(1) terms.
    assert abs(float(value) - v) <= rtol * max(abs(v), 1.0), (float(value), v)
    for got, ref, scale in ((grad_x, gx, sx), (grad_y, gy, sy)):
        got = np.asarray(got, np.float64)
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * scale)

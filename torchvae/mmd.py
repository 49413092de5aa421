"""Maximum mean discrepancy between two samples, in PyTorch.

    mmd(x, y, *, kernel="rbf", bandwidth="2d", estimator="unbiased", path="auto", tile=None) -> scalar

x: [n, d], y: [m, d] floating; the result is a 0-d tensor in the input dtype, differentiable with
respect to both. The semantics are defined by the float64 numpy reference in tests/mmd_reference.py
(the twin of this file is jaxvae/mmd.py).

Paths (`path=`):
  "reference"  the plain dense formulation: three [n, m] distance matrices, autograd through them.
  "tiled"      (added with the tiled engine)
  "triton"     (added with the Triton engine)
  "auto"       picks one by device and size (see `select_path`); every call is counted in PATH_COUNTS.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import torch

KERNELS = ("rbf", "imq")
ESTIMATORS = ("unbiased", "biased")
PATHS = ("auto", "reference")

# Which path each call ran, e.g. PATH_COUNTS["tiled"]; tests read it to see the dispatch.
PATH_COUNTS: collections.Counter = collections.Counter()


def kernel_scales(bandwidth: float | str | Sequence[float], d: int) -> list[float]:
    """The kernel scales c that `bandwidth` stands for: a positive float, "2d" (c = 2 * d) or a list."""
    if isinstance(bandwidth, str):
        if bandwidth != "2d":
            raise ValueError(f'bandwidth string must be "2d" (c = 2 * d), got {bandwidth!r}')
        return [2.0 * d]
    if isinstance(bandwidth, (list, tuple)):
        if not bandwidth:
            raise ValueError("bandwidth list is empty: give at least one positive scale")
        values = list(bandwidth)
    else:
        values = [bandwidth]
    out = []
    for c in values:
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            raise TypeError(f"bandwidth must be a positive float, '2d' or a list of floats, got {c!r}")
        if not c > 0:
            raise ValueError(f"bandwidth must be positive, got {c!r}: pass a scale c > 0 or '2d'")
        out.append(float(c))
    return out


def _check(x: torch.Tensor, y: torch.Tensor, kernel: str, estimator: str, path: str) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise ValueError(f"{name} must be 2-D [samples, features], got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating (float32 or float64), got {t.dtype}: cast it first")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature size, got {x.shape[1]} and {y.shape[1]}")
    if x.dtype != y.dtype:
        raise TypeError(f"x and y must have the same dtype, got {x.dtype} and {y.dtype}")
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}: choose one of {KERNELS}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}: choose one of {ESTIMATORS}")
    if path not in PATHS:
        raise ValueError(f"unknown path {path!r}: choose one of {PATHS}")
    if estimator == "unbiased" and min(x.shape[0], y.shape[0]) < 2:
        raise ValueError(
            f"the unbiased estimator needs at least 2 samples in x and y, got n={x.shape[0]}, "
            f"m={y.shape[0]}: pass more samples or estimator='biased'"
        )
    if min(x.shape[0], y.shape[0]) < 1:
        raise ValueError("x and y must hold at least one sample each")


def select_path(x: torch.Tensor, path: str = "auto", y: torch.Tensor | None = None) -> str:
    """The path `mmd` runs for x (and y) when asked for `path`."""
    if path != "auto":
        return path
    return "reference"


def sq_dist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a: [n, d], b: [m, d] -> [n, m], |a_i|^2 + |b_j|^2 - 2 a_i.b_j clamped at 0."""
    sq_a = (a * a).sum(1)
    sq_b = (b * b).sum(1)
    return torch.addmm(sq_b[None, :], a, b.T, alpha=-2.0).add_(sq_a[:, None]).clamp_(min=0.0)


def _kernel_sum(dist: torch.Tensor, kernel: str, scales: list[float]) -> torch.Tensor:
    if kernel == "rbf":
        return sum(torch.exp(dist * (-1.0 / c)) for c in scales)
    return sum(c / (c + dist) for c in scales)


def _mmd_reference(x, y, kernel: str, scales: list[float], estimator: str) -> torch.Tensor:
    """The plain dense formulation (O(n m) memory), autograd through it."""

    def within(a):
        n = a.shape[0]
        k = _kernel_sum(sq_dist(a, a), kernel, scales)
        if estimator == "biased":
            return k.sum() / (n * n)
        return (k.sum() - k.diagonal().sum()) / (n * (n - 1))

    cross = _kernel_sum(sq_dist(x, y), kernel, scales).mean()
    return within(x) + within(y) - 2.0 * cross


def mmd(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    kernel: str = "rbf",
    bandwidth: float | str | Sequence[float] = "2d",
    estimator: str = "unbiased",
    path: str = "auto",
    tile: int | None = None,
) -> torch.Tensor:
    """MMD^2 estimate between samples x: [n, d] and y: [m, d] -> 0-d tensor (input dtype).

    kernel: "rbf" (exp(-D/c)) or "imq" (c/(c+D)); bandwidth: c > 0, "2d" (c = 2 d) or a list of
    scales whose kernels are summed; estimator: "unbiased" (U-statistic) or "biased" (V-statistic);
    path: "auto", "reference", "tiled" or "triton"; tile: block size for the tiled paths.
    """
    _check(x, y, kernel, estimator, path)
    scales = kernel_scales(bandwidth, x.shape[1])
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive int or None, got {tile!r}")
    chosen = select_path(x, path, y)
    PATH_COUNTS[chosen] += 1
    return _mmd_reference(x, y, kernel, scales, estimator)

"""The MMD's arguments, checked once for both backends (``jaxvae.mmd`` and ``torchvae.mmd``).

Kernel scale c: RBF k = exp(-D / c), IMQ k = c / (c + D), D the squared distance. ``bandwidth`` is
a positive float, "2d" (c = 2 * d: the 2*d*sigma^2 convention with a unit-variance prior) or a list
of positive floats whose kernels are summed.
"""

from __future__ import annotations

from collections.abc import Sequence

KERNELS = ("rbf", "imq")
ESTIMATORS = ("unbiased", "biased")


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


def check_args(x_shape: tuple, y_shape: tuple, x_dtype, y_dtype, kernel: str, estimator: str, path: str,
               paths: Sequence[str]) -> None:
    """Shape, dtype-match and option checks (the backend checks array type and that it is floating)."""
    for name, shape in (("x", x_shape), ("y", y_shape)):
        if len(shape) != 2:
            raise ValueError(f"{name} must be 2-D [samples, features], got shape {tuple(shape)}")
    if x_shape[1] != y_shape[1]:
        raise ValueError(f"x and y must have the same feature size, got {x_shape[1]} and {y_shape[1]}")
    if x_dtype != y_dtype:
        raise TypeError(f"x and y must have the same dtype, got {x_dtype} and {y_dtype}")
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}: choose one of {KERNELS}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}: choose one of {ESTIMATORS}")
    if path not in paths:
        raise ValueError(f"unknown path {path!r}: choose one of {tuple(paths)}")
    if estimator == "unbiased" and min(x_shape[0], y_shape[0]) < 2:
        raise ValueError(
            f"the unbiased estimator needs at least 2 samples in x and y, got n={x_shape[0]}, "
            f"m={y_shape[0]}: pass more samples or estimator='biased'"
        )
    if min(x_shape[0], y_shape[0]) < 1:
        raise ValueError("x and y must hold at least one sample each")


def term_weights(n: int, m: int, estimator: str) -> tuple[float, float, float]:
    """Weights of the x-x, y-y and x-y kernel sums in the estimate (biased V- or unbiased U-statistic)."""
    if estimator == "biased":
        return 1.0 / (n * n), 1.0 / (m * m), -2.0 / (n * m)
    return 1.0 / (n * (n - 1)), 1.0 / (m * (m - 1)), -2.0 / (n * m)

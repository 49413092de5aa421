"""Comparison helpers for the parity suite: every mismatch is reported with its name."""

from __future__ import annotations

import contextlib

import jax
import numpy as np

# Tolerances of the parity contract (issue 2): float32 outputs/losses within 1e-5 relative,
# gradients within 1e-4 relative or 1e-5 absolute; float64 everything within 1e-10.
TOL = {
    "float32": {"value": {"rtol": 1e-5, "atol": 1e-6}, "grad": {"rtol": 1e-4, "atol": 1e-5}},
    "float64": {"value": {"rtol": 1e-10, "atol": 1e-12}, "grad": {"rtol": 1e-10, "atol": 1e-12}},
}


def worst(a: dict[str, np.ndarray], b: dict[str, np.ndarray], rtol: float, atol: float) -> tuple[str, float]:
    """The key whose arrays differ most, measured as max |a-b| / (atol + rtol*|b|), and that ratio."""
    assert set(a) == set(b), f"different keys: only in a {sorted(set(a) - set(b))}, only in b {sorted(set(b) - set(a))}"
    worst_name, worst_ratio = "", 0.0
    for name, value in a.items():
        x, y = np.asarray(value, np.float64), np.asarray(b[name], np.float64)
        assert x.shape == y.shape, f"{name}: shape {x.shape} != {y.shape}"
        for side, arr in (("first", x), ("second", y)):  # NaN compares False with everything: check first
            bad = ~np.isfinite(arr)
            assert not bad.any(), (f"{name}: {int(bad.sum())} non-finite value(s) in the {side} tree "
                                   f"(e.g. {arr[bad].flat[0]} at index {np.argwhere(bad)[0].tolist()})")
        ratio = float(np.max(np.abs(x - y) / (atol + rtol * np.abs(y)), initial=0.0))
        if ratio > worst_ratio or not worst_name:
            worst_name, worst_ratio = name, ratio
    return worst_name, worst_ratio


def assert_trees_close(a: dict, b: dict, rtol: float, atol: float, what: str) -> None:
    """Assert every array in ``a`` matches ``b``; the failure names the worst entry."""
    name, ratio = worst(a, b, rtol, atol)
    assert ratio <= 1.0, (
        f"{what}: worst entry {name!r} is {ratio:.3g}x over tolerance (rtol={rtol}, atol={atol}); "
        f"max abs diff {np.max(np.abs(np.asarray(a[name], np.float64) - np.asarray(b[name], np.float64))):.3e}"
    )


def assert_exact(a: dict, b: dict, what: str) -> None:
    assert set(a) == set(b), f"{what}: different keys {sorted(set(a) ^ set(b))}"
    for name, value in a.items():
        assert value.dtype == b[name].dtype, f"{what}: {name} dtype {value.dtype} != {b[name].dtype}"
        np.testing.assert_array_equal(value, b[name], err_msg=f"{what}: {name}")


@contextlib.contextmanager
def jax_precision(dtype: str):
    """Full-precision matmuls, and float64 in JAX only inside the context, so other tests keep
    JAX's float32 default."""
    with jax.default_matmul_precision("highest"), jax.enable_x64(dtype == "float64"):
        yield

"""Maximum mean discrepancy between two samples, in JAX.

    mmd(x, y, *, kernel="rbf", bandwidth="2d", estimator="unbiased", path="auto", tile=None) -> scalar

x: [n, d], y: [m, d] floating; the result is a 0-d array in the input dtype, differentiable with
respect to both, and usable inside jax.jit. The semantics are defined by the float64 numpy reference
in tests/mmd_reference.py (the twin of this file is torchvae/mmd.py).

Paths (`path=`):
  "reference"  the plain dense formulation: three [n, m] distance matrices, autodiff through them.
  "tiled"      one jitted lax.scan over square tiles of `tile` rows (only half the tiles of the symmetric
               x-x and y-y terms); peak memory O((n + m) d + tile^2), nothing [n, m] is ever held.
  "auto"       "tiled" (see `select_path`); every trace is counted in PATH_COUNTS.

The tiled path is a jax.custom_vjp whose forward computes the value *and* both gradients in the same
scan (a tile's kernel matrix is all that either needs) and keeps the [n, d] / [m, d] gradients as
residuals; its backward only scales them. Plain evaluation (no grad) runs a value-only scan.
Autodiff through the scan would keep every tile alive for the backward pass. Higher-order
derivatives through the tiled path are not supported (use path="reference").
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vaecore.settings.mmd_args import check_args, kernel_scales, term_weights

PATHS = ("auto", "reference", "tiled")

# Which path each call ran (counted when traced, so once per jit compilation), e.g. PATH_COUNTS["tiled"].
PATH_COUNTS: collections.Counter = collections.Counter()


def _check(x, y, kernel: str, estimator: str, path: str) -> None:
    for name, t in (("x", x), ("y", y)):
        if not hasattr(t, "shape") or not hasattr(t, "dtype"):
            raise TypeError(f"{name} must be an array, got {type(t).__name__}")
        if not jnp.issubdtype(t.dtype, jnp.floating):
            raise TypeError(f"{name} must be floating (float32 or float64), got {t.dtype}: cast it first")
    check_args(tuple(x.shape), tuple(y.shape), x.dtype, y.dtype, kernel, estimator, path, PATHS)


DEFAULT_TILE = 512


# On a GPU (bench/mmd_cuda.py, H200, d = 64, value and gradients) XLA's fused dense formulation was
# the fastest at every size measured, 256 to 16384 (12 ms at 16384, the tiled path 51 ms), so "auto"
# keeps it there until its [n, m] matrices grow to about 1 GiB each, then bounds memory with tiles.
GPU_DENSE_MAX_PAIRS = 16384 * 16384


def select_path(x, path: str = "auto", y=None) -> str:
    """The path `mmd` runs for x (and y) when asked for `path`. "auto" resolves to "tiled" on the CPU,
    where it was the fastest at every size measured by bench/mmd.py, n = 64 included (one pass over
    the pairs gives the value and both gradients); on a GPU to "reference" up to GPU_DENSE_MAX_PAIRS
    pairs, "tiled" beyond. Shapes are static and the backend is the default one (arrays being traced
    carry no device), so this is decided at trace time."""
    if path != "auto":
        return path
    if jax.default_backend() in ("gpu", "cuda", "rocm"):
        m = x.shape[0] if y is None else y.shape[0]
        if x.shape[0] * m <= GPU_DENSE_MAX_PAIRS:
            return "reference"
    return "tiled"


def _dot(a, b):
    """a @ b in full float32 (or float64) precision. On GPUs XLA's default float32 matmul uses TF32
    (10-bit mantissa), and |a|^2 + |b|^2 - 2 a.b cancels catastrophically: measured on an H200, the
    default precision put the float32 MMD 1e-3 (relative) off the float64 reference, HIGHEST 3e-6."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def sq_dist(a, b):
    """a: [n, d], b: [m, d] -> [n, m], |a_i|^2 + |b_j|^2 - 2 a_i.b_j clamped at 0."""
    sq_a = (a * a).sum(1)
    sq_b = (b * b).sum(1)
    return jnp.maximum(sq_a[:, None] + sq_b[None, :] - 2.0 * _dot(a, b.T), 0.0)


def _kernel_sum(dist, kernel: str, scales: list[float]):
    if kernel == "rbf":
        return sum(jnp.exp(dist * (-1.0 / c)) for c in scales)
    return sum(c / (c + dist) for c in scales)


def _mmd_reference(x, y, kernel: str, scales: list[float], estimator: str):
    """The plain dense formulation (O(n m) memory), autodiff through it."""

    def within(a):
        n = a.shape[0]
        k = _kernel_sum(sq_dist(a, a), kernel, scales)
        if estimator == "biased":
            return k.sum() / (n * n)
        return (k.sum() - jnp.trace(k)) / (n * (n - 1))

    cross = _kernel_sum(sq_dist(x, y), kernel, scales).mean()
    return within(x) + within(y) - 2.0 * cross



def _tile_pairs(nx: int, ny: int, n: int, m: int, estimator: str):
    """The tiles to visit over the stacked blocks [x blocks, y blocks]: (row block, column block,
    weight, diagonal-tile flag) as numpy arrays. The symmetric x-x and y-y terms visit only tiles
    J >= I, off-diagonal ones with twice the weight."""
    w_xx, w_yy, w_xy = term_weights(n, m, estimator)
    rows, cols, weights, diags = [], [], [], []
    for first, count, w in ((0, nx, w_xx), (nx, ny, w_yy)):
        for i in range(count):
            for j in range(i, count):
                rows.append(first + i)
                cols.append(first + j)
                weights.append(w if i == j else 2.0 * w)
                diags.append(i == j and estimator == "unbiased")
    for i in range(nx):
        for j in range(ny):
            rows.append(i)
            cols.append(nx + j)
            weights.append(w_xy)
            diags.append(False)
    return np.array(rows, np.int32), np.array(cols, np.int32), np.array(weights), np.array(diags)


def _kernel_and_slope(dist, kernel: str, scales: tuple[float, ...]):
    """k(D) summed over scales and its derivative dk/dD."""
    k = slope = 0.0
    for c in scales:
        if kernel == "rbf":
            e = jnp.exp(dist * (-1.0 / c))
            k, slope = k + e, slope - e * (1.0 / c)
        else:
            q = c / (c + dist)
            k, slope = k + q, slope - q * q * (1.0 / c)
    return k, slope


@functools.partial(jax.jit, static_argnames=("kernel", "scales", "estimator", "tile", "need_grad"))
def _tiled_engine(x, y, *, kernel, scales, estimator, tile, need_grad):
    """-> (value, grad_x, grad_y) (the gradients None unless need_grad), one scan over tiles."""
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    tile = min(tile, max(n, m))
    nx, ny = -(-n // tile), -(-m // tile)
    z = jnp.concatenate([jnp.pad(x, ((0, nx * tile - n), (0, 0))), jnp.pad(y, ((0, ny * tile - m), (0, 0)))])
    valid = np.concatenate([np.arange(nx * tile) < n, np.arange(ny * tile) < m])
    sq = (z * z).sum(1)
    z1 = jnp.concatenate([z, jnp.ones_like(z[:, :1])], 1)  # [z, 1]: G @ z1 gives G @ z and row sums
    rows, cols, weights, diags = _tile_pairs(nx, ny, n, m, estimator)
    eye = jnp.eye(tile, dtype=bool)

    def take(arr, block):
        return jax.lax.dynamic_slice_in_dim(arr, block * tile, tile)

    def step(acc, pair):
        i, j, w, diag = pair
        a, b = take(z, i), take(z, j)
        dist = jnp.maximum(take(sq, i)[:, None] + take(sq, j)[None, :] - 2.0 * _dot(a, b.T), 0.0)
        mask = take(valid, i)[:, None] & take(valid, j)[None, :] & ~(diag & eye)
        k, slope = _kernel_and_slope(dist, kernel, scales)
        ksum = jnp.where(mask, k, 0.0).sum() * w
        if need_grad:
            g = jnp.where(mask, slope * w, 0.0).astype(z.dtype)
            acc = _add_rows(acc, i * tile, _dot(g, take(z1, j)))
            acc = _add_rows(acc, j * tile, _dot(g.T, take(z1, i)))
        return acc, ksum

    acc = jnp.zeros_like(z1) if need_grad else jnp.zeros((), z.dtype)
    pairs = (rows, cols, weights.astype(np.dtype(z.dtype)), diags)
    acc, ksums = jax.lax.scan(step, acc, pairs)
    value = ksums.sum()
    if not need_grad:
        return value, None, None
    # d/dz_i sum_j G_ij D(z_i, z_j') = 2 (rowsum(G)_i z_i - (G z')_i), rows and columns alike.
    grad = 2.0 * (acc[:, d:] * z - acc[:, :d])
    return value, grad[:n], grad[nx * tile : nx * tile + m]


def _add_rows(acc, start, update):
    return jax.lax.dynamic_update_slice_in_dim(
        acc, jax.lax.dynamic_slice_in_dim(acc, start, update.shape[0]) + update, start, 0
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _mmd_tiled(x, y, config):
    return _tiled_engine(x, y, **config._asdict(), need_grad=False)[0]


def _mmd_tiled_fwd(x, y, config):
    value, grad_x, grad_y = _tiled_engine(x, y, **config._asdict(), need_grad=True)
    return value, (grad_x, grad_y)


def _mmd_tiled_bwd(config, residuals, g):
    grad_x, grad_y = residuals
    return g * grad_x, g * grad_y


_mmd_tiled.defvjp(_mmd_tiled_fwd, _mmd_tiled_bwd)


class _TiledConfig(collections.namedtuple("_TiledConfig", "kernel scales estimator tile")):
    """Hashable static settings of the tiled path."""


def mmd(
    x,
    y,
    *,
    kernel: str = "rbf",
    bandwidth: float | str | Sequence[float] = "2d",
    estimator: str = "unbiased",
    path: str = "auto",
    tile: int | None = None,
):
    """MMD^2 estimate between samples x: [n, d] and y: [m, d] -> 0-d array (input dtype).

    kernel: "rbf" (exp(-D/c)) or "imq" (c/(c+D)); bandwidth: c > 0, "2d" (c = 2 d) or a list of
    scales whose kernels are summed; estimator: "unbiased" (U-statistic) or "biased" (V-statistic);
    path: "auto", "reference" or "tiled"; tile: block size for the tiled path.
    """
    _check(x, y, kernel, estimator, path)
    scales = kernel_scales(bandwidth, x.shape[1])
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < 1):
        raise ValueError(f"tile must be a positive int or None, got {tile!r}")
    chosen = select_path(x, path, y)
    PATH_COUNTS[chosen] += 1
    x = jnp.asarray(x)
    y = jnp.asarray(y)
    if chosen == "reference":
        return _mmd_reference(x, y, kernel, scales, estimator)
    config = _TiledConfig(kernel, tuple(scales), estimator, tile or DEFAULT_TILE)
    return _mmd_tiled(x, y, config)

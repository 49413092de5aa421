"""Maximum mean discrepancy between two samples, in PyTorch.

    mmd(x, y, *, kernel="rbf", bandwidth="2d", estimator="unbiased", path="auto", tile=None) -> scalar

x: [n, d], y: [m, d] floating; the result is a 0-d tensor in the input dtype, differentiable with
respect to both. The semantics are defined by the float64 numpy reference in tests/mmd_reference.py
(the twin of this file is jaxvae/mmd.py).

Paths (`path=`):
  "reference"  the plain dense formulation: three [n, m] distance matrices, autograd through them.
  "tiled"      blocks of `tile` rows at a time through plain torch matmuls (CPU or GPU); only half the
               tiles of the symmetric x-x and y-y terms; nothing [n, m] is ever held.
  "triton"     one fused Triton kernel (torchvae/mmd_triton.py): distances, kernel and reductions in
               registers, nothing [n, m] written to memory. CUDA, or CPU under TRITON_INTERPRET=1.
  "auto"       picks one by device and size (see `select_path`: "tiled" on CPU, where it was fastest at
               every size measured); every call is counted in PATH_COUNTS.

The tiled and Triton paths are a torch.autograd.Function whose forward computes the value *and* the
gradients in the same pass over the tiles (a tile's kernel matrix is all that either needs), keeps
the two [n, d] / [m, d] gradients, and whose backward only scales them by the incoming gradient.
So a training step costs one pass over the pairs, not two, and memory stays O((n + m) d + tile^2).
The gradients are computed only when grad mode is on and an input requires grad. Double backward
through these paths is not supported (use path="reference" for that).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import torch

from vaecore.settings.mmd_args import check_args, kernel_scales, term_weights

PATHS = ("auto", "reference", "tiled", "triton")

# Which path each call ran, e.g. PATH_COUNTS["tiled"]; tests read it to see the dispatch.
PATH_COUNTS: collections.Counter = collections.Counter()


def _check(x: torch.Tensor, y: torch.Tensor, kernel: str, estimator: str, path: str) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating (float32 or float64), got {t.dtype}: cast it first")
    check_args(tuple(x.shape), tuple(y.shape), x.dtype, y.dtype, kernel, estimator, path, PATHS)


# On CPU the tiled path beat the dense one at every size measured, n = 64 included (bench/mmd.py: it
# makes one pass over the pairs for value and gradients, the dense autograd makes several). On CUDA
# (bench/mmd_cuda.py on an H200, d = 64, value and gradients): every path is launch-bound near 1 to
# 3 ms up to n = 1024; from n = 4096 Triton is the fastest (4096: 2.3 ms vs 2.8 dense; 16384: 24 ms vs
# 34 ms and 8 GiB for the dense path; 65536: 0.38 s, where the dense path does not fit) while the
# tiled path, one small matmul per tile, is the slowest (18 ms, 217 ms, 3.6 s). So: dense up to
# CUDA_DENSE_MAX_PAIRS pairs, Triton above; without Triton, dense until its [n, m] matrices grow to
# about 2 GiB (CUDA_DENSE_NO_TRITON_MAX_PAIRS), then tiled.
CUDA_DENSE_MAX_PAIRS = 256 * 256
CUDA_DENSE_NO_TRITON_MAX_PAIRS = 8192 * 8192
DEFAULT_TILE = 512


def select_path(x: torch.Tensor, path: str = "auto", y: torch.Tensor | None = None) -> str:
    """The path `mmd` runs for x (and y) when asked for `path`: "auto" resolves to "tiled" on CPU, and
    on CUDA to "reference" for small inputs, else "triton" (when triton is installed; otherwise
    "reference" up to CUDA_DENSE_NO_TRITON_MAX_PAIRS pairs, then "tiled")."""
    if path != "auto":
        return path
    if not x.is_cuda:
        return "tiled"
    m = x.shape[0] if y is None else y.shape[0]
    if x.shape[0] * m <= CUDA_DENSE_MAX_PAIRS:
        return "reference"
    if _triton_available():
        return "triton"
    return "reference" if x.shape[0] * m <= CUDA_DENSE_NO_TRITON_MAX_PAIRS else "tiled"


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


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



def _augment(a: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """a: [n, d] -> (rows [n, d+2], cols [n, d+2], ones [n, d+1]) with rows_i . cols_j = -D_ij * scale.

    Folding the squared norms into the matmul makes one GEMM produce the kernel's exponent, so a tile
    needs no separate broadcast-add passes; ones = [a, 1] makes G @ ones give G @ a and G's row sums.
    """
    sq = (a * a).sum(1, keepdim=True)
    one = torch.ones_like(sq)
    rows = torch.cat([a * (2.0 * scale), sq * -scale, one * scale], 1)
    cols = torch.cat([a, one, -sq], 1)
    return rows, cols, torch.cat([a, one], 1)


def _tile_kernel(e: torch.Tensor, kernel: str, scales: list[float], need_slope: bool, fast_rbf: bool, work):
    """e: [ti, tj], -D (or -D/c when fast_rbf), overwritten -> (k, slope dk/dD or None).

    fast_rbf (a single RBF scale, folded into e): k = exp(e) in place and slope = -k / c, returned as
    k itself, the caller folds -1/c into its weight. Otherwise k and the slope are summed over scales.
    """
    e.clamp_(max=0.0)
    if fast_rbf:
        e.exp_()
        return e, e
    k_buf, g_buf, t_buf = (w.view(-1)[: e.numel()].view(e.shape) for w in work)
    for s, c in enumerate(scales):
        t = torch.mul(e, 1.0 / c, out=t_buf)
        if kernel == "rbf":
            t.exp_()
        else:
            t.neg_().add_(1.0).reciprocal_()  # c / (c + D) = 1 / (1 + D / c)
        if s == 0:
            k_buf.copy_(t)
        else:
            k_buf.add_(t)
        if need_slope:
            if kernel == "rbf":
                g = t.mul_(-1.0 / c)
            else:
                g = t.mul_(t).mul_(-1.0 / c)
            if s == 0:
                g_buf.copy_(g)
            else:
                g_buf.add_(g)
    return k_buf, (g_buf if need_slope else None)


def _pair_sums(a, b, acc_a, acc_b, *, same, weight, exclude_diag, kernel, scales, fast_rbf, tile, work):
    """Sum of k over all pairs (a_i, b_j) in tiles, times weight; adds each tile's slope matrix
    G (times weight) into acc_a += G @ [b, 1] and acc_b += G^T @ [a, 1] where given.

    a, b: the (rows, cols, ones) triples of `_augment`. same: a is b, so only tiles J >= I are visited
    and off-diagonal tiles count twice (G is symmetric). Returns a list of 0-d tensors to be summed.
    """
    rows, _, a1 = a
    _, cols, b1 = b
    n, m = rows.shape[0], cols.shape[0]
    g_scale = -1.0 / scales[0] if fast_rbf else 1.0
    sums = []
    for i0 in range(0, n, tile):
        i1 = min(i0 + tile, n)
        for j0 in range(i0 if same else 0, m, tile):
            j1 = min(j0 + tile, m)
            mult = 2.0 if same and j0 != i0 else 1.0
            e = work[0].view(-1)[: (i1 - i0) * (j1 - j0)].view(i1 - i0, j1 - j0)
            torch.mm(rows[i0:i1], cols[j0:j1].T, out=e)
            if exclude_diag and same and i0 == j0:
                e.diagonal().fill_(float("-inf"))  # k(-inf) = 0 and slope 0 for both kernels
            k, g = _tile_kernel(e, kernel, scales, acc_a is not None or acc_b is not None, fast_rbf, work[1:])
            sums.append(k.sum() * (weight * mult))
            alpha = weight * mult * g_scale
            if acc_a is not None:
                acc_a[i0:i1].addmm_(g, b1[j0:j1], alpha=alpha)
            if acc_b is not None:
                acc_b[j0:j1].addmm_(g.T, a1[i0:i1], alpha=alpha)
    return sums


def _mmd_tiled(x, y, kernel, scales, estimator, tile, need_x, need_y):
    """Value and gradients (None where not needed) in one pass over tiles; O((n + m) d + tile^2) memory."""
    tile = tile or DEFAULT_TILE
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    w_xx, w_yy, w_xy = term_weights(n, m, estimator)
    fast_rbf = kernel == "rbf" and len(scales) == 1
    scale = 1.0 / scales[0] if fast_rbf else 1.0
    ax, ay = _augment(x, scale), _augment(y, scale)
    work = [x.new_empty(tile * tile) for _ in range(1 if fast_rbf else 4)]
    acc_x = x.new_zeros(n, d + 1) if need_x else None
    acc_y = y.new_zeros(m, d + 1) if need_y else None
    common = {"kernel": kernel, "scales": scales, "fast_rbf": fast_rbf, "tile": tile, "work": work,
              "exclude_diag": estimator == "unbiased"}
    sums = _pair_sums(ax, ax, acc_x, acc_x, same=True, weight=w_xx, **common)
    sums += _pair_sums(ay, ay, acc_y, acc_y, same=True, weight=w_yy, **common)
    sums += _pair_sums(ax, ay, acc_x, acc_y, same=False, weight=w_xy, **common)
    value = torch.stack(sums).to(torch.float64).sum().to(x.dtype)

    def grad(acc, a):  # d/da_i sum_j w G_ij D_ij = 2 (rowsum(wG)_i a_i - (wG a')_i)
        return None if acc is None else 2.0 * (acc[:, d:] * a - acc[:, :d])

    return value, grad(acc_x, x), grad(acc_y, y)


class _FusedMMD(torch.autograd.Function):
    """Autograd wrapper for engines that return the value and both gradients from one pass."""

    @staticmethod
    def forward(ctx, x, y, engine, need_x, need_y):
        with torch.no_grad():
            value, gx, gy = engine(x, y, need_x, need_y)
        ctx.save_for_backward(gx, gy)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):
        gx, gy = ctx.saved_tensors
        return (
            None if gx is None else gx * grad_out,
            None if gy is None else gy * grad_out,
            None,
            None,
            None,
        )


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
    if chosen == "reference":
        return _mmd_reference(x, y, kernel, scales, estimator)
    if chosen == "tiled":
        def engine(a, b, need_a, need_b):
            return _mmd_tiled(a, b, kernel, scales, estimator, tile, need_a, need_b)
    else:
        from torchvae import mmd_triton  # imports triton: only when this path is used

        def engine(a, b, need_a, need_b):
            return mmd_triton.mmd_triton(a, b, kernel, scales, estimator, tile, need_a, need_b)

    grad_on = torch.is_grad_enabled()
    need_x, need_y = grad_on and x.requires_grad, grad_on and y.requires_grad
    return _FusedMMD.apply(x, y, engine, need_x, need_y)

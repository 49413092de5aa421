"""The Triton engine behind `torchvae.mmd.mmd(..., path="triton")`.

One kernel, `_rows_kernel`, does all the work. Each program owns BLOCK_M rows a_i and sweeps every
column block of b: the distances come from one tl.dot per tile (|a|^2 + |b|^2 - 2 a.b, clamped),
the kernel and its slope dk/dD are evaluated in registers, and the tile is reduced at once into

    ksum_i = sum_j k(a_i, b_j)                     (the value)
    grad_i = sum_j dk/dD_ij (a_i - b_j)            (= rowsum(G)_i a_i - (G b)_i, one more tl.dot)

so nothing [n, m] is ever written to memory. The column side of the x-y term is a second launch with
a and b swapped (recomputing those tiles instead of atomically scattering: deterministic, no
atomics); the x-x and y-y terms are symmetric and need one launch each.

Runs on CUDA, and on CPU tensors under TRITON_INTERPRET=1 (which the tests use). tl.dot runs with
input_precision="ieee" so float32 results do not depend on TF32 and match the other paths.
This module imports triton at import time: torchvae.mmd imports it only when path="triton" is used.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from vaecore.settings.mmd_args import term_weights

KERNEL_IDS = {"rbf": 0, "imq": 1}


@triton.jit
def _rows_kernel(
    a_ptr, b_ptr, sqa_ptr, sqb_ptr, scales_ptr, ksum_ptr, grad_ptr,
    n, m, d, n_scales,
    KERNEL: tl.constexpr, EXCLUDE_DIAG: tl.constexpr, NEED_GRAD: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    feats = tl.arange(0, BLOCK_D)
    row_ok = rows < n
    feat_ok = feats < d
    a = tl.load(a_ptr + rows[:, None] * d + feats[None, :], mask=row_ok[:, None] & feat_ok[None, :], other=0.0)
    sqa = tl.load(sqa_ptr + rows, mask=row_ok, other=0.0)
    acc_k = tl.zeros([BLOCK_M], dtype=a.dtype)
    acc_r = tl.zeros([BLOCK_M], dtype=a.dtype)
    acc_g = tl.zeros([BLOCK_M, BLOCK_D], dtype=a.dtype)
    for start in range(0, m, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < m
        b = tl.load(b_ptr + cols[:, None] * d + feats[None, :], mask=col_ok[:, None] & feat_ok[None, :], other=0.0)
        sqb = tl.load(sqb_ptr + cols, mask=col_ok, other=0.0)
        dot = tl.dot(a, tl.trans(b), input_precision="ieee", out_dtype=a.dtype)
        dist = tl.maximum(sqa[:, None] + sqb[None, :] - 2.0 * dot, 0.0)
        valid = row_ok[:, None] & col_ok[None, :]
        if EXCLUDE_DIAG:
            valid = valid & (rows[:, None] != cols[None, :])
        k = tl.zeros([BLOCK_M, BLOCK_N], dtype=a.dtype)
        g = tl.zeros([BLOCK_M, BLOCK_N], dtype=a.dtype)
        for s in range(n_scales):
            c = tl.load(scales_ptr + s)
            if KERNEL == 0:
                e = tl.exp(-dist / c)
                k += e
                g -= e / c
            else:
                q = c / (c + dist)
                k += q
                g -= q * q / c
        acc_k += tl.sum(tl.where(valid, k, 0.0), axis=1)
        if NEED_GRAD:
            g = tl.where(valid, g, 0.0)
            acc_r += tl.sum(g, axis=1)
            acc_g += tl.dot(g, b, input_precision="ieee", out_dtype=a.dtype)
    tl.store(ksum_ptr + rows, acc_k, mask=row_ok)
    if NEED_GRAD:
        grad = acc_r[:, None] * a - acc_g
        tl.store(grad_ptr + rows[:, None] * d + feats[None, :], grad, mask=row_ok[:, None] & feat_ok[None, :])


def _rows(a, b, scales_t, kernel: str, exclude_diag: bool, need_grad: bool, block: int):
    """a: [n, d], b: [m, d] -> (sum_j k(a_i, b_j): [n], sum_j dk/dD_ij (a_i - b_j): [n, d] or None)."""
    n, d = a.shape
    ksum = a.new_empty(n)
    grad = a.new_empty(n, d) if need_grad else ksum  # a dummy pointer when unused
    block_d = max(16, triton.next_power_of_2(d))
    _rows_kernel[(triton.cdiv(n, block),)](
        a, b, (a * a).sum(1), (b * b).sum(1), scales_t, ksum, grad,
        n, b.shape[0], d, scales_t.numel(),
        KERNEL=KERNEL_IDS[kernel], EXCLUDE_DIAG=exclude_diag, NEED_GRAD=need_grad,
        BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d,
    )  # fmt: skip
    return ksum, (grad if need_grad else None)


def mmd_triton(x, y, kernel: str, scales: list[float], estimator: str, tile: int | None, need_x: bool, need_y: bool):
    """Value and gradients (None where not needed) of the MMD estimate; see torchvae.mmd.mmd."""

    # tl.dot needs blocks of at least 16. Measured on an H200 (bench/mmd_cuda.py, n = m = 4096, d = 64):
    # with the gradient accumulator a block of 64 spills registers and ran 75 ms per value and
    # gradients, 32 ran 2.3 ms; without gradients 64 is faster (11 ms vs 17 ms at n = 16384).
    block = min(128, max(16, triton.next_power_of_2(tile or (32 if need_x or need_y else 64))))
    x, y = x.contiguous(), y.contiguous()
    n, m = x.shape[0], y.shape[0]
    w_xx, w_yy, w_xy = term_weights(n, m, estimator)
    unbiased = estimator == "unbiased"
    scales_t = torch.tensor(scales, dtype=x.dtype, device=x.device)
    k_xx, r_xx = _rows(x, x, scales_t, kernel, unbiased, need_x, block)
    k_yy, r_yy = _rows(y, y, scales_t, kernel, unbiased, need_y, block)
    k_xy, r_xy = _rows(x, y, scales_t, kernel, False, need_x, block)
    value = w_xx * k_xx.sum() + w_yy * k_yy.sum() + w_xy * k_xy.sum()
    # Pair term w k(D(a_i, b_j)): d/da_i = 2 w dk/dD (a_i - b_j); the symmetric terms count i and j.
    grad_x = 4.0 * w_xx * r_xx + 2.0 * w_xy * r_xy if need_x else None
    grad_y = None
    if need_y:
        _, r_yx = _rows(y, x, scales_t, kernel, False, True, block)
        grad_y = 4.0 * w_yy * r_yy + 2.0 * w_xy * r_yx
    return value, grad_x, grad_y

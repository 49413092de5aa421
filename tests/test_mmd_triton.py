"""The Triton MMD kernel on CPU tensors through Triton's interpreter, against the float64 reference.

TRITON_INTERPRET must be set before torchvae.mmd_triton decorates its kernel, so it is set here, at
import (collection) time; the interpreter is slow, so this runs a representative subset of the grid.
"""

import importlib
import itertools
import os

import numpy as np
import pytest
import torch

os.environ["TRITON_INTERPRET"] = "1"
triton = pytest.importorskip("triton", reason="triton is not installed: the Triton path cannot be tested")

from triton.runtime.interpreter import InterpretedFunction

from tests import mmd_reference as ref
from torchvae import mmd_triton
from torchvae.mmd import PATH_COUNTS, mmd

if not isinstance(mmd_triton._rows_kernel, InterpretedFunction):  # imported earlier without the env var
    mmd_triton = importlib.reload(mmd_triton)

SUBSET = [
    # (n, m), d, kernel, estimator, bandwidth: every value of every factor, sizes up to 128.
    ((2, 3), 1, "rbf", "unbiased", "2d"),
    ((3, 2), 2, "imq", "biased", 0.7),
    ((7, 5), 16, "rbf", "biased", [0.5, 2.0, 8.0]),
    ((7, 5), 64, "imq", "unbiased", "2d"),
    ((128, 97), 16, "rbf", "unbiased", "2d"),
    ((128, 97), 64, "imq", "unbiased", [0.5, 2.0, 8.0]),
    ((97, 128), 2, "rbf", "biased", 0.7),
]


def run(x, y, dtype, **kwargs):
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    yt = torch.tensor(y, dtype=dtype, requires_grad=True)
    value = mmd(xt, yt, path="triton", **kwargs)
    value.backward()
    assert value.dtype == dtype and value.shape == ()
    return value.detach(), xt.grad, yt.grad


def test_the_kernel_runs_in_the_interpreter():
    assert isinstance(mmd_triton._rows_kernel, InterpretedFunction)
    before = PATH_COUNTS["triton"]
    mmd(torch.randn(5, 3), torch.randn(4, 3), path="triton")
    assert PATH_COUNTS["triton"] == before + 1


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-10), (torch.float32, 2e-4)])
@pytest.mark.parametrize(("size", "d", "kernel", "estimator", "bandwidth"), SUBSET)
def test_matches_reference(size, d, kernel, estimator, bandwidth, dtype, rtol):
    want = ref.expected(*size, d, kernel, bandwidth, estimator)
    got = run(want[0], want[1], dtype, kernel=kernel, estimator=estimator, bandwidth=bandwidth, tile=32)
    ref.assert_close(*got, want, rtol=rtol)


@pytest.mark.parametrize(("kernel", "estimator"), list(itertools.product(ref.KERNELS, ref.ESTIMATORS)))
def test_tile_size_does_not_change_the_result(kernel, estimator):
    x, y = ref.sample(100, 75, 5)  # 100 and 75 are not multiples of any block size
    for dtype, rtol in ((torch.float32, 2e-5), (torch.float64, 1e-12)):
        base = run(x, y, dtype, kernel=kernel, estimator=estimator, tile=64)
        for tile in (16, 32, 128):
            got = run(x, y, dtype, kernel=kernel, estimator=estimator, tile=tile)
            for a, b in zip(got, base, strict=True):
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rtol, atol=rtol * b.abs().max().item())


def test_matches_the_tiled_path_without_gradients():
    x, y = torch.randn(50, 7), torch.randn(60, 7) + 0.2
    with torch.no_grad():
        got = mmd(x, y, path="triton", kernel="imq")
    assert not got.requires_grad
    assert got.item() == pytest.approx(mmd(x, y, path="tiled", kernel="imq").item(), rel=1e-5, abs=1e-6)

"""torchvae.mmd against the float64 numpy reference (tests/mmd_reference.py): values and gradients."""

import itertools

import numpy as np
import pytest
import torch

from tests import mmd_reference as ref
from torchvae.mmd import PATH_COUNTS, mmd, select_path


@pytest.fixture(autouse=True)
def one_thread():
    """Many small ops: with the 2 cores shared by other jobs, OpenMP's spin-waiting makes 2 threads far
    slower than 1 on tiny tiles. (The benchmark, not the tests, measures the 2-thread speed.)"""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


GRID = list(itertools.product(ref.SIZES, ref.DIMS, ref.KERNELS, ref.ESTIMATORS, ref.BANDWIDTHS))


def run(x, y, dtype=torch.float64, **kwargs):
    """(value, grad_x, grad_y) from torchvae.mmd.mmd on numpy inputs."""
    xt = torch.tensor(x, dtype=dtype, requires_grad=True)
    yt = torch.tensor(y, dtype=dtype, requires_grad=True)
    value = mmd(xt, yt, **kwargs)
    value.backward()
    assert value.dtype == dtype and value.shape == ()
    return value.detach(), xt.grad, yt.grad


@pytest.mark.parametrize("path", ["reference", "tiled"])
@pytest.mark.parametrize(("size", "d", "kernel", "estimator", "bandwidth"), GRID)
def test_float64_matches_reference(size, d, kernel, estimator, bandwidth, path):
    n, m = size
    want = ref.expected(n, m, d, kernel, bandwidth, estimator)
    kw = {"kernel": kernel, "estimator": estimator, "bandwidth": bandwidth, "path": path}
    got = run(want[0], want[1], tile=64 if path == "tiled" else None, **kw)
    ref.assert_close(*got, want, rtol=1e-10)


@pytest.mark.parametrize("path", ["reference", "tiled"])
@pytest.mark.parametrize("size", ref.SIZES)
@pytest.mark.parametrize(("kernel", "bandwidth"), [("rbf", "2d"), ("imq", [0.5, 2.0, 8.0])])
def test_float32_matches_reference(size, kernel, bandwidth, path):
    n, m = size
    want = ref.expected(n, m, 16, kernel, bandwidth, "unbiased")
    got = run(want[0], want[1], torch.float32, kernel=kernel, bandwidth=bandwidth, path=path)
    ref.assert_close(*got, want, rtol=2e-4)


@pytest.mark.parametrize(("kernel", "bandwidth"), [("rbf", 3.0), ("imq", "2d"), ("rbf", [1.0, 4.0])])
@pytest.mark.parametrize("estimator", ref.ESTIMATORS)
def test_tile_size_does_not_change_the_result(kernel, bandwidth, estimator):
    x, y = ref.sample(500, 389, 16)
    kw = {"kernel": kernel, "bandwidth": bandwidth, "estimator": estimator, "path": "tiled"}
    for dtype, rtol in ((torch.float32, 2e-5), (torch.float64, 1e-12)):
        base = run(x, y, dtype, tile=500, **kw)  # one tile for x: no tiling of the x-x term
        for tile in (33, 64, 100, 256, 2000):  # mostly not dividing n or m
            got = run(x, y, dtype, tile=tile, **kw)
            for a, b in zip(got, base):
                np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=rtol, atol=rtol * b.abs().max().item())


def test_reference_formulae_agree():
    """The reference itself: vectorised vs double loops, analytic vs finite-difference gradients."""
    x, y = ref.sample(6, 4, 3)
    for kw in ({}, {"kernel": "imq", "bandwidth": [0.5, 2.0], "estimator": "biased"}):
        value, gx, gy = ref.mmd_and_grad(x, y, **kw)
        assert value == pytest.approx(ref.mmd_loops(x, y, **kw), abs=1e-13)
        np.testing.assert_allclose(gx, ref.numeric_grad(lambda a, kw=kw: ref.mmd(a, y, **kw), x), atol=1e-8)
        np.testing.assert_allclose(gy, ref.numeric_grad(lambda b, kw=kw: ref.mmd(x, b, **kw), y), atol=1e-8)


@pytest.mark.parametrize("path", ["reference", "tiled"])
def test_known_values(path):
    # Same samples: biased V-statistic is exactly 0; identical duplicated points: no NaN anywhere.
    x = torch.tensor(ref.sample(50, 50, 4)[0], requires_grad=True)
    assert mmd(x, x.detach().clone(), estimator="biased", path=path).item() == pytest.approx(0.0, abs=1e-14)
    dup = torch.ones(5, 3, requires_grad=True)
    value = mmd(dup, torch.zeros(4, 3), kernel="imq", path=path)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(dup.grad).all()
    # n=m=2, d=1, rbf c=1: x={0,1}, y={0,2}: k(0,1)=e^-1, k(0,2)=e^-4, cross pairs 1+e^-4+e^-1+e^-1.
    got = mmd(torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]]), bandwidth=1.0, path=path)
    e = np.exp
    assert got.item() == pytest.approx(e(-1) + e(-4) - (1 + e(-4) + 2 * e(-1)) / 2, abs=1e-6)


def test_training_step_through_tiled_path_matches_reference():
    grads = {}
    for path in ("reference", "tiled"):
        layer = torch.nn.Linear(8, 4, dtype=torch.float64)
        torch.nn.init.normal_(layer.weight, generator=torch.Generator().manual_seed(1))
        torch.nn.init.normal_(layer.bias, generator=torch.Generator().manual_seed(2))
        inputs = torch.tensor(ref.sample(300, 300, 8)[0])
        prior = torch.tensor(ref.sample(300, 300, 4)[1])  # needs no gradient
        loss = 3.0 * mmd(layer(inputs), prior, path=path, tile=128) + layer.bias.square().sum()
        loss.backward()
        grads[path] = layer.weight.grad.clone()
    torch.testing.assert_close(grads["tiled"], grads["reference"], rtol=1e-10, atol=1e-12)


def test_no_grad_and_partial_grad():
    x = torch.randn(300, 5, requires_grad=True)
    y = torch.randn(200, 5)
    with torch.no_grad():
        value = mmd(x, y, path="tiled")
    assert not value.requires_grad
    value = mmd(x, y, path="tiled")
    value.backward()
    assert x.grad is not None and y.grad is None


def test_dispatch_is_recorded():
    small, large = torch.randn(64, 4), torch.randn(4096, 4)
    assert select_path(small, "auto") == "tiled"
    assert select_path(large, "auto") == "tiled"  # CPU: never triton
    assert select_path(large, "reference") == "reference"
    before = PATH_COUNTS.copy()
    mmd(small, small + 1, path="reference")
    mmd(small, large)
    mmd(small, small, path="tiled")
    assert PATH_COUNTS["reference"] - before["reference"] == 1
    assert PATH_COUNTS["tiled"] - before["tiled"] == 2


def test_torchvae_mmd_does_not_import_triton_or_jax():
    import subprocess
    import sys

    code = (
        "import sys, torch; from torchvae.mmd import mmd; mmd(torch.randn(9, 2), torch.randn(900, 2));"
        "assert 'triton' not in sys.modules and 'jax' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kernel": "gauss"}, ValueError, "unknown kernel"),
        ({"estimator": "mle"}, ValueError, "unknown estimator"),
        ({"path": "cuda"}, ValueError, "unknown path"),
        ({"bandwidth": 0.0}, ValueError, "positive"),
        ({"bandwidth": -1.0}, ValueError, "positive"),
        ({"bandwidth": [1.0, -2.0]}, ValueError, "positive"),
        ({"bandwidth": []}, ValueError, "empty"),
        ({"bandwidth": "3d"}, ValueError, "2d"),
        ({"bandwidth": None}, TypeError, "bandwidth"),
        ({"tile": 0}, ValueError, "tile"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        mmd(torch.randn(4, 2), torch.randn(5, 2), **kwargs)


@pytest.mark.parametrize(
    ("x", "y", "kwargs", "error", "match"),
    [
        (torch.randn(1, 2), torch.randn(5, 2), {}, ValueError, "at least 2 samples"),
        (torch.randn(4, 2), torch.randn(1, 2), {}, ValueError, "estimator='biased'"),
        (torch.randn(4, 2), torch.randn(5, 3), {}, ValueError, "same feature size"),
        (torch.randn(4), torch.randn(5, 2), {}, ValueError, "2-D"),
        (torch.randn(4, 2, 1), torch.randn(5, 2), {}, ValueError, "2-D"),
        (torch.ones(4, 2, dtype=torch.int64), torch.randn(5, 2), {}, TypeError, "floating"),
        (torch.randn(4, 2), torch.randn(5, 2, dtype=torch.float64), {}, TypeError, "same dtype"),
        (np.zeros((4, 2)), torch.randn(5, 2), {}, TypeError, "torch.Tensor"),
    ],
)
def test_bad_inputs(x, y, kwargs, error, match):
    with pytest.raises(error, match=match):
        mmd(x, y, **kwargs)


def test_single_samples_work_with_the_biased_estimator():
    for path in ("reference", "tiled"):
        got = mmd(torch.zeros(1, 2, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64), path=path,
                  estimator="biased", bandwidth=1.0)
        assert got.item() == pytest.approx(2 - 2 * np.exp(-2.0), abs=1e-12)


def test_cuda_dispatch_follows_the_measured_thresholds(monkeypatch):
    """The "auto" choice on CUDA, without a GPU: a stand-in with is_cuda and shape is all it reads."""
    import types

    from torchvae import mmd as mmd_module

    def cuda(n):
        return types.SimpleNamespace(is_cuda=True, shape=(n, 8))

    monkeypatch.setattr(mmd_module, "_triton_available", lambda: True)
    assert select_path(cuda(256), "auto") == "reference"  # 256 * 256 pairs: dense
    assert select_path(cuda(256), "auto", cuda(257)) == "triton"
    assert select_path(cuda(65536), "auto") == "triton"
    assert select_path(cuda(65536), "tiled") == "tiled"  # an explicit path is kept
    monkeypatch.setattr(mmd_module, "_triton_available", lambda: False)
    assert select_path(cuda(4096), "auto") == "reference"
    assert select_path(cuda(8192), "auto") == "reference"
    assert select_path(cuda(8193), "auto") == "tiled"

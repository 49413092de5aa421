"""jaxvae.mmd against the float64 numpy reference (tests/mmd_reference.py): values and gradients."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvae.mmd import PATH_COUNTS, mmd, select_path
from tests import mmd_reference as ref

SETTINGS = list(itertools.product(ref.KERNELS, ref.ESTIMATORS, ref.BANDWIDTHS))
# Every tiled-path case compiles a scan; cover each (size, d) once, cycling through the 12 settings,
# plus every setting at one size.
TILED = [(size, d, *SETTINGS[i % len(SETTINGS)]) for i, (size, d) in enumerate(itertools.product(ref.SIZES, ref.DIMS))]
TILED += [((128, 97), 16, *setting) for setting in SETTINGS]


def run(x, y, dtype=jnp.float64, jit=False, **kwargs):
    """(value, grad_x, grad_y) from jaxvae.mmd.mmd on numpy inputs."""
    fn = jax.value_and_grad(lambda a, b: mmd(a, b, **kwargs), argnums=(0, 1))
    value, (gx, gy) = (jax.jit(fn) if jit else fn)(jnp.asarray(x, dtype), jnp.asarray(y, dtype))
    assert value.dtype == dtype and value.shape == ()
    return value, gx, gy


@pytest.mark.parametrize("d", ref.DIMS)
@pytest.mark.parametrize("size", ref.SIZES)
def test_reference_path_float64(size, d):
    """The full grid: all 12 (kernel, estimator, bandwidth) settings in one jit per (size, d)."""
    wants = [ref.expected(*size, d, k, bw, est) for k, est, bw in SETTINGS]

    def all_settings(a, b):
        return [
            jax.value_and_grad(lambda a, b, k=k, e=e, bw=bw: mmd(a, b, kernel=k, estimator=e, bandwidth=bw,
                                                                path="reference"), argnums=(0, 1))(a, b)
            for k, e, bw in SETTINGS
        ]

    with jax.enable_x64(True):
        results = jax.jit(all_settings)(jnp.asarray(wants[0][0]), jnp.asarray(wants[0][1]))
    for (value, (gx, gy)), want in zip(results, wants, strict=True):
        assert value.dtype == jnp.float64
        ref.assert_close(value, gx, gy, want, rtol=1e-10)


@pytest.mark.parametrize(("size", "d", "kernel", "estimator", "bandwidth"), TILED)
def test_tiled_path_float64(size, d, kernel, estimator, bandwidth):
    want = ref.expected(*size, d, kernel, bandwidth, estimator)
    kw = {"kernel": kernel, "estimator": estimator, "bandwidth": bandwidth, "path": "tiled", "tile": 48}
    with jax.enable_x64(True):
        got = run(want[0], want[1], jit=True, **kw)
        value_only = mmd(jnp.asarray(want[0]), jnp.asarray(want[1]), **kw)  # the custom_vjp primal
    ref.assert_close(*got, want, rtol=1e-10)
    assert abs(float(value_only) - want[2]) <= 1e-10 * max(1.0, abs(want[2]))


@pytest.mark.parametrize("path", ["reference", "tiled"])
@pytest.mark.parametrize("size", ref.SIZES)
@pytest.mark.parametrize(("kernel", "bandwidth"), [("rbf", "2d"), ("imq", [0.5, 2.0, 8.0])])
def test_float32_matches_reference(size, kernel, bandwidth, path):
    want = ref.expected(*size, 16, kernel, bandwidth, "unbiased")
    got = run(want[0], want[1], jnp.float32, jit=True, kernel=kernel, bandwidth=bandwidth, path=path)
    ref.assert_close(*got, want, rtol=2e-4)


@pytest.mark.parametrize(("kernel", "bandwidth", "estimator"), [("rbf", 3.0, "unbiased"), ("imq", "2d", "biased")])
def test_tile_size_does_not_change_the_result(kernel, bandwidth, estimator):
    x, y = ref.sample(500, 389, 16)
    kw = {"kernel": kernel, "bandwidth": bandwidth, "estimator": estimator, "path": "tiled"}
    for dtype, rtol in ((jnp.float32, 2e-5), (jnp.float64, 1e-12)):
        with jax.enable_x64(dtype == jnp.float64):
            base = run(x, y, dtype, jit=True, tile=500, **kw)  # one tile for x
            for tile in (33, 100, 256, 2000):  # mostly not dividing n or m
                got = run(x, y, dtype, jit=True, tile=tile, **kw)
                for a, b in zip(got, base, strict=True):
                    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol,
                                               atol=rtol * float(jnp.abs(b).max()))


def test_known_values():
    for path in ("reference", "tiled"):
        x = jnp.asarray(ref.sample(50, 50, 4)[0], jnp.float32)
        assert float(mmd(x, x, estimator="biased", path=path)) == pytest.approx(0.0, abs=1e-6)
        value, grad = jax.value_and_grad(lambda a, p=path: mmd(a, jnp.zeros((4, 3)), kernel="imq", path=p))(
            jnp.ones((5, 3))
        )
        assert np.isfinite(float(value)) and np.isfinite(np.asarray(grad)).all()
        got = mmd(jnp.array([[0.0], [1.0]]), jnp.array([[0.0], [2.0]]), bandwidth=1.0, path=path)
        e = np.exp
        assert float(got) == pytest.approx(e(-1) + e(-4) - (1 + e(-4) + 2 * e(-1)) / 2, abs=1e-6)


def test_training_step_under_jit_matches_reference():
    inputs = jnp.asarray(ref.sample(300, 300, 8)[0], jnp.float32)
    prior = jnp.asarray(ref.sample(300, 300, 4)[1], jnp.float32)
    params = {"w": jnp.asarray(ref.sample(8, 4, 4)[0], jnp.float32), "b": jnp.full((4,), 0.1, jnp.float32)}

    def loss(p, path):
        return 3.0 * mmd(inputs @ p["w"] + p["b"], prior, path=path, tile=128) + (p["b"] ** 2).sum()

    before = PATH_COUNTS["tiled"]
    step = jax.jit(lambda p: jax.tree.map(lambda v, g: v - 0.1 * g, p, jax.grad(loss)(p, "tiled")))
    want = jax.tree.map(lambda v, g: v - 0.1 * g, params, jax.grad(loss)(params, "reference"))
    got = step(params)
    step(params)  # cached: no new trace
    assert PATH_COUNTS["tiled"] == before + 1
    for k in params:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=1e-5, atol=1e-6)


def test_dispatch_is_recorded():
    small, large = jnp.ones((64, 4)), jnp.ones((4096, 4))
    assert select_path(small, "auto") == "tiled"
    assert select_path(large, "auto") == "tiled"
    assert select_path(large, "reference") == "reference"
    before = PATH_COUNTS.copy()
    mmd(small, small + 1, path="reference")
    mmd(small, jnp.ones((2048, 4)))
    assert PATH_COUNTS["reference"] - before["reference"] == 1
    assert PATH_COUNTS["tiled"] - before["tiled"] == 1


def test_jaxvae_mmd_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; import jaxvae.mmd; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"kernel": "gauss"}, ValueError, "unknown kernel"),
        ({"estimator": "mle"}, ValueError, "unknown estimator"),
        ({"path": "triton"}, ValueError, "unknown path"),
        ({"bandwidth": 0.0}, ValueError, "positive"),
        ({"bandwidth": [1.0, -2.0]}, ValueError, "positive"),
        ({"bandwidth": []}, ValueError, "empty"),
        ({"bandwidth": "3d"}, ValueError, "2d"),
        ({"bandwidth": None}, TypeError, "bandwidth"),
        ({"tile": -1}, ValueError, "tile"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        mmd(jnp.ones((4, 2)), jnp.ones((5, 2)), **kwargs)


@pytest.mark.parametrize(
    ("x", "y", "error", "match"),
    [
        (np.ones((1, 2)), np.ones((5, 2)), ValueError, "at least 2 samples"),
        (np.ones((4, 2)), np.ones((1, 2)), ValueError, "estimator='biased'"),
        (np.ones((4, 2)), np.ones((5, 3)), ValueError, "same feature size"),
        (np.ones(4), np.ones((5, 2)), ValueError, "2-D"),
        (np.ones((4, 2), np.int32), np.ones((5, 2)), TypeError, "floating"),
        (np.ones((4, 2), np.float32), np.ones((5, 2), np.float64), TypeError, "same dtype"),
        ([[1.0, 2.0]], np.ones((5, 2)), TypeError, "array"),
    ],
)
def test_bad_inputs(x, y, error, match):
    with pytest.raises(error, match=match):
        mmd(x, y)


def test_gpu_dispatch_keeps_the_dense_path_while_it_is_measured_faster(monkeypatch):
    """On a GPU backend "auto" is the dense path up to GPU_DENSE_MAX_PAIRS pairs, tiled beyond; the
    backend is read from jax.default_backend, patched here (no GPU on the test machine)."""
    from jaxvae import mmd as mmd_module

    shape = jax.ShapeDtypeStruct  # select_path reads only .shape
    monkeypatch.setattr(mmd_module.jax, "default_backend", lambda: "gpu")
    assert select_path(shape((64, 4), jnp.float32), "auto") == "reference"
    assert select_path(shape((16384, 4), jnp.float32), "auto") == "reference"
    assert select_path(shape((16384, 4), jnp.float32), "auto", shape((16385, 4), jnp.float32)) == "tiled"
    assert select_path(shape((64, 4), jnp.float32), "tiled") == "tiled"
    monkeypatch.setattr(mmd_module.jax, "default_backend", lambda: "cpu")
    assert select_path(shape((64, 4), jnp.float32), "auto") == "tiled"

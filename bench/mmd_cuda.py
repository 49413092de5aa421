"""The MMD engine on a CUDA GPU: correctness of every torch path (and JAX's) against the float64
numpy reference, then forward + backward time and peak GPU memory per path and size.

    python bench/mmd_cuda.py                       # both parts, d = 64 (a few minutes on an H100/H200)
    python bench/mmd_cuda.py --sizes 4096 16384 --no-jax

Needs a CUDA device (torch.cuda.is_available()); exits with status 2 otherwise. Correctness: each
(path, dtype) is compared with tests/mmd_reference.py on a grid of sizes, kernels, estimators and
bandwidths; any relative error above the tolerance makes the exit status 1. Timing: the median of
`--reps` forward + backward calls after one warm-up (CUDA-synchronised wall clock); peak memory is
torch.cuda.max_memory_allocated minus the inputs (torch only: JAX's allocator reports no per-call peak).
Prints markdown tables: figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests import mmd_reference as ref

GRID = [
    # (n, m), d, kernel, estimator, bandwidth
    ((2, 3), 1, "rbf", "unbiased", "2d"),
    ((7, 5), 16, "rbf", "biased", [0.5, 2.0, 8.0]),
    ((128, 97), 64, "imq", "unbiased", [0.5, 2.0, 8.0]),
    ((97, 128), 2, "rbf", "biased", 0.7),
    ((300, 700), 32, "imq", "biased", "2d"),
    ((1000, 1000), 64, "rbf", "unbiased", "2d"),
    ((2049, 1500), 100, "imq", "unbiased", "2d"),
]
TOL = {"float64": 1e-9, "float32": 3e-4}


def rel_errors(got, want) -> tuple[float, float, float]:
    _, _, v, gx, gy, (sx, sy) = want
    value, grad_x, grad_y = got
    ev = abs(float(value) - v) / max(abs(v), 1.0)
    egx = float(np.max(np.abs(np.asarray(grad_x, np.float64) - gx))) / max(sx, 1e-300)
    egy = float(np.max(np.abs(np.asarray(grad_y, np.float64) - gy))) / max(sy, 1e-300)
    return ev, egx, egy


def torch_case(path, dtype, want, kernel, estimator, bandwidth):
    import torch

    from torchvae.mmd import mmd

    x = torch.tensor(want[0], dtype=dtype, device="cuda", requires_grad=True)
    y = torch.tensor(want[1], dtype=dtype, device="cuda", requires_grad=True)
    value = mmd(x, y, kernel=kernel, estimator=estimator, bandwidth=bandwidth, path=path)
    value.backward()
    return value.item(), x.grad.cpu().numpy(), y.grad.cpu().numpy()


def jax_case(path, dtype, want, kernel, estimator, bandwidth):
    import jax
    import jax.numpy as jnp

    from jaxvae.mmd import mmd

    x, y = jnp.asarray(want[0], dtype), jnp.asarray(want[1], dtype)
    value, (gx, gy) = jax.value_and_grad(
        lambda a, b: mmd(a, b, kernel=kernel, estimator=estimator, bandwidth=bandwidth, path=path), argnums=(0, 1))(x, y)
    return float(value), np.asarray(gx), np.asarray(gy)


def correctness(with_torch: bool, with_jax: bool) -> bool:
    import torch

    cases = []
    if with_torch:
        cases += [("torch", p, dt) for p in ("reference", "tiled", "triton") for dt in ("float32", "float64")]
    if with_jax:
        import jax

        jax.config.update("jax_enable_x64", True)
        cases += [("jax", p, dt) for p in ("reference", "tiled") for dt in ("float32", "float64")]
    print("## Correctness on CUDA against the float64 numpy reference (max relative error over the grid)\n")
    print("| backend | path | dtype | value | grad x | grad y | tolerance | ok |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    all_ok = True
    for backend, path, dtype in cases:
        worst = [0.0, 0.0, 0.0]
        for size, d, kernel, estimator, bandwidth in GRID:
            want = ref.expected(*size, d, kernel, bandwidth, estimator)
            if backend == "torch":
                got = torch_case(path, getattr(torch, dtype), want, kernel, estimator, bandwidth)
            else:
                got = jax_case(path, dtype, want, kernel, estimator, bandwidth)
            worst = [max(a, b) for a, b in zip(worst, rel_errors(got, want))]
        ok = max(worst) <= TOL[dtype]
        all_ok &= ok
        print(f"| {backend} | {path} | {dtype} | {worst[0]:.1e} | {worst[1]:.1e} | {worst[2]:.1e} | {TOL[dtype]:.0e} |"
              f" {'yes' if ok else 'NO'} |", flush=True)
    return all_ok


def time_torch(path: str, n: int, d: int, reps: int) -> tuple[float, float, float]:
    import torch

    from torchvae.mmd import mmd

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(n, d)), dtype=torch.float32, device="cuda", requires_grad=True)
    y = torch.tensor(0.5 + rng.normal(size=(n, d)), dtype=torch.float32, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()

    def fb():
        x.grad = y.grad = None
        mmd(x, y, path=path).backward()

    def fwd():
        with torch.no_grad():
            mmd(x, y, path=path)

    out = []
    for fn in (fwd, fb):
        fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        out.append(statistics.median(times))
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    torch.cuda.empty_cache()
    return out[0], out[1], peak


def time_jax(path: str, n: int, d: int, reps: int) -> tuple[float, float]:
    import jax
    import jax.numpy as jnp

    from jaxvae.mmd import mmd

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    y = jnp.asarray(0.5 + rng.normal(size=(n, d)), jnp.float32)
    fb = jax.jit(jax.value_and_grad(lambda a, b: mmd(a, b, path=path), argnums=(0, 1)))
    fwd = jax.jit(lambda a, b: mmd(a, b, path=path))
    out = []
    for fn in (fwd, fb):
        jax.block_until_ready(fn(x, y))
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            jax.block_until_ready(fn(x, y))
            times.append(time.perf_counter() - start)
        out.append(statistics.median(times))
    return out[0], out[1]


def timings(sizes: list[int], d: int, reps: int, with_jax: bool, dense_max: int) -> None:
    import torch

    print(f"\n## Forward and forward + backward, float32, d = {d}, n = m (median of {reps}, ms)\n")
    print("| backend | path | n | forward ms | fwd+bwd ms | peak extra MiB | vs reference |")
    print("|---|---|---:|---:|---:|---:|---|")
    paths = [("torch", p) for p in ("reference", "tiled", "triton")]
    if with_jax:
        paths += [("jax", p) for p in ("reference", "tiled")]
    for n in sizes:
        base = {}
        for backend, path in paths:
            if path == "reference" and n > dense_max:
                continue
            if backend == "torch":
                fwd, fb, peak = time_torch(path, n, d, reps)
                peak_s = f"{peak:.0f}"
            else:
                (fwd, fb), peak_s = time_jax(path, n, d, reps), "-"
            if path == "reference":
                base[backend] = fb
            speed = f"{base[backend] / fb:.2f}x faster" if backend in base and path != "reference" else ""
            print(f"| {backend} | {path} | {n} | {fwd * 1e3:.3f} | {fb * 1e3:.3f} | {peak_s} | {speed} |", flush=True)
    print(f"\n{torch.cuda.get_device_name()}; torch {torch.__version__}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096, 8192, 16384, 65536])
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--dense-max", type=int, default=16384, help="largest n for the dense reference path")
    parser.add_argument("--no-jax", action="store_true", help="torch only")
    parser.add_argument("--correctness", choices=["all", "torch", "jax", "none"], default="all",
                        help="which backends' correctness to check (default all)")
    parser.add_argument("--no-timings", action="store_true", help="correctness only")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("mmd_cuda.py: no CUDA device (torch.cuda.is_available() is False); run bench/mmd.py on CPU instead")
        return 2
    ok = True
    if args.correctness != "none":
        ok = correctness(args.correctness in ("all", "torch"), args.correctness in ("all", "jax") and not args.no_jax)
    if not args.no_timings:
        timings(args.sizes, args.d, args.reps, not args.no_jax, args.dense_max)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark of the MMD engine: forward + backward time and extra peak memory, per backend and path.

    python bench/mmd.py                      # both backends, the default sizes (a few minutes each)
    python bench/mmd.py --backend torch --sizes 1024 8192 --big 0

Every configuration runs in its own subprocess so its peak RSS (resource.getrusage) is its own;
"extra peak" is that peak minus the RSS just before the first mmd call (inputs already built).
The ideal time counts the arithmetic honestly: 2 n m d flops for each of the three distance matrices
(x-x, y-y, x-y) plus four more for the backward matmuls (G_xx x, G_xy y, G_yy y, G_xy^T x), at the
measured sgemm rate, plus 3 n m kernel evaluations at the measured in-cache exp rate. (The tiled paths
visit only half of the symmetric x-x and y-y tiles, so they can in principle beat this "ideal".)
Prints a markdown table. Times are wall clock on a shared machine: figures, not pass/fail.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The dense formulation holds several [n, n] float32 matrices for its backward; past this it is skipped.
DENSE_MAX_N = 8192


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def best(fn, reps: int, warmup: bool = True) -> float:
    """The fastest of ``reps`` timed calls of ``fn`` (after one untimed call if ``warmup``)."""
    if warmup:
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_rates() -> dict:
    """sgemm GFLOP/s (2048^3 torch matmul) and exp rate (in-cache, 2^18 floats, in place)."""
    import torch

    a = torch.randn(2048, 2048)
    gemm = 2 * 2048**3 / best(lambda: a @ a, 15)
    e = torch.randn(2**18).clamp_(max=0)
    exp = e.numel() / best(lambda: e.exp_().neg_(), 50)  # neg_ keeps the values bounded; counted as exp
    return {"sgemm_flops": gemm, "exp_per_s": exp, "threads": torch.get_num_threads()}


def run_one(backend: str, path: str, n: int, d: int, reps: int) -> dict:
    """Time forward only and forward + backward of one configuration (in this process), and the extra
    peak memory (of both; the forward + backward is the larger)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x_np = rng.normal(size=(n, d)).astype(np.float32)
    y_np = (0.5 + rng.normal(size=(n, d))).astype(np.float32)
    if backend == "torch":
        import torch

        from torchvae.mmd import mmd

        x = torch.from_numpy(x_np).requires_grad_()
        y = torch.from_numpy(y_np).requires_grad_()

        def step():
            x.grad = y.grad = None
            mmd(x, y, path=path).backward()
            return x.grad

        def forward():
            with torch.no_grad():
                return mmd(x, y, path=path)

        base = _rss_mb()
        step_fn, fwd_fn = step, forward
    else:
        import jax
        import jax.numpy as jnp

        from jaxvae.mmd import mmd

        x, y = jnp.asarray(x_np), jnp.asarray(y_np)
        fn = jax.jit(jax.value_and_grad(lambda a, b: mmd(a, b, path=path), argnums=(0, 1)))
        base = _rss_mb()
        compiled = fn.lower(x, y).compile()
        compiled_fwd = jax.jit(lambda a, b: mmd(a, b, path=path)).lower(x, y).compile()

        def step_fn():
            return jax.block_until_ready(compiled(x, y))

        def fwd_fn():
            return jax.block_until_ready(compiled_fwd(x, y))

    # JAX is compiled ahead above and torch needs no warm-up: every timed call counts.
    fwd = best(fwd_fn, reps, warmup=False)
    return {"fwd": fwd, "time": best(step_fn, reps, warmup=False), "extra_mb": _peak_mb() - base}


def child(args) -> None:
    if args.what == "rates":
        print(json.dumps(measure_rates()))
    else:
        print(json.dumps(run_one(args.backend, args.path, args.n, args.d, args.reps)))


THREADS = 0  # 0: each library's default (all cores)


def spawn(*argv: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT}
    if THREADS:
        env["OMP_NUM_THREADS"] = str(THREADS)
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                            " intra_op_parallelism_threads=1" if THREADS == 1 else env.get("XLA_FLAGS", ""))
    out = subprocess.run([sys.executable, __file__, "--child", *argv], cwd=ROOT, check=True,
                         capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["torch", "jax", "all"], default="all")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 2048, 4096, 8192])
    parser.add_argument("--big", type=int, default=65536, help="the memory-test size, run once (0: skip)")
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads per run (0: the libraries' default). On a machine shared with other "
                             "jobs, 1 avoids OpenMP barriers waiting on descheduled threads")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--what", default="run", help=argparse.SUPPRESS)
    parser.add_argument("--path", default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--reps", type=int, default=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if os.environ.get("OMP_NUM_THREADS"):
            import torch

            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        child(args)
        return
    global THREADS
    THREADS = args.threads

    rates = spawn("--what", "rates")
    print(f"sgemm {rates['sgemm_flops'] / 1e9:.0f} GFLOP/s, exp {rates['exp_per_s'] / 1e9:.2f} G/s "
          f"(in cache), torch threads {rates['threads']}, load average {os.getloadavg()[0]:.1f}", flush=True)
    d = args.d
    backends = ["torch", "jax"] if args.backend == "all" else [args.backend]
    sizes = list(args.sizes) + ([args.big] if args.big else [])
    print("\n| backend | n = m | d | path | fwd s | fwd+bwd s | ideal s | x ideal | vs reference | extra peak MB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for backend in backends:
        for n in sizes:
            ideal = 7 * 2 * n * n * d / rates["sgemm_flops"] + 3 * n * n / rates["exp_per_s"]
            reps = 1 if n > 8192 else 3 if n >= 4096 else 20
            dense = None
            for path in ("reference", "tiled", "auto") if n <= 1024 else ("reference", "tiled"):
                if path == "reference" and n > DENSE_MAX_N:
                    print(f"| {backend} | {n} | {d} | reference | skipped: {3 * n * n * 4 / 2**30:.0f} GiB "
                          "of [n, n] float32 matrices | | | | | |", flush=True)
                    continue
                got = spawn("--backend", backend, "--path", path, "--n", str(n), "--d", str(d),
                            "--reps", str(reps))
                if path == "reference":
                    dense = got["time"]
                speedup = f"{dense / got['time']:.2f}x faster" if dense and path != "reference" else ""
                print(f"| {backend} | {n} | {d} | {path} | {got['fwd']:.4f} | {got['time']:.4f} | {ideal:.4f} | "
                      f"{got['time'] / ideal:.2f} | {speedup} | {got['extra_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()

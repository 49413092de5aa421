"""The machine's limits per backend (float32 matmul GFLOP/s, exp/s) and the FLOP counts of the training steps.

    python bench/peak.py [--threads N] [--repeats R] [--device cpu]

Each backend is measured in its own process (JAX's and torch's thread pools must not compete), pinned to
``--threads`` CPUs of this process's affinity (default: all of them, each library's default thread count).
Matmuls: ``[m, k] x [k, n]`` float32, ``jax.jit`` + ``block_until_ready`` / ``torch.mm`` under
``no_grad``, 2 m k n FLOP each, the best of ``--repeats`` timed repeats after a warm-up; a repeat runs the
product enough times to take about 50 ms. The square 2048 product is the limit the other benchmarks
divide by; 512 and the small-batch shapes of training show how much of it small matmuls reach. exp:
elementwise on 2^20 float32 (4 MiB in, 4 MiB out: in the L3 cache), in G exp/s. Out of cache the figure
measures memory, and in JAX the page faults of a fresh output: 2^24 (64 MiB) gave XLA 0.40 G/s against
2.41 at 2^20, one core of the AMD EPYC development machine, 2026-12-02.

The other benchmarks import ``measure`` (one backend, in a subprocess), ``run_child`` (a subprocess pinned
like ``measure``'s), ``flops_image_mlp`` and ``flops_text_token``, and print "fraction of the limit" =
units/s * FLOP per unit / (2048 matmul FLOP/s of that backend, same threads, same invocation).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# [m, k] x [k, n]: the limit, a mid-size square, and the small matmuls of training (batch 20 and 128).
SHAPES = ((2048, 2048, 2048), (512, 512, 512), (20, 784, 200), (128, 784, 512))
LIMIT_SHAPE = "2048x2048x2048"
EXP_SIZE = 2**20
REPEAT_S = 0.05  # one timed repeat runs the op this long, at least
PIXELS = 784
RNN_GATES = {"gru": 3, "lstm": 4}


# ---------------------------------------------------------------------------------------------------
# FLOP counts


def dense_flops(n_in: int, n_out: int) -> int:
    """Forward FLOP of a dense layer [n_in -> n_out] per example: 2 * n_in * n_out."""
    return 2 * n_in * n_out


def flops_image_mlp(hidden_sizes: Sequence[int], latent_dim: int, objective: str = "elbo", *,
                    batch_size: int | None = None, iw_samples: int = 1, pixels: int = PIXELS) -> int:
    """Training FLOP per image (forward + backward) of the MLP image VAE.

    Encoder ``pixels-h1-..-hk-2*latent`` (mean and log-variance), decoder ``latent-hk-..-h1-pixels``.
    A dense layer costs ``2 * in * out`` FLOP forward and twice that backward (weight and input
    gradients): 3x in all. Elementwise work (biases, activations, sampling, the loss) is ignored.
    The first layer's input gradient is counted too, though autodiff skips it (the images are data).

    784-400-20: encoder 2 (784*400 + 400*40) = 659,200, decoder 2 (20*400 + 400*784) = 643,200
    forward; x3 = 3,907,200 FLOP (3,280,000 without the first layer's input gradient).
    784-512-512-20 (the default): forward 1,385,984 + 1,329,664, x3 = 8,146,944 FLOP.

    ``objective``: "elbo"; "iwae" runs the decoder ``iw_samples`` times; "mmd" adds the kernel's
    distance matmuls at ``batch_size`` B: three [B, B] matrices forward (z-z, prior-prior, z-prior,
    2 B d FLOP per image each) and two backward (the gradient of z only): 10 B d FLOP per image.
    """
    if objective not in ("elbo", "mmd", "iwae"):
        raise ValueError(f"objective must be elbo, mmd or iwae; got {objective!r}")
    if objective == "mmd" and batch_size is None:
        raise ValueError("the MMD's FLOP per image depend on the batch size: pass batch_size")
    sizes = [pixels, *hidden_sizes]
    encoder = sum(dense_flops(a, b) for a, b in itertools.pairwise(sizes)) + dense_flops(sizes[-1], 2 * latent_dim)
    back = [latent_dim, *reversed(hidden_sizes), pixels]
    decoder = sum(dense_flops(a, b) for a, b in itertools.pairwise(back))
    samples = iw_samples if objective == "iwae" else 1
    total = 3 * (encoder + samples * decoder)
    if objective == "mmd":
        total += 10 * batch_size * latent_dim
    return total


def rnn_flops(input_size: int, hidden_dim: int, rnn: str) -> int:
    """Forward FLOP of one RNN layer and direction per token: 2 * gates * hidden * (input + hidden),
    gates 3 (GRU) or 4 (LSTM)."""
    if rnn not in RNN_GATES:
        raise ValueError(f"rnn must be one of {sorted(RNN_GATES)}; got {rnn!r}")
    return 2 * RNN_GATES[rnn] * hidden_dim * (input_size + hidden_dim)


def transformer_flops(width: int, ff: int, layers: int, steps: int, embed_dim: int | None = None) -> int:
    """Forward FLOP per position of the Transformer decoder (``*/transformer.py``) over ``steps`` padded
    positions: per block the fused q/k/v ``2 d 3d``, the attention scores and the weighted sum ``2 * 2 d T``
    (the whole T x T square, as the teacher-forced pass computes it, the causal mask after), the output
    projection ``2 d^2`` and the feed-forward ``2 * 2 d ff``; the input projection when the embedding is
    narrower or wider. Ignored: the memory sublayer (per sentence), LayerNorms, softmax, dropout.

    Texar's configuration (d 256, ff 1,024, 3 blocks) at T = 40: 3 x (393,216 + 40,960 + 131,072 +
    1,048,576) = 4,841,472 forward FLOP per position."""
    d = width
    block = dense_flops(d, 3 * d) + 2 * 2 * d * steps + dense_flops(d, d) + dense_flops(d, ff) + dense_flops(ff, d)
    return layers * block + (dense_flops(embed_dim, d) if embed_dim not in (None, d) else 0)


def flops_text_token(embed_dim: int, hidden_dim: int, vocab_size: int, *, rnn: str = "gru", latent_dim: int = 0,
                     num_layers: int = 1, bidirectional: bool = False, z_every_step: bool = False,
                     tie_embeddings: bool = False, transformer: tuple[int, int, int] | None = None,
                     transformer_encoder: tuple[int, int, int] | None = None) -> int:
    """Training FLOP per target token (forward + backward, 3x forward) of the sentence VAE.

    Per target token (words + <eos>; the encoder reads as many tokens as the decoder predicts):
    encoder RNN (layer 1 input ``embed_dim``, later layers ``hidden_dim`` times the directions, both
    directions if ``bidirectional``), decoder RNN (layer 1 input ``embed_dim``, plus ``latent_dim``
    with ``z_every_step``), vocabulary projection ``2 * hidden * vocab`` (tied: ``2 * embed * vocab``,
    plus ``2 * hidden * embed`` for the projection when the sizes differ). Ignored: the embedding
    look-ups, elementwise work, softmax, and the per-sentence latent layers (about 74 kFLOP per
    sentence at the sizes below, 0.4 % of one token).

    GRU, embed 300, hidden 256, vocab 10,002, untied: encoder 854,016 + decoder 854,016 + vocabulary
    5,121,024 = 6,829,056 forward; x3 = 20,487,168 FLOP (20.5 M).

    ``transformer`` = (feed-forward width, blocks, padded steps): the decoder is a Transformer of width
    ``hidden_dim`` (``transformer_flops``) instead of an RNN; ``transformer_encoder``, the same for the
    encoder (its attention also over the whole square). The figures count work per target token as if
    every padded position were a target (the padding is a few per cent).
    """
    directions = 2 if bidirectional else 1
    encoder = decoder = 0
    for layer in range(num_layers):
        enc_in = embed_dim if layer == 0 else directions * hidden_dim
        encoder += directions * rnn_flops(enc_in, hidden_dim, rnn)
        dec_in = embed_dim + (latent_dim if z_every_step else 0) if layer == 0 else hidden_dim
        decoder += rnn_flops(dec_in, hidden_dim, rnn)
    if transformer is not None:
        decoder = transformer_flops(hidden_dim, *transformer, embed_dim=embed_dim)
    if transformer_encoder is not None:
        encoder = transformer_flops(hidden_dim, *transformer_encoder, embed_dim=embed_dim)
    if not tie_embeddings:
        output = dense_flops(hidden_dim, vocab_size)
    else:
        output = dense_flops(embed_dim, vocab_size) + (dense_flops(hidden_dim, embed_dim) if hidden_dim != embed_dim else 0)
    return 3 * (encoder + decoder + output)


def fraction(units_per_s: float, flops_per_unit: float, peak: dict) -> float:
    """Achieved FLOP/s over the backend's 2048 matmul FLOP/s (``peak``: ``measure``'s result)."""
    return units_per_s * flops_per_unit / (peak["gflops"][LIMIT_SHAPE] * 1e9)


# ---------------------------------------------------------------------------------------------------
# Measurement


def machine() -> str:
    """Platform, CPU model and the CPUs this process may run on."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    cpus = sorted(os.sched_getaffinity(0))
    return f"{platform.platform()}, {model}, {os.cpu_count()} CPUs, affinity {cpus}"


def load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def threads_arg(text: str) -> int:
    """argparse type of ``--threads``: 1 to the number of CPUs in this process's affinity."""
    cpus = len(os.sched_getaffinity(0))
    if not text.isdigit() or not 1 <= int(text) <= cpus:
        raise argparse.ArgumentTypeError(f"must be between 1 and the {cpus} CPUs of this process's affinity; got {text}")
    return int(text)


def pinned(threads: int | None) -> tuple[dict, list[int]]:
    """The environment and CPU list of a child limited to ``threads`` CPUs of this process's affinity
    (None: all of them, the libraries' own defaults)."""
    cpus = sorted(os.sched_getaffinity(0))
    env = dict(os.environ)
    if threads is None:
        return env, cpus
    if not 1 <= threads <= len(cpus):
        raise ValueError(f"threads must be between 1 and the {len(cpus)} CPUs of this process's affinity; got {threads}")
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)  # torch's intra-op pool
    return env, cpus[:threads]  # XLA sizes its pool by the affinity


def run_child(cmd: list[str], threads: int | None, cwd: Path = ROOT) -> dict:
    """Run ``cmd`` pinned to ``threads`` CPUs (``pinned``); its last stdout line, parsed as JSON."""
    env, cpus = pinned(threads)
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=cwd, env=env,
                         preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def best_rate(fn, work: float, repeats: int) -> float:
    """Best ``work`` per second of ``fn`` (one call: ``fn(1)``; ``fn(k)`` runs it k times and waits),
    over ``repeats`` timed repeats of about ``REPEAT_S`` each, after a warm-up."""
    fn(1)
    t0 = time.perf_counter()
    fn(1)
    k = max(1, min(10_000, round(REPEAT_S / max(time.perf_counter() - t0, 1e-7))))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(k)
        best = min(best, (time.perf_counter() - t0) / k)
    return work / best


def measure_here(backend: str, repeats: int, device: str = "cpu") -> dict:
    """This process's matmul GFLOP/s per shape (``SHAPES``) and exp rate, on JAX's default device or
    torch's ``device``."""
    import numpy as np

    rng = np.random.default_rng(0)
    arrays = {(m, k, n): (rng.standard_normal((m, k), np.float32), rng.standard_normal((k, n), np.float32))
              for m, k, n in SHAPES}
    x_exp = rng.standard_normal(EXP_SIZE, np.float32)
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        matmul, exp = jax.jit(jnp.matmul), jax.jit(jnp.exp)

        def runner(f, *xs):
            xs = [jnp.asarray(x) for x in xs]

            def go(k):  # dispatches ahead, at most 8 results in flight
                outs = []
                for _ in range(k):
                    outs.append(f(*xs))
                    if len(outs) > 8:
                        outs.pop(0).block_until_ready()
                jax.block_until_ready(outs)
            return go

        mm_runners = {s: runner(matmul, a, b) for s, (a, b) in arrays.items()}
        exp_runner = runner(exp, x_exp)
        where, threads = str(jax.devices()[0].platform), len(os.sched_getaffinity(0))
    elif backend == "torch":
        import torch

        sys.path.insert(0, str(ROOT))
        from torchvae.device import resolve

        dev = resolve(device)
        torch.set_grad_enabled(False)
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

        def runner(f, *xs):
            xs = [torch.as_tensor(x, device=dev) for x in xs]
            out = torch.empty_like(xs[0]) if f is torch.exp else torch.empty(xs[0].shape[0], xs[1].shape[1], device=dev)

            def go(k):
                for _ in range(k):
                    f(*xs, out=out)
                sync()
            return go

        mm_runners = {s: runner(torch.mm, a, b) for s, (a, b) in arrays.items()}
        exp_runner = runner(torch.exp, x_exp)
        where, threads = str(dev), torch.get_num_threads()
    else:
        raise ValueError(f"backend must be jax or torch; got {backend!r}")
    gflops = {"x".join(map(str, s)): best_rate(fn, 2 * s[0] * s[1] * s[2], repeats) / 1e9 for s, fn in mm_runners.items()}
    return {"backend": backend, "device": where, "threads": threads, "cpus": sorted(os.sched_getaffinity(0)),
            "gflops": gflops, "gexp_per_s": best_rate(exp_runner, EXP_SIZE, repeats) / 1e9}


def measure(backend: str, threads: int | None = None, repeats: int = 5, device: str = "cpu") -> dict:
    """``measure_here`` in a subprocess pinned to ``threads`` CPUs (None: all in the affinity)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", backend, "--repeats", str(repeats), "--device", device]
    return run_child(cmd, threads)


def describe(peak: dict) -> str:
    """One line for the other benchmarks' headers: the limit and the exp rate of one backend."""
    return (f"{peak['backend']} on {peak['device']}, {peak['threads']} threads: 2048 matmul "
            f"{peak['gflops'][LIMIT_SHAPE]:.0f} GFLOP/s, exp {peak['gexp_per_s']:.2f} G/s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=threads_arg, default=None, help="CPUs per backend (default: all in the affinity)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per op; the best counts")
    p.add_argument("--device", default="cpu", help="torch's device: cpu, cuda, auto (JAX: its default device)")
    p.add_argument("--backends", default="torch,jax")
    p.add_argument("--one", choices=("jax", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.repeats < 1:
        p.error(f"--repeats must be at least 1; got {args.repeats}")
    if args.one:
        print(json.dumps(measure_here(args.one, args.repeats, args.device)))
        return
    print(f"machine: {machine()}")
    print(f"load average before: {load()} (1/5/15 min)")
    peaks = [measure(b, args.threads, args.repeats, args.device) for b in args.backends.split(",")]
    print(f"load average after: {load()}")
    shapes = " | ".join(f"[{m},{k}]x[{k},{n}] GFLOP/s" for m, k, n in SHAPES)
    print(f"\n| backend | device | threads | CPUs | {shapes} | exp G/s |")
    print("|---|---|---:|---|" + "---:|" * (len(SHAPES) + 1))
    for r in peaks:
        print(f"| {r['backend']} | {r['device']} | {r['threads']} | {','.join(map(str, r['cpus']))} | "
              + " | ".join(f"{g:.1f}" for g in r["gflops"].values()) + f" | {r['gexp_per_s']:.2f} |")
    workloads = [("image MLP 784-512-512-20, ELBO", flops_image_mlp((512, 512), 20), "image"),
                 ("image MLP 784-400-20, ELBO", flops_image_mlp((400,), 20), "image"),
                 ("sentence VAE GRU 300/256, vocab 10002, untied", flops_text_token(300, 256, 10_002), "token"),
                 ("sentence VAE LSTM 256/256, vocab 10002, tied", flops_text_token(256, 256, 10_002, rnn="lstm",
                                                                                   tie_embeddings=True), "token")]
    names = " | ".join(f"{r['backend']} limit units/s" for r in peaks)
    print(f"\n| workload | MFLOP per unit | {names} |")
    print("|---|---:|" + "---:|" * len(peaks))
    for name, flops, unit in workloads:
        limits = " | ".join(f"{r['gflops'][LIMIT_SHAPE] * 1e9 / flops:,.0f}" for r in peaks)
        print(f"| {name} (per {unit}) | {flops / 1e6:.2f} | {limits} |")


if __name__ == "__main__":
    main()

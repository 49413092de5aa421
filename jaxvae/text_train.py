"""Training engine for the sentence VAE in JAX; the twin of ``torchvae/text_train.py``.

The step is one jitted pure function ``(params, opt_state, stats, rest, key, tokens, lengths, step,
kl_weight, lr_scale) -> (params, opt_state, stats, terms)`` over the whole sequence (the model scans). Its noise (eps, the
word-dropout mask, the MMD's prior samples and the embedding-dropout key) comes from
``fold_in(key, step)``, so a resumed run draws exactly the same. ``stats`` are the BN-VAE's running
averages (``nnx.BatchStat``; empty without it), checkpointed with the parameters. ``step`` and ``kl_weight`` are
traced, so it compiles once per padded length (a multiple of 8; about a dozen on PTB).
Checkpoints (parameters and Adam state) are written by orbax, atomically.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxvae import decoding, evaluation
from jaxvae.checkpoint import Checkpoints
from jaxvae.text_model import SentenceVAE, evaluate_text, sentence_loss
from jaxvae.train import adam_update
from vaecore import text_loop
from vaecore.config import RunConfig
from vaecore.text_data import TextBatch


def make_train_step(graphdef, tx: optax.GradientTransformation, cfg: RunConfig, dtype):
    """The pure training step, jitted once with donated params and optimiser state."""
    mc, lc, tt = cfg.text, cfg.loss, cfg.text_train
    mmd_kwargs = {"kernel": lc.kernel, "bandwidth": lc.bandwidth, "estimator": lc.estimator}

    @partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, stats, rest, key, tokens, lengths, step, kl_weight, lr_scale):
        k_eps, k_mask, k_prior, k_dropout = jax.random.split(jax.random.fold_in(key, step), 4)
        shape = (tokens.shape[0], mc.latent_dim)
        eps = jax.random.normal(k_eps, shape, dtype)
        word_mask = jax.random.bernoulli(k_mask, mc.word_dropout, (tokens.shape[0], tokens.shape[1] - 1))
        prior_z = jax.random.normal(k_prior, shape, dtype) if lc.objective == "mmd" else None

        # embedding dropout draws from the model's RNG stream: reseed it so it is a function of (seed, step) too
        model = nnx.merge(graphdef, params, stats, rest)
        nnx.reseed(model, default=k_dropout)
        rest_at_step = nnx.to_pure_dict(nnx.split(model, nnx.Param, nnx.BatchStat, ...)[3])

        def loss_fn(p):
            model = nnx.merge(graphdef, p, stats, rest_at_step)
            loss, terms = sentence_loss(model, tokens, lengths, eps, word_mask, kl_weight=kl_weight,
                                        free_bits=tt.free_bits, objective=lc.objective, alpha=lc.alpha, lam=lc.lam,
                                        prior_z=prior_z, mmd_kwargs=mmd_kwargs)
            # the BN-VAE's running averages, updated by this forward pass (empty without BN)
            new_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
            return loss, ({k: v.mean() for k, v in terms.items()}, new_stats)

        params, opt_state, (terms, new_stats) = adam_update(loss_fn, params, opt_state, tx, lr_scale)
        return params, opt_state, new_stats, terms

    return train_step


class JaxTextEngine:
    decoding = decoding
    evaluation = evaluation  # the metric kernels (mutual information) of this backend

    def __init__(self, cfg: RunConfig, workdir: Path):
        self.cfg = cfg
        tc = cfg.train
        if tc.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.dtype = jnp.dtype(tc.dtype)
        self.checkpoints = Checkpoints(Path(workdir) / "checkpoints", cfg.train.keep_checkpoints)
        self.key = jax.random.key(tc.seed)
        model = SentenceVAE(cfg.text, rngs=nnx.Rngs(tc.seed), param_dtype=self.dtype)
        model.train()
        # params: the trained weights; stats: running averages; rest: the dropout RNG stream, reseeded every step
        self.graphdef, params, stats, self.rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        self.params, self.stats = nnx.to_pure_dict(params), nnx.to_pure_dict(stats)
        self.tx = optax.adam(tc.lr, b1=tc.b1, b2=tc.b2, eps=tc.eps)
        self.opt_state = self.tx.init(self.params)
        self._step = make_train_step(self.graphdef, self.tx, cfg, self.dtype)

    def model(self) -> SentenceVAE:
        model = nnx.merge(self.graphdef, self.params, self.stats, self.rest)
        model.eval()
        return model

    def train_step(self, batch: TextBatch, step: int, kl_weight: float, lr_scale: float = 1.0) -> dict[str, float]:
        self.params, self.opt_state, self.stats, terms = self._step(
            self.params, self.opt_state, self.stats, self.rest, self.key, jnp.asarray(batch.tokens), jnp.asarray(batch.lengths),
            step, jnp.asarray(kl_weight, self.dtype), jnp.asarray(lr_scale, self.dtype))
        return {k: float(v) for k, v in terms.items()}

    def evaluate(self, batches) -> dict:
        return evaluate_text(self.model(), batches, seed=self.cfg.train.seed, keep_posteriors=True)

    # --- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict:
        state = {"params": self.params, "opt_state": self.opt_state}
        return {**state, "batch_stats": self.stats} if self.stats else state

    def save(self, step: int, meta: dict) -> None:
        self.checkpoints.save(step, self._state(), meta)

    def restore(self) -> dict | None:
        """Load the newest checkpoint that reads back whole; returns its metadata, or None if none."""
        restored = self.checkpoints.restore_latest(self._state())
        if restored is None:
            return None
        state, meta = restored
        self.params, self.opt_state = state["params"], state["opt_state"]
        self.stats = state.get("batch_stats", self.stats)
        return meta

def train_and_evaluate(cfg: RunConfig, workdir: Path, *, resume: bool = False, log=print,
                       generation: text_loop.GenerationOptions | None = None) -> dict:
    return text_loop.train_and_evaluate(cfg, workdir, JaxTextEngine, resume=resume, log=log, generation=generation)

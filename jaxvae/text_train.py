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

from jaxvae import decoding
from jaxvae.checkpoint import Checkpoints
from jaxvae.parallel import Sharder
from jaxvae.text_eval import evaluate_text
from jaxvae.text_model import SentenceVAE, sentence_loss
from jaxvae.train import adam, adam_update, new_model
from vaecore import rng
from vaecore.data.text_data import TextBatch
from vaecore.runs import rundir
from vaecore.settings.config import RunConfig
from vaecore.settings.objectives import draws_prior, noise_shape
from vaecore.settings.text_config import DECODER_REINIT_MODULES, module_side

PARTS = ("all", "encoder", "decoder")


def split_sides(tree: dict) -> dict[str, dict]:
    """A pure-dict tree keyed by top-level module -> {"encoder": ..., "decoder": ...}."""
    sides = {"encoder": {}, "decoder": {}}
    for name, value in tree.items():
        sides[module_side(name)][name] = value
    return sides


def make_train_step(graphdef, tx: optax.GradientTransformation, cfg: RunConfig, dtype, *, part: str = "all",
                    inner: bool = False, sided: bool = False):
    """The pure training step, jitted once with donated params and optimiser state.

    ``part``: which side's parameters the step updates ("all", "encoder", "decoder"); ``sided``:
    the optimiser state is one Adam state per side (aggressive training), so a one-sided step
    leaves the other side's moments and step count as they are (as torch's per-parameter Adam does).
    ``inner``: the step takes an inner-update index whose noise is its own."""
    mc, lc, tt = cfg.text, cfg.loss, cfg.text_train
    mmd_kwargs = {"kernel": lc.kernel, "bandwidth": lc.bandwidth, "estimator": lc.estimator}

    @partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, stats, rest, key, tokens, lengths, step, kl_weight, lr_scale, inner_index=0):
        key = jax.random.fold_in(key, step)
        if inner:
            key = jax.random.fold_in(jax.random.fold_in(key, rng.INNER), inner_index)
        k_eps, k_mask, k_prior, k_dropout = jax.random.split(key, 4)
        # [k, batch, latent] for k importance samples per sentence
        eps = jax.random.normal(k_eps, noise_shape(lc, tokens.shape[0], mc.latent_dim), dtype)
        word_mask = jax.random.bernoulli(k_mask, mc.word_dropout, (tokens.shape[0], tokens.shape[1] - 1))
        prior_z = jax.random.normal(k_prior, (tokens.shape[0], mc.latent_dim), dtype) if draws_prior(lc) else None

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

        if not sided:
            params, opt_state, (terms, new_stats) = adam_update(loss_fn, params, opt_state, tx, lr_scale)
            return params, opt_state, new_stats, terms
        params, opt_state, (terms, new_stats) = sided_adam_update(loss_fn, params, opt_state, tx, lr_scale, part)
        return params, opt_state, new_stats, terms

    return train_step


def sided_adam_update(loss_fn, params: dict, opt_state: dict, tx: optax.GradientTransformation, lr_scale, part: str):
    """``adam_update`` with one optimiser state per side (``{"encoder": ..., "decoder": ...}``):
    only ``part``'s sides ("all" is both) are updated; the other side's parameters and state are
    returned as they came. -> (params, opt_state, aux)."""
    (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    p_sides, g_sides, opt_state = split_sides(params), split_sides(grads), dict(opt_state)
    for side in ("encoder", "decoder"):
        if part in ("all", side):
            updates, opt_state[side] = tx.update(g_sides[side], opt_state[side], p_sides[side])
            updates = jax.tree.map(lambda u: u * lr_scale, updates)
            p_sides[side] = optax.apply_updates(p_sides[side], updates)
    return {**p_sides["encoder"], **p_sides["decoder"]}, opt_state, aux


def placeholder(leaf: jax.ShapeDtypeStruct) -> jax.Array:
    """A concrete array of an abstract leaf's shape and type: zeros, or keys of seed 0."""
    if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return jnp.broadcast_to(jax.random.key(0), leaf.shape)
    return jnp.zeros(leaf.shape, leaf.dtype)


class JaxTextEngine:
    decoding = decoding

    def __init__(self, cfg: RunConfig, workdir: Path, *, restoring: bool = False):
        """``restoring``: the weights will come from ``restore()`` (``--sample``, ``evaluate.py``): only
        their shapes are built (``nnx.eval_shape``), no initialiser runs or compiles."""
        self.cfg = cfg
        tc = cfg.train
        if tc.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.dtype = jnp.dtype(tc.dtype)
        self.checkpoints = Checkpoints(Path(workdir) / rundir.CHECKPOINTS, cfg.train.keep_checkpoints)
        self.key = jax.random.key(tc.seed)
        model = new_model(lambda: SentenceVAE(cfg.text, rngs=nnx.Rngs(tc.seed), param_dtype=self.dtype), restoring)
        model.train()
        # params: the trained weights; stats: running averages; rest: the dropout RNG stream, reseeded every step
        self.graphdef, params, stats, self.rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
        self.params, self.stats = nnx.to_pure_dict(params), nnx.to_pure_dict(stats)
        self.tx = adam(tc.lr, b1=tc.b1, b2=tc.b2, eps=tc.eps)
        # aggressive training updates one side at a time: one Adam state per side
        self.sided = cfg.text_train.aggressive
        self.shard = Sharder()  # data parallel over every device (``jaxvae.parallel``)
        self._steps = {}
        if restoring:  # shapes until restore(); the RNG stream (unused in evaluation) gets placeholder values
            self.opt_state = jax.eval_shape(self._init_opt_state)
            self.rest = jax.tree.map(placeholder, self.rest)
            return
        self.opt_state = self._init_opt_state()
        self._replicate()

    def _replicate(self) -> None:
        self.params, self.opt_state, self.stats, self.rest, self.key = self.shard.replicate(
            (self.params, self.opt_state, self.stats, self.rest, self.key))

    def _init_opt_state(self):
        if self.sided:
            return {side: self.tx.init(tree) for side, tree in split_sides(self.params).items()}
        return self.tx.init(self.params)

    def _step_fn(self, part: str, inner: bool):
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}; got {part!r}")
        if part != "all" and not self.sided:
            raise ValueError("one-sided updates need the per-side optimiser state of aggressive training")
        if (part, inner) not in self._steps:
            self._steps[part, inner] = make_train_step(self.graphdef, self.tx, self.cfg, self.dtype, part=part,
                                                       inner=inner, sided=self.sided)
        return self._steps[part, inner]

    def _merged(self, params, stats, rest) -> SentenceVAE:
        model = nnx.merge(self.graphdef, params, stats, rest)
        model.eval()
        return model

    def model(self) -> SentenceVAE:
        """The model in evaluation mode, on this process's devices (for decoding)."""
        return self._merged(*self.shard.local((self.params, self.stats, self.rest)))

    def train_step(self, batch: TextBatch, step: int, kl_weight: float, lr_scale: float, *,
                   part: str = "all", inner: int | None = None) -> dict[str, float]:
        """One Adam step of ``part`` ("all", "encoder", "decoder"); see ``torchvae.text_train``."""
        args = (self.params, self.opt_state, self.stats, self.rest, self.key, self.shard.rows(batch.tokens),
                self.shard.rows(batch.lengths), step, jnp.asarray(kl_weight, self.dtype), jnp.asarray(lr_scale, self.dtype))
        fn = self._step_fn(part, inner is not None)
        out = fn(*args) if inner is None else fn(*args, inner)
        self.params, self.opt_state, self.stats, terms = out
        return {k: float(v) for k, v in terms.items()}

    def reset_decoder(self) -> None:
        """Re-initialise the decoder (``DECODER_REINIT_MODULES``) from a seed of its own and start a
        new optimiser state: the second phase of pretraining (Li et al. 2019)."""
        seed = rng.derived_seed(self.cfg.train.seed, rng.DECODER_REINIT) % 2**31
        fresh = nnx.to_pure_dict(nnx.state(SentenceVAE(self.cfg.text, rngs=nnx.Rngs(seed), param_dtype=self.dtype),
                                           nnx.Param))
        self.params = {**self.params, **{k: v for k, v in fresh.items() if k in DECODER_REINIT_MODULES}}
        self.opt_state = self._init_opt_state()
        self._replicate()

    def evaluate(self, batches) -> dict:
        return evaluate_text(self._merged(self.params, self.stats, self.rest), batches, seed=self.cfg.train.seed,
                             keep_posteriors=True, shard=self.shard)

    # --- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict:
        state = {"params": self.params, "opt_state": self.opt_state}
        return {**state, "batch_stats": self.stats} if self.stats else state

    def save(self, step: int, meta: dict) -> None:
        self.checkpoints.save(step, self._state(), meta)

    def restore(self, step: int | None = None) -> dict | None:
        """Load the newest checkpoint that reads back whole (or ``step``'s); returns its metadata, or None if none."""
        restored = self.checkpoints.restore_latest(self._state(), step=step)
        if restored is None:
            return None
        state, meta = restored
        self.params, self.opt_state = state["params"], state["opt_state"]
        self.stats = state.get("batch_stats", self.stats)
        self._replicate()  # a checkpoint holds no layout: it resumes on any number of devices
        return meta

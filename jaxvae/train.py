"""Training engine for the image VAE in JAX; the twin of ``torchvae/train.py``.

The step is one jitted pure function ``(params, opt_state, x, step) -> (params, opt_state, terms)``
whose noise comes from ``fold_in(key, step)``, so a resumed run draws exactly the same noise.
Parameters are a plain nested dict (``nnx.to_pure_dict``) merged into the module inside the
step. Checkpoints are written by orbax (atomic: a temporary directory renamed when complete).
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxvae.checkpoint import Checkpoints
from jaxvae.losses import bernoulli_nll, gaussian_kl, reparameterize, vae_loss
from jaxvae.mmd import mmd
from jaxvae.parallel import Sharder
from vaecore import rng
from vaecore.runs import rundir
from vaecore.settings.config import LossConfig, RunConfig
from vaecore.settings.objectives import noise_shape
from vaecore.task.image_task import check_whole_model, steps_per_call, summarize


def _noise(key: jax.Array, shape: tuple[int, ...], dtype) -> tuple[jax.Array, jax.Array]:
    k_eps, k_prior = jax.random.split(key)
    return jax.random.normal(k_eps, shape, dtype), jax.random.normal(k_prior, shape, dtype)


def make_step(graphdef, tx: optax.GradientTransformation, loss_cfg: LossConfig, latent_dim: int,
              lr_scale: float = 1.0):
    """The pure training step ``(params, opt_state, stats, key, x, step) -> (params, opt_state, stats,
    terms)``, its noise from ``fold_in(key, step)``; the KL weight (``loss_cfg.kl_weight``) and
    ``lr_scale`` are constants of it."""

    def one_step(params, opt_state, stats, key, x, step):
        shape = noise_shape(loss_cfg, x.shape[0], latent_dim)  # [k, batch, latent] for k importance samples
        eps, prior_z = _noise(jax.random.fold_in(key, step), shape, x.dtype)

        def loss_fn(p):
            model = nnx.merge(graphdef, p, stats)
            loss, terms = vae_loss(model, x, eps, prior_z, loss_cfg)
            # the BN-VAE's running averages, updated by this forward pass (empty without BN)
            return loss, ({k: v.mean() for k, v in terms.items()}, nnx.to_pure_dict(nnx.state(model, nnx.BatchStat)))

        params, opt_state, (terms, stats) = adam_update(loss_fn, params, opt_state, tx,
                                                        None if lr_scale == 1.0 else lr_scale)
        return params, opt_state, stats, terms

    return one_step


def make_train_step(graphdef, tx: optax.GradientTransformation, loss_cfg: LossConfig, latent_dim: int,
                    lr_scale: float = 1.0):
    """``make_step``'s step, jitted with donated params and optimiser state."""
    return jax.jit(make_step(graphdef, tx, loss_cfg, latent_dim, lr_scale), donate_argnums=(0, 1))


def make_train_loop(graphdef, tx: optax.GradientTransformation, loss_cfg: LossConfig, latent_dim: int,
                    lr_scale: float = 1.0):
    """Several of ``make_step``'s steps in one compiled loop, with donated params and optimiser state:
    ``(params, opt_state, stats, key, xs, first, n) -> (params, opt_state, stats, terms)`` takes the
    first ``n`` batches of ``xs`` ([C, batch, 784]) as steps ``first .. first + n - 1`` (``n`` is
    traced: one compilation serves every count up to C); ``terms`` holds each step's batch means
    ([C], zero past ``n``)."""
    one_step = make_step(graphdef, tx, loss_cfg, latent_dim, lr_scale)

    @partial(jax.jit, donate_argnums=(0, 1))
    def train_loop(params, opt_state, stats, key, xs, first, n):
        shapes = jax.eval_shape(one_step, params, opt_state, stats, key, xs[0], first)[3]
        terms = jax.tree.map(lambda t: jnp.zeros((xs.shape[0], *t.shape), t.dtype), shapes)

        def body(i, carry):
            params, opt_state, stats, terms = carry
            params, opt_state, stats, t = one_step(params, opt_state, stats, key, xs[i], first + i)
            return params, opt_state, stats, jax.tree.map(lambda buf, v: buf.at[i].set(v), terms, t)

        return jax.lax.fori_loop(0, n, body, (params, opt_state, stats, terms))

    return train_loop


def adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam (Kingma and Ba) with a constant learning rate, ``eps`` added to sqrt(v_hat) outside the root
    (as ``optax.adam`` and ``torch.optim.Adam``): ``optax.adam``'s algorithm and state, with one square
    root and one division per parameter.

    ``optax.adam`` computes ``(mu / c1) / (sqrt(nu / c2) + eps)`` with ``c1 = 1 - b1^t``, ``c2 = 1 - b2^t``:
    three divisions and a root per element, which on a CPU are throughput-bound and for a small model a
    large part of the step (0.49 of the 1.15 ms of Burda et al.'s MLP at batch 20). The same quantity
    is ``mu * (sqrt(c2) / c1) / (sqrt(nu) + eps * sqrt(c2))``, every bias correction a scalar once per
    step, as in ``torch.optim.Adam``. The corrections are ``-expm1(t log b)``, exact in float32 where
    optax's ``1 - 0.999^t`` loses 13 bits to cancellation at small t (torch computes them in double).
    The state is optax's (``(ScaleByAdamState(count, mu, nu), EmptyState())``), so checkpoints written
    with ``optax.adam`` restore into it and back (``tests/test_optim.py``)."""
    reference = optax.adam(learning_rate, b1=b1, b2=b2, eps=eps)  # the state layout only

    def update_fn(grads, state, params=None):
        del params
        adam_state, empty = state
        count = optax.safe_increment(adam_state.count)
        dtype = jax.tree.leaves(grads)[0].dtype  # the bias corrections in the parameters' precision
        t = count.astype(dtype)
        # 1 - b^t as -expm1(t log b), log b taken in double precision: 1 - 0.999^t in float32 loses
        # about 13 bits to cancellation at small t (optax.adam's relative error 6.6e-6 at t = 1)
        c1 = -jnp.expm1(t * jnp.asarray(math.log(b1), dtype))
        root_c2 = jnp.sqrt(-jnp.expm1(t * jnp.asarray(math.log(b2), dtype)))

        def leaf(g, m, v):
            m = b1 * m + (1.0 - b1) * g
            v = b2 * v + (1.0 - b2) * (g * g)
            step = (-learning_rate * root_c2 / c1).astype(g.dtype)
            return step * m / (jnp.sqrt(v) + (eps * root_c2).astype(g.dtype)), m, v

        out = jax.tree.map(leaf, grads, adam_state.mu, adam_state.nu)
        tdef = jax.tree.structure(grads)
        updates, mu, nu = (jax.tree.unflatten(tdef, [o[i] for o in tdef.flatten_up_to(out)]) for i in range(3))
        return updates, (optax.ScaleByAdamState(count=count, mu=mu, nu=nu), empty)

    return optax.GradientTransformation(reference.init, update_fn)


def adam_update(loss_fn, params, opt_state, tx: optax.GradientTransformation, lr_scale=None):
    """One optimiser step on ``loss_fn(params) -> (loss, terms)``: (params, opt_state, terms).
    ``lr_scale`` multiplies the step (for Adam, the same as multiplying its learning rate)."""
    (_, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    if lr_scale is not None:
        updates = jax.tree.map(lambda u: u * lr_scale, updates)
    return optax.apply_updates(params, updates), opt_state, terms


def new_model(build, restoring: bool):
    """``build()`` (a module with its initial weights), or with ``restoring`` only its shapes
    (``nnx.eval_shape``: no initialiser runs or compiles) for weights that ``restore()`` brings."""
    return nnx.eval_shape(build) if restoring else build()


class JaxEngine:

    def __init__(self, cfg: RunConfig, workdir: Path, *, restoring: bool = False):
        """``restoring``: the weights will come from ``restore()`` (``evaluate.py``): only their shapes
        are built (``nnx.eval_shape``), no initialiser runs or compiles."""
        from jaxvae.models import VAE

        self.cfg = cfg
        tc = cfg.train
        if tc.dtype == "float64":
            jax.config.update("jax_enable_x64", True)
        self.dtype = jnp.dtype(tc.dtype)
        self.checkpoints = Checkpoints(Path(workdir) / rundir.CHECKPOINTS, tc.keep_checkpoints)
        self.key = jax.random.PRNGKey(tc.seed)
        model = new_model(lambda: VAE(cfg.model, rngs=nnx.Rngs(tc.seed)), restoring)
        # params: trained by Adam; stats: the BN-VAE's running averages (empty without it)
        self.graphdef, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
        cast = (lambda a: jax.ShapeDtypeStruct(a.shape, self.dtype)) if restoring else (lambda a: a.astype(self.dtype))
        self.params = jax.tree.map(cast, nnx.to_pure_dict(params))
        self.stats = jax.tree.map(cast, nnx.to_pure_dict(stats))
        self.tx = adam(tc.lr, b1=tc.b1, b2=tc.b2, eps=tc.eps)
        self.shard = Sharder()  # data parallel over every device (``jaxvae.parallel``)
        if restoring:  # shapes until restore()
            self.opt_state = jax.eval_shape(self.tx.init, self.params)
        else:
            self.opt_state = self.tx.init(self.params)
            self._replicate()
        self._steps = {}  # compiled steps by (kl_weight, lr_scale): the image task keeps both constant
        self._loop = cfg.model.kind == "mlp"  # several steps per compiled call (``train_steps``)
        self._eval = jax.jit(self._eval_fn)
        self._decode = jax.jit(lambda p, s, z: jax.nn.sigmoid(self._merge(p, s).decode(z)))

    def _replicate(self) -> None:
        self.params, self.opt_state, self.stats, self.key = self.shard.replicate(
            (self.params, self.opt_state, self.stats, self.key))

    def _merge(self, params, stats):
        """The model in evaluation mode (BN-VAE: the running averages)."""
        model = nnx.merge(self.graphdef, params, stats)
        model.eval()
        return model

    def model(self):
        return self._merge(*self.shard.local((self.params, self.stats)))

    def train_step(self, batch: np.ndarray, step: int, kl_weight: float, lr_scale: float, *, part: str = "all",
                   inner: int | None = None) -> dict[str, float]:
        """One Adam step on images ``batch`` (the ``vaecore.runner.driver.Engine`` protocol): ``train_steps``
        with one batch."""
        check_whole_model(part, inner)
        return self.train_steps(np.asarray(batch)[None], step, kl_weight, lr_scale)[0]

    def train_steps(self, batches: np.ndarray, first: int, kl_weight: float, lr_scale: float) -> list[dict[str, float]]:
        """Adam steps ``first, first + 1, ...`` on the images ``batches`` ([n, batch, 784]): the terms
        of every step, as floats. The KL weight and learning-rate scale are compiled in (one
        compilation per distinct pair, and the image task keeps both constant for an epoch).

        The MLP runs the steps in one compiled loop (``make_train_loop``), its batches padded to
        ``steps_per_call(batch size)`` so that one compilation serves every call: at batch 20 this
        is a quarter faster than a call per step. The convolutional model runs step by step: inside
        an XLA loop its convolutions ran 4.7 times slower on the CPU (BENCHMARKS.md, 2026-12-02)."""
        key = (float(kl_weight), float(lr_scale))
        if key not in self._steps:
            loss_cfg = dataclasses.replace(self.cfg.loss, kl_weight=key[0])
            make = make_train_loop if self._loop else make_train_step
            self._steps[key] = make(self.graphdef, self.tx, loss_cfg, self.cfg.model.latent_dim, key[1])
        step_fn = self._steps[key]
        if not self._loop:
            out = []
            for i, x in enumerate(batches):
                self.params, self.opt_state, self.stats, terms = step_fn(
                    self.params, self.opt_state, self.stats, self.key, self.shard.rows(x, self.dtype), first + i)
                out.append({k: float(v) for k, v in terms.items()})
            return out
        n, size = len(batches), steps_per_call(self.cfg.train.batch_size)
        if n > size:
            raise ValueError(f"train_steps takes at most {size} batches of {self.cfg.train.batch_size}; got {n}")
        xs = np.zeros((size, *np.shape(batches)[1:]), self.dtype)
        xs[:n] = batches
        self.params, self.opt_state, self.stats, terms = step_fn(
            self.params, self.opt_state, self.stats, self.key, self.shard.rows(xs, self.dtype, axis=1),
            np.int32(first), np.int32(n))
        terms = {k: np.asarray(v) for k, v in terms.items()}
        return [{k: float(v[i]) for k, v in terms.items()} for i in range(n)]

    def _eval_fn(self, params, stats, x, eps, prior_z):
        model = self._merge(params, stats)
        mean, logvar = model.encode(x)
        z = reparameterize(mean, logvar, eps)
        recon, kl = bernoulli_nll(model.decode(z), x), gaussian_kl(mean, logvar)
        lc = self.cfg.loss
        mmd_value = (mmd(z, prior_z, kernel=lc.kernel, bandwidth=lc.bandwidth, estimator=lc.estimator)
                     if x.shape[0] >= 2 else jnp.zeros((), x.dtype))
        return {"recon": recon.mean(), "kl": kl.mean(), "neg_elbo": (recon + kl).mean(), "mmd": mmd_value,
                "mean": mean, "logvar": logvar}

    def evaluate(self, batches) -> dict:
        """Per-image means of recon, kl, neg_elbo and the batch MMDs over ``batches`` (one z per
        image), the number of images, and the posterior ``mean``, ``logvar`` (numpy [N, D])."""
        outs = []
        for index, x in enumerate(batches):
            shape = (len(x), self.cfg.model.latent_dim)
            eps, prior_z = (self.shard.rows(rng.eval_noise(self.cfg.train.seed, index, *shape, s), self.dtype)
                            for s in (rng.EPS, rng.PRIOR))
            out = self._eval(self.params, self.stats, self.shard.rows(x, self.dtype), eps, prior_z)
            outs.append((len(x), {k: self.shard.fetch(v) if k in ("mean", "logvar") else float(v)
                                  for k, v in out.items()}))
        return summarize(outs)

    def decode(self, z: np.ndarray) -> np.ndarray:
        params, stats = self.shard.local((self.params, self.stats))
        return np.asarray(self._decode(params, stats, jnp.asarray(z, self.dtype)), np.float32)

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        mean, _ = self.model().encode(jnp.asarray(x, self.dtype))
        return self.decode(np.asarray(mean))

    # --- checkpoints -------------------------------------------------------------------------
    def _state(self) -> dict:
        state = {"params": self.params, "opt_state": self.opt_state, "key": self.key}
        return {**state, "batch_stats": self.stats} if self.stats else state

    def save(self, step: int, meta: dict) -> None:
        self.checkpoints.save(step, self._state(), meta)

    def restore(self, step: int | None = None) -> dict | None:
        """Load the newest checkpoint that reads back whole (or ``step``'s); returns its metadata, or None if none."""
        restored = self.checkpoints.restore_latest(self._state(), step=step)
        if restored is None:
            return None
        state, meta = restored
        self.params, self.opt_state, self.key = state["params"], state["opt_state"], state["key"]
        self.stats = state.get("batch_stats", self.stats)
        self._replicate()  # a checkpoint holds no layout: it resumes on any number of devices
        return meta

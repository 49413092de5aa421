"""Training engine for the image VAE in PyTorch; the twin of ``jaxvae/train.py``.

The loop itself is ``vaecore.runner.driver`` with ``vaecore.task.image_task``; this file holds the numeric parts: the step, evaluation,
pictures and checkpoints (``torch.save`` of state dicts through a temporary file and ``os.replace``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from torchvae import device, parallel
from torchvae.checkpoint import Checkpoints
from torchvae.losses import bernoulli_nll, gaussian_kl, reparameterize, vae_loss
from torchvae.mmd import mmd
from vaecore import rng
from vaecore.runs import rundir
from vaecore.settings.config import RunConfig
from vaecore.settings.objectives import draws_prior, noise_shape
from vaecore.task.image_task import check_whole_model, summarize


def adam(params, tc) -> torch.optim.Adam:
    """``torch.optim.Adam`` with the run's learning rate, betas and epsilon, in its fused form: one
    kernel per parameter tensor instead of six elementwise passes. On a CPU the default (single-tensor)
    form took 1.3 of the 2.9 ms of Burda et al.'s MLP step at batch 20; fused, the step is 2.0 ms
    (BENCHMARKS.md, 2026-12-03). The same algorithm, to float32 rounding (bit for bit in
    ``tests/test_optim.py``). A checkpoint keeps the form it was written with (``load_state_dict``
    restores the ``fused`` flag), so a run begun in the single-tensor form resumes exactly in it."""
    return torch.optim.Adam(params, lr=tc.lr, betas=(tc.b1, tc.b2), eps=tc.eps, fused=True)


class TorchEngine:

    def __init__(self, cfg: RunConfig, workdir: Path, *, restoring: bool = False):
        """``restoring`` (the weights will come from ``restore()``) is the JAX engine's shortcut past its
        compiled initialisers; torch's initialisers take milliseconds, so here it changes nothing."""
        from torchvae.models import VAE

        self.cfg = cfg
        self.dtype = getattr(torch, cfg.train.dtype)
        self.checkpoints = Checkpoints(Path(workdir) / rundir.CHECKPOINTS, cfg.train.keep_checkpoints)
        self.device = device.resolve(parallel.device_name(cfg.train.device))
        torch.manual_seed(cfg.train.seed)
        self._model = VAE(cfg.model).to(device=self.device, dtype=self.dtype)
        tc = cfg.train
        self.opt = adam(self._model.parameters(), tc)
        self._train_model = parallel.ddp(self._model)  # DistributedDataParallel under torchrun

    def _normal(self, shape: tuple[int, ...], *parts: int, rows: bool = True) -> torch.Tensor:
        """Drawn on the CPU from a seeded generator for the global batch (rows on axis ``-2``), then
        this process's rows moved (all of them with ``rows=False``): the same numbers on every device
        and for every number of processes."""
        g = torch.Generator().manual_seed(rng.derived_seed(self.cfg.train.seed, *parts))
        draw = torch.randn(shape, generator=g, dtype=self.dtype)
        if rows and parallel.active():
            draw = parallel.my_rows(draw.movedim(-2, 0)).movedim(0, -2)
        return draw.to(self.device)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=self.dtype, device=self.device)

    def model(self):
        return self._model.eval()

    def train_step(self, batch: np.ndarray, step: int, kl_weight: float, lr_scale: float, *, part: str = "all",
                   inner: int | None = None) -> dict[str, float]:
        """One Adam step on images ``batch`` (the ``vaecore.runner.driver.Engine`` protocol)."""
        check_whole_model(part, inner)
        x = parallel.my_rows(batch)  # this process's shard of the global batch
        shape = noise_shape(self.cfg.loss, len(batch), self.cfg.model.latent_dim)  # [k, ...]: k importance samples
        eps = self._normal(shape, step, rng.EPS)
        # the MMD compares the global batch's z with all the prior draws
        prior_z = self._normal(shape, step, rng.PRIOR, rows=False) if draws_prior(self.cfg.loss) else None
        self._model.train()
        self.opt.zero_grad(set_to_none=True)
        loss_cfg = self.cfg.loss if kl_weight == self.cfg.loss.kl_weight else dataclasses.replace(
            self.cfg.loss, kl_weight=kl_weight)
        loss, terms = vae_loss(self._train_model, self._tensor(x), eps, prior_z, loss_cfg)
        loss.backward()
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.train.lr * lr_scale
        self.opt.step()
        return parallel.mean_terms({k: float(v.detach().mean()) for k, v in terms.items()})

    def train_steps(self, batches: np.ndarray, first: int, kl_weight: float, lr_scale: float) -> list[dict[str, float]]:
        """``train_step`` on each of ``batches`` ([n, batch, 784]) as steps ``first, first + 1, ...``
        (torch runs step by step; the JAX engine compiles the loop)."""
        return [self.train_step(x, first + i, kl_weight, lr_scale) for i, x in enumerate(batches)]

    def evaluate(self, batches) -> dict:
        """Per-image means of recon, kl, neg_elbo and the batch MMDs over ``batches`` (one z per
        image), the number of images, and the posterior ``mean``, ``logvar`` (numpy [N, D])."""
        return summarize([(len(x), self._eval_batch(x, index)) for index, x in enumerate(batches)])

    @torch.no_grad()
    def _eval_batch(self, x: np.ndarray, index: int) -> dict:
        if parallel.active():
            return self._eval_batch_sharded(x, index)
        return self._eval_batch_whole(x, index)

    @torch.no_grad()
    def _eval_batch_sharded(self, x: np.ndarray, index: int) -> dict:
        """``_eval_batch`` in a process group: this process's rows (the global batch's noise rows),
        the per-image figures and z of every process gathered, the MMD of the global batch's z."""
        self._model.eval()
        seed, shape = self.cfg.train.seed, (len(x), self.cfg.model.latent_dim)
        xt = self._tensor(parallel.my_rows(x))
        mean, logvar = self._model.encode(xt)
        z = reparameterize(mean, logvar, self._tensor(parallel.my_rows(rng.eval_noise(seed, index, *shape))))
        recon, kl = bernoulli_nll(self._model.decode(z), xt), gaussian_kl(mean, logvar)
        ranks = parallel.gather_objects([a.detach().cpu().numpy() for a in (recon, kl, mean, logvar, z)])
        recon, kl, mean, logvar, z = (parallel.concat_rows([r[c] for r in ranks]) for c in range(5))
        lc = self.cfg.loss
        prior_z = torch.as_tensor(rng.eval_noise(seed, index, *shape, rng.PRIOR), dtype=self.dtype)
        mmd_value = mmd(torch.as_tensor(z), prior_z, kernel=lc.kernel, bandwidth=lc.bandwidth,
                        estimator=lc.estimator) if len(x) >= 2 else 0.0
        return {"recon": float(recon.mean()), "kl": float(kl.mean()), "neg_elbo": float((recon + kl).mean()),
                "mmd": float(mmd_value), "mean": mean, "logvar": logvar}

    @torch.no_grad()
    def _eval_batch_whole(self, x: np.ndarray, index: int) -> dict:
        """Loss terms with one posterior sample per image, the MMD against as many prior samples
        (batch means, floats), and the posterior ``mean``, ``logvar`` (numpy [B, D])."""
        self._model.eval()
        xt = self._tensor(x)
        shape = (len(x), self.cfg.model.latent_dim)
        mean, logvar = self._model.encode(xt)
        seed = self.cfg.train.seed
        z = reparameterize(mean, logvar, self._tensor(rng.eval_noise(seed, index, *shape)))
        recon, kl = bernoulli_nll(self._model.decode(z), xt), gaussian_kl(mean, logvar)
        lc = self.cfg.loss
        mmd_value = mmd(z, self._tensor(rng.eval_noise(seed, index, *shape, rng.PRIOR)), kernel=lc.kernel, bandwidth=lc.bandwidth,
                        estimator=lc.estimator) if len(x) >= 2 else torch.zeros(())
        return {"recon": float(recon.mean()), "kl": float(kl.mean()), "neg_elbo": float((recon + kl).mean()),
                "mmd": float(mmd_value), "mean": mean.detach().cpu().numpy(), "logvar": logvar.detach().cpu().numpy()}

    @torch.no_grad()
    def decode(self, z: np.ndarray) -> np.ndarray:
        self._model.eval()
        return torch.sigmoid(self._model.decode(self._tensor(z))).float().cpu().numpy()

    @torch.no_grad()
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoded posterior means: sigmoid(decode(E[z|x]))."""
        self._model.eval()
        mean, _ = self._model.encode(self._tensor(x))
        return torch.sigmoid(self._model.decode(mean)).float().cpu().numpy()

    # --- checkpoints -------------------------------------------------------------------------
    def save(self, step: int, meta: dict) -> None:
        if parallel.world()[1] == 0:  # every process holds the same state: the main one writes it
            self.checkpoints.save(step, {"model": self._model.state_dict(), "optimizer": self.opt.state_dict(),
                                         "torch_rng": torch.get_rng_state(), "meta": meta})
        parallel.barrier()

    def restore(self, step: int | None = None) -> dict | None:
        """Load the newest checkpoint that reads back whole (or ``step``'s); returns its metadata, or None if none."""
        state = self.checkpoints.restore_latest(self._model, step=step)  # a checkpoint must fit the model
        if state is None:
            return None
        self._model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        return state["meta"]

"""Training engine for the image VAE in PyTorch; the twin of ``jaxvae/train.py``.

The loop itself is ``vaecore.loop``; this file holds the numeric parts: the step, evaluation,
pictures and checkpoints (``torch.save`` of state dicts through a temporary file and ``os.replace``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from torchvae import device
from torchvae.checkpoint import Checkpoints
from torchvae.losses import bernoulli_nll, gaussian_kl, reparameterize, vae_loss
from torchvae.mmd import mmd
from vaecore import loop, rng
from vaecore.config import RunConfig


class TorchEngine:

    def __init__(self, cfg: RunConfig, workdir: Path):
        from torchvae.models import VAE

        self.cfg = cfg
        self.dtype = getattr(torch, cfg.train.dtype)
        self.checkpoints = Checkpoints(Path(workdir) / "checkpoints", cfg.train.keep_checkpoints)
        self.device = device.resolve(cfg.train.device)
        torch.manual_seed(cfg.train.seed)
        self.model = VAE(cfg.model).to(device=self.device, dtype=self.dtype)
        tc = cfg.train
        self.opt = torch.optim.Adam(self.model.parameters(), lr=tc.lr, betas=(tc.b1, tc.b2), eps=tc.eps)

    def _normal(self, shape: tuple[int, ...], *parts: int) -> torch.Tensor:
        """Drawn on the CPU from a seeded generator, then moved: the same numbers on every device."""
        g = torch.Generator().manual_seed(rng.derived_seed(self.cfg.train.seed, *parts))
        return torch.randn(shape, generator=g, dtype=self.dtype).to(self.device)

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=self.dtype, device=self.device)

    def train_step(self, x: np.ndarray, step: int) -> dict[str, float]:
        shape = (len(x), self.cfg.model.latent_dim)
        eps = self._normal(shape, step, rng.EPS)
        prior_z = self._normal(shape, step, rng.PRIOR) if self.cfg.loss.objective == "mmd" else None
        self.model.train()
        self.opt.zero_grad(set_to_none=True)
        loss, terms = vae_loss(self.model, self._tensor(x), eps, prior_z, self.cfg.loss)
        loss.backward()
        self.opt.step()
        return {k: float(v.detach().mean()) for k, v in terms.items()}

    @torch.no_grad()
    def eval_batch(self, x: np.ndarray, index: int) -> dict:
        """Loss terms with one posterior sample per image, the MMD against as many prior samples
        (batch means, floats), and the posterior ``mean``, ``logvar`` (numpy [B, D])."""
        self.model.eval()
        xt = self._tensor(x)
        shape = (len(x), self.cfg.model.latent_dim)
        mean, logvar = self.model.encode(xt)
        z = reparameterize(mean, logvar, self._normal(shape, rng.EVAL, index, rng.EPS))
        recon, kl = bernoulli_nll(self.model.decode(z), xt), gaussian_kl(mean, logvar)
        lc = self.cfg.loss
        mmd_value = mmd(z, self._normal(shape, rng.EVAL, index, rng.PRIOR), kernel=lc.kernel, bandwidth=lc.bandwidth,
                        estimator=lc.estimator) if len(x) >= 2 else torch.zeros(())
        return {"recon": float(recon.mean()), "kl": float(kl.mean()), "neg_elbo": float((recon + kl).mean()),
                "mmd": float(mmd_value), "mean": mean.detach().cpu().numpy(), "logvar": logvar.detach().cpu().numpy()}

    @torch.no_grad()
    def decode(self, z: np.ndarray) -> np.ndarray:
        self.model.eval()
        return torch.sigmoid(self.model.decode(self._tensor(z))).float().cpu().numpy()

    @torch.no_grad()
    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        """Decoded posterior means: sigmoid(decode(E[z|x]))."""
        self.model.eval()
        mean, _ = self.model.encode(self._tensor(x))
        return torch.sigmoid(self.model.decode(mean)).float().cpu().numpy()

    # --- checkpoints -------------------------------------------------------------------------
    def save(self, step: int, meta: dict) -> None:
        self.checkpoints.save(step, {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                                     "torch_rng": torch.get_rng_state(), "meta": meta})

    def restore(self) -> dict | None:
        """Load the newest checkpoint that reads back whole; returns its metadata, or None if none."""
        state = self.checkpoints.restore_latest()
        if state is None:
            return None
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        return state["meta"]

def train_and_evaluate(cfg: RunConfig, workdir: Path, *, resume: bool = False, log=print) -> dict:
    return loop.train_and_evaluate(cfg, workdir, TorchEngine, resume=resume, log=log)


"""Training engine for the sentence VAE in PyTorch; the twin of ``jaxvae/text_train.py``.

The loop itself is ``vaecore.runner.driver`` with ``vaecore.task.text_task``; this file holds the numeric parts. Every draw of a step
(eps, the word-dropout mask, the MMD's prior samples, the embedding and output dropout masks) comes
from generators seeded from ``(seed, step)`` and is drawn for the global batch, so a resumed run
draws the same and a data-parallel process (``torchvae.parallel``) takes its rows of the same draws.
Checkpoints (model and Adam state) are ``torch.save`` through a temporary file and ``os.replace``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from torchvae import decoding, device, parallel
from torchvae.checkpoint import Checkpoints
from torchvae.text_eval import evaluate_text
from torchvae.text_model import SentenceVAE, sentence_loss
from torchvae.train import adam
from vaecore import rng
from vaecore.data.text_data import TextBatch
from vaecore.runs import rundir
from vaecore.settings.config import RunConfig
from vaecore.settings.objectives import draws_prior, importance_samples, noise_shape
from vaecore.settings.text_config import DECODER_REINIT_MODULES, module_side

PARTS = ("all", "encoder", "decoder")


class TorchTextEngine:
    decoding = decoding

    def __init__(self, cfg: RunConfig, workdir: Path, *, restoring: bool = False):
        """``restoring`` (the weights will come from ``restore()``) is the JAX engine's shortcut past its
        compiled initialisers; torch's initialisers take milliseconds, so here it changes nothing."""
        self.cfg = cfg
        tc = cfg.train
        self.dtype = getattr(torch, tc.dtype)
        self.checkpoints = Checkpoints(Path(workdir) / rundir.CHECKPOINTS, cfg.train.keep_checkpoints)
        self.device = device.resolve(parallel.device_name(tc.device))
        torch.manual_seed(tc.seed)
        self._model = SentenceVAE(cfg.text).to(device=self.device, dtype=self.dtype)
        self.opt = adam(self._model.parameters(), tc)
        # the language model leaves the encoder unused
        self._train_model = parallel.ddp(self._model, find_unused=not cfg.text.use_latent)

    def _generator(self, *parts: int) -> torch.Generator:
        return torch.Generator().manual_seed(rng.derived_seed(self.cfg.train.seed, *parts))

    def _noise_id(self, step: int, inner: int | None) -> tuple[int, ...]:
        """The step's noise stream: (step,), or (step, INNER, inner) for an inner encoder update."""
        return (step,) if inner is None else (step, rng.INNER, inner)

    def model(self) -> SentenceVAE:
        return self._model.eval()

    def train_step(self, batch: TextBatch, step: int, kl_weight: float, lr_scale: float, *,
                   part: str = "all", inner: int | None = None) -> dict[str, float]:
        """One Adam step of ``part``: "all" the parameters, or only the "encoder"'s or the "decoder"'s
        (``text_config.ENCODER_MODULES``/``DECODER_MODULES``): the other side's parameters and Adam
        moments are left exactly as they were. ``inner`` numbers an inner encoder update of
        aggressive training within ``step`` (its own noise)."""
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}; got {part!r}")
        mc, lc = self.cfg.text, self.cfg.loss
        dev, rows = self.device, parallel.my_rows
        tokens = torch.as_tensor(rows(batch.tokens), device=dev)
        lengths = torch.as_tensor(rows(batch.lengths), device=dev)
        size, steps = batch.tokens.shape[0], batch.tokens.shape[1] - 1  # the global batch's
        samples = importance_samples(lc)  # k posterior samples per sentence, or None
        noise = self._noise_id(step, inner)
        # drawn on the CPU from seeded generators for the global batch, then this process's rows moved:
        # the same numbers on every device and for every number of processes
        eps = torch.randn(noise_shape(lc, size, mc.latent_dim), generator=self._generator(*noise, rng.EPS),
                          dtype=self.dtype)
        eps = (rows(eps) if samples is None else rows(eps.transpose(0, 1)).transpose(0, 1)).to(dev)
        word_mask = rows(torch.rand((size, steps), generator=self._generator(*noise, rng.WORD_MASK))
                         < mc.word_dropout).to(dev)
        prior_z = (torch.randn((size, mc.latent_dim), generator=self._generator(*noise, rng.PRIOR), dtype=self.dtype).to(dev)
                   if draws_prior(lc) else None)
        self._model.train()
        self.opt.zero_grad(set_to_none=True)
        loss, terms = sentence_loss(self._train_model, tokens, lengths, eps, word_mask, kl_weight=kl_weight,
                                    free_bits=self.cfg.text_train.free_bits, objective=lc.objective, alpha=lc.alpha,
                                    lam=lc.lam, prior_z=prior_z,
                                    mmd_kwargs={"kernel": lc.kernel, "bandwidth": lc.bandwidth,
                                                "estimator": lc.estimator},
                                    dropout_masks=self._dropout_masks(noise, size, steps, samples))
        if part == "all":
            loss.backward()
        elif self._train_model is self._model:  # no DDP: autograd computes this side's gradients alone
            loss.backward(inputs=[p for name, p in self._model.named_parameters() if module_side(name) == part])
        else:  # DDP reduces every parameter's gradient: compute them all, then drop the other side's
            loss.backward()
            for name, p in self._model.named_parameters():
                if module_side(name) != part:
                    p.grad = None  # Adam skips a parameter without a gradient: value and moments stay as they are
        for group in self.opt.param_groups:
            group["lr"] = self.cfg.train.lr * lr_scale
        self.opt.step()
        return parallel.mean_terms({k: float(v.detach().mean()) for k, v in terms.items()})

    def _dropout_masks(self, noise: tuple[int, ...], size: int, steps: int, samples: int | None = None):
        """The multipliers (0 or 1 / (1 - p)) of every dropout site of the decoder
        (``TextModelConfig.dropout_sites``: the RNN's embedding and output dropout; the Transformer's
        embedding, attention, residual and output dropout) for this process's rows of the global batch,
        [size, *site] (IWAE: [samples * rows, *site], one mask per sample and sentence), drawn in the
        sites' order from one generator; None when every rate is 0."""
        sites = self.cfg.text.dropout_sites(steps)
        if all(rate == 0.0 for rate, _ in sites):
            return None
        g = self._generator(*noise, rng.DROPOUT)
        masks = []
        for rate, shape in sites:
            if samples is None:
                keep = parallel.my_rows(torch.rand((size, *shape), generator=g) >= rate)
            else:
                keep = torch.rand((size, samples, *shape), generator=g) >= rate
                keep = parallel.my_rows(keep).transpose(0, 1).reshape(-1, *shape)  # sample-major rows
            masks.append((keep.to(self.dtype) / (1.0 - rate)).to(self.device))
        return tuple(masks)

    def reset_decoder(self) -> None:
        """Re-initialise the decoder (``DECODER_REINIT_MODULES``) from a seed of its own and start a
        new optimiser: the second phase of pretraining (Li et al. 2019)."""
        torch.manual_seed(rng.derived_seed(self.cfg.train.seed, rng.DECODER_REINIT))
        fresh = SentenceVAE(self.cfg.text).to(device=self.device, dtype=self.dtype)
        with torch.no_grad():
            for name in DECODER_REINIT_MODULES:
                if hasattr(fresh, name):
                    new = getattr(fresh, name)
                    if isinstance(new, torch.nn.Parameter):
                        getattr(self._model, name).copy_(new)
                    else:
                        getattr(self._model, name).load_state_dict(new.state_dict())
        tc = self.cfg.train
        self.opt = adam(self._model.parameters(), tc)

    def evaluate(self, batches) -> dict:
        return evaluate_text(self._model, batches, seed=self.cfg.train.seed, keep_posteriors=True)

    # --- checkpoints -------------------------------------------------------------------------
    def save(self, step: int, meta: dict) -> None:
        if parallel.world()[1] == 0:  # every process holds the same state: the main one writes it
            self.checkpoints.save(step, {"model": self._model.state_dict(), "optimizer": self.opt.state_dict(),
                                         "meta": meta})
        parallel.barrier()

    def restore(self, step: int | None = None) -> dict | None:
        """Load the newest checkpoint that reads back whole (or ``step``'s); returns its metadata, or None if none."""
        state = self.checkpoints.restore_latest(self._model, step=step)  # a checkpoint must fit the model
        if state is None:
            return None
        self._model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        return state["meta"]

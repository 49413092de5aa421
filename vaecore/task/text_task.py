"""The text task (the sentence VAE) for ``vaecore.runner.driver``: the corpus and its batches, the KL
schedule and learning-rate decay, the two training modes against posterior collapse (autoencoder
pretraining, Li et al. 2019; aggressive inference, He et al. 2019), evaluation, results and the
generated text (``vaecore.task.text_outputs``).

Its engines (``jaxvae.text_train.JaxTextEngine``, ``torchvae.text_train.TorchTextEngine``) add to
the ``Engine`` protocol ``reset_decoder()`` (re-initialise the decoder and the optimiser, after
pretraining) and ``decoding`` (the backend's decoding module).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from vaecore import rng
from vaecore.data.text_data import (
    TextBatch,
    TextDataError,
    TextDataset,
    Vocab,
    load_run_data,
    run_data_source,
)
from vaecore.runs import rundir
from vaecore.settings.config import ConfigError, RunConfig
from vaecore.task.text_outputs import GenerationOptions, write_text_outputs

EVAL_BATCH = 64


def train_batches(train: TextDataset, batch_size: int, seed: int, start: int) -> Iterator[TextBatch]:
    """The training batches from global step ``start`` on, epoch after epoch."""
    epoch, index = divmod(start, train.num_batches(batch_size, drop_last=True))
    while True:
        yield from train.batches(batch_size, seed, epoch, start=index, drop_last=True)
        epoch, index = epoch + 1, 0


def encoder_updates(engine, train: TextDataset, batch: TextBatch, step: int, kl_weight: float,
                    lr_scale: float, cfg: RunConfig, guard) -> int:
    """Aggressive inference (He et al. 2019): encoder-only updates before the decoder update of
    ``step``, the first on ``batch``, the others on random training batches (drawn from
    ``(seed, AGGRESSIVE_BATCH, step, inner)``), until the loss per token of a window of
    ``aggressive_window`` updates is no better than the previous window's, at most
    ``aggressive_max_inner - 1`` updates, as in He et al.'s code. Returns how many were made."""
    tt, seed = cfg.text_train, cfg.train.seed
    best, window_loss, window_tokens = math.inf, 0.0, 0
    inner, enc_batch = 1, batch
    while inner < tt.aggressive_max_inner:
        out = engine.train_step(enc_batch, step, kl_weight, lr_scale, part="encoder", inner=inner)
        guard(out, step + 1)
        window_loss += out["total"] * len(enc_batch.lengths)
        window_tokens += enc_batch.num_targets
        inner += 1
        if inner % tt.aggressive_window == 0:
            current = window_loss / window_tokens
            if current > best:
                break
            best, window_loss, window_tokens = current, 0.0, 0
        pick = np.random.default_rng([seed, rng.AGGRESSIVE_BATCH, step, inner]).choice(
            len(train), min(cfg.train.batch_size, len(train)), replace=False)
        enc_batch = train.make_batch(np.sort(pick))
    return inner - 1


def evaluate(engine, split: TextDataset, *, kernels, seed: int = 0) -> dict[str, float]:
    """Per-sentence recon, kl, neg_elbo (nats), the perplexity bound and the counts of a split, and
    how much the code is used: mutual information I(x; z) (aggregate posterior over batches of
    ``mi_batch_size`` sentences) and active units, as ``evaluate.py`` computes them."""
    from vaecore.scoring.evaluation import latent_usage

    s = engine.evaluate(split.batches(EVAL_BATCH, shuffle=False))
    usage = latent_usage(kernels, s["mean"], s["logvar"], seed=seed)
    return {"recon": s["recon"], "kl": s["kl"], "neg_elbo": s["neg_elbo"], "ppl_bound": s["ppl_bound"],
            "mi": usage["mi"], "au": usage["au"], "mi_batch_size": usage["mi_batch_size"],
            "sentences": s["sentences"], "tokens": s["tokens"]}




def check_logits_memory(cfg: RunConfig, train: TextDataset) -> None:
    """Refuse a step whose decoder logits (k x batch x length x vocabulary floats, for the train
    split's longest sentence) cannot fit in memory (``batching.check_step_memory``)."""
    from vaecore.data.batching import check_step_memory

    length = -(-(int(train.word_counts.max()) + 2) // 8) * 8  # <bos> ... <eos>, padded as make_batch pads
    vocab = cfg.text.vocab_size
    check_step_memory(cfg.loss.iw_samples, cfg.train.batch_size, length * vocab,
                      f"k x batch x {length} tokens x {vocab} words")


class TextTask:
    """The sentence VAE on a corpus: the vocabulary is built from the train split (or read back from
    ``vocab.json`` on ``--resume``), the KL weight follows ``TextTrainConfig.schedule`` (restarted
    after pretraining), the learning rate ``TextTrainConfig.lr_scale``."""

    unit = "tokens"
    steps_per_call = 1  # every step has its own KL weight, and aggressive inference its inner updates

    def __init__(self, cfg: RunConfig, workdir: Path, *, kernels, resume: bool = False, generation=None):
        """``kernels``: the backend's evaluation module (``vaecore.scoring.evaluation.EvalBackend``)."""
        self.generation, self.kernels = generation or GenerationOptions(), kernels
        vocab_path = Path(workdir) / rundir.VOCAB
        self.data = load_run_data(cfg, Vocab.load(str(vocab_path)) if resume and vocab_path.exists() else None)
        self.cfg = cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=len(self.data.vocab)))
        tc, tt = cfg.train, cfg.text_train
        self.train = self.data.splits["train"]
        self.per_epoch = self.train.num_batches(tc.batch_size, drop_last=True)
        if self.per_epoch == 0:
            raise TextDataError(f"batch size {tc.batch_size} is larger than the train split ({len(self.train)} "
                                f"sentences); lower --batch-size")
        check_logits_memory(cfg, self.train)
        self.total_steps = self.per_epoch * tc.epochs if tc.max_steps is None else tc.max_steps
        self.pretrain_steps = tt.pretrain_epochs * self.per_epoch
        if self.pretrain_steps and self.pretrain_steps >= self.total_steps:
            raise ConfigError(f"--pretrain-ae-epochs {tt.pretrain_epochs} leaves no steps for the ELBO "
                              f"({self.total_steps} steps in all); use fewer pretraining epochs or more --epochs")
        self.schedule = tt.schedule(cfg.loss.kl_weight, self.total_steps - self.pretrain_steps)
        self.aggressive, self.previous_mi = tt.aggressive, 0.0  # He et al. compare the first epoch's MI with 0
        self.inner_updates = 0  # encoder updates of aggressive training since the last logged point
        self.vocab_path = vocab_path

    def describe(self) -> str:
        st = self.data.stats
        return (f"{run_data_source(self.cfg)}: {st['train']['sentences']} train / {st['valid']['sentences']} valid / "
                f"{st['test']['sentences']} test sentences, vocabulary {len(self.data.vocab)}")

    def bar_label(self) -> str:
        return f"{self.cfg.backend} {self.cfg.text.rnn} {self.cfg.loss.objective}"

    def prepare(self, workdir: Path) -> None:
        self.data.vocab.save(str(self.vocab_path))

    def batches(self, start: int) -> Iterator[TextBatch]:
        return train_batches(self.train, self.cfg.train.batch_size, self.cfg.train.seed, start)

    def resume(self, meta: dict) -> None:
        self.aggressive = meta.get("aggressive", self.aggressive)
        self.previous_mi = meta.get("previous_mi", self.previous_mi)

    def state(self) -> dict:
        return {"aggressive": self.aggressive, "previous_mi": self.previous_mi}

    def before_step(self, engine, step: int, log) -> tuple[float, float]:
        tt = self.cfg.text_train
        if self.pretrain_steps and step == self.pretrain_steps:
            engine.reset_decoder()
            log(f"step {step}: autoencoder pretraining done ({tt.pretrain_epochs} epochs); decoder re-initialised, "
                f"optimiser reset, the ELBO with free bits {tt.free_bits} from here")
        kl_weight = 0.0 if step < self.pretrain_steps else self.schedule(step - self.pretrain_steps)
        return kl_weight, tt.lr_scale(step, self.per_epoch)

    def step(self, engine, batch: TextBatch, step: int, kl_weight: float, lr_scale: float, guard) -> dict[str, float]:
        if not self.aggressive:
            return engine.train_step(batch, step, kl_weight, lr_scale)
        self.inner_updates += encoder_updates(engine, self.train, batch, step, kl_weight, lr_scale, self.cfg, guard)
        return engine.train_step(batch, step, kl_weight, lr_scale, part="decoder")

    def size(self, batch: TextBatch) -> int:
        return len(batch.lengths)

    def count(self, batch: TextBatch) -> int:
        return batch.num_targets

    def log_record(self, sums, batch_sums, steps, units, seconds, kl_weight, lr_scale) -> tuple[dict, dict]:
        """The means of the terms since the last point, the reconstruction loss per target token, the
        step's KL weight and learning rate, and target tokens per second in the steps."""
        means, rate = {k: v / steps for k, v in sums.items()}, units / seconds
        extra = {}
        if self.cfg.text_train.aggressive:
            extra = {"aggressive": int(self.aggressive), "inner_steps": self.inner_updates / steps}
            self.inner_updates = 0
        # the per-token loss: summed over sentences (batches differ in sentence length), over the tokens
        record = {**means, "neg_elbo": means["recon"] + means["kl"], "recon_per_token": batch_sums["recon"] / units,
                  "kl_weight": kl_weight, "lr": self.cfg.train.lr * lr_scale, "tokens_per_s": rate, **extra}
        postfix = {"loss": f"{means['total']:.2f}", "kl": f"{means['kl']:.2f}", "w": f"{kl_weight:.3f}",
                   "tok_s": f"{rate:.0f}"}
        return record, postfix

    def validate(self, engine, epoch: int, writer, step: int, log) -> None:
        """The validation figures; aggressive inference ends after the first epoch whose
        validation MI is below the previous epoch's."""
        valid = evaluate(engine, self.data.splits["valid"], kernels=self.kernels, seed=self.cfg.train.seed)
        writer.write(step, "valid", {**valid, "epoch": epoch})
        if self.aggressive and valid["mi"] < self.previous_mi:
            self.aggressive = False
            log(f"epoch {epoch}: aggressive inference ends (valid MI {valid['mi']:.3f} < {self.previous_mi:.3f} "
                f"after the previous epoch); encoder and decoder train together from here")
            writer.write(step, "event", {"aggressive_ends": 1, "valid_mi": valid["mi"], "previous_mi": self.previous_mi})
        self.previous_mi = valid["mi"]

    def test(self, engine) -> tuple[dict, dict]:
        test, st = evaluate(engine, self.data.splits["test"], kernels=self.kernels, seed=self.cfg.train.seed), self.data.stats
        results = {"units": "nats per sentence; ppl_bound = exp(sentences * neg_elbo / tokens), tokens = words + <eos>",
                   **test, "truncated": st["test"]["truncated"], "truncated_train": st["train"]["truncated"],
                   "unk": st["test"]["unk"], "empty_lines": st["test"]["empty_lines"],
                   "max_len": self.cfg.text_train.max_len, "vocab_size": len(self.data.vocab),
                   "data": run_data_source(self.cfg)}
        return results, {k: test[k] for k in ("recon", "kl", "neg_elbo", "ppl_bound", "mi", "au")}

    def outputs(self, engine, workdir: Path) -> None:
        write_text_outputs(engine, self.data, workdir, self.cfg, self.generation, step=self.total_steps)


def eval_split(cfg: RunConfig, workdir: Path, *, split: str, data: str | None, limit: int | None,
               batch_size: int) -> tuple[list[TextBatch], str]:
    """``evaluate.py``'s split: its first ``limit`` sentences (corpus order), batched by length with
    the run's vocabulary, and the data source; ``data`` replaces the run's corpus. Raises
    ``TextDataError`` (a ValueError) when the corpus or the vocabulary cannot be read."""
    if data is not None:
        cfg = dataclasses.replace(cfg, data=data)
    try:
        run = load_run_data(cfg, Vocab.load(str(Path(workdir) / rundir.VOCAB)))
    except (OSError, ValueError) as e:
        raise TextDataError(str(e)) from None
    sentences = run.splits[split]
    n = len(sentences) if limit is None else min(limit, len(sentences))
    order = np.argsort(sentences.word_counts[:n], kind="stable")  # similar lengths together: little padding
    return [sentences.make_batch(order[i:i + batch_size]) for i in range(0, n, batch_size)], run_data_source(cfg)

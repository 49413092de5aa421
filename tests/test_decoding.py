"""Decoding: hand-set models whose next-word distribution is a known table, and the two backends
decoding the same ids from the same weights and z."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flax import nnx

from jaxvae import decoding as jdec
from jaxvae import text_model as jtm
from jaxvae.params import import_params as jax_import
from torchvae import decoding as tdec
from torchvae import text_model as ttm
from torchvae.params import export_params as torch_export
from torchvae.params import import_params as torch_import
from vaecore.data.text_data import BOS_ID, EOS_ID, Vocab, ids_to_text
from vaecore.settings.text_config import TextModelConfig

V = 10  # ids 0-3 special, words 4..9
TINY = 1e-6


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def table_params(table: np.ndarray, latent: int = 2) -> dict[str, np.ndarray]:
    """Canonical params of a GRU SentenceVAE whose next-word log-probs after token t are
    log(table[t]) (up to a factor tanh(10) = 1 - 4e-9), whatever z and the history.

    The embedding is 10 * one-hot, the decoder GRU's update gate is shut (bias -30) and its
    candidate n = tanh(x), so the state is tanh(10) * one-hot(current token); the output layer's
    column t holds log(table[t])."""
    torch.manual_seed(0)
    model = ttm.SentenceVAE(table_config(latent))
    p = {k: np.zeros_like(v) for k, v in torch_export(model).items()}
    p["embedding.weight"] = 10.0 * np.eye(V, dtype=np.float32)
    p["decoder_rnn.weight_ih_l0"][2 * V :] = np.eye(V)
    p["decoder_rnn.bias_ih_l0"][V : 2 * V] = -30.0
    table = np.asarray(table, np.float64)
    p["output.weight"] = np.log(table / table.sum(1, keepdims=True)).T.astype(np.float32)
    return p


def table_config(latent: int = 2) -> TextModelConfig:
    return TextModelConfig(vocab_size=V, embed_dim=V, hidden_dim=V, latent_dim=latent, rnn="gru",
                           embedding_dropout=0.0, word_dropout=0.0, output_dropout=0.0, tie_embeddings=False)


def row(**probs: float) -> np.ndarray:
    """A next-word distribution: ids given as keyword w<id>, the rest TINY."""
    r = np.full(V, TINY)
    for key, value in probs.items():
        r[int(key[1:])] = value
    return r


# From <bos>: 5 (0.5) or 6 (0.4). After 5: <eos> 0.2, each word 0.8/6. After 6: <eos> 0.99.
# Greedy takes 5 then <eos> (p = 0.1); beam search with k >= 2 finds [6] (p = 0.396).
TRAP = np.stack([row(w2=1.0)] * V)
TRAP[BOS_ID] = row(w0=0.01, w1=0.01, w2=0.02, w3=0.01, w4=0.02, w5=0.5, w6=0.4, w7=0.01, w8=0.01, w9=0.01)
TRAP[5] = row(w2=0.2, **{f"w{i}": 0.8 / 6 for i in range(4, 10)})
TRAP[6] = row(w2=0.99, w4=0.01)

# A chain <bos> -> 7 -> 8 -> 9 -> <eos>, and a loop 4 -> 5 -> 4 for the max_len cut.
CHAIN = np.stack([row(w2=1.0)] * V)
for a, b in ((BOS_ID, 7), (7, 8), (8, 9), (9, EOS_ID), (4, 5), (5, 4)):
    CHAIN[a] = row(**{f"w{b}": 0.9})


def models(params: dict[str, np.ndarray], config: TextModelConfig):
    tmodel = ttm.SentenceVAE(config).eval()
    torch_import(tmodel, params)
    jmodel = jtm.SentenceVAE(config, rngs=nnx.Rngs(0))
    jmodel.eval()
    jax_import(jmodel, params)
    return tmodel, jmodel


BACKENDS = [("torch", tdec, 0), ("jax", jdec, 1)]
Z = np.zeros((1, 2), np.float32)


@pytest.mark.parametrize("backend", BACKENDS, ids=["torch", "jax"])
def test_greedy_follows_the_table(backend):
    _, dec, which = backend
    model = models(table_params(CHAIN), table_config())[which]
    assert dec.greedy_decode(model, np.zeros((3, 2)), max_len=10) == [[7, 8, 9]] * 3
    assert dec.beam_search(model, Z, beam_width=3, max_len=10) == [[7, 8, 9]]
    # no <eos> within max_len: cut at max_len
    assert dec.greedy_decode(model, Z, max_len=2) == [[7, 8]]


@pytest.mark.parametrize("backend", BACKENDS, ids=["torch", "jax"])
def test_beam_beats_greedy_on_the_trap(backend):
    _, dec, which = backend
    model = models(table_params(TRAP), table_config())[which]
    assert dec.greedy_decode(model, Z) == [[5]]
    assert dec.beam_search(model, Z, beam_width=1) == [[5]]
    assert dec.beam_search(model, Z, beam_width=2) == [[6]]
    assert dec.beam_search(model, Z, beam_width=3, length_norm=1.0) == [[6]]


@pytest.mark.parametrize("backend", BACKENDS, ids=["torch", "jax"])
def test_sampling_is_inverse_cdf_of_the_uniforms(backend):
    _, dec, which = backend
    model = models(table_params(TRAP), table_config())[which]
    # from <bos> the CDF over ids is 0.01 0.02 0.04 0.05 0.07 0.57 0.97 ...; after 5: <eos> up to 0.2
    uniforms = np.array([[0.3, 0.05, 0.5], [0.6, 0.5, 0.5], [0.3, 0.5, 0.5]])
    assert dec.sample_decode(model, np.zeros((3, 2)), uniforms=uniforms, max_len=3) == [[5], [6], [5, 6]]
    # temperature -> 0 is greedy
    assert dec.sample_decode(model, Z, temperature=1e-3, max_len=3, seed=4) == [[5]]
    with pytest.raises(ValueError, match="temperature"):
        dec.sample_decode(model, Z, temperature=0.0)


def random_pair(seed: int = 0):
    config = TextModelConfig(vocab_size=30, embed_dim=8, hidden_dim=12, latent_dim=4, rnn="lstm", num_layers=2,
                             z_every_step=True, embedding_dropout=0.0, output_dropout=0.0, tie_embeddings=True)
    torch.manual_seed(seed)
    tmodel = ttm.SentenceVAE(config).eval()
    params = torch_export(tmodel)
    params["output_bias"][EOS_ID] += 2.0  # so that some sentences end before max_len
    return models(params, config)


def test_backends_decode_the_same_ids():
    tmodel, jmodel = random_pair()
    z = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    for kwargs in ({}, {"max_len": 7}):
        assert tdec.greedy_decode(tmodel, z, **kwargs) == jdec.greedy_decode(jmodel, z, **kwargs)
    for k, norm in ((1, 0.0), (3, 0.0), (4, 1.0)):
        t_ids = tdec.beam_search(tmodel, z, beam_width=k, length_norm=norm, max_len=12)
        assert t_ids == jdec.beam_search(jmodel, z, beam_width=k, length_norm=norm, max_len=12)
    t_ids = tdec.sample_decode(tmodel, z, temperature=0.7, seed=3, max_len=12)
    assert t_ids == jdec.sample_decode(jmodel, z, temperature=0.7, seed=3, max_len=12)
    assert len({len(s) for s in t_ids}) > 1  # not all cut at max_len


def test_beam_width_one_is_greedy():
    tmodel, _ = random_pair(seed=1)
    z = np.random.default_rng(1).standard_normal((8, 4))
    assert tdec.beam_search(tmodel, z, beam_width=1, max_len=15) == tdec.greedy_decode(tmodel, z, max_len=15)


def test_reconstruct_and_interpolate():
    tmodel, jmodel = random_pair()
    tokens = np.array([[BOS_ID, 5, 6, 7, EOS_ID, 0], [BOS_ID, 9, 8, 10, 11, EOS_ID]], np.int32)
    lengths = np.array([5, 6], np.int32)
    means = tdec.posterior_mean(tmodel, tokens, lengths)
    np.testing.assert_allclose(jdec.posterior_mean(jmodel, tokens, lengths), means, rtol=1e-5, atol=1e-6)
    recon = tdec.reconstruct(tmodel, tokens, lengths)
    assert recon == jdec.reconstruct(jmodel, tokens, lengths)
    assert recon == tdec.greedy_decode(tmodel, means)
    path = tdec.interpolate(tmodel, tokens, lengths, steps=4)
    assert path == jdec.interpolate(jmodel, tokens, lengths, steps=4)
    assert len(path) == 4 and path[0] == recon[0] and path[-1] == recon[1]
    # beam search along the same path: the beam decodings of the path's points, in both backends
    beam = tdec.interpolate(tmodel, tokens, lengths, steps=4, method="beam", beam_width=3)
    assert beam == jdec.interpolate(jmodel, tokens, lengths, steps=4, method="beam", beam_width=3)
    from vaecore.task.decoding import interpolation_path

    assert beam == tdec.beam_search(tmodel, interpolation_path(means[0], means[1], 4), beam_width=3)
    assert tdec.reconstruct(tmodel, tokens, lengths, method="beam", beam_width=2) == jdec.reconstruct(
        jmodel, tokens, lengths, method="beam", beam_width=2
    )


def test_ids_to_text():
    vocab = Vocab([f"w{i}" for i in range(4, V)])
    assert ids_to_text([[4, 5], []], vocab) == ["w4 w5", ""]
    # in the run folder's text files an empty decoding is written as <eos>, not as an empty line
    from vaecore.task.text_outputs import shown

    assert [shown(vocab, ids) for ids in ([4, 5], [])] == ["w4 w5", "<eos>"]


def test_jax_greedy_loop_equals_the_step_by_step_search():
    """The JAX greedy decoding in one compiled loop returns what the shared numpy search returns from
    the same stepper's single steps, over rows that stop at different lengths, rows cut at max_len,
    and row counts on both sides of a padding bucket."""
    from vaecore.task import decoding as search

    torch.manual_seed(3)
    cfg = TextModelConfig(vocab_size=30, embed_dim=8, hidden_dim=12, latent_dim=3, embedding_dropout=0.0,
                          output_dropout=0.0)
    params = torch_export(ttm.SentenceVAE(cfg))
    params["output_bias"][EOS_ID] += 0.15  # <eos> now and then (tied embeddings: the output bias)
    _, jmodel = models(params, cfg)
    lengths = set()
    for rows in (1, 5, jdec.MIN_ROWS, jdec.MIN_ROWS + 1):
        z = 10.0 * np.random.default_rng(rows).standard_normal((rows, 3)).astype(np.float32)
        stepper = jdec._Stepper(jmodel)
        looped = search.greedy(stepper, z, max_len=9)
        stepped = search._step_by_step(stepper, z, 9, lambda logp, t: np.argmax(logp, axis=1))
        assert looped == stepped
        assert len(looped) == rows
        lengths |= {len(ids) for ids in looped}
    assert len(lengths) > 1 and 9 in lengths  # some stop at <eos>, some are cut at max_len


class _StepOnly:
    """A stepper's single steps only: the shared numpy search, step by step, over the same weights."""

    def __init__(self, stepper):
        self.start, self.step, self.reorder = stepper.start, stepper.step, stepper.reorder


def test_jax_sampling_and_beam_loops_equal_the_step_by_step_search():
    """The JAX sampling and beam search in one compiled loop (float32) return what the shared numpy
    search (float64) returns from the same stepper's single steps: rows ending at different lengths,
    rows cut at max_len, row counts on both sides of a padding bucket, beams of width 1 to 4, with and
    without length normalisation, temperatures below and above 1."""
    from vaecore.task import decoding as search

    torch.manual_seed(5)
    cfg = TextModelConfig(vocab_size=30, embed_dim=8, hidden_dim=12, latent_dim=3, rnn="lstm",
                          embedding_dropout=0.0, output_dropout=0.0)
    params = torch_export(ttm.SentenceVAE(cfg))
    params["output_bias"][EOS_ID] += 1.0
    _, jmodel = models(params, cfg)
    lengths, checked = set(), 0
    for rows in (1, 5, jdec.MIN_ROWS + 1):
        z = 3.0 * np.random.default_rng(rows).standard_normal((rows, 3)).astype(np.float32)
        stepper = jdec._Stepper(jmodel)
        for temperature in (0.5, 1.0, 2.0):
            u = np.random.default_rng(rows + 7).random((rows, 9))
            looped = search.sample(stepper, z, temperature=temperature, max_len=9, uniforms=u)
            assert looped == search.sample(_StepOnly(stepper), z, temperature=temperature, max_len=9, uniforms=u)
            lengths |= {len(ids) for ids in looped}
        for k, norm, max_len in ((1, 0.0, 8), (2, 0.0, 3), (3, 1.0, 8), (4, 0.5, 12)):
            looped = search.beam(stepper, z, beam_width=k, max_len=max_len, length_norm=norm)
            stepped = search.beam(_StepOnly(stepper), z, beam_width=k, max_len=max_len, length_norm=norm)
            assert looped == stepped, (rows, k, norm, max_len)
            lengths |= {len(ids) for ids in looped}
            checked += 1
    assert checked == 12 and len(lengths) > 3 and 9 in lengths  # some end at <eos>, some at max_len
    with pytest.raises(ValueError, match="beam_width"):
        search.beam(jdec._Stepper(jmodel), z, beam_width=16)


def test_best_first_is_the_stable_argsort():
    from vaecore.task.decoding import best_first

    rng = np.random.default_rng(0)
    for trial in range(500):
        m = int(rng.integers(1, 40))
        scores = rng.integers(-3, 3, m).astype(float) if trial % 2 else rng.standard_normal(m)  # ties, or none
        scores[rng.integers(0, m)] = -np.inf
        n = int(rng.integers(1, m + 2))
        np.testing.assert_array_equal(best_first(scores, n), np.argsort(-scores, kind="stable")[:n])


def test_padded_rows():
    assert [jdec.padded_rows(n) for n in (0, 1, 16, 17, 33, 64, 65)] == [16, 16, 16, 32, 64, 64, 128]

"""The FLOP counts of ``bench/peak.py`` against values derived by hand (multiply-adds x 2 FLOP x 3 for
forward + backward)."""

from __future__ import annotations

import pytest

from bench.peak import flops_image_mlp, flops_text_token


def test_image_mlp_tiny():
    # 3 pixels, hidden (2,), latent 1: encoder 3*2 + 2*(2*1) = 10, decoder 1*2 + 2*3 = 8 multiply-adds.
    assert flops_image_mlp((2,), 1, pixels=3) == (10 + 8) * 2 * 3 == 108
    # 784 pixels: encoder 784*2 + 2*2 = 1572, decoder 1*2 + 2*784 = 1570.
    assert flops_image_mlp((2,), 1) == 3142 * 6 == 18_852


def test_image_mlp_decoder_mirrors_the_encoder():
    # 4 pixels, hidden (3, 2), latent 1: encoder 4*3 + 3*2 + 2*2 = 22; decoder 1*2 + 2*3 + 3*4 = 20
    # (not mirrored it would be 1*3 + 3*2 + 2*4 = 17).
    assert flops_image_mlp((3, 2), 1, pixels=4) == 42 * 6 == 252


def test_image_mlp_objectives():
    # IWAE, k = 2: the decoder twice: 10 + 2*8 = 26 multiply-adds.
    assert flops_image_mlp((2,), 1, "iwae", iw_samples=2, pixels=3) == 26 * 6 == 156
    # MMD at batch 4, latent 1: 3 forward + 2 backward [4, 4] distance matmuls of 2*4*4*1 = 32 FLOP,
    # 160 per batch, 40 per image, on top of the ELBO's 108.
    assert flops_image_mlp((2,), 1, "mmd", batch_size=4, pixels=3) == 108 + 40
    with pytest.raises(ValueError, match="batch_size"):
        flops_image_mlp((2,), 1, "mmd")
    with pytest.raises(ValueError, match="objective"):
        flops_image_mlp((2,), 1, "vae")


def test_image_mlp_issue_models():
    # 784-400-20: encoder 784*400 + 400*40 = 329,600, decoder 20*400 + 400*784 = 321,600.
    assert flops_image_mlp((400,), 20) == (329_600 + 321_600) * 6 == 3_907_200
    # 784-512-512-20: encoder 401,408 + 262,144 + 20,480, decoder 10,240 + 262,144 + 401,408.
    assert flops_image_mlp((512, 512), 20) == (684_032 + 673_792) * 6 == 8_146_944


def test_text_tiny():
    # GRU (3 gates), embed 2, hidden 3, vocab 5: each RNN 3*3*(2+3) = 45 multiply-adds, output 3*5 = 15.
    assert flops_text_token(2, 3, 5) == (45 + 45 + 15) * 6 == 630
    # LSTM (4 gates): 4*3*5 = 60 per RNN.
    assert flops_text_token(2, 3, 5, rnn="lstm") == (60 + 60 + 15) * 6 == 810
    # Tied, hidden 3 != embed 2: projection 3*2 = 6, then embedding^T 2*5 = 10.
    assert flops_text_token(2, 3, 5, tie_embeddings=True) == (45 + 45 + 16) * 6 == 636
    # Tied, embed = hidden = 3: no projection, 3*5 = 15; RNNs 3*3*(3+3) = 54.
    assert flops_text_token(3, 3, 5, tie_embeddings=True) == (54 + 54 + 15) * 6 == 738
    # z at every decoder step, latent 1: decoder input 2 + 1 = 3: 3*3*6 = 54.
    assert flops_text_token(2, 3, 5, latent_dim=1, z_every_step=True) == (45 + 54 + 15) * 6 == 684
    with pytest.raises(ValueError, match="rnn"):
        flops_text_token(2, 3, 5, rnn="rnn")


def test_text_layers_and_directions():
    # Two layers: layer 2 reads the hidden state: 3*3*(3+3) = 54; each RNN 45 + 54 = 99.
    assert flops_text_token(2, 3, 5, num_layers=2) == (99 + 99 + 15) * 6 == 1278
    # Bidirectional encoder, one layer: 2 * 45.
    assert flops_text_token(2, 3, 5, bidirectional=True) == (90 + 45 + 15) * 6 == 900
    # Bidirectional, two layers: encoder layer 2 reads both directions (6): 2 * 3*3*(6+3) = 162;
    # the decoder stays unidirectional: 45 + 54.
    assert flops_text_token(2, 3, 5, num_layers=2, bidirectional=True) == (90 + 162 + 99 + 15) * 6 == 2196


def test_text_issue_model():
    # GRU, embed 300, hidden 256, vocab 10,002, untied: each RNN 3*256*(300+256) = 427,008
    # multiply-adds per token, the vocabulary 256*10,002 = 2,560,512; "about 20.6 MFLOP" in the issue.
    flops = flops_text_token(300, 256, 10_002, latent_dim=16)
    assert flops == (2 * 427_008 + 2_560_512) * 6 == 20_487_168
    assert flops == pytest.approx(20.6e6, rel=0.01)


def test_text_transformer_decoder_and_encoder():
    """texar's sizes (width 256, ff 1,024, 3 blocks, T = 40): 4,841,472 forward FLOP per position and stack
    (``transformer_flops``'s docstring, by hand); the tied vocabulary layer 2 x 256 x 10,002."""
    block = 2 * 256 * 768 + 2 * 2 * 256 * 40 + 2 * 256 * 256 + 2 * 2 * 256 * 1024
    assert 3 * block == 4_841_472
    lstm_encoder = 2 * 4 * 256 * (256 + 256)
    vocab = 2 * 256 * 10_002
    sizes = (1024, 3, 40)
    kw = {"rnn": "lstm", "tie_embeddings": True}
    assert flops_text_token(256, 256, 10_002, transformer=sizes, **kw) == 3 * (lstm_encoder + 3 * block + vocab)
    assert flops_text_token(256, 256, 10_002, transformer=sizes, transformer_encoder=sizes, **kw) == \
        3 * (2 * 3 * block + vocab)
    # an embedding narrower than the width: each stack's input projection 2 x 128 x 256 per position
    narrow = flops_text_token(128, 256, 10_002, transformer=sizes, transformer_encoder=sizes, **kw)
    assert narrow == 3 * (2 * (3 * block + 2 * 128 * 256) + 2 * 128 * 10_002 + 2 * 256 * 128)

"""Tied input and output embeddings (``TextModelConfig.tie_embeddings``), both backends.

The decoder's logits are computed by hand from its RNN outputs: P(h) @ E^T + b, with P the
``output_projection`` linear when hidden != embed and nothing when they are equal; the embedding
is the one the encoder and decoder read (one parameter, no ``output.weight``), and it starts
uniform in +-1/sqrt(embed_dim)."""

import numpy as np
import pytest

from vaecore.settings.text_config import TextModelConfig

INPUTS = np.array([[1, 5, 6, 7, 8, 9], [1, 10, 11, 12, 4, 4]], np.int32)
Z = np.array([[0.3, -1.0, 0.5], [1.2, 0.1, -0.4]], np.float32)
EMBED = 8


def config(hidden: int) -> TextModelConfig:
    return TextModelConfig(vocab_size=30, embed_dim=EMBED, hidden_dim=hidden, latent_dim=3, embedding_dropout=0.0,
                           output_dropout=0.0, tie_embeddings=True)


def torch_parts(hidden: int):
    """-> (logits, RNN outputs, canonical params) of the torch model for INPUTS and Z."""
    import torch

    from torchvae.params import export_params
    from torchvae.text_model import SentenceVAE

    torch.manual_seed(0)
    model = SentenceVAE(config(hidden)).eval()
    with torch.no_grad():
        model.output_bias.copy_(torch.linspace(-1, 1, 30))  # zeros at init: make the bias visible
        inputs, z = torch.as_tensor(INPUTS, dtype=torch.long), torch.as_tensor(Z)
        out, _ = model.decoder_rnn(model.embedding(inputs), model.initial_state(z))
        return model.decode(inputs, z).numpy(), out.numpy(), export_params(model)


def jax_parts(hidden: int):
    import jax.numpy as jnp
    from flax import nnx

    from jaxvae.params import export_params
    from jaxvae.text_model import SentenceVAE

    model = SentenceVAE(config(hidden), rngs=nnx.Rngs(0))
    model.eval()
    model.output_bias[...] = jnp.linspace(-1, 1, 30, dtype=model.output_bias.dtype)  # float32 also under x64
    inputs, z = jnp.asarray(INPUTS), jnp.asarray(Z)
    out, _ = model.decoder_rnn(model.embedding(inputs), None, model.initial_state(z))
    return np.asarray(model.decode(inputs, z)), np.asarray(out), export_params(model)


@pytest.mark.parametrize("parts", [torch_parts, jax_parts], ids=["torch", "jax"])
@pytest.mark.parametrize("hidden", [EMBED, 12], ids=["same-size", "projected"])
def test_logits_are_the_embedding_applied_to_the_outputs(parts, hidden):
    logits, out, p = parts(hidden)
    assert "output.weight" not in p and "output.bias" not in p
    assert ("output_projection.weight" in p) == (hidden != EMBED)
    h = out @ p["output_projection.weight"].T + p["output_projection.bias"] if hidden != EMBED else out
    expected = h @ p["embedding.weight"].T + p["output_bias"]
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    bound = 1 / np.sqrt(EMBED)
    assert np.abs(p["embedding.weight"]).max() <= bound and p["embedding.weight"].std() > 0.4 * bound


def test_a_gradient_reaches_the_embedding_of_words_only_predicted():
    """Word 20 is never an input: with tying its embedding row still gets a gradient (from the
    output side); untied it gets none."""
    import torch

    from torchvae.text_model import SentenceVAE, sentence_loss

    tokens = torch.as_tensor(INPUTS[:, :5], dtype=torch.long)
    lengths = torch.tensor([5, 5])
    for tie in (True, False):
        torch.manual_seed(0)
        model = SentenceVAE(TextModelConfig(vocab_size=30, embed_dim=EMBED, hidden_dim=EMBED, latent_dim=3,
                                            tie_embeddings=tie))
        loss, _ = sentence_loss(model, tokens, lengths, torch.zeros(2, 3))
        loss.backward()
        assert (model.embedding.weight.grad[20].abs().sum() > 0) == tie

"""Output dropout of the sentence VAE's decoder, both backends: in training mode the RNN outputs
reach the vocabulary projection dropped and rescaled (kept units x 1 / (1 - p)), in evaluation mode
untouched. The projection is made the identity (vocab = hidden, weight I, bias 0), so the logits
are the dropped RNN outputs themselves and their ratio to the evaluation logits must be 0 or 1 / (1 - p)."""

import numpy as np
import pytest

from vaecore.settings.text_config import TextModelConfig

H, P = 24, 0.5
CFG = TextModelConfig(vocab_size=H, embed_dim=8, hidden_dim=H, latent_dim=3, embedding_dropout=0.0,
                      output_dropout=P, tie_embeddings=False)
INPUTS = np.array([[1, 5, 6, 7, 8, 9], [1, 10, 11, 12, 4, 4]], np.int32)
Z = np.array([[0.3, -1.0, 0.5], [1.2, 0.1, -0.4]], np.float32)


def torch_logits(train: bool) -> tuple[np.ndarray, np.ndarray]:
    import torch

    from torchvae.text_model import SentenceVAE

    torch.manual_seed(0)
    model = SentenceVAE(CFG)
    with torch.no_grad():
        model.output.weight.copy_(torch.eye(H))
        model.output.bias.zero_()
    inputs, z = torch.as_tensor(INPUTS, dtype=torch.long), torch.as_tensor(Z)
    with torch.no_grad():
        model.eval()
        ref = model.decode(inputs, z).numpy()
        model.train(train)
        return model.decode(inputs, z).numpy(), ref


def jax_logits(train: bool) -> tuple[np.ndarray, np.ndarray]:
    import jax.numpy as jnp
    from flax import nnx

    from jaxvae.text_model import SentenceVAE

    model = SentenceVAE(CFG, rngs=nnx.Rngs(0))
    model.output.kernel[...] = jnp.eye(H)
    model.output.bias[...] = jnp.zeros(H)
    inputs, z = jnp.asarray(INPUTS), jnp.asarray(Z)
    model.eval()
    ref = np.asarray(model.decode(inputs, z))
    if train:
        model.train()
    return np.asarray(model.decode(inputs, z)), ref


@pytest.mark.parametrize("logits", [torch_logits, jax_logits], ids=["torch", "jax"])
def test_output_dropout_drops_and_rescales_in_training_only(logits):
    dropped, ref = logits(train=True)
    assert np.abs(ref).min() > 1e-6  # tanh outputs of an LSTM: no exact zeros to confuse the check below
    ratio = dropped / ref
    zero, kept = np.isclose(ratio, 0.0, atol=1e-6), np.isclose(ratio, 1 / (1 - P), rtol=1e-5)
    assert np.all(zero | kept), "every unit is either dropped or kept and scaled by 1 / (1 - p)"
    assert 0.3 < zero.mean() < 0.7  # about p of the 2 x 6 x 24 units are dropped
    same, ref2 = logits(train=False)
    np.testing.assert_array_equal(same, ref2)  # evaluation mode: no dropout

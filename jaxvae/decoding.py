"""Decoding sentences from a ``SentenceVAE`` in JAX; the twin of ``torchvae/decoding.py``.

Every function takes latent codes ``z`` [B, latent] (numpy or array: prior samples, posterior
means) and returns one list of word ids per row, without <bos> and <eos>; a sentence that has not
produced <eos> after ``max_len`` steps is cut there. ``vaecore.text_data.ids_to_text`` turns them into
strings. The search is ``vaecore.decoding`` (numpy, shared by both backends), so the two backends decode
the same ids from the same weights and z; only the decoder step (one jitted function here) differs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvae.text_model import SentenceVAE
from vaecore import decoding as search

METHODS = search.METHODS


@functools.cache
def _compiled(graphdef):
    """Jitted (initial state, step) for a model structure, compiled once per structure and shape."""

    @jax.jit
    def init(state, z):
        return nnx.merge(graphdef, state).initial_state(z)

    @jax.jit
    def step(state, token, dec_state, z):
        logits, dec_state = nnx.merge(graphdef, state).decoder_step(token, dec_state, z)
        return jax.nn.log_softmax(logits, axis=-1), dec_state

    return init, step


class _Stepper:
    """The backend part: decoder state from z, one step to float64 log-probs, beam reordering."""

    def __init__(self, model: SentenceVAE):
        graphdef, self.params = nnx.split(model)
        self.dtype = model.to_mean.kernel[...].dtype
        self._init, self._step = _compiled(graphdef)

    def start(self, z: np.ndarray):
        z = jnp.asarray(z, self.dtype)
        return self._init(self.params, z), z

    def step(self, tokens: np.ndarray, carry) -> tuple[np.ndarray, object]:
        dec_state, z = carry
        logp, dec_state = self._step(self.params, jnp.asarray(tokens, jnp.int32), dec_state, z)
        return np.asarray(logp, np.float64), (dec_state, z)

    @staticmethod
    def reorder(carry, index: np.ndarray):
        dec_state, z = carry
        index = jnp.asarray(index)
        return jax.tree.map(lambda s: s[:, index], dec_state), z[index]


def posterior_mean(model: SentenceVAE, tokens, lengths) -> np.ndarray:
    """The mean of q(z|x) of a batch (tokens [B, T], lengths [B]) -> [B, latent] numpy."""
    mean, _ = _encode(model, jnp.asarray(tokens), jnp.asarray(lengths))
    return np.asarray(mean)


@nnx.jit
def _encode(model: SentenceVAE, tokens: jax.Array, lengths: jax.Array):
    return model.encode(tokens, lengths)


_decoder = search.Decoder(_Stepper, posterior_mean, np.asarray)
greedy_decode, sample_decode, beam_search = _decoder.greedy_decode, _decoder.sample_decode, _decoder.beam_search
decode, reconstruct, interpolate = _decoder.decode, _decoder.reconstruct, _decoder.interpolate

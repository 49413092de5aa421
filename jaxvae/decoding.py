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
from vaecore.text_data import BOS_ID

METHODS = search.METHODS


MIN_ROWS = 16  # decoders run on a power-of-two number of rows, at least this: few shapes, few compilations


def padded_rows(n: int) -> int:
    """The row count a batch of ``n`` decodes runs on: the next power of two, at least ``MIN_ROWS``, so
    that a run's samples, reconstructions, homotopies and beams share a handful of compiled shapes."""
    return max(MIN_ROWS, 1 << max(n - 1, 0).bit_length())


@functools.cache
def _compiled(graphdef):
    """Jitted (initial state, step, beam reordering, greedy loop) for a model structure, compiled once
    per structure and shape."""

    @jax.jit
    def init(state, z):
        return nnx.merge(graphdef, state).initial_state(z)

    @jax.jit
    def step(state, token, dec_state, z):
        logits, dec_state = nnx.merge(graphdef, state).decoder_step(token, dec_state, z)
        return jax.nn.log_softmax(logits, axis=-1), dec_state

    @jax.jit
    def reorder(dec_state, z, index):
        return jax.tree.map(lambda s: s[:, index], dec_state), z[index]

    @functools.partial(jax.jit, static_argnums=2)
    def greedy(state, z, max_len):
        """Greedy decoding as one compiled loop: the argmax of the same log-probs as ``step`` at each of
        ``max_len`` steps, <eos> or not (the caller cuts each row at its first <eos>): [max_len, B]."""
        model = nnx.merge(graphdef, state)

        def body(carry, _):
            token, dec_state = carry
            logits, dec_state = model.decoder_step(token, dec_state, z)
            token = jnp.argmax(jax.nn.log_softmax(logits, axis=-1), axis=-1).astype(jnp.int32)
            return (token, dec_state), token

        start = jnp.full((z.shape[0],), BOS_ID, jnp.int32)
        _, tokens = jax.lax.scan(body, (start, model.initial_state(z)), None, length=max_len)
        return tokens

    return init, step, reorder, greedy


class _Stepper:
    """The backend part: decoder state from z, one step to float64 log-probs, beam reordering. The rows
    are padded to ``padded_rows`` (zero codes, <bos> tokens) and the padding is cut from every result."""

    def __init__(self, model: SentenceVAE):
        graphdef, self.params = nnx.split(model)
        self.dtype = model.to_mean.kernel[...].dtype
        self._init, self._step, self._reorder, self._greedy = _compiled(graphdef)
        self.rows = 0

    def padded_z(self, z: np.ndarray) -> jax.Array:
        self.rows = len(z)
        z = np.asarray(z, self.dtype)
        return jnp.asarray(np.concatenate([z, np.zeros((padded_rows(len(z)) - len(z), z.shape[1]), z.dtype)]))

    def start(self, z: np.ndarray):
        z = self.padded_z(z)
        return self._init(self.params, z), z

    def step(self, tokens: np.ndarray, carry) -> tuple[np.ndarray, object]:
        dec_state, z = carry
        padded = np.full(z.shape[0], BOS_ID, np.int32)
        padded[:self.rows] = tokens
        logp, dec_state = self._step(self.params, jnp.asarray(padded), dec_state, z)
        return np.asarray(logp, np.float64)[:self.rows], (dec_state, z)

    def reorder(self, carry, index: np.ndarray):
        dec_state, z = carry
        index = np.concatenate([np.asarray(index, np.int32), np.arange(self.rows, z.shape[0], dtype=np.int32)])
        return self._reorder(dec_state, z, jnp.asarray(index))

    def greedy_tokens(self, z: np.ndarray, max_len: int) -> np.ndarray:
        """The greedy choice at each of ``max_len`` steps in one compiled loop, <eos> or not: [B, max_len]
        (the same argmax of the same log-probs as ``step``; ``vaecore.decoding.greedy`` cuts at <eos>)."""
        z = self.padded_z(z)
        return np.asarray(self._greedy(self.params, z, max_len)).T[:self.rows]


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

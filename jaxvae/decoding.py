"""Decoding sentences from a ``SentenceVAE`` in JAX; the twin of ``torchvae/decoding.py``.

Every function takes latent codes ``z`` [B, latent] (numpy or array: prior samples, posterior
means) and returns one list of word ids per row, without <bos> and <eos>; a sentence that has not
produced <eos> after ``max_len`` steps is cut there. ``vaecore.data.text_data.ids_to_text`` turns them into
strings. The search is ``vaecore.task.decoding`` (numpy, shared by both backends), so the two backends decode
the same ids from the same weights and z; only the decoder step (one jitted function here) differs.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvae.text_model import SentenceVAE
from vaecore.data.text_data import BOS_ID, EOS_ID
from vaecore.task import decoding as search

MIN_ROWS = 16  # decoders run on a power-of-two number of rows, at least this: few shapes, few compilations


def padded_rows(n: int) -> int:
    """The row count a batch of ``n`` decodes runs on: the next power of two, at least ``MIN_ROWS``, so
    that a run's samples, reconstructions, homotopies and beams share a handful of compiled shapes."""
    return max(MIN_ROWS, 1 << max(n - 1, 0).bit_length())


@functools.cache
def _compiled(graphdef):
    """Jitted (initial state, step, beam reordering, greedy loop) for a model structure, compiled once
    per structure and shape."""

    @functools.partial(jax.jit, static_argnums=2)
    def init(state, z, max_len):
        return nnx.merge(graphdef, state).initial_state(z, max_len)

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
        _, tokens = jax.lax.scan(body, (start, model.initial_state(z, max_len)), None, length=max_len)
        return tokens

    @functools.partial(jax.jit, static_argnums=4)
    def sample(state, z, uniforms, temperature, max_len):
        """Ancestral sampling as one compiled loop: at step t, row b takes the first id whose CDF of
        softmax(log-probs / temperature) exceeds ``uniforms[b, t]`` times the total (the same inverse-CDF
        lookup as ``vaecore.task.decoding.sample``, in float32), <eos> or not: [max_len, B]."""
        model = nnx.merge(graphdef, state)

        def body(carry, u):
            token, dec_state = carry
            logits, dec_state = model.decoder_step(token, dec_state, z)
            scaled = jax.nn.log_softmax(logits, axis=-1) / temperature
            cdf = jnp.cumsum(jnp.exp(scaled - scaled.max(axis=-1, keepdims=True)), axis=-1)
            token = jnp.sum(cdf <= (u * cdf[:, -1])[:, None], axis=-1)  # searchsorted(side="right")
            token = jnp.minimum(token, cdf.shape[-1] - 1).astype(jnp.int32)
            return (token, dec_state), token

        start = jnp.full((z.shape[0],), BOS_ID, jnp.int32)
        _, tokens = jax.lax.scan(body, (start, model.initial_state(z, uniforms.shape[0])), uniforms.T)
        return tokens

    @functools.partial(jax.jit, static_argnums=(3, 4))
    def beam(state, z, rows, k, max_len, length_norm):
        """``vaecore.task.decoding.beam`` as one compiled loop (float32 scores): the same 2k best extensions
        per step (``lax.top_k``: ties towards the lower index, as the stable sort), the same rules for
        finishing and stopping, the same choice among the finished (the first of the best). Rows from
        ``rows`` on are padding, done from the start. -> (ids [B, max_len], lengths [B])."""
        model = nnx.merge(graphdef, state)
        B = z.shape[0]
        zk = jnp.repeat(z, k, axis=0)  # row b*k + j is beam j of sentence b
        slots = 2 * k  # finished hypotheses a row can hold: < k before its last step, at most k more
        rank = jnp.arange(2 * k)

        def finish(fin, b_mask, cand_mask, scores, hists, length):
            """Append the candidates (``cand_mask`` [B, n], in order) of rows ``b_mask`` to the finished."""
            f_scores, f_hist, f_len, count = fin
            add = cand_mask & b_mask[:, None]
            pos = jnp.where(add, count[:, None] + jnp.cumsum(add, axis=1) - 1, slots)  # slot ``slots``: dropped
            bi = jnp.broadcast_to(jnp.arange(B)[:, None], pos.shape)
            f_scores = f_scores.at[bi, pos].set(scores, mode="drop")
            f_hist = f_hist.at[bi, pos].set(hists, mode="drop")
            f_len = f_len.at[bi, pos].set(length, mode="drop")
            return f_scores, f_hist, f_len, count + add.sum(axis=1, dtype=jnp.int32)

        def body(c):
            t, tokens, dec_state, scores, hist, fin, done = c
            logits, dec_state = model.decoder_step(tokens, dec_state, zk)
            V = logits.shape[-1]
            logp = jax.nn.log_softmax(logits, axis=-1).reshape(B, k, V)
            top, index = jax.lax.top_k((scores[:, :, None] + logp).reshape(B, k * V), 2 * k)
            parent, word = index // V, index % V
            eos = word == EOS_ID
            # <eos> among the best k finishes a hypothesis (its words so far, score / (t+1)**norm)
            norm = (t + 1).astype(top.dtype) ** length_norm
            fin = finish(fin, ~done, eos & (rank < k), top / norm,
                         jnp.take_along_axis(hist, parent[:, :, None], axis=1), t)
            # the best k others continue
            keep = jnp.argsort(jnp.where(eos, 2 * k, 0) + rank, axis=1)[:, :k]
            parent, word, top = (jnp.take_along_axis(a, keep, axis=1) for a in (parent, word, top))
            parent = jnp.where(done[:, None], jnp.arange(k), parent)
            word = jnp.where(done[:, None], EOS_ID, word).astype(jnp.int32)
            scores = jnp.where(done[:, None], -jnp.inf, top)
            hist = jnp.take_along_axis(hist, parent[:, :, None], axis=1).at[:, :, t].set(word)
            done = done | (fin[3] >= k)
            # at max_len the live beams of the rows still going finish unterminated
            last = t == max_len - 1
            fin = finish(fin, ~done & last, jnp.ones((B, k), bool), scores / jnp.asarray(max_len, top.dtype)
                         ** length_norm, hist, max_len)
            order = (jnp.arange(B)[:, None] * k + parent).reshape(-1)
            dec_state = jax.tree.map(lambda s: s[:, order], dec_state)
            return t + 1, word.reshape(-1), dec_state, scores, hist, fin, done

        def running(c):
            t, *_, done = c
            return (t < max_len) & ~done.all()

        scores = jnp.full((B, k), -jnp.inf, z.dtype).at[:, 0].set(0.0)
        fin = (jnp.full((B, slots), -jnp.inf, z.dtype), jnp.zeros((B, slots, max_len), jnp.int32),
               jnp.zeros((B, slots), jnp.int32), jnp.zeros((B,), jnp.int32))
        done = jnp.arange(B) >= rows
        c = (jnp.asarray(0, jnp.int32), jnp.full((B * k,), BOS_ID, jnp.int32), model.initial_state(zk, max_len), scores,
             jnp.zeros((B, k, max_len), jnp.int32), fin, done)
        *_, (f_scores, f_hist, f_len, _), _ = jax.lax.while_loop(running, body, c)
        best = jnp.argmax(f_scores, axis=1)  # the first of the best
        return jnp.take_along_axis(f_hist, best[:, None, None], axis=1)[:, 0], jnp.take_along_axis(
            f_len, best[:, None], axis=1)[:, 0]

    return init, step, reorder, greedy, sample, beam


class _Stepper:
    """The backend part: decoder state from z, one step to float64 log-probs, beam reordering. The rows
    are padded to ``padded_rows`` (zero codes, <bos> tokens) and the padding is cut from every result."""

    def __init__(self, model: SentenceVAE):
        graphdef, self.params = nnx.split(model)
        self.dtype = model.to_mean.kernel[...].dtype
        self._init, self._step, self._reorder, self._greedy, self._sample, self._beam = _compiled(graphdef)
        self.vocab_size = model.config.vocab_size
        self.rows = 0

    def padded_z(self, z: np.ndarray) -> jax.Array:
        self.rows = len(z)
        z = np.asarray(z, self.dtype)
        return jnp.asarray(np.concatenate([z, np.zeros((padded_rows(len(z)) - len(z), z.shape[1]), z.dtype)]))

    def start(self, z: np.ndarray, max_len: int):
        z = self.padded_z(z)
        return self._init(self.params, z, max_len), z

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
        (the same argmax of the same log-probs as ``step``; ``vaecore.task.decoding.greedy`` cuts at <eos>)."""
        z = self.padded_z(z)
        return np.asarray(self._greedy(self.params, z, max_len)).T[:self.rows]

    def sample_tokens(self, z: np.ndarray, uniforms: np.ndarray, temperature: float) -> np.ndarray:
        """Every step's sampled id in one compiled loop, <eos> or not: [B, max_len] (``uniforms`` [B,
        max_len]: the inverse-CDF draws of ``vaecore.task.decoding.sample``)."""
        z = self.padded_z(z)
        u = np.zeros((z.shape[0], uniforms.shape[1]), self.dtype)
        u[:self.rows] = uniforms
        tokens = self._sample(self.params, z, jnp.asarray(u), jnp.asarray(temperature, self.dtype), u.shape[1])
        return np.asarray(tokens).T[:self.rows]

    def beam_ids(self, z: np.ndarray, beam_width: int, max_len: int, length_norm: float) -> list[list[int]]:
        """``vaecore.task.decoding.beam`` in one compiled loop: the best finished hypothesis of each row."""
        z = self.padded_z(z)
        ids, lengths = self._beam(self.params, z, self.rows, beam_width, max_len,
                                  jnp.asarray(length_norm, self.dtype))
        ids, lengths = np.asarray(ids), np.asarray(lengths)
        return [[int(w) for w in ids[b, :lengths[b]]] for b in range(self.rows)]


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

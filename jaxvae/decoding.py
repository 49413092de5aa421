"""Decoding sentences from a ``SentenceVAE`` in JAX; the twin of ``torchvae/decoding.py``.

Every function takes latent codes ``z`` [B, latent] (numpy or array: prior samples, posterior
means) and returns one list of word ids per row, without <bos> and <eos>; a sentence that has not
produced <eos> after ``max_len`` steps is cut there. ``vaecore.text_data.ids_to_text`` turns them into
strings. The search logic is numpy on float64 log-probabilities and is the same code in both
backends (ties break towards the lower id, then the lower beam), so the two backends decode the
same ids from the same weights and z; only the decoder step (one jitted function here) differs.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxvae.text_model import SentenceVAE
from vaecore.text_data import BOS_ID, EOS_ID

METHODS = ("greedy", "sample", "beam")


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


# ----------------------------------------------------- search (numpy; identical in both backends)


def _check_z(z) -> np.ndarray:
    z = np.asarray(z)
    if z.ndim != 2:
        raise ValueError(f"z must be [batch, latent], got shape {z.shape}")
    return z


def _greedy(stepper: _Stepper, z: np.ndarray, max_len: int, pick: Callable[[np.ndarray, int], np.ndarray]):
    B = z.shape[0]
    out: list[list[int]] = [[] for _ in range(B)]
    done = np.zeros(B, bool)
    tokens = np.full(B, BOS_ID, np.int64)
    carry = stepper.start(z)
    for t in range(max_len):
        logp, carry = stepper.step(tokens, carry)
        tokens = pick(logp, t)
        for b in np.flatnonzero(~done):
            if tokens[b] == EOS_ID:
                done[b] = True
            else:
                out[b].append(int(tokens[b]))
        if done.all():
            break
    return out


def greedy_decode(model: SentenceVAE, z, *, max_len: int = 50) -> list[list[int]]:
    """The most likely next word at every step. z: [B, latent] -> B id lists."""
    return _greedy(_Stepper(model), _check_z(z), max_len, lambda logp, t: np.argmax(logp, axis=1))


def sample_decode(model: SentenceVAE, z, *, temperature: float = 1.0, max_len: int = 50, seed: int = 0,
                  uniforms: np.ndarray | None = None) -> list[list[int]]:
    """Ancestral sampling from softmax(logits / temperature). z: [B, latent] -> B id lists.

    The draws are inverse-CDF lookups of ``uniforms`` [B, max_len] in [0, 1) (default: numpy's
    ``default_rng(seed)``), so both backends sample the same sentences for the same seed."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = _check_z(z)
    if uniforms is None:
        uniforms = np.random.default_rng(seed).random((z.shape[0], max_len))
    uniforms = np.asarray(uniforms, np.float64)
    if uniforms.shape != (z.shape[0], max_len):
        raise ValueError(f"uniforms must be [batch, max_len] = {(z.shape[0], max_len)}, got {uniforms.shape}")

    def pick(logp, t):
        scaled = logp / temperature
        p = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        idx = [np.searchsorted(cdf[b], uniforms[b, t] * cdf[b, -1], side="right") for b in range(len(p))]
        return np.minimum(np.array(idx), p.shape[1] - 1)

    return _greedy(_Stepper(model), z, max_len, pick)


def beam_search(model: SentenceVAE, z, *, beam_width: int = 5, max_len: int = 50,
                length_norm: float = 0.0) -> list[list[int]]:
    """Beam search per row of z: [B, latent] -> B id lists (the best finished hypothesis).

    A hypothesis' score is its log-probability divided by (generated tokens incl. <eos>) **
    ``length_norm`` (0: none; 1: per-token average). Each step looks at the 2k best extensions:
    <eos> among the best k finishes a hypothesis, the best k others continue; a row stops with k
    finished hypotheses, and at ``max_len`` the live beams finish unterminated. k=1 is greedy."""
    z = _check_z(z)
    stepper = _Stepper(model)
    B, k = z.shape[0], beam_width
    carry = stepper.start(np.repeat(z, k, axis=0))  # row b*k + j is beam j of sentence b
    scores = np.full((B, k), -np.inf)
    scores[:, 0] = 0.0
    hist = np.zeros((B, k, 0), np.int64)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = np.zeros(B, bool)
    tokens = np.full(B * k, BOS_ID, np.int64)
    for t in range(max_len):
        logp, carry = stepper.step(tokens, carry)
        V = logp.shape[1]
        if not 1 <= k <= V // 2:
            raise ValueError(f"beam_width must be in [1, vocab/2 = {V // 2}], got {k}")
        flat = (scores[:, :, None] + logp.reshape(B, k, V)).reshape(B, k * V)
        parents = np.tile(np.arange(k), (B, 1))
        words = np.full((B, k), EOS_ID, np.int64)
        new_scores = np.full((B, k), -np.inf)
        for b in np.flatnonzero(~done):
            alive = 0
            for rank, i in enumerate(np.argsort(-flat[b], kind="stable")[: 2 * k]):
                parent, word = divmod(int(i), V)
                if word == EOS_ID:
                    if rank < k:
                        finished[b].append((flat[b, i] / (t + 1) ** length_norm, hist[b, parent].tolist()))
                    continue
                parents[b, alive], words[b, alive], new_scores[b, alive] = parent, word, flat[b, i]
                alive += 1
                if alive == k:
                    break
            if len(finished[b]) >= k:
                done[b] = True
        hist = np.concatenate([np.take_along_axis(hist, parents[:, :, None], axis=1), words[:, :, None]], axis=2)
        scores = new_scores
        if t == max_len - 1:
            for b in np.flatnonzero(~done):
                finished[b] += [(scores[b, j] / max_len**length_norm, hist[b, j].tolist()) for j in range(k)]
        if done.all():
            break
        carry = stepper.reorder(carry, (np.arange(B)[:, None] * k + parents).reshape(-1))
        tokens = words.reshape(-1)
    # the first of the best (stable) among the finished hypotheses
    return [max(f, key=lambda h: h[0])[1] for f in finished]


def decode(model: SentenceVAE, z, *, method: str = "greedy", **kwargs) -> list[list[int]]:
    """``greedy_decode``, ``sample_decode`` or ``beam_search`` by name."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    return {"greedy": greedy_decode, "sample": sample_decode, "beam": beam_search}[method](model, z, **kwargs)


# ------------------------------------------------------------------- from sentences, via q(z|x)


def posterior_mean(model: SentenceVAE, tokens, lengths) -> np.ndarray:
    """The mean of q(z|x) of a batch (tokens [B, T], lengths [B]) -> [B, latent] numpy."""
    mean, _ = _encode(model, jnp.asarray(tokens), jnp.asarray(lengths))
    return np.asarray(mean)


@nnx.jit
def _encode(model: SentenceVAE, tokens: jax.Array, lengths: jax.Array):
    return model.encode(tokens, lengths)


def reconstruct(model: SentenceVAE, tokens, lengths, *, method: str = "greedy", **kwargs) -> list[list[int]]:
    """Encode each sentence, take the posterior mean, decode it: B id lists."""
    return decode(model, posterior_mean(model, tokens, lengths), method=method, **kwargs)


def interpolate(model: SentenceVAE, tokens, lengths, *, steps: int = 5, max_len: int = 50) -> list[list[int]]:
    """Greedy decodings of ``steps`` points on the line between the posterior means of the two
    sentences of the batch (tokens [2, T], lengths [2]), from the first to the second."""
    if np.shape(tokens)[0] != 2 or steps < 2:
        raise ValueError(f"interpolate needs a batch of 2 sentences and steps >= 2, got {np.shape(tokens)[0]}, {steps}")
    m = posterior_mean(model, tokens, lengths)
    a = np.linspace(0.0, 1.0, steps)[:, None]
    return greedy_decode(model, (1.0 - a) * m[0] + a * m[1], max_len=max_len)

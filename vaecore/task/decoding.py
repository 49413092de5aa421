"""The search half of sentence decoding, shared by both backends (numpy, float64 log-probs).

A backend supplies a *stepper*: ``start(z, max_len) -> carry`` (decoder state from z [B, latent] for
at most ``max_len`` steps: a Transformer's key/value cache is that long),
``step(tokens [B], carry) -> (log-probs [B, vocab] float64 numpy, carry)`` and
``reorder(carry, index) -> carry`` (beam bookkeeping). The JAX stepper also runs each search as one
compiled loop, without a dispatch per token: ``greedy_tokens(z, max_len)`` and ``sample_tokens(z,
uniforms, temperature)`` give every step's choice, [B, max_len], <eos> or not (the search cuts each row at
its first <eos>), and ``beam_ids(z, k, max_len, length_norm)`` the chosen hypotheses; they follow the
rules of this numpy code exactly, in float32 instead of float64. Because the search is defined once here
(ties break towards the lower id, then the lower beam), the two backends decode the same ids from the
same weights and z. Every function returns one list of word ids per row of z, without
<bos> and <eos>; a sentence with no <eos> after ``max_len`` steps is cut there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from vaecore.data.text_data import BOS_ID, EOS_ID

METHODS = ("greedy", "sample", "beam")


class Stepper(Protocol):
    def start(self, z: np.ndarray, max_len: int) -> Any: ...
    def step(self, tokens: np.ndarray, carry: Any) -> tuple[np.ndarray, Any]: ...
    def reorder(self, carry: Any, index: np.ndarray) -> Any: ...


def _step_by_step(stepper: Stepper, z: np.ndarray, max_len: int, pick: Callable[[np.ndarray, int], np.ndarray]):
    B = z.shape[0]
    out: list[list[int]] = [[] for _ in range(B)]
    done = np.zeros(B, bool)
    tokens = np.full(B, BOS_ID, np.int64)
    carry = stepper.start(z, max_len)
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


def cut_at_eos(ids: np.ndarray) -> list[int]:
    """A row of decoded ids up to (not including) its first <eos>, all of them without one."""
    ends = np.flatnonzero(ids == EOS_ID)
    return [int(t) for t in ids[:ends[0] if len(ends) else len(ids)]]


def greedy(stepper: Stepper, z: np.ndarray, *, max_len: int = 50) -> list[list[int]]:
    """The most likely next word at every step. z: [B, latent] -> B id lists."""
    if hasattr(stepper, "greedy_tokens"):
        return [cut_at_eos(row) for row in stepper.greedy_tokens(z, max_len)]
    return _step_by_step(stepper, z, max_len, lambda logp, t: np.argmax(logp, axis=1))


def sample(stepper: Stepper, z: np.ndarray, *, temperature: float = 1.0, max_len: int = 50, seed: int = 0,
                  uniforms: np.ndarray | None = None) -> list[list[int]]:
    """Ancestral sampling from softmax(logits / temperature). z: [B, latent] -> B id lists.

    The draws are inverse-CDF lookups of ``uniforms`` [B, max_len] in [0, 1) (default: numpy's
    ``default_rng(seed)``), so both backends sample the same sentences for the same seed."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if uniforms is None:
        uniforms = np.random.default_rng(seed).random((z.shape[0], max_len))
    uniforms = np.asarray(uniforms, np.float64)
    if uniforms.shape != (z.shape[0], max_len):
        raise ValueError(f"uniforms must be [batch, max_len] = {(z.shape[0], max_len)}, got {uniforms.shape}")

    if hasattr(stepper, "sample_tokens"):
        return [cut_at_eos(row) for row in stepper.sample_tokens(z, uniforms, temperature)]

    def pick(logp, t):
        scaled = logp / temperature
        p = np.exp(scaled - scaled.max(axis=1, keepdims=True))
        cdf = np.cumsum(p, axis=1)
        idx = [np.searchsorted(cdf[b], uniforms[b, t] * cdf[b, -1], side="right") for b in range(len(p))]
        return np.minimum(np.array(idx), p.shape[1] - 1)

    return _step_by_step(stepper, z, max_len, pick)


def check_beam_width(k: int, vocab_size: int) -> None:
    if not 1 <= k <= vocab_size // 2:
        raise ValueError(f"beam_width must be in [1, vocab/2 = {vocab_size // 2}], got {k}")


def best_first(scores: np.ndarray, n: int) -> np.ndarray:
    """The indices of the ``n`` largest of ``scores`` [m], largest first, ties towards the lower index:
    ``np.argsort(-scores, kind="stable")[:n]`` in O(m) (a partition, then a sort of the few that
    reach the n-th largest value)."""
    if n >= len(scores):
        return np.argsort(-scores, kind="stable")[:n]
    nth = -np.partition(-scores, n - 1)[n - 1]  # the n-th largest value
    reach = np.flatnonzero(scores >= nth)  # ascending: the stable sort keeps ties in index order
    return reach[np.argsort(-scores[reach], kind="stable")][:n]


def beam(stepper: Stepper, z: np.ndarray, *, beam_width: int = 5, max_len: int = 50,
                length_norm: float = 0.0) -> list[list[int]]:
    """Beam search per row of z: [B, latent] -> B id lists (the best finished hypothesis).

    A hypothesis' score is its log-probability divided by (generated tokens incl. <eos>) **
    ``length_norm`` (0: none; 1: per-token average). Each step looks at the 2k best extensions:
    <eos> among the best k finishes a hypothesis, the best k others continue; a row stops with k
    finished hypotheses, and at ``max_len`` the live beams finish unterminated. k=1 is greedy."""
    B, k = z.shape[0], beam_width
    if hasattr(stepper, "beam_ids"):
        check_beam_width(k, stepper.vocab_size)
        return stepper.beam_ids(z, k, max_len, length_norm)
    carry = stepper.start(np.repeat(z, k, axis=0), max_len)  # row b*k + j is beam j of sentence b
    scores = np.full((B, k), -np.inf)
    scores[:, 0] = 0.0
    hist = np.zeros((B, k, 0), np.int64)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(B)]
    done = np.zeros(B, bool)
    tokens = np.full(B * k, BOS_ID, np.int64)
    for t in range(max_len):
        logp, carry = stepper.step(tokens, carry)
        V = logp.shape[1]
        check_beam_width(k, V)
        flat = (scores[:, :, None] + logp.reshape(B, k, V)).reshape(B, k * V)
        parents = np.tile(np.arange(k), (B, 1))
        words = np.full((B, k), EOS_ID, np.int64)
        new_scores = np.full((B, k), -np.inf)
        for b in np.flatnonzero(~done):
            alive = 0
            for rank, i in enumerate(best_first(flat[b], 2 * k)):
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


def interpolation_path(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` evenly spaced points on the segment from a to b (both [latent]): [steps, latent]."""
    if steps < 2:
        raise ValueError(f"interpolation needs steps >= 2, got {steps}")
    w = np.linspace(0.0, 1.0, steps)[:, None]
    return (1.0 - w) * a + w * b


class Decoder:
    """The decoding functions of one backend, from its two numeric parts: ``stepper(model)`` (a
    ``Stepper``) and ``posterior_mean(model, tokens, lengths) -> [B, latent]`` numpy; ``as_numpy``
    turns the backend's arrays into numpy. Every function takes latent codes ``z`` [B, latent]
    (numpy or the backend's arrays) and returns one list of word ids per row, without <bos> and
    <eos>; a sentence without <eos> after ``max_len`` steps is cut there."""

    def __init__(self, stepper: Callable, posterior_mean: Callable, as_numpy: Callable = np.asarray):
        self.stepper, self.posterior_mean, self.as_numpy = stepper, posterior_mean, as_numpy

    def check_z(self, z) -> np.ndarray:
        z = self.as_numpy(z)
        if z.ndim != 2:
            raise ValueError(f"z must be [batch, latent], got shape {z.shape}")
        return z

    def greedy_decode(self, model, z, *, max_len: int = 50) -> list[list[int]]:
        """The most likely next word at every step. z: [B, latent] -> B id lists."""
        return greedy(self.stepper(model), self.check_z(z), max_len=max_len)


    def sample_decode(self, model, z, *, temperature: float = 1.0, max_len: int = 50, seed: int = 0,
                      uniforms: np.ndarray | None = None) -> list[list[int]]:
        """Ancestral sampling from softmax(logits / temperature); see ``vaecore.task.decoding.sample``."""
        return sample(self.stepper(model), self.check_z(z), temperature=temperature, max_len=max_len, seed=seed,
                             uniforms=uniforms)


    def beam_search(self, model, z, *, beam_width: int = 5, max_len: int = 50,
                    length_norm: float = 0.0) -> list[list[int]]:
        """Beam search per row of z; see ``vaecore.task.decoding.beam``."""
        return beam(self.stepper(model), self.check_z(z), beam_width=beam_width, max_len=max_len,
                           length_norm=length_norm)


    def decode(self, model, z, *, method: str = "greedy", **kwargs) -> list[list[int]]:
        """``greedy_decode``, ``sample_decode`` or ``beam_search`` by name."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        return {"greedy": self.greedy_decode, "sample": self.sample_decode, "beam": self.beam_search}[method](
            model, z, **kwargs)

    def reconstruct(self, model, tokens, lengths, *, method: str = "greedy", **kwargs) -> list[list[int]]:
        """Encode each sentence, take the posterior mean, decode it: B id lists."""
        return self.decode(model, self.posterior_mean(model, tokens, lengths), method=method, **kwargs)


    def interpolate(self, model, tokens, lengths, *, steps: int = 5, max_len: int = 50, method: str = "greedy",
                    **kwargs) -> list[list[int]]:
        """Decodings (``method`` as in ``decode``: greedy by default, or beam / sample with their
        options) of ``steps`` points on the line between the posterior means of the two sentences of
        the batch (tokens [2, T], lengths [2]), from the first to the second."""
        if np.shape(tokens)[0] != 2:
            raise ValueError(f"interpolate needs a batch of 2 sentences, got {np.shape(tokens)[0]}")
        m = self.posterior_mean(model, tokens, lengths)
        return self.decode(model, interpolation_path(m[0], m[1], steps), method=method, max_len=max_len, **kwargs)

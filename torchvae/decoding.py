"""Decoding sentences from a ``SentenceVAE`` in PyTorch; the twin of ``jaxvae/decoding.py``.

Every function takes latent codes ``z`` [B, latent] (numpy or tensor: prior samples, posterior
means) and returns one list of word ids per row, without <bos> and <eos>; a sentence that has not
produced <eos> after ``max_len`` steps is cut there. ``vaecore.text_data.ids_to_text`` turns them into
strings. The search is ``vaecore.decoding`` (numpy, shared by both backends), so the two backends decode
the same ids from the same weights and z; only the decoder step differs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from torchvae.text_model import SentenceVAE
from vaecore import decoding as search

METHODS = search.METHODS


class _Stepper:
    """The backend part: decoder state from z, one step to float64 log-probs, beam reordering."""

    def __init__(self, model: SentenceVAE):
        self.model = model
        self.param = model.to_mean.weight

    @torch.no_grad()
    def start(self, z: np.ndarray):
        z = torch.as_tensor(np.asarray(z), dtype=self.param.dtype, device=self.param.device)
        return self.model.initial_state(z), z

    @torch.no_grad()
    def step(self, tokens: np.ndarray, carry) -> tuple[np.ndarray, object]:
        dec_state, z = carry
        token = torch.as_tensor(tokens, device=self.param.device)
        logits, dec_state = self.model.decoder_step(token, dec_state, z)
        return F.log_softmax(logits, dim=-1).double().cpu().numpy(), (dec_state, z)

    def reorder(self, carry, index: np.ndarray):
        dec_state, z = carry
        index = torch.as_tensor(index, device=self.param.device)
        if isinstance(dec_state, tuple):
            return tuple(s[:, index] for s in dec_state), z[index]
        return dec_state[:, index], z[index]


def _check_z(z) -> np.ndarray:
    z = z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
    if z.ndim != 2:
        raise ValueError(f"z must be [batch, latent], got shape {z.shape}")
    return z


def greedy_decode(model: SentenceVAE, z, *, max_len: int = 50) -> list[list[int]]:
    """The most likely next word at every step. z: [B, latent] -> B id lists."""
    return search.greedy(_Stepper(model), _check_z(z), max_len=max_len)


def sample_decode(model: SentenceVAE, z, *, temperature: float = 1.0, max_len: int = 50, seed: int = 0,
                  uniforms: np.ndarray | None = None) -> list[list[int]]:
    """Ancestral sampling from softmax(logits / temperature); see ``vaecore.decoding.sample``."""
    return search.sample(_Stepper(model), _check_z(z), temperature=temperature, max_len=max_len, seed=seed,
                         uniforms=uniforms)


def beam_search(model: SentenceVAE, z, *, beam_width: int = 5, max_len: int = 50,
                length_norm: float = 0.0) -> list[list[int]]:
    """Beam search per row of z; see ``vaecore.decoding.beam``."""
    return search.beam(_Stepper(model), _check_z(z), beam_width=beam_width, max_len=max_len,
                       length_norm=length_norm)


def decode(model: SentenceVAE, z, *, method: str = "greedy", **kwargs) -> list[list[int]]:
    """``greedy_decode``, ``sample_decode`` or ``beam_search`` by name."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    return {"greedy": greedy_decode, "sample": sample_decode, "beam": beam_search}[method](model, z, **kwargs)


# ------------------------------------------------------------------- from sentences, via q(z|x)


def posterior_mean(model: SentenceVAE, tokens, lengths) -> np.ndarray:
    """The mean of q(z|x) of a batch (tokens [B, T], lengths [B]) -> [B, latent] numpy."""
    device = model.to_mean.weight.device
    with torch.no_grad():
        mean, _ = model.encode(torch.as_tensor(np.asarray(tokens), device=device),
                               torch.as_tensor(np.asarray(lengths), device=device))
    return mean.cpu().numpy()


def reconstruct(model: SentenceVAE, tokens, lengths, *, method: str = "greedy", **kwargs) -> list[list[int]]:
    """Encode each sentence, take the posterior mean, decode it: B id lists."""
    return decode(model, posterior_mean(model, tokens, lengths), method=method, **kwargs)


def interpolate(model: SentenceVAE, tokens, lengths, *, steps: int = 5, max_len: int = 50, method: str = "greedy",
                **kwargs) -> list[list[int]]:
    """Decodings (``method`` as in ``decode``: greedy by default, or beam / sample with their
    options) of ``steps`` points on the line between the posterior means of the two sentences of
    the batch (tokens [2, T], lengths [2]), from the first to the second."""
    if np.shape(tokens)[0] != 2:
        raise ValueError(f"interpolate needs a batch of 2 sentences, got {np.shape(tokens)[0]}")
    m = posterior_mean(model, tokens, lengths)
    return decode(model, search.interpolation_path(m[0], m[1], steps), method=method, max_len=max_len, **kwargs)

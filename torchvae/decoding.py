"""Decoding sentences from a ``SentenceVAE`` in PyTorch; the twin of ``jaxvae/decoding.py``.

Every function takes latent codes ``z`` [B, latent] (numpy or tensor: prior samples, posterior
means) and returns one list of word ids per row, without <bos> and <eos>; a sentence that has not
produced <eos> after ``max_len`` steps is cut there. ``vaecore.data.text_data.ids_to_text`` turns them into
strings. The search is ``vaecore.task.decoding`` (numpy, shared by both backends), so the two backends decode
the same ids from the same weights and z; only the decoder step differs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from torchvae.text_model import SentenceVAE
from vaecore.task import decoding as search


class _Stepper:
    """The backend part: decoder state from z, one step to float64 log-probs, beam reordering."""

    def __init__(self, model: SentenceVAE):
        self.model = model
        self.param = model.to_mean.weight

    @torch.no_grad()
    def start(self, z: np.ndarray, max_len: int):
        z = torch.as_tensor(np.asarray(z), dtype=self.param.dtype, device=self.param.device)
        return self.model.initial_state(z, max_len), z

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


def posterior_mean(model: SentenceVAE, tokens, lengths) -> np.ndarray:
    """The mean of q(z|x) of a batch (tokens [B, T], lengths [B]) -> [B, latent] numpy."""
    device = model.to_mean.weight.device
    with torch.no_grad():
        mean, _ = model.encode(torch.as_tensor(np.asarray(tokens), device=device),
                               torch.as_tensor(np.asarray(lengths), device=device))
    return mean.cpu().numpy()


def _as_numpy(z) -> np.ndarray:
    return z.detach().cpu().numpy() if isinstance(z, torch.Tensor) else np.asarray(z)


_decoder = search.Decoder(_Stepper, posterior_mean, _as_numpy)
greedy_decode, sample_decode, beam_search = _decoder.greedy_decode, _decoder.sample_decode, _decoder.beam_search
decode, reconstruct, interpolate = _decoder.decode, _decoder.reconstruct, _decoder.interpolate

"""Every random stream of a run, in one place: seeds derived from (seed, step, stream), so every
session of a run draws the same numbers, and the shared numpy noise of evaluation and outputs.

Per-step streams (``derived_seed(seed, step, STREAM)`` in torch; ``fold_in`` then ``split`` in
JAX): ``EPS`` the reparameterisation noise, ``PRIOR`` the MMD's prior samples, ``WORD_MASK`` word
dropout, ``DROPOUT`` the dropout masks. Outside the steps: ``eval_noise`` (numpy, shared by the
backends), ``INNER`` (an inner encoder update of aggressive training:
``(step, INNER, inner, stream)``), ``DECODER_REINIT`` (the decoder re-initialised after
pretraining), ``AGGRESSIVE_BATCH`` (the random batches of the inner updates), and ``OUTPUTS`` (the
end-of-run samples and the test examples shown).
"""

from __future__ import annotations

import numpy as np

EPS, PRIOR, WORD_MASK, DROPOUT = 0, 1, 3, 4
INNER = 5
DECODER_REINIT = 2**41
AGGRESSIVE_BATCH = 2**42
OUTPUTS = 2**43
# End-of-run outputs: the prior samples, the test examples reconstructed, the interpolation pairs.
SAMPLES, RECONSTRUCTED, INTERPOLATED = 7, 8, 9


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (for torch.Generator.manual_seed)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def eval_noise(seed: int, index: int, batch: int, latent: int, stream: int = EPS) -> np.ndarray:
    """Standard-normal draws [batch, latent] for evaluation batch ``index``: ``EPS`` the posterior
    samples, ``PRIOR`` the MMD's prior samples. The same numbers in both backends, so their
    evaluations of the same weights agree."""
    key = [seed, index] if stream == EPS else [seed, index, stream]
    return np.random.default_rng(key).standard_normal((batch, latent))


def output_rng(seed: int, which: int) -> np.random.Generator:
    """The generator of one end-of-run output (``SAMPLES``, ``RECONSTRUCTED``, ``INTERPOLATED``);
    ``OUTPUTS`` keeps it apart from the evaluation noise of batch ``which``."""
    return np.random.default_rng([seed, OUTPUTS, which])

"""Every random stream of a run, in one place: seeds derived from (seed, step, stream), so every
session of a run draws the same numbers, and the shared numpy noise of evaluation and outputs.

Per-step streams (``derived_seed(seed, step, STREAM)`` in torch; ``fold_in`` then ``split`` in
JAX): ``EPS`` the reparameterisation noise, ``PRIOR`` the MMD's prior samples, ``WORD_MASK`` word
dropout, ``DROPOUT`` the dropout masks. Outside the steps: ``EVAL`` (evaluation batch ``i``'s
noise in the engines' own generators), ``INNER`` (an inner encoder update of aggressive training:
``(step, INNER, inner, stream)``), ``DECODER_REINIT`` (the decoder re-initialised after
pretraining), ``AGGRESSIVE_BATCH`` (the random batches of the inner updates), and ``OUTPUTS`` (the
end-of-run samples and the test examples shown).
"""

from __future__ import annotations

import numpy as np

EPS, PRIOR, WORD_MASK, DROPOUT = 0, 1, 3, 4
INNER = 5
EVAL = 2**40
DECODER_REINIT = 2**41
AGGRESSIVE_BATCH = 2**42
# End-of-run outputs: the prior samples, the test examples reconstructed, the interpolation pairs.
SAMPLES, RECONSTRUCTED, INTERPOLATED = 7, 8, 9


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (for torch.Generator.manual_seed)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def eval_noise(seed: int, index: int, batch: int, latent: int) -> np.ndarray:
    """Standard-normal eps [batch, latent] for evaluation batch ``index``: the same numbers in both
    backends, so their evaluations of the same weights agree."""
    return np.random.default_rng([seed, index]).standard_normal((batch, latent))


def output_rng(seed: int, which: int) -> np.random.Generator:
    """The generator of one end-of-run output (``SAMPLES``, ``RECONSTRUCTED``, ``INTERPOLATED``)."""
    return np.random.default_rng([seed, which])

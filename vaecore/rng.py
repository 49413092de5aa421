"""Seeds derived from (seed, step, stream): the same numbers in every session of a run."""

from __future__ import annotations

import numpy as np

# Streams of per-step randomness.
EPS, PRIOR = 0, 1
# Marks an inner encoder update of aggressive training: its noise is (step, INNER, inner index, stream).
INNER = 5
# The seed of the decoder re-initialised after pretraining: (seed, DECODER_REINIT).
DECODER_REINIT = 2**41
# The random training batches of aggressive training's inner updates: (seed, AGGRESSIVE_BATCH, step, inner).
AGGRESSIVE_BATCH = 2**42
# Used in place of the step for evaluation noise (evaluation batch index follows it).
EVAL = 2**40


def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (for torch.Generator.manual_seed)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> np.uint64(1))

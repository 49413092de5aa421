"""The jax backend: the twin of ``torchvae``, module for module.

Its public surface: ``engine(task)``, the training engine of a task (``vaecore.driver.Engine``);
``evaluation.load_model`` / ``evaluation.evaluate_split`` (what ``evaluate.py`` uses);
``decoding`` (greedy, beam, sampled decodings of the sentence VAE); ``params.export_params`` /
``params.import_params`` (the canonical weights the parity tests move between backends). The
modules are imported when used, so ``import jaxvae`` alone costs nothing.
"""

from __future__ import annotations

import importlib

ENGINES = {"mnist": ("jaxvae.train", "JaxEngine"), "text": ("jaxvae.text_train", "JaxTextEngine")}


def engine(task: str):
    """The engine class of ``task`` ("mnist" or "text")."""
    module, name = ENGINES[task]
    return getattr(importlib.import_module(module), name)

"""Where the torch engines run: ``TrainConfig.device`` ("auto", "cpu", "cuda" or "cuda:N") to a
``torch.device``. "auto" takes the GPU when torch sees one. Random draws of the engines are made on
the CPU from seeded generators and then moved, so a run draws the same noise on either device."""

from __future__ import annotations

import torch

from vaecore.settings.config import ConfigError


def resolve(name: str) -> torch.device:
    """The ``torch.device`` for a ``TrainConfig.device`` value; a CUDA device that torch cannot use
    raises ConfigError (one line: what is wrong and what to pass instead)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: this torch ({torch.__version__}) sees no CUDA GPU; "
                              f"use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered from 0")
    return device

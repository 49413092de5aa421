"""Canonical parameters for torch models.

The canonical format is framework-neutral: ``dict[str, np.ndarray]`` keyed by the torch
``state_dict`` names, with torch's layouts (dense weight ``(out, in)``, conv weight
``(out, in, kh, kw)``, transposed-conv weight ``(in, out, kh, kw)``, RNN gates in torch order).
The JAX twin (``jaxvae/params.py``) converts to and from the same dict, so a round trip
canonical -> backend -> canonical is exact.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _entries(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (the BN-VAE's running averages) by state_dict name."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


def export_params(model: nn.Module) -> dict[str, np.ndarray]:
    """Every parameter and buffer of ``model`` as a numpy array (a copy), keyed by its state_dict name."""
    return {name: p.detach().cpu().numpy().copy() for name, p in _entries(model).items()}


def import_params(model: nn.Module, params: dict[str, np.ndarray]) -> None:
    """Load canonical ``params`` into ``model`` in place, keeping each parameter's dtype.

    Raises KeyError on a missing or unexpected key and ValueError on a wrong shape, naming them.
    """
    own = _entries(model)
    missing = sorted(set(own) - set(params))
    unexpected = sorted(set(params) - set(own))
    if missing or unexpected:
        raise KeyError(f"canonical params do not match the model: missing {missing}, unexpected {unexpected}")
    for name, p in own.items():
        value = np.asarray(params[name])
        if tuple(value.shape) != tuple(p.shape):
            raise ValueError(f"parameter {name!r}: expected shape {tuple(p.shape)}, got {tuple(value.shape)}")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(torch.as_tensor(np.asarray(params[name]), dtype=p.dtype))

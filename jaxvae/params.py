"""Canonical parameters for Flax NNX models.

The canonical format is ``dict[str, np.ndarray]`` with torch's names and layouts (see
``torchvae/params.py``). JAX modules mirror the torch attribute names, so conversion is a rename
plus, for Flax's own layers, a transpose:

- ``nnx.Linear.kernel`` ``(in, out)``           <-> ``weight`` ``(out, in)``
- ``nnx.Conv.kernel``   ``(kh, kw, in, out)``   <-> ``weight`` ``(out, in, kh, kw)``
- ``nnx.Embed.embedding`` ``(vocab, features)`` <-> ``weight`` (same layout)
- ``nnx.LayerNorm.scale`` ``(features,)``        <-> ``weight``

Parameters of the project's own modules (RNN cells, transposed convolutions) are stored in
torch's layout already and pass through unchanged. Transposes are exact, so the round trip is too.
"""

from __future__ import annotations

from collections.abc import Iterator

import jax.numpy as jnp
import numpy as np
from flax import nnx

# (module type, attribute) -> (canonical attribute, to_canonical, from_canonical)
_RULES = {
    (nnx.Linear, "kernel"): ("weight", lambda a: a.T, lambda a: a.T),
    (nnx.Conv, "kernel"): ("weight", lambda a: a.transpose(3, 2, 0, 1), lambda a: a.transpose(2, 3, 1, 0)),
    (nnx.Embed, "embedding"): ("weight", lambda a: a, lambda a: a),
    (nnx.LayerNorm, "scale"): ("weight", lambda a: a, lambda a: a),
}


def _rule(module: nnx.Module, attr: str):
    for (kind, name), rule in _RULES.items():
        if isinstance(module, kind) and attr == name:
            return rule
    return (attr, lambda a: a, lambda a: a)


def _iter_params(model: nnx.Module) -> Iterator[tuple[str, nnx.Module, str, nnx.Param]]:
    """Yield (canonical name, owning module, attribute, variable) for every nnx.Param and
    nnx.BatchStat (the BN-VAE's running averages, torch's buffers)."""
    for path, node in nnx.iter_graph(model):
        if not isinstance(node, nnx.Module):
            continue
        for attr, value in vars(node).items():
            if isinstance(value, nnx.Param | nnx.BatchStat):
                canon_attr = _rule(node, attr)[0]
                name = ".".join([str(p) for p in path] + [canon_attr])
                yield name, node, attr, value


def export_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """Every parameter of ``model`` as a numpy array in the canonical (torch) naming and layout."""
    out = {}
    for name, module, attr, var in _iter_params(model):
        out[name] = np.array(_rule(module, attr)[1](np.asarray(var[...])))
    return out


def import_params(model: nnx.Module, params: dict[str, np.ndarray]) -> None:
    """Load canonical ``params`` into ``model`` in place, keeping each parameter's dtype.

    Raises KeyError on a missing or unexpected key and ValueError on a wrong shape, naming them.
    """
    entries = list(_iter_params(model))
    own = {name for name, *_ in entries}
    missing = sorted(own - set(params))
    unexpected = sorted(set(params) - own)
    if missing or unexpected:
        raise KeyError(f"canonical params do not match the model: missing {missing}, unexpected {unexpected}")
    converted = []
    for name, module, attr, var in entries:
        value = np.asarray(_rule(module, attr)[2](np.asarray(params[name])))
        if value.shape != tuple(var[...].shape):
            expected = _rule(module, attr)[1](np.zeros(var[...].shape)).shape
            raise ValueError(f"parameter {name!r}: expected shape {expected}, got {np.shape(params[name])}")
        converted.append((var, value))
    for var, value in converted:
        var[...] = jnp.asarray(value, dtype=var[...].dtype)

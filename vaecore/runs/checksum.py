"""What a checkpoint must prove before a run continues from it, framework-free.

- Its contents are the ones written: ``content_digest`` is a sha256 over everything a checkpoint
  holds (nested dicts and lists of arrays, numbers and strings, in a fixed order), stored inside the
  checkpoint itself under ``DIGEST`` (so it is written atomically with it) and recomputed from what
  is read back. A flipped bit in an array, a key or a number changes it. Checkpoints written before
  the digest existed carry none and are read as they are.
- It is one of ours and fits the run's model: a checkpoint of another structure is skipped like a
  damaged one (``ForeignCheckpoint``); one of ours whose arrays have other shapes than the model
  that ``config.json`` describes is the user's to resolve (``config_mismatch``: a ``ConfigError``).
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vaecore.settings.config import ConfigError

DIGEST = "sha256"  # the key of the digest in a torch checkpoint, and in a JAX checkpoint's metadata


class DamagedCheckpoint(Exception):
    """A checkpoint that cannot be trusted: it is skipped and the next older one is tried."""


class ForeignCheckpoint(DamagedCheckpoint):
    """A checkpoint that reads back but is not one this project wrote for this kind of run."""


def content_digest(tree: Any, to_array: Callable[[Any], np.ndarray] = np.asarray) -> str:
    """sha256 (hex) of a nested structure: mappings (by sorted key), lists and tuples (alike, so a
    JSON round trip gives the same digest), ``None``, bools, ints, floats and strings (by type and
    repr), and anything else as an array (``to_array`` turns a framework's tensor into numpy: its
    dtype, shape and bytes)."""
    h = hashlib.sha256()
    _feed(h, tree, to_array)
    return h.hexdigest()


def _feed(h, x: Any, to_array: Callable[[Any], np.ndarray]) -> None:
    if isinstance(x, Mapping):
        h.update(b"{")
        for key in sorted(x, key=str):
            h.update(f"{key!s}:".encode())
            _feed(h, x[key], to_array)
        h.update(b"}")
    elif isinstance(x, (list, tuple)):
        h.update(b"[")
        for item in x:
            _feed(h, item, to_array)
        h.update(b"]")
    elif x is None or isinstance(x, (bool, int, float, str)):
        h.update(f"{type(x).__name__}={x!r};".encode())
    else:
        a = np.ascontiguousarray(to_array(x))
        h.update(f"<{a.dtype.str}{a.shape}>".encode())
        h.update(a.tobytes())


def verify(stored: str | None, actual: str) -> None:
    """Raise ``DamagedCheckpoint`` unless the digest read back equals the one written (a checkpoint
    without a digest predates them and passes)."""
    if stored is not None and stored != actual:
        raise DamagedCheckpoint(f"checksum mismatch (sha256 written {stored[:12]}..., read back {actual[:12]}...): "
                                f"its contents changed on disk since it was written")


def report_skipped(name: str, why: str) -> None:
    """The one line that says a checkpoint was passed over, and why (on stderr)."""
    sys.stderr.write(f"warning: skipping checkpoint {name}: {why}; trying the next older one\n")
    sys.stderr.flush()


def missing_step(step: int, steps: list[int], folder: Path) -> FileNotFoundError:
    """The error for a checkpoint step asked for (``evaluate.py --step``) that the run folder does not hold."""
    kept = ", ".join(map(str, sorted(steps))) if steps else "none"
    return FileNotFoundError(f"{folder} holds no checkpoint of step {step} (kept steps: {kept}); pick one of those "
                             f"(--keep-checkpoints decides how many a run keeps)")


def unreadable_step(path: Path, e: Exception) -> ConfigError:
    """The error for the checkpoint of an asked step that does not read back whole (no older one stands in)."""
    why = str(e) if isinstance(e, DamagedCheckpoint) else f"unreadable ({type(e).__name__}: {' '.join(str(e).split())[:200]})"
    return ConfigError(f"checkpoint {path}: {why}")


def config_mismatch(name: str, what: str) -> ConfigError:
    """The error for a checkpoint of ours that does not fit the model config.json describes."""
    return ConfigError(f"config.json does not match checkpoint {name}: {what}; the run's config.json was changed "
                       f"after the checkpoint was written (restore it), or start a new --workdir")


def first_shape_difference(expected: Mapping[str, tuple], found: Mapping[str, tuple]) -> str | None:
    """How the arrays of a checkpoint (``found``: name -> shape) differ from the model's (``expected``),
    in words, or None when they have the same names and shapes."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    if missing or extra:
        return (f"the model has {len(expected)} arrays, the checkpoint {len(found)} "
                f"(missing {missing[:2]}, unexpected {extra[:2]})")
    for k, shape in expected.items():
        if tuple(found[k]) != tuple(shape):
            return f"{k} has shape {tuple(found[k])} in the checkpoint, {tuple(shape)} in the model"
    return None

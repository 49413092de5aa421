"""The run folder: the names of its files, in one place, and reading a run back.

A run folder holds ``config.json`` (the run's configuration), ``metrics.jsonl`` (one line per
logged point), ``checkpoints/`` (the backend's format), ``results.json`` (the end-of-run test
figures, later merged with ``evaluate.py``'s ``eval_<split>.json``), ``vocab.json`` (text runs),
``tb/`` (TensorBoard), the pictures and generated text, and ``report.md``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vaecore.config import ConfigError, RunConfig

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
RESULTS = "results.json"
VOCAB = "vocab.json"
TENSORBOARD = "tb"
REPORT = "report.md"
TRAINING_CURVES = "training_curves.png"
SAMPLES_PNG, RECONSTRUCTIONS_PNG = "samples.png", "reconstructions.png"
INTERPOLATIONS_PNG, LATENT_SPACE_PNG = "interpolations.png", "latent_space.png"
SAMPLES_TXT, RECONSTRUCTIONS_TXT, INTERPOLATIONS_TXT = "samples.txt", "reconstructions.txt", "interpolations.txt"
# a torch checkpoint in CHECKPOINTS (JAX's are orbax step folders named by the step alone)
TORCH_CHECKPOINT_RE = re.compile(r"^step_(\d{8})\.pt$")


def torch_checkpoint(step: int) -> str:
    """The file name of the torch checkpoint of ``step``."""
    return f"step_{step:08d}.pt"


def eval_file(split: str) -> str:
    """``evaluate.py``'s figures of one split."""
    return f"eval_{split}.json"


def has_checkpoint(workdir: Path) -> bool:
    ckpt = Path(workdir) / CHECKPOINTS
    return ckpt.is_dir() and any(not p.name.startswith(".") for p in ckpt.iterdir())


def read_config(workdir: Path, *, flag: str = "--workdir") -> RunConfig:
    """The configuration of the run in ``workdir``; a missing folder, a missing or unreadable
    ``config.json`` is a ``ConfigError`` that names the file and what to do (one error path for
    every command that reads a run back)."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        raise ConfigError(f"{flag} {workdir}: no such directory")
    path = workdir / CONFIG
    if not path.exists():
        raise ConfigError(f"{flag} {workdir}: no {CONFIG} (not a run folder, or the run stopped before it began)")
    try:
        return RunConfig.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable run configuration ({type(e).__name__}: {str(e)[:200]}); restore it "
                          f"or start the run again in a new {flag}") from None

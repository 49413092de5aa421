"""The portable model folder: ``model.safetensors`` (the canonical parameters, framework-neutral names,
``safetensors.numpy``), ``config.json`` (the run's), ``vocab.json`` (text), ``results.json`` (the
run's test figures, when known) and ``README.md`` (the model card): the layout the Hugging Face Hub
takes as it is. Also what a path names: a run folder, an exported folder, or a Hub repository."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vaecore.runs import rundir

WEIGHTS = "model.safetensors"
CARD = "README.md"
HUB_PREFIX = "hf://"
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
HUB_PATH = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")  # owner/name[@revision]


def is_export(folder: Path) -> bool:
    return (folder / WEIGHTS).is_file() and (folder / rundir.CONFIG).is_file()


def is_run(folder: Path) -> bool:
    return (folder / rundir.CONFIG).is_file() and rundir.has_checkpoint(folder)


def resolve(path: str | Path) -> Path:
    """The local folder ``path`` names: itself, or for ``hf://owner/name[@revision]`` (or an
    ``owner/name`` that is no local path) the Hub snapshot that ``huggingface_hub`` downloads."""
    text = str(path)
    if not text.startswith(HUB_PREFIX) and (Path(text).exists() or not HUB_PATH.match(text)):
        folder = Path(text)
        if not folder.is_dir():
            raise ValueError(f"{folder}: no such folder (give a run folder, an exported model folder or "
                             f"hf://owner/name)")
        return folder
    repo, _, revision = text.removeprefix(HUB_PREFIX).partition("@")
    if not REPO_ID.match(repo):
        raise ValueError(f"{text}: a Hub path is hf://owner/name or hf://owner/name@revision")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ValueError(f"{text}: loading from the Hugging Face Hub needs huggingface_hub (pip install "
                         f"huggingface_hub), and no local folder has that name") from None
    return Path(snapshot_download(repo_id=repo, revision=revision or None))


def kind(folder: Path) -> str:
    """"run" or "export"; anything else is a ValueError that says what is missing."""
    if is_export(folder):
        return "export"
    if is_run(folder):
        return "run"
    if (folder / rundir.CONFIG).is_file():
        raise ValueError(f"{folder}: config.json but neither {WEIGHTS} (an exported model) nor a checkpoint in "
                         f"{rundir.CHECKPOINTS}/ (a run folder)")
    raise ValueError(f"{folder}: neither a run folder (config.json, {rundir.CHECKPOINTS}/) nor an exported model "
                     f"({WEIGHTS}, config.json)")


def read_json(path: Path) -> dict | None:
    """A JSON object file, or None when absent; an unreadable one is a one-line ValueError."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: a JSON object was expected")  # noqa: TRY004 (bad input is a ValueError here)
    return value


def read_weights(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The canonical parameters of an exported folder and the file's metadata."""
    from safetensors import SafetensorError, safe_open
    from safetensors.numpy import load_file

    path = folder / WEIGHTS
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable safetensors file ({str(e)[:200]})") from None


def write(folder: Path, params: dict[str, np.ndarray], config: dict, *, vocab=None, results: dict | None,
          step: int | None, overwrite: bool = False) -> Path:
    """Write the exported folder, whole or not at all (built in a temporary folder beside it, then
    renamed). An existing folder is refused unless it is empty, or an export and ``overwrite``; a run
    folder is never overwritten."""
    from safetensors.numpy import save_file

    from twinvae.card import model_card

    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise ValueError(f"{folder}: exists and is not a folder")
        if (folder / rundir.CHECKPOINTS).exists():
            raise ValueError(f"{folder} is a run folder; export to a new folder")
        if any(folder.iterdir()) and not (overwrite and is_export(folder)):
            raise ValueError(f"{folder} is not empty; export to a new folder (or pass overwrite=True to replace "
                             f"an exported model)")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        meta = {"format": "np", "library": "twinvae", "task": config["task"], "trained_with": config["backend"]}
        if step is not None:
            meta["step"] = str(step)
        save_file({k: np.ascontiguousarray(v) for k, v in params.items()}, str(tmp / WEIGHTS), metadata=meta)
        (tmp / rundir.CONFIG).write_text(json.dumps(config, indent=2) + "\n")
        if vocab is not None:
            vocab.save(str(tmp / rundir.VOCAB))
        if results:
            (tmp / rundir.RESULTS).write_text(json.dumps(results, indent=2) + "\n")
        (tmp / CARD).write_text(model_card(config, results, step))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder

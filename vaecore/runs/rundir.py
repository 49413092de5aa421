"""The run folder: the names of its files, in one place, and reading a run back.

A run folder holds ``config.json`` (the run's configuration), ``metrics.jsonl`` (one line per
logged point), ``checkpoints/`` (the backend's format), ``results.json`` (the end-of-run test
figures, later merged with ``evaluate.py``'s ``eval_<split>.json``), ``vocab.json`` (text runs),
``tb/`` (TensorBoard), the pictures and generated text, and ``report.md``; ``.lock``, the lock of
the one process that writes the folder (``lock_run``).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
from pathlib import Path

from vaecore.files import os_reason
from vaecore.settings.config import ConfigError, RunConfig

CONFIG = "config.json"
LOCK = ".lock"
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


def eval_file(split: str, step: int | None = None) -> str:
    """``evaluate.py``'s figures of one split (of the newest checkpoint, or of ``step``'s: ``--step``)."""
    return f"eval_{split}.json" if step is None else f"eval_{split}_step{step}.json"


EVAL_STEP_RE = re.compile(r"^eval_(test|valid)_step(\d+)\.json$")  # eval_file(split, step)


class RunFileError(ConfigError):
    """A file of a run (or a table) that cannot be read, parsed or written: one line, exit status 2,
    naming the file and what is wrong with it, whichever command reads it."""


def read_text(path: Path, what: str = "file") -> str:
    """The UTF-8 text of ``path``; an unreadable or non-UTF-8 file is a ``RunFileError`` that names it
    (``what`` says what it should be, e.g. "run configuration")."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RunFileError(f"{path}: not a UTF-8 {what} (byte {e.start}: {e.reason}); restore it or remove it") from None
    except OSError as e:
        raise RunFileError(f"{path}: cannot read the {what} ({os_reason(e)})") from None


def read_json(path: Path, what: str = "JSON file") -> dict:
    """The JSON object in ``path``; a missing, unreadable, non-JSON or non-object file is a
    ``RunFileError`` naming it."""
    text = read_text(path, what)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise RunFileError(f"{path}: damaged {what} (not JSON: {e.msg} at line {e.lineno}); restore it "
                           f"or remove it") from None
    if not isinstance(value, dict):
        raise RunFileError(f"{path}: damaged {what} (a JSON {type(value).__name__}, not an object); restore it "
                           f"or remove it")
    return value


def check_writable_folder(folder: Path, flag: str) -> None:
    """Raise ``RunFileError`` unless files can be created in the existing folder ``folder`` (a real
    probe: a temporary file made and removed, so a read-only file system, a full disk's inode table
    or missing permissions show up now, not after the work). ``flag`` names the folder's option."""
    folder = Path(folder)
    if not folder.is_dir():
        kind = "a file" if folder.exists() else "missing"
        raise RunFileError(f"{flag} {folder}: {kind}, not a folder; give a folder")
    probe = folder / f".write-probe.{os.getpid()}.tmp"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        raise RunFileError(f"{flag} {folder}: cannot write there ({os_reason(e)}); free space or fix its "
                           f"permissions, or choose another folder") from None
    finally:
        probe.unlink(missing_ok=True)


def checkpoint_entries(workdir: Path) -> dict[int, Path]:
    """The complete checkpoints a run folder keeps, by step, oldest first: torch ``step_XXXXXXXX.pt``
    files and orbax step folders (named by their step, holding orbax's commit marker)."""
    folder = Path(workdir) / CHECKPOINTS
    entries = {}
    for p in folder.iterdir() if folder.is_dir() else []:
        if p.is_file() and TORCH_CHECKPOINT_RE.match(p.name):
            entries[int(TORCH_CHECKPOINT_RE.match(p.name)[1])] = p
        elif p.is_dir() and p.name.isdigit() and (p / "commit_success.txt").exists():
            entries[int(p.name)] = p
    return dict(sorted(entries.items()))


def checkpoint_steps(workdir: Path) -> list[int]:
    """The steps of the complete checkpoints a run folder keeps, oldest first (``checkpoint_entries``)."""
    return list(checkpoint_entries(workdir))


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
    text = read_text(path, "run configuration")
    try:
        return RunConfig.from_dict(json.loads(text))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
        raise ConfigError(f"{path}: unreadable run configuration ({type(e).__name__}: {str(e)[:200]}); restore it "
                          f"or start the run again in a new {flag}") from None


class RunLock:
    """The exclusive right to write one run folder: an ``fcntl.flock`` on ``LOCK`` inside it, held
    through an open descriptor. The kernel drops it when the process ends, however it ends (SIGKILL
    included), so a lock is never stale; the file itself stays, empty: taking the lock changes no file of the folder."""

    def __init__(self, workdir: Path, fd: int | None, created: Path | None):
        self.workdir, self._fd, self._created = workdir, fd, created

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def discard(self) -> None:
        """Release, and remove the folder again if this lock created it and it holds nothing else
        (a command refused after taking the lock leaves no new folder behind)."""
        self.release()
        if self._created is None:
            return
        (self.workdir / LOCK).unlink(missing_ok=True)
        for folder in (self.workdir, *self.workdir.parents):
            try:
                folder.rmdir()  # only an empty folder goes
            except OSError:
                return
            if folder == self._created:
                return


def lock_run(workdir: Path, flag: str = "--workdir") -> RunLock:
    """Create ``workdir`` if needed and take its write lock; a second writer (another ``train.py`` on
    the same folder) gets a ``ConfigError`` saying so, and nothing is changed. Call it
    after the configuration is validated: it is the first thing that touches the folder."""
    workdir = Path(workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"{flag} {workdir} is a file, not a folder; give a folder (new or a run's)")
    created = next((p for p in (*reversed(workdir.parents), workdir) if not p.exists()), None)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{flag} {workdir}: cannot create the folder ({os_reason(e)}); choose another") from None
    path = workdir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        RunLock(workdir, None, created).discard()
        raise RunFileError(f"{flag} {workdir}: cannot write there ({os_reason(e)}); fix its permissions or "
                           f"choose another folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise ConfigError(f"{flag} {workdir}: another process is writing this run folder (fuser {path} "
                              f"names it); wait for it to end or stop it, or choose another {flag}") from None
        raise ConfigError(f"{flag} {workdir}: cannot lock {path} ({os_reason(e)}); this file system does "
                          f"not support file locks: choose a run folder on a local disk") from None
    return RunLock(workdir, fd, created)

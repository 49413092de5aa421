"""The one atomic writer of the project (run configs, results, metrics summaries, vocabularies,
generated text, pictures), the one reader of a run's small files, and the writability probe.

A file that cannot be read or parsed is a ``RunFileError`` (a ``ConfigError``: one line, exit
status 2) naming the file and what is wrong with it, whichever command reads it."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from vaecore.config import ConfigError


class RunFileError(ConfigError):
    """A file of a run (or a table) that cannot be read, parsed or written; the message names it."""


def os_reason(e: OSError) -> str:
    """An ``OSError`` in a few words (``strerror``, or the errno's name)."""
    return e.strerror or errno.errorcode.get(e.errno or 0, type(e).__name__)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write through a temporary file and ``os.replace``, so a reader (or a run killed while it
    writes) never sees half a file. The temporary name carries the process id: two writers never
    share one. On a failure (a full disk) the temporary file is removed and the ``OSError`` raised:
    ``path`` keeps its old contents."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: dict) -> None:
    atomic_write(path, json.dumps(data, indent=2) + "\n")


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
